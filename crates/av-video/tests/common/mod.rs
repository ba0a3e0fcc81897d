//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use ndarray::Array3;

/// The committed media fixtures (see tests/fixtures/media/make_media.sh at the workspace root).
pub fn media(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/media")
        .join(name)
}

/// Reads back the frame index that make_media.sh draws as 10 black/white blocks (16 px wide,
/// top half of a 160x120 frame). Works on any frame scaled from that layout.
pub fn frame_index(img: &Array3<u8>) -> usize {
    let (h, w, _) = img.dim();
    let y = h / 4;
    (0..10)
        .filter(|b| {
            let x = (b * 16 + 8) * w / 160;
            img[[y, x, 0]] > 128
        })
        .map(|b| 1usize << b)
        .sum()
}

/// Frames that draw their index like the fixtures do, for in-memory sources.
pub fn indexed_frames(n: usize, h: usize, w: usize) -> Vec<Array3<u8>> {
    (0..n)
        .map(|k| {
            Array3::from_shape_fn((h, w, 3), |(y, x, _)| {
                if y < h / 2 {
                    let b = x * 160 / w / 16;
                    if (k >> b) & 1 == 1 {
                        255
                    } else {
                        0
                    }
                } else {
                    (x * 255 / w) as u8
                }
            })
        })
        .collect()
}

/// Mono audio with faint noise and 5 ms clicks at `clicks` seconds.
pub fn clicky_audio(duration_s: f64, rate: u32, clicks: &[f64]) -> Vec<f32> {
    let n = (duration_s * rate as f64) as usize;
    let mut state = 12345u32;
    (0..n)
        .map(|i| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.003;
            let t = i as f64 / rate as f64;
            let click = clicks.iter().any(|&c| t >= c && t < c + 0.005);
            noise
                + if click {
                    (0.8 * (2.0 * std::f64::consts::PI * 3000.0 * t).sin()) as f32
                } else {
                    0.0
                }
        })
        .collect()
}

/// First sample whose magnitude exceeds `thr` at or after `from`.
pub fn onset(samples: &[f32], from: usize, thr: f32) -> Option<usize> {
    samples
        .iter()
        .skip(from)
        .position(|x| x.abs() > thr)
        .map(|i| i + from)
}
