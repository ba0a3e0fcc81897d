//! Samples per second of the full RepLAI sample (two 8-frame 112 px clips + 2 s of audio ->
//! log-mel), one thread, from a 640x480 30 fps MP4 with GOP 30 and GOP 250 (feature `ffmpeg`)
//! and from a frame folder extracted at 16 fps. Each iteration opens the source (as a data
//! loader does per item) and samples the next cached moment (cycling through them).
//!
//! The media are generated into `$TMPDIR/av_video_bench` with the ffmpeg CLI on first run
//! ([`av_video::bench_media`]).
//! Compare with `benches/pyav_reference.py` (see docs/performance/video.md).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::Path;

use av_video::{bench_media, open_source, seeded_rng, ReplaiSampler, SamplerConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_source(c: &mut Criterion, name: &str, path: &Path) {
    let sampler = ReplaiSampler::new(SamplerConfig::default()).expect("default config");
    let moments = {
        let mut src = open_source(path).expect("open bench media");
        sampler.moments(src.as_mut()).expect("moments")
    };
    assert!(!moments.is_empty(), "{name}: no moments in the bench media");
    // The PyAV script takes the same moments (`--moments`), so both sides decode from the
    // same keyframe distances: at GOP 250 these dominate the cost of a sample.
    let times: Vec<String> = moments.iter().map(|m| format!("{:.3}", m.time_s)).collect();
    eprintln!("{name}: moments (s) {}", times.join(","));
    let mut group = c.benchmark_group("replai_sample");
    group.throughput(Throughput::Elements(1));
    // Iterations cycle through the moments in order (`pyav_reference.py --cycle` does the same):
    // at GOP 250 a moment's cost depends on its distance to the keyframe (30-170 ms here), and
    // drawing moments at random added several percent of sampling noise to the mean.
    let mut i = 0usize;
    group.bench_function(name, |b| {
        b.iter(|| {
            i += 1;
            let mut rng = seeded_rng(i as u64);
            let moment = [moments[i % moments.len()]];
            let mut src = open_source(path).expect("open");
            sampler
                .sample(src.as_mut(), &moment, &mut rng, true)
                .expect("sample")
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    // As the training binaries do (`REPLAI_RETURN_MEMORY=1` measures without it).
    let kept = av_audio::mem::keep_freed_memory();
    eprintln!("freed memory kept for reuse: {kept}");
    let media = bench_media::BenchMedia::ensure().expect("bench media");
    #[cfg(feature = "ffmpeg")]
    {
        bench_source(c, "mp4_gop30", &media.gop30);
        bench_source(c, "mp4_gop250", &media.gop250);
    }
    bench_source(c, "frame_folder", &media.frames16);
}

criterion_group!(sampler_benches, benches);
criterion_main!(sampler_benches);
