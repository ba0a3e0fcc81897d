//! RepLAI's total objective: `clr_coeff * AVC + aot_coeff * AStC`.
//!
//! Reference: RepLAI `criterions/ssrl_audiopeak_aotv2.py` (spec `replai.md` section 4.3).

use candle_core::{Module, Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::astc::{astc_loss, AstcConfig};
use crate::avc::{avc_loss, AvcConfig, AvcOutput};
use crate::error::LossError;
use crate::ops::check_non_negative;

const LOSS: &str = "RepLAI";

/// Weights and settings of the RepLAI objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaiLossConfig {
    /// Weight of AVC (`criterion.args.clr_coeff`, 0.5). 0 skips the term entirely.
    #[serde(default = "half")]
    pub avc_weight: f64,
    /// Weight of AStC (`criterion.args.aot_coeff`, 0.5). 0 skips the term entirely.
    #[serde(default = "half")]
    pub astc_weight: f64,
    /// AVC settings.
    #[serde(default)]
    pub avc: AvcConfig,
    /// AStC settings.
    #[serde(default)]
    pub astc: AstcConfig,
}

fn half() -> f64 {
    0.5
}

impl Default for ReplaiLossConfig {
    fn default() -> Self {
        Self {
            avc_weight: half(),
            astc_weight: half(),
            avc: AvcConfig::default(),
            astc: AstcConfig::default(),
        }
    }
}

/// The six head outputs RepLAI's loss consumes, all (b, D) and un-normalised.
#[derive(Debug, Clone, Copy)]
pub struct ReplaiEmbeddings<'a> {
    /// `video_clr` output of the clip before the moment of interaction.
    pub v_before: &'a Tensor,
    /// `video_clr` output of the clip after.
    pub v_after: &'a Tensor,
    /// `audio_clr` output.
    pub a: &'a Tensor,
    /// `video_aot` output of the clip before.
    pub g_before: &'a Tensor,
    /// `video_aot` output of the clip after.
    pub g_after: &'a Tensor,
    /// `audio_aot` output.
    pub g_a: &'a Tensor,
}

/// Total loss and the terms that were computed.
#[derive(Debug, Clone)]
pub struct ReplaiLossOutput {
    /// Weighted sum, scalar (backpropagate this).
    pub total: Tensor,
    /// AVC and its parts, `None` when `avc_weight == 0`.
    pub avc: Option<AvcOutput>,
    /// Unweighted AStC loss, `None` when `astc_weight == 0`.
    pub astc: Option<Tensor>,
}

/// RepLAI's objective `avc_weight * AVC + astc_weight * AStC`.
///
/// A zero weight skips its term (no forward pass through `aot_diff`, no graph), which is how
/// the "w/o AStC" / "w/o AVC" ablations are run. Both weights zero is an error because there
/// would be nothing to differentiate.
pub fn replai_loss<M: Module + ?Sized>(
    emb: &ReplaiEmbeddings<'_>,
    aot_diff: &M,
    cfg: &ReplaiLossConfig,
) -> Result<ReplaiLossOutput> {
    check_non_negative(LOSS, "avc_weight", cfg.avc_weight)?;
    check_non_negative(LOSS, "astc_weight", cfg.astc_weight)?;
    if cfg.avc_weight == 0.0 && cfg.astc_weight == 0.0 {
        return Err(LossError::InvalidConfig {
            loss: LOSS,
            what: "avc_weight and astc_weight are both 0: no loss term left".to_string(),
        }
        .into());
    }
    let avc = if cfg.avc_weight > 0.0 {
        Some(avc_loss(emb.v_before, emb.v_after, emb.a, &cfg.avc)?)
    } else {
        None
    };
    let astc = if cfg.astc_weight > 0.0 {
        Some(astc_loss(
            emb.g_before,
            emb.g_after,
            emb.g_a,
            aot_diff,
            &cfg.astc,
        )?)
    } else {
        None
    };
    let total = match (&avc, &astc) {
        (Some(c), Some(s)) => ((&c.loss * cfg.avc_weight)? + (s * cfg.astc_weight)?)?,
        (Some(c), None) => (&c.loss * cfg.avc_weight)?,
        (None, Some(s)) => (s * cfg.astc_weight)?,
        (None, None) => {
            return Err(LossError::InvalidConfig {
                loss: LOSS,
                what: "no loss term was computed".to_string(),
            }
            .into())
        }
    };
    Ok(ReplaiLossOutput { total, avc, astc })
}
