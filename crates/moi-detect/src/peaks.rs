//! `find_peaks` with the semantics of `scipy.signal.find_peaks` (scipy 1.6 - 1.17).
//!
//! The order of operations, the comparison operators and the floating-point expressions follow
//! scipy's so that indices, bases and edges agree exactly and interpolated quantities agree to
//! the last bit on the reference fixtures:
//!
//! 1. local maxima, plateau aware: a flat top's peak is its middle sample
//!    `(left_edge + right_edge) / 2` (the left middle for even plateaus); maxima touching either
//!    end are never peaks;
//! 2. `plateau_size`, 3. `height`, 4. `threshold`, 5. `distance`, 6. `prominence`, 7. `width`
//!    filters, each applied to the survivors of the previous one.
//!
//! **Distance ties.** scipy keeps peaks in decreasing height using numpy's default (unstable,
//! SIMD-dependent) `argsort`, so among *exactly equal* heights its order is unspecified. Here the
//! order is total: higher first and, among equal heights, the **rightmost first**. This matches
//! scipy on every tie-sensitive fixture where scipy itself is consistent with either simple rule.

use crate::error::{MoiError, Result};

/// A closed interval `[min, max]` on a peak property; `None` leaves that side open.
///
/// scipy accepts a number (lower bound only) or a `(min, max)` pair; [`Range::at_least`] and
/// [`Range::between`] are those two forms, [`Range::any`] is `(None, None)`, which computes the
/// property without filtering anything.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Range {
    /// Smallest accepted value (inclusive).
    pub min: Option<f64>,
    /// Largest accepted value (inclusive).
    pub max: Option<f64>,
}

impl Range {
    /// `(None, None)`: compute the property, keep every peak.
    pub const fn any() -> Self {
        Self {
            min: None,
            max: None,
        }
    }
    /// A bare number in scipy: lower bound only.
    pub const fn at_least(min: f64) -> Self {
        Self {
            min: Some(min),
            max: None,
        }
    }
    /// A `(min, max)` tuple in scipy.
    pub const fn between(min: f64, max: f64) -> Self {
        Self {
            min: Some(min),
            max: Some(max),
        }
    }
    /// Upper bound only, `(None, max)` in scipy.
    pub const fn at_most(max: f64) -> Self {
        Self {
            min: None,
            max: Some(max),
        }
    }
    fn contains(&self, v: f64) -> bool {
        self.min.is_none_or(|m| m <= v) && self.max.is_none_or(|m| v <= m)
    }
}

/// The keyword arguments of `scipy.signal.find_peaks`; `Default` is a bare `find_peaks(x)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PeakOptions {
    /// Bounds on `x[peak]`; also reports `peak_heights`.
    pub height: Option<Range>,
    /// Bounds on the vertical drop to both neighbours (the smaller must reach `min`, the larger
    /// must not exceed `max`); also reports `left_thresholds` / `right_thresholds`.
    pub threshold: Option<Range>,
    /// Minimal horizontal distance in samples (rounded up), `>= 1`.
    pub distance: Option<f64>,
    /// Bounds on the prominence; also reports prominences and bases.
    pub prominence: Option<Range>,
    /// Bounds on the width at `rel_height`; also reports widths and interpolated crossings.
    pub width: Option<Range>,
    /// Window (samples, rounded up, `> 1`) bounding the base search; `None` = whole signal.
    pub wlen: Option<f64>,
    /// Height, relative to the prominence, at which widths are measured (`>= 0`).
    pub rel_height: f64,
    /// Bounds on the number of samples of a flat top; also reports sizes and edges.
    pub plateau_size: Option<Range>,
}

impl Default for PeakOptions {
    fn default() -> Self {
        Self {
            height: None,
            threshold: None,
            distance: None,
            prominence: None,
            width: None,
            wlen: None,
            rel_height: 0.5,
            plateau_size: None,
        }
    }
}

/// A non-fatal condition that scipy reports as a `PeakPropertyWarning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum PeakWarning {
    /// Some peak has a prominence of exactly 0 (typically a too small `wlen`).
    ZeroProminence,
    /// Some peak has a width of exactly 0.
    ZeroWidth,
}

/// Peaks and the properties scipy returns; a property is `Some` exactly when scipy returns it.
#[derive(Debug, Clone, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Peaks {
    /// Peak indices, increasing.
    pub peaks: Vec<usize>,
    /// Samples in each peak's flat top (1 for a strict maximum).
    pub plateau_sizes: Option<Vec<usize>>,
    /// First sample of each flat top.
    pub left_edges: Option<Vec<usize>>,
    /// Last sample of each flat top.
    pub right_edges: Option<Vec<usize>>,
    /// `x[peak]`.
    pub peak_heights: Option<Vec<f64>>,
    /// `x[peak] - x[peak - 1]`.
    pub left_thresholds: Option<Vec<f64>>,
    /// `x[peak] - x[peak + 1]`.
    pub right_thresholds: Option<Vec<f64>>,
    /// Height above the higher of the two bases.
    pub prominences: Option<Vec<f64>>,
    /// Lowest point left of the peak before a higher sample (closest one on ties).
    pub left_bases: Option<Vec<usize>>,
    /// Lowest point right of the peak before a higher sample (closest one on ties).
    pub right_bases: Option<Vec<usize>>,
    /// `right_ips - left_ips`.
    pub widths: Option<Vec<f64>>,
    /// `x[peak] - prominence * rel_height`, where widths are measured.
    pub width_heights: Option<Vec<f64>>,
    /// Interpolated left crossing of `width_heights`.
    pub left_ips: Option<Vec<f64>>,
    /// Interpolated right crossing of `width_heights`.
    pub right_ips: Option<Vec<f64>>,
    /// scipy's `PeakPropertyWarning`s, without duplicates.
    pub warnings: Vec<PeakWarning>,
}

fn retain<T: Copy>(v: &mut Option<Vec<T>>, keep: &[bool]) {
    if let Some(v) = v {
        let mut i = 0;
        v.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
    }
}

impl Peaks {
    fn retain(&mut self, keep: &[bool]) {
        let mut i = 0;
        self.peaks.retain(|_| {
            let k = keep[i];
            i += 1;
            k
        });
        retain(&mut self.plateau_sizes, keep);
        retain(&mut self.left_edges, keep);
        retain(&mut self.right_edges, keep);
        retain(&mut self.peak_heights, keep);
        retain(&mut self.left_thresholds, keep);
        retain(&mut self.right_thresholds, keep);
        retain(&mut self.prominences, keep);
        retain(&mut self.left_bases, keep);
        retain(&mut self.right_bases, keep);
        retain(&mut self.widths, keep);
        retain(&mut self.width_heights, keep);
        retain(&mut self.left_ips, keep);
        retain(&mut self.right_ips, keep);
    }
    fn warn(&mut self, w: PeakWarning) {
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }
}

/// Local maxima of `x` with their plateau edges: `(peaks, left_edges, right_edges)`.
pub fn local_maxima(x: &[f64]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut mid, mut left, mut right) = (Vec::new(), Vec::new(), Vec::new());
    let n = x.len();
    if n < 3 {
        return (mid, left, right);
    }
    let i_max = n - 1;
    let mut i = 1;
    while i < i_max {
        if x[i - 1] < x[i] {
            let mut ahead = i + 1;
            while ahead < i_max && x[ahead] == x[i] {
                ahead += 1;
            }
            if x[ahead] < x[i] {
                left.push(i);
                right.push(ahead - 1);
                mid.push((i + ahead - 1) / 2);
                i = ahead;
            }
        }
        i += 1;
    }
    (mid, left, right)
}

/// Keep-mask of scipy's distance rule: peaks in decreasing priority remove lower-priority
/// neighbours closer than `ceil(distance)`. Priority = height, ties broken rightmost first.
pub fn select_by_distance(peaks: &[usize], heights: &[f64], distance: f64) -> Vec<bool> {
    let n = peaks.len();
    let dist = distance.ceil();
    let mut keep = vec![true; n];
    let mut order: Vec<usize> = (0..n).collect();
    // Stable ascending sort; walking it backwards visits equal heights rightmost first.
    order.sort_by(|&a, &b| heights[a].total_cmp(&heights[b]));
    for &j in order.iter().rev() {
        if !keep[j] {
            continue;
        }
        let mut k = j;
        while k > 0 && ((peaks[j] - peaks[k - 1]) as f64) < dist {
            keep[k - 1] = false;
            k -= 1;
        }
        let mut k = j + 1;
        while k < n && ((peaks[k] - peaks[j]) as f64) < dist {
            keep[k] = false;
            k += 1;
        }
    }
    keep
}

/// Prominence and bases of one peak, with scipy's `wlen` window (`None` = whole signal).
///
/// Returns `(prominence, left_base, right_base)`.
pub fn peak_prominence(x: &[f64], peak: usize, wlen: Option<usize>) -> (f64, usize, usize) {
    let (mut i_min, mut i_max) = (0usize, x.len() - 1);
    if let Some(w) = wlen {
        if w >= 2 {
            i_min = i_min.max(peak.saturating_sub(w / 2));
            i_max = i_max.min(peak.saturating_add(w / 2));
        }
    }
    let xp = x[peak];
    // Left: walk while x <= x[peak]; strict `<` keeps the minimum closest to the peak.
    let (mut left_base, mut left_min) = (peak, xp);
    let mut i = peak as isize;
    while i >= i_min as isize && x[i as usize] <= xp {
        if x[i as usize] < left_min {
            left_min = x[i as usize];
            left_base = i as usize;
        }
        i -= 1;
    }
    let (mut right_base, mut right_min) = (peak, xp);
    let mut i = peak;
    while i <= i_max && x[i] <= xp {
        if x[i] < right_min {
            right_min = x[i];
            right_base = i;
        }
        i += 1;
    }
    (xp - left_min.max(right_min), left_base, right_base)
}

/// Inputs shorter than this use the direct scans of [`peak_prominence`].
const FAST_PROMINENCE_MIN_LEN: usize = 4096;

/// [`peak_prominence`] of every peak in `peaks` (ascending), with the same results.
///
/// scipy walks outwards from each peak until a higher sample, which costs `O(n)` per peak on a
/// random walk (a 10^6-point walk takes about a second). Here the walk's end on each side is the
/// previous/next strictly greater sample (two monotonic-stack passes over `x`), and the lowest
/// point in between comes from a range-minimum segment tree that breaks ties the way the walk
/// does (the minimum closest to the peak), so the total is `O(n + peaks * log n)`.
pub(crate) fn peak_prominences(
    x: &[f64],
    peaks: &[usize],
    wlen: Option<usize>,
) -> Vec<(f64, usize, usize)> {
    let naive = || peaks.iter().map(|&p| peak_prominence(x, p, wlen)).collect();
    if x.len() < FAST_PROMINENCE_MIN_LEN
        || x.len() > u32::MAX as usize
        || x.iter().any(|v| v.is_nan())
    {
        return naive();
    }
    if !peaks.windows(2).all(|w| w[0] < w[1]) {
        return naive();
    }
    let n = x.len();
    // Previous and next strictly greater sample of each peak (None: the walk reaches the end).
    let mut prev_greater = vec![None; peaks.len()];
    let mut stack: Vec<usize> = Vec::new();
    let mut next_peak = 0;
    for i in 0..n {
        while stack.last().is_some_and(|&j| x[j] <= x[i]) {
            stack.pop();
        }
        if next_peak < peaks.len() && peaks[next_peak] == i {
            prev_greater[next_peak] = stack.last().copied();
            next_peak += 1;
        }
        stack.push(i);
    }
    let mut next_greater = vec![None; peaks.len()];
    stack.clear();
    let mut k = peaks.len();
    for i in (0..n).rev() {
        while stack.last().is_some_and(|&j| x[j] <= x[i]) {
            stack.pop();
        }
        if k > 0 && peaks[k - 1] == i {
            next_greater[k - 1] = stack.last().copied();
            k -= 1;
        }
        stack.push(i);
    }
    let closest_left = MinTree::new(x, true);
    let closest_right = MinTree::new(x, false);
    peaks
        .iter()
        .enumerate()
        .map(|(k, &peak)| {
            let (mut i_min, mut i_max) = (0usize, n - 1);
            if let Some(w) = wlen {
                if w >= 2 {
                    i_min = peak.saturating_sub(w / 2);
                    i_max = i_max.min(peak.saturating_add(w / 2));
                }
            }
            let lo = prev_greater[k].map_or(0, |j| j + 1).max(i_min);
            let hi = next_greater[k].map_or(n - 1, |j| j - 1).min(i_max);
            let left_base = closest_left.argmin(lo, peak);
            let right_base = closest_right.argmin(peak, hi);
            let prominence = x[peak] - x[left_base].max(x[right_base]);
            (prominence, left_base, right_base)
        })
        .collect()
}

/// Range-minimum queries returning an index; among equal minima the rightmost
/// (`prefer_right`) or the leftmost one.
struct MinTree<'a> {
    x: &'a [f64],
    /// Bottom-up segment tree over `size` leaves (a power of two); leaf `size + i` holds `i`.
    nodes: Vec<u32>,
    size: usize,
    prefer_right: bool,
}

impl<'a> MinTree<'a> {
    fn new(x: &'a [f64], prefer_right: bool) -> Self {
        let size = x.len().next_power_of_two();
        let mut t = Self {
            x,
            nodes: vec![0; 2 * size],
            size,
            prefer_right,
        };
        for i in 0..size {
            // Padding leaves repeat the last sample, which never changes a minimum's value;
            // queries never reach them anyway.
            t.nodes[size + i] = i.min(x.len() - 1) as u32;
        }
        for v in (1..size).rev() {
            t.nodes[v] = t.better(t.nodes[2 * v], t.nodes[2 * v + 1]);
        }
        t
    }

    fn better(&self, a: u32, b: u32) -> u32 {
        let (va, vb) = (self.x[a as usize], self.x[b as usize]);
        if va < vb || (va == vb && (a > b) == self.prefer_right) {
            a
        } else {
            b
        }
    }

    /// Index of the minimum of `x[lo..=hi]`.
    fn argmin(&self, lo: usize, hi: usize) -> usize {
        let (mut l, mut r) = (lo + self.size, hi + self.size + 1);
        let mut best = lo as u32;
        while l < r {
            if l & 1 == 1 {
                best = self.better(best, self.nodes[l]);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                best = self.better(best, self.nodes[r]);
            }
            l >>= 1;
            r >>= 1;
        }
        best as usize
    }
}

/// Width of one peak at `x[peak] - prominence * rel_height`, interpolated between samples and
/// bounded by the bases: `(width, width_height, left_ip, right_ip)`.
pub fn peak_width(
    x: &[f64],
    peak: usize,
    prominence: f64,
    left_base: usize,
    right_base: usize,
    rel_height: f64,
) -> (f64, f64, f64, f64) {
    let height = x[peak] - prominence * rel_height;
    let mut i = peak;
    while left_base < i && height < x[i] {
        i -= 1;
    }
    let mut left_ip = i as f64;
    if x[i] < height {
        left_ip += (height - x[i]) / (x[i + 1] - x[i]);
    }
    let mut i = peak;
    while i < right_base && height < x[i] {
        i += 1;
    }
    let mut right_ip = i as f64;
    if x[i] < height {
        right_ip -= (height - x[i]) / (x[i - 1] - x[i]);
    }
    (right_ip - left_ip, height, left_ip, right_ip)
}

fn check_wlen(wlen: Option<f64>) -> Result<Option<usize>> {
    match wlen {
        None => Ok(None),
        Some(w) if w > 1.0 => {
            let c = w.ceil();
            if c >= usize::MAX as f64 {
                Ok(None)
            } else {
                Ok(Some(c as usize))
            }
        }
        Some(w) => Err(MoiError::InvalidConfig(format!(
            "find_peaks: `wlen` must be larger than 1, got {w}"
        ))),
    }
}

/// Find peaks in `x` exactly as `scipy.signal.find_peaks(x, **opts)` does.
///
/// Errors (all raised by scipy as `ValueError` too): `distance < 1`, `wlen <= 1`,
/// `rel_height < 0` or NaN option values. NaN samples are allowed and, as in scipy, never
/// compare greater than anything, so they are never peaks.
///
/// ```
/// use moi_detect::{find_peaks, PeakOptions, Range};
/// let x = [0.0, 2.0, 0.0, 1.0, 1.0, 0.0, 3.0, 0.5, 0.0];
/// let opts = PeakOptions { distance: Some(2.0), prominence: Some(Range::at_least(1.5)), ..Default::default() };
/// let p = find_peaks(&x, &opts)?;
/// assert_eq!(p.peaks, vec![1, 6]);
/// assert_eq!(p.prominences.unwrap(), vec![2.0, 3.0]);
/// # Ok::<(), moi_detect::MoiError>(())
/// ```
pub fn find_peaks(x: &[f64], opts: &PeakOptions) -> Result<Peaks> {
    if let Some(d) = opts.distance {
        // `!(d >= 1)` also rejects NaN.
        if d.is_nan() || d < 1.0 {
            return Err(MoiError::InvalidConfig(format!(
                "find_peaks: `distance` must be greater or equal to 1, got {d}"
            )));
        }
    }
    if opts.rel_height.is_nan() || opts.rel_height < 0.0 {
        return Err(MoiError::InvalidConfig(format!(
            "find_peaks: `rel_height` must be greater or equal to 0.0, got {}",
            opts.rel_height
        )));
    }
    let (peaks, left_edges, right_edges) = local_maxima(x);
    let mut out = Peaks {
        peaks,
        ..Default::default()
    };

    if let Some(r) = opts.plateau_size {
        let sizes: Vec<usize> = left_edges
            .iter()
            .zip(&right_edges)
            .map(|(l, r)| r - l + 1)
            .collect();
        let keep: Vec<bool> = sizes.iter().map(|&s| r.contains(s as f64)).collect();
        out.plateau_sizes = Some(sizes);
        out.left_edges = Some(left_edges);
        out.right_edges = Some(right_edges);
        out.retain(&keep);
    }
    if let Some(r) = opts.height {
        let h: Vec<f64> = out.peaks.iter().map(|&p| x[p]).collect();
        let keep: Vec<bool> = h.iter().map(|&v| r.contains(v)).collect();
        out.peak_heights = Some(h);
        out.retain(&keep);
    }
    if let Some(r) = opts.threshold {
        let lt: Vec<f64> = out.peaks.iter().map(|&p| x[p] - x[p - 1]).collect();
        let rt: Vec<f64> = out.peaks.iter().map(|&p| x[p] - x[p + 1]).collect();
        let keep: Vec<bool> = lt
            .iter()
            .zip(&rt)
            .map(|(&l, &rr)| {
                r.min.is_none_or(|m| m <= l.min(rr)) && r.max.is_none_or(|m| l.max(rr) <= m)
            })
            .collect();
        out.left_thresholds = Some(lt);
        out.right_thresholds = Some(rt);
        out.retain(&keep);
    }
    if let Some(d) = opts.distance {
        let h: Vec<f64> = out.peaks.iter().map(|&p| x[p]).collect();
        let keep = select_by_distance(&out.peaks, &h, d);
        out.retain(&keep);
    }
    if opts.prominence.is_some() || opts.width.is_some() {
        let wlen = check_wlen(opts.wlen)?;
        let n = out.peaks.len();
        let (mut pr, mut lb, mut rb) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (a, b, c) in peak_prominences(x, &out.peaks, wlen) {
            pr.push(a);
            lb.push(b);
            rb.push(c);
        }
        if pr.contains(&0.0) {
            out.warn(PeakWarning::ZeroProminence);
        }
        out.prominences = Some(pr);
        out.left_bases = Some(lb);
        out.right_bases = Some(rb);
    }
    if let (Some(r), Some(pr)) = (opts.prominence, &out.prominences) {
        let keep: Vec<bool> = pr.iter().map(|&v| r.contains(v)).collect();
        out.retain(&keep);
    }
    if let (Some(r), Some(pr), Some(lb), Some(rb)) = (
        opts.width,
        &out.prominences,
        &out.left_bases,
        &out.right_bases,
    ) {
        let n = out.peaks.len();
        let mut w = Vec::with_capacity(n);
        let mut wh = Vec::with_capacity(n);
        let mut li = Vec::with_capacity(n);
        let mut ri = Vec::with_capacity(n);
        for (k, &p) in out.peaks.iter().enumerate() {
            let (a, b, c, d) = peak_width(x, p, pr[k], lb[k], rb[k], opts.rel_height);
            w.push(a);
            wh.push(b);
            li.push(c);
            ri.push(d);
        }
        if w.contains(&0.0) {
            out.warn(PeakWarning::ZeroWidth);
        }
        let keep: Vec<bool> = w.iter().map(|&v| r.contains(v)).collect();
        out.widths = Some(w);
        out.width_heights = Some(wh);
        out.left_ips = Some(li);
        out.right_ips = Some(ri);
        out.retain(&keep);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random walk with coarse steps, so equal values (ties, plateaus) are common.
    fn walk(n: usize, seed: u64, step: f64) -> Vec<f64> {
        let mut state = seed;
        let mut v = 0.0;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                v += ((state >> 61) as f64 - 3.5).round() * step;
                v
            })
            .collect()
    }

    #[test]
    fn fast_prominences_equal_the_direct_walks() {
        for (seed, n) in [(1u64, 5000usize), (7, 20_000), (99, 70_001)] {
            let x = walk(n, seed, 0.5);
            let (mid, _, _) = local_maxima(&x);
            // Also every sample as a "peak", which exercises plateaus and the array ends.
            let every: Vec<usize> = (0..n).step_by(3).collect();
            for peaks in [&mid, &every] {
                for wlen in [None, Some(2), Some(11), Some(400), Some(10 * n)] {
                    let fast = peak_prominences(&x, peaks, wlen);
                    for (&p, got) in peaks.iter().zip(&fast) {
                        assert_eq!(
                            *got,
                            peak_prominence(&x, p, wlen),
                            "peak {p}, wlen {wlen:?}"
                        );
                    }
                }
            }
        }
    }
}
