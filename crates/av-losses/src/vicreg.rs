//! VICReg (variance-invariance-covariance) as applied to audio-video pairs by AV-SSRL.
//!
//! References: facebookresearch/vicreg `main_vicreg.py` (VICReg.forward), AV-SSRL
//! `criterions/vic_loss.py`. Spec: `avid_xid_vicreg.md` section 2.1.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::LossError;
use crate::ops::{check_matrix, check_non_negative, check_positive, check_same};

const LOSS: &str = "VICReg";

/// Coefficients and variant switches of VICReg.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VicregConfig {
    /// Invariance (MSE) weight, 25.
    #[serde(default = "c25")]
    pub sim_coeff: f64,
    /// Variance (hinge on the std) weight, 25.
    #[serde(default = "c25")]
    pub std_coeff: f64,
    /// Covariance weight, 1.
    #[serde(default = "c1")]
    pub cov_coeff: f64,
    /// Added to the variance before the square root, 1e-4.
    #[serde(default = "eps")]
    pub eps: f64,
    /// Halve the variance term, `(mean relu(1 - std_x) + mean relu(1 - std_y)) / 2`, as both
    /// released codes do (vicreg issue #26); `false` is the paper's sum.
    #[serde(default = "yes")]
    pub halve_std: bool,
    /// Divide the covariance by `n_eff - 1` instead of `batch - 1`. AV-SSRL divides by the
    /// configured global batch, which differs from the real batch when it is not filled.
    #[serde(default)]
    pub n_eff: Option<usize>,
}

fn c25() -> f64 {
    25.0
}
fn c1() -> f64 {
    1.0
}
fn eps() -> f64 {
    1e-4
}
fn yes() -> bool {
    true
}

impl Default for VicregConfig {
    /// The released code's variant (halved variance, actual batch size).
    fn default() -> Self {
        Self {
            sim_coeff: c25(),
            std_coeff: c25(),
            cov_coeff: c1(),
            eps: eps(),
            halve_std: true,
            n_eff: None,
        }
    }
}

impl VicregConfig {
    /// The paper's formula: variance terms summed, not halved.
    pub fn paper() -> Self {
        Self {
            halve_std: false,
            ..Self::default()
        }
    }
}

/// VICReg loss and its unweighted terms.
#[derive(Debug, Clone)]
pub struct VicregOutput {
    /// `sim * repr_mse + std * std_term + cov * cov_term`, scalar.
    pub loss: Tensor,
    /// `mean((x - y)^2)` over all elements, scalar.
    pub repr_mse: Tensor,
    /// Variance hinge term (halved or not), scalar.
    pub std_term: Tensor,
    /// `sum offdiag(C_x)^2 / D + sum offdiag(C_y)^2 / D`, scalar.
    pub cov_term: Tensor,
    /// Per-dimension `sqrt(var_unbiased(x) + eps)`, (D,).
    pub std_x: Tensor,
    /// Per-dimension std of y, (D,).
    pub std_y: Tensor,
}

/// VICReg between the video expander output `x` and the audio expander output `y` (not
/// normalised).
///
/// Variance uses the unbiased variance over the actual batch; covariance is
/// `xc^T xc / (n_eff - 1)` of the column-centred batch, off-diagonal squares summed and divided
/// by D. On one device this equals the reference's gathered statistics when the whole global
/// batch is passed.
///
/// # Shapes
/// `x`, `y`: (b, D) with b >= 2.
pub fn vicreg_loss(x: &Tensor, y: &Tensor, cfg: &VicregConfig) -> Result<VicregOutput> {
    for (name, v) in [
        ("sim_coeff", cfg.sim_coeff),
        ("std_coeff", cfg.std_coeff),
        ("cov_coeff", cfg.cov_coeff),
    ] {
        check_non_negative(LOSS, name, v)?;
    }
    check_positive(LOSS, "eps", cfg.eps)?;
    let (b, d) = check_matrix(LOSS, "x", x)?;
    check_same(LOSS, "y", y, "x", x)?;
    if b < 2 {
        return Err(LossError::BatchTooSmall {
            loss: LOSS,
            batch: b,
            why: "the unbiased variance needs at least 2 rows",
        }
        .into());
    }
    let n_eff = cfg.n_eff.unwrap_or(b);
    if n_eff < 2 {
        return Err(LossError::InvalidConfig {
            loss: LOSS,
            what: format!("n_eff must be >= 2, got {n_eff}"),
        }
        .into());
    }
    let repr_mse = (x - y)?.sqr()?.mean_all()?;
    let xc = x.broadcast_sub(&x.mean_keepdim(0)?)?;
    let yc = y.broadcast_sub(&y.mean_keepdim(0)?)?;
    let std_of = |c: &Tensor| -> Result<Tensor> {
        (c.sqr()?.sum(0)? / (b - 1) as f64)?
            .affine(1.0, cfg.eps)?
            .sqrt()
    };
    let std_x = std_of(&xc)?;
    let std_y = std_of(&yc)?;
    let hinge = |s: &Tensor| s.affine(-1.0, 1.0)?.relu()?.mean_all();
    let std_sum = (hinge(&std_x)? + hinge(&std_y)?)?;
    let std_term = if cfg.halve_std {
        (std_sum * 0.5)?
    } else {
        std_sum
    };
    let off_diag =
        (Tensor::ones((d, d), x.dtype(), x.device())? - Tensor::eye(d, x.dtype(), x.device())?)?;
    let cov_of = |c: &Tensor| -> Result<Tensor> {
        let cov = (c.t()?.matmul(c)? / (n_eff - 1) as f64)?;
        (cov * &off_diag)?.sqr()?.sum_all()? / d as f64
    };
    let cov_term = (cov_of(&xc)? + cov_of(&yc)?)?;
    let loss = (((&repr_mse * cfg.sim_coeff)? + (&std_term * cfg.std_coeff)?)?
        + (&cov_term * cfg.cov_coeff)?)?;
    Ok(VicregOutput {
        loss,
        repr_mse,
        std_term,
        cov_term,
        std_x: std_x.reshape(d)?,
        std_y: std_y.reshape(d)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn unit_variance_decorrelated_identical_inputs_cost_nothing_but_eps() -> Result<()> {
        // Columns +-1 in a Hadamard pattern: zero mean, unbiased var 4/3, no covariance.
        let x = Tensor::new(
            &[[1.0f64, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]],
            &Device::Cpu,
        )?;
        let out = vicreg_loss(&x, &x, &VicregConfig::default())?;
        assert_eq!(out.repr_mse.to_scalar::<f64>()?, 0.0);
        assert_eq!(out.std_term.to_scalar::<f64>()?, 0.0);
        assert!(out.cov_term.to_scalar::<f64>()?.abs() < 1e-30);
        Ok(())
    }

    #[test]
    fn batch_of_one_is_rejected() -> Result<()> {
        let x = Tensor::zeros((1, 4), DType::F32, &Device::Cpu)?;
        let msg = vicreg_loss(&x, &x, &VicregConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("batch of 1 rows"), "{msg}");
        Ok(())
    }
}
