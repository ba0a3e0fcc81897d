//! The pretraining model: video and audio encoders plus the method's heads, all in one `VarMap`
//! whose names follow the reference checkpoints (`backbone.video.*`, `backbone.audio.*`, `mlp.*`
//! for RepLAI), and the loss computation for each method.

use std::collections::HashMap;
use std::path::Path;

use av_losses::{ReplaiEmbeddings, ReplaiLossConfig, VicregConfig, XidConfig, XidLoss};
use av_models::{
    AudioCnn, AudioCnnConfig, R2Plus1d, R2Plus1dConfig, ReplaiHeads, ReplaiHeadsConfig,
    VicregExpander, VicregExpanderConfig, XidHead, XidHeadConfig,
};
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::VarMap;
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::error::{CandleContext, TrainError};
use crate::init::SeededVarMap;

/// Prefix of the video encoder's variables.
pub const VIDEO_PREFIX: &str = "backbone.video";
/// Prefix of the audio encoder's variables.
pub const AUDIO_PREFIX: &str = "backbone.audio";
/// Prefix of the heads (RepLAI's `mlp` ModuleDict; also used for xID/VICReg heads).
pub const HEAD_PREFIX: &str = "mlp";

/// Prefixes under which known checkpoints store the video encoder, tried in order.
pub const VIDEO_KEY_PREFIXES: [&str; 7] = [
    "backbone.video.",
    "module.backbone.video.",
    "video_model.",
    "module.video_model.",
    "module.backbone.",
    "backbone.",
    "",
];

/// The video encoder configuration of a run.
pub fn video_config(cfg: &Config) -> R2Plus1dConfig {
    R2Plus1dConfig::avid().with_width(cfg.model.video_width)
}

/// The audio encoder configuration of a run.
pub fn audio_config(cfg: &Config) -> AudioCnnConfig {
    AudioCnnConfig::default().with_width(cfg.model.audio_width)
}

/// Method-specific heads and state.
pub enum Heads {
    /// RepLAI's five MLPs.
    Replai(ReplaiHeads, ReplaiLossConfig),
    /// xID projections and memory banks.
    Xid {
        /// Video projection.
        video: XidHead,
        /// Audio projection.
        audio: XidHead,
        /// Loss with memory banks (its banks are saved with the optimiser state).
        loss: Box<XidLoss>,
    },
    /// VICReg expanders.
    Vicreg {
        /// Video expander.
        video: VicregExpander,
        /// Audio expander.
        audio: VicregExpander,
        /// Loss coefficients.
        cfg: VicregConfig,
    },
}

/// Encoders + heads of a pretraining run.
pub struct PretrainModel {
    /// Every variable (weights and BN statistics), PyTorch names.
    pub varmap: VarMap,
    /// Video encoder.
    pub video: R2Plus1d,
    /// Audio encoder.
    pub audio: AudioCnn,
    /// Method heads.
    pub heads: Heads,
    /// Device of the variables.
    pub device: Device,
}

/// Loss value and its named terms (as f64 for logging).
pub struct StepLoss {
    /// Scalar to differentiate.
    pub total: Tensor,
    /// Named terms, including `loss`.
    pub terms: Vec<(String, Tensor)>,
}

/// One collated pretraining batch on the device.
pub struct DeviceBatch {
    /// (B, 3, T, H, W).
    pub video_before: Tensor,
    /// (B, 3, T, H, W).
    pub video_after: Tensor,
    /// (B, 1, 125, 80).
    pub audio: Tensor,
    /// Dataset indices (memory-bank rows for xID).
    pub indices: Vec<usize>,
}

impl PretrainModel {
    /// Builds the model with seeded initialisation; `n_items` sizes xID's memory banks.
    pub fn new(
        cfg: &Config,
        device: &Device,
        n_items: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self, TrainError> {
        let varmap = VarMap::new();
        let vb = SeededVarMap::new(varmap.clone(), cfg.run.seed).var_builder(DType::F32, device);
        let video = R2Plus1d::new(&video_config(cfg), vb.pp(VIDEO_PREFIX))
            .map_err(|e| TrainError::other("building the video encoder", e))?;
        let audio = AudioCnn::new(&audio_config(cfg), vb.pp(AUDIO_PREFIX))
            .map_err(|e| TrainError::other("building the audio encoder", e))?;
        let in_dim = video.out_dim();
        if audio.out_dim() != in_dim {
            return Err(TrainError::Config {
                what: "model.audio_width".into(),
                msg: format!("audio encoder output {} differs from video encoder output {in_dim}; use the same width multiplier", audio.out_dim()),
            });
        }
        let hidden = if cfg.model.head_hidden == 0 {
            in_dim
        } else {
            cfg.model.head_hidden
        };
        let m = &cfg.method;
        let hb = vb.pp(HEAD_PREFIX);
        let heads = match m.name.as_str() {
            "replai" => {
                let hc = ReplaiHeadsConfig {
                    in_dim,
                    hidden,
                    out_dim: cfg.model.head_out,
                };
                let loss = ReplaiLossConfig {
                    avc_weight: m.avc_weight,
                    astc_weight: m.astc_weight,
                    avc: av_losses::AvcConfig {
                        temperature: m.avc_temperature,
                        detach_keys: m.detach_keys,
                    },
                    astc: av_losses::AstcConfig {
                        temperature: m.astc_temperature,
                    },
                };
                Heads::Replai(
                    ReplaiHeads::new(&hc, hb)
                        .map_err(|e| TrainError::other("building RepLAI heads", e))?,
                    loss,
                )
            }
            "xid" => {
                let hc = XidHeadConfig {
                    dims: vec![in_dim, hidden, hidden, cfg.model.head_out],
                };
                let video = XidHead::new(&hc, hb.pp("video"))
                    .map_err(|e| TrainError::other("building xID heads", e))?;
                let audio = XidHead::new(&hc, hb.pp("audio"))
                    .map_err(|e| TrainError::other("building xID heads", e))?;
                let xc = XidConfig {
                    num_negatives: m.xid_negatives.min(n_items.saturating_sub(1)).max(1),
                    temperature: m.xid_temperature,
                    momentum: m.xid_momentum,
                    ..XidConfig::default()
                };
                let loss = XidLoss::new(
                    n_items.max(2),
                    cfg.model.head_out,
                    xc,
                    DType::F32,
                    device,
                    rng,
                )
                .ctx("building xID memory banks")?;
                Heads::Xid {
                    video,
                    audio,
                    loss: Box::new(loss),
                }
            }
            "vicreg" => {
                let mut dims = vec![in_dim];
                dims.extend(&m.vicreg_expander);
                let ec = VicregExpanderConfig {
                    dims,
                    last_bias: true,
                };
                let video = VicregExpander::new(&ec, hb.pp("video"))
                    .map_err(|e| TrainError::other("building VICReg expanders", e))?;
                let audio = VicregExpander::new(&ec, hb.pp("audio"))
                    .map_err(|e| TrainError::other("building VICReg expanders", e))?;
                let vc = VicregConfig {
                    sim_coeff: m.vicreg_sim,
                    std_coeff: m.vicreg_std,
                    cov_coeff: m.vicreg_cov,
                    ..VicregConfig::default()
                };
                Heads::Vicreg {
                    video,
                    audio,
                    cfg: vc,
                }
            }
            other => {
                return Err(TrainError::Config {
                    what: "method.name".into(),
                    msg: format!("unknown method {other:?}"),
                })
            }
        };
        Ok(Self {
            varmap,
            video,
            audio,
            heads,
            device: device.clone(),
        })
    }

    /// Initialises encoders from an external or own checkpoint (RepLAI's AVID initialisation);
    /// heads keep their initial values. Returns how many variables were loaded.
    pub fn init_from(&self, path: &Path) -> Result<usize, TrainError> {
        let tensors = av_models::load_tensors(path).map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        let mut loaded = 0;
        for (prefix, candidates) in [
            (VIDEO_PREFIX, &VIDEO_KEY_PREFIXES[..]),
            (
                AUDIO_PREFIX,
                &[
                    "backbone.audio.",
                    "module.backbone.audio.",
                    "audio_model.",
                    "module.audio_model.",
                ][..],
            ),
        ] {
            let names: Vec<String> = {
                let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
                data.keys()
                    .filter_map(|k| k.strip_prefix(&format!("{prefix}.")).map(str::to_string))
                    .collect()
            };
            let Some(src) = best_prefix(&tensors, &names, candidates) else {
                return Err(TrainError::Checkpoint {
                    path: path.to_path_buf(),
                    msg: format!("no tensors for the {prefix} encoder under any of {candidates:?}"),
                });
            };
            let renamed: HashMap<String, Tensor> = tensors
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix(src)
                        .map(|rest| (format!("{prefix}.{rest}"), v.clone()))
                })
                .collect();
            let report = av_models::load_into(&self.varmap, &renamed, "").map_err(|e| {
                TrainError::Checkpoint {
                    path: path.to_path_buf(),
                    msg: e.to_string(),
                }
            })?;
            let mine: Vec<&String> = report
                .missing
                .iter()
                .filter(|n| n.starts_with(prefix))
                .collect();
            if !mine.is_empty() || !report.mismatched.is_empty() {
                return Err(TrainError::Checkpoint {
                    path: path.to_path_buf(),
                    msg: format!(
                        "{prefix} does not match the checkpoint (wrong width or architecture?): {} missing, mismatched {:?}",
                        mine.len(),
                        report.mismatched.iter().take(3).collect::<Vec<_>>()
                    ),
                });
            }
            loaded += names.len();
        }
        Ok(loaded)
    }

    /// Forward pass and loss of one batch.
    pub fn loss(
        &mut self,
        b: &DeviceBatch,
        train: bool,
        rng: &mut ChaCha8Rng,
    ) -> Result<StepLoss, TrainError> {
        let n = b.audio.dim(0).ctx("batch")?;
        let v = Tensor::cat(&[&b.video_before, &b.video_after], 0).ctx("concatenating clips")?;
        let h_v = self.video.forward_t(&v, train).ctx("video encoder")?;
        let h_a = self.audio.forward_t(&b.audio, train).ctx("audio encoder")?;
        match &mut self.heads {
            Heads::Replai(h, lc) => {
                let z = h.video_clr.forward(&h_v).ctx("video_clr")?;
                let g = h.video_aot.forward(&h_v).ctx("video_aot")?;
                let za = h.audio_clr.forward(&h_a).ctx("audio_clr")?;
                let ga = h.audio_aot.forward(&h_a).ctx("audio_aot")?;
                let (zb, zf) = (
                    z.narrow(0, 0, n).ctx("split")?,
                    z.narrow(0, n, n).ctx("split")?,
                );
                let (gb, gf) = (
                    g.narrow(0, 0, n).ctx("split")?,
                    g.narrow(0, n, n).ctx("split")?,
                );
                let emb = ReplaiEmbeddings {
                    v_before: &zb,
                    v_after: &zf,
                    a: &za,
                    g_before: &gb,
                    g_after: &gf,
                    g_a: &ga,
                };
                let out = av_losses::replai_loss(&emb, &h.aot_diff, lc).ctx("RepLAI loss")?;
                let mut terms = vec![("loss".to_string(), out.total.clone())];
                if let Some(a) = &out.avc {
                    terms.push(("avc".into(), a.loss.clone()));
                }
                if let Some(s) = &out.astc {
                    terms.push(("astc".into(), s.clone()));
                }
                Ok(StepLoss {
                    total: out.total,
                    terms,
                })
            }
            Heads::Xid { video, audio, loss } => {
                // Both clips are positives of the moment's audio: one xID term per clip.
                let pv = video.forward(&h_v).ctx("xID video head")?;
                let pa = audio.forward(&h_a).ctx("xID audio head")?;
                let (pb, pf) = (
                    pv.narrow(0, 0, n).ctx("split")?,
                    pv.narrow(0, n, n).ctx("split")?,
                );
                let ob = loss.forward(&pb, &pa, &b.indices, rng).ctx("xID loss")?;
                let of = loss.forward(&pf, &pa, &b.indices, rng).ctx("xID loss")?;
                let total = ((&ob.loss + &of.loss).ctx("xID")? * 0.5).ctx("xID")?;
                if train {
                    let mean_v = ((pb.detach() + pf.detach()).ctx("xID")? * 0.5).ctx("xID")?;
                    loss.update(&mean_v, &pa.detach(), &b.indices)
                        .ctx("xID memory update")?;
                }
                Ok(StepLoss {
                    terms: vec![("loss".into(), total.clone())],
                    total,
                })
            }
            Heads::Vicreg { video, audio, cfg } => {
                let xv = video.forward_t(&h_v, train).ctx("VICReg video expander")?;
                let ya = audio.forward_t(&h_a, train).ctx("VICReg audio expander")?;
                let (xb, xf) = (
                    xv.narrow(0, 0, n).ctx("split")?,
                    xv.narrow(0, n, n).ctx("split")?,
                );
                let ob = av_losses::vicreg_loss(&xb, &ya, cfg).ctx("VICReg loss")?;
                let of = av_losses::vicreg_loss(&xf, &ya, cfg).ctx("VICReg loss")?;
                let total = ((&ob.loss + &of.loss).ctx("VICReg")? * 0.5).ctx("VICReg")?;
                Ok(StepLoss {
                    terms: vec![
                        ("loss".into(), total.clone()),
                        ("inv".into(), ob.repr_mse.clone()),
                        ("std".into(), ob.std_term.clone()),
                        ("cov".into(), ob.cov_term.clone()),
                    ],
                    total,
                })
            }
        }
    }

    /// Extra state that must be checkpointed besides weights and optimiser (xID memory banks).
    pub fn extra_state(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        match &self.heads {
            Heads::Xid { loss, .. } => Ok(loss
                .state_tensors()
                .ctx("xID state")?
                .into_iter()
                .map(|(k, v)| (format!("xid.{k}"), v))
                .collect()),
            _ => Ok(HashMap::new()),
        }
    }

    /// Restores [`Self::extra_state`].
    pub fn load_extra_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        if let Heads::Xid { loss, .. } = &mut self.heads {
            let mine: HashMap<String, Tensor> = state
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("xid.").map(|s| (s.to_string(), v.clone())))
                .collect();
            loss.load_state(&mine).ctx("restoring xID memory banks")?;
        }
        Ok(())
    }
}

/// Among `candidates`, the key prefix under which `tensors` hold the most of `names`.
pub fn best_prefix<'a>(
    tensors: &HashMap<String, Tensor>,
    names: &[String],
    candidates: &[&'a str],
) -> Option<&'a str> {
    let mut best = None;
    let mut best_n = 0;
    for c in candidates {
        let n = names
            .iter()
            .filter(|n| tensors.contains_key(&format!("{c}{n}")))
            .count();
        if n > best_n {
            best_n = n;
            best = Some(*c);
        }
    }
    best
}

/// A frozen video encoder for probing: its own `VarMap`, variables named as in
/// [`av_models::R2Plus1d`] without prefix.
pub struct VideoEncoder {
    /// The encoder's variables.
    pub varmap: VarMap,
    /// The network.
    pub net: R2Plus1d,
    /// Device.
    pub device: Device,
    /// Where the weights came from ("random init (seed N)" or a file).
    pub origin: String,
    /// Content key for feature caches.
    pub key: String,
}

impl VideoEncoder {
    /// A randomly initialised encoder, reproducible from `seed`.
    pub fn random(cfg: &R2Plus1dConfig, seed: u64, device: &Device) -> Result<Self, TrainError> {
        let varmap = VarMap::new();
        // The same names and seed as the pretraining model's video encoder, so "random init" is
        // exactly the network pretraining starts from.
        let vb = SeededVarMap::new(varmap.clone(), seed).var_builder(DType::F32, device);
        let net = R2Plus1d::new(cfg, vb.pp(VIDEO_PREFIX))
            .map_err(|e| TrainError::other("building the video encoder", e))?;
        Ok(Self {
            varmap,
            net,
            device: device.clone(),
            origin: format!("random init (seed {seed})"),
            key: format!("random-w{}-s{seed}", cfg.width_mult),
        })
    }

    /// An encoder with weights from a checkpoint (own run, RepLAI/AVID `.pth`, safetensors);
    /// wrong architectures are rejected with the offending tensor names.
    pub fn load(cfg: &R2Plus1dConfig, path: &Path, device: &Device) -> Result<Self, TrainError> {
        let weights = crate::checkpoint::resolve_weights_file(path)?;
        let enc = Self::random(cfg, 0, device)?;
        let tensors = av_models::load_tensors(&weights).map_err(|e| TrainError::Checkpoint {
            path: weights.clone(),
            msg: e.to_string(),
        })?;
        let names: Vec<String> = {
            let data = enc.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
            data.keys()
                .filter_map(|k| {
                    k.strip_prefix(&format!("{VIDEO_PREFIX}."))
                        .map(str::to_string)
                })
                .collect()
        };
        let src = best_prefix(&tensors, &names, &VIDEO_KEY_PREFIXES).ok_or_else(|| {
            TrainError::Checkpoint {
                path: weights.clone(),
                msg: format!("no video encoder tensors under any of {VIDEO_KEY_PREFIXES:?}"),
            }
        })?;
        let renamed: HashMap<String, Tensor> = tensors
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(src)
                    .map(|rest| (format!("{VIDEO_PREFIX}.{rest}"), v.clone()))
            })
            .collect();
        let report = av_models::load_into(&enc.varmap, &renamed, "").map_err(|e| {
            TrainError::Checkpoint {
                path: weights.clone(),
                msg: e.to_string(),
            }
        })?;
        if !report.missing.is_empty() || !report.mismatched.is_empty() {
            return Err(TrainError::Checkpoint {
                path: weights.clone(),
                msg: format!(
                    "video encoder does not match (check model.video_width): {} missing (e.g. {:?}), mismatched {:?}",
                    report.missing.len(),
                    report.missing.iter().take(3).collect::<Vec<_>>(),
                    report.mismatched.iter().take(3).collect::<Vec<_>>()
                ),
            });
        }
        let hash = crate::checkpoint::file_hash(&weights)?;
        Ok(Self {
            origin: weights.display().to_string(),
            key: format!("ckpt-{hash:016x}"),
            ..enc
        })
    }

    /// Pooled features of clips `(B, 3, T, H, W)`; `train` selects BN batch statistics (G7).
    pub fn features(&self, clips: &Tensor, train: bool) -> Result<Tensor, TrainError> {
        self.net.forward_t(clips, train).ctx("video encoder")
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.net.out_dim()
    }
}
