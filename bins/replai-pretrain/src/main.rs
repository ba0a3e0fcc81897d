//! `replai-pretrain`: self-supervised pretraining (RepLAI, xID, VICReg).
//!
//! With no arguments it pretrains on the built-in synthetic world with small encoders, then
//! probes the pretrained and a randomly initialised encoder on the world's labelled interactions
//! and writes `probe.json` into the run directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use av_train::pipeline::{format_metrics, pretrain_and_probe};
use av_train::pretrain::run_dir;
use av_train::Config;
use clap::Parser;

/// Self-supervised audio-visual pretraining; `key=value` arguments override config keys.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Examples:\n  replai-pretrain\n  replai-pretrain --config configs/synthetic.toml optim.epochs=4 method.astc_weight=0\n  replai-pretrain --config configs/epic-kitchens-100.toml data.root=/datasets/epic/segments"
)]
struct Args {
    /// TOML config (defaults: the tiny synthetic run, see configs/synthetic.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Resume this run from its latest checkpoint (same as model.resume=auto).
    #[arg(long)]
    resume: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Print every config key with its default and exit.
    #[arg(long)]
    list_keys: bool,
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
    if args.list_keys {
        print!("{}", Config::default().to_toml()?);
        return Ok(());
    }
    let mut overrides = args.overrides.clone();
    if args.resume {
        overrides.push("model.resume=auto".into());
    }
    let cfg =
        Config::load(args.config.as_deref(), &overrides).context("loading the configuration")?;
    let dir = run_dir(&cfg);
    eprintln!(
        "replai-pretrain: method {}, {} epochs, batch {}, data {}, run directory {}",
        cfg.method.name,
        cfg.optim.epochs,
        cfg.optim.batch_size,
        cfg.data.source,
        dir.display()
    );
    let report = pretrain_and_probe(&cfg, &dir, args.quiet).context("pretraining failed")?;
    let p = &report.pretrain;
    println!(
        "pretrained {} steps in {:.1} s ({:.1}% waiting for data, {} bad samples replaced); final loss {:.4}",
        p.steps,
        p.train_s,
        100.0 * p.idle_fraction,
        p.bad_samples,
        p.losses.last().copied().unwrap_or(f64::NAN)
    );
    for r in &p.bad_reasons {
        println!("  skipped: {r}");
    }
    if let (Some(pre), Some(rnd)) = (&report.pretrained, &report.random) {
        println!("linear probe on the synthetic world's held-out videos (top-1/top-5, %):");
        println!("  pretrained  {}", format_metrics(pre));
        println!("  random init {}", format_metrics(rnd));
        println!(
            "  verb top-1 gain over random init: {:+.1} points",
            pre.verb.top1 - rnd.verb.top1
        );
    }
    if let Some(j) = &report.probe_json {
        println!("probe results: {}", j.display());
    }
    println!("checkpoint: {}", p.weights.display());
    println!(
        "run directory: {} (total {:.1} s)",
        dir.display(),
        report.total_s
    );
    Ok(())
}
