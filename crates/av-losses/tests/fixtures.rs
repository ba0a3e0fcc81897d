//! Losses against the PyTorch reference values in `tests/fixtures/` (see its README).
//!
//! Every case runs twice: in f32 (the inputs as stored; tolerances 1e-6 relative on values,
//! 1e-5 on gradients as `max |port - ref| / max |ref|`, against the f64 reference) and in f64
//! (the same inputs widened; tolerances 1e-12 / 1e-10), which pins the formula itself.

use std::collections::HashMap;
use std::path::PathBuf;

use av_losses::{
    astc_loss, astc_scores, avc_loss, replai_loss, vicreg_loss, AstcConfig, AvcConfig, MemoryBank,
    ReplaiEmbeddings, ReplaiLossConfig, VicregConfig, XidConfig, XidLoss,
};
use candle_core::{DType, Device, Module, Result, Tensor, Var};

type Map = HashMap<String, Tensor>;

fn load(name: &str) -> Result<Map> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.safetensors"));
    candle_core::safetensors::load(path, &Device::Cpu)
}

fn get(map: &Map, key: &str) -> Result<Tensor> {
    map.get(key)
        .cloned()
        .ok_or_else(|| candle_core::Error::msg(format!("fixture tensor `{key}` missing")))
}

/// Tolerances for one precision.
#[derive(Clone, Copy)]
struct Tol {
    dtype: DType,
    value: f64,
    grad: f64,
}

const F32: Tol = Tol {
    dtype: DType::F32,
    value: 1e-6,
    grad: 1e-5,
};
const F64: Tol = Tol {
    dtype: DType::F64,
    value: 1e-12,
    grad: 1e-10,
};

fn to_f64_vec(t: &Tensor) -> Result<Vec<f64>> {
    t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()
}

/// `max |got - want| / max |want|`.
fn max_rel(got: &Tensor, want: &Tensor) -> Result<f64> {
    let g = to_f64_vec(got)?;
    let w = to_f64_vec(want)?;
    assert_eq!(g.len(), w.len(), "element count differs");
    let scale = w.iter().fold(0f64, |m, x| m.max(x.abs()));
    let diff = g
        .iter()
        .zip(&w)
        .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    Ok(diff / scale)
}

fn check(what: &str, got: &Tensor, want: &Tensor, tol: f64) -> Result<()> {
    let r = max_rel(got, want)?;
    assert!(r <= tol, "{what}: relative difference {r:e} > {tol:e}");
    Ok(())
}

/// A leaf variable from a fixture input, in the tested dtype.
fn leaf(map: &Map, key: &str, dtype: DType) -> Result<Var> {
    Var::from_tensor(&get(map, key)?.to_dtype(dtype)?)
}

fn grad_of(grads: &candle_core::backprop::GradStore, v: &Var, name: &str) -> Result<Tensor> {
    grads
        .get(v.as_tensor())
        .cloned()
        .ok_or_else(|| candle_core::Error::msg(format!("no gradient for {name}")))
}

/// RepLAI's `mlp.aot_diff`: Linear -> ReLU -> Linear, built from fixture weights.
struct AotDiff {
    l0: candle_nn::Linear,
    l2: candle_nn::Linear,
    params: Vec<(String, Var)>,
}

impl AotDiff {
    fn from_fixture(map: &Map, dtype: DType) -> Result<Self> {
        let mut params = Vec::new();
        for n in ["0.weight", "0.bias", "2.weight", "2.bias"] {
            params.push((
                format!("param.aot_diff.{n}"),
                leaf(map, &format!("input.param.aot_diff.{n}"), dtype)?,
            ));
        }
        let t = |i: usize| params[i].1.as_tensor().clone();
        let l0 = candle_nn::Linear::new(t(0), Some(t(1)));
        let l2 = candle_nn::Linear::new(t(2), Some(t(3)));
        Ok(Self { l0, l2, params })
    }
}

impl Module for AotDiff {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.l2.forward(&self.l0.forward(xs)?.relu()?)
    }
}

fn run_avc(tol: Tol) -> Result<()> {
    let m = load("avc")?;
    for variant in ["live", "detached"] {
        let vb = leaf(&m, "input.v_before", tol.dtype)?;
        let va = leaf(&m, "input.v_after", tol.dtype)?;
        let a = leaf(&m, "input.a", tol.dtype)?;
        let cfg = AvcConfig {
            temperature: 0.07,
            detach_keys: variant == "detached",
        };
        let out = avc_loss(vb.as_tensor(), va.as_tensor(), a.as_tensor(), &cfg)?;
        let r = |k: &str| get(&m, &format!("{variant}.{k}.f64"));
        check(
            &format!("avc {variant} loss"),
            &out.loss,
            &r("loss")?,
            tol.value,
        )?;
        check(
            &format!("avc {variant} l_va"),
            &out.l_va,
            &r("l_va")?,
            tol.value,
        )?;
        check(
            &format!("avc {variant} l_av"),
            &out.l_av,
            &r("l_av")?,
            tol.value,
        )?;
        check(
            &format!("avc {variant} logits_va"),
            &out.logits_va,
            &r("logits_va")?,
            tol.value,
        )?;
        check(
            &format!("avc {variant} logits_av"),
            &out.logits_av,
            &r("logits_av")?,
            tol.value,
        )?;
        let grads = out.loss.backward()?;
        for (name, v) in [("v_before", &vb), ("v_after", &va), ("a", &a)] {
            check(
                &format!("avc {variant} grad {name}"),
                &grad_of(&grads, v, name)?,
                &r(&format!("grad.{name}"))?,
                tol.grad,
            )?;
        }
    }
    Ok(())
}

#[test]
fn avc_matches_reference_f32() -> Result<()> {
    run_avc(F32)
}

#[test]
fn avc_matches_reference_f64() -> Result<()> {
    run_avc(F64)
}

#[test]
fn avc_variants_differ_only_in_gradients() -> Result<()> {
    // Guards the fixture comparison: if `detach_keys` were ignored, both variants would share
    // gradients and one of the reference checks above would fail; make that explicit.
    let m = load("avc")?;
    let live = get(&m, "live.grad.a.f64")?;
    let det = get(&m, "detached.grad.a.f64")?;
    assert!(max_rel(&live, &det)? > 1e-2);
    Ok(())
}

fn run_astc(tol: Tol) -> Result<()> {
    let m = load("astc")?;
    let gb = leaf(&m, "input.g_before", tol.dtype)?;
    let ga = leaf(&m, "input.g_after", tol.dtype)?;
    let gaud = leaf(&m, "input.g_a", tol.dtype)?;
    let mlp = AotDiff::from_fixture(&m, tol.dtype)?;
    let cfg = AstcConfig::default();
    let s = astc_scores(gb.as_tensor(), ga.as_tensor(), gaud.as_tensor(), &mlp, &cfg)?;
    check("astc s_f", &s.forward, &get(&m, "astc.s_f.f64")?, tol.value)?;
    check(
        "astc s_b",
        &s.backward,
        &get(&m, "astc.s_b.f64")?,
        tol.value,
    )?;
    // Row 0 has after == before: both directions see aot_diff(0).
    let (sf, sb) = (to_f64_vec(&s.forward)?, to_f64_vec(&s.backward)?);
    assert_eq!(sf[0], sb[0]);
    let loss = astc_loss(gb.as_tensor(), ga.as_tensor(), gaud.as_tensor(), &mlp, &cfg)?;
    check("astc loss", &loss, &get(&m, "astc.loss.f64")?, tol.value)?;
    let grads = loss.backward()?;
    for (name, v) in [("g_before", &gb), ("g_after", &ga), ("g_a", &gaud)] {
        let want = get(&m, &format!("astc.grad.{name}.f64"))?;
        check(
            &format!("astc grad {name}"),
            &grad_of(&grads, v, name)?,
            &want,
            tol.grad,
        )?;
    }
    for (name, v) in &mlp.params {
        let want = get(&m, &format!("astc.grad.{name}.f64"))?;
        check(
            &format!("astc grad {name}"),
            &grad_of(&grads, v, name)?,
            &want,
            tol.grad,
        )?;
    }
    Ok(())
}

#[test]
fn astc_matches_reference_f32() -> Result<()> {
    run_astc(F32)
}

#[test]
fn astc_matches_reference_f64() -> Result<()> {
    run_astc(F64)
}

fn run_total(tol: Tol) -> Result<()> {
    let m = load("total")?;
    for variant in ["live", "detached"] {
        let names = ["v_before", "v_after", "a", "g_before", "g_after", "g_a"];
        let vars = names
            .iter()
            .map(|n| leaf(&m, &format!("input.{n}"), tol.dtype))
            .collect::<Result<Vec<_>>>()?;
        let mlp = AotDiff::from_fixture(&m, tol.dtype)?;
        let emb = ReplaiEmbeddings {
            v_before: vars[0].as_tensor(),
            v_after: vars[1].as_tensor(),
            a: vars[2].as_tensor(),
            g_before: vars[3].as_tensor(),
            g_after: vars[4].as_tensor(),
            g_a: vars[5].as_tensor(),
        };
        let mut cfg = ReplaiLossConfig::default();
        cfg.avc.detach_keys = variant == "detached";
        let out = replai_loss(&emb, &mlp, &cfg)?;
        let r = |k: &str| get(&m, &format!("{variant}.{k}.f64"));
        check(
            &format!("total {variant}"),
            &out.total,
            &r("loss")?,
            tol.value,
        )?;
        let avc = out
            .avc
            .as_ref()
            .map(|o| o.loss.clone())
            .ok_or_else(|| candle_core::Error::msg("AVC term missing"))?;
        check(&format!("total {variant} avc"), &avc, &r("avc")?, tol.value)?;
        let astc = out
            .astc
            .clone()
            .ok_or_else(|| candle_core::Error::msg("AStC term missing"))?;
        check(
            &format!("total {variant} astc"),
            &astc,
            &r("astc")?,
            tol.value,
        )?;
        let grads = out.total.backward()?;
        for (name, v) in names.iter().zip(&vars) {
            check(
                &format!("total {variant} grad {name}"),
                &grad_of(&grads, v, name)?,
                &r(&format!("grad.{name}"))?,
                tol.grad,
            )?;
        }
        for (name, v) in &mlp.params {
            check(
                &format!("total {variant} grad {name}"),
                &grad_of(&grads, v, name)?,
                &r(&format!("grad.{name}"))?,
                tol.grad,
            )?;
        }
    }
    Ok(())
}

#[test]
fn total_matches_reference_f32() -> Result<()> {
    run_total(F32)
}

#[test]
fn total_matches_reference_f64() -> Result<()> {
    run_total(F64)
}

fn indices(map: &Map, key: &str) -> Result<Vec<usize>> {
    Ok(get(map, key)?
        .to_vec1::<i64>()?
        .into_iter()
        .map(|i| i as usize)
        .collect())
}

fn run_xid(tol: Tol) -> Result<()> {
    let m = load("xid")?;
    let video = MemoryBank::from_tensor(
        "view1_mem",
        get(&m, "input.view1_mem")?.to_dtype(tol.dtype)?,
    )?;
    let audio = MemoryBank::from_tensor(
        "view2_mem",
        get(&m, "input.view2_mem")?.to_dtype(tol.dtype)?,
    )?;
    let cfg = XidConfig {
        num_negatives: 8,
        ..XidConfig::default()
    };
    let mut xid = XidLoss::from_banks(video, audio, cfg)?;
    assert_eq!(xid.partition_constant(), None);
    for step in [1, 2] {
        let v = leaf(&m, &format!("input.v{step}"), tol.dtype)?;
        let a = leaf(&m, &format!("input.a{step}"), tol.dtype)?;
        let y = indices(&m, &format!("input.y{step}"))?;
        let neg = get(&m, &format!("input.neg{step}"))?;
        let out = xid.forward_with_negatives(v.as_tensor(), a.as_tensor(), &y, &neg)?;
        let r = |k: &str| get(&m, &format!("step{step}.{k}.f64"));
        let z = xid
            .partition_constant()
            .ok_or_else(|| candle_core::Error::msg("Z not set"))?;
        let z_ref = r("Z")?.to_scalar::<f64>()?;
        assert!(
            ((z - z_ref) / z_ref).abs() <= tol.value,
            "step {step} Z {z} vs {z_ref}"
        );
        check(
            &format!("xid step {step} loss"),
            &out.loss,
            &r("loss")?,
            tol.value,
        )?;
        check(
            &format!("xid step {step} l_v2a"),
            &out.l_v2a,
            &r("l_v2a")?,
            tol.value,
        )?;
        check(
            &format!("xid step {step} l_a2v"),
            &out.l_a2v,
            &r("l_a2v")?,
            tol.value,
        )?;
        for (k, t) in [
            ("v2a_pos", &out.v2a_pos),
            ("v2a_neg", &out.v2a_neg),
            ("a2v_pos", &out.a2v_pos),
            ("a2v_neg", &out.a2v_neg),
        ] {
            check(&format!("xid step {step} {k}"), t, &r(k)?, tol.value)?;
        }
        let grads = out.loss.backward()?;
        check(
            &format!("xid step {step} grad v"),
            &grad_of(&grads, &v, "v")?,
            &r("grad.v")?,
            tol.grad,
        )?;
        check(
            &format!("xid step {step} grad a"),
            &grad_of(&grads, &a, "a")?,
            &r("grad.a")?,
            tol.grad,
        )?;
        xid.update(v.as_tensor(), a.as_tensor(), &y)?;
        check(
            &format!("xid step {step} video bank"),
            xid.video_bank().tensor(),
            &r("view1_mem_after")?,
            tol.value,
        )?;
        check(
            &format!("xid step {step} audio bank"),
            xid.audio_bank().tensor(),
            &r("view2_mem_after")?,
            tol.value,
        )?;
    }
    Ok(())
}

#[test]
fn xid_two_steps_match_reference_f32() -> Result<()> {
    run_xid(F32)
}

#[test]
fn xid_two_steps_match_reference_f64() -> Result<()> {
    run_xid(F64)
}

fn run_vicreg(tol: Tol) -> Result<()> {
    let m = load("vicreg")?;
    let variants = [
        ("code", VicregConfig::default()),
        ("paper", VicregConfig::paper()),
        (
            "code_neff",
            VicregConfig {
                n_eff: Some(32),
                ..VicregConfig::default()
            },
        ),
    ];
    for (variant, cfg) in variants {
        let x = leaf(&m, "input.x", tol.dtype)?;
        let y = leaf(&m, "input.y", tol.dtype)?;
        let out = vicreg_loss(x.as_tensor(), y.as_tensor(), &cfg)?;
        let r = |k: &str| get(&m, &format!("{variant}.{k}.f64"));
        for (k, t) in [
            ("loss", &out.loss),
            ("repr_mse", &out.repr_mse),
            ("std_term", &out.std_term),
            ("cov_term", &out.cov_term),
            ("std_x", &out.std_x),
            ("std_y", &out.std_y),
        ] {
            check(&format!("vicreg {variant} {k}"), t, &r(k)?, tol.value)?;
        }
        let grads = out.loss.backward()?;
        check(
            &format!("vicreg {variant} grad x"),
            &grad_of(&grads, &x, "x")?,
            &r("grad.x")?,
            tol.grad,
        )?;
        check(
            &format!("vicreg {variant} grad y"),
            &grad_of(&grads, &y, "y")?,
            &r("grad.y")?,
            tol.grad,
        )?;
    }
    Ok(())
}

#[test]
fn vicreg_variants_match_reference_f32() -> Result<()> {
    run_vicreg(F32)
}

#[test]
fn vicreg_variants_match_reference_f64() -> Result<()> {
    run_vicreg(F64)
}
