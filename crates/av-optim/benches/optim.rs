//! One optimiser step over a RepLAI-sized model (21.5 M parameters in 40 tensors, CPU, f32).
//!
//! `cargo bench -p av-optim --bench optim -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` expands to an undocumented public function.
#![allow(missing_docs)]

use av_optim::{AdamW, AdamWConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};

const TENSORS: usize = 40;
const PER_TENSOR: usize = 538_750; // 40 x 538,750 = 21.55 M

/// Parameters and a gradient store holding a constant gradient for each.
fn setup() -> Result<(Vec<(String, Var)>, GradStore)> {
    let loss_terms: Vec<Var> = (0..TENSORS)
        .map(|_| Var::ones(PER_TENSOR, DType::F32, &Device::Cpu))
        .collect::<Result<_>>()?;
    // loss = sum_i sum(0.5 * w_i^2): gradient w_i, one backward for all tensors.
    let mut total: Option<Tensor> = None;
    for v in &loss_terms {
        let t = (v.as_tensor().sqr()?.sum_all()? * 0.5)?;
        total = Some(match total {
            None => t,
            Some(acc) => (acc + t)?,
        });
    }
    let grads = match total {
        Some(t) => t.backward()?,
        None => return Err(candle_core::Error::msg("no tensors")),
    };
    let vars = loss_terms
        .into_iter()
        .enumerate()
        .map(|(i, v)| (format!("p{i}"), v))
        .collect();
    Ok((vars, grads))
}

fn bench(c: &mut Criterion) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let (vars, grads) = setup()?;
    let mut sgd = Sgd::new(
        vec![ParamGroup::new(vars.clone(), 1e-4)],
        SgdConfig::replai(1e-6),
    )?;
    c.bench_function("sgd momentum step 21.5M params", |b| {
        b.iter(|| assert!(sgd.step(&grads).is_ok()))
    });
    let mut adam = AdamW::new(
        vec![ParamGroup::new(vars, 1e-5)],
        AdamWConfig::adam_l2(1e-6, 1e-5),
    )?;
    c.bench_function("adam step 21.5M params", |b| {
        b.iter(|| assert!(adam.step(&grads).is_ok()))
    });
    Ok(())
}

fn benches(c: &mut Criterion) {
    if let Err(e) = bench(c) {
        eprintln!("benchmark setup failed: {e}");
    }
}

criterion_group!(group, benches);
criterion_main!(group);
