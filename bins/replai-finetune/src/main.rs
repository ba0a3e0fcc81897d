//! `replai-finetune`: full fine-tuning of a pretrained (or randomly initialised) video encoder
//! with a dropout + linear verb/noun classifier, classifier-only warm-up first, evaluated at
//! video level on the synthetic world's held-out videos or on a dataset manifest's split.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use av_train::finetune::finetune;
use av_train::pipeline::{eval_world, format_metrics, probe_data, DatasetChoice};
use av_train::probe::metrics_json;
use av_train::Config;
use clap::Parser;

/// Full fine-tuning; `key=value` arguments override config keys (section `finetune`).
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Examples:\n  replai-finetune --checkpoint runs/synthetic\n  replai-finetune --random finetune.epochs=4"
)]
struct Args {
    /// Pretrained checkpoint: run directory, state `.json` or weights file.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Start from the random initialisation instead.
    #[arg(long)]
    random: bool,
    /// Config; defaults to the pretraining run's `config.toml`, else the built-in defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Output directory (default: `<run>/finetune` or `runs/finetune-random`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue an interrupted fine-tuning run in `--out`.
    #[arg(long)]
    resume: bool,
    /// Dataset manifest of the labelled data (default: the synthetic world's interactions).
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Data root the manifest's paths are relative to.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Manifest split trained on (default `train`).
    #[arg(long)]
    train_split: Option<String>,
    /// Manifest split evaluated (default `validation`, else `test`).
    #[arg(long)]
    eval_split: Option<String>,
    /// `clip`, `pair` or `auto` (see `replai-linear-eval --help`).
    #[arg(long)]
    protocol: Option<String>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Config overrides, `section.key=value`.
    overrides: Vec<String>,
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
        anyhow::bail!("give --checkpoint <run dir | state .json | weights> or --random");
    }
    let run = args
        .checkpoint
        .as_deref()
        .filter(|p| p.is_dir() && p.join("config.toml").is_file())
        .map(Path::to_path_buf);
    let config_path = args
        .config
        .clone()
        .or_else(|| run.as_ref().map(|r| r.join("config.toml")));
    let mut overrides = vec![format!(
        "model.resume={}",
        if args.resume { "auto" } else { "" }
    )];
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
    overrides.extend(args.overrides.iter().cloned());
    let mut cfg =
        Config::load(config_path.as_deref(), &overrides).context("loading the configuration")?;
    // Reuse the pretraining run's cached probe features (LP-FT initialisation).
    if cfg.probe.cache_dir.is_empty() {
        if let Some(r) = &run {
            cfg.probe.cache_dir = r.join("features").display().to_string();
        }
    }
    let out = args.out.clone().unwrap_or_else(|| match &run {
        Some(r) if !args.random => r.join("finetune"),
        _ => PathBuf::from(&cfg.run.out_dir).join("finetune-random"),
    });
    let world = eval_world(&cfg)?;
    let data = probe_data(&cfg, world.as_ref())?;
    let init = if args.random {
        None
    } else {
        args.checkpoint.as_deref()
    };
    let res = finetune(&cfg, init, &data, &out, args.quiet).context("fine-tuning failed")?;
    println!(
        "fine-tuned ({} epochs this run): {}",
        res.epoch_losses.len(),
        format_metrics(&res.metrics)
    );
    let json = serde_json::json!({ "finetune": metrics_json(&res.metrics), "epoch_losses": res.epoch_losses, "init": args.checkpoint });
    let path = out.join("finetune.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "results: {}; checkpoint: {}",
        path.display(),
        res.checkpoint.display()
    );
    Ok(())
}
