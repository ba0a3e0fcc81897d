//! RepLAI audio-visual correspondence (AVC): cross-modal InfoNCE with in-batch negatives.
//!
//! Reference: RepLAI `criterions/ssrl_audiopeak_aotv2.py` (spec `replai.md` section 4.1).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::LossError;
use crate::ops::{check_matrix, check_positive, check_same, l2_normalize, log_softmax_last};

const LOSS: &str = "AVC";

/// Settings of the AVC loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvcConfig {
    /// Softmax temperature tau (RepLAI `criterion.args.temperature`, 0.07).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Detach the key side of every logit matrix (gotcha G4).
    ///
    /// `true` reproduces what each GPU of the reference's DDP run differentiates: the keys come
    /// from `concat_all_gather`, which runs under `no_grad`, so the gradient reaches only the
    /// local query rows. With `false` the gradient also flows through the keys, which is what the
    /// reference computes when run as a single process. Loss values are identical.
    #[serde(default = "default_detach")]
    pub detach_keys: bool,
}

fn default_temperature() -> f64 {
    0.07
}

fn default_detach() -> bool {
    true
}

impl Default for AvcConfig {
    fn default() -> Self {
        Self {
            temperature: default_temperature(),
            detach_keys: default_detach(),
        }
    }
}

/// AVC loss and its parts; everything stays on the autograd graph.
#[derive(Debug, Clone)]
pub struct AvcOutput {
    /// `(l_va + l_av) / 2`, scalar.
    pub loss: Tensor,
    /// Video-to-audio cross-entropy, mean over the 2b (sample, position) rows, scalar.
    pub l_va: Tensor,
    /// Audio-to-video cross-entropy, mean over the 2b rows, scalar.
    pub l_av: Tensor,
    /// `logits_va[n, p, m] = <v[n, p], a[m]> / tau`, shape (b, 2, b), p = 0 before, 1 after.
    pub logits_va: Tensor,
    /// `logits_av[n, p, m] = <a[n], v[m, p]> / tau`, shape (b, 2, b).
    pub logits_av: Tensor,
}

/// Mean over rows of `-log_softmax(logits)[n, n]` for a square (b, b) logit matrix.
fn diagonal_cross_entropy(logits: &Tensor, eye: &Tensor) -> Result<Tensor> {
    let log_p = log_softmax_last(logits)?;
    (log_p * eye)?.sum_all()?.neg()
}

/// RepLAI's AVC loss on raw clr-head outputs.
///
/// Each audio clip `a[n]` has two positives, the video clip before (`v_before[n]`) and after
/// (`v_after[n]`) the moment of interaction; every other sample of the batch at the same
/// position is a negative. Before and after clips never compete with each other. Video to
/// audio: for each (n, p) a softmax over the b audio clips; audio to video: for each (n, p) a
/// softmax over the b video clips at position p. Each direction is the mean cross-entropy
/// over its 2b rows; the loss is the mean of the two directions. Inputs are L2-normalised here.
///
/// For a DDP-equivalent run on one device pass the full global batch and
/// `detach_keys: true`: the gradient then equals the average of the per-GPU gradients.
///
/// # Shapes
/// `v_before`, `v_after`, `a`: (b, D), same dtype.
pub fn avc_loss(
    v_before: &Tensor,
    v_after: &Tensor,
    a: &Tensor,
    cfg: &AvcConfig,
) -> Result<AvcOutput> {
    check_positive(LOSS, "temperature", cfg.temperature)?;
    let (b, _) = check_matrix(LOSS, "v_before", v_before)?;
    check_same(LOSS, "v_after", v_after, "v_before", v_before)?;
    check_same(LOSS, "a", a, "v_before", v_before)?;
    if b == 0 {
        return Err(LossError::BatchTooSmall {
            loss: LOSS,
            batch: b,
            why: "the softmax needs at least one candidate",
        }
        .into());
    }
    let inv_tau = 1.0 / cfg.temperature;
    let za = l2_normalize(a)?;
    let zv = [l2_normalize(v_before)?, l2_normalize(v_after)?];
    let keys = |t: &Tensor| {
        if cfg.detach_keys {
            t.detach()
        } else {
            t.clone()
        }
    };
    let za_key_t = keys(&za).t()?;
    let eye = Tensor::eye(b, za.dtype(), za.device())?;
    let mut ce_va = Vec::with_capacity(2);
    let mut ce_av = Vec::with_capacity(2);
    let mut logits_va = Vec::with_capacity(2);
    let mut logits_av = Vec::with_capacity(2);
    for v in &zv {
        // Rows: the video query at this position against every audio clip.
        let lva = (v.matmul(&za_key_t)? * inv_tau)?;
        // Rows: the audio query against every video clip at the same position.
        let lav = (za.matmul(&keys(v).t()?)? * inv_tau)?;
        ce_va.push(diagonal_cross_entropy(&lva, &eye)?);
        ce_av.push(diagonal_cross_entropy(&lav, &eye)?);
        logits_va.push(lva);
        logits_av.push(lav);
    }
    let rows = (2 * b) as f64;
    let l_va = ((&ce_va[0] + &ce_va[1])? / rows)?;
    let l_av = ((&ce_av[0] + &ce_av[1])? / rows)?;
    let loss = ((&l_va + &l_av)? * 0.5)?;
    Ok(AvcOutput {
        loss,
        l_va,
        l_av,
        logits_va: Tensor::stack(&logits_va, 1)?,
        logits_av: Tensor::stack(&logits_av, 1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn identical_embeddings_give_ln_b() -> Result<()> {
        // All logits equal: each softmax is uniform over b candidates.
        let b = 5;
        let x = Tensor::ones((b, 8), DType::F64, &Device::Cpu)?;
        let out = avc_loss(&x, &x, &x, &AvcConfig::default())?;
        let l = out.loss.to_scalar::<f64>()?;
        assert!((l - (b as f64).ln()).abs() < 1e-12, "{l}");
        Ok(())
    }

    #[test]
    fn rejects_mismatched_inputs() -> Result<()> {
        let x = Tensor::zeros((4, 8), DType::F32, &Device::Cpu)?;
        let y = Tensor::zeros((3, 8), DType::F32, &Device::Cpu)?;
        let err = avc_loss(&x, &y, &x, &AvcConfig::default()).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("v_after") && msg.contains("[3, 8]"), "{msg}");
        let z = Tensor::zeros((4, 8), DType::F64, &Device::Cpu)?;
        let msg = avc_loss(&x, &x, &z, &AvcConfig::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("`a`") && msg.contains("F64"), "{msg}");
        let cfg = AvcConfig {
            temperature: 0.0,
            detach_keys: false,
        };
        assert!(avc_loss(&x, &x, &x, &cfg).is_err());
        Ok(())
    }
}
