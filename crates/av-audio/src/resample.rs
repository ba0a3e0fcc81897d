//! Windowed-sinc resampling, numerically faithful to torchaudio's `sinc_interp_hann` method.
//!
//! torchaudio builds a (new, 2w + orig) polyphase kernel and applies it with a strided
//! `conv1d`. Each kernel row is a Hann-windowed sinc centred on the output sample's position;
//! outside `|t| < lowpass_filter_width` the window is exactly at its zero (the formula clamps
//! `t`), so only ~`2 * width` of the `2w + orig` columns carry weight (34 of 475 for
//! 44.1 kHz -> 16 kHz). We compute the full formula in f64, keep the contiguous band of columns
//! around each phase's centre (the dropped columns are `< 1e-30` in magnitude: products of
//! `cos(pi/2)^2 ~ 4e-33`), store it in f32 and apply it with an f32 dot product written for
//! auto-vectorisation. The result equals torchaudio's up to summation order.

use crate::AudioError;

/// Number of sinc zero crossings on each side of the centre (torchaudio's default).
pub const LOWPASS_FILTER_WIDTH: u32 = 6;
/// Cut-off as a fraction of the lower Nyquist frequency (torchaudio's default).
pub const ROLLOFF: f64 = 0.99;

/// Dot products are evaluated in blocks of this many taps (one AVX register of f32).
const LANES: usize = 8;
/// Outputs above this length are split across two threads.
const PARALLEL_MIN_OUTPUT: usize = 1 << 17;

/// A planned torchaudio-compatible resampler between two fixed rates.
///
/// Building the plan computes the polyphase kernel once; [`process`](Self::process) can then be
/// called on any number of buffers. The plan is immutable, so one instance can be shared between
/// threads.
#[derive(Debug, Clone)]
pub struct SincResampler {
    from_hz: u32,
    to_hz: u32,
    /// `from_hz / gcd`: input samples consumed per block of `new` outputs.
    orig: usize,
    /// `to_hz / gcd`: outputs produced per block (number of phases).
    new: usize,
    /// torchaudio's kernel half-width `w` in input samples (left zero padding).
    width: usize,
    /// Taps stored per phase (multiple of `LANES`).
    taps: usize,
    /// For each phase, first used input offset relative to `orig * m - width`.
    start: Vec<usize>,
    /// `new * taps` kernel values, row-major by phase.
    kernel: Vec<f32>,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One kernel value, evaluated with the operation order of torchaudio's
/// `_get_sinc_resample_kernel` (Hann window, f64).
fn kernel_value(col: i64, width: i64, phase: i64, orig: f64, new: f64, base: f64) -> f64 {
    let lpw = f64::from(LOWPASS_FILTER_WIDTH);
    let idx = (col - width) as f64 / orig;
    let mut t = -(phase as f64) / new + idx;
    t *= base;
    t = t.clamp(-lpw, lpw);
    let window = (t * std::f64::consts::PI / lpw / 2.0).cos().powi(2);
    let t = t * std::f64::consts::PI;
    let scale = base / orig;
    let sinc = if t == 0.0 { 1.0 } else { t.sin() / t };
    sinc * (window * scale)
}

impl SincResampler {
    /// Plans a resampler from `from_hz` to `to_hz` (both > 0).
    pub fn new(from_hz: u32, to_hz: u32) -> Result<Self, AudioError> {
        if from_hz == 0 || to_hz == 0 {
            return Err(AudioError::InvalidConfig(format!(
                "resampling rates must be positive, got {from_hz} Hz -> {to_hz} Hz"
            )));
        }
        let g = gcd(u64::from(from_hz), u64::from(to_hz));
        let orig = (u64::from(from_hz) / g) as usize;
        let new = (u64::from(to_hz) / g) as usize;
        if from_hz == to_hz {
            return Ok(Self {
                from_hz,
                to_hz,
                orig: 1,
                new: 1,
                width: 0,
                taps: 0,
                start: Vec::new(),
                kernel: Vec::new(),
            });
        }
        let (origf, newf) = (orig as f64, new as f64);
        let base = orig.min(new) as f64 * ROLLOFF;
        let lpw = f64::from(LOWPASS_FILTER_WIDTH);
        let width = (lpw * origf / base).ceil() as usize;
        let n_cols = 2 * width + orig;

        // Band of columns with |t| < lpw for each phase: t = ((c - w)/orig - j/new) * base.
        let half = lpw * origf / base;
        let mut bands = Vec::with_capacity(new);
        for j in 0..new {
            let centre = width as f64 + origf * j as f64 / newf;
            let lo = ((centre - half).floor().max(0.0) as usize).min(n_cols - 1);
            let hi = ((centre + half).ceil().max(0.0) as usize).min(n_cols - 1);
            bands.push((lo, hi));
        }
        let span = bands.iter().map(|&(lo, hi)| hi + 1 - lo).max().unwrap_or(1);
        let taps = span.div_ceil(LANES) * LANES;
        let mut start = Vec::with_capacity(new);
        let mut kernel = vec![0.0f32; new * taps];
        for (j, &(lo, _)) in bands.iter().enumerate() {
            start.push(lo);
            for k in 0..taps {
                let col = lo + k;
                if col < n_cols {
                    kernel[j * taps + k] =
                        kernel_value(col as i64, width as i64, j as i64, origf, newf, base) as f32;
                }
            }
        }
        Ok(Self {
            from_hz,
            to_hz,
            orig,
            new,
            width,
            taps,
            start,
            kernel,
        })
    }

    /// Input rate in Hz.
    pub fn from_hz(&self) -> u32 {
        self.from_hz
    }

    /// Output rate in Hz.
    pub fn to_hz(&self) -> u32 {
        self.to_hz
    }

    /// Number of output samples for `n_in` input samples, exactly as torchaudio computes it:
    /// `ceil(float32(new * n_in / orig))` with the gcd-reduced rates.
    ///
    /// The float32 rounding makes this one less than the exact `ceil(n_in * to / from)` for some
    /// long inputs (from about 16 s at 44.1 kHz -> 16 kHz); we keep torchaudio's count so that
    /// outputs line up sample for sample.
    pub fn output_len(&self, n_in: usize) -> usize {
        if self.from_hz == self.to_hz {
            return n_in;
        }
        let exact = (n_in as f64 * self.new as f64) / self.orig as f64;
        (exact as f32).ceil() as usize
    }

    /// Row `phase` of the polyphase kernel at torchaudio's full width (`2 * width + orig`
    /// columns, zeros outside the stored band), for comparison with torchaudio's kernel.
    /// Empty for an identity resampler or an out-of-range phase.
    pub fn kernel_phase(&self, phase: usize) -> Vec<f32> {
        if self.taps == 0 || phase >= self.new {
            return Vec::new();
        }
        let n_cols = 2 * self.width + self.orig;
        let mut row = vec![0.0f32; n_cols];
        let band = &self.kernel[phase * self.taps..(phase + 1) * self.taps];
        for (k, &v) in band.iter().enumerate() {
            if let Some(slot) = row.get_mut(self.start[phase] + k) {
                *slot = v;
            }
        }
        row
    }

    /// Resamples `input` into a new vector.
    pub fn process(&self, input: &[f32]) -> Vec<f32> {
        let mut out = Vec::new();
        self.process_into(input, &mut out);
        out
    }

    /// Resamples `input` into `out`, reusing its allocation (hot path: no allocation once `out`
    /// has grown to size).
    pub fn process_into(&self, input: &[f32], out: &mut Vec<f32>) {
        out.clear();
        if self.from_hz == self.to_hz {
            out.extend_from_slice(input);
            return;
        }
        let n_out = self.output_len(input.len());
        out.resize(n_out, 0.0);
        if n_out >= PARALLEL_MIN_OUTPUT {
            // Split on a block boundary so each thread handles whole phase cycles.
            let blocks = n_out.div_ceil(self.new);
            let split = blocks.div_ceil(2) * self.new;
            let split = split.min(n_out);
            let (a, b) = out.split_at_mut(split);
            std::thread::scope(|s| {
                s.spawn(|| self.fill(input, a, 0));
                self.fill(input, b, split);
            });
        } else {
            self.fill(input, out, 0);
        }
    }

    /// Computes outputs `first .. first + out.len()`.
    fn fill(&self, input: &[f32], out: &mut [f32], first: usize) {
        fill_outputs(self, input, out, first);
    }
}

/// Body of [`SincResampler::fill`], compiled per instruction set by [`fill_outputs`].
#[inline(always)]
fn fill_body(r: &SincResampler, input: &[f32], out: &mut [f32], first: usize) {
    let n = input.len();
    let taps = r.taps;
    // Phase j and block m of the next output, advanced without a division per sample.
    let (mut m, mut j) = (first / r.new, first % r.new);
    let mut next = || {
        let row = &r.kernel[j * taps..(j + 1) * taps];
        // Input index of the first tap (may fall in the zero padding on either side).
        let s = (r.orig * m + r.start[j]) as isize - r.width as isize;
        j += 1;
        if j == r.new {
            j = 0;
            m += 1;
        }
        (row, s)
    };
    let interior = |s: isize| s >= 0 && s as usize + taps <= n;
    let mut edge = vec![0.0f32; taps];
    let mut edge_dot = |row: &[f32], s: isize| {
        for (k, e) in edge.iter_mut().enumerate() {
            let i = s + k as isize;
            *e = if i >= 0 && (i as usize) < n {
                input[i as usize]
            } else {
                0.0
            };
        }
        dot(row, &edge)
    };
    for y in out.iter_mut() {
        let (row, s) = next();
        *y = if interior(s) {
            dot(row, &input[s as usize..s as usize + taps])
        } else {
            edge_dot(row, s)
        };
    }
}

crate::multiversion!(
    /// [`fill_body`] with the widest vectors the CPU has.
    fn fill_outputs(r: &SincResampler, input: &[f32], out: &mut [f32], first: usize) => fill_body
);

/// Dot product of two equal-length slices whose length is a multiple of [`LANES`], with
/// `LANES` independent accumulators so the compiler emits packed multiply-adds.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (ca, cb) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += ca[l] * cb[l];
        }
    }
    let mut sum = 0.0f32;
    for v in acc {
        sum += v;
    }
    sum
}

/// One-shot convenience: plans a [`SincResampler`] and applies it.
///
/// Plan once with [`SincResampler::new`] when resampling many buffers.
pub fn resample(input: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, AudioError> {
    Ok(SincResampler::new(from_hz, to_hz)?.process(input))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_geometry_matches_torchaudio_for_44k1_to_16k() -> Result<(), AudioError> {
        let r = SincResampler::new(44_100, 16_000)?;
        assert_eq!((r.orig, r.new, r.width), (441, 160, 17));
        assert_eq!(r.output_len(88_200), 32_000);
        assert_eq!(r.output_len(88_201), 32_001);
        // torchaudio's float32 ceil: exact ceil(160 * 722562 / 441) is 262155.
        assert_eq!(r.output_len(722_562), 262_154);
        assert_eq!(r.output_len(0), 0);
        assert!(r.taps <= 40, "taps {}", r.taps);
        Ok(())
    }

    #[test]
    fn identity_rate_copies() -> Result<(), AudioError> {
        let x = [1.0, -2.0, 3.0];
        assert_eq!(resample(&x, 8000, 8000)?, x.to_vec());
        Ok(())
    }

    #[test]
    fn zero_rate_is_an_error() {
        assert!(matches!(
            SincResampler::new(0, 16_000),
            Err(AudioError::InvalidConfig(_))
        ));
    }

    /// The band we keep must hold all of the kernel's weight: compare with the dense formula.
    #[test]
    fn banded_kernel_equals_dense_formula() -> Result<(), AudioError> {
        for (from, to) in [
            (44_100u32, 16_000u32),
            (16_000, 44_100),
            (48_000, 16_000),
            (22_050, 16_000),
        ] {
            let r = SincResampler::new(from, to)?;
            let (origf, newf) = (r.orig as f64, r.new as f64);
            let base = r.orig.min(r.new) as f64 * ROLLOFF;
            let n_cols = 2 * r.width + r.orig;
            for j in 0..r.new {
                for c in 0..n_cols {
                    let v = kernel_value(c as i64, r.width as i64, j as i64, origf, newf, base);
                    let inside = c >= r.start[j] && c < r.start[j] + r.taps;
                    if inside {
                        let stored = r.kernel[j * r.taps + c - r.start[j]];
                        assert!((f64::from(stored) - v).abs() <= 1e-7 * v.abs().max(1e-30));
                    } else {
                        assert!(v.abs() < 1e-30, "{from}->{to} phase {j} col {c}: {v}");
                    }
                }
            }
        }
        Ok(())
    }

    /// A constant (DC) signal stays constant away from the edges (unit DC gain within the
    /// filter's ripple).
    #[test]
    fn dc_gain_is_one() -> Result<(), AudioError> {
        let x = vec![0.5f32; 4410];
        let y = resample(&x, 44_100, 16_000)?;
        for &v in &y[20..y.len() - 20] {
            assert!((v - 0.5).abs() < 2e-3, "{v}");
        }
        Ok(())
    }

    #[test]
    fn parallel_split_equals_serial() -> Result<(), AudioError> {
        let r = SincResampler::new(44_100, 16_000)?;
        let n = 441 * 900; // 144,000 outputs: above the parallel threshold.
        let x: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.013).sin()).collect();
        let y = r.process(&x);
        assert!(y.len() >= PARALLEL_MIN_OUTPUT);
        let mut serial = vec![0.0; y.len()];
        r.fill(&x, &mut serial, 0);
        assert_eq!(y, serial);
        Ok(())
    }
}
