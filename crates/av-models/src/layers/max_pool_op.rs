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

use super::par_vec::{par_fill, par_zeros};
use super::simd::dispatch;

/// Window geometry over the trailing three axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// Valid input range `lo..hi` of every output position along one axis.
fn axis_ranges(
    n_out: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    len: usize,
) -> Vec<(usize, usize)> {
    (0..n_out)
        .map(|o| {
            let start = o * stride;
            let lo = start.saturating_sub(pad).min(len);
            let hi = (start + kernel).saturating_sub(pad).min(len);
            (lo, hi.max(lo))
        })
        .collect()
}

/// Geometry of one (D, H, W) plane and its pooled output, shared by all planes of a call.
struct PlaneGeo {
    /// Input (H, W); the depth is implied by `rd`.
    h: usize,
    w: usize,
    /// Output width.
    ow: usize,
    /// Valid input ranges along depth and height, per output position.
    rd: Vec<(usize, usize)>,
    rh: Vec<(usize, usize)>,
    /// Valid input column range per output column.
    rw: Vec<(usize, usize)>,
    /// Window along the width: kernel, stride, padding.
    kw: usize,
    sw: usize,
    pw: usize,
}

/// Pools one plane. Each output row keeps its running maxima for all output columns and visits
/// the window taps in row-major order (depth, height, width), every tap updating all columns at
/// once: the inner loop is then a branch-free compare-and-select over contiguous slices that
/// compiles to vector code, where the per-output scan was a chain of unpredictable branches.
/// Strided taps read contiguous memory because each input row is first split into its `sw`
/// phases (`phase p` holds columns p, p + sw, p + 2 sw, ...). A value wins only if strictly
/// greater (or the first NaN), so ties go to the first maximum in row-major order, as in
/// PyTorch.
#[inline(always)]
fn pool_plane<T: WithDType>(xs: &[T], ys: &mut [T], args: &mut [u32], geo: &PlaneGeo) {
    let (h, w, ow, sw, pw) = (geo.h, geo.w, geo.ow, geo.sw, geo.pw);
    let neg_inf = T::from_f64(f64::NEG_INFINITY);
    let mut best = vec![neg_inf; ow];
    let mut barg = vec![0u32; ow];
    let phase_len = w.div_ceil(sw);
    // Every input row split into its phases once (rows are shared by neighbouring windows).
    let n_rows = xs.len() / w.max(1);
    let split_len = sw * phase_len;
    let mut split = Vec::new();
    if sw > 1 {
        split.resize(n_rows * split_len, neg_inf);
        for (row, out) in xs.chunks_exact(w).zip(split.chunks_exact_mut(split_len)) {
            let (head, tail) = out.split_at_mut(phase_len);
            if sw == 2 {
                // The common stride: a deinterleave that compiles to vector permutes.
                for ((e, o), pair) in head
                    .iter_mut()
                    .zip(tail.iter_mut())
                    .zip(row.chunks_exact(2))
                {
                    *e = pair[0];
                    *o = pair[1];
                }
                if w % 2 == 1 {
                    head[w / 2] = row[w - 1];
                }
            } else {
                for (k, chunk) in row.chunks(sw).enumerate() {
                    for (p, &v) in chunk.iter().enumerate() {
                        out[p * phase_len + k] = v;
                    }
                }
            }
        }
    }
    // Per tap: (phase, offset of output column 0 in that phase, first and end output column).
    let taps: Vec<(usize, isize, usize, usize)> = (0..geo.kw)
        .map(|kx| {
            // Input column of output column ox: ox * sw + kx - pw, valid in 0..w.
            let lo = pw.saturating_sub(kx).div_ceil(sw);
            let hi = if w + pw > kx {
                (w + pw - kx).div_ceil(sw).min(ow)
            } else {
                0
            };
            let off = kx as isize - pw as isize;
            let (p, q) = (off.rem_euclid(sw as isize), off.div_euclid(sw as isize));
            (p as usize, q, lo, hi.max(lo))
        })
        .collect();
    let mut o = 0;
    for &(z0, z1) in &geo.rd {
        for &(y0, y1) in &geo.rh {
            for (b, (a, &(x0, _))) in best.iter_mut().zip(barg.iter_mut().zip(&geo.rw)) {
                *b = neg_inf;
                // Windows that hold only -inf report their first element, like PyTorch.
                *a = ((z0 * h + y0) * w + x0) as u32;
            }
            for zi in z0..z1 {
                for yi in y0..y1 {
                    let row = (zi * h + yi) * w;
                    let xs_row = &xs[row..row + w];
                    let phases = if sw > 1 {
                        let r = zi * h + yi;
                        &split[r * split_len..(r + 1) * split_len]
                    } else {
                        xs_row
                    };
                    for &(p, q, lo, hi) in &taps {
                        if lo >= hi {
                            continue;
                        }
                        // Output columns lo..hi read phase p from lo + q on (in range by the
                        // choice of lo and hi).
                        let start = (lo as isize + q) as usize;
                        let from = p * phase_len + start;
                        let src = &phases[from..from + (hi - lo)];
                        // Flat input index of output column lo + j's tap: first + j * sw.
                        let first = row + p + start * sw;
                        let cols = best[lo..hi].iter_mut().zip(barg[lo..hi].iter_mut());
                        for (j, ((b, a), &v)) in cols.zip(src).enumerate() {
                            #[allow(clippy::eq_op)] // v != v: NaN test for any float type
                            let take = v > *b || (v != v && *b == *b);
                            *b = if take { v } else { *b };
                            *a = if take { (first + j * sw) as u32 } else { *a };
                        }
                    }
                }
            }
            ys[o..o + ow].copy_from_slice(&best);
            args[o..o + ow].copy_from_slice(&barg);
            o += ow;
        }
    }
}

#[inline(always)]
fn pool_plane_f32_body(xs: &[f32], ys: &mut [f32], args: &mut [u32], geo: &PlaneGeo) {
    pool_plane(xs, ys, args, geo)
}

dispatch!(
    /// [`pool_plane`] for f32 with the widest vectors the CPU has.
    fn pool_plane_f32(xs: &[f32], ys: &mut [f32], args: &mut [u32], geo: &PlaneGeo) -> ()
        => pool_plane_f32_body
);

/// Pools every (D, H, W) plane of `x` in parallel with `plane` ([`pool_plane`] or a
/// vectorised build of it).
fn pool<T: WithDType + Default>(
    x: &[T],
    op: &MaxPool3Op,
    plane: impl Fn(&[T], &mut [T], &mut [u32], &PlaneGeo) + Sync,
) -> (Vec<T>, Vec<u32>) {
    let [_, d, h, w] = op.dims;
    let [od, oh, ow] = op.out;
    let (plane_in, plane_out) = (d * h * w, od * oh * ow);
    let mut y = par_zeros::<T>(x.len() / plane_in * plane_out);
    let mut arg = par_zeros::<u32>(y.len());
    let g = op.g;
    let geo = PlaneGeo {
        h,
        w,
        ow,
        rd: axis_ranges(od, g.kernel[0], g.stride[0], g.pad[0], d),
        rh: axis_ranges(oh, g.kernel[1], g.stride[1], g.pad[1], h),
        rw: axis_ranges(ow, g.kernel[2], g.stride[2], g.pad[2], w),
        kw: g.kernel[2],
        sw: g.stride[2].max(1),
        pw: g.pad[2],
    };
    y.par_chunks_mut(plane_out)
        .zip(arg.par_chunks_mut(plane_out))
        .zip(x.par_chunks(plane_in))
        .for_each(|((ys, args), xs)| plane(xs, ys, args, &geo));
    (y, arg)
}

fn unpool<T: WithDType + Default>(dy: &[T], arg: &[u32], op: &MaxPool3Op) -> Vec<T> {
    let [lead, d, h, w] = op.dims;
    let plane_in = d * h * w;
    let plane_out = op.out.iter().product::<usize>();
    // Each plane is zeroed and scattered into by the same worker, while it is in cache.
    par_fill(lead * plane_in, plane_in, |p, dxs| {
        let g = &dy[p * plane_out..(p + 1) * plane_out];
        let a = &arg[p * plane_out..(p + 1) * plane_out];
        for (gv, &i) in g.iter().zip(a) {
            dxs[i as usize] += *gv;
        }
    })
}

/// Element types the pooling kernels take, so other ops (a fused stem) can pool in place.
pub(crate) trait PoolElem: WithDType + Default {
    /// Pools every (D, H, W) plane of `x`, shaped `dims` = (leading, D, H, W), to `out`:
    /// the pooled values and the flat in-plane index of each one's maximum.
    fn pool_planes(
        x: &[Self],
        dims: [usize; 4],
        g: Pool3,
        out: [usize; 3],
    ) -> (Vec<Self>, Vec<u32>);
}

impl PoolElem for f32 {
    fn pool_planes(x: &[f32], dims: [usize; 4], g: Pool3, out: [usize; 3]) -> (Vec<f32>, Vec<u32>) {
        pool(x, &MaxPool3Op::new(g, dims, out), pool_plane_f32)
    }
}

impl PoolElem for f64 {
    fn pool_planes(x: &[f64], dims: [usize; 4], g: Pool3, out: [usize; 3]) -> (Vec<f64>, Vec<u32>) {
        pool(x, &MaxPool3Op::new(g, dims, out), pool_plane::<f64>)
    }
}

/// The gradient of [`PoolElem::pool_planes`]: `dy` routed to each window's maximum.
pub(crate) fn unpool_planes<T: WithDType + Default>(
    dy: &[T],
    arg: &[u32],
    dims: [usize; 4],
    out: [usize; 3],
) -> Vec<T> {
    unpool(dy, arg, &MaxPool3Op::new(Pool3::default(), dims, out))
}

impl MaxPool3Op {
    fn new(g: Pool3, dims: [usize; 4], out: [usize; 3]) -> Self {
        Self {
            g,
            dims,
            out,
            argmax: Mutex::new(None),
        }
    }
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
                let (y, arg) = pool(&v[a..b], self, pool_plane_f32);
                (CpuStorage::F32(y), arg)
            }
            CpuStorage::F64(v) => {
                let (y, arg) = pool(&v[a..b], self, pool_plane::<f64>);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The straightforward scan: for each output, its window in row-major order, keeping the
    /// first maximum (a value wins only if strictly greater, or the first NaN).
    fn reference(x: &[f32], op: &MaxPool3Op) -> (Vec<f32>, Vec<u32>) {
        let [lead, d, h, w] = op.dims;
        let [od, oh, ow] = op.out;
        let g = op.g;
        let r = |n, i: usize, len| axis_ranges(n, g.kernel[i], g.stride[i], g.pad[i], len);
        let (rd, rh, rw) = (r(od, 0, d), r(oh, 1, h), r(ow, 2, w));
        let (mut y, mut arg) = (Vec::new(), Vec::new());
        for p in 0..lead {
            let xs = &x[p * d * h * w..(p + 1) * d * h * w];
            for &(z0, z1) in &rd {
                for &(y0, y1) in &rh {
                    for &(x0, x1) in &rw {
                        let mut best = f32::NEG_INFINITY;
                        let mut best_i = (z0 * h + y0) * w + x0;
                        for zi in z0..z1 {
                            for yi in y0..y1 {
                                for xi in x0..x1 {
                                    let i = (zi * h + yi) * w + xi;
                                    let v = xs[i];
                                    if v > best || (v.is_nan() && !best.is_nan()) {
                                        best = v;
                                        best_i = i;
                                    }
                                }
                            }
                        }
                        y.push(best);
                        arg.push(best_i as u32);
                    }
                }
            }
        }
        (y, arg)
    }

    /// Values from a small set so that windows hold ties, plus NaN and -inf.
    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match s % 23 {
                    0 => f32::NAN,
                    1 | 2 => f32::NEG_INFINITY,
                    k => (k % 5) as f32 - 2.0,
                }
            })
            .collect()
    }

    #[test]
    fn vector_pool_matches_the_per_output_scan() {
        let g = |kernel, stride, pad| Pool3 {
            kernel,
            stride,
            pad,
        };
        let cases: [([usize; 4], Pool3); 5] = [
            // The R(2+1)D stem: (1,3,3) / (1,2,2) / (0,1,1).
            ([3, 2, 9, 12], g([1, 3, 3], [1, 2, 2], [0, 1, 1])),
            ([2, 5, 7, 11], g([3, 3, 3], [2, 2, 2], [1, 1, 1])),
            ([2, 1, 6, 8], g([1, 2, 2], [1, 2, 2], [0, 0, 0])),
            ([1, 4, 5, 17], g([2, 1, 4], [1, 1, 3], [1, 0, 2])),
            ([2, 1, 1, 5], g([1, 1, 5], [1, 1, 1], [0, 0, 2])),
        ];
        for (k, (dims, g)) in cases.into_iter().enumerate() {
            let out: Vec<usize> = (0..3)
                .map(|i| (dims[i + 1] + 2 * g.pad[i] - g.kernel[i]) / g.stride[i] + 1)
                .collect();
            let op = MaxPool3Op {
                g,
                dims,
                out: [out[0], out[1], out[2]],
                argmax: Mutex::new(None),
            };
            let x = data(dims.iter().product(), k as u64 + 1);
            let (want_y, want_arg) = reference(&x, &op);
            let (y, arg) = pool(&x, &op, pool_plane_f32);
            assert_eq!(arg, want_arg, "case {k}: argmax");
            for (a, b) in y.iter().zip(&want_y) {
                assert!(a == b || (a.is_nan() && b.is_nan()), "case {k}: {a} vs {b}");
            }
            let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            let (_, arg64) = pool(&x64, &op, pool_plane::<f64>);
            assert_eq!(arg64, want_arg, "case {k}: f64 argmax");
        }
    }
}
