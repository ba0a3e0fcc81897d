//! Forward and forward+backward of the AVID video and audio encoders (width 1) at batch 8
//! on CPU: 8x3x8x112x112 video, 8x1x125x80 audio, train mode (batch-statistics BN).
//! `benches/pytorch_encoders.py` times the same networks in PyTorch.
//!
//! `cargo bench -p av-models --bench encoders -- --warm-up-time 1 --measurement-time 3`
//! runs criterion (video forward+backward takes tens of seconds per iteration, so a full
//! criterion run needs several minutes). `AV_MODELS_BENCH_ONESHOT=1 cargo bench -p
//! av-models --bench encoders` instead times each case a few times and prints seconds,
//! GFLOP/s (conv + linear multiply-adds x 2; backward counted as 2x forward) and the
//! peak RSS of the case, which is what docs/performance/models.md records
//! (`AV_MODELS_CONV_IMPL=candle` switches to candle's conv2d for comparison). The backward
//! pass runs in an `av_models::PackedParams` scope, as the trainers do.

// criterion_group! generates an undocumented `benches` fn; a bench has no public API.
#![allow(missing_docs)]

use std::time::Instant;

use av_models::{AudioCnn, AudioCnnConfig, R2Plus1d, R2Plus1dConfig};
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, Criterion};

const BATCH: usize = 8;

/// Multiply-add count x 2 of one AVID R(2+1)D-18 forward at width 1.
fn video_flops(b: usize, t: usize, h: usize, w: usize) -> f64 {
    let mut f = 0.0;
    let mut conv = |out_elems: usize, fan_in: usize| f += 2.0 * out_elems as f64 * fan_in as f64;
    let (mut t, mut h, mut w) = (t, h.div_ceil(2), w.div_ceil(2));
    conv(b * 64 * t * h * w, 3 * 3 * 7 * 7);
    h = h.div_ceil(2);
    w = w.div_ceil(2);
    let mut c_in = 64;
    for (i, c) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for j in 0..2 {
            let s = if i > 0 && j == 0 { 2 } else { 1 };
            let (t_o, h_o, w_o) = (t.div_ceil(s), h.div_ceil(s), w.div_ceil(s));
            conv(b * c * t * h_o * w_o, c_in * 9); // spatial on input frames
            conv(b * c * t_o * h_o * w_o, c * 3); // temporal
            conv(b * c * t_o * h_o * w_o, c * 9);
            conv(b * c * t_o * h_o * w_o, c * 3);
            if s != 1 || c_in != c {
                conv(b * c * t_o * h_o * w_o, c_in);
            }
            (t, h, w, c_in) = (t_o, h_o, w_o, c);
        }
    }
    f
}

/// Multiply-add count x 2 of one AVID audio CNN forward at width 1.
fn audio_flops(b: usize, t: usize, f_bins: usize) -> f64 {
    let mut f = 0.0;
    let (mut h, mut w) = ((t + 6 - 7) / 2 + 1, (f_bins + 6 - 7) / 2 + 1);
    f += 2.0 * (b * 64 * h * w) as f64 * 49.0;
    let mut c_in = 64;
    for (c, s) in [(64usize, 2usize), (128, 2), (256, 2), (512, 1)] {
        h = (h + 2 - 3) / s + 1;
        w = (w + 2 - 3) / s + 1;
        f += 2.0 * (b * c * h * w) as f64 * (c_in * 9 + c * 9) as f64;
        c_in = c;
    }
    f
}

struct Case {
    name: &'static str,
    flops_fwd: f64,
    run: Box<dyn Fn(bool) -> candle_core::Result<()>>,
}

fn cases() -> candle_core::Result<Vec<Case>> {
    let dev = Device::Cpu;
    let vm_v = VarMap::new();
    let video = R2Plus1d::new(
        &R2Plus1dConfig::avid(),
        VarBuilder::from_varmap(&vm_v, DType::F32, &dev),
    )?;
    let vm_a = VarMap::new();
    let audio = AudioCnn::new(
        &AudioCnnConfig::default(),
        VarBuilder::from_varmap(&vm_a, DType::F32, &dev),
    )?;
    let xv = Tensor::randn(0f32, 1.0, (BATCH, 3, 8, 112, 112), &dev)?;
    let xa = Tensor::randn(0f32, 1.0, (BATCH, 1, 125, 80), &dev)?;
    let plain = std::env::var_os("AV_MODELS_BENCH_PLAIN").is_some();
    let step = move |net: &dyn ModuleT, x: &Tensor, backward: bool| -> candle_core::Result<()> {
        // Parameters packed per fused block, as the trainers run their steps
        // (AV_MODELS_BENCH_PLAIN=1: candle's concatenation and a plain `backward()` through
        // its per-edge bookkeeping, for comparison).
        let scope = (!plain).then(av_models::PackedParams::start);
        let y = net.forward_t(x, true)?; // train mode (batch statistics), as in PyTorch's script
        if backward {
            let loss = y.sqr()?.sum_all()?;
            let _grads = match scope {
                Some(scope) => scope.backward(&loss)?,
                None => loss.backward()?,
            };
        } else {
            y.sum_all()?.to_scalar::<f32>()?;
        }
        Ok(())
    };
    let audio_c = audio.clone();
    let xa_c = xa.clone();
    let video_c = video.clone();
    let xv_c = xv.clone();
    Ok(vec![
        Case {
            name: "audio",
            flops_fwd: audio_flops(BATCH, 125, 80),
            run: Box::new(move |bw| step(&audio_c, &xa_c, bw)),
        },
        Case {
            name: "video",
            flops_fwd: video_flops(BATCH, 8, 112, 112),
            run: Box::new(move |bw| step(&video_c, &xv_c, bw)),
        },
    ])
}

fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn reset_peak_rss() {
    // Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn oneshot() -> candle_core::Result<()> {
    // The training binaries keep freed buffers for reuse (see av_audio::mem); measure the same
    // allocator policy they run with.
    av_audio::mem::keep_freed_memory();
    // AV_MODELS_CONV_IMPL=candle selects candle's conv2d (conv_transpose2d backward).
    if std::env::var("AV_MODELS_CONV_IMPL").is_ok_and(|v| v == "candle") {
        av_models::layers::set_conv_impl(av_models::layers::ConvImpl::Candle);
    }
    println!("conv implementation: {:?}", av_models::layers::conv_impl());
    let reps: usize = std::env::var("AV_MODELS_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    println!("case\tpass\tseconds (best of {reps})\tGFLOP\tGFLOP/s\tpeak RSS MB");
    // AV_MODELS_BENCH_CASE=video|audio and AV_MODELS_BENCH_PASS=fwd|fwd+bwd narrow the run
    // (for profiling one case).
    let only_case = std::env::var("AV_MODELS_BENCH_CASE").ok();
    let only_pass = std::env::var("AV_MODELS_BENCH_PASS").ok();
    for case in cases()? {
        if only_case.as_deref().is_some_and(|c| c != case.name) {
            continue;
        }
        for backward in [false, true] {
            let pass = if backward { "fwd+bwd" } else { "fwd" };
            if only_pass.as_deref().is_some_and(|p| p != pass) {
                continue;
            }
            reset_peak_rss();
            (case.run)(backward)?; // warm-up
            let mut best = f64::INFINITY;
            for _ in 0..reps {
                let t0 = Instant::now();
                (case.run)(backward)?;
                best = best.min(t0.elapsed().as_secs_f64());
            }
            let flops = if backward {
                3.0 * case.flops_fwd
            } else {
                case.flops_fwd
            };
            println!(
                "{}\t{}\t{best:.3}\t{:.1}\t{:.1}\t{:.0}",
                case.name,
                pass,
                flops / 1e9,
                flops / 1e9 / best,
                peak_rss_mb().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}

fn bench(c: &mut Criterion) {
    let cases = match cases() {
        Ok(c) => c,
        Err(e) => panic!("building the encoders failed: {e}"),
    };
    let mut g = c.benchmark_group("encoders_b8");
    g.sample_size(10);
    for case in &cases {
        for backward in [false, true] {
            let id = format!("{}_{}", case.name, if backward { "fwd_bwd" } else { "fwd" });
            g.bench_function(id, |b| {
                b.iter(|| {
                    if let Err(e) = (case.run)(backward) {
                        panic!("{e}");
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);

fn main() {
    // As the training binaries do (an explicit CANDLE_BARRIER_POOL_SPIN_LIMIT wins).
    // SAFETY: first thing in main, before any other thread exists.
    unsafe { av_models::limit_candle_spinning() };
    if std::env::var_os("AV_MODELS_BENCH_ONESHOT").is_some() {
        if let Err(e) = oneshot() {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
