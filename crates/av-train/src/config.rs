//! Run configuration: TOML files with defaults for every key, `key=value` overrides on the
//! command line, typo suggestions, and the resolved file saved next to the run's outputs.
//!
//! Every file and override is merged onto the serialised defaults first, so a key that does not
//! exist is caught (with the closest existing key suggested) before serde sees it; serde's
//! `deny_unknown_fields` stays on as a second line of defence.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Everything a pretraining run needs; `Default` is the tiny synthetic run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Naming, output directory, seed and device.
    pub run: RunConfig,
    /// Where samples come from and how they are loaded.
    pub data: DataConfig,
    /// The built-in synthetic world (used when `data.source = "synthetic"`); its validation
    /// videos are held out of pretraining and used as the probe's test split.
    pub synthetic: av_synth::WorldConfig,
    /// Clip extraction around moments of interaction.
    pub sampler: SamplerSection,
    /// Encoder and head sizes.
    pub model: ModelConfig,
    /// Objective: `replai`, `xid` or `vicreg` and their coefficients.
    pub method: MethodConfig,
    /// Optimiser and learning-rate schedule.
    pub optim: OptimConfig,
    /// Checkpoint cadence and retention.
    pub checkpoint: CheckpointConfig,
    /// Linear probe run after pretraining (and by `replai-linear-eval`).
    pub probe: ProbeConfig,
    /// Full fine-tuning (`replai-finetune`).
    pub finetune: FinetuneConfig,
}

/// Run identity and placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Run name; the run directory is `<out_dir>/<name>`.
    pub name: String,
    /// Parent of run directories.
    pub out_dir: String,
    /// Master seed: model init, sampling and augmentation derive from it.
    pub seed: u64,
    /// `cpu`, `cuda` (falls back to CPU when no GPU), or `cuda:N`.
    pub device: String,
    /// Stop after this many optimiser steps (0 = no limit); used by tests and smoke runs.
    pub max_steps: usize,
    /// Log a metrics line every this many steps.
    pub log_every: usize,
    /// Run the linear probe at the end of pretraining.
    pub probe_after: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "synthetic".into(),
            out_dir: "runs".into(),
            seed: 0,
            device: "cpu".into(),
            max_steps: 0,
            log_every: 1,
            probe_after: true,
        }
    }
}

/// Data source and loader settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// `synthetic` (built-in world), or `folder` (a directory of videos/frame folders).
    pub source: String,
    /// Dataset root for real data.
    pub root: String,
    /// Optional list file (one relative path per line) restricting the videos used.
    pub list: String,
    /// Loader worker threads (0 = load on the training thread).
    pub workers: usize,
    /// Bounded prefetch queue length, in batches.
    pub prefetch: usize,
    /// Samples per epoch (0 = one per video); each sample picks a video by index modulo.
    pub samples_per_epoch: usize,
    /// Maximum consecutive replacement attempts for a bad sample before the run fails.
    pub max_retries: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            source: "synthetic".into(),
            root: String::new(),
            list: String::new(),
            workers: 2,
            prefetch: 4,
            samples_per_epoch: 512,
            max_retries: 16,
        }
    }
}

/// Clip extraction (`av_video::SamplerConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplerSection {
    /// Frame rate clips are resampled to.
    pub fps: f64,
    /// Frames per clip.
    pub num_frames: usize,
    /// Short-side scale range for training augmentation.
    pub min_scale: u32,
    /// Upper end of the short-side scale range.
    pub max_scale: u32,
    /// Square crop side.
    pub crop: u32,
    /// Short side for evaluation resizing (centre crop follows).
    pub eval_scale: u32,
    /// Gap between the moment and each clip.
    pub delta_s: f64,
    /// Clip length.
    pub clip_s: f64,
    /// Audio window centred on the moment.
    pub audio_s: f64,
    /// `moi` (detected moments) or `random` (the w/o-MoI ablation).
    pub moments: String,
    /// Reproduce the reference's width/height swap in training augmentation (G1).
    pub compat_swap_wh: bool,
}

impl Default for SamplerSection {
    fn default() -> Self {
        Self {
            fps: 16.0,
            num_frames: 8,
            min_scale: 36,
            max_scale: 44,
            crop: 32,
            eval_scale: 36,
            delta_s: 0.1,
            clip_s: 0.5,
            audio_s: 2.0,
            moments: "moi".into(),
            compat_swap_wh: false,
        }
    }
}

/// Encoder and head sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Channel multiplier of the R(2+1)D-18 video encoder (1.0 = the paper's).
    pub video_width: f64,
    /// Channel multiplier of the audio CNN.
    pub audio_width: f64,
    /// Hidden width of the projection MLPs (0 = the encoder's output width).
    pub head_hidden: usize,
    /// Embedding width of the projection MLPs.
    pub head_out: usize,
    /// Initialise from this checkpoint (AVID/RepLAI `.pth`/`.safetensors`); empty = scratch.
    pub init: String,
    /// Resume the run from this checkpoint directory or state file; `auto` = the run's latest.
    pub resume: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            video_width: 0.25,
            audio_width: 0.25,
            head_hidden: 0,
            head_out: 64,
            init: String::new(),
            resume: String::new(),
        }
    }
}

/// Objective and its coefficients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MethodConfig {
    /// `replai`, `xid` or `vicreg`.
    pub name: String,
    /// Weight of the audio-visual correspondence term (0 = the w/o-AVC ablation).
    pub avc_weight: f64,
    /// Weight of the audible state-change term (0 = the w/o-AStC ablation).
    pub astc_weight: f64,
    /// AVC softmax temperature.
    pub avc_temperature: f64,
    /// AStC cosine temperature (0.2 hard-coded in the reference).
    pub astc_temperature: f64,
    /// Detach AVC keys, emulating the multi-GPU reference on one device (G4).
    pub detach_keys: bool,
    /// xID memory-bank negatives.
    pub xid_negatives: usize,
    /// xID memory-bank momentum.
    pub xid_momentum: f64,
    /// xID temperature.
    pub xid_temperature: f64,
    /// VICReg invariance coefficient.
    pub vicreg_sim: f64,
    /// VICReg variance coefficient.
    pub vicreg_std: f64,
    /// VICReg covariance coefficient.
    pub vicreg_cov: f64,
    /// VICReg expander widths.
    pub vicreg_expander: Vec<usize>,
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self {
            name: "replai".into(),
            avc_weight: 0.5,
            astc_weight: 0.5,
            avc_temperature: 0.07,
            astc_temperature: 0.2,
            detach_keys: false,
            xid_negatives: 1024,
            xid_momentum: 0.5,
            xid_temperature: 0.07,
            vicreg_sim: 25.0,
            vicreg_std: 25.0,
            vicreg_cov: 1.0,
            vicreg_expander: vec![256, 256, 256],
        }
    }
}

/// Optimiser and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// `sgd` or `adam` (coupled L2 like torch.optim.Adam) or `adamw`.
    pub name: String,
    /// Peak learning rate (OneCycle `max_lr`, or the base lr of other schedules).
    pub lr: f64,
    /// SGD momentum (cycled by OneCycle).
    pub momentum: f64,
    /// Weight decay (never applied to BN running statistics).
    pub weight_decay: f64,
    /// Backbone lr multiplier relative to the heads.
    pub backbone_lr_mult: f64,
    /// Global batch size.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: usize,
    /// `onecycle-epoch` (reference), `onecycle-step`, `cosine`, `step`, `constant`.
    pub schedule: String,
    /// OneCycle total steps (0 = epochs for per-epoch, epochs*steps for per-step).
    pub total_steps: usize,
    /// OneCycle fraction of increasing phase.
    pub pct_start: f64,
    /// Warm-up epochs for the cosine schedule.
    pub warmup_epochs: usize,
    /// Epoch milestones for the `step` schedule.
    pub milestones: Vec<usize>,
    /// Multiplier applied at each milestone.
    pub gamma: f64,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            name: "sgd".into(),
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 1e-4,
            backbone_lr_mult: 1.0,
            batch_size: 32,
            epochs: 12,
            schedule: "onecycle-epoch".into(),
            total_steps: 0,
            pct_start: 0.3,
            warmup_epochs: 0,
            milestones: vec![],
            gamma: 0.1,
        }
    }
}

/// Checkpoint cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save `epoch_NNNN` every this many epochs (0 = only at the end).
    pub every_epochs: usize,
    /// Keep this many numbered checkpoints (older ones are deleted).
    pub keep_last: usize,
    /// Refresh `latest` (with the sampler position) every this many minutes of training.
    pub latest_minutes: f64,
    /// Also refresh `latest` every this many steps (0 = off; tests use it).
    pub latest_every_steps: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_epochs: 0,
            keep_last: 3,
            latest_minutes: 30.0,
            latest_every_steps: 0,
        }
    }
}

/// Linear probe protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// SGD learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay on the classifier.
    pub weight_decay: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Epochs.
    pub epochs: usize,
    /// Epochs at which the lr is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// LR multiplier at milestones.
    pub gamma: f64,
    /// Standardise features with training-set mean/std before the classifier.
    pub standardize: bool,
    /// Reference quirk G7: BN in train mode (batch statistics) while extracting training features.
    pub bn_train_mode: bool,
    /// Reference quirk G8: one random clip per segment for validation (no multi-clip).
    pub single_clip: bool,
    /// Clips per segment averaged for video-level accuracy.
    pub eval_clips: usize,
    /// Augmented training views per segment (each a differently cropped/jittered clip).
    pub train_views: usize,
    /// Feature cache directory (empty = `<run>/features`).
    pub cache_dir: String,
    /// Keep this fraction of training segments per class (1.0 = all; few-shot ablation).
    pub few_shot_ratio: f64,
    /// Verb classes excluded from training and reported separately (concept generalisation).
    pub unseen_verbs: Vec<usize>,
    /// Dataset manifest (`data-manifests/<name>/manifest.toml`) of the labelled data; empty =
    /// the synthetic world's interactions.
    pub manifest: String,
    /// Data root the manifest's relative paths are resolved against.
    pub data_root: String,
    /// Manifest split the classifier is trained on.
    pub train_split: String,
    /// Manifest split evaluated; empty = `validation`, else `test`.
    pub eval_split: String,
    /// `pair` (before/after clips around the labelled moment), `clip` (one clip inside the
    /// labelled window: the EPIC-100 / UCF-101 / HMDB-51 protocol) or `auto` (pair for the
    /// synthetic world, clip for manifests).
    pub protocol: String,
    /// Concept generalisation (AV-SSRL `--use-rest-classes`): probe the seen and the rest classes
    /// of the manifest's `files.rest_classes` as two separate problems.
    pub rest_classes: bool,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 0.0,
            batch_size: 32,
            epochs: 60,
            milestones: vec![40, 50],
            gamma: 0.1,
            standardize: true,
            bn_train_mode: false,
            single_clip: false,
            eval_clips: 5,
            train_views: 2,
            cache_dir: String::new(),
            few_shot_ratio: 1.0,
            unseen_verbs: vec![],
            manifest: String::new(),
            data_root: String::new(),
            train_split: "train".into(),
            eval_split: String::new(),
            protocol: "auto".into(),
            rest_classes: false,
        }
    }
}

/// Full fine-tuning protocol. Defaults: LP-FT (classifier from the linear probe, then all layers
/// with Adam, no dropout, 3 clips per segment per epoch), which beats the probe on the synthetic
/// world; AV-SSRL's protocol is `head_init = "random"`, `dropout = 0.5`, `warmup_epochs = 5`,
/// `clips_per_segment = 10` (UCF-101) or 25 (HMDB-51).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    /// `adam` (coupled L2, as the reference), `adamw` or `sgd`.
    pub optimizer: String,
    /// Learning rate of the main phase (also used by the warm-up).
    pub lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Epochs training only the classifier.
    pub warmup_epochs: usize,
    /// Epochs training all layers.
    pub epochs: usize,
    /// Main-phase epochs at which the lr is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// LR multiplier at milestones.
    pub gamma: f64,
    /// Batch size.
    pub batch_size: usize,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// Augmented clips per training segment per epoch.
    pub clips_per_segment: usize,
    /// `probe`: start the classifier from the linear probe of the initial encoder (LP-FT) and
    /// skip the warm-up; `random`: the reference's N(0, 0.01) heads trained by the warm-up.
    pub head_init: String,
    /// Keep BatchNorm on its running statistics while training (they stay those of the
    /// initial encoder; the affine parameters still train), as is usual when fine-tuning with
    /// small batches. The reference trains BN with batch statistics.
    pub freeze_bn: bool,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            optimizer: "adam".into(),
            lr: 1e-4,
            weight_decay: 0.0,
            warmup_epochs: 5,
            epochs: 16,
            milestones: vec![6, 10, 14],
            gamma: 0.3,
            batch_size: 32,
            dropout: 0.0,
            clips_per_segment: 3,
            head_init: "probe".into(),
            freeze_bn: false,
        }
    }
}

impl Config {
    /// Reads a TOML file on top of the defaults, then applies `key=value` overrides.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, TrainError> {
        let mut merged = defaults_value()?;
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
            let file: toml::Table = toml::from_str(&text).map_err(|e| TrainError::Config {
                what: path.display().to_string(),
                msg: e.to_string(),
            })?;
            let origin = path.display().to_string();
            merge_table(&mut merged, &file, "", &origin)?;
        }
        for ov in overrides {
            apply_override(&mut merged, ov)?;
        }
        let cfg: Config = merged
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config {
                what: "resolved configuration".into(),
                msg: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string (used for `config.toml` of an existing run).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, TrainError> {
        let mut merged = defaults_value()?;
        let file: toml::Table = toml::from_str(text).map_err(|e| TrainError::Config {
            what: origin.into(),
            msg: e.to_string(),
        })?;
        merge_table(&mut merged, &file, "", origin)?;
        let cfg: Config = merged
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config {
                what: origin.into(),
                msg: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Serialises the resolved configuration (every key, defaults included).
    pub fn to_toml(&self) -> Result<String, TrainError> {
        toml::to_string_pretty(self).map_err(|e| TrainError::Config {
            what: "configuration".into(),
            msg: e.to_string(),
        })
    }

    /// Writes `config.toml` into `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let text = self.to_toml()?;
        crate::checkpoint::atomic_write(&dir.join("config.toml"), text.as_bytes())
    }

    /// Rejects values that would only fail later, deep inside a run.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |key: &str, msg: String| {
            Err(TrainError::Config {
                what: key.into(),
                msg,
            })
        };
        const METHODS: [&str; 3] = ["replai", "xid", "vicreg"];
        if !METHODS.contains(&self.method.name.as_str()) {
            return bad(
                "method.name",
                format!(
                    "unknown method {:?}; expected one of {METHODS:?}",
                    self.method.name
                ),
            );
        }
        const SCHEDULES: [&str; 5] = [
            "onecycle-epoch",
            "onecycle-step",
            "cosine",
            "step",
            "constant",
        ];
        if !SCHEDULES.contains(&self.optim.schedule.as_str()) {
            return bad(
                "optim.schedule",
                format!(
                    "unknown schedule {:?}; expected one of {SCHEDULES:?}",
                    self.optim.schedule
                ),
            );
        }
        const OPTIMS: [&str; 3] = ["sgd", "adam", "adamw"];
        if !OPTIMS.contains(&self.optim.name.as_str()) {
            return bad(
                "optim.name",
                format!(
                    "unknown optimiser {:?}; expected one of {OPTIMS:?}",
                    self.optim.name
                ),
            );
        }
        if !["moi", "random"].contains(&self.sampler.moments.as_str()) {
            return bad(
                "sampler.moments",
                format!(
                    "expected \"moi\" or \"random\", got {:?}",
                    self.sampler.moments
                ),
            );
        }
        if !["synthetic", "folder"].contains(&self.data.source.as_str()) {
            return bad(
                "data.source",
                format!(
                    "expected \"synthetic\" or \"folder\", got {:?}",
                    self.data.source
                ),
            );
        }
        if self.optim.batch_size < 2 {
            return bad(
                "optim.batch_size",
                format!(
                    "contrastive losses need at least 2 samples per batch, got {}",
                    self.optim.batch_size
                ),
            );
        }
        if self.optim.epochs == 0 {
            return bad("optim.epochs", "must be at least 1".into());
        }
        if !(self.optim.lr.is_finite() && self.optim.lr > 0.0) {
            return bad(
                "optim.lr",
                format!("must be positive, got {}", self.optim.lr),
            );
        }
        if self.model.video_width <= 0.0 || self.model.audio_width <= 0.0 {
            return bad(
                "model.video_width",
                "width multipliers must be positive".into(),
            );
        }
        if self.sampler.crop == 0 || self.sampler.num_frames == 0 {
            return bad(
                "sampler.crop",
                "crop and num_frames must be positive".into(),
            );
        }
        if self.sampler.min_scale > self.sampler.max_scale
            || self.sampler.min_scale < self.sampler.crop
        {
            return bad(
                "sampler.min_scale",
                format!(
                    "need crop <= min_scale <= max_scale, got crop {} min {} max {}",
                    self.sampler.crop, self.sampler.min_scale, self.sampler.max_scale
                ),
            );
        }
        if !(self.probe.few_shot_ratio > 0.0 && self.probe.few_shot_ratio <= 1.0) {
            return bad(
                "probe.few_shot_ratio",
                format!("must be in (0, 1], got {}", self.probe.few_shot_ratio),
            );
        }
        if !["adam", "adamw", "sgd"].contains(&self.finetune.optimizer.as_str()) {
            return bad(
                "finetune.optimizer",
                format!(
                    "expected adam, adamw or sgd, got {:?}",
                    self.finetune.optimizer
                ),
            );
        }
        if !(0.0..1.0).contains(&self.finetune.dropout) {
            return bad(
                "finetune.dropout",
                format!("must be in [0, 1), got {}", self.finetune.dropout),
            );
        }
        if self.finetune.batch_size < 2 {
            return bad(
                "finetune.batch_size",
                "must be at least 2 (BatchNorm needs a batch)".into(),
            );
        }
        if !matches!(self.finetune.head_init.as_str(), "probe" | "random") {
            return bad(
                "finetune.head_init",
                format!("must be probe or random, got {:?}", self.finetune.head_init),
            );
        }
        if !matches!(self.probe.protocol.as_str(), "auto" | "pair" | "clip") {
            return bad(
                "probe.protocol",
                format!("must be auto, pair or clip, got {:?}", self.probe.protocol),
            );
        }
        if !self.probe.manifest.is_empty() && self.probe.data_root.is_empty() {
            return bad(
                "probe.data_root",
                format!(
                    "probe.manifest = {:?} needs the data root its paths are relative to",
                    self.probe.manifest
                ),
            );
        }
        if self.probe.batch_size == 0 || self.probe.epochs == 0 {
            return bad(
                "probe.batch_size",
                "probe batch size and epochs must be positive".into(),
            );
        }
        if self.data.source == "synthetic" {
            if let Err(e) = self.synthetic.validate() {
                return bad("synthetic", e.to_string());
            }
            if self.synthetic.train_videos() == 0 || self.synthetic.val_videos == 0 {
                return bad(
                    "synthetic.val_videos",
                    "need at least one training and one validation video".into(),
                );
            }
        }
        Ok(())
    }
}

fn defaults_value() -> Result<toml::Table, TrainError> {
    toml::Table::try_from(Config::default()).map_err(|e| TrainError::Config {
        what: "defaults".into(),
        msg: e.to_string(),
    })
}

/// Every dotted leaf key of a table (tables are recursed into, arrays are leaves).
pub fn leaf_keys(table: &toml::Table) -> Vec<String> {
    fn walk(t: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in t {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(sub) => walk(sub, &key, out),
                _ => out.push(key),
            }
        }
    }
    let mut out = Vec::new();
    walk(table, "", &mut out);
    out
}

/// All dotted keys a configuration accepts.
pub fn known_keys() -> Vec<String> {
    defaults_value().map(|t| leaf_keys(&t)).unwrap_or_default()
}

/// Levenshtein distance over chars (small strings only: config keys).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The known key closest to `key`: by edit distance on the full dotted path, with a match on the
/// last component (e.g. `lr` -> `optim.lr`) preferred when the full path is far off.
pub fn suggest_key(key: &str, known: &[String]) -> Option<String> {
    let last = key.rsplit('.').next().unwrap_or(key);
    let mut best: Option<(usize, &String)> = None;
    for k in known {
        let full = edit_distance(key, k);
        let k_last = k.rsplit('.').next().unwrap_or(k);
        let tail = edit_distance(last, k_last);
        let d = full.min(tail + 1);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    let limit = (key.len() / 2).max(2);
    best.filter(|(d, _)| *d <= limit).map(|(_, k)| k.clone())
}

fn unknown_key(key: &str, origin: &str) -> TrainError {
    let known = known_keys();
    TrainError::UnknownKey {
        key: key.into(),
        origin: origin.into(),
        suggestion: suggest_key(key, &known),
    }
}

fn merge_table(
    dst: &mut toml::Table,
    src: &toml::Table,
    prefix: &str,
    origin: &str,
) -> Result<(), TrainError> {
    for (k, v) in src {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let Some(slot) = dst.get_mut(k) else {
            return Err(unknown_key(&key, origin));
        };
        match (slot, v) {
            (toml::Value::Table(d), toml::Value::Table(s)) => merge_table(d, s, &key, origin)?,
            (toml::Value::Table(_), _) => {
                return Err(TrainError::Config {
                    what: format!("{origin}: {key}"),
                    msg: "is a section; expected a [table]".into(),
                })
            }
            (slot, v) => {
                *slot = coerce(slot, v.clone()).ok_or_else(|| TrainError::Config {
                    what: format!("{origin}: {key}"),
                    msg: format!("expected {}, got {}", slot.type_str(), v.type_str()),
                })?;
            }
        }
    }
    Ok(())
}

/// Accepts a value of the same type, or an integer where a float is expected.
fn coerce(existing: &toml::Value, v: toml::Value) -> Option<toml::Value> {
    match (existing, v) {
        (toml::Value::Float(_), toml::Value::Integer(i)) => Some(toml::Value::Float(i as f64)),
        (e, v) if std::mem::discriminant(e) == std::mem::discriminant(&v) => Some(v),
        _ => None,
    }
}

/// Applies one `dotted.key=value` override, parsing `value` according to the existing type.
pub fn apply_override(table: &mut toml::Table, ov: &str) -> Result<(), TrainError> {
    let origin = "command line";
    let Some((key, raw)) = ov.split_once('=') else {
        return Err(TrainError::Config {
            what: format!("override {ov:?}"),
            msg: "expected key=value".into(),
        });
    };
    let key = key.trim();
    let raw = raw.trim();
    let mut parts = key.split('.').peekable();
    let mut cur = table;
    loop {
        let Some(part) = parts.next() else {
            return Err(unknown_key(key, origin));
        };
        let last = parts.peek().is_none();
        let Some(slot) = cur.get_mut(part) else {
            return Err(unknown_key(key, origin));
        };
        if last {
            if slot.is_table() {
                return Err(TrainError::Config {
                    what: format!("override {key}"),
                    msg: "names a section, not a value; use section.key=value".into(),
                });
            }
            *slot = parse_typed(slot, raw).map_err(|msg| TrainError::Config {
                what: format!("override {key}={raw}"),
                msg,
            })?;
            return Ok(());
        }
        match slot {
            toml::Value::Table(t) => cur = t,
            _ => return Err(unknown_key(key, origin)),
        }
    }
}

fn parse_typed(existing: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    match existing {
        toml::Value::String(_) => {
            // Accept both bare and quoted strings.
            let s = raw
                .strip_prefix('"')
                .and_then(|r| r.strip_suffix('"'))
                .unwrap_or(raw);
            Ok(toml::Value::String(s.into()))
        }
        toml::Value::Integer(_) => raw
            .replace('_', "")
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("expected an integer, got {raw:?}")),
        toml::Value::Float(_) => raw
            .parse::<f64>()
            .map(toml::Value::Float)
            .map_err(|_| format!("expected a number, got {raw:?}")),
        toml::Value::Boolean(_) => match raw {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        toml::Value::Array(items) => {
            let doc = format!("v = {raw}");
            let parsed: toml::Table = toml::from_str(&doc)
                .map_err(|_| format!("expected a TOML array like [1, 2], got {raw:?}"))?;
            let v = parsed.get("v").cloned().ok_or("empty value")?;
            let toml::Value::Array(new) = v else {
                return Err(format!("expected a TOML array like [1, 2], got {raw:?}"));
            };
            // Type the elements by the defaults' first element when there is one.
            if let Some(first) = items.first() {
                let mut out = Vec::with_capacity(new.len());
                for e in new {
                    out.push(coerce(first, e.clone()).ok_or_else(|| {
                        format!(
                            "array elements must be {}, got {}",
                            first.type_str(),
                            e.type_str()
                        )
                    })?);
                }
                Ok(toml::Value::Array(out))
            } else {
                Ok(toml::Value::Array(new))
            }
        }
        other => Err(format!("cannot override a {} value", other.type_str())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(ovs: &[&str]) -> Result<Config, TrainError> {
        let ovs: Vec<String> = ovs.iter().map(|s| s.to_string()).collect();
        Config::load(None, &ovs)
    }

    #[test]
    fn overrides_are_typed_by_existing_value() {
        let cfg = load(&[
            "optim.lr=0.1",
            "optim.epochs=3",
            "probe.bn_train_mode=true",
            "run.name=abc",
            "optim.milestones=[2, 4]",
            "method.avc_weight=1",
        ])
        .expect("valid overrides");
        assert_eq!(cfg.optim.lr, 0.1);
        assert_eq!(cfg.optim.epochs, 3);
        assert!(cfg.probe.bn_train_mode);
        assert_eq!(cfg.run.name, "abc");
        assert_eq!(cfg.optim.milestones, vec![2, 4]);
        assert_eq!(cfg.method.avc_weight, 1.0);
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = load(&["optim.epochs=three"]).expect_err("not an integer");
        assert!(err.to_string().contains("integer"), "{err}");
        let err = load(&["probe.bn_train_mode=maybe"]).expect_err("not a bool");
        assert!(err.to_string().contains("true or false"), "{err}");
    }

    #[test]
    fn unknown_key_suggests_closest() {
        let err = load(&["optim.lrr=0.1"]).expect_err("typo");
        match err {
            TrainError::UnknownKey {
                key, suggestion, ..
            } => {
                assert_eq!(key, "optim.lrr");
                assert_eq!(suggestion.as_deref(), Some("optim.lr"));
            }
            other => panic!("unexpected error {other}"),
        }
        let err = load(&["optim.batchsize=4"]).expect_err("typo");
        assert!(err.to_string().contains("optim.batch_size"), "{err}");
        // A bare last component still finds its section.
        assert_eq!(
            suggest_key("epochs", &known_keys())
                .as_deref()
                .map(|s| s.ends_with("epochs")),
            Some(true)
        );
        // Nonsense gets no suggestion.
        assert_eq!(suggest_key("zzzzzzzzzzzzzzzz", &known_keys()), None);
    }

    #[test]
    fn file_keys_are_checked_and_merged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "[optim]\nlr = 1\nepochs = 5\n[method]\nname = \"vicreg\"\n",
        )
        .expect("write");
        let cfg = Config::load(Some(&p), &["optim.epochs=7".into()]).expect("load");
        assert_eq!(cfg.optim.lr, 1.0);
        assert_eq!(cfg.optim.epochs, 7, "command line wins over file");
        assert_eq!(cfg.method.name, "vicreg");
        std::fs::write(&p, "[optim]\nmomentun = 0.5\n").expect("write");
        let err = Config::load(Some(&p), &[]).expect_err("typo in file");
        assert!(err.to_string().contains("optim.momentum"), "{err}");
        assert!(err.to_string().contains("c.toml"), "{err}");
    }

    #[test]
    fn resolved_config_round_trips() {
        let cfg = load(&["optim.lr=0.25", "probe.unseen_verbs=[1, 3]"]).expect("valid");
        let text = cfg.to_toml().expect("serialise");
        let back = Config::from_toml_str(&text, "config.toml").expect("parse back");
        assert_eq!(cfg, back);
    }

    #[test]
    fn validation_rejects_bad_values() {
        assert!(load(&["method.name=simclr"]).is_err());
        assert!(load(&["optim.batch_size=1"]).is_err());
        assert!(load(&["sampler.moments=peaks"]).is_err());
        assert!(load(&["probe.few_shot_ratio=0"]).is_err());
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
