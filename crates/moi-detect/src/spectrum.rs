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
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::error::{MoiError, Result};
use crate::log10::log10_in_place_inline;
use av_audio::multiversion;

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

/// numpy's pairwise summation of `x` in float64 (8 accumulators up to 128 values, halving
/// above), so per-segment means round exactly like scipy's `detrend='constant'`.
#[inline(always)]
fn pairwise_sum<T: Copy + Into<f64>>(x: &[T]) -> f64 {
    let n = x.len();
    if n <= 128 {
        return pairwise_sum_leaf(x);
    }
    let mut n2 = n / 2;
    n2 -= n2 % 8;
    if n - n2 <= 128 {
        // One split (the reference's 256-sample segments): both halves inline.
        pairwise_sum_leaf(&x[..n2]) + pairwise_sum_leaf(&x[n2..])
    } else {
        pairwise_sum_deep(&x[..n2]) + pairwise_sum_deep(&x[n2..])
    }
}

/// The recursive case of [`pairwise_sum`], out of line.
fn pairwise_sum_deep<T: Copy + Into<f64>>(x: &[T]) -> f64 {
    pairwise_sum(x)
}

/// A leaf of numpy's pairwise summation (at most 128 values).
#[inline(always)]
fn pairwise_sum_leaf<T: Copy + Into<f64>>(x: &[T]) -> f64 {
    let n = x.len();
    if n < 8 {
        let mut res = 0.0;
        for &v in x {
            res += v.into();
        }
        return res;
    }
    let mut r = [0.0f64; 8];
    for (rj, &v) in r.iter_mut().zip(x) {
        *rj = v.into();
    }
    let full = n - n % 8;
    for chunk in x[8..full].chunks_exact(8) {
        for (rj, &v) in r.iter_mut().zip(chunk) {
            *rj += v.into();
        }
    }
    let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for &v in &x[full..] {
        res += v.into();
    }
    res
}

/// Sum of a slice in numpy's order.
#[cfg(test)]
fn np_sum(x: &[f64]) -> f64 {
    pairwise_sum(x)
}

/// `acc[b] (+)= row[b]` (or `(row[b] - mean[b])^2` when `DEV`) over one frame; `INIT`
/// overwrites instead of adding.
#[inline(always)]
fn accumulate<const DEV: bool, const INIT: bool>(acc: &mut [f64], row: &[f64], mean: &[f64]) {
    if DEV {
        for ((a, &v), &m) in acc.iter_mut().zip(row).zip(mean) {
            let d = v - m;
            *a = if INIT { d * d } else { *a + d * d };
        }
    } else {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a = if INIT { v } else { *a + v };
        }
    }
}

/// numpy's pairwise summation over frames of each value (or its squared deviation
/// from `mean` when `DEV`), one independent sum per bin, written to `out` (length `nb`).
/// Frames `[start, start + n)` of a frame-major buffer. Monomorphised per mode so the
/// 129-wide inner loops vectorise.
fn pairwise_rows<const DEV: bool>(
    data: &[f64],
    nb: usize,
    start: usize,
    n: usize,
    mean: &[f64],
    out: &mut [f64],
) {
    if n <= 128 {
        if DEV {
            pairwise_leaf_dev(data, nb, start, n, mean, out);
        } else {
            pairwise_leaf_sum(data, nb, start, n, mean, out);
        }
        return;
    }
    let mut n2 = n / 2;
    n2 -= n2 % 8;
    let mut right = vec![0.0f64; nb];
    if n >= 8 * FRAMES_PER_TASK {
        rayon::join(
            || pairwise_rows::<DEV>(data, nb, start, n2, mean, out),
            || pairwise_rows::<DEV>(data, nb, start + n2, n - n2, mean, &mut right),
        );
    } else {
        pairwise_rows::<DEV>(data, nb, start, n2, mean, out);
        pairwise_rows::<DEV>(data, nb, start + n2, n - n2, mean, &mut right);
    }
    for (o, r) in out.iter_mut().zip(&right) {
        *o += *r;
    }
}

/// The leaves (at most 128 frames) of [`pairwise_rows`]: plain sums below 8 frames, else 8
/// interleaved accumulators combined as numpy does.
#[inline(always)]
fn pairwise_leaf<const DEV: bool>(
    data: &[f64],
    nb: usize,
    start: usize,
    n: usize,
    mean: &[f64],
    out: &mut [f64],
) {
    let row = |k: usize| &data[k * nb..(k + 1) * nb];
    if n < 8 {
        out.iter_mut().for_each(|o| *o = 0.0);
        for k in start..start + n {
            accumulate::<DEV, false>(out, row(k), mean);
        }
        return;
    }
    let mut r = vec![0.0f64; 8 * nb];
    for (j, acc) in r.chunks_exact_mut(nb).enumerate() {
        accumulate::<DEV, true>(acc, row(start + j), mean);
    }
    let full = n - n % 8;
    let mut i = 8;
    while i < full {
        for (j, acc) in r.chunks_exact_mut(nb).enumerate() {
            accumulate::<DEV, false>(acc, row(start + i + j), mean);
        }
        i += 8;
    }
    for (b, o) in out.iter_mut().enumerate() {
        let q = |j: usize| r[j * nb + b];
        *o = ((q(0) + q(1)) + (q(2) + q(3))) + ((q(4) + q(5)) + (q(6) + q(7)));
    }
    for k in start + full..start + n {
        accumulate::<DEV, false>(out, row(k), mean);
    }
}

#[inline(always)]
fn pairwise_leaf_sum_body(d: &[f64], nb: usize, s: usize, n: usize, m: &[f64], o: &mut [f64]) {
    pairwise_leaf::<false>(d, nb, s, n, m, o);
}

#[inline(always)]
fn pairwise_leaf_dev_body(d: &[f64], nb: usize, s: usize, n: usize, m: &[f64], o: &mut [f64]) {
    pairwise_leaf::<true>(d, nb, s, n, m, o);
}

multiversion!(
    /// Sums of a leaf, vectorised for the CPU.
    fn pairwise_leaf_sum(d: &[f64], nb: usize, s: usize, n: usize, m: &[f64], o: &mut [f64])
        => pairwise_leaf_sum_body
);

multiversion!(
    /// Sums of squared deviations of a leaf, vectorised for the CPU.
    fn pairwise_leaf_dev(d: &[f64], nb: usize, s: usize, n: usize, m: &[f64], o: &mut [f64])
        => pairwise_leaf_dev_body
);

/// A planned scipy-default PSD spectrogram followed by `log10(S + offset)`.
///
/// Frames are transformed two at a time: one complex FFT of `a + i b` gives both real spectra
/// (`A[k] = (Z[k] + conj Z[N-k]) / 2`, `B[k] = (Z[k] - conj Z[N-k]) / 2i`), which halves the
/// transforms and replaces the real-FFT post-processing by a few adds per bin.
pub(crate) struct LogPsd {
    nperseg: usize,
    hop: usize,
    n_bins: usize,
    window: Vec<f64>,
    scale: f64,
    log_offset: f64,
    fft: Arc<dyn Fft<f64>>,
}

/// Per-thread buffers of [`LogPsd::pair_power`].
pub(crate) struct FrameScratch {
    buf: Vec<Complex<f64>>,
    fft: Vec<Complex<f64>>,
    /// Zeros standing in for the partner of an odd last frame.
    zeros: Vec<f32>,
    /// Where that missing partner's spectrum goes.
    spare: Vec<f64>,
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
        let squares: Vec<f64> = window.iter().map(|w| w * w).collect();
        let energy = pairwise_sum(&squares);
        let scale = 1.0 / (fs * energy);
        let fft = FftPlanner::<f64>::new().plan_fft_forward(nperseg);
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
            buf: vec![Complex::new(0.0, 0.0); self.nperseg],
            fft: vec![Complex::new(0.0, 0.0); self.fft.get_inplace_scratch_len()],
            zeros: vec![0.0; self.nperseg],
            spare: vec![0.0; self.n_bins],
        }
    }

    /// Two segments (`nperseg` samples each) to `n_bins` values of `PSD + log_offset` each
    /// (the caller takes the logarithms of many frames at once, vectorised).
    #[inline(always)]
    fn pair_power(
        &self,
        a: &[f32],
        b: &[f32],
        out_a: &mut [f64],
        out_b: &mut [f64],
        s: &mut FrameScratch,
    ) {
        debug_assert!(a.len() == self.nperseg && b.len() == self.nperseg);
        let n = self.nperseg;
        // scipy's detrend='constant': the segment mean, summed as numpy does.
        let mean_a = pairwise_sum(a) / n as f64;
        let mean_b = pairwise_sum(b) / n as f64;
        for (((z, &xa), &xb), &w) in s.buf.iter_mut().zip(a).zip(b).zip(&self.window) {
            *z = Complex::new(w * (f64::from(xa) - mean_a), w * (f64::from(xb) - mean_b));
        }
        self.fft.process_with_scratch(&mut s.buf, &mut s.fft);
        // |A[k]|^2 = ((Re Z[k] + Re Z[N-k])^2 + (Im Z[k] - Im Z[N-k])^2) / 4, B likewise;
        // one-sided density: every bin but DC (and Nyquist for even N) doubled.
        let offset = self.log_offset;
        let bin = |z: Complex<f64>, c: Complex<f64>, factor: f64| {
            let (re_sum, re_diff) = (z.re + c.re, z.re - c.re);
            let (im_sum, im_diff) = (z.im + c.im, z.im - c.im);
            let va = (re_sum * re_sum + im_diff * im_diff) * factor;
            let vb = (re_diff * re_diff + im_sum * im_sum) * factor;
            (va + offset, vb + offset)
        };
        let quarter = 0.25 * self.scale;
        let z = &s.buf;
        (out_a[0], out_b[0]) = bin(z[0], z[0], quarter);
        // Bins 1..upper are doubled; their partners N-1, N-2, ... run backwards.
        let upper = if n.is_multiple_of(2) {
            n / 2
        } else {
            self.n_bins
        };
        let partners = z[n + 1 - upper..].iter().rev();
        let outs = out_a[1..upper].iter_mut().zip(&mut out_b[1..upper]);
        for ((&zk, &ck), (pa, pb)) in z[1..upper].iter().zip(partners).zip(outs) {
            (*pa, *pb) = bin(zk, ck, 2.0 * quarter);
        }
        if n.is_multiple_of(2) {
            (out_a[upper], out_b[upper]) = bin(z[upper], z[upper], quarter);
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
                    log_psd_block(self, samples, first + task * FRAMES_PER_TASK, block, s);
                },
            );
    }
}

/// Log-PSD of the frames starting at `first`, one `n_bins` row of `block` each.
#[inline(always)]
fn log_psd_block_body(
    psd: &LogPsd,
    samples: &[f32],
    first: usize,
    block: &mut [f64],
    s: &mut FrameScratch,
) {
    let (nb, n, hop) = (psd.n_bins, psd.nperseg, psd.hop);
    let seg = |k: usize| &samples[k * hop..k * hop + n];
    let mut pairs = block.chunks_exact_mut(2 * nb);
    let mut k = first;
    for pair in &mut pairs {
        let (ra, rb) = pair.split_at_mut(nb);
        psd.pair_power(seg(k), seg(k + 1), ra, rb, s);
        k += 2;
    }
    let odd = pairs.into_remainder();
    if !odd.is_empty() {
        let mut zeros = std::mem::take(&mut s.zeros);
        let mut spare = std::mem::take(&mut s.spare);
        psd.pair_power(seg(k), &zeros, odd, &mut spare, s);
        zeros.fill(0.0);
        s.zeros = zeros;
        s.spare = spare;
    }
    log10_in_place_inline(block);
}

multiversion!(
    /// [`log_psd_block_body`] vectorised for the CPU (the FFT dispatches on its own).
    fn log_psd_block(
        psd: &LogPsd,
        samples: &[f32],
        first: usize,
        block: &mut [f64],
        s: &mut FrameScratch,
    ) => log_psd_block_body
);

/// Per-bin mean and `std + z_eps` over all frames of a frame-major log-spectrogram, rounded as
/// numpy's `L.mean(axis=1)` and `L.std(axis=1) + z_eps` on the bin-major array.
pub(crate) fn zscore_stats(l: &[f64], nb: usize, z_eps: f64) -> (Vec<f64>, Vec<f64>) {
    let n = l.len() / nb;
    let mut sum = vec![0.0; nb];
    pairwise_rows::<false>(l, nb, 0, n, &[], &mut sum);
    let mean: Vec<f64> = sum.iter().map(|s| s / n as f64).collect();
    let mut ss = vec![0.0; nb];
    pairwise_rows::<true>(l, nb, 0, n, &mean, &mut ss);
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
            let k0 = task * FRAMES_PER_TASK;
            curve_block(&l[k0 * nb..(k0 + c.len()) * nb], nb, mean, denom, c);
        });
    curve
}

/// Frames whose curve values are accumulated side by side: each sum still runs over the bins
/// in order (numpy's rounding), but eight independent sums hide the latency of the adds, and
/// the z-scores of a frame are computed as one contiguous vector loop.
const CURVE_LANES: usize = 8;

/// Curve values of the frames in `rows` (frame-major, `nb` per frame) into `out`.
#[inline(always)]
fn curve_block_body(rows: &[f64], nb: usize, mean: &[f64], denom: &[f64], out: &mut [f64]) {
    let inv_n = nb as f64;
    let zscores = |row: &[f64], z: &mut [f64]| {
        for (((t, &v), &m), &d) in z.iter_mut().zip(row).zip(mean).zip(denom) {
            *t = (v - m) / d;
        }
    };
    let mut z = vec![0.0f64; CURVE_LANES * nb];
    let lanes = rows.chunks_exact(CURVE_LANES * nb);
    let tail = lanes.remainder();
    let mut outs = out.chunks_exact_mut(CURVE_LANES);
    for (group, o) in lanes.zip(&mut outs) {
        for (row, zj) in group.chunks_exact(nb).zip(z.chunks_exact_mut(nb)) {
            zscores(row, zj);
        }
        let mut acc = [0.0f64; CURVE_LANES];
        for b in 0..nb {
            for (j, a) in acc.iter_mut().enumerate() {
                *a += z[j * nb + b];
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = a / inv_n;
        }
    }
    for (row, o) in tail.chunks_exact(nb).zip(outs.into_remainder()) {
        let zj = &mut z[..nb];
        zscores(row, zj);
        let mut acc = 0.0;
        for &v in zj.iter() {
            acc += v;
        }
        *o = acc / inv_n;
    }
}

multiversion!(
    /// [`curve_block_body`] vectorised for the CPU.
    fn curve_block(rows: &[f64], nb: usize, mean: &[f64], denom: &[f64], out: &mut [f64])
        => curve_block_body
);

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
            pairwise_rows::<false>(&rows, 3, 0, n, &[], &mut out);
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
