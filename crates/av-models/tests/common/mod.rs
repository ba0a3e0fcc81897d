//! Shared helpers for the fixture tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

/// Path of a file in tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Loads a fixture safetensors file onto the CPU.
pub fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(name), &Device::Cpu).expect("fixture loads")
}

/// max |a - b| / max |b| (the fixtures README's relative error).
pub fn rel_max(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let b = b.to_dtype(DType::F64).unwrap().flatten_all().unwrap();
    let d = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let s = b.abs().unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
    if s > 0.0 {
        d / s
    } else {
        d
    }
}

/// Asserts rel_max(got, want) <= tol with a readable message.
pub fn assert_close(name: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let r = rel_max(got, want);
    assert!(r <= tol, "{name}: relative error {r:.3e} > {tol:.1e}");
    eprintln!("{name}: rel {r:.2e} (tol {tol:.0e})");
}
