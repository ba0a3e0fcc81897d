//! Reference detector (curve + peaks) on 10 min and 1 h of 44.1 kHz audio, and `find_peaks` on
//! 10^6 points.
//!
//! `cargo bench -p moi-detect --bench moi -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` expands to an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use moi_detect::{analyze, find_peaks, MoiConfig, PeakOptions, Range};

/// Deterministic "room" signal: white-noise floor, a 120 Hz hum and a click every 0.73 s.
fn recording(seconds: usize, sr: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let click_every = sr * 73 / 100;
    (0..seconds * sr)
        .map(|i| {
            let t = i as f32 / sr as f32;
            let hum = 0.02 * (2.0 * std::f32::consts::PI * 120.0 * t).sin();
            let click = if i % click_every < 40 {
                0.6 * noise()
            } else {
                0.0
            };
            0.003 * noise() + hum + click
        })
        .collect()
}

fn detector(c: &mut Criterion) {
    let sr = 44_100;
    let cfg = MoiConfig::default();
    let mut g = c.benchmark_group("reference_curve_and_peaks");
    g.sample_size(10);
    for (name, seconds) in [("10min", 600usize), ("1h", 3600)] {
        let x = recording(seconds, sr);
        g.throughput(Throughput::Elements(x.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), &x, |b, x| {
            b.iter(|| analyze(x, sr as u32, &cfg).map(|a| a.valid.len()))
        });
    }
    g.finish();
}

fn peaks(c: &mut Criterion) {
    // A random walk has local maxima everywhere and long prominence searches: a hard case.
    let mut state = 88_172_645_463_325_252u64;
    let mut v = 0.0;
    let x: Vec<f64> = (0..1_000_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            v += (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            v
        })
        .collect();
    let mut g = c.benchmark_group("find_peaks_1e6");
    g.sample_size(10);
    g.throughput(Throughput::Elements(x.len() as u64));
    let moi = PeakOptions {
        distance: Some(10.0),
        prominence: Some(Range::at_least(1.0)),
        ..Default::default()
    };
    g.bench_function("distance10_prominence1", |b| {
        b.iter(|| find_peaks(&x, &moi).map(|p| p.peaks.len()))
    });
    let all = PeakOptions {
        prominence: Some(Range::any()),
        width: Some(Range::any()),
        plateau_size: Some(Range::any()),
        ..Default::default()
    };
    g.bench_function("all_properties", |b| {
        b.iter(|| find_peaks(&x, &all).map(|p| p.peaks.len()))
    });
    g.finish();
}

criterion_group!(benches, detector, peaks);
criterion_main!(benches);
