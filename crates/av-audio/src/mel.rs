//! Mel spectrograms with torchaudio (and librosa/Slaney) conventions.
//!
//! The plan ([`MelSpectrogram`]) owns the FFT, the window and the filterbank; the hot path
//! ([`MelSpectrogram::compute_into`]) works in caller-owned buffers ([`Spectrogram`],
//! [`MelScratch`]) and allocates nothing once they have grown to size.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::error::check_finite;
use crate::AudioError;

/// Hz <-> mel mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelScale {
    /// `2595 log10(1 + f / 700)`: torchaudio's default and RepLAI's.
    Htk,
    /// Slaney's Auditory Toolbox scale (linear below 1 kHz, logarithmic above): librosa's default.
    Slaney,
}

/// Normalisation of the triangular mel filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MelNorm {
    /// Triangles of peak height 1 (torchaudio's default, RepLAI).
    None,
    /// Divide each triangle by its width in Hz / 2 (constant energy per band; librosa's default).
    Slaney,
}

/// How frames are padded when `center` is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PadMode {
    /// Mirror without repeating the edge sample (torchaudio's default, `torch.stft` "reflect").
    Reflect,
    /// Zeros (librosa >= 0.10's default).
    Constant,
}

/// Parameters of a mel power (or magnitude) spectrogram.
///
/// [`Default`] gives `torchaudio.transforms.MelSpectrogram()`'s defaults; see also
/// [`MelConfig::replai`] and [`MelConfig::librosa`].
#[derive(Debug, Clone, PartialEq)]
pub struct MelConfig {
    /// Sample rate of the input in Hz (sets the filterbank's frequency axis).
    pub sample_rate: u32,
    /// FFT size; `n_fft / 2 + 1` frequency bins.
    pub n_fft: usize,
    /// Length of the periodic Hann window (<= `n_fft`; centred and zero-padded to `n_fft`).
    pub win_length: usize,
    /// Samples between successive frames.
    pub hop_length: usize,
    /// Number of mel bands.
    pub n_mels: usize,
    /// Lowest filter edge in Hz.
    pub f_min: f64,
    /// Highest filter edge in Hz; `None` means `sample_rate / 2`.
    pub f_max: Option<f64>,
    /// Pad `n_fft / 2` samples on both sides so frame `t` is centred on sample `t * hop`.
    pub center: bool,
    /// Padding used when `center` is true.
    pub pad_mode: PadMode,
    /// Exponent of the magnitude: 2 = power (default), 1 = magnitude.
    pub power: f32,
    /// Hz <-> mel mapping.
    pub mel_scale: MelScale,
    /// Filter normalisation.
    pub norm: MelNorm,
}

impl Default for MelConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            n_fft: 400,
            win_length: 400,
            hop_length: 200,
            n_mels: 128,
            f_min: 0.0,
            f_max: None,
            center: true,
            pad_mode: PadMode::Reflect,
            power: 2.0,
            mel_scale: MelScale::Htk,
            norm: MelNorm::None,
        }
    }
}

impl MelConfig {
    /// RepLAI's audio front end (spec §2.3): 16 kHz, 32 ms window, 16 ms hop, 80 HTK mels,
    /// no centring, power spectrogram.
    pub fn replai() -> Self {
        Self {
            sample_rate: 16_000,
            n_fft: 512,
            win_length: 512,
            hop_length: 256,
            n_mels: 80,
            center: false,
            ..Self::default()
        }
    }

    /// `librosa.feature.melspectrogram(sr=sample_rate)` defaults: n_fft 2048, hop 512,
    /// 128 Slaney-scale mels with Slaney area normalisation, centred with zero padding.
    pub fn librosa(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            n_fft: 2048,
            win_length: 2048,
            hop_length: 512,
            n_mels: 128,
            center: true,
            pad_mode: PadMode::Constant,
            mel_scale: MelScale::Slaney,
            norm: MelNorm::Slaney,
            ..Self::default()
        }
    }

    /// Upper filter edge actually used.
    pub fn f_max_hz(&self) -> f64 {
        self.f_max.unwrap_or(f64::from(self.sample_rate) / 2.0)
    }

    fn validate(&self) -> Result<(), AudioError> {
        let bad = |m: String| Err(AudioError::InvalidConfig(m));
        if self.sample_rate == 0 {
            return bad("sample_rate must be positive".into());
        }
        if self.n_fft < 2 {
            return bad(format!("n_fft must be >= 2, got {}", self.n_fft));
        }
        if self.win_length == 0 || self.win_length > self.n_fft {
            return bad(format!(
                "win_length must be in 1..={} (n_fft), got {}",
                self.n_fft, self.win_length
            ));
        }
        if self.hop_length == 0 {
            return bad("hop_length must be positive".into());
        }
        if self.n_mels == 0 {
            return bad("n_mels must be positive".into());
        }
        if !(self.power.is_finite() && self.power > 0.0) {
            return bad(format!("power must be positive, got {}", self.power));
        }
        let f_max = self.f_max_hz();
        if !(self.f_min.is_finite() && f_max.is_finite() && 0.0 <= self.f_min && self.f_min < f_max)
        {
            return bad(format!(
                "need 0 <= f_min < f_max, got {} .. {}",
                self.f_min, f_max
            ));
        }
        Ok(())
    }
}

/// Hz to mel on the given scale (f64, as torchaudio/librosa compute it).
pub fn hz_to_mel(hz: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 2595.0 * (1.0 + hz / 700.0).log10(),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let min_log_hz = 1000.0;
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f64.ln() / 27.0;
            if hz >= min_log_hz {
                min_log_mel + (hz / min_log_hz).ln() / logstep
            } else {
                hz / f_sp
            }
        }
    }
}

/// Mel to Hz on the given scale (inverse of [`hz_to_mel`]).
pub fn mel_to_hz(mel: f64, scale: MelScale) -> f64 {
    match scale {
        MelScale::Htk => 700.0 * (10f64.powf(mel / 2595.0) - 1.0),
        MelScale::Slaney => {
            let f_sp = 200.0 / 3.0;
            let min_log_hz = 1000.0;
            let min_log_mel = min_log_hz / f_sp;
            let logstep = 6.4f64.ln() / 27.0;
            if mel >= min_log_mel {
                min_log_hz * (logstep * (mel - min_log_mel)).exp()
            } else {
                f_sp * mel
            }
        }
    }
}

/// `n` evenly spaced values from `a` to `b` inclusive, in f64.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => Vec::new(),
        1 => vec![a],
        _ => {
            let step = (b - a) / (n - 1) as f64;
            (0..n).map(|i| a + step * i as f64).collect()
        }
    }
}

/// The mel filterbank as torchaudio's `melscale_fbanks` returns it: shape `(n_freqs, n_mels)`,
/// row-major, f64.
///
/// Bin frequencies are `linspace(0, sample_rate // 2, n_freqs)` (torchaudio uses integer
/// division; identical to librosa for even rates).
pub fn mel_filterbank(
    n_freqs: usize,
    f_min: f64,
    f_max: f64,
    n_mels: usize,
    sample_rate: u32,
    norm: MelNorm,
    scale: MelScale,
) -> Vec<f64> {
    let all_freqs = linspace(0.0, f64::from(sample_rate / 2), n_freqs);
    let m_pts = linspace(hz_to_mel(f_min, scale), hz_to_mel(f_max, scale), n_mels + 2);
    let f_pts: Vec<f64> = m_pts.iter().map(|&m| mel_to_hz(m, scale)).collect();
    let f_diff: Vec<f64> = f_pts.windows(2).map(|w| w[1] - w[0]).collect();
    let mut fb = vec![0.0f64; n_freqs * n_mels];
    for (k, &f) in all_freqs.iter().enumerate() {
        for m in 0..n_mels {
            let down = -(f_pts[m] - f) / f_diff[m];
            let up = (f_pts[m + 2] - f) / f_diff[m + 1];
            let mut v = down.min(up).max(0.0);
            if norm == MelNorm::Slaney {
                v *= 2.0 / (f_pts[m + 2] - f_pts[m]);
            }
            fb[k * n_mels + m] = v;
        }
    }
    fb
}

/// Periodic Hann window of `win_length`, centred in `n_fft` zeros (as `torch.stft` pads it).
fn padded_hann(n_fft: usize, win_length: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; n_fft];
    let left = (n_fft - win_length) / 2;
    for i in 0..win_length {
        let x = 2.0 * std::f64::consts::PI * i as f64 / win_length as f64;
        w[left + i] = (0.5 - 0.5 * x.cos()) as f32;
    }
    w
}

/// A time-frequency matrix stored row-major as `(n_rows, n_frames)` (rows are mel bands).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spectrogram {
    /// `n_rows * n_frames` values; `data[r * n_frames + t]`.
    pub data: Vec<f32>,
    /// Number of rows (mel bands).
    pub n_rows: usize,
    /// Number of time frames.
    pub n_frames: usize,
}

impl Spectrogram {
    /// Value at row `r`, frame `t`.
    pub fn get(&self, r: usize, t: usize) -> f32 {
        self.data[r * self.n_frames + t]
    }

    /// Row `r` (one mel band over time).
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.n_frames..(r + 1) * self.n_frames]
    }

    /// Applies `ln(max(x, eps))` in place (RepLAI uses `eps = 1e-10`).
    pub fn ln_clamp(&mut self, eps: f32) {
        for v in &mut self.data {
            *v = v.max(eps).ln();
        }
    }

    /// Converts power (`multiplier = 10`) or amplitude (`20`) to decibels in place, as
    /// `torchaudio.transforms.AmplitudeToDB`: `multiplier * log10(max(x, amin))` minus
    /// `multiplier * log10(max(amin, reference))`, then floored at `max - top_db` over the
    /// whole matrix when `top_db` is set.
    pub fn to_db(&mut self, multiplier: f32, amin: f32, reference: f32, top_db: Option<f32>) {
        let offset = multiplier * amin.max(reference).log10();
        let mut max = f32::NEG_INFINITY;
        for v in &mut self.data {
            *v = multiplier * v.max(amin).log10() - offset;
            max = max.max(*v);
        }
        if let Some(top) = top_db {
            let floor = max - top;
            for v in &mut self.data {
                *v = v.max(floor);
            }
        }
    }

    /// Transposes to `(n_frames, n_rows)` row-major (time-major, the network layout).
    pub fn transposed(&self) -> Vec<f32> {
        let mut out = vec![0.0; self.data.len()];
        for r in 0..self.n_rows {
            for t in 0..self.n_frames {
                out[t * self.n_rows + r] = self.data[r * self.n_frames + t];
            }
        }
        out
    }
}

/// Reusable working memory for [`MelSpectrogram::compute_into`].
#[derive(Default)]
pub struct MelScratch {
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
    padded: Vec<f32>,
}

impl std::fmt::Debug for MelScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelScratch")
            .field("n_fft", &self.frame.len())
            .finish()
    }
}

/// One mel band as a contiguous run of FFT-bin weights (the filters are triangles, so at most
/// a few dozen of the `n_fft / 2 + 1` weights are non-zero).
#[derive(Debug, Clone)]
struct Band {
    first_bin: usize,
    weights: Vec<f32>,
}

/// A planned mel spectrogram (plan once, process many).
#[derive(Clone)]
pub struct MelSpectrogram {
    cfg: MelConfig,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    bands: Vec<Band>,
    fbank: Vec<f64>,
}

impl std::fmt::Debug for MelSpectrogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MelSpectrogram")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl MelSpectrogram {
    /// Validates `cfg` and plans the FFT, window and filterbank.
    pub fn new(cfg: MelConfig) -> Result<Self, AudioError> {
        cfg.validate()?;
        let n_freqs = cfg.n_fft / 2 + 1;
        let fbank = mel_filterbank(
            n_freqs,
            cfg.f_min,
            cfg.f_max_hz(),
            cfg.n_mels,
            cfg.sample_rate,
            cfg.norm,
            cfg.mel_scale,
        );
        let bands = (0..cfg.n_mels)
            .map(|m| {
                let col: Vec<f64> = (0..n_freqs).map(|k| fbank[k * cfg.n_mels + m]).collect();
                match col.iter().position(|&v| v != 0.0) {
                    None => Band {
                        first_bin: 0,
                        weights: Vec::new(),
                    },
                    Some(first) => {
                        let last = col.iter().rposition(|&v| v != 0.0).unwrap_or(first);
                        Band {
                            first_bin: first,
                            weights: col[first..=last].iter().map(|&v| v as f32).collect(),
                        }
                    }
                }
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(cfg.n_fft);
        let window = padded_hann(cfg.n_fft, cfg.win_length);
        Ok(Self {
            cfg,
            fft,
            window,
            bands,
            fbank,
        })
    }

    /// The configuration this plan was built from.
    pub fn config(&self) -> &MelConfig {
        &self.cfg
    }

    /// Number of mel bands (rows of the output).
    pub fn n_mels(&self) -> usize {
        self.cfg.n_mels
    }

    /// The filterbank, `(n_fft / 2 + 1, n_mels)` row-major f64, as torchaudio's `melscale_fbanks`.
    pub fn filterbank(&self) -> &[f64] {
        &self.fbank
    }

    /// Frames produced for `n_samples` input samples (0 if the input is too short).
    pub fn n_frames(&self, n_samples: usize) -> usize {
        let (n_fft, hop) = (self.cfg.n_fft, self.cfg.hop_length);
        // `torch.stft`: 1 + (len + 2 * (n_fft / 2) - n_fft) / hop; for odd n_fft centring
        // pads one sample less than a full frame, so this is not simply 1 + len / hop.
        let padded = if self.cfg.center {
            n_samples + 2 * (n_fft / 2)
        } else {
            n_samples
        };
        if n_samples > 0 && padded >= n_fft {
            (padded - n_fft) / hop + 1
        } else {
            0
        }
    }

    /// Computes the mel spectrogram of `samples` into a new [`Spectrogram`].
    pub fn compute(&self, samples: &[f32]) -> Result<Spectrogram, AudioError> {
        let mut out = Spectrogram::default();
        let mut scratch = MelScratch::default();
        self.compute_into(samples, &mut out, &mut scratch)?;
        Ok(out)
    }

    /// Computes the mel spectrogram of `samples` into `out` (resized to `(n_mels, n_frames)`),
    /// using `scratch` for intermediate buffers.
    ///
    /// Errors on NaN/Inf input and on inputs too short for one frame (or, with reflect
    /// padding, shorter than `n_fft / 2 + 1` samples, which `torch.stft` rejects too).
    pub fn compute_into(
        &self,
        samples: &[f32],
        out: &mut Spectrogram,
        scratch: &mut MelScratch,
    ) -> Result<(), AudioError> {
        check_finite(samples, "mel spectrogram input", 0)?;
        let n_fft = self.cfg.n_fft;
        let n_frames = self.n_frames(samples.len());
        if samples.is_empty() || n_frames == 0 {
            return Err(AudioError::TooShort {
                n_samples: samples.len(),
                reason: format!("one uncentred frame needs n_fft = {n_fft} samples"),
            });
        }
        let signal: &[f32] = if self.cfg.center {
            let pad = n_fft / 2;
            if self.cfg.pad_mode == PadMode::Reflect && samples.len() <= pad {
                return Err(AudioError::TooShort {
                    n_samples: samples.len(),
                    reason: format!("reflect padding by {pad} needs more than {pad} samples"),
                });
            }
            pad_signal(samples, pad, self.cfg.pad_mode, &mut scratch.padded);
            &scratch.padded
        } else {
            samples
        };

        let n_freqs = n_fft / 2 + 1;
        scratch.frame.resize(n_fft, 0.0);
        scratch.spectrum.resize(n_freqs, Complex::default());
        scratch
            .fft_scratch
            .resize(self.fft.get_scratch_len(), Complex::default());
        // Power spectra of FRAME_GROUP frames, bin-major: power[bin * FRAME_GROUP + frame].
        scratch.power.resize(n_freqs * FRAME_GROUP, 0.0);
        out.n_rows = self.cfg.n_mels;
        out.n_frames = n_frames;
        out.data.resize(self.cfg.n_mels * n_frames, 0.0);

        let hop = self.cfg.hop_length;
        for g in (0..n_frames).step_by(FRAME_GROUP) {
            let in_group = FRAME_GROUP.min(n_frames - g);
            for f in 0..in_group {
                let t = g + f;
                let src = &signal[t * hop..t * hop + n_fft];
                for ((x_w, &x), &w) in scratch.frame.iter_mut().zip(src).zip(&self.window) {
                    *x_w = x * w;
                }
                self.fft
                    .process_with_scratch(
                        &mut scratch.frame,
                        &mut scratch.spectrum,
                        &mut scratch.fft_scratch,
                    )
                    .map_err(|e| AudioError::InvalidConfig(format!("FFT failed: {e}")))?;
                let column = scratch.power.iter_mut().skip(f).step_by(FRAME_GROUP);
                if self.cfg.power == 2.0 {
                    for (p, c) in column.zip(&scratch.spectrum) {
                        *p = c.re * c.re + c.im * c.im;
                    }
                } else {
                    let e = self.cfg.power;
                    for (p, c) in column.zip(&scratch.spectrum) {
                        *p = (c.re * c.re + c.im * c.im).sqrt().powf(e);
                    }
                }
            }
            mel_bands(
                &self.bands,
                &scratch.power,
                &mut out.data,
                n_frames,
                g,
                in_group,
            );
        }
        Ok(())
    }
}

/// Frames whose mel bands are accumulated side by side (one vector of sums per band); each
/// frame's sum still runs over its bins in order, so the values do not depend on the grouping.
const FRAME_GROUP: usize = 8;

/// Body of [`mel_bands`]: band sums of the frames `g .. g + in_group` from bin-major powers.
#[inline(always)]
fn mel_bands_body(
    bands: &[Band],
    power: &[f32],
    data: &mut [f32],
    n_frames: usize,
    g: usize,
    in_group: usize,
) {
    for (m, band) in bands.iter().enumerate() {
        let mut acc = [0.0f32; FRAME_GROUP];
        let bins = &power[band.first_bin * FRAME_GROUP..];
        for (&w, p) in band.weights.iter().zip(bins.chunks_exact(FRAME_GROUP)) {
            for (a, &x) in acc.iter_mut().zip(p) {
                *a += w * x;
            }
        }
        data[m * n_frames + g..m * n_frames + g + in_group].copy_from_slice(&acc[..in_group]);
    }
}

crate::multiversion!(
    /// [`mel_bands_body`] with the widest vectors the CPU has.
    fn mel_bands(
        bands: &[Band],
        power: &[f32],
        data: &mut [f32],
        n_frames: usize,
        g: usize,
        in_group: usize,
    ) => mel_bands_body
);

/// Pads `x` by `pad` on both sides into `out` (reflect requires `x.len() > pad`).
fn pad_signal(x: &[f32], pad: usize, mode: PadMode, out: &mut Vec<f32>) {
    out.clear();
    out.reserve(x.len() + 2 * pad);
    let n = x.len();
    match mode {
        PadMode::Reflect => {
            out.extend((1..=pad).rev().map(|i| x[i]));
            out.extend_from_slice(x);
            out.extend((0..pad).map(|i| x[n - 2 - i]));
        }
        PadMode::Constant => {
            out.resize(pad, 0.0);
            out.extend_from_slice(x);
            out.resize(n + 2 * pad, 0.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_padding_matches_numpy() {
        let mut out = Vec::new();
        pad_signal(&[1.0, 2.0, 3.0, 4.0], 2, PadMode::Reflect, &mut out);
        assert_eq!(out, [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]);
        pad_signal(&[1.0, 2.0, 3.0], 2, PadMode::Constant, &mut out);
        assert_eq!(out, [0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0]);
    }

    #[test]
    fn mel_scales_round_trip() {
        for scale in [MelScale::Htk, MelScale::Slaney] {
            for hz in [0.0, 100.0, 999.0, 1000.0, 1001.0, 4000.0, 22_050.0] {
                let back = mel_to_hz(hz_to_mel(hz, scale), scale);
                assert!(
                    (back - hz).abs() < 1e-9 * hz.max(1.0),
                    "{scale:?} {hz} {back}"
                );
            }
        }
        // Slaney is linear (15 mel per 1 kHz) below 1 kHz.
        assert!((hz_to_mel(1000.0, MelScale::Slaney) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(1000.0, MelScale::Htk) - 999.985_7).abs() < 1e-3);
    }

    #[test]
    fn frame_counts() -> Result<(), AudioError> {
        let m = MelSpectrogram::new(MelConfig::replai())?;
        assert_eq!(m.n_frames(32_000), 124);
        assert_eq!(m.n_frames(511), 0);
        let c = MelSpectrogram::new(MelConfig {
            center: true,
            ..MelConfig::replai()
        })?;
        assert_eq!(c.n_frames(32_000), 126);
        Ok(())
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let cases = [
            MelConfig {
                n_fft: 0,
                ..MelConfig::replai()
            },
            MelConfig {
                win_length: 1024,
                ..MelConfig::replai()
            },
            MelConfig {
                hop_length: 0,
                ..MelConfig::replai()
            },
            MelConfig {
                n_mels: 0,
                ..MelConfig::replai()
            },
            MelConfig {
                power: f32::NAN,
                ..MelConfig::replai()
            },
            MelConfig {
                f_min: 9000.0,
                ..MelConfig::replai()
            },
        ];
        for cfg in cases {
            assert!(matches!(
                MelSpectrogram::new(cfg),
                Err(AudioError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn short_and_non_finite_inputs_are_errors() -> Result<(), AudioError> {
        let m = MelSpectrogram::new(MelConfig::replai())?;
        assert!(matches!(
            m.compute(&[0.0; 100]),
            Err(AudioError::TooShort { .. })
        ));
        assert!(matches!(m.compute(&[]), Err(AudioError::TooShort { .. })));
        let mut x = vec![0.0f32; 1000];
        x[700] = f32::INFINITY;
        match m.compute(&x) {
            Err(AudioError::NonFiniteSample { index, .. }) => assert_eq!(index, 700),
            other => panic!("expected NonFiniteSample, got {other:?}"),
        }
        let c = MelSpectrogram::new(MelConfig {
            center: true,
            ..MelConfig::replai()
        })?;
        assert!(matches!(
            c.compute(&[0.0; 256]),
            Err(AudioError::TooShort { .. })
        ));
        assert!(c.compute(&[0.0; 257]).is_ok());
        Ok(())
    }

    #[test]
    fn db_conversion_follows_amplitude_to_db() {
        let mut s = Spectrogram {
            data: vec![1.0, 0.1, 1e-12, 100.0],
            n_rows: 2,
            n_frames: 2,
        };
        s.to_db(10.0, 1e-10, 1.0, Some(80.0));
        let want = [0.0, -10.0, -60.0, 20.0];
        for (a, b) in s.data.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        let mut s = Spectrogram {
            data: vec![1.0, 1e-12],
            n_rows: 1,
            n_frames: 2,
        };
        s.to_db(10.0, 1e-10, 1.0, Some(50.0));
        assert!((s.data[1] + 50.0).abs() < 1e-4);
    }
}
