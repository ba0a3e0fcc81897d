//! Samples per second of the full RepLAI sample (two 8-frame 112 px clips + 2 s of audio ->
//! log-mel), one thread, from a 640x480 30 fps MP4 with GOP 30 and GOP 250 (feature `ffmpeg`)
//! and from a frame folder extracted at 16 fps. Each iteration opens the source (as a data
//! loader does per item) and samples a random cached moment.
//!
//! The media are generated into `$TMPDIR/av_video_bench` with the ffmpeg CLI on first run.
//! Compare with `benches/pyav_reference.py` (see docs/performance/video.md).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use av_video::{open_source, seeded_rng, ReplaiSampler, SamplerConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_dir() -> PathBuf {
    std::env::temp_dir().join("av_video_bench")
}

fn ffmpeg(args: &[&str]) {
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "ffmpeg {args:?} failed (is the ffmpeg CLI installed?)");
}

/// Audio with a click about every 0.9 s so that every segment has moments of interaction.
const AUDIO: &str = "aevalsrc=exprs='0.01*(random(0)-0.5)+0.8*sin(2*PI*2000*t)*lt(mod(t,0.9),0.01)|0.01*(random(1)-0.5)+0.4*sin(2*PI*2000*t)*lt(mod(t,0.9),0.01)':s=44100:d=10";

fn make_mp4(path: &Path, gop: u32) {
    if path.exists() {
        return;
    }
    let g = gop.to_string();
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=640x480:r=30:d=10",
        "-f",
        "lavfi",
        "-i",
        AUDIO,
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "23",
        "-pix_fmt",
        "yuv420p",
        "-g",
        &g,
        "-keyint_min",
        &g,
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-shortest",
        &path.to_string_lossy(),
    ]);
}

fn make_folder(dir: &Path, mp4: &Path) {
    if dir.join("meta.toml").exists() {
        return;
    }
    std::fs::create_dir_all(dir.join("frames")).expect("create frame folder");
    let pattern = dir.join("frames/%06d.jpg");
    ffmpeg(&[
        "-i",
        &mp4.to_string_lossy(),
        "-vf",
        "fps=16",
        "-q:v",
        "3",
        &pattern.to_string_lossy(),
    ]);
    let wav = dir.join("audio.wav");
    ffmpeg(&[
        "-i",
        &mp4.to_string_lossy(),
        "-vn",
        "-ac",
        "2",
        "-c:a",
        "pcm_s16le",
        &wav.to_string_lossy(),
    ]);
    std::fs::write(dir.join("meta.toml"), "fps = 16.0\naudio = \"audio.wav\"\n")
        .expect("write meta.toml");
}

fn bench_source(c: &mut Criterion, name: &str, path: &Path) {
    let sampler = ReplaiSampler::new(SamplerConfig::default()).expect("default config");
    let moments = {
        let mut src = open_source(path).expect("open bench media");
        sampler.moments(src.as_mut()).expect("moments")
    };
    assert!(!moments.is_empty(), "{name}: no moments in the bench media");
    let mut group = c.benchmark_group("replai_sample");
    group.throughput(Throughput::Elements(1));
    let mut seed = 0u64;
    group.bench_function(name, |b| {
        b.iter(|| {
            seed += 1;
            let mut rng = seeded_rng(seed);
            let mut src = open_source(path).expect("open");
            sampler
                .sample(src.as_mut(), &moments, &mut rng, true)
                .expect("sample")
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    // As the training binaries do (`REPLAI_RETURN_MEMORY=1` measures without it).
    let kept = av_audio::mem::keep_freed_memory();
    eprintln!("freed memory kept for reuse: {kept}");
    let dir = bench_dir();
    std::fs::create_dir_all(&dir).expect("bench dir");
    let gop30 = dir.join("gop30.mp4");
    let gop250 = dir.join("gop250.mp4");
    make_mp4(&gop30, 30);
    make_mp4(&gop250, 250);
    let folder = dir.join("frames16");
    make_folder(&folder, &gop30);
    #[cfg(feature = "ffmpeg")]
    {
        bench_source(c, "mp4_gop30", &gop30);
        bench_source(c, "mp4_gop250", &gop250);
    }
    bench_source(c, "frame_folder", &folder);
}

criterion_group!(sampler_benches, benches);
criterion_main!(sampler_benches);
