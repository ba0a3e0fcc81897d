//! The reference energy curve: scipy's default `spectrogram`, `log10`, per-frequency z-score,
//! mean over frequency, all in float64.
//!
//! Layout: the log-spectrogram is stored frame-major, `n_frames x n_bins` (129 contiguous values
//! per frame), so frames can be computed in parallel without sharing cache lines, and the
//! per-bin statistics over time are sums of 129-wide vectors (auto-vectorised). Sums over time
//! use numpy's pairwise summation tree (8 accumulators, blocks of 128, halving above), so the
//! means and standard deviations round like numpy's `mean`/`std` on the same data.

use std::sync::Arc;

use rayon::prelude::*;
use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use crate::error::{MoiError, Result};

/// Frames handled by one parallel task: large enough to amortise scheduling, small enough to
/// balance two to sixteen cores on a few seconds of audio.
const FRAMES_PER_TASK: usize = 512;

/// Periodic Tukey window exactly as `scipy.signal.get_window(("tukey", alpha), m)` builds it
/// (a symmetric window of `m + 1` points with the last one dropped).
pub fn tukey_periodic(m: usize, alpha: f64) -> Vec<f64> {
    if m <= 1 {
        return vec![1.0; m];
    }
    if alpha <= 0.0 {
        return vec![1.0; m];
    }
    let big_m = m + 1;
    let mm1 = (big_m - 1) as f64;
    if alpha >= 1.0 {
        // scipy falls back to a periodic Hann window.
        return (0..m)
            .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / mm1).cos())
            .collect();
    }
    let width = (alpha * mm1 / 2.0).floor() as usize;
    let pi = std::f64::consts::PI;
    let mut w = Vec::with_capacity(big_m);
    for n in 0..big_m {
        let nf = n as f64;
        let v = if n <= width {
            0.5 * (1.0 + (pi * (-1.0 + 2.0 * nf / alpha / mm1)).cos())
        } else if n < big_m - width - 1 {
            1.0
        } else {
            0.5 * (1.0 + (pi * (-2.0 / alpha + 1.0 + 2.0 * nf / alpha / mm1)).cos())
        };
        w.push(v);
    }
    w.truncate(m);
    w
}

/// numpy's pairwise summation of the `n` values `get(start)..get(start + n - 1)`.
fn pairwise_scalar<G: Fn(usize) -> f64>(start: usize, n: usize, get: &G) -> f64 {
    if n < 8 {
        let mut res = 0.0;
        for i in start..start + n {
            res += get(i);
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        for (j, rj) in r.iter_mut().enumerate() {
            *rj = get(start + j);
        }
        let full = n - n % 8;
        let mut i = 8;
        while i < full {
            for (j, rj) in r.iter_mut().enumerate() {
                *rj += get(start + i + j);
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for k in full..n {
            res += get(start + k);
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_scalar(start, n2, get) + pairwise_scalar(start + n2, n - n2, get)
    }
}

/// Sum of a slice in numpy's order.
#[cfg(test)]
fn np_sum(x: &[f64]) -> f64 {
    pairwise_scalar(0, x.len(), &|i| x[i])
}

/// numpy's pairwise summation over frames of `g(frame, bin)`, one independent sum per bin,
/// written to `out` (length `nb`). Frames `[start, start + n)` of a frame-major buffer.
fn pairwise_rows<G>(data: &[f64], nb: usize, start: usize, n: usize, g: &G, out: &mut [f64])
where
    G: Fn(f64, usize) -> f64 + Sync,
{
    if n < 8 {
        out.iter_mut().for_each(|o| *o = 0.0);
        for k in start..start + n {
            let row = &data[k * nb..(k + 1) * nb];
            for (b, (o, &v)) in out.iter_mut().zip(row).enumerate() {
                *o += g(v, b);
            }
        }
    } else if n <= 128 {
        let mut r = vec![0.0f64; 8 * nb];
        for j in 0..8 {
            let row = &data[(start + j) * nb..(start + j + 1) * nb];
            for (b, (o, &v)) in r[j * nb..(j + 1) * nb].iter_mut().zip(row).enumerate() {
                *o = g(v, b);
            }
        }
        let full = n - n % 8;
        let mut i = 8;
        while i < full {
            for j in 0..8 {
                let k = start + i + j;
                let row = &data[k * nb..(k + 1) * nb];
                for (b, (o, &v)) in r[j * nb..(j + 1) * nb].iter_mut().zip(row).enumerate() {
                    *o += g(v, b);
                }
            }
            i += 8;
        }
        for (b, o) in out.iter_mut().enumerate() {
            let q = |j: usize| r[j * nb + b];
            *o = ((q(0) + q(1)) + (q(2) + q(3))) + ((q(4) + q(5)) + (q(6) + q(7)));
        }
        for k in start + full..start + n {
            let row = &data[k * nb..(k + 1) * nb];
            for (b, (o, &v)) in out.iter_mut().zip(row).enumerate() {
                *o += g(v, b);
            }
        }
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        let mut right = vec![0.0f64; nb];
        if n >= 8 * FRAMES_PER_TASK {
            rayon::join(
                || pairwise_rows(data, nb, start, n2, g, out),
                || pairwise_rows(data, nb, start + n2, n - n2, g, &mut right),
            );
        } else {
            pairwise_rows(data, nb, start, n2, g, out);
            pairwise_rows(data, nb, start + n2, n - n2, g, &mut right);
        }
        for (o, r) in out.iter_mut().zip(&right) {
            *o += *r;
        }
    }
}

/// A planned scipy-default PSD spectrogram followed by `log10(S + offset)`.
pub(crate) struct LogPsd {
    nperseg: usize,
    hop: usize,
    n_bins: usize,
    window: Vec<f64>,
    scale: f64,
    log_offset: f64,
    fft: Arc<dyn RealToComplex<f64>>,
}

/// Per-thread buffers of [`LogPsd::frame`].
pub(crate) struct FrameScratch {
    buf: Vec<f64>,
    spec: Vec<Complex<f64>>,
    fft: Vec<Complex<f64>>,
}

impl LogPsd {
    /// Plans the transform. `nperseg` is the segment length actually used (scipy shrinks it to
    /// the input length for short inputs; callers handle that case separately).
    pub(crate) fn new(nperseg: usize, noverlap: usize, fs: f64, log_offset: f64) -> Result<Self> {
        if nperseg == 0 {
            return Err(MoiError::InvalidConfig("nperseg must be positive".into()));
        }
        if noverlap >= nperseg {
            return Err(MoiError::InvalidConfig(format!(
                "noverlap ({noverlap}) must be smaller than nperseg ({nperseg})"
            )));
        }
        let window = tukey_periodic(nperseg, 0.25);
        let energy = pairwise_scalar(0, nperseg, &|i| window[i] * window[i]);
        let scale = 1.0 / (fs * energy);
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(nperseg);
        Ok(Self {
            nperseg,
            hop: nperseg - noverlap,
            n_bins: nperseg / 2 + 1,
            window,
            scale,
            log_offset,
            fft,
        })
    }

    /// Number of frequency bins (`nperseg / 2 + 1`).
    pub(crate) fn n_bins(&self) -> usize {
        self.n_bins
    }
    /// Fresh buffers for one thread.
    pub(crate) fn scratch(&self) -> FrameScratch {
        FrameScratch {
            buf: self.fft.make_input_vec(),
            spec: self.fft.make_output_vec(),
            fft: self.fft.make_scratch_vec(),
        }
    }

    /// One segment (`nperseg` samples) to `n_bins` log-PSD values.
    pub(crate) fn frame(&self, seg: &[f32], out: &mut [f64], s: &mut FrameScratch) {
        debug_assert_eq!(seg.len(), self.nperseg);
        let mean = pairwise_scalar(0, seg.len(), &|i| f64::from(seg[i])) / self.nperseg as f64;
        for ((b, &x), &w) in s.buf.iter_mut().zip(seg).zip(&self.window) {
            *b = w * (f64::from(x) - mean);
        }
        // Lengths come from the plan itself, so the transform cannot fail.
        let _ = self
            .fft
            .process_with_scratch(&mut s.buf, &mut s.spec, &mut s.fft);
        let last = self.n_bins - 1;
        let even = self.nperseg % 2 == 0;
        for (k, (o, c)) in out.iter_mut().zip(&s.spec).enumerate() {
            let mut p = (c.re * c.re + c.im * c.im) * self.scale;
            if k != 0 && !(even && k == last) {
                p *= 2.0;
            }
            *o = (p + self.log_offset).log10();
        }
    }

    /// Log-PSD of frames `[first, first + n)` of `samples` (frame `k` starts at `k * hop`),
    /// into `out` (`n * n_bins`, frame-major), in parallel.
    pub(crate) fn frames_into(&self, samples: &[f32], first: usize, out: &mut [f64]) {
        let nb = self.n_bins;
        out.par_chunks_mut(FRAMES_PER_TASK * nb)
            .enumerate()
            .for_each_init(
                || self.scratch(),
                |s, (task, block)| {
                    for (j, row) in block.chunks_exact_mut(nb).enumerate() {
                        let k = first + task * FRAMES_PER_TASK + j;
                        let start = k * self.hop;
                        self.frame(&samples[start..start + self.nperseg], row, s);
                    }
                },
            );
    }
}

/// Per-bin mean and `std + z_eps` over all frames of a frame-major log-spectrogram, rounded as
/// numpy's `L.mean(axis=1)` and `L.std(axis=1) + z_eps` on the bin-major array.
pub(crate) fn zscore_stats(l: &[f64], nb: usize, z_eps: f64) -> (Vec<f64>, Vec<f64>) {
    let n = l.len() / nb;
    let mut sum = vec![0.0; nb];
    pairwise_rows(l, nb, 0, n, &|v, _| v, &mut sum);
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let mut ss = vec![0.0; nb];
    pairwise_rows(
        l,
        nb,
        0,
        n,
        &|v, b| {
            let d = v - mean[b];
            d * d
        },
        &mut ss,
    );
    let denom: Vec<f64> = ss.iter().map(|s| (s / n as f64).sqrt() + z_eps).collect();
    (mean, denom)
}

/// `curve[k] = mean_b (L[k, b] - mean[b]) / denom[b]`, summed over bins in order, as numpy's
/// `Z.mean(axis=0)` does.
pub(crate) fn curve_from_stats(l: &[f64], nb: usize, mean: &[f64], denom: &[f64]) -> Vec<f64> {
    let n = l.len() / nb;
    let mut curve = vec![0.0; n];
    curve
        .par_chunks_mut(FRAMES_PER_TASK)
        .enumerate()
        .for_each(|(task, c)| {
            for (j, ck) in c.iter_mut().enumerate() {
                let k = task * FRAMES_PER_TASK + j;
                let row = &l[k * nb..(k + 1) * nb];
                let mut acc = 0.0;
                for ((&v, &m), &d) in row.iter().zip(mean).zip(denom) {
                    acc += (v - m) / d;
                }
                *ck = acc / nb as f64;
            }
        });
    curve
}

/// The full reference curve from a frame-major log-spectrogram.
pub(crate) fn zscore_curve(l: &[f64], nb: usize, z_eps: f64) -> Vec<f64> {
    if l.is_empty() {
        return Vec::new();
    }
    let (mean, denom) = zscore_stats(l, nb, z_eps);
    curve_from_stats(l, nb, &mean, &denom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairwise_matches_plain_sum_on_exact_values() {
        // Small integers sum exactly in any order, so the tree must give the plain total.
        for n in [0usize, 1, 7, 8, 9, 127, 128, 129, 1000, 4099] {
            let x: Vec<f64> = (0..n).map(|i| (i % 17) as f64).collect();
            let plain: f64 = x.iter().sum();
            assert_eq!(np_sum(&x), plain, "n = {n}");
            let mut out = vec![0.0; 3];
            let rows: Vec<f64> = x.iter().flat_map(|&v| [v, 2.0 * v, -v]).collect();
            pairwise_rows(&rows, 3, 0, n, &|v, _| v, &mut out);
            assert_eq!(out, vec![plain, 2.0 * plain, -plain]);
        }
    }

    #[test]
    fn tukey_shape() {
        let w = tukey_periodic(256, 0.25);
        assert_eq!(w.len(), 256);
        assert_eq!(w[0], 0.0);
        assert!(w[33..224].iter().all(|&v| v == 1.0));
        // Periodic window: symmetric about index 128 (w[k] == w[256 - k]).
        for k in 1..128 {
            assert!((w[k] - w[256 - k]).abs() < 1e-15, "k = {k}");
        }
        // Values of scipy.signal.get_window(("tukey", 0.25), 256).
        for (k, v) in [
            (1, 0.002407636663901591),
            (10, 0.22221488349019902),
            (31, 0.9975923633360985),
            (32, 1.0),
            (225, 0.9975923633360985),
            (255, 0.002407636663901591),
        ] {
            assert!((w[k] - v).abs() < 1e-15, "w[{k}] = {} vs scipy {v}", w[k]);
        }
    }
}
