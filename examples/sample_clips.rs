//! Shows what the RepLAI sampler feeds the encoders: the moments of interaction found in a video
//! and the before/after clips of one sample, written as PNG strips.
//!
//! ```text
//! cargo run --example sample_clips --features ffmpeg -- FILE.mp4 [--seed 0] [--out sample_clips] [--eval]
//! ```
//!
//! Writes `OUT/before.png` and `OUT/after.png` (the clip's frames side by side, de-normalised)
//! and `OUT/audio.png` (the 125x80 log-mel input, time left to right, low mels at the bottom).

use std::path::PathBuf;

use anyhow::{Context, Result};
use av_video::{open_source, ClipSpec, ReplaiSampler, SamplerConfig};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Print the moments of a video and write one RepLAI sample as PNG strips")]
struct Args {
    /// Video file (MP4 etc.) or frame folder.
    input: PathBuf,
    /// Seed of the moment choice and augmentations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory.
    #[arg(long, default_value = "sample_clips")]
    out: PathBuf,
    /// Use the evaluation transform (centre crop, no flip) instead of the training one.
    #[arg(long)]
    eval: bool,
    /// Reproduce the reference's width/height swap (gotcha G1).
    #[arg(long)]
    compat_swap_wh: bool,
}

/// Turns one normalised `(3, T, S, S)` clip into an RGB strip `T*S` wide.
fn strip(clip: &[f32], spec: &ClipSpec) -> Result<image::RgbImage> {
    let (t, s) = (spec.num_frames, spec.crop as usize);
    let plane = s * s;
    let mut img = image::RgbImage::new((t * s) as u32, s as u32);
    for f in 0..t {
        for y in 0..s {
            for x in 0..s {
                let mut px = [0u8; 3];
                for (c, p) in px.iter_mut().enumerate() {
                    let v = clip[(c * t + f) * plane + y * s + x] * spec.std[c] + spec.mean[c];
                    *p = (v * 255.0).round().clamp(0.0, 255.0) as u8;
                }
                img.put_pixel((f * s + x) as u32, y as u32, image::Rgb(px));
            }
        }
    }
    Ok(img)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut cfg = SamplerConfig::default();
    cfg.clip.compat_swap_wh = args.compat_swap_wh;
    let sampler = ReplaiSampler::new(cfg).context("sampler configuration")?;
    let mut src =
        open_source(&args.input).with_context(|| format!("opening {}", args.input.display()))?;
    let m = src.meta().clone();
    println!(
        "{}: {}x{} at {:.3} fps, {} frames, {:.3} s, audio: {}",
        args.input.display(),
        m.width,
        m.height,
        m.fps,
        m.n_frames,
        m.duration_s,
        if m.has_audio { "yes" } else { "no" }
    );
    let moments = sampler.moments(src.as_mut()).context("moment detection")?;
    println!("{} valid moments of interaction:", moments.len());
    for mo in &moments {
        println!("  t = {:7.3} s  prominence {:.2}", mo.time_s, mo.prominence);
    }
    let mut rng = av_video::seeded_rng(args.seed);
    let sample = sampler
        .sample(src.as_mut(), &moments, &mut rng, !args.eval)
        .context("building a sample")?;
    let w = sampler.windows(sample.moment_s, m.duration_s);
    println!(
        "sample around t = {:.3} s: before [{:.3}, {:.3}] s, after [{:.3}, {:.3}] s, audio [{:.3}, {:.3}] s",
        sample.moment_s, w.before.0, w.before.1, w.after.0, w.after.1, w.audio.0, w.audio.1
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let spec = &sampler.config().clip;
    for (name, clip) in [
        ("before", &sample.video_before),
        ("after", &sample.video_after),
    ] {
        let path = args.out.join(format!("{name}.png"));
        strip(clip, spec)?
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    // Log-mel input: (125, 80) time-major; draw time along x, mel along y (low at the bottom).
    let (frames, mels) = (125usize, 80usize);
    let (lo, hi) = sample
        .audio
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let mut spec_img = image::GrayImage::new(frames as u32, mels as u32);
    for t in 0..frames {
        for f in 0..mels {
            let v = (sample.audio[t * mels + f] - lo) / (hi - lo).max(1e-6);
            spec_img.put_pixel(
                t as u32,
                (mels - 1 - f) as u32,
                image::Luma([(v * 255.0) as u8]),
            );
        }
    }
    let path = args.out.join("audio.png");
    spec_img
        .save(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}
