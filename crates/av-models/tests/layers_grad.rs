//! Every layer against an f64 central finite difference (gradients with respect to the
//! input and every parameter), plus forward checks against naive loop implementations
//! of Conv3d / MaxPool3d, on tiny shapes with odd and even sizes.
// Tests panic on failure by design; unwrap is the clearest way to say so.
#![allow(clippy::unwrap_used)]

use av_models::layers::{
    batch_norm, conv2d, global_avg_pool, global_max_pool, Conv3dConfig, LinearInit, MaxPool, Mlp,
    MlpBn,
};
use candle_core::{DType, Device, Module, ModuleT, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

const H: f64 = 1e-6;

/// Deterministic pseudo-random values in [-1, 1) (no ties in max-pool windows).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()
}

/// Compares autograd with central differences for every element of every input of
/// `f`, using the loss sum(f(inputs) * r) with a fixed random r.
fn check_grads(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&ts).unwrap();
    let r = tensor(y.dims(), 99);
    let loss = |ts: &[Tensor]| -> f64 {
        (f(ts).unwrap() * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for (i, v) in vars.iter().enumerate() {
        let g = grads
            .get(v.as_tensor())
            .map(|g| g.flatten_all().unwrap().to_vec1::<f64>().unwrap())
            .unwrap_or_else(|| vec![0.0; v.elem_count()]);
        let base = inputs[i].flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for j in 0..base.len() {
            let eval_at = |delta: f64| {
                let mut p = base.clone();
                p[j] += delta;
                let mut ts2: Vec<Tensor> = inputs.to_vec();
                ts2[i] = Tensor::from_vec(p, inputs[i].dims(), &Device::Cpu).unwrap();
                loss(&ts2)
            };
            let fd = (eval_at(H) - eval_at(-H)) / (2.0 * H);
            let tol = 1e-6 * (1.0 + fd.abs());
            assert!(
                (g[j] - fd).abs() <= tol,
                "input {i} element {j}: autograd {} vs finite difference {fd}",
                g[j]
            );
        }
    }
}

/// Naive direct Conv3d (no bias) on f64 vectors, PyTorch semantics.
fn naive_conv3d(x: &Tensor, w: &Tensor, cfg: Conv3dConfig) -> Tensor {
    let (b, c, t, h, wd) = x.dims5().unwrap();
    let (o, _, kt, kh, kw) = w.dims5().unwrap();
    let xv = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let wv = w.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let [st, sh, sw] = cfg.stride;
    let [pt, ph, pw] = cfg.padding;
    let to = (t + 2 * pt - kt) / st + 1;
    let ho = (h + 2 * ph - kh) / sh + 1;
    let wo = (wd + 2 * pw - kw) / sw + 1;
    let mut out = vec![0.0; b * o * to * ho * wo];
    for bi in 0..b {
        for oi in 0..o {
            for ti in 0..to {
                for hi in 0..ho {
                    for wi in 0..wo {
                        let mut acc = 0.0;
                        for ci in 0..c {
                            for a in 0..kt {
                                for p in 0..kh {
                                    for q in 0..kw {
                                        let tt = (ti * st + a) as isize - pt as isize;
                                        let hh = (hi * sh + p) as isize - ph as isize;
                                        let ww = (wi * sw + q) as isize - pw as isize;
                                        if tt < 0
                                            || hh < 0
                                            || ww < 0
                                            || tt >= t as isize
                                            || hh >= h as isize
                                            || ww >= wd as isize
                                        {
                                            continue;
                                        }
                                        let xi = (((bi * c + ci) * t + tt as usize) * h
                                            + hh as usize)
                                            * wd
                                            + ww as usize;
                                        let wj = (((oi * c + ci) * kt + a) * kh + p) * kw + q;
                                        acc += xv[xi] * wv[wj];
                                    }
                                }
                            }
                        }
                        out[(((bi * o + oi) * to + ti) * ho + hi) * wo + wi] = acc;
                    }
                }
            }
        }
    }
    Tensor::from_vec(out, (b, o, to, ho, wo), &Device::Cpu).unwrap()
}

fn conv_cases() -> Vec<(Conv3dConfig, [usize; 5], usize)> {
    let c = |kernel, stride, padding| Conv3dConfig {
        kernel,
        stride,
        padding,
    };
    vec![
        // spatial (1,3,3) stride 2 on odd/even H, W (asymmetric remainders)
        (c([1, 3, 3], [1, 2, 2], [0, 1, 1]), [2, 2, 3, 5, 6], 3),
        (c([1, 3, 3], [1, 1, 1], [0, 1, 1]), [1, 2, 2, 4, 3], 2),
        // temporal (3,1,1) with stride 2 on odd and even T
        (c([3, 1, 1], [2, 1, 1], [1, 0, 0]), [1, 2, 5, 2, 3], 3),
        (c([3, 1, 1], [2, 1, 1], [1, 0, 0]), [2, 2, 4, 2, 2], 2),
        (c([3, 1, 1], [1, 1, 1], [1, 0, 0]), [1, 3, 4, 2, 2], 2),
        // full stem-like kernel
        (c([3, 5, 5], [1, 2, 2], [1, 2, 2]), [1, 2, 3, 7, 6], 2),
        // strided pointwise shortcut
        (c([1, 1, 1], [2, 2, 2], [0, 0, 0]), [1, 3, 5, 5, 4], 2),
    ]
}

#[test]
fn conv3d_forward_matches_naive_loops() {
    for (i, (cfg, shape, out_c)) in conv_cases().into_iter().enumerate() {
        let x = tensor(&shape, 1 + i as u64);
        let w = tensor(
            &[out_c, shape[1], cfg.kernel[0], cfg.kernel[1], cfg.kernel[2]],
            50 + i as u64,
        );
        let conv = av_models::layers::Conv3d::new(w.clone(), cfg).unwrap();
        let got = conv.forward(&x).unwrap();
        let want = naive_conv3d(&x, &w, cfg);
        assert_eq!(got.dims(), want.dims(), "case {i} {cfg:?}");
        let d = (got - want)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-12, "case {i} {cfg:?}: max diff {d}");
    }
}

#[test]
fn conv3d_gradients_match_finite_differences() {
    for (i, (cfg, shape, out_c)) in conv_cases().into_iter().enumerate() {
        let x = tensor(&shape, 10 + i as u64);
        let w = tensor(
            &[out_c, shape[1], cfg.kernel[0], cfg.kernel[1], cfg.kernel[2]],
            70 + i as u64,
        );
        check_grads(&[x, w], |t| {
            av_models::layers::Conv3d::new(t[1].clone(), cfg)?.forward(&t[0])
        });
    }
}

#[test]
fn conv2d_strided_any_size_gradients() {
    // 7x7 stride 2 pad 3 (audio stem) and 3x3 stride 2 pad 1 on sizes whose remainders
    // differ between H and W (candle's own strided conv2d backward fails there).
    for (k, p, shape) in [
        (7, 3, [2, 1, 9, 8]),
        (3, 1, [1, 2, 5, 6]),
        (3, 1, [1, 2, 4, 7]),
    ] {
        let x = tensor(&shape, 3);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
        let conv = conv2d(shape[1], 2, k, 2, p, vb).unwrap();
        let w = conv.weight().clone();
        // Output size follows PyTorch's floor formula.
        let y = conv.forward(&x).unwrap();
        assert_eq!(y.dims()[2], (shape[2] + 2 * p - k) / 2 + 1);
        assert_eq!(y.dims()[3], (shape[3] + 2 * p - k) / 2 + 1);
        check_grads(&[x, w], |t| {
            av_models::layers::Conv2d::new(t[1].clone(), (2, 2), (p, p))?.forward(&t[0])
        });
    }
}

#[test]
fn stem_max_pool_matches_naive_and_gradients() {
    let pool = MaxPool::<3> {
        kernel: [1, 3, 3],
        stride: [1, 2, 2],
        padding: [0, 1, 1],
    };
    let x = tensor(&[1, 2, 2, 5, 6], 5);
    let y = pool.forward(&x).unwrap();
    assert_eq!(y.dims(), &[1, 2, 2, 3, 3]);
    let xv = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let yv = y.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    for c in 0..2 {
        for t in 0..2 {
            for i in 0..3 {
                for j in 0..3 {
                    let mut m = f64::NEG_INFINITY;
                    for p in 0..3 {
                        for q in 0..3 {
                            let (h, w) = ((2 * i + p) as isize - 1, (2 * j + q) as isize - 1);
                            if (0..5).contains(&h) && (0..6).contains(&w) {
                                m = m.max(xv[((c * 2 + t) * 5 + h as usize) * 6 + w as usize]);
                            }
                        }
                    }
                    assert_eq!(yv[((c * 2 + t) * 3 + i) * 3 + j], m);
                }
            }
        }
    }
    check_grads(&[x], |t| pool.forward(&t[0]));
    // Non-overlapping 2-D pooling (candle's max_pool2d backward scales this by 1/k^2).
    let pool2 = MaxPool::<2> {
        kernel: [2, 2],
        stride: [2, 2],
        padding: [0, 0],
    };
    check_grads(&[tensor(&[1, 2, 4, 6], 6)], |t| pool2.forward(&t[0]));
}

#[test]
fn global_pools_gradients() {
    check_grads(&[tensor(&[2, 3, 2, 2, 3], 7)], |t| global_max_pool(&t[0]));
    check_grads(&[tensor(&[2, 3, 2, 3], 8)], |t| global_avg_pool(&t[0]));
}

#[test]
fn batch_norm_train_and_eval_gradients_any_rank() {
    for shape in [vec![4, 3], vec![2, 3, 4], vec![2, 2, 3, 2, 2]] {
        let c = shape[1];
        let x = tensor(&shape, 11);
        let w = (tensor(&[c], 12) + 1.5).unwrap();
        let b = tensor(&[c], 13);
        for train in [true, false] {
            check_grads(&[x.clone(), w.clone(), b.clone()], |t| {
                let mut m = std::collections::HashMap::new();
                m.insert("weight".to_string(), t[1].clone());
                m.insert("bias".to_string(), t[2].clone());
                m.insert(
                    "running_mean".to_string(),
                    (Tensor::ones(c, DType::F64, &Device::Cpu)? * 0.3)?,
                );
                m.insert(
                    "running_var".to_string(),
                    (Tensor::ones(c, DType::F64, &Device::Cpu)? * 1.7)?,
                );
                let vb = VarBuilder::from_tensors(m, DType::F64, &Device::Cpu);
                batch_norm(c, vb)?.forward_t(&t[0], train)
            });
        }
    }
}

#[test]
fn batch_norm_running_stats_follow_pytorch() {
    // PyTorch: new = 0.9 old + 0.1 batch, with the unbiased batch variance.
    let x = Tensor::new(&[[1.0f64, 2.0], [3.0, 6.0], [5.0, 10.0]], &Device::Cpu).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &Device::Cpu);
    let bn = batch_norm(2, vb).unwrap();
    let y = bn.forward_t(&x, true).unwrap();
    let rm = bn.running_mean().to_vec1::<f64>().unwrap();
    let rv = bn.running_var().to_vec1::<f64>().unwrap();
    assert!(
        (rm[0] - 0.3).abs() < 1e-12 && (rm[1] - 0.6).abs() < 1e-12,
        "{rm:?}"
    );
    // unbiased var of [1,3,5] = 4, of [2,6,10] = 16
    assert!(
        (rv[0] - (0.9 + 0.4)).abs() < 1e-12 && (rv[1] - (0.9 + 1.6)).abs() < 1e-12,
        "{rv:?}"
    );
    // normalised with the biased variance 8/3: (1-3)/sqrt(8/3 + 1e-5)
    let y0 = y.to_vec2::<f64>().unwrap()[0][0];
    assert!((y0 - (-2.0 / (8.0f64 / 3.0 + 1e-5).sqrt())).abs() < 1e-12);
    // The stats live in the VarMap under PyTorch names.
    let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    for n in ["weight", "bias", "running_mean", "running_var"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }
    // One value per channel is an error in train mode, as in PyTorch.
    let one = Tensor::new(&[[1.0f64, 2.0]], &Device::Cpu).unwrap();
    assert!(bn.forward_t(&one, true).is_err());
}

#[test]
fn mlp_gradients() {
    let x = tensor(&[3, 4], 20);
    check_grads(std::slice::from_ref(&x), |t| {
        // Fixed weights (random inits would differ between the perturbed calls).
        let mut m = std::collections::HashMap::new();
        m.insert("0.weight".to_string(), tensor(&[5, 4], 21));
        m.insert("0.bias".to_string(), tensor(&[5], 22));
        m.insert("2.weight".to_string(), tensor(&[2, 5], 23));
        m.insert("2.bias".to_string(), tensor(&[2], 24));
        let vb = VarBuilder::from_tensors(m, DType::F64, &Device::Cpu);
        Mlp::new(&[4, 5, 2], LinearInit::TorchDefault, vb)?.forward(&t[0])
    });
    check_grads(&[x], |t| {
        let mut m = std::collections::HashMap::new();
        m.insert("0.weight".to_string(), tensor(&[5, 4], 31));
        m.insert("0.bias".to_string(), tensor(&[5], 32));
        m.insert("1.weight".to_string(), (tensor(&[5], 33) + 1.5)?);
        m.insert("1.bias".to_string(), tensor(&[5], 34));
        m.insert("1.running_mean".to_string(), tensor(&[5], 35));
        m.insert("1.running_var".to_string(), (tensor(&[5], 36) + 1.5)?);
        m.insert("3.weight".to_string(), tensor(&[2, 5], 37));
        m.insert("3.bias".to_string(), tensor(&[2], 38));
        let vb = VarBuilder::from_tensors(m, DType::F64, &Device::Cpu);
        MlpBn::new(&[4, 5, 2], true, vb)?.forward_t(&t[0], true)
    });
}

#[test]
fn both_conv2d_implementations_agree_and_have_correct_gradients() {
    use av_models::layers::ops::conv2d_with;
    use av_models::layers::ConvImpl;
    for (k, s, p, shape) in [
        (7, 2, 3, [2, 1, 9, 8]),
        (3, 2, 1, [1, 2, 5, 6]),
        (3, 1, 1, [1, 2, 4, 7]),
        (1, 2, 0, [1, 3, 5, 4]),
    ] {
        let x = tensor(&shape, 40);
        let w = tensor(&[3, shape[1], k, k], 41);
        let a = conv2d_with(ConvImpl::Candle, &x, &w, (s, s), (p, p)).unwrap();
        let b = conv2d_with(ConvImpl::Im2col, &x, &w, (s, s), (p, p)).unwrap();
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!(d < 1e-12, "k{k} s{s}: {d}");
        for imp in [ConvImpl::Candle, ConvImpl::Im2col] {
            check_grads(&[x.clone(), w.clone()], |t| {
                conv2d_with(imp, &t[0], &t[1], (s, s), (p, p))
            });
        }
    }
    // Unequal strides.
    let x = tensor(&[1, 2, 7, 6], 42);
    let w = tensor(&[2, 2, 3, 3], 43);
    let a = conv2d_with(ConvImpl::Candle, &x, &w, (2, 1), (1, 1)).unwrap();
    let b = conv2d_with(ConvImpl::Im2col, &x, &w, (2, 1), (1, 1)).unwrap();
    assert_eq!(a.dims(), &[1, 2, 4, 6]);
    let d = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(d < 1e-12);
}
