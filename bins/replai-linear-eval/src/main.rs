//! `replai-linear-eval`: linear probe of a frozen video encoder.
//!
//! Uses exactly the probe code of `replai-pretrain`, so probing a pretraining run's checkpoint
//! (or the random init, `--random`) with that run's config reproduces its `probe.json` numbers.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use av_train::labelled::seen_and_rest;
use av_train::pipeline::{
    cache_dir, eval_world, format_metrics, probe_data, probe_encoder, DatasetChoice,
};
use av_train::probe::{metrics_json, ProbeData};
use av_train::Config;
use clap::Parser;

/// Linear-probe evaluation; `key=value` arguments override config keys.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Examples:\n  replai-linear-eval --checkpoint runs/synthetic\n  replai-linear-eval --checkpoint runs/synthetic --random\n  replai-linear-eval --checkpoint runs/synthetic --few-shot-ratio 0.25 --unseen-verbs 0,1\n  replai-linear-eval --checkpoint runs/epic --manifest data-manifests/epic-kitchens-100/manifest.toml --root /datasets/epic-kitchens\n  replai-linear-eval --checkpoint avid.pth --manifest data-manifests/ucf101/manifest.toml --root /datasets/ucf101 --config configs/ucf101-linear.toml"
)]
struct Args {
    /// Checkpoint: a run directory, a checkpoint state `.json`, or a weights file
    /// (`.safetensors`, RepLAI/AVID `.pth`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Probe the random initialisation (of `run.seed`) instead of the checkpoint's weights.
    #[arg(long)]
    random: bool,
    /// Config; defaults to the run directory's `config.toml`, else the built-in defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Keep this fraction of training segments per class (concept generalisation / few-shot).
    #[arg(long)]
    few_shot_ratio: Option<f64>,
    /// Verb classes held out of probe training (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    unseen_verbs: Vec<usize>,
    /// Dataset manifest of the labelled data (default: the synthetic world's interactions).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Data root the manifest's paths are relative to.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Manifest split the classifier is trained on (default `train`).
    #[arg(long)]
    train_split: Option<String>,
    /// Manifest split evaluated (default `validation`, else `test`).
    #[arg(long)]
    eval_split: Option<String>,
    /// `clip` (one clip per view, the EPIC/UCF/HMDB protocol), `pair` (before/after) or `auto`.
    #[arg(long)]
    protocol: Option<String>,
    /// Concept generalisation (AV-SSRL): probe the seen classes and the manifest's rest classes
    /// (`files.rest_classes`) separately, each re-labelled from 0.
    #[arg(long)]
    rest_classes: bool,
    /// Where to write the results JSON and confusion matrices (default: next to the checkpoint).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Config overrides, `section.key=value`.
    overrides: Vec<String>,
}

fn run_dir_of(p: &Path) -> Option<PathBuf> {
    if p.is_dir() {
        if p.join("config.toml").is_file() {
            return Some(p.to_path_buf());
        }
        return p
            .parent()
            .filter(|d| d.join("config.toml").is_file())
            .map(Path::to_path_buf);
    }
    // <run>/checkpoints/<file>
    p.parent()
        .and_then(Path::parent)
        .filter(|d| d.join("config.toml").is_file())
        .map(Path::to_path_buf)
}

fn main() -> Result<()> {
    // Per-sample decoding frees and reallocates megabytes; keep them (see av_audio::mem).
    av_audio::mem::keep_freed_memory();
    // candle's elementwise pool spins between ops and takes a core from the conv workers.
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { av_models::limit_candle_spinning() };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.checkpoint.is_none() && !args.random {
        bail!("give --checkpoint <run dir | state .json | weights> or --random");
    }
    let run = args.checkpoint.as_deref().and_then(run_dir_of);
    let config_path = args
        .config
        .clone()
        .or_else(|| run.as_ref().map(|r| r.join("config.toml")));
    let mut overrides = args.overrides.clone();
    if let Some(r) = args.few_shot_ratio {
        overrides.push(format!("probe.few_shot_ratio={r}"));
    }
    if !args.unseen_verbs.is_empty() {
        let list: Vec<String> = args.unseen_verbs.iter().map(|v| v.to_string()).collect();
        overrides.push(format!("probe.unseen_verbs=[{}]", list.join(",")));
    }
    overrides.extend(
        DatasetChoice {
            manifest: args.manifest.clone(),
            root: args.root.clone(),
            train_split: args.train_split.clone(),
            eval_split: args.eval_split.clone(),
            protocol: args.protocol.clone(),
        }
        .overrides(),
    );
    if args.rest_classes {
        overrides.push("probe.rest_classes=true".into());
    }
    // A saved run config may itself ask to resume; evaluation never does.
    overrides.push("model.resume=".into());
    let cfg = Config::load(config_path.as_deref(), &overrides)
        .with_context(|| format!("loading the configuration {:?}", config_path))?;
    let out = args
        .out
        .clone()
        .or_else(|| run.clone())
        .unwrap_or_else(|| PathBuf::from("."));
    let world = eval_world(&cfg)?;
    let data = probe_data(&cfg, world.as_ref())?;
    let ckpt = if args.random {
        None
    } else {
        args.checkpoint.as_deref()
    };
    let label = if args.random { "random" } else { "pretrained" };
    let cache = cache_dir(&cfg, run.as_deref().unwrap_or(&out));
    // AV-SSRL concept generalisation: seen and rest classes as two problems; else one.
    let problems: Vec<(&str, ProbeData)> = if cfg.probe.rest_classes {
        let (seen, rest) = seen_and_rest(&data).context("rest-class evaluation")?;
        vec![("seen", seen), ("rest", rest)]
    } else {
        vec![("all", data)]
    };
    let mut results = serde_json::Map::new();
    for (group, data) in &problems {
        let conf_dir = match *group {
            "all" => out.join("linear_eval"),
            g => out.join("linear_eval").join(g),
        };
        let m = probe_encoder(&cfg, ckpt, data, Some(&cache), Some(&conf_dir))
            .with_context(|| format!("linear probe ({group} classes) failed"))?;
        let tag = if *group == "all" {
            label.to_string()
        } else {
            format!("{label} {group}")
        };
        println!("{tag:<10} {}", format_metrics(&m));
        let noun = m
            .noun
            .as_ref()
            .map(|n| format!(", noun {:.1}", n.mean_class_accuracy))
            .unwrap_or_default();
        println!(
            "mean per-class accuracy: {} {:.1}{noun}; {} training views, {} evaluation segments ({} views)",
            data.first_head, m.verb.mean_class_accuracy, m.counts[1], m.counts[2], m.counts[3]
        );
        results.insert(group.to_string(), metrics_json(&m));
    }
    let metrics = match results.remove("all") {
        Some(m) => m,
        None => serde_json::Value::Object(results),
    };
    let json =
        serde_json::json!({ label: metrics, "checkpoint": args.checkpoint, "config": config_path });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(format!("linear_eval_{label}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("results: {}", path.display());
    Ok(())
}
