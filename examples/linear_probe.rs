//! Linear probe through the library API: a frozen video encoder (a checkpoint, or random init),
//! features of the synthetic world's labelled interactions, linear verb/noun heads, top-1/top-5.
//!
//! ```text
//! cargo run --release --example linear_probe                          # random init
//! cargo run --release --example linear_probe -- runs/synthetic        # a pretraining run
//! cargo run --release --example linear_probe -- runs/synthetic probe.epochs=10
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use replai::train::model::{video_config, VideoEncoder};
use replai::train::pretrain::select_device;
use replai::train::probe::{probe_features, train_and_evaluate, ProbeData};
use replai::train::Config;

fn main() -> Result<()> {
    // Optional first argument: a checkpoint (run directory, state .json, or weights file);
    // the rest are `section.key=value` config overrides.
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let checkpoint = match args.first() {
        Some(a) if !a.contains('=') => Some(PathBuf::from(args.remove(0))),
        _ => None,
    };
    // A run directory carries the config it was trained with (encoder width, clip size, world).
    let saved = checkpoint
        .as_deref()
        .map(|p| p.join("config.toml"))
        .filter(|p| p.is_file());
    let cfg = Config::load(saved.as_deref(), &args).context("loading the configuration")?;

    // The built-in synthetic world: train-split interactions train the probe, held-out videos test it.
    let world = replai::train::data::synthetic_world(&cfg)?;
    let data = ProbeData::synthetic(&world);
    println!(
        "{} training / {} evaluation interactions",
        data.train.segments.len(),
        data.val.segments.len()
    );

    let device = select_device(&cfg.run.device)?;
    let encoder = match checkpoint.as_deref() {
        Some(p) => VideoEncoder::load(&video_config(&cfg), p, &device)?,
        None => VideoEncoder::random(&video_config(&cfg), cfg.run.seed, &device)?,
    };
    println!(
        "encoder: {} ({}-d clip features)",
        encoder.origin,
        encoder.out_dim()
    );

    // [f(before), f(after)] per view; no cache directory here, so features are always recomputed.
    let features = probe_features(&encoder, &data, &cfg, None::<&Path>)?;
    let m = train_and_evaluate(
        &features,
        data.n_verbs,
        data.n_nouns,
        &cfg.probe,
        cfg.run.seed,
        &device,
    )?;

    println!("verb: top-1 {:.1}%  top-5 {:.1}%", m.verb.top1, m.verb.top5);
    if let Some(noun) = &m.noun {
        println!("noun: top-1 {:.1}%  top-5 {:.1}%", noun.top1, noun.top5);
    }
    Ok(())
}
