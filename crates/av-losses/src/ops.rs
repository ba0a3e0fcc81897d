//! Numerically careful building blocks shared by the losses.
//!
//! All of them differentiate correctly through candle's autograd: they avoid
//! `candle_nn::ops::softmax_last_dim` (no gradient in candle 0.11.1) and candle's
//! `binary_cross_entropy_with_logit` (sigmoid followed by `log`, which overflows to `inf` for
//! logits beyond about +-17 in f32).

use candle_core::{DType, Result, Tensor, D};

use crate::error::LossError;

/// `x / max(||x||_2, 1e-12)` along the last dimension, as PyTorch's `F.normalize`.
///
/// The clamp is applied to the squared norm (`1e-24`) so that an all-zero row yields zeros with
/// a finite gradient instead of the `0 * inf` that `sqrt` at zero would give.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let sq = x.sqr()?.sum_keepdim(D::Minus1)?;
    let norm = sq.maximum(1e-24)?.sqrt()?;
    x.broadcast_div(&norm)
}

/// Log-softmax along the last dimension with the shift detached.
///
/// Detaching the row maximum changes nothing mathematically (the shift cancels) and keeps the
/// backward pass away from the max reduction's tie handling.
pub fn log_softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// `ln(1 + e^x)` without overflow: `max(x, 0) + ln(1 + e^{-|x|})`.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    x.relu()? + tail
}

/// Log-sum-exp along the last dimension (kept), shift detached as in [`log_softmax_last`].
pub fn logsumexp_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let lse = x
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?;
    lse.broadcast_add(&max)
}

/// Row-wise dot product of two (n, d) matrices -> (n,).
pub fn rowwise_dot(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    (a * b)?.sum(D::Minus1)
}

/// Checks that `t` is a float (batch, dim) matrix and returns its dims.
pub(crate) fn check_matrix(
    loss: &'static str,
    name: &'static str,
    t: &Tensor,
) -> Result<(usize, usize)> {
    match t.dims() {
        &[b, d] => {
            if !t.dtype().is_float() {
                return Err(LossError::DType {
                    loss,
                    tensor: name,
                    expected: "a float dtype".to_string(),
                    got: t.dtype(),
                }
                .into());
            }
            Ok((b, d))
        }
        dims => Err(LossError::NotMatrix {
            loss,
            tensor: name,
            shape: dims.to_vec(),
        }
        .into()),
    }
}

/// Checks that `t` has exactly the shape and dtype of `reference`.
pub(crate) fn check_same(
    loss: &'static str,
    name: &'static str,
    t: &Tensor,
    reference_name: &'static str,
    reference: &Tensor,
) -> Result<()> {
    if t.dims() != reference.dims() {
        return Err(LossError::ShapeMismatch {
            loss,
            tensor: name,
            reference: reference_name,
            expected: reference.dims().to_vec(),
            got: t.dims().to_vec(),
        }
        .into());
    }
    check_dtype(loss, name, t, reference.dtype())
}

/// Checks that `t` has dtype `dtype`.
pub(crate) fn check_dtype(
    loss: &'static str,
    name: &'static str,
    t: &Tensor,
    dtype: DType,
) -> Result<()> {
    if t.dtype() != dtype {
        return Err(LossError::DType {
            loss,
            tensor: name,
            expected: format!("{dtype:?} (same as the other inputs)"),
            got: t.dtype(),
        }
        .into());
    }
    Ok(())
}

/// Checks that a configuration value is finite and strictly positive.
pub(crate) fn check_positive(loss: &'static str, name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(LossError::InvalidConfig {
            loss,
            what: format!("{name} must be finite and > 0, got {v}"),
        }
        .into());
    }
    Ok(())
}

/// Checks that a configuration value is finite and not negative.
pub(crate) fn check_non_negative(loss: &'static str, name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(LossError::InvalidConfig {
            loss,
            what: format!("{name} must be finite and >= 0, got {v}"),
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn softplus_is_stable_and_exact() -> Result<()> {
        let x = Tensor::new(&[-200.0f64, -3.0, 0.0, 2.5, 200.0], &Device::Cpu)?;
        let got = softplus(&x)?.to_vec1::<f64>()?;
        let want = [
            0.0,
            (1.0 + (-3.0f64).exp()).ln(),
            2f64.ln(),
            (1.0 + 2.5f64.exp()).ln(),
            200.0,
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-15 * w.abs().max(1e-300), "{g} vs {w}");
        }
        Ok(())
    }

    #[test]
    fn zero_row_normalises_to_zero_with_finite_gradient() -> Result<()> {
        let x = candle_core::Var::new(&[[0.0f64, 0.0], [3.0, 4.0]], &Device::Cpu)?;
        let y = l2_normalize(x.as_tensor())?;
        assert_eq!(y.to_vec2::<f64>()?, vec![vec![0.0, 0.0], vec![0.6, 0.8]]);
        let grads = y.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).map(|g| g.to_vec2::<f64>());
        let g = g.transpose()?.unwrap_or_default();
        assert!(g.iter().flatten().all(|v| v.is_finite()));
        // d/dx sum(x/|x|) at (3,4): (|x|^2 - x_i * sum(x)) / |x|^3.
        assert!((g[1][0] - (25.0 - 3.0 * 7.0) / 125.0).abs() < 1e-15);
        Ok(())
    }

    #[test]
    fn logsumexp_and_log_softmax_agree() -> Result<()> {
        let x = Tensor::new(&[[1.0f64, 2.0, 3.0], [1000.0, 1000.0, -5.0]], &Device::Cpu)?;
        let lse = logsumexp_last(&x)?;
        let ls = log_softmax_last(&x)?;
        let back = x.broadcast_sub(&lse)?;
        let diff = (back - &ls)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12);
        let row1 = lse.to_vec2::<f64>()?[1][0];
        assert!((row1 - (1000.0 + 2f64.ln())).abs() < 1e-12);
        Ok(())
    }
}
