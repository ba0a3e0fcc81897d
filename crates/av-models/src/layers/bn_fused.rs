//! Training-mode batch normalisation as fused CPU custom ops.
//!
//! Written with broadcast ops, a train-mode BatchNorm costs about fifteen full passes over its
//! input between forward and backward, most of them candle's strided `sum` over every axis but
//! the channel. These ops make it three passes forward (statistics, normalise) and two backward
//! (per-channel sums, input gradient), with the statistics accumulated in f64. Values and
//! gradients are those of PyTorch's `batch_norm` (biased variance in the normalisation).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// The elements of a contiguous CPU storage as a slice; `what` names the op in the error.
pub(crate) fn slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{what}: input must be contiguous")))?;
    Ok(&s.as_slice::<T>()?[a..b])
}

fn unsupported(s: &CpuStorage, op: &'static str) -> candle_core::Error {
    candle_core::Error::UnsupportedDTypeForOp(s.dtype(), op)
}

/// Runs the f32 or f64 kernel on three same-dtype contiguous inputs.
fn dispatch3(
    inputs: [(&CpuStorage, &Layout); 3],
    op: &'static str,
    f32_kernel: impl Fn(&[f32], &[f32], &[f32]) -> Vec<f32>,
    f64_kernel: impl Fn(&[f64], &[f64], &[f64]) -> Vec<f64>,
) -> Result<CpuStorage> {
    let [(s1, l1), (s2, l2), (s3, l3)] = inputs;
    Ok(match (s1, s2, s3) {
        (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => CpuStorage::F32(
            f32_kernel(slice(s1, l1, op)?, slice(s2, l2, op)?, slice(s3, l3, op)?),
        ),
        (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => CpuStorage::F64(
            f64_kernel(slice(s1, l1, op)?, slice(s2, l2, op)?, slice(s3, l3, op)?),
        ),
        _ => return Err(unsupported(s1, op)),
    })
}

/// Per-channel mean and biased variance of (B, C, L), as a (2, C) f64 tensor.
struct Stats {
    dims: (usize, usize, usize),
}

fn stats<T: WithDType>(x: &[T], (b, c, l): (usize, usize, usize)) -> Vec<f64> {
    let m = (b * l) as f64;
    let per: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let rows = (0..b).map(|bi| &x[(bi * c + ch) * l..(bi * c + ch + 1) * l]);
            let mean = rows
                .clone()
                .map(|r| r.iter().map(|v| v.to_f64()).sum::<f64>())
                .sum::<f64>()
                / m;
            let var = rows
                .map(|r| r.iter().map(|v| (v.to_f64() - mean).powi(2)).sum::<f64>())
                .sum::<f64>()
                / m;
            (mean, var)
        })
        .collect();
    per.iter()
        .map(|p| p.0)
        .chain(per.iter().map(|p| p.1))
        .collect()
}

impl CustomOp1 for Stats {
    fn name(&self) -> &'static str {
        "bn-stats"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let v = match s {
            CpuStorage::F32(_) => stats(slice::<f32>(s, l, "bn-stats")?, self.dims),
            CpuStorage::F64(_) => stats(slice::<f64>(s, l, "bn-stats")?, self.dims),
            _ => return Err(unsupported(s, "bn-stats")),
        };
        Ok((CpuStorage::F64(v), Shape::from((2, self.dims.1))))
    }
}

/// Per-channel batch mean and biased variance of a contiguous CPU (B, C, L) tensor.
pub fn batch_stats(x: &Tensor) -> Result<(Vec<f64>, Vec<f64>)> {
    let dims = x.dims3()?;
    let v = x
        .apply_op1_no_bwd(&Stats { dims })?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let (mean, var) = v.split_at(dims.1);
    Ok((mean.to_vec(), var.to_vec()))
}

/// y = (x - mean) * invstd * gamma + beta with the batch statistics fixed at construction.
struct Normalize {
    mean: Vec<f64>,
    invstd: Vec<f64>,
    dims: (usize, usize, usize),
}

fn normalize<T: WithDType>(x: &[T], gamma: &[T], beta: &[T], op: &Normalize) -> Vec<T> {
    let (_, c, l) = op.dims;
    let mut y = vec![T::zero(); x.len()];
    y.par_chunks_mut(l)
        .zip(x.par_chunks(l))
        .enumerate()
        .for_each(|(row, (dst, src))| {
            let ch = row % c;
            let scale = op.invstd[ch] * gamma[ch].to_f64();
            let (mean, shift) = (op.mean[ch], beta[ch].to_f64());
            for (d, s) in dst.iter_mut().zip(src) {
                *d = T::from_f64((s.to_f64() - mean) * scale + shift);
            }
        });
    y
}

/// Backward of [`Normalize`] on (grad, x, gamma): returns `[dx, dgamma, dbeta]` flattened.
struct NormalizeGrad {
    mean: Vec<f64>,
    invstd: Vec<f64>,
    dims: (usize, usize, usize),
}

fn normalize_grad<T: WithDType>(dy: &[T], x: &[T], gamma: &[T], op: &NormalizeGrad) -> Vec<T> {
    let (b, c, l) = op.dims;
    let m = (b * l) as f64;
    // Per channel: sum(dy) (= dbeta) and sum(dy * xhat) (= dgamma).
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mean, inv) = (op.mean[ch], op.invstd[ch]);
            let mut s_dy = 0.0;
            let mut s_dyx = 0.0;
            for bi in 0..b {
                let r = (bi * c + ch) * l..(bi * c + ch + 1) * l;
                for (g, v) in dy[r.clone()].iter().zip(&x[r]) {
                    let g = g.to_f64();
                    s_dy += g;
                    s_dyx += g * (v.to_f64() - mean) * inv;
                }
            }
            (s_dy, s_dyx)
        })
        .collect();
    let mut out = vec![T::zero(); b * c * l + 2 * c];
    let (dx, rest) = out.split_at_mut(b * c * l);
    dx.par_chunks_mut(l)
        .zip(dy.par_chunks(l).zip(x.par_chunks(l)))
        .enumerate()
        .for_each(|(row, (dst, (g, v)))| {
            let ch = row % c;
            let (mean, inv) = (op.mean[ch], op.invstd[ch]);
            let k = gamma[ch].to_f64() * inv;
            let (mdy, mdyx) = (sums[ch].0 / m, sums[ch].1 / m);
            for ((d, g), v) in dst.iter_mut().zip(g).zip(v) {
                let xhat = (v.to_f64() - mean) * inv;
                *d = T::from_f64(k * (g.to_f64() - mdy - xhat * mdyx));
            }
        });
    for ch in 0..c {
        rest[ch] = T::from_f64(sums[ch].1);
        rest[c + ch] = T::from_f64(sums[ch].0);
    }
    out
}

impl CustomOp3 for Normalize {
    fn name(&self) -> &'static str {
        "bn-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch3(
            [(s1, l1), (s2, l2), (s3, l3)],
            "bn-train",
            |x, g, b| normalize(x, g, b, self),
            |x, g, b| normalize(x, g, b, self),
        )?;
        Ok((out, Shape::from(self.dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, c, l) = self.dims;
        let op = NormalizeGrad {
            mean: self.mean.clone(),
            invstd: self.invstd.clone(),
            dims: self.dims,
        };
        let all = grad.contiguous()?.apply_op3_no_bwd(x, gamma, &op)?;
        let dx = all.narrow(0, 0, b * c * l)?.reshape((b, c, l))?;
        let dgamma = all.narrow(0, b * c * l, c)?.reshape(gamma.shape())?;
        let dbeta = all.narrow(0, b * c * l + c, c)?.reshape(gamma.shape())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

impl CustomOp3 for NormalizeGrad {
    fn name(&self) -> &'static str {
        "bn-train-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let out = dispatch3(
            [(s1, l1), (s2, l2), (s3, l3)],
            "bn-train-grad",
            |dy, x, g| normalize_grad(dy, x, g, self),
            |dy, x, g| normalize_grad(dy, x, g, self),
        )?;
        let (b, c, l) = self.dims;
        Ok((out, Shape::from(b * c * l + 2 * c)))
    }
}

/// Train-mode batch norm of a contiguous CPU (B, C, L) tensor with the given batch statistics
/// (from [`batch_stats`]); gradients flow to `x`, `gamma` and `beta` (each shaped (C)).
pub fn normalize_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &[f64],
    var: &[f64],
    eps: f64,
) -> Result<Tensor> {
    let dims = x.dims3()?;
    let op = Normalize {
        mean: mean.to_vec(),
        invstd: var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect(),
        dims,
    };
    x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)
}
