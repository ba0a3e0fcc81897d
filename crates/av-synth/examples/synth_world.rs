//! Generates the default synthetic world, reports how long it takes, and optionally exports it.
//!
//! ```text
//! cargo run --release -p av-synth --example synth_world                 # time generation only
//! cargo run --release -p av-synth --example synth_world -- out/world    # also export (PNG + WAV + CSV)
//! cargo run --release -p av-synth --example synth_world -- out/world n_videos=4 width=64 height=64
//! ```
//! Extra `key=value` arguments override fields of `WorldConfig` (values parsed as JSON).

use std::time::Instant;

use anyhow::Context;
use av_synth::{ExportOptions, World, WorldConfig};

fn main() -> anyhow::Result<()> {
    let mut out = None;
    let mut cfg_json = serde_json::to_value(WorldConfig::default())?;
    for arg in std::env::args().skip(1) {
        match arg.split_once('=') {
            Some((k, v)) => {
                let value: serde_json::Value = serde_json::from_str(v)
                    .with_context(|| format!("value of {k} is not valid JSON: {v}"))?;
                cfg_json[k] = value;
            }
            None => out = Some(arg),
        }
    }
    let cfg: WorldConfig = serde_json::from_value(cfg_json).context("bad world override")?;

    let t0 = Instant::now();
    let world = World::generate(&cfg)?;
    let gen_s = t0.elapsed().as_secs_f64();
    let frames: usize = world.videos().iter().map(|v| v.frames.len()).sum();
    let seconds: f64 = world.videos().iter().map(|v| v.duration_s()).sum();
    let interactions: usize = world.videos().iter().map(|v| v.interactions().len()).sum();
    let distractors: usize = world.videos().iter().map(|v| v.distractors().len()).sum();
    let bytes: usize = world
        .videos()
        .iter()
        .map(|v| v.frames.iter().map(|f| f.len()).sum::<usize>() + 4 * v.audio.len())
        .sum();
    println!(
        "{} videos, {seconds:.0} s of video ({frames} frames {}x{}), {interactions} interactions, \
         {distractors} distractors, {:.0} MB in memory; generated in {gen_s:.2} s on {} threads",
        world.len(),
        cfg.width,
        cfg.height,
        bytes as f64 / 1e6,
        rayon::current_num_threads()
    );
    if let Some(dir) = out {
        let t1 = Instant::now();
        let s = world.export(&dir, &ExportOptions::default())?;
        println!(
            "exported {} videos / {} frames / {} labelled interactions to {} in {:.2} s",
            s.videos,
            s.frames,
            s.interactions,
            s.root.display(),
            t1.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
