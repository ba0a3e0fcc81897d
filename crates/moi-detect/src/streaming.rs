//! Chunk-by-chunk detection.
//!
//! * [`StreamingDetector`] reproduces the offline result exactly. The reference standardises
//!   every frequency row with its mean and standard deviation over the *whole* recording, so
//!   no curve value is known before the last sample has arrived. It therefore buffers the
//!   float64 log-spectrogram (`n_bins` = 129 values = 1032 bytes per frame, about 203 kB per
//!   second of 44.1 kHz audio, 730 MB per hour) but never the audio itself (at most one segment
//!   of samples is kept). Float64 is required: float32 log-powers near the `-5` floor are only
//!   resolved to about 5e-7, while the standard deviation of such rows is about 1e-4.
//! * [`WindowedDetector`] runs in bounded memory on endless streams: each frame is
//!   standardised with statistics over a centred sliding window of `W` seconds instead of the
//!   whole recording, prominences are measured within the same window (`wlen = 2h + 1` frames),
//!   and moments are emitted as soon as they can no longer change. When the window covers the
//!   whole recording it gives the offline result.

use std::collections::VecDeque;

use crate::error::{MoiError, Result};
use crate::logmel::LogMelFrames;
use crate::spectrum::{self, LogPsd};
use crate::{
    check_finite, check_rate, finish_analysis, frame_times, CurveKind, MoiAnalysis, MoiConfig,
    Moment,
};

/// The per-frame feature transform of either curve kind.
pub(crate) enum Features {
    Psd(LogPsd),
    Mel(LogMelFrames),
}

impl Features {
    pub(crate) fn new(cfg: &MoiConfig, sample_rate: u32) -> Result<Self> {
        cfg.validate()?;
        check_rate(sample_rate)?;
        Ok(match cfg.curve {
            CurveKind::ScipyPsd => Self::Psd(LogPsd::new(
                cfg.nperseg,
                cfg.noverlap,
                f64::from(sample_rate),
                cfg.log_offset,
            )?),
            CurveKind::LogMel => Self::Mel(LogMelFrames::new(cfg, sample_rate)?),
        })
    }
    pub(crate) fn n_bins(&self) -> usize {
        match self {
            Self::Psd(p) => p.n_bins(),
            Self::Mel(m) => m.n_bins(),
        }
    }
    /// Frames `[first, first + n)` of `samples` into `out` (frame-major, `n * n_bins`).
    pub(crate) fn frames_into(&self, samples: &[f32], first: usize, out: &mut [f64]) -> Result<()> {
        match self {
            Self::Psd(p) => {
                p.frames_into(samples, first, out);
                Ok(())
            }
            Self::Mel(m) => m.frames_into(samples, first, out),
        }
    }
}

/// Keeps the samples of the segments not yet transformed and turns complete segments into
/// feature rows.
struct Framer {
    features: Features,
    nperseg: usize,
    hop: usize,
    nb: usize,
    /// Samples from absolute position `n_frames * hop` on.
    pending: Vec<f32>,
    /// Frames produced so far.
    n_frames: usize,
    /// Samples pushed so far.
    n_samples: usize,
}

impl Framer {
    fn new(cfg: &MoiConfig, sample_rate: u32) -> Result<Self> {
        let features = Features::new(cfg, sample_rate)?;
        Ok(Self {
            nb: features.n_bins(),
            features,
            nperseg: cfg.nperseg,
            hop: cfg.hop(),
            pending: Vec::new(),
            n_frames: 0,
            n_samples: 0,
        })
    }

    /// Appends `chunk` and writes the rows of every newly complete segment to `out`.
    fn push(&mut self, chunk: &[f32], out: &mut Vec<f64>) -> Result<usize> {
        check_finite(chunk, self.n_samples)?;
        self.n_samples += chunk.len();
        self.pending.extend_from_slice(chunk);
        if self.pending.len() < self.nperseg {
            return Ok(0);
        }
        // Frames are transformed in pairs (2m, 2m + 1) whatever the chunking (the PSD shares
        // one FFT per pair, and the pairing changes the last bits), so an odd frame waits for
        // its partner or for `flush`.
        let n_new = ((self.pending.len() - self.nperseg) / self.hop + 1) & !1;
        if n_new == 0 {
            return Ok(0);
        }
        self.emit(n_new, out)
    }

    /// Transforms the frame still waiting for a partner, at the end of the stream.
    fn flush(&mut self, out: &mut Vec<f64>) -> Result<usize> {
        if self.pending.len() < self.nperseg {
            return Ok(0);
        }
        let n_new = (self.pending.len() - self.nperseg) / self.hop + 1;
        self.emit(n_new, out)
    }

    /// Appends the rows of the next `n_new` frames of `pending` to `out`.
    fn emit(&mut self, n_new: usize, out: &mut Vec<f64>) -> Result<usize> {
        let start = out.len();
        out.resize(start + n_new * self.nb, 0.0);
        self.features
            .frames_into(&self.pending, 0, &mut out[start..])?;
        self.pending.drain(..n_new * self.hop);
        self.n_frames += n_new;
        Ok(n_new)
    }
}

/// Exact streaming detector: same curve and moments as [`crate::analyze`] on the concatenated
/// chunks, for any chunking. Memory: the float64 log-spectrogram (see the module docs).
///
/// ```
/// use moi_detect::{analyze, MoiConfig, StreamingDetector};
/// let x: Vec<f32> = (0..44_100).map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1).collect();
/// let cfg = MoiConfig::default();
/// let mut s = StreamingDetector::new(44_100, cfg)?;
/// for chunk in x.chunks(1000) {
///     s.push(chunk)?;
/// }
/// assert_eq!(s.finish()?, analyze(&x, 44_100, &cfg)?);
/// # Ok::<(), moi_detect::MoiError>(())
/// ```
pub struct StreamingDetector {
    cfg: MoiConfig,
    sample_rate: u32,
    framer: Framer,
    log_spec: Vec<f64>,
}

impl StreamingDetector {
    /// A detector for mono audio at `sample_rate`.
    pub fn new(sample_rate: u32, cfg: MoiConfig) -> Result<Self> {
        Ok(Self {
            framer: Framer::new(&cfg, sample_rate)?,
            cfg,
            sample_rate,
            log_spec: Vec::new(),
        })
    }

    /// Feeds the next samples (any length, including 0). NaN/Inf is an error naming the
    /// absolute sample index.
    pub fn push(&mut self, chunk: &[f32]) -> Result<()> {
        self.framer.push(chunk, &mut self.log_spec)?;
        Ok(())
    }

    /// Samples received so far.
    pub fn n_samples(&self) -> usize {
        self.framer.n_samples
    }

    /// Bytes held by the buffered log-spectrogram (grows by `8 * n_bins` per frame).
    pub fn buffered_bytes(&self) -> usize {
        self.log_spec.len() * std::mem::size_of::<f64>()
            + self.framer.pending.len() * std::mem::size_of::<f32>()
    }

    /// Ends the stream: curve, peaks and valid moments of everything pushed.
    pub fn finish(mut self) -> Result<MoiAnalysis> {
        self.framer.flush(&mut self.log_spec)?;
        let n = self.framer.n_samples;
        let d = n as f64 / f64::from(self.sample_rate);
        let (curve, times) = if n == 0 {
            (Vec::new(), Vec::new())
        } else if n < self.cfg.nperseg {
            (vec![0.0], frame_times(1, n, n, self.sample_rate))
        } else {
            let c = spectrum::zscore_curve(&self.log_spec, self.framer.nb, self.cfg.z_eps);
            let t = frame_times(c.len(), self.cfg.nperseg, self.cfg.hop(), self.sample_rate);
            (c, t)
        };
        finish_analysis(curve, times, d, &self.cfg)
    }
}

/// Distance-rule state of a candidate peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Undecided,
    Kept,
    Removed,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    pos: usize,
    height: f64,
    fate: Fate,
}

/// Incremental `find_peaks(curve, distance, prominence, wlen)` on a curve that arrives in
/// order; peaks are reported once the rest of the curve can no longer change them.
struct PeakTracker {
    /// Curve values from absolute index `base` on.
    curve: VecDeque<f64>,
    base: usize,
    /// Local-maximum scanner position (absolute): next index to examine.
    scan: usize,
    /// Known candidates, in position order, not yet reported or discarded.
    cands: VecDeque<Candidate>,
    distance: f64,
    prominence: f64,
    half_wlen: usize,
    ended: bool,
}

impl PeakTracker {
    fn new(distance: f64, prominence: f64, half_wlen: usize) -> Self {
        Self {
            curve: VecDeque::new(),
            base: 0,
            scan: 1,
            cands: VecDeque::new(),
            distance: distance.ceil(),
            prominence,
            half_wlen,
            ended: false,
        }
    }

    fn len(&self) -> usize {
        self.base + self.curve.len()
    }

    fn at(&self, i: usize) -> f64 {
        self.curve[i - self.base]
    }

    /// Finds the local maxima whose plateau is resolved, as `local_maxima` does.
    fn scan_maxima(&mut self) {
        let n = self.len();
        while self.scan + 1 < n {
            let i = self.scan;
            if self.at(i - 1) < self.at(i) {
                let mut ahead = i + 1;
                while ahead < n && self.at(ahead) == self.at(i) {
                    ahead += 1;
                }
                if ahead == n {
                    if self.ended {
                        // Plateau running into the end: never a peak.
                        self.scan = n;
                    }
                    return;
                }
                if self.at(ahead) < self.at(i) {
                    self.cands.push_back(Candidate {
                        pos: (i + ahead - 1) / 2,
                        height: self.at(i),
                        fate: Fate::Undecided,
                    });
                    self.scan = ahead + 1;
                    continue;
                }
            }
            self.scan += 1;
        }
    }

    /// Every local maximum with a midpoint below `limit` is known.
    fn resolved_below(&self, limit: f64) -> bool {
        self.ended || (self.scan as f64) >= limit
    }

    fn higher(a: &Candidate, b: &Candidate) -> bool {
        // Priority: height, then rightmost first (the crate's distance tie rule).
        a.height > b.height || (a.height == b.height && a.pos > b.pos)
    }

    /// Decides every candidate whose higher-priority neighbours are decided.
    fn decide(&mut self) {
        loop {
            let mut changed = false;
            for j in 0..self.cands.len() {
                let c = self.cands[j];
                if c.fate != Fate::Undecided {
                    continue;
                }
                // All candidates with pos < c.pos + distance must be known; a candidate's
                // midpoint is at least its rising edge, which the scanner has passed.
                if !self.resolved_below(c.pos as f64 + self.distance) {
                    continue;
                }
                let mut blocked = false;
                let mut removed = false;
                let near = |o: &Candidate| (c.pos.abs_diff(o.pos) as f64) < self.distance;
                for o in self.cands.iter() {
                    if o.pos == c.pos || !near(o) || !Self::higher(o, &c) {
                        continue;
                    }
                    match o.fate {
                        Fate::Kept => removed = true,
                        Fate::Undecided => blocked = true,
                        Fate::Removed => {}
                    }
                }
                if removed {
                    self.cands[j].fate = Fate::Removed;
                    changed = true;
                } else if !blocked {
                    self.cands[j].fate = Fate::Kept;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// Reports kept candidates whose prominence window is complete; drops what is no longer
    /// needed.
    fn drain(&mut self, out: &mut Vec<Moment>, times: impl Fn(usize) -> f64) {
        self.decide();
        let n = self.len();
        // Candidates leave in position order so that moments come out in time order; a
        // removed candidate still matters to its undecided neighbours, so it stays until every
        // candidate within `distance` of it is decided.
        while let Some(c) = self.cands.front().copied() {
            // A decided candidate still matters to undecided neighbours within `distance`.
            let blocking = c.fate == Fate::Undecided
                || self
                    .cands
                    .iter()
                    .any(|o| o.fate == Fate::Undecided && ((o.pos - c.pos) as f64) < self.distance);
            if blocking {
                break;
            }
            if c.fate == Fate::Kept {
                if !(self.ended || c.pos + self.half_wlen < n) {
                    break;
                }
                let (prom, lb, rb) = self.prominence_of(c.pos);
                if prom >= self.prominence {
                    out.push(Moment {
                        time_s: times(c.pos),
                        index: c.pos,
                        prominence: prom,
                        left_base: lb,
                        right_base: rb,
                    });
                }
            }
            self.cands.pop_front();
        }
        // Keep the curve from the oldest index anything still needs.
        let mut keep_from = self.scan.saturating_sub(1);
        if let Some(c) = self.cands.front() {
            keep_from = keep_from.min(c.pos.saturating_sub(self.half_wlen));
        }
        while self.base < keep_from && !self.curve.is_empty() {
            self.curve.pop_front();
            self.base += 1;
        }
    }

    /// scipy's prominence with `wlen = 2 * half_wlen + 1` on the retained curve.
    fn prominence_of(&self, peak: usize) -> (f64, usize, usize) {
        let i_min = peak.saturating_sub(self.half_wlen).max(self.base);
        let i_max = (peak + self.half_wlen).min(self.len() - 1);
        let xp = self.at(peak);
        let (mut lb, mut lmin) = (peak, xp);
        let mut i = peak;
        loop {
            let v = self.at(i);
            if v > xp {
                break;
            }
            if v < lmin {
                lmin = v;
                lb = i;
            }
            if i == i_min {
                break;
            }
            i -= 1;
        }
        let (mut rb, mut rmin) = (peak, xp);
        let mut i = peak;
        while i <= i_max && self.at(i) <= xp {
            if self.at(i) < rmin {
                rmin = self.at(i);
                rb = i;
            }
            i += 1;
        }
        (xp - lmin.max(rmin), lb, rb)
    }
}

/// Bounded-memory streaming detector with sliding-window statistics.
///
/// Differences from the reference (all vanish when the window spans the whole recording):
/// the mean and standard deviation of each frequency row are taken over the frames within
/// `h = round(window_s * fs / hop / 2)` frames of the current one (fewer at the ends), and the
/// prominence base search is limited to the same `±h` frames. Memory is `O(h * n_bins)` plus
/// the curve between a pending peak and the newest frame. Statistics are running sums
/// (shifted by a per-row reference level and recomputed exactly every `2h + 1` frames to
/// stop rounding drift), so the curve matches the exact two-pass statistics to about 1e-12.
///
/// ```
/// use moi_detect::{MoiConfig, WindowedDetector};
/// let mut w = WindowedDetector::new(44_100, MoiConfig::default(), 5.0)?;
/// let chunk = vec![0.0f32; 4410];
/// let mut moments = Vec::new();
/// for _ in 0..20 {
///     moments.extend(w.push(&chunk)?);
/// }
/// moments.extend(w.finish()?);
/// assert!(moments.is_empty()); // digital silence has no moments
/// # Ok::<(), moi_detect::MoiError>(())
/// ```
pub struct WindowedDetector {
    cfg: MoiConfig,
    sample_rate: u32,
    framer: Framer,
    half: usize,
    /// Rows of frames `[win_lo, win_lo + rows.len() / nb)`.
    rows: VecDeque<f64>,
    win_lo: usize,
    /// Running sums over the frames `[sum_lo, sum_hi)` of `L - shift` and its square.
    shift: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    sum_lo: usize,
    sum_hi: usize,
    since_refresh: usize,
    /// Next frame whose curve value is to be computed.
    next_curve: usize,
    tracker: PeakTracker,
    /// Peaks past the lower validity bound waiting for the upper one to be decidable.
    held: VecDeque<Moment>,
    scratch: Vec<f64>,
}

impl WindowedDetector {
    /// A detector whose statistics span a centred window of `window_s` seconds.
    pub fn new(sample_rate: u32, cfg: MoiConfig, window_s: f64) -> Result<Self> {
        let framer = Framer::new(&cfg, sample_rate)?;
        if !(window_s.is_finite() && window_s > 0.0) {
            return Err(MoiError::InvalidConfig(format!(
                "window_s must be positive and finite, got {window_s}"
            )));
        }
        let frames = window_s * f64::from(sample_rate) / cfg.hop() as f64;
        let half = ((frames / 2.0).round() as usize).max(1);
        let nb = framer.nb;
        Ok(Self {
            cfg,
            sample_rate,
            framer,
            half,
            rows: VecDeque::new(),
            win_lo: 0,
            shift: vec![0.0; nb],
            s1: vec![0.0; nb],
            s2: vec![0.0; nb],
            sum_lo: 0,
            sum_hi: 0,
            since_refresh: 0,
            next_curve: 0,
            tracker: PeakTracker::new(cfg.distance, cfg.prominence, half),
            held: VecDeque::new(),
            scratch: Vec::new(),
        })
    }

    /// Half-window `h` in frames.
    pub fn half_window_frames(&self) -> usize {
        self.half
    }

    fn row(&self, k: usize) -> impl Iterator<Item = &f64> {
        let nb = self.framer.nb;
        let off = (k - self.win_lo) * nb;
        self.rows.range(off..off + nb)
    }

    /// Recomputes the running sums exactly over `[lo, hi)` with a fresh shift.
    fn refresh(&mut self, lo: usize, hi: usize) {
        let nb = self.framer.nb;
        let n = (hi - lo) as f64;
        let mut mean = vec![0.0; nb];
        for k in lo..hi {
            for (m, &v) in mean.iter_mut().zip(self.row(k)) {
                *m += v;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        let (mut s1, mut s2) = (vec![0.0; nb], vec![0.0; nb]);
        for k in lo..hi {
            for (b, &v) in self.row(k).enumerate() {
                let d = v - mean[b];
                s1[b] += d;
                s2[b] += d * d;
            }
        }
        self.shift = mean;
        self.s1 = s1;
        self.s2 = s2;
        self.sum_lo = lo;
        self.sum_hi = hi;
        self.since_refresh = 0;
    }

    fn add_row(&mut self, k: usize, sign: f64) {
        let nb = self.framer.nb;
        let off = (k - self.win_lo) * nb;
        let row = self.rows.range(off..off + nb);
        for (((&v, &sh), s1), s2) in row.zip(&self.shift).zip(&mut self.s1).zip(&mut self.s2) {
            let d = v - sh;
            *s1 += sign * d;
            *s2 += sign * d * d;
        }
    }

    /// Computes every curve value whose window is complete (all of them when `ended`).
    fn advance(&mut self, ended: bool, out: &mut Vec<Moment>) {
        let nb = self.framer.nb;
        let total = self.framer.n_frames;
        while self.next_curve < total && (ended || self.next_curve + self.half < total) {
            let k = self.next_curve;
            let lo = k.saturating_sub(self.half);
            let hi = (k + self.half + 1).min(total);
            if self.sum_hi == 0 || self.since_refresh > 2 * self.half {
                self.refresh(lo, hi);
            } else {
                while self.sum_hi < hi {
                    self.add_row(self.sum_hi, 1.0);
                    self.sum_hi += 1;
                }
                while self.sum_lo < lo {
                    self.add_row(self.sum_lo, -1.0);
                    self.sum_lo += 1;
                }
                self.since_refresh += 1;
            }
            let n = (hi - lo) as f64;
            let mut acc = 0.0;
            for (b, &v) in self.row(k).enumerate() {
                let m1 = self.s1[b] / n;
                let var = (self.s2[b] / n - m1 * m1).max(0.0);
                let mean = self.shift[b] + m1;
                acc += (v - mean) / (var.sqrt() + self.cfg.z_eps);
            }
            self.tracker.curve.push_back(acc / nb as f64);
            self.next_curve += 1;
            // Rows older than the next window's start are no longer needed.
            let next_lo = self.next_curve.saturating_sub(self.half).min(self.sum_lo);
            while self.win_lo < next_lo {
                self.rows.drain(..nb);
                self.win_lo += 1;
            }
        }
        if ended {
            self.tracker.ended = true;
        }
        self.tracker.scan_maxima();
        let (nperseg, hop, sr) = (self.cfg.nperseg, self.cfg.hop(), self.sample_rate);
        let before = out.len();
        self.tracker.drain(out, |k| {
            (nperseg as f64 / 2.0 + (k * hop) as f64) / f64::from(sr)
        });
        // Validity filter: the lower bound is known now; the upper one needs the duration.
        let lo_t = self.cfg.delta_s + self.cfg.clip_s;
        let mut fresh: Vec<Moment> = out.drain(before..).collect();
        fresh.retain(|m| m.time_s >= lo_t);
        self.held.extend(fresh);
        let d_known = self.cfg.duration_s.or(if ended {
            Some(self.framer.n_samples as f64 / f64::from(sr))
        } else {
            None
        });
        let now = self.framer.n_samples as f64 / f64::from(sr);
        let margin = self.cfg.delta_s + self.cfg.clip_s;
        while let Some(m) = self.held.front().copied() {
            let ok = match d_known {
                Some(d) => {
                    let (_, hi) = self.cfg.valid_range(d);
                    Some(m.time_s <= hi)
                }
                // The final duration is at least `now`, so this bound can only get looser.
                None if m.time_s <= now - margin => Some(true),
                None => None,
            };
            match ok {
                Some(keep) => {
                    if keep {
                        out.push(m);
                    }
                    self.held.pop_front();
                }
                None => break,
            }
        }
    }

    /// Feeds the next samples; returns the moments that became final.
    pub fn push(&mut self, chunk: &[f32]) -> Result<Vec<Moment>> {
        let mut new_rows = std::mem::take(&mut self.scratch);
        new_rows.clear();
        self.framer.push(chunk, &mut new_rows)?;
        self.rows.extend(new_rows.iter().copied());
        self.scratch = new_rows;
        let mut out = Vec::new();
        self.advance(false, &mut out);
        Ok(out)
    }

    /// Ends the stream; returns the remaining moments.
    pub fn finish(mut self) -> Result<Vec<Moment>> {
        let mut out = Vec::new();
        let mut last = std::mem::take(&mut self.scratch);
        last.clear();
        if self.framer.flush(&mut last)? > 0 {
            self.rows.extend(last.iter().copied());
        }
        if self.framer.n_frames == 0 {
            return Ok(out);
        }
        self.advance(true, &mut out);
        Ok(out)
    }
}
