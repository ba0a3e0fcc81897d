//! `PackedParams` must hand every named variable exactly the gradient a plain
//! `loss.backward()` gives it, including variables used by several forward passes (RepLAI runs
//! the video encoder on the clips before and after each moment).

use av_models::{AudioCnn, AudioCnnConfig, PackedParams, R2Plus1d, R2Plus1dConfig};
use candle_core::{DType, Device, ModuleT, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};

/// Named trainable variables with their gradients from `grads`, sorted by name.
fn named_grads(
    varmap: &VarMap,
    grads: &candle_core::backprop::GradStore,
) -> Result<Vec<(String, Option<Vec<f64>>)>> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut out = Vec::new();
    for (name, var) in data.iter() {
        let g = match grads.get(var) {
            Some(g) => {
                assert_eq!(g.dims(), var.dims(), "{name}: gradient shape");
                Some(g.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
            }
            None => None,
        };
        out.push((name.clone(), g));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The loss of `runs` train-mode forward passes of `net` (inputs scaled differently so the
/// passes differ), as the sum of squares of the features.
fn loss(net: &dyn ModuleT, x: &Tensor, runs: usize) -> Result<Tensor> {
    let mut total: Option<Tensor> = None;
    for r in 0..runs {
        let y = net.forward_t(&(x * (1.0 + r as f64 * 0.5))?, true)?;
        let l = y.sqr()?.sum_all()?;
        total = Some(match total {
            Some(t) => (t + l)?,
            None => l,
        });
    }
    Ok(total.expect("at least one run"))
}

/// Gradients with and without packing, for a fresh model from `build` (same seed each time).
fn compare(
    build: &dyn Fn(&VarMap) -> Result<Box<dyn ModuleT>>,
    x: &Tensor,
    runs: usize,
) -> Result<()> {
    let varmap = VarMap::new();
    let net = build(&varmap)?;
    let plain = {
        let l = loss(net.as_ref(), x, runs)?;
        named_grads(&varmap, &l.backward()?)?
    };
    let packed = {
        let scope = PackedParams::start();
        let l = loss(net.as_ref(), x, runs)?;
        // The blocks really were packed: a plain backward reaches none of their variables.
        let plain_inside = named_grads(&varmap, &l.backward()?)?;
        assert!(
            plain_inside.iter().all(|(_, g)| g.is_none()),
            "a fused block was not packed"
        );
        named_grads(&varmap, &scope.backward(&l)?)?
    };
    assert_eq!(plain.len(), packed.len());
    let mut with_grad = 0;
    for ((name, a), (_, b)) in plain.iter().zip(&packed) {
        // Running statistics have no gradient either way; everything else must match exactly.
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "{name}: gradient present in one run only"
        );
        if let (Some(a), Some(b)) = (a, b) {
            with_grad += 1;
            assert!(a.iter().any(|v| *v != 0.0), "{name}: all-zero gradient");
            assert_eq!(a, b, "{name}: packed gradient differs");
        }
    }
    assert!(with_grad > 10, "only {with_grad} variables had gradients");
    Ok(())
}

#[test]
fn packed_audio_gradients_equal_plain_ones() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 1, 40, 32), &dev)?;
    let build = |vm: &VarMap| -> Result<Box<dyn ModuleT>> {
        let vb = VarBuilder::from_varmap(vm, DType::F32, &dev);
        Ok(Box::new(AudioCnn::new(
            &AudioCnnConfig::default().with_width(0.125),
            vb,
        )?))
    };
    compare(&build, &x, 1)?;
    compare(&build, &x, 2)
}

#[test]
fn packed_video_gradients_equal_plain_ones_in_f64_and_shared_use() -> Result<()> {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f64, 1.0, (2, 3, 4, 32, 32), &dev)?;
    let build = |vm: &VarMap| -> Result<Box<dyn ModuleT>> {
        let vb = VarBuilder::from_varmap(vm, DType::F64, &dev);
        Ok(Box::new(R2Plus1d::new(
            &R2Plus1dConfig::avid().with_width(0.125),
            vb,
        )?))
    };
    compare(&build, &x, 2)
}

#[test]
fn the_scope_ends_with_its_value() -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let net = AudioCnn::new(&AudioCnnConfig::default().with_width(0.125), vb)?;
    let x = Tensor::randn(0f32, 1.0, (2, 1, 40, 32), &dev)?;
    {
        let _dropped = PackedParams::start();
        let _ = net.forward_t(&x, true)?;
    }
    // Outside any scope a plain backward reaches the named variables again.
    let grads = net.forward_t(&x, true)?.sqr()?.sum_all()?.backward()?;
    let data = varmap.data().lock().expect("varmap lock");
    assert!(grads.get(&data["block4.conv2.weight"]).is_some());
    // A scope inside another leaves packing on until the outer one ends.
    let outer = PackedParams::start();
    let inner = PackedParams::start();
    drop(inner);
    let l = net.forward_t(&x, true)?.sqr()?.sum_all()?;
    let plain = l.backward()?;
    assert!(
        plain.get(&data["block4.conv2.weight"]).is_none(),
        "the outer scope still packs"
    );
    assert!(outer
        .backward(&l)?
        .get(&data["block4.conv2.weight"])
        .is_some());
    Ok(())
}

/// A model and an input for the scope tests below.
fn small_audio() -> Result<(VarMap, AudioCnn, Tensor)> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let net = AudioCnn::new(&AudioCnnConfig::default().with_width(0.125), vb)?;
    let x = Tensor::randn(0f32, 1.0, (2, 1, 40, 32), &dev)?;
    Ok((varmap, net, x))
}

#[test]
fn only_the_losss_own_gradients_count() -> Result<()> {
    let (varmap, net, x) = small_audio()?;
    let w = varmap.data().lock().expect("varmap lock")["block4.conv2.weight"].clone();
    let scope = PackedParams::start();
    // An auxiliary loss differentiated inside the scope leaves gradients in its blocks...
    let aux = net.forward_t(&x, true)?.sqr()?.sum_all()?;
    let _ = aux.backward()?;
    // ...which must not leak into a loss that does not depend on the network at all.
    let zero = (net.forward_t(&x, true)?.sum_all()? * 0.0)?;
    let other = Tensor::new(1f32, &Device::Cpu)?;
    let detached = (zero.detach() + other)?;
    let grads = scope.backward(&detached)?;
    assert!(grads.get(&w).is_none(), "a stale block gradient leaked");
    Ok(())
}

/// The f32 gradient of `w` in `grads`, which must hold one.
fn grad_values(
    grads: &candle_core::backprop::GradStore,
    w: &Tensor,
    what: &str,
) -> Result<Vec<f32>> {
    let g = grads.get(w).unwrap_or_else(|| panic!("no {what} gradient"));
    g.flatten_all()?.to_vec1::<f32>()
}

#[test]
fn eval_mode_blocks_and_inner_scopes_differentiate_too() -> Result<()> {
    let (varmap, net, x) = small_audio()?;
    let w = varmap.data().lock().expect("varmap lock")["block2.conv1.weight"].clone();
    let reference = {
        let l = net.forward_t(&x, false)?.sqr()?.sum_all()?;
        grad_values(&l.backward()?, &w, "plain")?
    };
    // Eval-mode BN (running statistics) inside a scope.
    let scope = PackedParams::start();
    let l = net.forward_t(&x, false)?.sqr()?.sum_all()?;
    assert_eq!(grad_values(&scope.backward(&l)?, &w, "packed")?, reference);
    // An inner scope's own backward sees the blocks packed under the outer scope.
    let outer = PackedParams::start();
    let inner = PackedParams::start();
    let l = net.forward_t(&x, false)?.sqr()?.sum_all()?;
    assert_eq!(
        grad_values(&inner.backward(&l)?, &w, "inner-scope")?,
        reference
    );
    drop(outer);
    Ok(())
}
