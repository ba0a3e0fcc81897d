//! Spatial clip transforms: short-side scale (antialiased bilinear, as PIL), random/centre crop,
//! horizontal flip, and conversion to a normalised `(C, T, H, W)` float tensor.
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

/// Filter taps of one output sample: first input index and normalised weights.
#[derive(Debug, Clone)]
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

/// PIL-style antialiased bilinear taps: a triangle filter widened by the downscale factor.
fn bilinear_taps(in_len: usize, out_len: usize, out_range: std::ops::Range<usize>) -> Vec<Taps> {
    let scale = in_len as f64 / out_len as f64;
    let fscale = scale.max(1.0);
    let support = fscale;
    out_range
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize)
                .min(in_len)
                .max(lo + 1);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| {
                    let x = ((j as f64 + 0.5 - center) / fscale).abs();
                    (1.0 - x).max(0.0)
                })
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            } else {
                // Degenerate (cannot happen for in_len >= 1): fall back to nearest.
                w.iter_mut().for_each(|v| *v = 0.0);
                w[0] = 1.0;
            }
            Taps {
                start: lo,
                weights: w.into_iter().map(|v| v as f32).collect(),
            }
        })
        .collect()
}

/// PIL NEAREST source index for each output index.
fn nearest_taps(in_len: usize, out_len: usize, out_range: std::ops::Range<usize>) -> Vec<Taps> {
    let scale = in_len as f64 / out_len as f64;
    out_range
        .map(|i| Taps {
            start: (((i as f64 + 0.5) * scale) as usize).min(in_len - 1),
            weights: vec![1.0],
        })
        .collect()
}

#[inline(always)]
fn to_u8(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

/// Horizontal resampling of whole RGB rows (`in_w` pixels each) into `out` (`crop_w` pixels
/// per row, mirrored with `flip`).
#[inline(always)]
fn horizontal_pass_body(rows: &[u8], in_w: usize, xt: &[Taps], flip: bool, out: &mut [u8]) {
    let crop_w = xt.len();
    // Only the source columns the crop's taps read: lo..hi.
    let lo = xt.iter().map(|t| t.start).min().unwrap_or(0);
    let hi = xt
        .iter()
        .map(|t| t.start + t.weights.len())
        .max()
        .unwrap_or(0)
        .clamp(lo, in_w);
    // Each input value feeds several taps: convert the span to f32 once, as one vector loop.
    let mut rowf = vec![0f32; (hi - lo) * 3];
    for (row, out) in rows
        .chunks_exact(in_w * 3)
        .zip(out.chunks_exact_mut(crop_w * 3))
    {
        for (d, &v) in rowf.iter_mut().zip(&row[lo * 3..hi * 3]) {
            *d = f32::from(v);
        }
        for (c, taps) in xt.iter().enumerate() {
            let (mut a0, mut a1, mut a2) = (0f32, 0f32, 0f32);
            let px = &rowf[(taps.start - lo) * 3..(taps.start - lo + taps.weights.len()) * 3];
            for (&w, p) in taps.weights.iter().zip(px.chunks_exact(3)) {
                a0 += w * p[0];
                a1 += w * p[1];
                a2 += w * p[2];
            }
            let oc = if flip { crop_w - 1 - c } else { c };
            out[3 * oc] = to_u8(a0);
            out[3 * oc + 1] = to_u8(a1);
            out[3 * oc + 2] = to_u8(a2);
        }
    }
}

av_audio::multiversion!(
    /// [`horizontal_pass_body`] with the widest vectors the CPU has.
    fn horizontal_pass(rows: &[u8], in_w: usize, xt: &[Taps], flip: bool, out: &mut [u8])
        => horizontal_pass_body
);

/// Vertical resampling of the horizontally resampled rows `tmp` (starting at input row
/// `row_lo`, `stride` bytes each) into `out`.
#[inline(always)]
fn vertical_pass_body(tmp: &[u8], row_lo: usize, stride: usize, yt: &[Taps], out: &mut [u8]) {
    let mut acc = vec![0f32; stride];
    for (taps, out_row) in yt.iter().zip(out.chunks_exact_mut(stride)) {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (k, &w) in taps.weights.iter().enumerate() {
            let r = taps.start + k - row_lo;
            for (a, &p) in acc.iter_mut().zip(&tmp[r * stride..(r + 1) * stride]) {
                *a += w * p as f32;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = to_u8(a);
        }
    }
}

av_audio::multiversion!(
    /// [`vertical_pass_body`] with the widest vectors the CPU has.
    fn vertical_pass(tmp: &[u8], row_lo: usize, stride: usize, yt: &[Taps], out: &mut [u8])
        => vertical_pass_body
);

/// Resizes `src` (H, W, 3) to `(out_h, out_w)` and returns only the window
/// `[y0, y0 + crop_h) x [x0, x0 + crop_w)` of the result, optionally mirrored.
///
/// Both passes round to u8 like PIL, so results match a full resize followed by a crop exactly.
pub fn resize_crop(
    src: ArrayView3<'_, u8>,
    out_h: usize,
    out_w: usize,
    window: (usize, usize, usize, usize),
    flip: bool,
    bilinear: bool,
) -> Array3<u8> {
    let (y0, x0, crop_h, crop_w) = window;
    let (in_h, in_w, _) = src.dim();
    let src = src.as_standard_layout();
    let data = src.as_slice().unwrap_or(&[]);
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
    // Input rows needed by the vertical pass.
    let row_lo = yt.iter().map(|t| t.start).min().unwrap_or(0);
    let row_hi = yt
        .iter()
        .map(|t| t.start + t.weights.len())
        .max()
        .unwrap_or(0);
    // Horizontal pass on the needed rows only: (row_hi - row_lo, crop_w, 3).
    let n_rows = row_hi - row_lo;
    let mut tmp = vec![0u8; n_rows * crop_w * 3];
    let rows = &data[row_lo * in_w * 3..row_hi * in_w * 3];
    horizontal_pass(rows, in_w, &xt, flip, &mut tmp);
    // Vertical pass.
    let mut out = vec![0u8; crop_h * crop_w * 3];
    vertical_pass(&tmp, row_lo, crop_w * 3, &yt, &mut out);
    Array3::from_shape_vec((crop_h, crop_w, 3), out)
        .unwrap_or_else(|_| Array3::zeros((crop_h, crop_w, 3)))
}

/// Full-frame resize (no crop): PIL-style antialiased bilinear, or nearest.
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
    for (t, img) in frames.iter().enumerate() {
        let small = resize_crop(
            img.view(),
            params.scaled_h,
            params.scaled_w,
            (params.y0, params.x0, crop, crop),
            params.flip,
            params.bilinear,
        );
        let px = small.as_slice().unwrap_or(&[]);
        for c in 0..3 {
            let dst = &mut out[(c * t_len + t) * plane..(c * t_len + t + 1) * plane];
            for (i, d) in dst.iter_mut().enumerate() {
                *d = lut[c][px[3 * i + c] as usize];
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

    /// The horizontal pass written plainly: three running sums per output pixel.
    fn horizontal_reference(rows: &[u8], in_w: usize, xt: &[Taps], flip: bool) -> Vec<u8> {
        let crop_w = xt.len();
        let mut out = vec![0u8; rows.len() / (in_w * 3) * crop_w * 3];
        for (row, out) in rows
            .chunks_exact(in_w * 3)
            .zip(out.chunks_exact_mut(crop_w * 3))
        {
            for (c, taps) in xt.iter().enumerate() {
                let mut a = [0f32; 3];
                for (k, &w) in taps.weights.iter().enumerate() {
                    for (ch, a) in a.iter_mut().enumerate() {
                        *a += w * row[(taps.start + k) * 3 + ch] as f32;
                    }
                }
                let oc = if flip { crop_w - 1 - c } else { c };
                for ch in 0..3 {
                    out[3 * oc + ch] = to_u8(a[ch]);
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
        ] {
            let xt = bilinear_taps(in_w, out_w, x0..x0 + crop);
            for flip in [false, true] {
                let mut fast = vec![0u8; n_rows * crop * 3];
                horizontal_pass(&rows, in_w, &xt, flip, &mut fast);
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
