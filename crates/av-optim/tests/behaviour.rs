//! Update rules against independent scalar implementations of the PyTorch / VICReg formulas,
//! checkpoint round trips, and parameter handling.

use std::collections::HashMap;

use av_optim::{
    AdamW, AdamWConfig, Lars, LarsConfig, OneCycle, OneCycleConfig, OptimError, Optimizer,
    ParamGroup, Sgd, SgdConfig,
};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// A small least-squares problem with a rank-2 weight and a rank-1 bias.
struct Problem {
    x: Tensor,
    y: Tensor,
}

impl Problem {
    fn new(dtype: DType) -> candle_core::Result<Self> {
        let xs: Vec<f64> = (0..24).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect();
        let ys: Vec<f64> = (0..18).map(|i| ((i * 5 % 7) as f64 - 3.0) / 2.0).collect();
        Ok(Self {
            x: Tensor::from_vec(xs, (6, 4), &Device::Cpu)?.to_dtype(dtype)?,
            y: Tensor::from_vec(ys, (6, 3), &Device::Cpu)?.to_dtype(dtype)?,
        })
    }

    fn params(&self, dtype: DType) -> candle_core::Result<(Var, Var)> {
        let w: Vec<f64> = (0..12).map(|i| (i as f64 - 5.5) / 10.0).collect();
        let w = Tensor::from_vec(w, (4, 3), &Device::Cpu)?.to_dtype(dtype)?;
        let b = Tensor::new(&[0.1f64, -0.2, 0.3], &Device::Cpu)?.to_dtype(dtype)?;
        Ok((Var::from_tensor(&w)?, Var::from_tensor(&b)?))
    }

    fn grads(&self, w: &Var, b: &Var) -> candle_core::Result<GradStore> {
        let pred = self.x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
        (pred - &self.y)?.sqr()?.mean_all()?.backward()
    }
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// Runs `steps` updates of `opt` and of a scalar reference `reference(param_index, w, g, step)`
/// and compares the parameters after every step.
fn compare_with_reference<O: Optimizer>(
    mut opt: O,
    w: &Var,
    b: &Var,
    problem: &Problem,
    steps: usize,
    mut reference: impl FnMut(usize, &mut [f64], &[f64], usize),
) -> TestResult {
    let mut ref_params = [flat(w.as_tensor())?, flat(b.as_tensor())?];
    for step in 1..=steps {
        let grads = problem.grads(w, b)?;
        let g = [
            flat(grads.get(w.as_tensor()).ok_or("grad W")?)?,
            flat(grads.get(b.as_tensor()).ok_or("grad b")?)?,
        ];
        opt.step(&grads)?;
        for (i, p) in ref_params.iter_mut().enumerate() {
            reference(i, p.as_mut_slice(), &g[i], step);
        }
        for (i, var) in [w, b].into_iter().enumerate() {
            let d = max_abs_diff(&flat(var.as_tensor())?, &ref_params[i]);
            assert!(d <= 1e-14, "param {i} step {step}: {d:e}");
        }
    }
    Ok(())
}

#[test]
fn sgd_nesterov_and_dampening_follow_pytorch() -> TestResult {
    let p = Problem::new(DType::F64)?;
    for (nesterov, dampening) in [(true, 0.0), (false, 0.3)] {
        let (w, b) = p.params(DType::F64)?;
        let cfg = SgdConfig {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            dampening,
            nesterov,
        };
        // Group 1 has twice the learning rate and its own decay.
        let groups = vec![
            ParamGroup::new(vec![("w".into(), w.clone())], 0.01),
            ParamGroup::new(vec![("b".into(), b.clone())], 0.0).with_lr_mult(2.0),
        ];
        let opt = Sgd::new(groups, cfg)?;
        let mut bufs: [Vec<f64>; 2] = [vec![], vec![]];
        compare_with_reference(opt, &w, &b, &p, 4, |i, param, g, _| {
            let (wd, lr) = [(0.01, 0.05), (0.0, 0.1)][i];
            let d: Vec<f64> = g
                .iter()
                .zip(param.iter())
                .map(|(g, w)| g + wd * w)
                .collect();
            if bufs[i].is_empty() {
                bufs[i] = d.clone();
            } else {
                for (bv, dv) in bufs[i].iter_mut().zip(&d) {
                    *bv = 0.9 * *bv + (1.0 - dampening) * dv;
                }
            }
            for j in 0..param.len() {
                let step = if nesterov {
                    d[j] + 0.9 * bufs[i][j]
                } else {
                    bufs[i][j]
                };
                param[j] -= lr * step;
            }
        })?;
    }
    Ok(())
}

#[test]
fn adam_variants_follow_pytorch() -> TestResult {
    let p = Problem::new(DType::F64)?;
    for decoupled in [true, false] {
        let (w, b) = p.params(DType::F64)?;
        let cfg = AdamWConfig {
            decoupled,
            ..AdamWConfig::adamw(0.01, 0.1)
        };
        let opt = AdamW::from_vars(vec![("w".into(), w.clone()), ("b".into(), b.clone())], cfg)?;
        let mut m: [Vec<f64>; 2] = [vec![0.0; 12], vec![0.0; 3]];
        let mut v = m.clone();
        compare_with_reference(opt, &w, &b, &p, 5, |i, param, g, t| {
            let (lr, wd, b1, b2, eps) = (0.01, 0.1, 0.9f64, 0.999f64, 1e-8);
            let mut g = g.to_vec();
            if decoupled {
                param.iter_mut().for_each(|x| *x *= 1.0 - lr * wd);
            } else {
                g.iter_mut()
                    .zip(param.iter())
                    .for_each(|(g, w)| *g += wd * w);
            }
            let bc1 = 1.0 - b1.powi(t as i32);
            let bc2 = 1.0 - b2.powi(t as i32);
            for j in 0..param.len() {
                m[i][j] += (1.0 - b1) * (g[j] - m[i][j]);
                v[i][j] = b2 * v[i][j] + (1.0 - b2) * g[j] * g[j];
                param[j] -= lr / bc1 * m[i][j] / (v[i][j].sqrt() / bc2.sqrt() + eps);
            }
        })?;
    }
    Ok(())
}

#[test]
fn adamw_agrees_with_candles_adamw() -> TestResult {
    use candle_nn::Optimizer as _;
    let p = Problem::new(DType::F64)?;
    let (w1, b1) = p.params(DType::F64)?;
    let (w2, b2) = p.params(DType::F64)?;
    let mut ours = AdamW::from_vars(
        vec![("w".into(), w1.clone()), ("b".into(), b1.clone())],
        AdamWConfig::adamw(0.01, 0.05),
    )?;
    let params = candle_nn::ParamsAdamW {
        lr: 0.01,
        weight_decay: 0.05,
        ..Default::default()
    };
    let mut theirs = candle_nn::AdamW::new(vec![w2.clone(), b2.clone()], params)?;
    for _ in 0..6 {
        ours.step(&p.grads(&w1, &b1)?)?;
        theirs.step(&p.grads(&w2, &b2)?)?;
    }
    let d = max_abs_diff(&flat(w1.as_tensor())?, &flat(w2.as_tensor())?);
    assert!(d < 1e-14, "{d:e}");
    Ok(())
}

#[test]
fn lars_follows_vicreg() -> TestResult {
    let p = Problem::new(DType::F64)?;
    let (w, b) = p.params(DType::F64)?;
    let cfg = LarsConfig::vicreg(0.2);
    let groups = vec![ParamGroup::new(
        vec![("w".into(), w.clone()), ("b".into(), b.clone())],
        1e-2,
    )];
    let opt = Lars::new(groups, cfg)?;
    let mut mu: [Vec<f64>; 2] = [vec![0.0; 12], vec![0.0; 3]];
    compare_with_reference(opt, &w, &b, &p, 4, |i, param, g, _| {
        let mut d = g.to_vec();
        // Rank-1 tensors (i == 1) skip decay and adaptation.
        if i == 0 {
            d.iter_mut()
                .zip(param.iter())
                .for_each(|(d, w)| *d += 1e-2 * w);
            let pn = param.iter().map(|x| x * x).sum::<f64>().sqrt();
            let un = d.iter().map(|x| x * x).sum::<f64>().sqrt();
            let q = if pn > 0.0 && un > 0.0 {
                0.001 * pn / un
            } else {
                1.0
            };
            d.iter_mut().for_each(|x| *x *= q);
        }
        for j in 0..param.len() {
            mu[i][j] = 0.9 * mu[i][j] + d[j];
            param[j] -= 0.2 * mu[i][j];
        }
    })?;
    Ok(())
}

/// Builds an optimiser of `kind` over (w, b).
fn make(kind: &str, w: &Var, b: &Var) -> Result<Box<dyn Optimizer>, OptimError> {
    let groups = vec![
        ParamGroup::new(vec![("head.w".into(), w.clone())], 1e-4),
        ParamGroup::new(vec![("head.b".into(), b.clone())], 1e-4).with_lr_mult(0.5),
    ];
    Ok(match kind {
        "sgd" => Box::new(Sgd::new(groups, SgdConfig::replai(0.05))?),
        "nesterov" => Box::new(Sgd::new(
            groups,
            SgdConfig {
                nesterov: true,
                ..SgdConfig::replai(0.05)
            },
        )?),
        "adamw" => Box::new(AdamW::new(groups, AdamWConfig::adamw(0.01, 0.01))?),
        "adam" => Box::new(AdamW::new(groups, AdamWConfig::adam_l2(0.01, 0.01))?),
        _ => Box::new(Lars::new(groups, LarsConfig::vicreg(0.5))?),
    })
}

fn bits(t: &Tensor) -> candle_core::Result<Vec<u32>> {
    Ok(t.flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f32::to_bits)
        .collect())
}

#[test]
fn checkpoint_round_trip_continues_bit_identically() -> TestResult {
    let p = Problem::new(DType::F32)?;
    let schedule = OneCycle::new(OneCycleConfig::new(0.05, 10))?;
    let dir = std::env::temp_dir().join(format!("av-optim-ckpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    for kind in ["sgd", "nesterov", "adamw", "adam", "lars"] {
        // Uninterrupted run.
        let (wa, ba) = p.params(DType::F32)?;
        let mut a = make(kind, &wa, &ba)?;
        for step in 1..=6 {
            a.apply_schedule(&schedule, step);
            a.step(&p.grads(&wa, &ba)?)?;
        }
        // Three steps, save parameters and state to disk, rebuild everything, three more.
        let (wb, bb) = p.params(DType::F32)?;
        let mut b = make(kind, &wb, &bb)?;
        for step in 1..=3 {
            b.apply_schedule(&schedule, step);
            b.step(&p.grads(&wb, &bb)?)?;
        }
        let mut ckpt: HashMap<String, Tensor> = b
            .state_tensors()?
            .into_iter()
            .map(|(k, v)| (format!("optim.{k}"), v))
            .collect();
        ckpt.insert("model.w".into(), wb.as_tensor().copy()?);
        ckpt.insert("model.b".into(), bb.as_tensor().copy()?);
        let path = dir.join(format!("{kind}.safetensors"));
        candle_core::safetensors::save(&ckpt, &path)?;
        drop(b);
        let loaded = candle_core::safetensors::load(&path, &Device::Cpu)?;
        let wc = Var::from_tensor(loaded.get("model.w").ok_or("model.w")?)?;
        let bc = Var::from_tensor(loaded.get("model.b").ok_or("model.b")?)?;
        let state: HashMap<String, Tensor> = loaded
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("optim.").map(|k| (k.to_string(), v.clone())))
            .collect();
        assert!(!state.is_empty(), "{kind}: no optimiser state exported");
        let mut c = make(kind, &wc, &bc)?;
        c.load_state(&state)?;
        for step in 4..=6 {
            c.apply_schedule(&schedule, step);
            c.step(&p.grads(&wc, &bc)?)?;
        }
        assert_eq!(
            bits(wa.as_tensor())?,
            bits(wc.as_tensor())?,
            "{kind}: W differs"
        );
        assert_eq!(
            bits(ba.as_tensor())?,
            bits(bc.as_tensor())?,
            "{kind}: b differs"
        );
        // Without the state the continuation differs: the test above can fail.
        let (wd, bd) = (
            Var::from_tensor(loaded.get("model.w").ok_or("model.w")?)?,
            Var::from_tensor(loaded.get("model.b").ok_or("model.b")?)?,
        );
        let mut d = make(kind, &wd, &bd)?;
        for step in 4..=6 {
            d.apply_schedule(&schedule, step);
            d.step(&p.grads(&wd, &bd)?)?;
        }
        assert_ne!(bits(wa.as_tensor())?, bits(wd.as_tensor())?, "{kind}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn parameters_without_gradient_are_left_alone() -> TestResult {
    let p = Problem::new(DType::F32)?;
    let (w, b) = p.params(DType::F32)?;
    let frozen = Var::ones(5, DType::F32, &Device::Cpu)?;
    let groups = vec![ParamGroup::new(
        vec![
            ("w".into(), w.clone()),
            ("b".into(), b.clone()),
            ("frozen".into(), frozen.clone()),
        ],
        0.1,
    )];
    let mut sgd = Sgd::new(groups, SgdConfig::replai(0.1))?;
    sgd.step(&p.grads(&w, &b)?)?;
    assert_eq!(frozen.as_tensor().to_vec1::<f32>()?, vec![1.0; 5]);
    let state = sgd.state_tensors()?;
    assert!(state.contains_key("w.momentum_buffer"));
    assert!(!state.contains_key("frozen.momentum_buffer"));
    Ok(())
}

#[test]
fn foreign_state_is_rejected_by_name() -> TestResult {
    let p = Problem::new(DType::F32)?;
    let (w, b) = p.params(DType::F32)?;
    let mut sgd = make("sgd", &w, &b)?;
    let mut state = HashMap::new();
    state.insert(
        "encoder.w.momentum_buffer".to_string(),
        w.as_tensor().copy()?,
    );
    let err = sgd
        .load_state(&state)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("encoder.w.momentum_buffer"), "{err}");
    let mut state = HashMap::new();
    state.insert("head.w.momentum_buffer".to_string(), b.as_tensor().copy()?);
    let err = sgd
        .load_state(&state)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("head.w.momentum_buffer") && err.contains("[4, 3]"),
        "{err}"
    );
    let mut adam = make("adam", &w, &b)?;
    let mut partial = HashMap::new();
    partial.insert("head.w.exp_avg".to_string(), w.as_tensor().copy()?);
    assert!(matches!(
        adam.load_state(&partial),
        Err(OptimError::MissingState { .. })
    ));
    Ok(())
}

#[test]
fn bad_hyper_parameters_are_rejected() -> TestResult {
    let w = Var::zeros(3, DType::F32, &Device::Cpu)?;
    let vars = vec![("w".to_string(), w)];
    assert!(Sgd::from_vars(vars.clone(), SgdConfig::replai(-1.0)).is_err());
    let nesterov_without_momentum = SgdConfig {
        momentum: 0.0,
        nesterov: true,
        ..SgdConfig::replai(0.1)
    };
    assert!(Sgd::from_vars(vars.clone(), nesterov_without_momentum).is_err());
    let bad_beta = AdamWConfig {
        beta2: 1.0,
        ..AdamWConfig::adamw(0.1, 0.0)
    };
    assert!(AdamW::from_vars(vars.clone(), bad_beta).is_err());
    let bad_group = vec![ParamGroup::new(vars, f64::NAN)];
    assert!(Sgd::new(bad_group, SgdConfig::replai(0.1)).is_err());
    let ints = Var::from_tensor(&Tensor::new(&[1u32, 2], &Device::Cpu)?)?;
    let err = Sgd::from_vars(vec![("steps".into(), ints)], SgdConfig::replai(0.1));
    assert!(matches!(err, Err(OptimError::NonFloatParam { .. })));
    Ok(())
}
