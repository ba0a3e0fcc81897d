//! Max pooling over the trailing three axes as one CPU custom op that routes each gradient to
//! its window's first maximum, exactly as PyTorch's `max_pool3d` backward does.
//!
//! The view-based pooling in [`super::ops::max_window`] is exact in value but builds padded and
//! strided copies of the input for every tap and splits the gradient between tied maxima; on
//! the R(2+1)D stem (the largest activation of the network) it cost more than the stem
//! convolution. This op makes one pass forward (remembering the argmax) and one backward.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor, WithDType};
use rayon::prelude::*;

/// Window geometry over the trailing three axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pool3 {
    pub kernel: [usize; 3],
    pub stride: [usize; 3],
    pub pad: [usize; 3],
}

struct MaxPool3Op {
    g: Pool3,
    /// (leading, D, H, W) of the input and (D', H', W') of the output.
    dims: [usize; 4],
    out: [usize; 3],
    /// Flat input index (within its leading plane) of every output's maximum.
    argmax: Mutex<Option<Vec<u32>>>,
}

fn pool<T: WithDType>(x: &[T], op: &MaxPool3Op) -> (Vec<T>, Vec<u32>) {
    let [_, d, h, w] = op.dims;
    let [od, oh, ow] = op.out;
    let (plane_in, plane_out) = (d * h * w, od * oh * ow);
    let mut y = vec![T::zero(); x.len() / plane_in * plane_out];
    let mut arg = vec![0u32; y.len()];
    let g = op.g;
    // Valid input range of each output position along one axis: lo..hi.
    let ranges = |n_out: usize, axis: usize, len: usize| -> Vec<(usize, usize)> {
        (0..n_out)
            .map(|o| {
                let start = o * g.stride[axis];
                let lo = start.saturating_sub(g.pad[axis]).min(len);
                let hi = (start + g.kernel[axis])
                    .saturating_sub(g.pad[axis])
                    .min(len);
                (lo, hi.max(lo))
            })
            .collect()
    };
    let (rd, rh, rw) = (ranges(od, 0, d), ranges(oh, 1, h), ranges(ow, 2, w));
    y.par_chunks_mut(plane_out)
        .zip(arg.par_chunks_mut(plane_out))
        .zip(x.par_chunks(plane_in))
        .for_each(|((ys, args), xs)| {
            let mut o = 0;
            for &(z0, z1) in &rd {
                for &(y0, y1) in &rh {
                    for &(x0, x1) in &rw {
                        // Row-major scan; a later value wins only if strictly greater (or NaN),
                        // so ties go to the first maximum, as in PyTorch.
                        let mut best_i = (z0 * h + y0) * w + x0;
                        let mut best = xs[best_i];
                        for zi in z0..z1 {
                            for yi in y0..y1 {
                                let row = (zi * h + yi) * w;
                                for (xi, &v) in xs[row + x0..row + x1].iter().enumerate() {
                                    let nan = v.to_f64().is_nan();
                                    if v > best || (nan && !best.to_f64().is_nan()) {
                                        best = v;
                                        best_i = row + x0 + xi;
                                    }
                                }
                            }
                        }
                        ys[o] = best;
                        args[o] = best_i as u32;
                        o += 1;
                    }
                }
            }
        });
    (y, arg)
}

fn unpool<T: WithDType>(dy: &[T], arg: &[u32], op: &MaxPool3Op) -> Vec<T> {
    let [lead, d, h, w] = op.dims;
    let plane_in = d * h * w;
    let plane_out = op.out.iter().product::<usize>();
    let mut dx = vec![T::zero(); lead * plane_in];
    dx.par_chunks_mut(plane_in)
        .zip(dy.par_chunks(plane_out).zip(arg.par_chunks(plane_out)))
        .for_each(|(dxs, (g, a))| {
            for (gv, &i) in g.iter().zip(a) {
                dxs[i as usize] += *gv;
            }
        });
    dx
}

impl CustomOp1 for MaxPool3Op {
    fn name(&self) -> &'static str {
        "max-pool-3d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (a, b) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("max-pool: input must be contiguous".into()))?;
        let (y, arg) = match s {
            CpuStorage::F32(v) => {
                let (y, arg) = pool(&v[a..b], self);
                (CpuStorage::F32(y), arg)
            }
            CpuStorage::F64(v) => {
                let (y, arg) = pool(&v[a..b], self);
                (CpuStorage::F64(y), arg)
            }
            other => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other.dtype(),
                    "max-pool-3d",
                ))
            }
        };
        *self.argmax.lock().unwrap_or_else(|e| e.into_inner()) = Some(arg);
        let mut dims = l.dims().to_vec();
        let r = dims.len();
        dims[r - 3..].copy_from_slice(&self.out);
        Ok((y, Shape::from(dims)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let idx = self.argmax.lock().unwrap_or_else(|e| e.into_inner());
        let idx = idx
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg("max-pool: backward before forward".into()))?;
        let grad = grad.contiguous()?;
        let dx = match grad.dtype() {
            candle_core::DType::F32 => {
                let g = grad.flatten_all()?.to_vec1::<f32>()?;
                Tensor::from_vec(unpool(&g, idx, self), arg.shape(), arg.device())?
            }
            candle_core::DType::F64 => {
                let g = grad.flatten_all()?.to_vec1::<f64>()?;
                Tensor::from_vec(unpool(&g, idx, self), arg.shape(), arg.device())?
            }
            dt => return Err(candle_core::Error::UnsupportedDTypeForOp(dt, "max-pool-3d")),
        };
        Ok(Some(dx))
    }
}

/// Max-pools the trailing three axes of a contiguous-able f32/f64 CPU tensor; `out` is the
/// validated output size of those axes.
pub(crate) fn max_pool3(x: &Tensor, g: Pool3, out: [usize; 3]) -> Result<Tensor> {
    let dims = x.dims();
    let r = dims.len();
    let plane = dims[r - 3] * dims[r - 2] * dims[r - 1];
    if plane > u32::MAX as usize {
        return Err(candle_core::Error::Msg(
            "max-pool: plane too large for 32-bit indices".into(),
        ));
    }
    let op = MaxPool3Op {
        g,
        dims: [
            dims[..r - 3].iter().product(),
            dims[r - 3],
            dims[r - 2],
            dims[r - 1],
        ],
        out,
        argmax: Mutex::new(None),
    };
    x.contiguous()?.apply_op1(op)
}
