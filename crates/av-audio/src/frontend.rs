//! RepLAI's audio network input (spec §2.3): resample to 16 kHz, mel power spectrogram,
//! `ln(max(x, 1e-10))`, nearest-neighbour resampling in time to 125 frames, `(x + 7.03) / 4.66`.

use crate::error::check_finite;
use crate::mel::{MelConfig, MelScratch, MelSpectrogram, Spectrogram};
use crate::resample::SincResampler;
use crate::AudioError;

/// Frame indices of PyTorchVideo's `UniformTemporalSubsample(n_out)` for `t` input frames:
/// `clamp(linspace(0, t - 1, n_out), 0, t - 1)` truncated toward zero, with the linspace in
/// float32 evaluated exactly as PyTorch's CPU kernel does (first half from the start, second
/// half from the end). For `t = 124, n_out = 125` this is `[0, 0, 1, 2, ..., 123]`.
pub fn uniform_temporal_subsample_indices(t: usize, n_out: usize) -> Vec<usize> {
    if t == 0 || n_out == 0 {
        return Vec::new();
    }
    if n_out == 1 {
        return vec![0];
    }
    let start = 0.0f32;
    let end = (t - 1) as f32;
    let step = (end - start) / (n_out - 1) as f32;
    let halfway = n_out / 2;
    (0..n_out)
        .map(|i| {
            let v = if i < halfway {
                start + step * i as f32
            } else {
                end - step * (n_out - 1 - i) as f32
            };
            v.clamp(0.0, end) as usize
        })
        .collect()
}

/// The RepLAI audio front end for one native sample rate (plan once, process many clips).
#[derive(Debug, Clone)]
pub struct ReplaiAudioFrontEnd {
    resampler: SincResampler,
    mel: MelSpectrogram,
}

/// Reusable buffers for [`ReplaiAudioFrontEnd::network_input_into`].
#[derive(Debug, Default)]
pub struct FrontEndScratch {
    resampled: Vec<f32>,
    spec: Spectrogram,
    mel: MelScratch,
}

impl ReplaiAudioFrontEnd {
    /// Output frames (time axis) of the network input.
    pub const FRAMES: usize = 125;
    /// Mel bands (frequency axis) of the network input.
    pub const MELS: usize = 80;
    /// Sample rate the mel spectrogram is computed at.
    pub const SAMPLE_RATE: u32 = 16_000;
    /// Floor applied before the natural log.
    pub const LOG_EPS: f32 = 1e-10;
    /// Dataset mean subtracted after the log (the reference subtracts -7.03).
    pub const MEAN: f32 = -7.03;
    /// Dataset standard deviation divided out after the log.
    pub const STD: f32 = 4.66;

    /// Plans the front end for clips sampled at `native_rate` Hz.
    pub fn new(native_rate: u32) -> Result<Self, AudioError> {
        Ok(Self {
            resampler: SincResampler::new(native_rate, Self::SAMPLE_RATE)?,
            mel: MelSpectrogram::new(MelConfig::replai())?,
        })
    }

    /// Native sample rate this front end expects.
    pub fn native_rate(&self) -> u32 {
        self.resampler.from_hz()
    }

    /// The 16 kHz mel spectrogram plan.
    pub fn mel(&self) -> &MelSpectrogram {
        &self.mel
    }

    /// Natural-log mel spectrogram `(80, T)` of a mono clip at the native rate (steps 2-4).
    pub fn log_mel(&self, native_samples: &[f32]) -> Result<Spectrogram, AudioError> {
        let mut scratch = FrontEndScratch::default();
        self.log_mel_into(native_samples, &mut scratch)?;
        Ok(scratch.spec)
    }

    fn log_mel_into(
        &self,
        native_samples: &[f32],
        scratch: &mut FrontEndScratch,
    ) -> Result<(), AudioError> {
        check_finite(native_samples, "audio front-end input", 0)?;
        self.resampler
            .process_into(native_samples, &mut scratch.resampled);
        self.mel
            .compute_into(&scratch.resampled, &mut scratch.spec, &mut scratch.mel)?;
        scratch.spec.ln_clamp(Self::LOG_EPS);
        Ok(())
    }

    /// The network input for a mono clip at the native rate: `FRAMES * MELS` values laid out
    /// `(T = 125, F = 80)` row-major (time first, as the audio CNN expects).
    ///
    /// Clips shorter than 2 s (windows clipped at a segment edge) give fewer mel frames, which
    /// are stretched to 125 by repetition exactly as the reference does.
    pub fn network_input(&self, native_samples: &[f32]) -> Result<Vec<f32>, AudioError> {
        let mut out = Vec::new();
        self.network_input_into(native_samples, &mut out, &mut FrontEndScratch::default())?;
        Ok(out)
    }

    /// Allocation-free variant of [`network_input`](Self::network_input) for data loaders.
    pub fn network_input_into(
        &self,
        native_samples: &[f32],
        out: &mut Vec<f32>,
        scratch: &mut FrontEndScratch,
    ) -> Result<(), AudioError> {
        self.log_mel_into(native_samples, scratch)?;
        let spec = &scratch.spec;
        let idx = uniform_temporal_subsample_indices(spec.n_frames, Self::FRAMES);
        out.clear();
        out.resize(Self::FRAMES * Self::MELS, 0.0);
        for (t, &src) in idx.iter().enumerate() {
            for f in 0..Self::MELS {
                out[t * Self::MELS + f] =
                    (spec.data[f * spec.n_frames + src] - Self::MEAN) / Self::STD;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsample_124_to_125_duplicates_frame_zero() {
        let idx = uniform_temporal_subsample_indices(124, 125);
        let mut want = vec![0usize];
        want.extend(0..124);
        assert_eq!(idx, want);
    }

    #[test]
    fn subsample_edge_cases() {
        assert_eq!(uniform_temporal_subsample_indices(1, 4), [0, 0, 0, 0]);
        assert_eq!(uniform_temporal_subsample_indices(5, 1), [0]);
        assert_eq!(uniform_temporal_subsample_indices(5, 5), [0, 1, 2, 3, 4]);
        assert!(uniform_temporal_subsample_indices(0, 5).is_empty());
        let idx = uniform_temporal_subsample_indices(300, 125);
        assert_eq!((idx[0], idx[124]), (0, 299));
        assert!(idx.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn network_input_shape_and_errors() -> Result<(), AudioError> {
        let fe = ReplaiAudioFrontEnd::new(44_100)?;
        let x: Vec<f32> = (0..88_200)
            .map(|i| (i as f32 * 0.0627).sin() * 0.3)
            .collect();
        let y = fe.network_input(&x)?;
        assert_eq!(y.len(), 125 * 80);
        assert!(y.iter().all(|v| v.is_finite()));
        // Shorter than one 512-sample frame at 16 kHz.
        assert!(matches!(
            fe.network_input(&x[..1000]),
            Err(AudioError::TooShort { .. })
        ));
        let mut bad = x.clone();
        bad[10] = f32::NAN;
        assert!(matches!(
            fe.network_input(&bad),
            Err(AudioError::NonFiniteSample { index: 10, .. })
        ));
        Ok(())
    }
}
