//! How a labelled segment becomes encoder input, shared by the linear probe and fine-tuning so
//! both see exactly the same clips.
//!
//! Two protocols:
//! - [`Protocol::Pair`]: the clip before and the clip after the labelled moment, the pair RepLAI
//!   pretrains on; the feature is `[f(before), f(after)]`. Used for the synthetic world, whose
//!   labels are state changes at known times.
//! - [`Protocol::Clip`]: one `clip_s` clip inside the labelled window, the feature `f(clip)`.
//!   This is the papers' protocol for EPIC-KITCHENS-100 action segments (`replai.md` §6) and for
//!   UCF-101 / HMDB-51 (`avid_xid_vicreg.md` §6.2): training clips start uniformly in
//!   `[start, stop - clip_s]`; evaluation clips are spread evenly over the same range (10 dense
//!   clips in AVID's "video" mode) and their softmax is averaged per segment.

use av_video::ReplaiSampler;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::{LabelledSegment, VideoSet};
use crate::loader::derive_seed;

/// Which clips represent a labelled segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Before/after clips around the labelled moment; feature `[f(before), f(after)]`.
    Pair,
    /// One clip inside the labelled window; feature `f(clip)`.
    Clip,
}

impl Protocol {
    /// Encoder calls per view (the feature is their concatenation).
    pub fn clips_per_view(self) -> usize {
        match self {
            Protocol::Pair => 2,
            Protocol::Clip => 1,
        }
    }

    /// Parses a config value (`pair` / `clip`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pair" => Some(Protocol::Pair),
            "clip" => Some(Protocol::Clip),
            _ => None,
        }
    }
}

/// One view of a segment: where in it, with which transform and random stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct View {
    /// Index of the segment in its split.
    pub segment: usize,
    /// [`Protocol::Pair`]: the moment (seconds). [`Protocol::Clip`]: the clip start as a fraction
    /// of the admissible range `[start, stop - clip_s]` (resolved once the video's duration is
    /// known).
    pub pos: f64,
    /// Random scale/crop/flip and temporal crop, or the evaluation transform.
    pub train: bool,
    /// Seed of the view's random stream.
    pub seed: u64,
}

/// Moment offsets of the evaluation views: evenly spread over `[-delta, delta]` (one view: 0).
pub(crate) fn eval_offsets(n: usize, delta: f64) -> Vec<f64> {
    if n <= 1 {
        return vec![0.0];
    }
    (0..n)
        .map(|k| -delta + 2.0 * delta * k as f64 / (n - 1) as f64)
        .collect()
}

/// Clip-start fractions of `n` dense evaluation clips: `k / (n - 1)` (one clip: the centre), the
/// continuous form of AVID's `linspace(0, nf - 8, 10)` frame starts.
pub(crate) fn dense_fractions(n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![0.5];
    }
    (0..n).map(|k| k as f64 / (n - 1) as f64).collect()
}

/// A random view position: the moment jittered by up to `delta` ([`Protocol::Pair`]) or a
/// uniform clip-start fraction ([`Protocol::Clip`]).
pub(crate) fn random_pos<R: Rng + ?Sized>(
    protocol: Protocol,
    seg: &LabelledSegment,
    delta: f64,
    r: &mut R,
) -> f64 {
    match protocol {
        Protocol::Pair => seg.time_s + r.random_range(-delta..=delta),
        Protocol::Clip => r.random_range(0.0..=1.0),
    }
}

/// `n` augmented training views per segment.
pub fn train_views(
    protocol: Protocol,
    segments: &[LabelledSegment],
    n: usize,
    delta: f64,
    seed: u64,
) -> Vec<View> {
    let mut out = Vec::with_capacity(segments.len() * n.max(1));
    for (i, s) in segments.iter().enumerate() {
        for k in 0..n.max(1) {
            let vs = derive_seed(seed, 0x7a1, i as u64, k as u64);
            let pos = random_pos(protocol, s, delta, &mut ChaCha8Rng::seed_from_u64(vs ^ 1));
            out.push(View {
                segment: i,
                pos,
                train: true,
                seed: vs,
            });
        }
    }
    out
}

/// Evaluation views: `n` evenly spread views per segment, or with `single_clip` (the reference's
/// G8) one randomly placed view.
pub fn eval_views(
    protocol: Protocol,
    segments: &[LabelledSegment],
    n: usize,
    single_clip: bool,
    delta: f64,
    seed: u64,
) -> Vec<View> {
    let mut out = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        if single_clip {
            let vs = derive_seed(seed, 0x7a2, i as u64, 0);
            let pos = random_pos(protocol, s, delta, &mut ChaCha8Rng::seed_from_u64(vs));
            out.push(View {
                segment: i,
                pos,
                train: false,
                seed: vs,
            });
            continue;
        }
        let positions: Vec<f64> = match protocol {
            Protocol::Pair => eval_offsets(n, delta)
                .into_iter()
                .map(|o| s.time_s + o)
                .collect(),
            Protocol::Clip => dense_fractions(n),
        };
        for (k, pos) in positions.into_iter().enumerate() {
            out.push(View {
                segment: i,
                pos,
                train: false,
                seed: derive_seed(seed, 0x7a3, i as u64, k as u64),
            });
        }
    }
    out
}

/// Start of the clip at fraction `frac` of the admissible range of a window `[start, stop]` in a
/// video of `duration_s` (a window shorter than the clip starts at its start and is loop-padded).
pub fn clip_start(start_s: f64, stop_s: f64, duration_s: f64, clip_s: f64, frac: f64) -> f64 {
    let start = start_s.max(0.0);
    let stop = stop_s.min(duration_s);
    start + frac.clamp(0.0, 1.0) * (stop - clip_s - start).max(0.0)
}

/// The clips of one view (`protocol.clips_per_view()` of them, each `(3, T, crop, crop)`).
pub fn view_clips<R: Rng>(
    sampler: &ReplaiSampler,
    protocol: Protocol,
    videos: &VideoSet,
    seg: &LabelledSegment,
    pos: f64,
    rng: &mut R,
    train: bool,
) -> Result<Vec<Vec<f32>>, String> {
    let mut src = videos.open(seg.video)?;
    let name = src.name().to_string();
    match protocol {
        Protocol::Pair => {
            let s = sampler
                .sample_at(&mut *src, pos, rng, train)
                .map_err(|e| format!("{name} at {pos:.2} s: {e}"))?;
            Ok(vec![s.video_before, s.video_after])
        }
        Protocol::Clip => {
            let dur = src.meta().duration_s;
            let t0 = clip_start(seg.start_s, seg.stop_s, dur, sampler.config().clip_s, pos);
            let c = sampler
                .clip_at(&mut *src, t0, rng, train)
                .map_err(|e| format!("{name} clip at {t0:.2} s: {e}"))?;
            Ok(vec![c])
        }
    }
}

/// [`view_clips`] with the view's own seeded random stream.
pub fn clips_of(
    sampler: &ReplaiSampler,
    protocol: Protocol,
    videos: &VideoSet,
    segments: &[LabelledSegment],
    view: &View,
) -> Result<Vec<Vec<f32>>, String> {
    let seg = &segments[view.segment];
    let mut rng = ChaCha8Rng::seed_from_u64(view.seed);
    view_clips(
        sampler, protocol, videos, seg, view.pos, &mut rng, view.train,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_starts_stay_inside_the_window() {
        // 3 s window, 0.5 s clips: starts span [1, 3.5].
        assert_eq!(clip_start(1.0, 4.0, 10.0, 0.5, 0.0), 1.0);
        assert_eq!(clip_start(1.0, 4.0, 10.0, 0.5, 1.0), 3.5);
        // Open-ended window (whole-video datasets): limited by the duration.
        assert_eq!(clip_start(0.0, f64::INFINITY, 2.0, 0.5, 1.0), 1.5);
        // Shorter than a clip: always the start (the sampler loop-pads).
        assert_eq!(clip_start(2.0, 2.3, 10.0, 0.5, 0.7), 2.0);
    }

    #[test]
    fn dense_fractions_match_avid_linspace() {
        let f = dense_fractions(10);
        assert_eq!(f.len(), 10);
        assert_eq!((f[0], f[9]), (0.0, 1.0));
        assert!((f[1] - 1.0 / 9.0).abs() < 1e-15);
        assert_eq!(dense_fractions(1), vec![0.5]);
    }

    #[test]
    fn views_are_deterministic_per_seed() {
        let segs: Vec<LabelledSegment> = (0..3)
            .map(|i| LabelledSegment {
                video: i,
                time_s: 2.0,
                start_s: 1.0,
                stop_s: 3.0,
                verb: 0,
                noun: 0,
            })
            .collect();
        for p in [Protocol::Pair, Protocol::Clip] {
            let a = train_views(p, &segs, 2, 0.1, 7);
            assert_eq!(a, train_views(p, &segs, 2, 0.1, 7));
            assert_ne!(a, train_views(p, &segs, 2, 0.1, 8));
            assert_eq!(a.len(), 6);
            let e = eval_views(p, &segs, 5, false, 0.1, 7);
            assert_eq!(e.len(), 15);
            assert!(e.iter().all(|v| !v.train));
            assert_eq!(eval_views(p, &segs, 5, true, 0.1, 7).len(), 3);
        }
    }
}
