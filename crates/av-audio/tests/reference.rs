//! Comparisons with the torchaudio golden outputs in `tests/fixtures/{logmel,resample}`
//! (tolerances from the shared fixtures README, "Recommended tolerances").

mod common;

use av_audio::{
    uniform_temporal_subsample_indices, MelConfig, MelSpectrogram, ReplaiAudioFrontEnd,
    SincResampler,
};
use common::{fixtures, load, max_rel_to_max};

const CASES: [&str; 3] = ["white_noise", "chirp", "clicks"];

fn input_f32(case: &str) -> anyhow::Result<Vec<f32>> {
    let p = fixtures()
        .join("logmel")
        .join(format!("{case}.safetensors"));
    Ok(load(&p, "input")?.data.iter().map(|&v| v as f32).collect())
}

#[test]
fn mel_filterbank_matches_torchaudio() -> anyhow::Result<()> {
    let fb = load(
        &fixtures().join("logmel/white_noise.safetensors"),
        "fbank_f64",
    )?;
    assert_eq!(fb.shape, [257, 80]);
    let mel = MelSpectrogram::new(MelConfig::replai())?;
    let ours = mel.filterbank();
    assert_eq!(ours.len(), fb.data.len());
    let err = ours
        .iter()
        .zip(&fb.data)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-12, "filterbank max abs error {err:e}");
    Ok(())
}

#[test]
fn mel_power_matches_torchaudio_f64() -> anyhow::Result<()> {
    let mel = MelSpectrogram::new(MelConfig::replai())?;
    for case in CASES {
        let p = fixtures()
            .join("logmel")
            .join(format!("{case}.safetensors"));
        let want = load(&p, "mel_f64")?;
        let got = mel.compute(&input_f32(case)?)?;
        assert_eq!([got.n_rows, got.n_frames], [80, 124]);
        assert_eq!(want.shape, [80, 124]);
        let err = max_rel_to_max(&got.data, &want.data);
        eprintln!("{case}: mel max abs error / max {err:e}");
        assert!(err <= 1e-5, "{case}: mel error {err:e} relative to max");
    }
    Ok(())
}

#[test]
fn log_mel_matches_torchaudio_f64() -> anyhow::Result<()> {
    let mel = MelSpectrogram::new(MelConfig::replai())?;
    let clamp = (1e-10f64).ln();
    for case in CASES {
        let p = fixtures()
            .join("logmel")
            .join(format!("{case}.safetensors"));
        let mel_ref = load(&p, "mel_f64")?.data;
        let want = load(&p, "logmel_f64")?.data;
        let mut got = mel.compute(&input_f32(case)?)?;
        got.ln_clamp(ReplaiAudioFrontEnd::LOG_EPS);
        let max = mel_ref.iter().fold(0.0f64, |m, &v| m.max(v));
        let (mut err, mut err_clamped, mut n_clamped) = (0.0f64, 0.0f64, 0usize);
        for ((&g, &w), &m) in got.data.iter().zip(&want).zip(&mel_ref) {
            if w == clamp {
                n_clamped += 1;
                // Clamped cells of digital silence must hit the clamp exactly; elsewhere a
                // clamped reference cell lies below float32 resolution (~1e-7 of the frame
                // energy), so the port only has to be unresolvably small there too.
                if case == "clicks" {
                    err_clamped = err_clamped.max((f64::from(g) - w).abs());
                } else {
                    assert!(
                        f64::from(g) < (1e-6 * max).ln(),
                        "{case}: clamped cell at {g}"
                    );
                }
            } else if m >= 1e-6 * max {
                err = err.max((f64::from(g) - w).abs());
            }
        }
        eprintln!("{case}: log-mel max abs error {err:e}, clamped cells {err_clamped:e}");
        assert!(err <= 1e-3, "{case}: log-mel error {err:e}");
        assert!(
            err_clamped <= 1e-6,
            "{case}: clamped cells off by {err_clamped:e}"
        );
        if case == "clicks" {
            assert_eq!(
                n_clamped,
                112 * 80,
                "clicks: silent frames must hit the clamp"
            );
        }
    }
    Ok(())
}

#[test]
fn network_input_matches_reference() -> anyhow::Result<()> {
    let fe = ReplaiAudioFrontEnd::new(16_000)?;
    for case in CASES {
        let p = fixtures()
            .join("logmel")
            .join(format!("{case}.safetensors"));
        let idx_ref: Vec<usize> = load(&p, "subsample_idx")?
            .data
            .iter()
            .map(|&v| v as usize)
            .collect();
        assert_eq!(
            uniform_temporal_subsample_indices(124, 125),
            idx_ref,
            "{case}"
        );
        let mel_ref = load(&p, "mel_f64")?.data;
        let want = load(&p, "network_input_f64")?;
        assert_eq!(want.shape, [1, 125, 80]);
        let got = fe.network_input(&input_f32(case)?)?;
        assert_eq!(got.len(), 125 * 80);
        let max = mel_ref.iter().fold(0.0f64, |m, &v| m.max(v));
        let mut err = 0.0f64;
        for t in 0..125 {
            for f in 0..80 {
                // Only compare cells whose power is resolvable in float32 (README tolerances).
                if mel_ref[f * 124 + idx_ref[t]] >= 1e-6 * max {
                    let i = t * 80 + f;
                    err = err.max((f64::from(got[i]) - want.data[i]).abs());
                }
            }
        }
        eprintln!("{case}: network input max abs error {err:e}");
        assert!(err <= 2.5e-4, "{case}: network input error {err:e}");
    }
    Ok(())
}

#[test]
fn resampler_matches_torchaudio_f64() -> anyhow::Result<()> {
    let p = fixtures().join("resample/resample_44100_16000.safetensors");
    let input: Vec<f32> = load(&p, "input")?.data.iter().map(|&v| v as f32).collect();
    let want = load(&p, "output_f64")?;
    let r = SincResampler::new(44_100, 16_000)?;
    assert_eq!(r.output_len(input.len()), 32_000);
    let got = r.process(&input);
    let err = max_rel_to_max(&got, &want.data);
    eprintln!("resampler max abs error / max abs {err:e}");
    assert!(err <= 1e-5, "resampler error {err:e} relative to max");
    // Far tighter than the tolerance: the only differences are f32 kernel storage and
    // summation order (torchaudio's own float32 run is at 4.9e-6).
    assert!(err <= 1e-6, "resampler error {err:e} relative to max");
    Ok(())
}

#[test]
fn resampler_kernel_matches_torchaudio_phases() -> anyhow::Result<()> {
    let p = fixtures().join("resample/resample_44100_16000.safetensors");
    let k = load(&p, "kernel_f64_phases")?;
    assert_eq!(k.shape, [4, 475]);
    let r = SincResampler::new(44_100, 16_000)?;
    for (row, phase) in [0usize, 1, 80, 159].into_iter().enumerate() {
        let ours = r.kernel_phase(phase);
        let want = &k.data[row * 475..(row + 1) * 475];
        let err = max_rel_to_max(&ours, want);
        eprintln!("kernel phase {phase}: error / max {err:e}");
        assert!(err < 1e-7, "phase {phase}: kernel error {err:e}");
    }
    Ok(())
}
