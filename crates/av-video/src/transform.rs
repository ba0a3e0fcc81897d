//! Spatial clip transforms: short-side scale (Pillow's BILINEAR or NEAREST, byte for byte),
//! random/centre crop, horizontal flip, and conversion to a normalised `(C, T, H, W)` float
//! tensor.
//!
//! The resize is separable and computes only the output rows and columns that survive the crop,
//! so a 640x480 frame scaled to ~171x128 and cropped to 112x112 costs one 112-column horizontal
//! pass over the input rows that feed the crop plus one 112x112 vertical pass.

use ndarray::{Array3, ArrayView3};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::VideoError;
use crate::source::Frame;
use crate::temporal::uniform_subsample;

/// Frame rate, length, sizes and normalisation of one video clip (spec §2.1-2.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipSpec {
    /// Frame rate the clip is sampled at (frames are picked by timestamp from the source).
    pub fps: f64,
    /// Frames per clip after the uniform temporal subsample.
    pub num_frames: usize,
    /// Lower bound of the random short-side scale (train).
    pub min_scale: u32,
    /// Upper bound of the random short-side scale (train).
    pub max_scale: u32,
    /// Side of the square crop.
    pub crop: u32,
    /// Short side before the centre crop (eval).
    pub eval_scale: u32,
    /// Per-channel mean subtracted after scaling to [0, 1] (ImageNet by default).
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by (ImageNet by default).
    pub std: [f32; 3],
    /// Reproduce the reference's train-time resize that swaps width and height (gotcha G1).
    pub compat_swap_wh: bool,
}

impl Default for ClipSpec {
    fn default() -> Self {
        Self {
            fps: 16.0,
            num_frames: 8,
            min_scale: 128,
            max_scale: 180,
            crop: 112,
            eval_scale: 128,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            compat_swap_wh: false,
        }
    }
}

impl ClipSpec {
    /// Rejects values that would make a clip impossible (crop larger than the scaled frame, ...).
    pub fn validate(&self) -> Result<(), VideoError> {
        let bad = |m: String| Err(VideoError::InvalidConfig(m));
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return bad(format!("clip fps must be positive, got {}", self.fps));
        }
        if self.num_frames == 0 || self.crop == 0 {
            return bad("clip num_frames and crop must be positive".into());
        }
        if self.min_scale > self.max_scale {
            return bad(format!(
                "min_scale {} exceeds max_scale {}",
                self.min_scale, self.max_scale
            ));
        }
        if self.min_scale < self.crop || self.eval_scale < self.crop {
            return bad(format!(
                "scales (min {}, eval {}) must be at least the crop {}",
                self.min_scale, self.eval_scale, self.crop
            ));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return bad(format!("std must be positive, got {:?}", self.std));
        }
        Ok(())
    }

    /// Number of floats in one clip: `3 * num_frames * crop * crop`.
    pub fn clip_len(&self) -> usize {
        3 * self.num_frames * (self.crop as usize) * (self.crop as usize)
    }
}

/// Spatial parameters drawn once per clip and applied to all its frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpatialParams {
    /// Height of the scaled frame.
    pub scaled_h: usize,
    /// Width of the scaled frame.
    pub scaled_w: usize,
    /// Top row of the crop in the scaled frame.
    pub y0: usize,
    /// Left column of the crop in the scaled frame.
    pub x0: usize,
    /// Mirror left-right.
    pub flip: bool,
    /// Bilinear (train) or nearest (eval) interpolation.
    pub bilinear: bool,
}

/// Python's `round` (half to even), used by torchvision's centre-crop offset.
fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

impl SpatialParams {
    /// Train-time parameters: scale `s ~ U(min, max)`, crop offsets uniform, flip with p = 0.5.
    pub fn train<R: Rng + ?Sized>(
        spec: &ClipSpec,
        width: usize,
        height: usize,
        rng: &mut R,
    ) -> Result<Self, VideoError> {
        let s: f64 = if spec.max_scale > spec.min_scale {
            rng.random_range(spec.min_scale as f64..spec.max_scale as f64)
        } else {
            spec.min_scale as f64
        };
        let m = width.min(height) as f64;
        let (w, h) = (width as f64, height as f64);
        // G1: the reference computes the new size as (H/m*s, W/m*s) and hands it to PIL as
        // (width, height), transposing the aspect ratio of every training frame.
        let (scaled_w, scaled_h) = if spec.compat_swap_wh {
            ((h / m * s) as usize, (w / m * s) as usize)
        } else {
            ((w / m * s) as usize, (h / m * s) as usize)
        };
        let crop = spec.crop as usize;
        if scaled_w < crop || scaled_h < crop {
            return Err(VideoError::InvalidConfig(format!(
                "scaled frame {scaled_w}x{scaled_h} smaller than crop {crop}"
            )));
        }
        let x0 = rng.random_range(0..=scaled_w - crop);
        let y0 = rng.random_range(0..=scaled_h - crop);
        let flip = rng.random_bool(0.5);
        Ok(Self {
            scaled_h,
            scaled_w,
            y0,
            x0,
            flip,
            bilinear: true,
        })
    }

    /// Eval-time parameters: short side to `eval_scale` (nearest), centred crop, no flip.
    pub fn eval(spec: &ClipSpec, width: usize, height: usize) -> Result<Self, VideoError> {
        let s = spec.eval_scale as usize;
        let (scaled_w, scaled_h) = if width <= height {
            (s, s * height / width)
        } else {
            (s * width / height, s)
        };
        let crop = spec.crop as usize;
        if scaled_w < crop || scaled_h < crop {
            return Err(VideoError::InvalidConfig(format!(
                "scaled frame {scaled_w}x{scaled_h} smaller than crop {crop}"
            )));
        }
        Ok(Self {
            scaled_h,
            scaled_w,
            y0: round_half_even((scaled_h - crop) as f64 / 2.0) as usize,
            x0: round_half_even((scaled_w - crop) as f64 / 2.0) as usize,
            flip: false,
            bilinear: false,
        })
    }
}

/// Fractional bits of Pillow's fixed-point filter weights (`PRECISION_BITS`: 32 - 8 - 2).
const PRECISION_BITS: u32 = 22;

/// Filter taps of one output sample: first input index and fixed-point weights (sum about
/// `1 << PRECISION_BITS`).
#[derive(Debug, Clone)]
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// Pillow's rounding of a normalised weight to fixed point (`normalize_coeffs_8bpc`).
fn to_fixed(w: f64) -> i32 {
    let scaled = w * f64::from(1u32 << PRECISION_BITS);
    if w < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// Pillow's antialiased bilinear taps (`precompute_coeffs` with the triangle filter, widened by
/// the downscale factor), computed in f64 with Pillow's operation order so the fixed-point
/// weights come out identical.
fn bilinear_taps(in_len: usize, out_len: usize, out_range: std::ops::Range<usize>) -> Vec<Taps> {
    let scale = in_len as f64 / out_len as f64;
    let fscale = scale.max(1.0);
    let support = fscale;
    let ss = 1.0 / fscale;
    out_range
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            // C's `(int)` truncation; negative values clamp to 0 either way.
            let lo = ((center - support + 0.5).max(0.0)) as usize;
            let hi = ((center + support + 0.5) as usize).min(in_len).max(lo + 1);
            let w: Vec<f64> = (lo..hi)
                .map(|j| {
                    let x = ((j as f64 - center + 0.5) * ss).abs();
                    if x < 1.0 {
                        1.0 - x
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = w.iter().sum();
            // A zero sum cannot happen for in_len >= 1; Pillow then leaves the weights as they are.
            let norm = if sum != 0.0 { sum } else { 1.0 };
            Taps {
                start: lo,
                weights: w.iter().map(|v| to_fixed(v / norm)).collect(),
            }
        })
        .collect()
}

/// Pillow's NEAREST source index for each output index (`ImagingScaleAffine`): the source
/// position starts at half a step and is advanced by repeated addition of the step, in f64, so
/// it is accumulated the same way here (a direct `(i + 0.5) * step` rounds differently near
/// integers).
fn nearest_taps(in_len: usize, out_len: usize, out_range: std::ops::Range<usize>) -> Vec<Taps> {
    let step = in_len as f64 / out_len as f64;
    let mut pos = step * 0.5;
    let mut taps = Vec::with_capacity(out_range.len());
    for i in 0..out_range.end {
        if i >= out_range.start {
            taps.push(Taps {
                start: (pos.max(0.0) as usize).min(in_len - 1),
                weights: vec![1 << PRECISION_BITS],
            });
        }
        pos += step;
    }
    taps
}

/// The initial value of every fixed-point sum: one half, so the final shift rounds.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Pillow's `clip8`: the integer part of a fixed-point sum, clamped to a byte.
#[inline(always)]
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal taps of every output column padded with zero weights to one length `k` and laid
/// out tap-major, so the pass runs as vector loops across output columns.
///
/// A padded tap adds `0 * p = 0` to a running sum, so the result is identical to summing each
/// column's own taps.
#[derive(Debug, Clone)]
struct ColumnTaps {
    /// Output columns (the crop width).
    n: usize,
    /// Taps per column after padding.
    k: usize,
    /// First source column any tap reads.
    lo: usize,
    /// One past the last source column any tap reads.
    hi: usize,
    /// `k * n` offsets of the tap's pixel in the `lo..hi` span, times 3 (interleaved RGB).
    idx: Vec<u32>,
    /// `k * n` fixed-point weights, zero for padding.
    w: Vec<i32>,
}

impl ColumnTaps {
    fn new(xt: &[Taps], in_w: usize) -> Self {
        let n = xt.len();
        let lo = xt.iter().map(|t| t.start).min().unwrap_or(0);
        let hi = xt
            .iter()
            .map(|t| t.start + t.weights.len())
            .max()
            .unwrap_or(0)
            .clamp(lo, in_w);
        let k = xt.iter().map(|t| t.weights.len()).max().unwrap_or(0);
        let mut idx = vec![0u32; k * n];
        let mut w = vec![0i32; k * n];
        for (c, t) in xt.iter().enumerate() {
            for j in 0..k {
                // Padding reads a valid pixel (the column's last tap) with weight zero.
                let src = (t.start + j.min(t.weights.len() - 1)).clamp(lo, hi.max(lo + 1) - 1);
                idx[j * n + c] = ((src - lo) * 3) as u32;
                w[j * n + c] = t.weights.get(j).copied().unwrap_or(0);
            }
        }
        Self {
            n,
            k,
            lo,
            hi,
            idx,
            w,
        }
    }
}

/// Horizontal resampling of whole RGB rows (`in_w` interleaved pixels each) into `out`, one
/// planar row per input row: `crop_w` red values, then green, then blue (mirrored with `flip`).
/// Pillow's fixed-point arithmetic: `HALF + sum(p * w)`, then [`clip8`]. Planar rows let the
/// vector path store 16 finished bytes at once.
#[inline(always)]
fn horizontal_pass_body(rows: &[u8], in_w: usize, ct: &ColumnTaps, flip: bool, out: &mut [u8]) {
    let n = ct.n;
    if n == 0 || ct.hi <= ct.lo {
        return;
    }
    let row_len = in_w * 3;
    let span_len = (ct.hi - ct.lo) * 3;
    // The vector path reads 4 bytes per pixel (R, G, B and one to spare): every span needs one
    // readable byte past its end, which only the last row may lack; it is read from a copy.
    let mut padded = Vec::new();
    for (r, out) in out
        .chunks_exact_mut(n * 3)
        .take(rows.len() / row_len)
        .enumerate()
    {
        let start = r * row_len + ct.lo * 3;
        let span: &[u8] = if start + span_len < rows.len() {
            &rows[start..=start + span_len]
        } else {
            padded.clear();
            padded.extend_from_slice(&rows[start..start + span_len]);
            padded.push(0);
            &padded
        };
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if av_audio::simd::has_avx512() {
            // SAFETY: the CPU has AVX-512F; `ColumnTaps::new` keeps every index + 2 inside the
            // span, and `span` has one more byte (checked again in debug builds inside); `out`
            // holds `3 n` bytes.
            done = unsafe { row_avx512(span, ct, flip, out) };
        }
        // The columns the vector loop left (none when the crop is a multiple of 16).
        for c in done..n {
            let mut a = [HALF; 3];
            for j in 0..ct.k {
                let (w, i) = (ct.w[j * n + c], ct.idx[j * n + c] as usize);
                for (ch, a) in a.iter_mut().enumerate() {
                    *a += w * i32::from(span[i + ch]);
                }
            }
            let oc = if flip { n - 1 - c } else { c };
            for (ch, a) in a.iter().enumerate() {
                out[ch * n + oc] = clip8(*a);
            }
        }
    }
}

/// One output row of the horizontal pass, 16 columns at a time with the sums in registers
/// across taps: one 4-byte gather per tap brings each column's R, G and B (and a spare byte),
/// split with shifts and masks, then [`clip8`] as one shift, clamp and narrowing store per
/// channel. Integer arithmetic, so identical to the scalar loop. Returns how many leading
/// columns it wrote.
///
/// # Safety
/// The CPU must support AVX-512F, every `ct.idx` value + 3 must index into `span`, and `out`
/// must hold `3 * ct.n` bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(span: &[u8], ct: &ColumnTaps, flip: bool, out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = ct.n;
    debug_assert!(ct.idx.iter().all(|&i| i as usize + 3 < span.len()));
    debug_assert!(out.len() >= 3 * n);
    let full = n / 16 * 16;
    let base = span.as_ptr();
    let reverse = _mm512_set_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let (half, lo, hi) = (
        _mm512_set1_epi32(HALF),
        _mm512_setzero_si512(),
        _mm512_set1_epi32(255),
    );
    for c in (0..full).step_by(16) {
        let mut s = [half; 3];
        for j in 0..ct.k {
            let at = j * n + c;
            let w = _mm512_loadu_si512(ct.w.as_ptr().add(at).cast());
            let i = _mm512_loadu_si512(ct.idx.as_ptr().add(at).cast());
            // Little-endian: byte 0 is red, 1 green, 2 blue.
            let p = _mm512_i32gather_epi32::<1>(i, base.cast());
            let r = _mm512_and_si512(p, hi);
            let g = _mm512_and_si512(_mm512_srli_epi32::<8>(p), hi);
            let b = _mm512_and_si512(_mm512_srli_epi32::<16>(p), hi);
            s[0] = _mm512_add_epi32(s[0], _mm512_mullo_epi32(w, r));
            s[1] = _mm512_add_epi32(s[1], _mm512_mullo_epi32(w, g));
            s[2] = _mm512_add_epi32(s[2], _mm512_mullo_epi32(w, b));
        }
        // Mirrored: these 16 columns land reversed at the other end of the row.
        let oc = if flip { n - 16 - c } else { c };
        for (ch, &s) in s.iter().enumerate() {
            let v = _mm512_srai_epi32::<{ PRECISION_BITS }>(s);
            let mut q = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
            if flip {
                q = _mm512_permutexvar_epi32(reverse, q);
            }
            let bytes = _mm512_cvtusepi32_epi8(q);
            _mm_storeu_si128(out.as_mut_ptr().add(ch * n + oc).cast(), bytes);
        }
    }
    full
}

av_audio::multiversion!(
    /// [`horizontal_pass_body`] with the widest vectors the CPU has.
    fn horizontal_pass(rows: &[u8], in_w: usize, ct: &ColumnTaps, flip: bool, out: &mut [u8])
        => horizontal_pass_body
);

/// Vertical resampling of the horizontally resampled rows `tmp` (starting at input row
/// `row_lo`, `stride` bytes each) into `out`, in Pillow's fixed point.
#[inline(always)]
fn vertical_pass_body(tmp: &[u8], row_lo: usize, stride: usize, yt: &[Taps], out: &mut [u8]) {
    let mut acc = vec![0i32; stride];
    for (taps, out_row) in yt.iter().zip(out.chunks_exact_mut(stride)) {
        acc.iter_mut().for_each(|a| *a = HALF);
        for (k, &w) in taps.weights.iter().enumerate() {
            let r = taps.start + k - row_lo;
            for (a, &p) in acc.iter_mut().zip(&tmp[r * stride..(r + 1) * stride]) {
                *a += w * i32::from(p);
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
}

av_audio::multiversion!(
    /// [`vertical_pass_body`] with the widest vectors the CPU has.
    fn vertical_pass(tmp: &[u8], row_lo: usize, stride: usize, yt: &[Taps], out: &mut [u8])
        => vertical_pass_body
);

/// The taps of one resize-and-crop for one input size, built once per clip and applied to each
/// of its frames.
struct ResizePlan {
    in_h: usize,
    in_w: usize,
    crop_w: usize,
    flip: bool,
    columns: ColumnTaps,
    rows: Vec<Taps>,
    /// Input rows the vertical pass reads: `row_lo..row_hi`.
    row_lo: usize,
    row_hi: usize,
}

impl ResizePlan {
    fn new(
        (in_h, in_w): (usize, usize),
        (out_h, out_w): (usize, usize),
        (y0, x0, crop_h, crop_w): (usize, usize, usize, usize),
        flip: bool,
        bilinear: bool,
    ) -> Self {
        let (xt, yt) = if bilinear {
            (
                bilinear_taps(in_w, out_w, x0..x0 + crop_w),
                bilinear_taps(in_h, out_h, y0..y0 + crop_h),
            )
        } else {
            (
                nearest_taps(in_w, out_w, x0..x0 + crop_w),
                nearest_taps(in_h, out_h, y0..y0 + crop_h),
            )
        };
        let row_lo = yt.iter().map(|t| t.start).min().unwrap_or(0);
        let row_hi = yt
            .iter()
            .map(|t| t.start + t.weights.len())
            .max()
            .unwrap_or(0);
        Self {
            in_h,
            in_w,
            crop_w,
            flip,
            columns: ColumnTaps::new(&xt, in_w),
            rows: yt,
            row_lo,
            row_hi,
        }
    }

    /// Resizes one `(in_h, in_w, 3)` row-major frame into `out` (`crop_h * crop_w * 3` bytes,
    /// planar rows: `(crop_h, 3, crop_w)`); `tmp` is scratch kept across frames.
    fn run(&self, data: &[u8], tmp: &mut Vec<u8>, out: &mut [u8]) {
        debug_assert_eq!(data.len(), self.in_h * self.in_w * 3);
        // Horizontal pass on the needed rows only: (row_hi - row_lo, crop_w, 3).
        tmp.clear();
        tmp.resize((self.row_hi - self.row_lo) * self.crop_w * 3, 0);
        let rows = &data[self.row_lo * self.in_w * 3..self.row_hi * self.in_w * 3];
        horizontal_pass(rows, self.in_w, &self.columns, self.flip, tmp);
        vertical_pass(tmp, self.row_lo, self.crop_w * 3, &self.rows, out);
    }
}

/// Resizes `src` (H, W, 3) to `(out_h, out_w)` and returns only the window
/// `[y0, y0 + crop_h) x [x0, x0 + crop_w)` of the result, optionally mirrored.
///
/// Both passes round to u8 like Pillow, so results match a full resize followed by a crop
/// exactly, and both match Pillow's `resize`.
pub fn resize_crop(
    src: ArrayView3<'_, u8>,
    out_h: usize,
    out_w: usize,
    window: (usize, usize, usize, usize),
    flip: bool,
    bilinear: bool,
) -> Array3<u8> {
    let (_, _, crop_h, crop_w) = window;
    let (in_h, in_w, _) = src.dim();
    let src = src.as_standard_layout();
    let data = src.as_slice().unwrap_or(&[]);
    let plan = ResizePlan::new((in_h, in_w), (out_h, out_w), window, flip, bilinear);
    let mut out = vec![0u8; crop_h * crop_w * 3];
    plan.run(data, &mut Vec::new(), &mut out);
    // The plan writes planar rows; interleave them back to (H, W, 3).
    Array3::from_shape_fn((crop_h, crop_w, 3), |(y, x, c)| {
        out[(y * 3 + c) * crop_w + x]
    })
}

/// Full-frame resize (no crop): Pillow's antialiased BILINEAR, or NEAREST.
pub fn resize(src: ArrayView3<'_, u8>, out_h: usize, out_w: usize, bilinear: bool) -> Array3<u8> {
    resize_crop(src, out_h, out_w, (0, 0, out_h, out_w), false, bilinear)
}

/// Applies one set of spatial parameters to frames and writes the normalised `(3, T, crop, crop)`
/// tensor into `out` (length `3 * frames.len() * crop * crop`).
pub fn apply_spatial(
    frames: &[&Array3<u8>],
    params: &SpatialParams,
    spec: &ClipSpec,
    out: &mut [f32],
) -> Result<(), VideoError> {
    let crop = spec.crop as usize;
    let t_len = frames.len();
    let plane = crop * crop;
    if out.len() != 3 * t_len * plane {
        return Err(VideoError::InvalidConfig(format!(
            "output buffer holds {} floats, need {}",
            out.len(),
            3 * t_len * plane
        )));
    }
    // u8 -> normalised float lookup per channel.
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (v as f32 / 255.0 - spec.mean[c]) / spec.std[c];
        }
    }
    // The taps depend only on the frame size: build them once per clip (rebuilt only if a
    // caller mixes frame sizes).
    let mut plan: Option<ResizePlan> = None;
    let mut tmp = Vec::new();
    let mut small = vec![0u8; plane * 3];
    for (t, img) in frames.iter().enumerate() {
        let (in_h, in_w, _) = img.dim();
        if plan
            .as_ref()
            .is_none_or(|p| p.in_h != in_h || p.in_w != in_w)
        {
            plan = Some(ResizePlan::new(
                (in_h, in_w),
                (params.scaled_h, params.scaled_w),
                (params.y0, params.x0, crop, crop),
                params.flip,
                params.bilinear,
            ));
        }
        let Some(plan) = plan.as_ref() else {
            continue;
        };
        let img = img.as_standard_layout();
        plan.run(img.as_slice().unwrap_or(&[]), &mut tmp, &mut small);
        // `small` holds planar rows: row y of channel c starts at (3 y + c) crop.
        for (c, lut) in lut.iter().enumerate() {
            let dst = &mut out[(c * t_len + t) * plane..(c * t_len + t + 1) * plane];
            for (d, src) in dst
                .chunks_exact_mut(crop)
                .zip(small.chunks_exact(crop).skip(c).step_by(3))
            {
                for (d, &v) in d.iter_mut().zip(src) {
                    *d = lut[v as usize];
                }
            }
        }
    }
    Ok(())
}

/// Turns frames into one normalised clip `(3, num_frames, crop, crop)`, row-major.
///
/// With `rng` (train): random short-side scale in `[min_scale, max_scale)` (bilinear), random
/// crop, horizontal flip with p = 0.5, all shared by the clip's frames. Without (eval): short side
/// to `eval_scale` (nearest) and centre crop. Frames are first subsampled uniformly to
/// `num_frames` (pytorchvideo semantics; identity when the count already matches).
pub fn clip_tensor<R: Rng>(
    frames: &[Frame],
    spec: &ClipSpec,
    rng: Option<&mut R>,
) -> Result<Vec<f32>, VideoError> {
    spec.validate()?;
    if frames.is_empty() {
        return Err(VideoError::InvalidConfig("clip_tensor: no frames".into()));
    }
    let (h, w, _) = frames[0].image.dim();
    for (i, f) in frames.iter().enumerate() {
        crate::source::check_frame("clip", i, &f.image, Some((h, w)))?;
    }
    let params = match rng {
        Some(r) => SpatialParams::train(spec, w, h, r)?,
        None => SpatialParams::eval(spec, w, h)?,
    };
    let picked: Vec<&Array3<u8>> = uniform_subsample(frames.len(), spec.num_frames)
        .into_iter()
        .map(|i| &frames[i].image)
        .collect();
    let mut out = vec![0f32; spec.clip_len()];
    apply_spatial(&picked, &params, spec, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The horizontal pass written plainly: three running sums per output pixel, planar rows.
    fn horizontal_reference(rows: &[u8], in_w: usize, xt: &[Taps], flip: bool) -> Vec<u8> {
        let crop_w = xt.len();
        let mut out = vec![0u8; rows.len() / (in_w * 3) * crop_w * 3];
        for (row, out) in rows
            .chunks_exact(in_w * 3)
            .zip(out.chunks_exact_mut(crop_w * 3))
        {
            for (c, taps) in xt.iter().enumerate() {
                let mut a = [HALF; 3];
                for (k, &w) in taps.weights.iter().enumerate() {
                    for (ch, a) in a.iter_mut().enumerate() {
                        *a += w * i32::from(row[(taps.start + k) * 3 + ch]);
                    }
                }
                let oc = if flip { crop_w - 1 - c } else { c };
                for ch in 0..3 {
                    out[ch * crop_w + oc] = clip8(a[ch]);
                }
            }
        }
        out
    }

    #[test]
    fn horizontal_pass_matches_the_plain_loop() {
        let mut state = 0x1234_5678u32;
        let (in_w, n_rows) = (97usize, 5usize);
        let rows: Vec<u8> = (0..in_w * n_rows * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state >> 24) as u8
            })
            .collect();
        // Downscales (wide, uneven taps), an upscale, and crops touching both row ends.
        for (out_w, x0, crop) in [
            (31, 0, 31),
            (31, 5, 23),
            (40, 17, 23),
            (150, 130, 20),
            (13, 0, 13),
            (64, 10, 32),
            (90, 3, 80),
        ] {
            let xt = bilinear_taps(in_w, out_w, x0..x0 + crop);
            for flip in [false, true] {
                let mut fast = vec![0u8; n_rows * crop * 3];
                horizontal_pass(&rows, in_w, &ColumnTaps::new(&xt, in_w), flip, &mut fast);
                assert_eq!(
                    fast,
                    horizontal_reference(&rows, in_w, &xt, flip),
                    "{out_w} {x0} {flip}"
                );
            }
        }
    }

    fn ramp(h: usize, w: usize) -> Array3<u8> {
        Array3::from_shape_fn((h, w, 3), |(y, x, c)| {
            ((x * 7 + y * 3 + c * 40) % 256) as u8
        })
    }

    #[test]
    fn crop_window_equals_full_resize_then_crop() {
        let img = ramp(48, 64);
        for &bil in &[true, false] {
            let full = resize(img.view(), 40, 53, bil);
            let part = resize_crop(img.view(), 40, 53, (3, 5, 32, 32), false, bil);
            let expect = full.slice(ndarray::s![3..35, 5..37, ..]).to_owned();
            assert_eq!(part, expect);
            let flipped = resize_crop(img.view(), 40, 53, (3, 5, 32, 32), true, bil);
            let expect_f = expect.slice(ndarray::s![.., ..;-1, ..]).to_owned();
            assert_eq!(flipped, expect_f);
        }
    }

    #[test]
    fn bilinear_close_to_image_crate_triangle() {
        let img = ramp(120, 160);
        let ours = resize(img.view(), 37, 49, true);
        let (h, w, _) = img.dim();
        let buf = image::RgbImage::from_raw(
            w as u32,
            h as u32,
            img.as_standard_layout().iter().copied().collect(),
        )
        .expect("buffer size");
        let theirs = image::imageops::resize(&buf, 49, 37, image::imageops::FilterType::Triangle);
        let mut max = 0i32;
        for (a, b) in ours.iter().zip(theirs.as_raw()) {
            max = max.max((*a as i32 - *b as i32).abs());
        }
        assert!(max <= 2, "max abs difference {max}");
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = Array3::from_elem((30, 50, 3), 77u8);
        let out = resize(img.view(), 13, 21, true);
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn half_even_rounding() {
        assert_eq!(round_half_even(8.5), 8.0);
        assert_eq!(round_half_even(9.5), 10.0);
        assert_eq!(round_half_even(3.2), 3.0);
    }
}
