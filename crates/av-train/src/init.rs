//! Seeded parameter initialisation.
//!
//! candle draws CPU random numbers from a thread-local generator that cannot be seeded, so two
//! runs with the same seed would start from different weights. [`SeededVarMap`] is a
//! `VarBuilder` backend that creates every missing variable from the initialiser the model asked
//! for (`Init::Kaiming`, `Uniform`, `Randn`, `Const`) using a ChaCha stream derived from the seed
//! and the variable's name, and stores it in an ordinary `VarMap`. Initialisation is thus
//! reproducible and independent of construction order.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::fnv1a;
use crate::loader::derive_seed;

/// A `VarMap` whose new variables are drawn from a seeded generator.
#[derive(Clone)]
pub struct SeededVarMap {
    map: VarMap,
    seed: u64,
}

impl SeededVarMap {
    /// Wraps `map`; variables already in it are returned unchanged.
    pub fn new(map: VarMap, seed: u64) -> Self {
        Self { map, seed }
    }

    /// A `VarBuilder` creating variables into the wrapped map.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }
}

fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller; u1 in (0, 1] avoids ln(0).
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Draws a tensor of `shape` from `init` with a generator seeded by (`seed`, `name`).
pub fn seeded_init(
    shape: &Shape,
    init: Init,
    name: &str,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    let n = shape.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, fnv1a(name.as_bytes()), 0x1417, 0));
    let values: Vec<f32> = match init {
        Init::Const(c) => vec![c as f32; n],
        Init::Uniform { lo, up } => (0..n)
            .map(|_| (lo + (up - lo) * rng.random::<f64>()) as f32)
            .collect(),
        Init::Randn { mean, stdev } => (0..n)
            .map(|_| (mean + stdev * standard_normal(&mut rng)) as f32)
            .collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan: FanInOut = fan;
            let fan = fan.for_shape(shape);
            let std = non_linearity.gain() / (fan.max(1) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n)
                        .map(|_| (-bound + 2.0 * bound * rng.random::<f64>()) as f32)
                        .collect()
                }
                NormalOrUniform::Normal => (0..n)
                    .map(|_| (std * standard_normal(&mut rng)) as f32)
                    .collect(),
            }
        }
    };
    Tensor::from_vec(values, shape.clone(), device)?.to_dtype(dtype)
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.map.data().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = data.get(name) {
            if v.shape() != &s {
                candle_core::bail!(
                    "variable {name}: existing shape {:?}, requested {:?}",
                    v.shape(),
                    s
                );
            }
            return Ok(v.as_tensor().clone());
        }
        let t = seeded_init(&s, h, name, self.seed, dtype, dev)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.map.data().lock().unwrap_or_else(|p| p.into_inner());
        match data.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("variable {name} does not exist and its shape is unknown"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.map
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (weight, bias) of a seeded 64 -> 64 linear layer.
    fn build(seed: u64) -> (Vec<f32>, Vec<f32>) {
        let map = VarMap::new();
        let vb = SeededVarMap::new(map, seed).var_builder(DType::F32, &Device::Cpu);
        let lin = candle_nn::linear(64, 64, vb.pp("fc")).expect("linear");
        let w = lin
            .weight()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("weight values");
        let b = lin
            .bias()
            .expect("linear has a bias")
            .to_vec1::<f32>()
            .expect("bias values");
        (w, b)
    }

    #[test]
    fn same_seed_same_weights() {
        let (w, b) = build(3);
        assert_eq!((w.clone(), b.clone()), build(3));
        assert_ne!(w, build(4).0);
        // candle's linear asks for Kaiming-normal weights (fan_in, ReLU gain sqrt(2)):
        // std = sqrt(2 / 64); 4096 draws put the sample std within ~1% of it.
        let n = w.len() as f64;
        let mean = w.iter().map(|&v| v as f64).sum::<f64>() / n;
        let std = (w.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        let want = (2.0f64 / 64.0).sqrt();
        assert!(mean.abs() < 0.015, "mean {mean}");
        assert!(
            (std / want - 1.0).abs() < 0.05,
            "std {std}, expected {want}"
        );
        // ... and a bias uniform in +-1/sqrt(fan_in).
        let bound = 1.0 / 8.0;
        assert!(b.iter().all(|v| v.abs() <= bound + 1e-6), "{b:?}");
        assert!(
            b.iter().any(|v| v.abs() > bound / 2.0),
            "bias not spread: {b:?}"
        );
    }
}
