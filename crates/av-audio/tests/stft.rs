//! Differential test: the planned realfft mel spectrogram against a naive f64 DFT written from
//! the definitions (periodic Hann centred in n_fft, reflect/zero padding, |X|^p, filterbank).

use av_audio::{
    mel_filterbank, MelConfig, MelNorm, MelScale, MelSpectrogram, PadMode, Spectrogram,
};

fn naive_mel(x: &[f32], cfg: &MelConfig) -> Vec<f64> {
    let n_fft = cfg.n_fft;
    let pad = if cfg.center { n_fft / 2 } else { 0 };
    let n = x.len() as isize;
    // Sample at padded position p (may be in the padding).
    let sample = |p: isize| -> f64 {
        let i = p - pad as isize;
        if (0..n).contains(&i) {
            return f64::from(x[i as usize]);
        }
        match cfg.pad_mode {
            PadMode::Constant => 0.0,
            PadMode::Reflect => {
                let j = if i < 0 { -i } else { 2 * (n - 1) - i };
                f64::from(x[j as usize])
            }
        }
    };
    let total = x.len() + 2 * pad;
    let n_frames = (total - n_fft) / cfg.hop_length + 1;
    let left = (n_fft - cfg.win_length) / 2;
    let window: Vec<f64> = (0..n_fft)
        .map(|i| {
            if i < left || i >= left + cfg.win_length {
                0.0
            } else {
                let k = (i - left) as f64;
                0.5 - 0.5 * (2.0 * std::f64::consts::PI * k / cfg.win_length as f64).cos()
            }
        })
        .collect();
    let n_freqs = n_fft / 2 + 1;
    let fb = mel_filterbank(
        n_freqs,
        cfg.f_min,
        cfg.f_max_hz(),
        cfg.n_mels,
        cfg.sample_rate,
        cfg.norm,
        cfg.mel_scale,
    );
    let mut out = vec![0.0f64; cfg.n_mels * n_frames];
    for t in 0..n_frames {
        let frame: Vec<f64> = (0..n_fft)
            .map(|i| sample((t * cfg.hop_length + i) as isize) * window[i])
            .collect();
        for k in 0..n_freqs {
            let (mut re, mut im) = (0.0f64, 0.0f64);
            for (i, &v) in frame.iter().enumerate() {
                let ph = -2.0 * std::f64::consts::PI * (k * i % n_fft) as f64 / n_fft as f64;
                re += v * ph.cos();
                im += v * ph.sin();
            }
            let p = (re * re + im * im).sqrt().powf(f64::from(cfg.power));
            for m in 0..cfg.n_mels {
                out[m * n_frames + t] += fb[k * cfg.n_mels + m] * p;
            }
        }
    }
    out
}

fn signal(n: usize) -> Vec<f32> {
    // Two tones, a decaying burst and a little deterministic noise.
    let mut s = 12345u32;
    (0..n)
        .map(|i| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            let t = i as f32 / 16_000.0;
            0.4 * (2.0 * std::f32::consts::PI * 310.0 * t).sin()
                + 0.2 * (2.0 * std::f32::consts::PI * 2_750.0 * t).sin()
                + (-(t * 40.0)).exp() * 0.5
                + 0.02 * noise
        })
        .collect()
}

fn check(cfg: MelConfig, n: usize, label: &str) -> anyhow::Result<()> {
    let x = signal(n);
    let plan = MelSpectrogram::new(cfg.clone())?;
    let got: Spectrogram = plan.compute(&x)?;
    let want = naive_mel(&x, &cfg);
    assert_eq!(got.n_rows, cfg.n_mels, "{label}");
    assert_eq!(
        got.n_frames * got.n_rows,
        want.len(),
        "{label}: frame count"
    );
    assert_eq!(got.n_frames, plan.n_frames(n), "{label}");
    let max = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = got
        .data
        .iter()
        .zip(&want)
        .fold(0.0f64, |m, (a, b)| m.max((f64::from(*a) - b).abs()));
    assert!(
        err / max < 1e-5,
        "{label}: error {:e} relative to max",
        err / max
    );
    Ok(())
}

#[test]
fn replai_config_matches_naive_dft() -> anyhow::Result<()> {
    check(MelConfig::replai(), 4_000, "replai")
}

#[test]
fn centred_reflect_with_short_window_matches_naive_dft() -> anyhow::Result<()> {
    let cfg = MelConfig {
        n_fft: 512,
        win_length: 400,
        hop_length: 160,
        n_mels: 64,
        f_min: 60.0,
        f_max: Some(7_600.0),
        center: true,
        ..MelConfig::default()
    };
    check(cfg, 3_001, "center reflect, win 400")
}

#[test]
fn odd_fft_magnitude_slaney_matches_naive_dft() -> anyhow::Result<()> {
    let cfg = MelConfig {
        n_fft: 401,
        win_length: 401,
        hop_length: 100,
        n_mels: 40,
        center: true,
        pad_mode: PadMode::Constant,
        power: 1.0,
        mel_scale: MelScale::Slaney,
        norm: MelNorm::Slaney,
        ..MelConfig::default()
    };
    check(cfg, 2_500, "odd n_fft, magnitude, slaney")
}

#[test]
fn librosa_preset_matches_naive_dft() -> anyhow::Result<()> {
    let cfg = MelConfig {
        n_mels: 32,
        ..MelConfig::librosa(16_000)
    };
    check(cfg, 6_000, "librosa preset")
}

/// Reusing scratch and output buffers across calls of different lengths gives the same result
/// as fresh buffers (the hot path must not leak state between clips).
#[test]
fn compute_into_reuses_buffers_without_leaking_state() -> anyhow::Result<()> {
    let plan = MelSpectrogram::new(MelConfig {
        center: true,
        ..MelConfig::replai()
    })?;
    let mut out = Spectrogram::default();
    let mut scratch = av_audio::MelScratch::default();
    for n in [5_000usize, 1_200, 9_000] {
        let x = signal(n);
        plan.compute_into(&x, &mut out, &mut scratch)?;
        assert_eq!(out, plan.compute(&x)?, "n = {n}");
    }
    Ok(())
}
