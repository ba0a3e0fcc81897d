//! Multi-threaded batch loading that is deterministic for a seed and epoch whatever the number of
//! worker threads.
//!
//! An epoch is a permutation of `0..len` drawn from `(seed, epoch)`. Sample slot `s` of the epoch
//! is loaded with its own RNG seeded from `(seed, epoch, s, attempt)`, so augmentation does not
//! depend on which thread loads it. Batch `b` is built by worker `b % workers` and the consumer
//! reads the workers' queues round-robin, so batches arrive in order. Each worker's queue is a
//! bounded `sync_channel`, which caps memory at about `prefetch` batches in flight.
//!
//! A sample whose loading fails (an unreadable file, a video without a valid moment) is replaced by
//! another index chosen from the same deterministic stream; replacements are counted and the
//! first few reasons kept for the end-of-run report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::TrainError;

/// A source of training samples that can be loaded from any thread.
pub trait Dataset: Send + Sync + 'static {
    /// One loaded sample.
    type Item: Send + 'static;
    /// A collated batch.
    type Batch: Send + 'static;
    /// Number of samples per epoch.
    fn len(&self) -> usize;
    /// True when the dataset has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Loads sample `index` using `rng` for all randomness; `Err` skips it.
    fn get(&self, index: usize, rng: &mut ChaCha8Rng) -> Result<Self::Item, String>;
    /// Assembles samples (in batch order) into a batch.
    fn collate(&self, items: Vec<Self::Item>) -> Result<Self::Batch, String>;
}

/// Loader settings.
#[derive(Debug, Clone, Copy)]
pub struct LoaderConfig {
    /// Worker threads; 0 loads on the consumer's thread.
    pub workers: usize,
    /// Batches in flight across all workers.
    pub prefetch: usize,
    /// Samples per batch (incomplete last batches are dropped, as the reference does).
    pub batch_size: usize,
    /// Master seed.
    pub seed: u64,
    /// Shuffle the epoch order.
    pub shuffle: bool,
    /// Replacement attempts for one slot before giving up.
    pub max_retries: usize,
}

/// Counters shared by the workers and the consumer.
#[derive(Debug, Default)]
pub struct LoaderStats {
    /// Samples replaced because they failed to load.
    pub bad_samples: AtomicUsize,
    /// Nanoseconds the consumer spent waiting for a batch.
    pub wait_ns: AtomicUsize,
    /// The first few failure reasons.
    pub reasons: Mutex<Vec<String>>,
}

impl LoaderStats {
    /// Seconds the consumer spent blocked on the queue.
    pub fn wait_s(&self) -> f64 {
        self.wait_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }
    /// Samples replaced so far.
    pub fn bad(&self) -> usize {
        self.bad_samples.load(Ordering::Relaxed)
    }
    fn record(&self, reason: String) {
        self.bad_samples.fetch_add(1, Ordering::Relaxed);
        let mut r = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        if r.len() < 8 {
            r.push(reason);
        }
    }
}

/// A loaded batch with the dataset indices it holds.
#[derive(Debug)]
pub struct Batch<B> {
    /// Position of the batch in its epoch.
    pub index: usize,
    /// Dataset indices actually used (after replacements), in order.
    pub indices: Vec<usize>,
    /// The collated data.
    pub data: B,
}

/// SplitMix64 step: the mixing function used to derive independent seeds.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Seed for a given (seed, a, b, c) tuple.
pub fn derive_seed(seed: u64, a: u64, b: u64, c: u64) -> u64 {
    mix(mix(mix(mix(seed) ^ a) ^ b) ^ c)
}

/// The sample order of an epoch.
pub fn epoch_order(len: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, 0x5eed, epoch as u64, 0));
        order.shuffle(&mut rng);
    }
    order
}

/// Number of full batches in an epoch.
pub fn batches_per_epoch(len: usize, batch_size: usize) -> usize {
    len.checked_div(batch_size).unwrap_or(0)
}

fn load_batch<D: Dataset>(
    ds: &D,
    order: &[usize],
    cfg: &LoaderConfig,
    epoch: usize,
    b: usize,
    stats: &LoaderStats,
) -> Result<Batch<D::Batch>, TrainError> {
    let len = order.len();
    let mut items = Vec::with_capacity(cfg.batch_size);
    let mut indices = Vec::with_capacity(cfg.batch_size);
    let start = b * cfg.batch_size;
    for (s, &first) in order.iter().enumerate().skip(start).take(cfg.batch_size) {
        let mut index = first;
        let mut attempt = 0u64;
        loop {
            let mut rng =
                ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, epoch as u64, s as u64, attempt));
            match ds.get(index, &mut rng) {
                Ok(item) => {
                    items.push(item);
                    indices.push(index);
                    break;
                }
                Err(reason) => {
                    stats.record(format!("sample {index}: {reason}"));
                    attempt += 1;
                    if attempt as usize > cfg.max_retries {
                        return Err(TrainError::Data(format!(
                            "{} consecutive samples failed for slot {s} of epoch {epoch}; last: sample {index}: {reason}",
                            attempt
                        )));
                    }
                    let mut pick = ChaCha8Rng::seed_from_u64(derive_seed(
                        cfg.seed ^ 0xbad,
                        epoch as u64,
                        s as u64,
                        attempt,
                    ));
                    index = pick.random_range(0..len);
                }
            }
        }
    }
    let data = ds
        .collate(items)
        .map_err(|e| TrainError::Data(format!("collating batch {b} of epoch {epoch}: {e}")))?;
    Ok(Batch {
        index: b,
        indices,
        data,
    })
}

type Msg<B> = Result<Batch<B>, TrainError>;

/// Iterator over the batches of one epoch, starting at a given batch (for mid-epoch resume).
pub struct EpochLoader<D: Dataset> {
    ds: Arc<D>,
    cfg: LoaderConfig,
    epoch: usize,
    order: Arc<Vec<usize>>,
    first_batch: usize,
    next: usize,
    end: usize,
    receivers: Vec<Receiver<Msg<D::Batch>>>,
    handles: Vec<JoinHandle<()>>,
    stats: Arc<LoaderStats>,
}

impl<D: Dataset> EpochLoader<D> {
    /// Starts loading epoch `epoch` from batch `start_batch`.
    pub fn new(
        ds: Arc<D>,
        cfg: LoaderConfig,
        epoch: usize,
        start_batch: usize,
        stats: Arc<LoaderStats>,
    ) -> Self {
        let order = Arc::new(epoch_order(ds.len(), cfg.seed, epoch, cfg.shuffle));
        let end = batches_per_epoch(ds.len(), cfg.batch_size);
        let mut receivers = Vec::new();
        let mut handles = Vec::new();
        if cfg.workers > 0 {
            let per_worker = cfg.prefetch.div_ceil(cfg.workers).max(1);
            for w in 0..cfg.workers {
                let (tx, rx) = sync_channel::<Msg<D::Batch>>(per_worker);
                receivers.push(rx);
                let ds = ds.clone();
                let order = order.clone();
                let stats = stats.clone();
                let handle = std::thread::Builder::new()
                    .name(format!("loader-{w}"))
                    .spawn(move || {
                        // Worker w owns batches start+w, start+w+W, ... of the epoch.
                        let mut b = start_batch + w;
                        while b < end {
                            let msg = load_batch(&*ds, &order, &cfg, epoch, b, &stats);
                            let failed = msg.is_err();
                            if tx.send(msg).is_err() || failed {
                                return; // consumer gone, or the epoch is lost anyway
                            }
                            b += cfg.workers;
                        }
                    });
                match handle {
                    Ok(h) => handles.push(h),
                    Err(_) => {
                        // Could not spawn: fall back to loading on the consumer thread.
                        receivers.clear();
                        handles.clear();
                        break;
                    }
                }
            }
        }
        Self {
            ds,
            cfg,
            epoch,
            order,
            first_batch: start_batch,
            next: start_batch,
            end,
            receivers,
            handles,
            stats,
        }
    }

    /// Batches remaining in this epoch.
    pub fn remaining(&self) -> usize {
        self.end.saturating_sub(self.next)
    }
}

impl<D: Dataset> Iterator for EpochLoader<D> {
    type Item = Result<Batch<D::Batch>, TrainError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.end {
            return None;
        }
        let b = self.next;
        self.next += 1;
        let t0 = Instant::now();
        let msg = if self.receivers.is_empty() {
            load_batch(
                &*self.ds,
                &self.order,
                &self.cfg,
                self.epoch,
                b,
                &self.stats,
            )
        } else {
            // Batch b was assigned to worker (b - first_batch) % workers.
            let w = (b - self.first_batch) % self.receivers.len();
            match self.receivers[w].recv() {
                Ok(m) => m,
                Err(_) => Err(TrainError::Data(format!(
                    "loader worker {w} stopped before batch {b} of epoch {}",
                    self.epoch
                ))),
            }
        };
        // Only waiting on other threads counts as idle; in-thread loading is reported separately.
        if !self.receivers.is_empty() {
            let waited = t0.elapsed();
            self.stats
                .wait_ns
                .fetch_add(duration_ns(waited), Ordering::Relaxed);
        }
        Some(msg)
    }
}

fn duration_ns(d: Duration) -> usize {
    usize::try_from(d.as_nanos()).unwrap_or(usize::MAX)
}

impl<D: Dataset> Drop for EpochLoader<D> {
    fn drop(&mut self) {
        // Closing the queues makes every worker stop after its current batch.
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Item = (index, a random draw); every 7th index fails.
    struct Toy {
        n: usize,
        slow: bool,
    }

    impl Dataset for Toy {
        type Item = (usize, u64);
        type Batch = Vec<(usize, u64)>;
        fn len(&self) -> usize {
            self.n
        }
        fn get(&self, index: usize, rng: &mut ChaCha8Rng) -> Result<Self::Item, String> {
            if self.slow {
                std::thread::sleep(Duration::from_micros(200 * (index % 3) as u64));
            }
            if index % 7 == 3 {
                return Err(format!("index {index} is corrupt"));
            }
            Ok((index, rng.random()))
        }
        fn collate(&self, items: Vec<Self::Item>) -> Result<Self::Batch, String> {
            Ok(items)
        }
    }

    fn run(workers: usize, start: usize, epoch: usize) -> (Vec<Vec<(usize, u64)>>, usize) {
        let cfg = LoaderConfig {
            workers,
            prefetch: 4,
            batch_size: 5,
            seed: 11,
            shuffle: true,
            max_retries: 8,
        };
        let stats = Arc::new(LoaderStats::default());
        let ds = Arc::new(Toy { n: 43, slow: true });
        let out = EpochLoader::new(ds, cfg, epoch, start, stats.clone())
            .map(|b| b.expect("batch").data)
            .collect();
        (out, stats.bad())
    }

    #[test]
    fn same_batches_whatever_the_thread_count() {
        let (base, bad) = run(0, 0, 2);
        assert_eq!(base.len(), 8, "43 samples, batch 5, drop_last");
        assert!(bad > 0, "some corrupt samples were hit");
        for workers in [1, 2, 3] {
            let (other, other_bad) = run(workers, 0, 2);
            assert_eq!(base, other, "{workers} workers changed the batches");
            assert_eq!(bad, other_bad);
        }
        // Corrupt samples never make it into a batch.
        assert!(base.iter().flatten().all(|(i, _)| i % 7 != 3));
        // A different epoch is a different order.
        assert_ne!(run(2, 0, 3).0, base);
    }

    #[test]
    fn resume_mid_epoch_continues_identically() {
        let (full, _) = run(2, 0, 1);
        let (tail, _) = run(3, 5, 1);
        assert_eq!(&full[5..], &tail[..]);
    }

    #[test]
    fn persistent_failures_are_an_error() {
        struct Broken;
        impl Dataset for Broken {
            type Item = ();
            type Batch = ();
            fn len(&self) -> usize {
                4
            }
            fn get(&self, index: usize, _rng: &mut ChaCha8Rng) -> Result<(), String> {
                Err(format!("cannot decode {index}"))
            }
            fn collate(&self, _items: Vec<()>) -> Result<(), String> {
                Ok(())
            }
        }
        let cfg = LoaderConfig {
            workers: 2,
            prefetch: 2,
            batch_size: 2,
            seed: 0,
            shuffle: false,
            max_retries: 3,
        };
        let stats = Arc::new(LoaderStats::default());
        let mut it = EpochLoader::new(Arc::new(Broken), cfg, 0, 0, stats.clone());
        let err = it.next().expect("one item").expect_err("must fail");
        assert!(err.to_string().contains("cannot decode"), "{err}");
        assert!(stats.bad() >= 4);
    }
}
