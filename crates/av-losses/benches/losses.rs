//! Forward + backward cost of the losses at the references' sizes (CPU, f32).
//!
//! `cargo bench -p av-losses --bench losses -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` expands to an undocumented public function.
#![allow(missing_docs)]

use av_losses::{
    replai_loss, vicreg_loss, ReplaiEmbeddings, ReplaiLossConfig, VicregConfig, XidConfig, XidLoss,
};
use candle_core::{DType, Device, Module, Result, Tensor, Var};
use criterion::{criterion_group, criterion_main, Criterion};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn var(rows: usize, cols: usize, seed: u64) -> Result<Var> {
    let data: Vec<f32> = (0..rows * cols)
        .map(|i| {
            let h = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            (h % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    Var::from_tensor(&Tensor::from_vec(data, (rows, cols), &Device::Cpu)?)
}

/// RepLAI's `mlp.aot_diff`: 128 -> 512 -> 128.
struct Mlp(candle_nn::Linear, candle_nn::Linear);

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.1.forward(&self.0.forward(xs)?.relu()?)
    }
}

fn bench(c: &mut Criterion) -> Result<()> {
    // RepLAI, EPIC: global batch 128, 128-d heads.
    let b = 128;
    let ins: Vec<Var> = (0..6).map(|i| var(b, 128, i)).collect::<Result<_>>()?;
    let mlp = Mlp(
        candle_nn::Linear::new(var(512, 128, 10)?.as_tensor().clone(), None),
        candle_nn::Linear::new(var(128, 512, 11)?.as_tensor().clone(), None),
    );
    let cfg = ReplaiLossConfig::default();
    c.bench_function("replai_loss fwd+bwd b=128 d=128", |bch| {
        bch.iter(|| {
            let emb = ReplaiEmbeddings {
                v_before: ins[0].as_tensor(),
                v_after: ins[1].as_tensor(),
                a: ins[2].as_tensor(),
                g_before: ins[3].as_tensor(),
                g_after: ins[4].as_tensor(),
                g_a: ins[5].as_tensor(),
            };
            let out = replai_loss(&emb, &mlp, &cfg).and_then(|o| o.total.backward());
            assert!(out.is_ok());
        })
    });

    // AV-SSRL xID: 50,000 rows, batch 32, K = 1024.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut xid = XidLoss::new(
        50_000,
        128,
        XidConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng,
    )?;
    let (v, a) = (var(32, 128, 20)?, var(32, 128, 21)?);
    let idx: Vec<usize> = (0..32).map(|i| i * 1500).collect();
    c.bench_function("xid fwd+bwd+update n=50k b=32 k=1024", |bch| {
        bch.iter(|| {
            let r = xid
                .forward(v.as_tensor(), a.as_tensor(), &idx, &mut rng)
                .and_then(|o| o.loss.backward())
                .and_then(|_| xid.update(v.as_tensor(), a.as_tensor(), &idx));
            assert!(r.is_ok());
        })
    });

    // AV-SSRL VICReg: batch 32, 4096-d expander.
    let (x, y) = (var(32, 4096, 30)?, var(32, 4096, 31)?);
    let vcfg = VicregConfig::default();
    c.bench_function("vicreg fwd+bwd b=32 d=4096", |bch| {
        bch.iter(|| {
            let r =
                vicreg_loss(x.as_tensor(), y.as_tensor(), &vcfg).and_then(|o| o.loss.backward());
            assert!(r.is_ok());
        })
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
