//! OneCycle and SGD against PyTorch (`tests/fixtures/{onecycle,sgd}.json`, see the README).

use std::path::PathBuf;

use av_optim::{LrSchedule, OneCycle, OneCycleConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
use candle_core::{DType, Device, Tensor, Var};
use serde_json::Value;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fixture(name: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// A `{"shape", "dtype", "data"}` array as a tensor of `dtype`.
fn array(v: &Value, dtype: DType) -> candle_core::Result<Tensor> {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().expect("dim") as usize)
        .collect();
    Tensor::from_vec(floats(&v["data"]), shape, &Device::Cpu)?.to_dtype(dtype)
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs()
}

/// `max |got - want| / max |want|`.
fn max_rel(got: &Tensor, want: &Tensor) -> candle_core::Result<f64> {
    let g = got.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    let w = want.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    assert_eq!(g.len(), w.len());
    let scale = w.iter().fold(0f64, |m, x| m.max(x.abs()));
    let d = g
        .iter()
        .zip(&w)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    Ok(d / scale)
}

#[test]
fn one_cycle_matches_pytorch_for_every_step() -> TestResult {
    let f = fixture("onecycle.json")?;
    let s = OneCycle::new(OneCycleConfig::new(
        f["max_lr"].as_f64().ok_or("max_lr")?,
        f["total_steps"].as_u64().ok_or("total_steps")? as usize,
    ))?;
    let lr = floats(&f["lr"]);
    let mom = floats(&f["momentum"]);
    assert_eq!(lr.len(), 101);
    for (step, (&l, &m)) in lr.iter().zip(&mom).enumerate() {
        let got_m = s.momentum(step).ok_or("momentum not cycled")?;
        assert!(
            rel(s.lr(step), l) <= 1e-12,
            "step {step}: lr {} vs {l}",
            s.lr(step)
        );
        assert!(
            rel(got_m, m) <= 1e-12,
            "step {step}: momentum {got_m} vs {m}"
        );
        // The f32 view of the same numbers (what an f32 optimiser receives).
        assert!(rel(s.lr(step) as f32 as f64, l) <= 1e-6);
    }
    // RepLAI steps once per epoch before training: epoch e uses step e + 1, and the last epoch
    // uses the extrapolated step 100, not the minimum.
    for (e, &l) in floats(&f["lr_epoch"]).iter().enumerate() {
        assert!(rel(s.lr(e + 1), l) <= 1e-12, "epoch {e}");
    }
    assert!(rel(s.lr(99), 2e-8) <= 1e-12);
    assert!(rel(s.lr(100), 2.537323577378662e-06) <= 1e-12);
    Ok(())
}

fn run_sgd(run: &str) -> TestResult {
    let f = fixture("sgd.json")?;
    let (dtype, tol) = if run.ends_with("f64") {
        (DType::F64, 1e-12)
    } else {
        (DType::F32, 1e-6)
    };
    let r = &f["runs"][run];
    let x = array(&f["problem"]["X"], dtype)?;
    let y = array(&f["problem"]["Y"], dtype)?;
    let w = Var::from_tensor(&array(&f["problem"]["W0"], dtype)?)?;
    let b = Var::from_tensor(&array(&f["problem"]["b0"], dtype)?)?;
    let wd = f["weight_decay"].as_f64().ok_or("weight_decay")?;
    let groups = vec![
        ParamGroup::new(vec![("W".into(), w.clone())], wd),
        ParamGroup::new(vec![("b".into(), b.clone())], wd),
    ];
    let mut sgd = Sgd::new(groups, SgdConfig::replai(0.005))?;
    let schedule = OneCycle::new(OneCycleConfig::new(0.005, 100))?;
    let (lrs, moms, losses) = (floats(&r["lr"]), floats(&r["momentum"]), floats(&r["loss"]));
    assert!(max_rel(w.as_tensor(), &array(&r["W"][0], dtype)?)? == 0.0);
    for k in 0..5 {
        if run.starts_with("onecycle") {
            sgd.apply_schedule(&schedule, k + 1);
        }
        assert!(rel(sgd.lr(), lrs[k]) <= 1e-12, "{run} step {k} lr");
        assert!(
            rel(sgd.config().momentum, moms[k]) <= 1e-12,
            "{run} step {k} momentum"
        );
        let pred = x.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?;
        let loss = (pred - &y)?.sqr()?.mean_all()?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        assert!(
            rel(l, losses[k]) <= tol,
            "{run} step {k}: loss {l} vs {}",
            losses[k]
        );
        let grads = loss.backward()?;
        for (name, var) in [("W", &w), ("b", &b)] {
            let g = grads.get(var.as_tensor()).ok_or("missing grad")?;
            let d = max_rel(g, &array(&r[format!("grad_{name}")][k], dtype)?)?;
            assert!(d <= tol, "{run} step {k}: grad_{name} {d:e}");
        }
        sgd.step(&grads)?;
        for (name, var) in [("W", &w), ("b", &b)] {
            let buf = sgd.momentum_buffer(name).ok_or("no buffer")?;
            let d = max_rel(buf, &array(&r[format!("buf_{name}")][k], dtype)?)?;
            assert!(d <= tol, "{run} step {k}: buf_{name} {d:e}");
            let d = max_rel(var.as_tensor(), &array(&r[name][k + 1], dtype)?)?;
            assert!(d <= tol, "{run} step {k}: {name} {d:e}");
        }
    }
    Ok(())
}

#[test]
fn sgd_constant_f64_matches_pytorch() -> TestResult {
    run_sgd("constant_f64")
}

#[test]
fn sgd_constant_f32_matches_pytorch() -> TestResult {
    run_sgd("constant_f32")
}

#[test]
fn sgd_onecycle_f64_matches_pytorch() -> TestResult {
    run_sgd("onecycle_f64")
}

#[test]
fn sgd_onecycle_f32_matches_pytorch() -> TestResult {
    run_sgd("onecycle_f32")
}
