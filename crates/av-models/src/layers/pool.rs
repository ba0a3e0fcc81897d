//! Max pooling (windowed and global) and global average pooling for any rank.

use candle_core::{Module, Result, Tensor};

use super::max_pool_op::{max_pool3, Pool3};
use super::ops::{max_window, out_len};
use crate::error::bad_input;

/// Windowed max pooling over the trailing `N` dimensions (e.g. N = 3 for MaxPool3d on
/// (B, C, T, H, W)), padding with -inf like PyTorch, `ceil_mode = False`.
///
/// On CPU (f32/f64, N <= 3) one custom op whose gradient goes to each window's first maximum,
/// as in PyTorch; elsewhere elementwise maxima of strided views, one axis at a time (max is
/// separable; tied maxima then share the gradient), because candle's `max_pool2d` backward is
/// wrong (k = s) or missing (k != s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool<const N: usize> {
    /// Window size per pooled axis.
    pub kernel: [usize; N],
    /// Stride per pooled axis.
    pub stride: [usize; N],
    /// -inf padding per pooled axis (both sides).
    pub padding: [usize; N],
}

impl<const N: usize> MaxPool<N> {
    /// The window over the trailing three axes of an input of shape `dims` (N <= 3; missing
    /// leading axes get a unit window) and the pooled size of those axes.
    pub(crate) fn pool3(&self, dims: &[usize]) -> Result<(Pool3, [usize; 3])> {
        let rank = dims.len();
        if N > 3 || rank < 3 {
            return Err(bad_input(
                "max-pool input",
                format!("expected at least rank 3 for a {N}-D pool, got shape {dims:?}"),
            ));
        }
        let mut g = Pool3 {
            kernel: [1; 3],
            stride: [1; 3],
            pad: [0; 3],
        };
        let mut out = [0; 3];
        #[allow(clippy::needless_range_loop)] // i indexes three parallel arrays and a dim
        for i in 0..3 {
            let (k, s, p) = if i + N >= 3 {
                let j = i + N - 3;
                (self.kernel[j], self.stride[j], self.padding[j])
            } else {
                (1, 1, 0)
            };
            if 2 * p > k {
                return Err(bad_input(
                    "max-pool",
                    format!(
                        "padding {:?} exceeds half the kernel {:?}",
                        self.padding, self.kernel
                    ),
                ));
            }
            let len = dims[rank - 3 + i];
            out[i] = out_len(len, k, s, p).ok_or_else(|| {
                bad_input(
                    "max-pool input",
                    format!("shape {dims:?} too small for {self:?}"),
                )
            })?;
            (g.kernel[i], g.stride[i], g.pad[i]) = (k, s, p);
        }
        Ok((g, out))
    }
}

impl<const N: usize> Module for MaxPool<N> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let rank = x.rank();
        if rank < N + 1 {
            return Err(bad_input(
                "max-pool input",
                format!("expected at least rank {}, got shape {:?}", N + 1, x.dims()),
            ));
        }
        if N <= 3 && super::ops::unfold_op_applies(x) && rank >= 4 {
            // One fused pass on CPU (first-maximum gradient, like PyTorch).
            let (g, out) = self.pool3(x.dims())?;
            return max_pool3(x, g, out);
        }
        let mut y = x.clone();
        for i in 0..N {
            if 2 * self.padding[i] > self.kernel[i] {
                return Err(bad_input(
                    "max-pool",
                    format!(
                        "padding {:?} exceeds half the kernel {:?}",
                        self.padding, self.kernel
                    ),
                ));
            }
            y = max_window(
                &y,
                rank - N + i,
                self.kernel[i],
                self.stride[i],
                self.padding[i],
            )?;
        }
        Ok(y)
    }
}

/// Global max over all axes after the channel axis: (B, C, ...) -> (B, C), like
/// `AdaptiveMaxPool{2,3}d(1)` followed by `flatten(1)`.
pub fn global_max_pool(x: &Tensor) -> Result<Tensor> {
    if x.rank() < 3 {
        return Err(bad_input(
            "global-pool input",
            format!(
                "expected (B, C, ...) with at least one pooled axis, got {:?}",
                x.dims()
            ),
        ));
    }
    x.flatten_from(2)?.max(2)
}

/// Global mean over all axes after the channel axis: (B, C, ...) -> (B, C), like
/// `AdaptiveAvgPool3d(1)` followed by `flatten(1)` (torchvision's video ResNets).
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    if x.rank() < 3 {
        return Err(bad_input(
            "global-pool input",
            format!(
                "expected (B, C, ...) with at least one pooled axis, got {:?}",
                x.dims()
            ),
        ));
    }
    x.flatten_from(2)?.mean(2)
}
