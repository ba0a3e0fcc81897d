//! Moments of interaction (MoI) in long recordings: the RepLAI audio-peak detector, bit-faithful
//! to the released reference (scipy 1.6), plus a general scipy-exact [`find_peaks`].
//!
//! The reference pipeline (RepLAI `VideoAudioPeakDataset.find_audio_peaks`) at the recording's
//! native sample rate, computed here in float64:
//!
//! 1. `scipy.signal.spectrogram(x, fs)` with every default: periodic Tukey(0.25) window of 256
//!    samples, hop 224, per-segment mean removed, one-sided PSD density (non-DC/Nyquist bins
//!    doubled); 129 bins, frame `k` centred at `(128 + 224 k) / fs` seconds;
//! 2. `L = log10(S + 1e-5)`;
//! 3. per frequency row, z-score over time with the population std: `(L - mean) / (std + 1e-5)`;
//! 4. curve = mean over the 129 rows;
//! 5. `find_peaks(curve, distance = 10, prominence = 1.0)` — 10 frames is the "50 ms rule";
//! 6. valid moments: `delta + clip <= t <= D - delta - clip` (`[0.6, D - 0.6]` s by default).
//!
//! ```
//! use moi_detect::{detect, MoiConfig};
//! // 3 s of a quiet 150 Hz hum at 44.1 kHz with a loud click at 1.5 s.
//! let sr = 44_100;
//! let mut x: Vec<f32> = (0..3 * sr)
//!     .map(|i| 0.01 * (2.0 * std::f32::consts::PI * 150.0 * i as f32 / sr as f32).sin())
//!     .collect();
//! for (k, v) in x[66_150..66_250].iter_mut().enumerate() {
//!     *v += if k % 2 == 0 { 0.8 } else { -0.8 };
//! }
//! let moments = detect(&x, sr as u32, &MoiConfig::default())?;
//! assert_eq!(moments.len(), 1);
//! assert!((moments[0].time_s - 1.5).abs() < 0.01);
//! # Ok::<(), moi_detect::MoiError>(())
//! ```
//!
//! Edge cases: an empty input gives an empty analysis (no frames, no moments, not an error);
//! inputs shorter than one 256-sample segment give scipy's single-frame result (curve `[0]`,
//! no moments); digital silence gives a constant curve and no moments; NaN or infinite samples
//! are an error ([`MoiError::NonFinite`]) because one of them would poison every z-score.
//!
//! For arbitrarily long inputs fed chunk by chunk see [`StreamingDetector`] (exact, buffers the
//! log-spectrogram) and [`WindowedDetector`] (bounded memory, sliding-window statistics).

mod error;
mod log10;
mod logmel;
mod peaks;
mod spectrum;
mod streaming;

pub use error::{MoiError, Result};
pub use peaks::{
    find_peaks, local_maxima, peak_prominence, peak_width, select_by_distance, PeakOptions,
    PeakWarning, Peaks, Range,
};
pub use spectrum::tukey_periodic;
pub use streaming::{StreamingDetector, WindowedDetector};

/// Which energy curve the peaks are searched in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum CurveKind {
    /// The released code: scipy PSD spectrogram, `log10(S + 1e-5)`, z-score, mean over bins.
    #[default]
    ScipyPsd,
    /// The paper's wording ("log-mel spectrogram"): same frame grid, HTK mel power bands
    /// ([`MoiConfig::n_mels`]), `ln(max(mel, 1e-10))` as in RepLAI's audio front end, then the
    /// same z-score and mean over bands. Not what the released code does.
    LogMel,
}

/// Parameters of the detector. `Default` is the released RepLAI configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MoiConfig {
    /// Segment length in samples (scipy default 256).
    pub nperseg: usize,
    /// Overlap between segments in samples (scipy default `nperseg / 8` = 32, hop 224).
    pub noverlap: usize,
    /// Added to the PSD before `log10`; acts as a noise floor (1e-5).
    pub log_offset: f64,
    /// Added to each row's standard deviation (1e-5) so constant rows give 0, not NaN.
    pub z_eps: f64,
    /// Minimal distance between moments in frames, rounded up (10 = 50.8 ms at 44.1 kHz).
    pub distance: f64,
    /// Minimal prominence in z-score units (1.0).
    pub prominence: f64,
    /// Margin between a moment and its before/after clips in seconds (0.1).
    pub delta_s: f64,
    /// Length of each before/after clip in seconds (0.5).
    pub clip_s: f64,
    /// Recording length `D` used by the validity filter; `None` = audio length. The reference
    /// uses the *video* stream's duration, which a caller with video should pass here.
    pub duration_s: Option<f64>,
    /// Which curve to search.
    pub curve: CurveKind,
    /// Mel bands of [`CurveKind::LogMel`] (ignored by the reference curve).
    pub n_mels: usize,
}

impl Default for MoiConfig {
    fn default() -> Self {
        Self {
            nperseg: 256,
            noverlap: 32,
            log_offset: 1e-5,
            z_eps: 1e-5,
            distance: 10.0,
            prominence: 1.0,
            delta_s: 0.1,
            clip_s: 0.5,
            duration_s: None,
            curve: CurveKind::ScipyPsd,
            n_mels: 40,
        }
    }
}

impl MoiConfig {
    /// Checks the fields that would otherwise make scipy raise or the curve meaningless.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(MoiError::InvalidConfig(m));
        if self.nperseg < 2 {
            return bad(format!("nperseg must be at least 2, got {}", self.nperseg));
        }
        if self.noverlap >= self.nperseg {
            return bad(format!(
                "noverlap ({}) must be smaller than nperseg ({})",
                self.noverlap, self.nperseg
            ));
        }
        if self.distance.is_nan() || self.distance < 1.0 {
            return bad(format!(
                "distance must be >= 1 frame, got {}",
                self.distance
            ));
        }
        for (name, v) in [
            ("log_offset", self.log_offset),
            ("z_eps", self.z_eps),
            ("prominence", self.prominence),
            ("delta_s", self.delta_s),
            ("clip_s", self.clip_s),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(format!("{name} must be finite and >= 0, got {v}"));
            }
        }
        if let Some(d) = self.duration_s {
            if !d.is_finite() || d < 0.0 {
                return bad(format!("duration_s must be finite and >= 0, got {d}"));
            }
        }
        if self.curve == CurveKind::LogMel && self.n_mels == 0 {
            return bad("n_mels must be positive for the log-mel curve".into());
        }
        Ok(())
    }

    /// Samples between frames.
    pub fn hop(&self) -> usize {
        self.nperseg - self.noverlap
    }

    /// Lower and upper bound (seconds) of the validity filter for a recording of `d` seconds.
    pub fn valid_range(&self, d: f64) -> (f64, f64) {
        (self.delta_s + self.clip_s, d - self.delta_s - self.clip_s)
    }
}

/// One detected peak of the energy curve.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Moment {
    /// Centre of the peak frame in seconds from the first sample (`t[index]` in scipy).
    pub time_s: f64,
    /// Frame index in the curve.
    pub index: usize,
    /// Prominence in z-score units.
    pub prominence: f64,
    /// Frame of the left base (lowest point before a higher peak).
    pub left_base: usize,
    /// Frame of the right base.
    pub right_base: usize,
}

/// Everything the detector computed for one recording.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MoiAnalysis {
    /// The energy curve, one value per frame.
    pub curve: Vec<f64>,
    /// Frame centres in seconds.
    pub times_s: Vec<f64>,
    /// Every peak passing the distance and prominence rules, in time order.
    pub peaks: Vec<Moment>,
    /// The peaks inside the validity range, in time order.
    pub valid: Vec<Moment>,
    /// The `D` used by the validity filter.
    pub duration_s: f64,
}

/// Frame centres as scipy computes them: `(nperseg / 2 + k * hop) / fs`.
pub fn frame_times(n_frames: usize, nperseg: usize, hop: usize, sample_rate: u32) -> Vec<f64> {
    let start = nperseg as f64 / 2.0;
    let fs = f64::from(sample_rate);
    (0..n_frames)
        .map(|k| (start + (k * hop) as f64) / fs)
        .collect()
}

pub(crate) fn check_finite(samples: &[f32], offset: usize) -> Result<()> {
    use rayon::prelude::*;
    // A branch-free scan per block (vectorised), blocks in parallel; the position is only
    // searched for when something is wrong.
    let finite = samples
        .par_chunks(1 << 16)
        .all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite()));
    if finite {
        return Ok(());
    }
    if let Some(i) = samples.iter().position(|v| !v.is_finite()) {
        return Err(MoiError::NonFinite {
            what: "audio samples",
            index: offset + i,
            value: f64::from(samples[i]),
        });
    }
    Ok(())
}

pub(crate) fn check_rate(sample_rate: u32) -> Result<()> {
    if sample_rate == 0 {
        return Err(MoiError::InvalidInput(
            "sample rate must be positive".into(),
        ));
    }
    Ok(())
}

/// Peaks (distance + prominence rules) and the valid subset for a finished curve.
pub(crate) fn finish_analysis(
    curve: Vec<f64>,
    times_s: Vec<f64>,
    duration_s: f64,
    cfg: &MoiConfig,
) -> Result<MoiAnalysis> {
    let opts = PeakOptions {
        distance: Some(cfg.distance),
        prominence: Some(Range::at_least(cfg.prominence)),
        ..Default::default()
    };
    let p = find_peaks(&curve, &opts)?;
    let peaks: Vec<Moment> = match (&p.prominences, &p.left_bases, &p.right_bases) {
        (Some(pr), Some(lb), Some(rb)) => p
            .peaks
            .iter()
            .enumerate()
            .map(|(i, &k)| Moment {
                time_s: times_s[k],
                index: k,
                prominence: pr[i],
                left_base: lb[i],
                right_base: rb[i],
            })
            .collect(),
        _ => Vec::new(),
    };
    let d = cfg.duration_s.unwrap_or(duration_s);
    let (lo, hi) = cfg.valid_range(d);
    let valid = peaks
        .iter()
        .filter(|m| lo <= m.time_s && m.time_s <= hi)
        .copied()
        .collect();
    Ok(MoiAnalysis {
        curve,
        times_s,
        peaks,
        valid,
        duration_s: d,
    })
}

/// A log spectrogram stored frame-major: `data[k * n_bins + b]` is bin `b` of frame `k`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LogSpectrogram {
    /// `n_frames * n_bins` values.
    pub data: Vec<f64>,
    /// Number of frames (full segments; scipy drops the incomplete tail).
    pub n_frames: usize,
    /// Bins per frame: `nperseg / 2 + 1` (129) for the reference, `n_mels` for the log-mel curve.
    pub n_bins: usize,
}

impl LogSpectrogram {
    /// Bin values of frame `k`.
    pub fn frame(&self, k: usize) -> &[f64] {
        &self.data[k * self.n_bins..(k + 1) * self.n_bins]
    }
}

/// The log spectrogram the curve is built from (`log10(PSD + 1e-5)` for the reference,
/// `ln(max(mel, 1e-10))` for the log-mel variant), computed in parallel. Inputs shorter than
/// one segment give zero frames.
pub fn log_spectrogram(
    samples: &[f32],
    sample_rate: u32,
    cfg: &MoiConfig,
) -> Result<LogSpectrogram> {
    check_finite(samples, 0)?;
    log_spectrogram_checked(samples, sample_rate, cfg)
}

/// [`log_spectrogram`] on samples already known to be finite.
fn log_spectrogram_checked(
    samples: &[f32],
    sample_rate: u32,
    cfg: &MoiConfig,
) -> Result<LogSpectrogram> {
    let features = streaming::Features::new(cfg, sample_rate)?;
    let n_bins = features.n_bins();
    let n_frames = if samples.len() < cfg.nperseg {
        0
    } else {
        (samples.len() - cfg.nperseg) / cfg.hop() + 1
    };
    let mut data = av_audio::mem::zeroed_f64(n_frames * n_bins);
    if n_frames > 0 {
        features.frames_into(samples, 0, &mut data)?;
    }
    Ok(LogSpectrogram {
        data,
        n_frames,
        n_bins,
    })
}

/// The energy curve and its frame times (no peak search).
pub fn energy_curve(
    samples: &[f32],
    sample_rate: u32,
    cfg: &MoiConfig,
) -> Result<(Vec<f64>, Vec<f64>)> {
    cfg.validate()?;
    check_rate(sample_rate)?;
    let n = samples.len();
    // The PSD curve checks finiteness lazily (below); the log-mel path clamps before its
    // logarithm, which would hide a NaN, so it checks first.
    if n < cfg.nperseg || cfg.curve == CurveKind::LogMel {
        check_finite(samples, 0)?;
    }
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    if n < cfg.nperseg {
        // scipy shrinks nperseg to the input length: one frame, whose z-score is exactly 0.
        return Ok((vec![0.0], frame_times(1, n, n, sample_rate)));
    }
    let spec = log_spectrogram_checked(samples, sample_rate, cfg)?;
    let (mean, denom) = spectrum::zscore_stats(&spec.data, spec.n_bins, cfg.z_eps);
    if cfg.curve == CurveKind::ScipyPsd {
        // A NaN or infinite sample turns its frames' log-PSD into NaN, hence some row mean;
        // only then is the audio scanned for the position to report. Samples after the last
        // full segment never reach a frame and are checked directly. This saves a full pass
        // over the audio on the normal path.
        let covered = (spec.n_frames - 1) * cfg.hop() + cfg.nperseg;
        check_finite(&samples[covered..], covered)?;
        if mean.iter().any(|m| !m.is_finite()) {
            check_finite(samples, 0)?;
        }
    }
    let curve = spectrum::curve_from_stats(&spec.data, spec.n_bins, &mean, &denom);
    let times = frame_times(curve.len(), cfg.nperseg, cfg.hop(), sample_rate);
    Ok((curve, times))
}

/// Curve, all peaks and valid moments of a whole recording (mono, native rate).
pub fn analyze(samples: &[f32], sample_rate: u32, cfg: &MoiConfig) -> Result<MoiAnalysis> {
    let (curve, times) = energy_curve(samples, sample_rate, cfg)?;
    let d = samples.len() as f64 / f64::from(sample_rate);
    finish_analysis(curve, times, d, cfg)
}

/// The valid moments of interaction of a recording, in time order.
pub fn detect(samples: &[f32], sample_rate: u32, cfg: &MoiConfig) -> Result<Vec<Moment>> {
    Ok(analyze(samples, sample_rate, cfg)?.valid)
}
