//! Throughput of the training loader (`EpochLoader`) with 0, 1, 2, ... worker threads, each
//! building full RepLAI samples (two 8-frame 112 px clips + 2 s of audio -> log-mel) from the
//! bench media of `av_video::bench_media`: the GOP 30 MP4 with the `ffmpeg` feature, the frame
//! folder without it. With W workers on at least W free cores, samples per second should grow
//! close to W-fold (see docs/performance/video.md).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;

use av_train::loader::{Dataset, EpochLoader, LoaderConfig, LoaderStats};
use av_video::{bench_media::BenchMedia, open_source, ReplaiSample, ReplaiSampler, SamplerConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use moi_detect::Moment;
use rand_chacha::ChaCha8Rng;

/// `len` samples drawn from one file, the way `PretrainDataset` draws them from many: open the
/// source per item, pick a cached moment, build the sample.
struct OneFile {
    path: PathBuf,
    sampler: ReplaiSampler,
    moments: Vec<Moment>,
    len: usize,
}

impl Dataset for OneFile {
    type Item = ReplaiSample;
    type Batch = usize;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, _index: usize, rng: &mut ChaCha8Rng) -> Result<ReplaiSample, String> {
        let mut src = open_source(&self.path).map_err(|e| e.to_string())?;
        self.sampler
            .sample(src.as_mut(), &self.moments, rng, true)
            .map_err(|e| e.to_string())
    }

    fn collate(&self, items: Vec<ReplaiSample>) -> Result<usize, String> {
        Ok(items.len())
    }
}

const BATCH: usize = 4;
/// Enough batches that thread start-up and the last batch's tail are a small part of the time.
const BATCHES: usize = 16;

fn benches(c: &mut Criterion) {
    // As the training binaries do.
    av_audio::mem::keep_freed_memory();
    let media = BenchMedia::ensure().expect("bench media (needs the ffmpeg CLI)");
    let (name, path) = if cfg!(feature = "ffmpeg") {
        ("mp4_gop30", media.gop30)
    } else {
        ("frame_folder", media.frames16)
    };
    let sampler = ReplaiSampler::new(SamplerConfig::default()).expect("default config");
    let moments = {
        let mut src = open_source(&path).expect("open bench media");
        sampler.moments(src.as_mut()).expect("moments")
    };
    let ds = Arc::new(OneFile {
        path,
        sampler,
        moments,
        len: BATCH * BATCHES,
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group(format!("loader_{name}"));
    group.sample_size(10);
    group.throughput(Throughput::Elements((BATCH * BATCHES) as u64));
    for workers in 0..=cores {
        let cfg = LoaderConfig {
            workers,
            prefetch: 2 * workers.max(1),
            batch_size: BATCH,
            seed: 0,
            shuffle: true,
            max_retries: 3,
        };
        let mut epoch = 0;
        group.bench_function(format!("workers_{workers}"), |b| {
            b.iter(|| {
                epoch += 1;
                let stats = Arc::new(LoaderStats::default());
                let loader = EpochLoader::new(ds.clone(), cfg, epoch, 0, stats.clone());
                let mut n = 0;
                for batch in loader {
                    n += batch.expect("batch").data;
                }
                assert_eq!(n, BATCH * BATCHES);
                assert_eq!(
                    stats.bad(),
                    0,
                    "bad samples: {:?}",
                    stats.reasons.lock().map(|r| r.clone()).unwrap_or_default()
                );
            })
        });
    }
    group.finish();
}

criterion_group!(loader_benches, benches);
criterion_main!(loader_benches);
