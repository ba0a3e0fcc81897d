//! xID memory bank, sampler, RINCE and checkpoint behaviour beyond the PyTorch fixture.

use std::collections::HashMap;

use av_losses::{
    nce_loss, rince_loss, sample_negatives, MemoryBank, RinceSchedule, XidConfig, XidLoss,
    XidObjective, AUDIO_BANK_KEY, PARTITION_KEY, VIDEO_BANK_KEY,
};
use candle_core::{DType, Device, Result, Tensor, D};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn embeddings(b: usize, d: usize, seed: u64) -> Result<Tensor> {
    // Deterministic, non-degenerate rows.
    let data: Vec<f32> = (0..b * d)
        .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0)
        .collect();
    Tensor::from_vec(data, (b, d), &Device::Cpu)
}

#[test]
fn random_bank_rows_are_unit_norm_and_seeded() -> Result<()> {
    let a = MemoryBank::random("v", 50, 16, DType::F32, &Device::Cpu, &mut rng(3))?;
    let b = MemoryBank::random("v", 50, 16, DType::F32, &Device::Cpu, &mut rng(3))?;
    let c = MemoryBank::random("v", 50, 16, DType::F32, &Device::Cpu, &mut rng(4))?;
    let norms = a.tensor().sqr()?.sum(D::Minus1)?.sqrt()?.to_vec1::<f32>()?;
    assert!(norms.iter().all(|n| (n - 1.0).abs() < 1e-6));
    assert_eq!(a.tensor().to_vec2::<f32>()?, b.tensor().to_vec2::<f32>()?);
    assert_ne!(a.tensor().to_vec2::<f32>()?, c.tensor().to_vec2::<f32>()?);
    // Standard-normal entries before normalisation: the mean of all entries is near 0.
    let mean = a.tensor().mean_all()?.to_scalar::<f32>()?;
    assert!(mean.abs() < 0.05, "{mean}");
    Ok(())
}

#[test]
fn negatives_never_hit_the_own_row_and_cover_the_rest() -> Result<()> {
    let rows = 7;
    let own = [0usize, 3, 6];
    let neg = sample_negatives(&own, rows, 2000, &Device::Cpu, &mut rng(1))?;
    let neg = neg.to_vec2::<u32>()?;
    for (i, row) in neg.iter().enumerate() {
        let mut counts = [0usize; 7];
        for &n in row {
            counts[n as usize] += 1;
        }
        assert_eq!(counts[own[i]], 0, "own index {} sampled", own[i]);
        // Uniform over the 6 others: about 333 each.
        for (j, &c) in counts.iter().enumerate() {
            if j != own[i] {
                assert!((250..420).contains(&c), "row {i} index {j}: {c}");
            }
        }
    }
    let again = sample_negatives(&own, rows, 2000, &Device::Cpu, &mut rng(1))?;
    assert_eq!(again.to_vec2::<u32>()?, neg);
    assert!(sample_negatives(&[7], rows, 3, &Device::Cpu, &mut rng(1)).is_err());
    Ok(())
}

#[test]
fn update_with_repeated_index_is_last_write_wins() -> Result<()> {
    let bank0 = MemoryBank::random("v", 5, 4, DType::F64, &Device::Cpu, &mut rng(9))?;
    let e = Tensor::new(&[[1.0f64, 0., 0., 0.], [0., 2., 0., 0.]], &Device::Cpu)?;
    let mut bank = bank0.try_clone()?;
    let before = bank0.snapshot()?;
    bank.momentum_update(&[2, 2], &e, 0.5)?;
    let row = bank.tensor().get(2)?.to_vec1::<f64>()?;
    let old = before.get(2)?.to_vec1::<f64>()?;
    let mut want: Vec<f64> = old.iter().map(|x| 0.5 * x).collect();
    want[1] += 0.5;
    let n = want.iter().map(|x| x * x).sum::<f64>().sqrt();
    for (g, w) in row.iter().zip(&want) {
        assert!((g - w / n).abs() < 1e-15);
    }
    // The original is independent of the copy, and other rows are untouched.
    assert_eq!(bank0.tensor().to_vec2::<f64>()?, before.to_vec2::<f64>()?);
    assert_eq!(
        bank.tensor().get(0)?.to_vec1::<f64>()?,
        before.get(0)?.to_vec1::<f64>()?
    );
    Ok(())
}

#[test]
fn update_refuses_nan_and_bad_indices() -> Result<()> {
    let mut bank = MemoryBank::random("view1_mem", 5, 2, DType::F32, &Device::Cpu, &mut rng(0))?;
    let nan = Tensor::new(&[[f32::NAN, 1.0]], &Device::Cpu)?;
    let msg = bank
        .momentum_update(&[1], &nan, 0.5)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("view1_mem") && msg.contains("non-finite"),
        "{msg}"
    );
    let ok = Tensor::new(&[[0.0f32, 1.0]], &Device::Cpu)?;
    let msg = bank
        .momentum_update(&[5], &ok, 0.5)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("index 5") && msg.contains("5 rows"), "{msg}");
    Ok(())
}

#[test]
fn z_is_frozen_after_the_first_step_and_survives_a_checkpoint() -> Result<()> {
    let cfg = XidConfig {
        num_negatives: 16,
        ..XidConfig::default()
    };
    let mut xid = XidLoss::new(40, 8, cfg.clone(), DType::F32, &Device::Cpu, &mut rng(5))?;
    let mut r = rng(6);
    let (v, a) = (embeddings(4, 8, 1)?, embeddings(4, 8, 2)?);
    let idx = [1, 7, 20, 39];
    let out = xid.forward(&v, &a, &idx, &mut r)?;
    let z = xid
        .partition_constant()
        .ok_or_else(|| candle_core::Error::msg("no Z"))?;
    let want = out.v2a_neg.exp()?.mean_all()?.to_scalar::<f32>()? as f64;
    assert!((z - want).abs() <= 1e-12 * want);
    xid.update(&v, &a, &idx)?;
    let (v2, a2) = (embeddings(4, 8, 3)?, embeddings(4, 8, 4)?);
    xid.forward(&v2, &a2, &[0, 2, 4, 6], &mut r)?;
    assert_eq!(xid.partition_constant(), Some(z));

    // Save, restore into a fresh loss, and check the next step agrees exactly.
    let state: HashMap<String, Tensor> = xid.state_tensors()?.into_iter().collect();
    assert!(state.contains_key(VIDEO_BANK_KEY) && state.contains_key(AUDIO_BANK_KEY));
    assert!(state.contains_key(PARTITION_KEY));
    let mut restored = XidLoss::new(40, 8, cfg, DType::F32, &Device::Cpu, &mut rng(99))?;
    restored.load_state(&state)?;
    assert_eq!(restored.partition_constant(), Some(z));
    let neg = sample_negatives(&[3, 5, 8, 9], 40, 16, &Device::Cpu, &mut r)?;
    let l1 = xid.forward_with_negatives(&v2, &a2, &[3, 5, 8, 9], &neg)?;
    let l2 = restored.forward_with_negatives(&v2, &a2, &[3, 5, 8, 9], &neg)?;
    assert_eq!(
        l1.loss.to_scalar::<f32>()?.to_bits(),
        l2.loss.to_scalar::<f32>()?.to_bits()
    );

    // A checkpoint for a different dataset size is rejected by name.
    let mut other = XidLoss::new(
        41,
        8,
        XidConfig::default(),
        DType::F32,
        &Device::Cpu,
        &mut rng(1),
    )?;
    let msg = other
        .load_state(&state)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        msg.contains(VIDEO_BANK_KEY) && msg.contains("[40, 8]"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn nce_matches_its_definition() -> Result<()> {
    let pos = Tensor::new(&[[2.0f64], [-1.0]], &Device::Cpu)?;
    let neg = Tensor::new(&[[0.5f64, -0.3, 1.2], [0.0, 0.7, -2.0]], &Device::Cpu)?;
    let z = 1.7;
    let got = nce_loss(&pos, &neg, z)?.to_scalar::<f64>()?;
    let kz = 3.0 * z;
    let p = pos.to_vec2::<f64>()?;
    let n = neg.to_vec2::<f64>()?;
    let mut want = 0.0;
    for i in 0..2 {
        let e = p[i][0].exp();
        want -= (e / (e + kz)).ln();
        for s in &n[i] {
            want -= (kz / (s.exp() + kz)).ln();
        }
    }
    want /= 2.0;
    assert!((got - want).abs() < 1e-13, "{got} vs {want}");
    Ok(())
}

#[test]
fn rince_matches_its_definition_and_tends_to_infonce() -> Result<()> {
    let pos = Tensor::new(&[[3.0f64], [0.5]], &Device::Cpu)?;
    let neg = Tensor::new(&[[0.5f64, -0.3, 1.2], [0.0, 0.7, -2.0]], &Device::Cpu)?;
    let (q, lam) = (0.3, 0.01);
    let got = rince_loss(&pos, &neg, q, lam)?.to_scalar::<f64>()?;
    let p = pos.to_vec2::<f64>()?;
    let n = neg.to_vec2::<f64>()?;
    let (mut a, mut b, mut info) = (0.0, 0.0, 0.0);
    for i in 0..2 {
        let e = p[i][0].exp();
        let s: f64 = n[i].iter().map(|x| x.exp()).sum();
        a += -e.powf(q) / q;
        b += (lam * (e + s)).powf(q) / q;
        info += -(e / (e + s)).ln();
    }
    let want = a / 2.0 + b / 2.0;
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    let q0 = rince_loss(&pos, &neg, 0.0, lam)?.to_scalar::<f64>()?;
    assert!((q0 - info / 2.0).abs() < 1e-13);
    let tiny = rince_loss(&pos, &neg, 1e-7, lam)?.to_scalar::<f64>()?;
    assert!((tiny - (info / 2.0 + lam.ln())).abs() < 1e-5, "{tiny}");
    Ok(())
}

#[test]
fn rince_schedule_and_objective_switch() -> Result<()> {
    let s = RinceSchedule::av_ssrl(100);
    assert_eq!(s.q(0), 0.001);
    assert!((s.q(99) - 0.4).abs() < 1e-15);
    assert!((s.q(50) - (0.001 + 50.0 * 0.399 / 99.0)).abs() < 1e-15);
    let mut xid = XidLoss::new(
        10,
        4,
        XidConfig::av_ssrl(),
        DType::F64,
        &Device::Cpu,
        &mut rng(2),
    )?;
    xid.set_objective(XidObjective::Rince {
        q: s.q(10),
        lambda: 0.01,
    })?;
    let (v, a) = (
        embeddings(2, 4, 1)?.to_dtype(DType::F64)?,
        embeddings(2, 4, 2)?.to_dtype(DType::F64)?,
    );
    let out = xid.forward(&v, &a, &[0, 1], &mut rng(3))?;
    assert!(out.loss.to_scalar::<f64>()?.is_finite());
    assert_eq!(xid.partition_constant(), None, "RINCE must not estimate Z");
    assert!(xid
        .set_objective(XidObjective::Rince {
            q: -1.0,
            lambda: 0.01
        })
        .is_err());
    Ok(())
}
