//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

/// Directory holding the committed fixtures.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

/// A tensor read from a safetensors file, widened to f64, with its shape.
pub struct Tensor {
    pub data: Vec<f64>,
    pub shape: Vec<usize>,
}

/// Reads every tensor of a safetensors file we know the dtype of.
pub fn load(path: &Path, name: &str) -> anyhow::Result<Tensor> {
    let bytes = std::fs::read(path)?;
    let st = SafeTensors::deserialize(&bytes)?;
    let t = st.tensor(name)?;
    let raw = t.data();
    let data: Vec<f64> = match t.dtype() {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::I64 => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f64)
            .collect(),
        other => anyhow::bail!("{}: {name}: unexpected dtype {other:?}", path.display()),
    };
    Ok(Tensor {
        data,
        shape: t.shape().to_vec(),
    })
}

/// `max |a - b| / max |b|`.
pub fn max_rel_to_max(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((f64::from(*x) - y).abs()));
    err / scale
}
