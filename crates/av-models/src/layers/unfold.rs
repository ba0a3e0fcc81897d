//! im2col ("unfold") as one candle custom op with an exact col2im backward.
//!
//! Building im2col from autograd views (narrow, pad, stack) is exact but makes `kh * kw`
//! input-sized copies in the forward pass and as many zero-padded input-sized gradients in the
//! backward pass; on CPU that traffic, not the GEMM, dominated a training step. This op
//! gathers the patches in one pass and scatters the gradient back in one pass. Padding is
//! implicit (positions outside the input read as zero), so callers need no padded copy either.
//!
//! The op runs on CPU storage; other devices use the autograd-view path in
//! [`super::ops`], which computes the same values.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::bn_fused::slice;

/// Window geometry of one unfold: kernel, stride, leading padding and output size per axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnfoldGeometry {
    /// Kernel (kh, kw).
    pub kernel: (usize, usize),
    /// Stride (sh, sw).
    pub stride: (usize, usize),
    /// Zero padding before the first row / column (ph, pw).
    pub pad: (usize, usize),
    /// Output rows and columns (ho, wo).
    pub out: (usize, usize),
    /// Lay the patches out as (C*kh*kw, N*ho*wo) instead of (N, C*kh*kw, ho*wo): a convolution
    /// is then one 2-D GEMM whose weight gradient needs no sum over the batch.
    pub batch_in_columns: bool,
}

/// Forward: (N, C, H, W) -> (N, C*kh*kw, ho*wo), channel-major then (i, j) taps, which matches
/// a PyTorch weight (O, C, kh, kw) reshaped to (O, C*kh*kw).
struct Im2col {
    g: UnfoldGeometry,
    dims: (usize, usize, usize, usize),
}

/// Backward of [`Im2col`]: scatter-add of the column gradient into the input plane.
struct Col2im {
    g: UnfoldGeometry,
    dims: (usize, usize, usize, usize),
}

fn im2col_planes<T: Copy + Default + Send + Sync>(
    x: &[T],
    g: &UnfoldGeometry,
    (n, c, h, w): (usize, usize, usize, usize),
) -> Vec<T> {
    let (kh, kw) = g.kernel;
    let l = g.out.0 * g.out.1;
    let mut out = vec![T::default(); n * c * kh * kw * l];
    if g.batch_in_columns {
        // Channel c owns rows c*kh*kw.. of length N*L: one contiguous block per channel.
        out.par_chunks_mut(kh * kw * n * l)
            .enumerate()
            .for_each(|(ch, dst)| {
                for b in 0..n {
                    let plane = &x[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                    for tap in 0..kh * kw {
                        let row = &mut dst[tap * n * l + b * l..tap * n * l + (b + 1) * l];
                        gather_tap(plane, g, h, w, tap, row);
                    }
                }
            });
    } else {
        out.par_chunks_mut(kh * kw * l)
            .zip(x.par_chunks(h * w))
            .for_each(|(dst, plane)| {
                for tap in 0..kh * kw {
                    gather_tap(plane, g, h, w, tap, &mut dst[tap * l..(tap + 1) * l]);
                }
            });
    }
    out
}

/// Calls `f(plane_index, row_index)` for every output position of tap `tap = i * kw + j` that
/// reads inside the H x W plane (padding positions are skipped). Gather and scatter share it,
/// so they are adjoint by construction.
#[inline]
fn for_each_tap(
    g: &UnfoldGeometry,
    h: usize,
    w: usize,
    tap: usize,
    mut f: impl FnMut(usize, usize),
) {
    let (i, j) = (tap / g.kernel.1, tap % g.kernel.1);
    let wo = g.out.1;
    for oh in 0..g.out.0 {
        let Some(y) = (oh * g.stride.0 + i)
            .checked_sub(g.pad.0)
            .filter(|&y| y < h)
        else {
            continue;
        };
        for ow in 0..wo {
            if let Some(x) = (ow * g.stride.1 + j)
                .checked_sub(g.pad.1)
                .filter(|&x| x < w)
            {
                f(y * w + x, oh * wo + ow);
            }
        }
    }
}

/// Copies tap `tap` of every output position from `plane` (H x W) into `row`.
#[inline]
fn gather_tap<T: Copy>(
    plane: &[T],
    g: &UnfoldGeometry,
    h: usize,
    w: usize,
    tap: usize,
    row: &mut [T],
) {
    for_each_tap(g, h, w, tap, |p, r| row[r] = plane[p]);
}

/// Adds tap `tap` of every output position from `row` into `plane` (the adjoint of
/// [`gather_tap`]).
#[inline]
fn scatter_tap<T: Copy + std::ops::AddAssign>(
    row: &[T],
    g: &UnfoldGeometry,
    h: usize,
    w: usize,
    tap: usize,
    plane: &mut [T],
) {
    for_each_tap(g, h, w, tap, |p, r| plane[p] += row[r]);
}

fn col2im_planes<T: Copy + Default + Send + Sync + std::ops::AddAssign>(
    cols: &[T],
    g: &UnfoldGeometry,
    (n, c, h, w): (usize, usize, usize, usize),
) -> Vec<T> {
    let (kh, kw) = g.kernel;
    let l = g.out.0 * g.out.1;
    let mut out = vec![T::default(); n * c * h * w];
    if g.batch_in_columns {
        // Accumulate per channel into a (C, N, H, W) buffer, then transpose to (N, C, H, W).
        let mut cn = vec![T::default(); n * c * h * w];
        cn.par_chunks_mut(n * h * w)
            .zip(cols.par_chunks(kh * kw * n * l))
            .for_each(|(planes, src)| {
                for b in 0..n {
                    let plane = &mut planes[b * h * w..(b + 1) * h * w];
                    for tap in 0..kh * kw {
                        let row = &src[tap * n * l + b * l..tap * n * l + (b + 1) * l];
                        scatter_tap(row, g, h, w, tap, plane);
                    }
                }
            });
        out.par_chunks_mut(c * h * w)
            .enumerate()
            .for_each(|(b, dst)| {
                for ch in 0..c {
                    dst[ch * h * w..(ch + 1) * h * w]
                        .copy_from_slice(&cn[(ch * n + b) * h * w..(ch * n + b + 1) * h * w]);
                }
            });
    } else {
        out.par_chunks_mut(h * w)
            .zip(cols.par_chunks(kh * kw * l))
            .for_each(|(plane, src)| {
                for tap in 0..kh * kw {
                    scatter_tap(&src[tap * l..(tap + 1) * l], g, h, w, tap, plane);
                }
            });
    }
    out
}

impl CustomOp1 for Im2col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, _, _) = self.dims;
        let (kh, kw) = self.g.kernel;
        let len = self.g.out.0 * self.g.out.1;
        let shape = if self.g.batch_in_columns {
            Shape::from((c * kh * kw, n * len))
        } else {
            Shape::from((n, c * kh * kw, len))
        };
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(im2col_planes(
                slice::<f32>(s, l, "im2col")?,
                &self.g,
                self.dims,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(im2col_planes(
                slice::<f64>(s, l, "im2col")?,
                &self.g,
                self.dims,
            )),
            other => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other.dtype(),
                    "im2col",
                ))
            }
        };
        Ok((out, shape))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let grad = grad.contiguous()?;
        let op = Col2im {
            g: self.g,
            dims: self.dims,
        };
        Ok(Some(grad.apply_op1_no_bwd(&op)?))
    }
}

impl CustomOp1 for Col2im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = self.dims;
        let out = match s {
            CpuStorage::F32(_) => CpuStorage::F32(col2im_planes(
                slice::<f32>(s, l, "col2im")?,
                &self.g,
                self.dims,
            )),
            CpuStorage::F64(_) => CpuStorage::F64(col2im_planes(
                slice::<f64>(s, l, "col2im")?,
                &self.g,
                self.dims,
            )),
            other => {
                return Err(candle_core::Error::UnsupportedDTypeForOp(
                    other.dtype(),
                    "col2im",
                ))
            }
        };
        Ok((out, Shape::from((n, c, h, w))))
    }
}

/// Unfolds (N, C, H, W) into (N, C*kh*kw, ho*wo) patches (or (C*kh*kw, N*ho*wo) with
/// `batch_in_columns`) on CPU, with gradient. Positions in the padding (or past the input on
/// the right/bottom) read as zero.
pub fn unfold_cpu(x: &Tensor, g: UnfoldGeometry) -> Result<Tensor> {
    let dims = x.dims4()?;
    x.contiguous()?.apply_op1(Im2col { g, dims })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// Reference unfold by direct indexing.
    fn naive(x: &[f64], dims: (usize, usize, usize, usize), g: &UnfoldGeometry) -> Vec<f64> {
        let (n, c, h, w) = dims;
        let (kh, kw) = g.kernel;
        let (ho, wo) = g.out;
        let mut out = vec![0.0; n * c * kh * kw * ho * wo];
        for b in 0..n {
            for ch in 0..c {
                for i in 0..kh {
                    for j in 0..kw {
                        for oh in 0..ho {
                            for ow in 0..wo {
                                let y = (oh * g.stride.0 + i) as isize - g.pad.0 as isize;
                                let xx = (ow * g.stride.1 + j) as isize - g.pad.1 as isize;
                                if y >= 0 && xx >= 0 && (y as usize) < h && (xx as usize) < w {
                                    let r = ((b * c + ch) * kh * kw + i * kw + j) * ho * wo
                                        + oh * wo
                                        + ow;
                                    out[r] = x[((b * c + ch) * h + y as usize) * w + xx as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn unfold_matches_indexing_and_backward_is_its_adjoint() -> Result<()> {
        let dev = Device::Cpu;
        let dims = (2, 3, 5, 7);
        let g = UnfoldGeometry {
            kernel: (3, 2),
            stride: (2, 3),
            pad: (1, 1),
            out: (3, 3),
            batch_in_columns: false,
        };
        let x = Tensor::randn(0.0, 1.0, dims, &dev)?.to_dtype(DType::F64)?;
        let xv: Vec<f64> = x.flatten_all()?.to_vec1()?;
        let y = unfold_cpu(&x, g)?;
        assert_eq!(y.dims(), &[2, 18, 9]);
        assert_eq!(y.flatten_all()?.to_vec1::<f64>()?, naive(&xv, dims, &g));
        // <unfold(x), r> = <x, col2im(r)> for every x: the gradient of sum(unfold(x) * r).
        let var = candle_core::Var::from_tensor(&x)?;
        let r = Tensor::randn(0.0, 1.0, (2, 18, 9), &dev)?.to_dtype(DType::F64)?;
        let loss = (unfold_cpu(var.as_tensor(), g)? * &r)?.sum_all()?;
        let grads = loss.backward()?;
        let gx: Vec<f64> = grads
            .get(var.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?
            .flatten_all()?
            .to_vec1()?;
        let rv: Vec<f64> = r.flatten_all()?.to_vec1()?;
        // Each input element's gradient is the sum of r over the columns that read it.
        let mut want = vec![0.0; xv.len()];
        for p in 0..xv.len() {
            let mut onehot = vec![0.0; xv.len()];
            onehot[p] = 1.0;
            let cols = naive(&onehot, dims, &g);
            want[p] = cols.iter().zip(&rv).map(|(a, b)| a * b).sum();
        }
        for (a, b) in gx.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        // The batch-in-columns layout is the transpose of (C*kh*kw, N, L) and has the same
        // adjoint.
        let gt = UnfoldGeometry {
            batch_in_columns: true,
            ..g
        };
        let yt = unfold_cpu(&x, gt)?;
        assert_eq!(yt.dims(), &[18, 18]);
        let expect = y.permute((1, 0, 2))?.reshape((18, 18))?;
        assert_eq!(
            yt.flatten_all()?.to_vec1::<f64>()?,
            expect.flatten_all()?.to_vec1::<f64>()?
        );
        let rt = r.permute((1, 0, 2))?.reshape((18, 18))?;
        let loss = (unfold_cpu(var.as_tensor(), gt)? * &rt)?.sum_all()?;
        let grads = loss.backward()?;
        let gxt: Vec<f64> = grads
            .get(var.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient".into()))?
            .flatten_all()?
            .to_vec1()?;
        for (a, b) in gxt.iter().zip(&want) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        Ok(())
    }

    #[test]
    fn half_precision_convolutions_take_the_view_path() -> Result<()> {
        // The custom op is f32/f64 only; a bf16 convolution must still work on CPU.
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 6, 5), &dev)?;
        let w = Tensor::randn(0f32, 1.0, (4, 3, 3, 3), &dev)?;
        let want = crate::layers::ops::conv2d_padded(&x, &w, (2, 1), (1, 1))?;
        let got = crate::layers::ops::conv2d_padded(
            &x.to_dtype(DType::BF16)?,
            &w.to_dtype(DType::BF16)?,
            (2, 1),
            (1, 1),
        )?
        .to_dtype(DType::F32)?;
        assert_eq!(got.dims(), want.dims());
        let err = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(err <= 0.05 * scale, "bf16 conv error {err} (scale {scale})");
        Ok(())
    }
}
