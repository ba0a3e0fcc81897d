//! The paper-wording variant ([`crate::CurveKind::LogMel`]): log-mel bands on the reference's
//! frame grid, built on av-audio's [`MelSpectrogram`].
//!
//! Frames: the reference's segment length and hop at the native rate, uncentred (frame `k`
//! covers samples `[k * hop, k * hop + nperseg)`, like scipy's), periodic Hann window, power
//! spectrum, `n_mels` HTK triangles over `0 .. fs / 2` without area normalisation, then
//! `ln(max(mel, 1e-10))` as in RepLAI's network front end. The z-score and the mean over bands
//! are the reference's. The mel values are float32 (av-audio); logs and statistics are float64.
//! With short segments (256 samples = 172 Hz bins at 44.1 kHz) the lowest mel triangles can
//! fall between two FFT bins and stay empty; such bands are constant, their z-score is exactly
//! 0 and they only scale the curve down by `used / n_mels`.

use av_audio::{MelConfig, MelScratch, MelSpectrogram, Spectrogram};
use rayon::prelude::*;

use crate::error::Result;
use crate::MoiConfig;

/// RepLAI's clamp before the natural log.
const MEL_FLOOR: f32 = 1e-10;
/// Frames per parallel task.
const FRAMES_PER_TASK: usize = 512;

/// A planned log-mel frame transform.
pub(crate) struct LogMelFrames {
    mel: MelSpectrogram,
    nperseg: usize,
    hop: usize,
    n_mels: usize,
}

impl LogMelFrames {
    pub(crate) fn new(cfg: &MoiConfig, sample_rate: u32) -> Result<Self> {
        let mel = MelSpectrogram::new(MelConfig {
            sample_rate,
            n_fft: cfg.nperseg,
            win_length: cfg.nperseg,
            hop_length: cfg.hop(),
            n_mels: cfg.n_mels,
            f_min: 0.0,
            f_max: None,
            center: false,
            ..MelConfig::default()
        })?;
        Ok(Self {
            mel,
            nperseg: cfg.nperseg,
            hop: cfg.hop(),
            n_mels: cfg.n_mels,
        })
    }

    pub(crate) fn n_bins(&self) -> usize {
        self.n_mels
    }

    /// Log-mel of frames `[first, first + n)` into `out` (`n * n_mels`, frame-major).
    pub(crate) fn frames_into(&self, samples: &[f32], first: usize, out: &mut [f64]) -> Result<()> {
        let nb = self.n_mels;
        out.par_chunks_mut(FRAMES_PER_TASK * nb)
            .enumerate()
            .try_for_each_init(
                || (Spectrogram::default(), MelScratch::default()),
                |(spec, scratch), (task, block)| -> Result<()> {
                    let n = block.len() / nb;
                    let k0 = first + task * FRAMES_PER_TASK;
                    let start = k0 * self.hop;
                    let end = (k0 + n - 1) * self.hop + self.nperseg;
                    self.mel.compute_into(&samples[start..end], spec, scratch)?;
                    for (t, row) in block.chunks_exact_mut(nb).enumerate() {
                        for (m, o) in row.iter_mut().enumerate() {
                            *o = f64::from(spec.get(m, t).max(MEL_FLOOR)).ln();
                        }
                    }
                    Ok(())
                },
            )
    }
}
