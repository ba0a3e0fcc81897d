//! End-to-end entry points used by the binaries and the example: pretrain then probe, and
//! probe a checkpoint (or random init) with a run's configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::error::TrainError;
use crate::model::{video_config, VideoEncoder};
use crate::pretrain::{pretrain, select_device, PretrainOutcome};
use crate::probe::{metrics_json, run_probe, ProbeData, ProbeMetrics};

/// Result of `replai-pretrain`.
#[derive(Debug, Clone)]
pub struct PretrainReport {
    /// Pretraining summary.
    pub pretrain: PretrainOutcome,
    /// Probe of the pretrained encoder (None when the probe is disabled or data is not synthetic).
    pub pretrained: Option<ProbeMetrics>,
    /// Probe of the randomly initialised encoder (the network pretraining started from).
    pub random: Option<ProbeMetrics>,
    /// Seconds spent generating the world.
    pub world_s: f64,
    /// Seconds spent probing (both encoders).
    pub probe_s: f64,
    /// Total wall-clock seconds.
    pub total_s: f64,
    /// `probe.json` path when written.
    pub probe_json: Option<PathBuf>,
}

/// The synthetic world of a config, when it uses one.
pub fn world_for(cfg: &Config) -> Result<Option<Arc<av_synth::World>>, TrainError> {
    if cfg.data.source == "synthetic" {
        Ok(Some(crate::data::synthetic_world(cfg)?))
    } else {
        Ok(None)
    }
}

/// Probe data for a config: the labelled dataset of `probe.manifest` when set, else the
/// synthetic world's labelled interactions.
pub fn probe_data(
    cfg: &Config,
    world: Option<&Arc<av_synth::World>>,
) -> Result<ProbeData, TrainError> {
    if !cfg.probe.manifest.is_empty() {
        return crate::labelled::manifest_probe_data(cfg);
    }
    match world {
        Some(w) => {
            let mut d = ProbeData::synthetic(w);
            if cfg.probe.protocol == "clip" {
                d.protocol = crate::views::Protocol::Clip;
            }
            Ok(d)
        }
        None => Err(TrainError::Config {
            what: "probe.manifest".into(),
            msg: format!(
                "data source {:?} has no labels: give a dataset manifest (probe.manifest and probe.data_root, or --manifest/--root)",
                cfg.data.source
            ),
        }),
    }
}

/// The labelled dataset the evaluation binaries' `--manifest`, `--root`, `--train-split`,
/// `--eval-split` and `--protocol` flags select, as `probe.*` config overrides.
#[derive(Debug, Clone, Default)]
pub struct DatasetChoice {
    /// Dataset manifest (TOML).
    pub manifest: Option<PathBuf>,
    /// Data root.
    pub root: Option<PathBuf>,
    /// Training split name.
    pub train_split: Option<String>,
    /// Evaluation split name.
    pub eval_split: Option<String>,
    /// `pair`, `clip` or `auto`.
    pub protocol: Option<String>,
}

impl DatasetChoice {
    /// The overrides, in the order the flags name them.
    pub fn overrides(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(m) = &self.manifest {
            out.push(format!("probe.manifest={}", m.display()));
        }
        if let Some(r) = &self.root {
            out.push(format!("probe.data_root={}", r.display()));
        }
        for (key, v) in [
            ("train_split", &self.train_split),
            ("eval_split", &self.eval_split),
            ("protocol", &self.protocol),
        ] {
            if let Some(v) = v {
                out.push(format!("probe.{key}={v}"));
            }
        }
        out
    }
}

/// The synthetic world, unless the labelled data come from a manifest (then nothing is rendered).
pub fn eval_world(cfg: &Config) -> Result<Option<Arc<av_synth::World>>, TrainError> {
    if cfg.probe.manifest.is_empty() {
        world_for(cfg)
    } else {
        Ok(None)
    }
}

/// Feature cache directory of a run.
pub fn cache_dir(cfg: &Config, run_dir: &Path) -> PathBuf {
    if cfg.probe.cache_dir.is_empty() {
        run_dir.join("features")
    } else {
        PathBuf::from(&cfg.probe.cache_dir)
    }
}

/// Probes the encoder in `checkpoint` (a run directory, state JSON or weights file), or the
/// random initialisation of `cfg.run.seed` when `None`. Confusion matrices go to `out_dir`.
pub fn probe_encoder(
    cfg: &Config,
    checkpoint: Option<&Path>,
    data: &ProbeData,
    cache: Option<&Path>,
    out_dir: Option<&Path>,
) -> Result<ProbeMetrics, TrainError> {
    let device = select_device(&cfg.run.device)?;
    let vc = video_config(cfg);
    let (enc, label) = match checkpoint {
        Some(p) => (VideoEncoder::load(&vc, p, &device)?, "pretrained"),
        None => (VideoEncoder::random(&vc, cfg.run.seed, &device)?, "random"),
    };
    tracing::info!("probing {}", enc.origin);
    run_probe(&enc, data, cfg, cache, out_dir, label)
}

/// Pretrains, then (synthetic data, `run.probe_after`) probes the pretrained and the random-init
/// encoders and writes `probe.json` into the run directory.
pub fn pretrain_and_probe(
    cfg: &Config,
    run_dir: &Path,
    quiet: bool,
) -> Result<PretrainReport, TrainError> {
    let t0 = Instant::now();
    let world = world_for(cfg)?;
    let world_s = t0.elapsed().as_secs_f64();
    let outcome = pretrain(cfg, run_dir, world.as_ref(), quiet)?;
    let mut report = PretrainReport {
        pretrain: outcome,
        pretrained: None,
        random: None,
        world_s,
        probe_s: 0.0,
        total_s: 0.0,
        probe_json: None,
    };
    if cfg.run.probe_after && (world.is_some() || !cfg.probe.manifest.is_empty()) {
        let tp = Instant::now();
        let data = probe_data(cfg, world.as_ref())?;
        let cache = cache_dir(cfg, run_dir);
        let out = run_dir.join("probe");
        let pre = probe_encoder(
            cfg,
            Some(&report.pretrain.weights),
            &data,
            Some(&cache),
            Some(&out),
        )?;
        let rnd = probe_encoder(cfg, None, &data, Some(&cache), Some(&out))?;
        let json = serde_json::json!({
            "pretrained": metrics_json(&pre),
            "random": metrics_json(&rnd),
            "weights": report.pretrain.weights.display().to_string(),
            "seed": cfg.run.seed,
        });
        let path = run_dir.join("probe.json");
        let text = serde_json::to_vec_pretty(&json)
            .map_err(|e| TrainError::other("serialising probe.json", e))?;
        crate::checkpoint::atomic_write(&path, &text)?;
        report.pretrained = Some(pre);
        report.random = Some(rnd);
        report.probe_json = Some(path);
        report.probe_s = tp.elapsed().as_secs_f64();
    }
    report.total_s = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// One line per head: `verb top-1 xx.x top-5 xx.x (clip top-1 xx.x) | noun ...` (single-label
/// datasets: `label top-1 ...`).
pub fn format_metrics(m: &ProbeMetrics) -> String {
    let head = |name: &str, h: &crate::probe::HeadMetrics| {
        format!(
            "{name} top-1 {:5.1} top-5 {:5.1} (clip {:5.1})",
            h.top1, h.top5, h.clip_top1
        )
    };
    match &m.noun {
        Some(n) => format!("{} | {}", head("verb", &m.verb), head("noun", n)),
        None => head("label", &m.verb),
    }
}
