//! RepLAI audible state change (AStC, "aot" in the reference code).
//!
//! Reference: RepLAI `criterions/ssrl_audiopeak_aotv2.py` (spec `replai.md` section 4.2).

use candle_core::{Module, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::ops::{check_matrix, check_positive, check_same, l2_normalize, rowwise_dot, softplus};

const LOSS: &str = "AStC";

/// Settings of the AStC loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AstcConfig {
    /// Divisor of the cosine similarities (hard-coded 0.2 in the reference, independent of the
    /// AVC temperature).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
}

fn default_temperature() -> f64 {
    0.2
}

impl Default for AstcConfig {
    fn default() -> Self {
        Self {
            temperature: default_temperature(),
        }
    }
}

/// Forward and backward logits of AStC, each (b,).
#[derive(Debug, Clone)]
pub struct AstcScores {
    /// `<normalize(aot_diff(g_after - g_before)), normalize(g_a)> / temperature` (label 1).
    pub forward: Tensor,
    /// `<normalize(aot_diff(g_before - g_after)), normalize(g_a)> / temperature` (label 0).
    pub backward: Tensor,
}

/// The two AStC logits per sample, before the binary cross-entropy.
///
/// `aot_diff` is the shared difference MLP (`mlp.aot_diff`, Linear -> ReLU -> Linear). It is
/// applied once to the stacked (2b, D) differences `[after - before; before - after]`; since it
/// is non-linear the backward embedding is not the negated forward one. Only the MLP outputs
/// and the audio embedding are normalised, not the raw differences.
///
/// # Shapes
/// `g_before`, `g_after`, `g_a`: (b, D) raw aot-head outputs; `aot_diff` maps (n, D) -> (n, D').
pub fn astc_scores<M: Module + ?Sized>(
    g_before: &Tensor,
    g_after: &Tensor,
    g_a: &Tensor,
    aot_diff: &M,
    cfg: &AstcConfig,
) -> Result<AstcScores> {
    check_positive(LOSS, "temperature", cfg.temperature)?;
    let (b, _) = check_matrix(LOSS, "g_before", g_before)?;
    check_same(LOSS, "g_after", g_after, "g_before", g_before)?;
    check_same(LOSS, "g_a", g_a, "g_before", g_before)?;
    let diff = (g_after - g_before)?;
    let both = Tensor::cat(&[&diff, &diff.neg()?], 0)?;
    let d = l2_normalize(&aot_diff.forward(&both)?)?;
    let (_, d_out) = check_matrix(LOSS, "aot_diff output", &d)?;
    let a = l2_normalize(g_a)?;
    if a.dim(1)? != d_out {
        return Err(crate::LossError::ShapeMismatch {
            loss: LOSS,
            tensor: "aot_diff output",
            reference: "g_a",
            expected: a.dims().to_vec(),
            got: vec![2 * b, d_out],
        }
        .into());
    }
    let inv_t = 1.0 / cfg.temperature;
    let forward = (rowwise_dot(&d.narrow(0, 0, b)?, &a)? * inv_t)?;
    let backward = (rowwise_dot(&d.narrow(0, b, b)?, &a)? * inv_t)?;
    Ok(AstcScores { forward, backward })
}

/// AStC loss: binary cross-entropy with logits over `[s_forward; s_backward]` with labels
/// `[1; 0]`, mean over the 2b logits (a scalar).
///
/// Per sample only: there are no cross-sample negatives. Computed as
/// `mean(softplus(-s_forward) ++ softplus(s_backward))`, which is the same function as
/// `binary_cross_entropy_with_logits` and stays finite for any logit.
pub fn astc_loss<M: Module + ?Sized>(
    g_before: &Tensor,
    g_after: &Tensor,
    g_a: &Tensor,
    aot_diff: &M,
    cfg: &AstcConfig,
) -> Result<Tensor> {
    let s = astc_scores(g_before, g_after, g_a, aot_diff, cfg)?;
    astc_loss_from_scores(&s)
}

/// The AStC binary cross-entropy given precomputed scores.
pub fn astc_loss_from_scores(s: &AstcScores) -> Result<Tensor> {
    let terms = Tensor::cat(&[softplus(&s.forward.neg()?)?, softplus(&s.backward)?], 0)?;
    terms.mean_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    struct Identity;
    impl Module for Identity {
        fn forward(&self, xs: &Tensor) -> Result<Tensor> {
            Ok(xs.clone())
        }
    }

    #[test]
    fn orthogonal_audio_gives_ln_2() -> Result<()> {
        // Differences along e0, audio along e1: every logit is 0, so each BCE term is ln 2.
        let dev = Device::Cpu;
        let gb = Tensor::zeros((3, 4), DType::F64, &dev)?;
        let ga = Tensor::new(
            &[[1.0f64, 0., 0., 0.], [2., 0., 0., 0.], [0.5, 0., 0., 0.]],
            &dev,
        )?;
        let audio = Tensor::new(
            &[[0.0f64, 1., 0., 0.], [0., 3., 0., 0.], [0., 0., 0., 2.]],
            &dev,
        )?;
        let l = astc_loss(&gb, &ga, &audio, &Identity, &AstcConfig::default())?;
        assert!((l.to_scalar::<f64>()? - 2f64.ln()).abs() < 1e-15);
        Ok(())
    }

    #[test]
    fn aligned_audio_is_rewarded() -> Result<()> {
        // With an identity MLP, d_f = +a and d_b = -a: logits +5 and -5.
        let dev = Device::Cpu;
        let gb = Tensor::zeros((1, 2), DType::F64, &dev)?;
        let ga = Tensor::new(&[[0.0f64, 2.0]], &dev)?;
        let s = astc_scores(&gb, &ga, &ga, &Identity, &AstcConfig::default())?;
        assert!((s.forward.to_vec1::<f64>()?[0] - 5.0).abs() < 1e-12);
        assert!((s.backward.to_vec1::<f64>()?[0] + 5.0).abs() < 1e-12);
        let l = astc_loss_from_scores(&s)?.to_scalar::<f64>()?;
        assert!((l - (1.0 + (-5f64).exp()).ln()).abs() < 1e-15);
        Ok(())
    }
}
