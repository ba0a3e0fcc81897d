//! Criterion benchmarks of the audio front end on a 2 s clip (see docs/performance/audio.md).

// `criterion_group!` expands to an undocumented public function.
#![allow(missing_docs)]

use av_audio::{
    FrontEndScratch, MelConfig, MelScratch, MelSpectrogram, ReplaiAudioFrontEnd, SincResampler,
    Spectrogram,
};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

/// Deterministic noise-plus-tone test clip.
fn clip(n: usize, sr: f32) -> Vec<f32> {
    let mut s = 0x9e37_79b9u32;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let noise = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            0.2 * noise + 0.3 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / sr).sin()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let native = clip(88_200, 44_100.0);
    let at16k = clip(32_000, 16_000.0);

    let fe = ReplaiAudioFrontEnd::new(44_100).expect("valid rates");
    c.bench_function("replai_network_input_2s_44k1", |b| {
        b.iter(|| fe.network_input(black_box(&native)).expect("valid clip"))
    });
    let mut out = Vec::new();
    let mut scratch = FrontEndScratch::default();
    c.bench_function("replai_network_input_into_2s_44k1", |b| {
        b.iter(|| {
            fe.network_input_into(black_box(&native), &mut out, &mut scratch)
                .expect("valid clip")
        })
    });

    let r = SincResampler::new(44_100, 16_000).expect("valid rates");
    let mut y = Vec::new();
    c.bench_function("resample_2s_44k1_to_16k", |b| {
        b.iter(|| r.process_into(black_box(&native), &mut y))
    });

    let mel = MelSpectrogram::new(MelConfig::replai()).expect("valid config");
    let mut spec = Spectrogram::default();
    let mut ms = MelScratch::default();
    c.bench_function("mel_2s_16k_replai", |b| {
        b.iter(|| {
            mel.compute_into(black_box(&at16k), &mut spec, &mut ms)
                .expect("valid clip")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
