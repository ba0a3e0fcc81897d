//! Shape helpers built only from candle ops whose CPU backward is correct (pad, narrow,
//! reshape, cat, matmul, conv2d with padding 0 and exact strides).

use candle_core::{Result, Tensor};

use crate::error::bad_input;

/// Output length of a strided window op (PyTorch's floor formula, `ceil_mode=False`).
pub fn out_len(len: usize, kernel: usize, stride: usize, pad: usize) -> Option<usize> {
    if stride == 0 || len + 2 * pad < kernel {
        return None;
    }
    Some((len + 2 * pad - kernel) / stride + 1)
}

/// Pads `x` along `dim` with a constant: zeros use candle's op, other values a `cat`.
pub fn pad_const(x: &Tensor, dim: usize, left: usize, right: usize, value: f64) -> Result<Tensor> {
    if left == 0 && right == 0 {
        return Ok(x.clone());
    }
    if value == 0.0 {
        return x.pad_with_zeros(dim, left, right);
    }
    let mut parts = Vec::with_capacity(3);
    let mut dims = x.dims().to_vec();
    if left > 0 {
        dims[dim] = left;
        parts.push((Tensor::ones(dims.as_slice(), x.dtype(), x.device())? * value)?);
    }
    parts.push(x.clone());
    if right > 0 {
        dims[dim] = right;
        parts.push((Tensor::ones(dims.as_slice(), x.dtype(), x.device())? * value)?);
    }
    Tensor::cat(&parts, dim)
}

/// Pads (or crops) `dim` so that a window op with padding `pad` needs padding 0 and
/// covers the input exactly: left `pad`, right `pad - r` where r = (L + 2p - k) mod s.
///
/// candle's strided conv2d backward fails when that remainder differs between H and W,
/// and its padding is symmetric only, so every strided window op goes through here.
pub fn pad_for_window(
    x: &Tensor,
    dim: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
    value: f64,
) -> Result<Tensor> {
    let len = x.dim(dim)?;
    let out = out_len(len, kernel, stride, pad).ok_or_else(|| {
        bad_input(
            "input",
            format!(
                "dimension {dim} has size {len}, too small for kernel {kernel} with padding {pad}"
            ),
        )
    })?;
    let needed = (out - 1) * stride + kernel;
    if needed >= len + pad {
        pad_const(x, dim, pad, needed - len - pad, value)
    } else {
        let x = pad_const(x, dim, pad, 0, value)?;
        x.narrow(dim, 0, needed)
    }
}

/// Every `step`-th element of `dim`, starting at `start`, `count` of them.
///
/// Implemented as narrow + pad + reshape + narrow so that autograd routes gradients back
/// exactly (candle has no strided slicing).
pub fn subsample(
    x: &Tensor,
    dim: usize,
    start: usize,
    step: usize,
    count: usize,
) -> Result<Tensor> {
    if step == 1 {
        return x.narrow(dim, start, count);
    }
    let len = x.dim(dim)?;
    if count == 0 || start + (count - 1) * step >= len {
        return Err(bad_input(
            "input",
            format!("cannot take {count} elements with step {step} from {start} in a dimension of size {len}"),
        ));
    }
    let avail = (len - start).min(step * count);
    let x = x.narrow(dim, start, avail)?;
    let x = x.pad_with_zeros(dim, 0, step * count - avail)?;
    let mut dims = x.dims().to_vec();
    dims[dim] = count;
    dims.insert(dim + 1, step);
    x.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// 2-D convolution (no bias) with per-axis stride and padding, correct for any H x W,
/// using the process-wide [`conv_impl`].
pub fn conv2d_padded(
    x: &Tensor,
    w: &Tensor,
    stride: (usize, usize),
    pad: (usize, usize),
) -> Result<Tensor> {
    conv2d_with(conv_impl(), x, w, stride, pad)
}

/// [`conv2d_padded`] with an explicit implementation.
///
/// Pads explicitly (asymmetrically where the stride does not divide the extent) so the
/// convolution itself runs with padding 0; with [`ConvImpl::Candle`], unequal strides
/// fall back to stride 1 + subsampling.
pub fn conv2d_with(
    imp: ConvImpl,
    x: &Tensor,
    w: &Tensor,
    stride: (usize, usize),
    pad: (usize, usize),
) -> Result<Tensor> {
    let (_, _, kh, kw) = w.dims4()?;
    if imp == ConvImpl::Im2col {
        return conv2d_unfold(x, w, stride, pad);
    }
    let x = pad_for_window(x, 2, kh, stride.0, pad.0, 0.0)?;
    let x = pad_for_window(&x, 3, kw, stride.1, pad.1, 0.0)?;
    if stride.0 == stride.1 {
        x.conv2d(w, 0, stride.0, 1, 1)
    } else {
        let y = x.conv2d(w, 0, 1, 1, 1)?;
        let (_, _, h, wd) = y.dims4()?;
        let y = subsample(&y, 2, 0, stride.0, (h - 1) / stride.0 + 1)?;
        subsample(&y, 3, 0, stride.1, (wd - 1) / stride.1 + 1)
    }
}

/// Sliding-window max over `dim` (kernel, stride, padding with -inf), as the elementwise
/// maximum of `kernel` strided views. candle's `max_pool2d` backward is wrong or missing.
pub fn max_window(
    x: &Tensor,
    dim: usize,
    kernel: usize,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    if kernel == 1 && stride == 1 && pad == 0 {
        return Ok(x.clone());
    }
    let xp = pad_for_window(x, dim, kernel, stride, pad, f64::NEG_INFINITY)?;
    let len = xp.dim(dim)?;
    let count = (len - kernel) / stride + 1;
    let mut acc = subsample(&xp, dim, 0, stride, count)?;
    for i in 1..kernel {
        acc = acc.maximum(&subsample(&xp, dim, i, stride, count)?)?;
    }
    Ok(acc)
}

/// How [`conv2d_padded`] computes a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvImpl {
    /// candle's conv2d (im2col + GEMM forward); its input gradient is candle's naive
    /// conv_transpose2d loop.
    Candle,
    /// im2col from strided views + one matmul: forward and both gradients are GEMMs, the
    /// col2im of the input gradient is done by autograd (narrow backward).
    Im2col,
}

static CONV_IMPL: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(1);

/// Selects the process-wide 2-D convolution implementation (default [`ConvImpl::Im2col`]).
/// Both are exact (same sums, different order) and tested against finite differences.
pub fn set_conv_impl(imp: ConvImpl) {
    let v = match imp {
        ConvImpl::Candle => 0,
        ConvImpl::Im2col => 1,
    };
    CONV_IMPL.store(v, std::sync::atomic::Ordering::Relaxed);
}

/// The current process-wide 2-D convolution implementation.
pub fn conv_impl() -> ConvImpl {
    match CONV_IMPL.load(std::sync::atomic::Ordering::Relaxed) {
        0 => ConvImpl::Candle,
        _ => ConvImpl::Im2col,
    }
}

/// Output size of a window op over (H, W), or a clear error when the input is too small.
fn window_out(
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
) -> Result<(usize, usize)> {
    match (
        out_len(h, kh, stride.0, pad.0),
        out_len(w, kw, stride.1, pad.1),
    ) {
        (Some(ho), Some(wo)) => Ok((ho, wo)),
        _ => Err(bad_input(
            "input",
            format!("{h}x{w} is too small for kernel {kh}x{kw} with padding {pad:?}"),
        )),
    }
}

/// The unfold custom op handles f32/f64 CPU tensors; everything else takes the view path.
pub(crate) fn unfold_op_applies(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), candle_core::DType::F32 | candle_core::DType::F64)
}

/// Unfolds taps along H and W of (N, C, H, W) into (N, C*kh*kw, ho*wo): the custom op on CPU,
/// autograd views elsewhere. Same values either way.
pub fn unfold(
    x: &Tensor,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let out = window_out((h, w), kernel, stride, pad)?;
    if unfold_op_applies(x) {
        return super::unfold::unfold_cpu(
            x,
            super::unfold::UnfoldGeometry {
                kernel,
                stride,
                pad,
                out,
                batch_in_columns: false,
            },
        );
    }
    let xp = pad_for_window(x, 2, kernel.0, stride.0, pad.0, 0.0)?;
    let xp = pad_for_window(&xp, 3, kernel.1, stride.1, pad.1, 0.0)?;
    let mut cols = Vec::with_capacity(kernel.0 * kernel.1);
    for i in 0..kernel.0 {
        let rows = subsample(&xp, 2, i, stride.0, out.0)?;
        for j in 0..kernel.1 {
            cols.push(subsample(&rows, 3, j, stride.1, out.1)?);
        }
    }
    Tensor::stack(&cols, 2)?.reshape((n, c * kernel.0 * kernel.1, out.0 * out.1))
}

/// Convolution as one unfold + one GEMM ([`ConvImpl::Im2col`]). With the CPU custom op the
/// patches are laid out (C*kh*kw, N*ho*wo), so the weight gradient is a single 2-D GEMM;
/// elsewhere the view-built (N, C*kh*kw, ho*wo) columns take a batched matmul.
fn conv2d_unfold(
    x: &Tensor,
    w: &Tensor,
    stride: (usize, usize),
    pad: (usize, usize),
) -> Result<Tensor> {
    let (n, c, h, wd) = x.dims4()?;
    let (o, _, kh, kw) = w.dims4()?;
    let (ho, wo) = window_out((h, wd), (kh, kw), stride, pad)?;
    let wm = w.reshape((o, c * kh * kw))?;
    if !unfold_op_applies(x) {
        let cols = unfold(x, (kh, kw), stride, pad)?;
        return wm.broadcast_matmul(&cols)?.reshape((n, o, ho, wo));
    }
    let cols = super::unfold::unfold_cpu(
        x,
        super::unfold::UnfoldGeometry {
            kernel: (kh, kw),
            stride,
            pad,
            out: (ho, wo),
            batch_in_columns: true,
        },
    )?;
    let y = wm.matmul(&cols)?; // (O, N*ho*wo)
    y.reshape((o, n, ho, wo))?.transpose(0, 1)?.contiguous()
}
