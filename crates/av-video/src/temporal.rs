//! Temporal arithmetic: frame-rate conversion by timestamp, the reference's crop / loop-pad to
//! `N` frames, and pytorchvideo's uniform temporal subsample.

use rand::Rng;

use crate::source::PTS_EPS;

/// Times `k / fps` (integer `k`) that fall inside `[t0_s, t1_s]`: the frame grid a video
/// re-encoded at `fps` (e.g. `ffmpeg -vf fps=16`) would have in that window.
pub fn grid_times(t0_s: f64, t1_s: f64, fps: f64) -> Vec<f64> {
    if !(fps.is_finite() && t0_s.is_finite() && t1_s.is_finite()) || fps <= 0.0 || t1_s < t0_s {
        return Vec::new();
    }
    let k0 = ((t0_s - PTS_EPS) * fps).ceil() as i64;
    let k1 = ((t1_s + PTS_EPS) * fps).floor() as i64;
    (k0..=k1).map(|k| k as f64 / fps).collect()
}

/// For each query time, the index of the nearest timestamp in `pts` (ascending); ties go to the
/// earlier timestamp. `None` only when `pts` is empty.
pub fn nearest_indices(pts: &[f64], times_s: &[f64]) -> Vec<Option<usize>> {
    times_s
        .iter()
        .map(|&t| {
            if pts.is_empty() {
                return None;
            }
            // First index with pts >= t.
            let j = pts.partition_point(|&p| p < t);
            if j == 0 {
                Some(0)
            } else if j == pts.len() {
                Some(pts.len() - 1)
            } else if (pts[j] - t) < (t - pts[j - 1]) {
                Some(j)
            } else {
                Some(j - 1)
            }
        })
        .collect()
}

/// The reference's fixed-length window over `len` frames: when `len > n`, `n` consecutive frames
/// starting at a random offset in `[0, len - n]` (train) or the centred offset (eval, `rng` is
/// `None`); when `len < n`, the frames repeated from the beginning (loop padding).
///
/// The reference draws the start from `[0, len - n - 1]` (Python's `range(len - n)`), so it never
/// picks the last possible window; this function includes it (a nine-frame window gives both
/// eight-frame choices).
pub fn crop_or_loop_pad<R: Rng + ?Sized>(len: usize, n: usize, rng: Option<&mut R>) -> Vec<usize> {
    if len == 0 || n == 0 {
        return Vec::new();
    }
    if len >= n {
        let slack = len - n;
        let start = match rng {
            Some(r) if slack > 0 => r.random_range(0..=slack),
            _ => slack / 2,
        };
        (start..start + n).collect()
    } else {
        (0..n).map(|i| i % len).collect()
    }
}

/// pytorchvideo's `UniformTemporalSubsample`: indices `floor(linspace(0, t - 1, n))`, computed
/// exactly in integers (identity when `t == n`; repeats indices when `t < n`).
pub fn uniform_subsample(t: usize, n: usize) -> Vec<usize> {
    if t == 0 || n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![0];
    }
    (0..n).map(|i| i * (t - 1) / (n - 1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grid_of_half_second_at_16fps_has_eight_or_nine_frames() {
        assert_eq!(grid_times(0.4, 0.9, 16.0).len(), 8); // 0.4375 .. 0.875
        assert_eq!(grid_times(0.5, 1.0, 16.0).len(), 9); // both ends on the grid
        assert_eq!(grid_times(1.0, 0.5, 16.0).len(), 0);
    }

    #[test]
    fn nearest_prefers_earlier_on_ties() {
        let pts = [0.0, 0.1, 0.2];
        let got = nearest_indices(&pts, &[-1.0, 0.05, 0.06, 0.2, 7.0]);
        assert_eq!(got, vec![Some(0), Some(0), Some(1), Some(2), Some(2)]);
        assert_eq!(nearest_indices(&[], &[0.0]), vec![None]);
    }

    #[test]
    fn crop_and_pad() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            crop_or_loop_pad::<rand_chacha::ChaCha8Rng>(5, 8, None),
            vec![0, 1, 2, 3, 4, 0, 1, 2]
        );
        assert_eq!(
            crop_or_loop_pad::<rand_chacha::ChaCha8Rng>(10, 8, None),
            (1..9).collect::<Vec<_>>()
        );
        let mut starts = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let w = crop_or_loop_pad(9, 8, Some(&mut rng));
            assert_eq!(w.len(), 8);
            assert_eq!(w[7] - w[0], 7);
            starts.insert(w[0]);
        }
        assert_eq!(starts.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn uniform_subsample_matches_pytorchvideo() {
        assert_eq!(uniform_subsample(8, 8), (0..8).collect::<Vec<_>>());
        // 15 frames (30 fps, 0.5 s) -> 8: floor(linspace(0, 14, 8)) = 0,2,4,6,8,10,12,14.
        assert_eq!(uniform_subsample(15, 8), vec![0, 2, 4, 6, 8, 10, 12, 14]);
        // The audio case of spec §2.3: 124 -> 125 duplicates frame 0.
        let a = uniform_subsample(124, 125);
        assert_eq!(&a[..4], &[0, 0, 1, 2]);
        assert_eq!(a[124], 123);
    }
}
