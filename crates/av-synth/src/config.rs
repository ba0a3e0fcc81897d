//! World configuration: every knob of the generator, serialisable so that a run can record the
//! exact world it trained on.

use serde::{Deserialize, Serialize};

use crate::error::SynthError;
use crate::vocab::{MAX_NOUNS, MAX_VERBS};

/// Parameters of a synthetic world. `Default` is the world the quick `replai-pretrain` run uses.
///
/// Times are in seconds, levels are linear amplitudes of `[-1, 1]` audio, pixel quantities are
/// in pixels of the generated frames. Unknown keys are rejected so a typo in a TOML file cannot
/// silently fall back to a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorldConfig {
    /// Master seed; video `i` is generated from a seed derived from `(seed, i)` only, so a video
    /// is identical whatever the number of videos or threads.
    pub seed: u64,
    /// Number of untrimmed videos.
    pub n_videos: usize,
    /// How many videos (the last ones) form the validation split; the others are training.
    pub val_videos: usize,
    /// Videos per synthetic participant (`participant_id` groups them as EPIC does).
    pub videos_per_participant: usize,
    /// Shortest video.
    pub min_duration_s: f64,
    /// Longest video (durations are uniform in `[min, max]`, rounded to whole frames).
    pub max_duration_s: f64,
    /// Frame rate (RepLAI expects 16 fps).
    pub fps: f64,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Audio sample rate (RepLAI's front end asserts 44.1 kHz).
    pub sample_rate: u32,
    /// Object classes (shape x colour), at most 16.
    pub n_nouns: usize,
    /// Interaction classes: 2 (open/close), 4 (+ turn-on/turn-off) or 6 (+ put/take).
    pub n_verbs: usize,
    /// Minimum time between two interactions (keeps before/after windows of neighbours apart).
    pub min_gap_s: f64,
    /// Mean time between two interactions (gap = min + exponential).
    pub mean_gap_s: f64,
    /// No interaction closer than this to either end of a video, so MoI windows fit.
    pub edge_margin_s: f64,
    /// Duration of the visual transition, centred on the interaction time.
    pub change_s: f64,
    /// Labelled action segment starts this long before the interaction.
    pub segment_before_s: f64,
    /// Labelled action segment stops this long after the interaction.
    pub segment_after_s: f64,
    /// Probability that an interaction is nearly silent (visual change, faint sound).
    pub quiet_interaction_prob: f64,
    /// Amplitude factor of a quiet interaction's sound.
    pub quiet_gain: f64,
    /// Loud sounds without any visual change, per second of video.
    pub distractor_rate: f64,
    /// Distractors are kept at least this far from interactions.
    pub distractor_clearance_s: f64,
    /// Ambient drop-outs per second of video.
    pub silence_rate: f64,
    /// Shortest ambient drop-out.
    pub silence_min_s: f64,
    /// Longest ambient drop-out.
    pub silence_max_s: f64,
    /// Peak amplitude of an interaction or distractor sound.
    pub event_level: f64,
    /// Random level variation of each sound, +- this many dB.
    pub level_jitter_db: f64,
    /// RMS of the ambient noise bed.
    pub ambient_level: f64,
    /// Standard deviation of per-pixel sensor noise (0..255 scale).
    pub pixel_noise: f64,
    /// Relative amplitude of the global brightness flicker.
    pub flicker: f64,
    /// Amplitude of the slow camera drift.
    pub drift_px: f64,
    /// Contrast of the background texture (0 = flat colour).
    pub texture_contrast: f64,
    /// Object radius as a fraction of the shorter frame side.
    pub object_scale: f64,
    /// Random offset of an object's placement from the frame centre, as a fraction of the side.
    pub position_jitter: f64,
    /// Static background objects (same shapes and colours as the nouns, never interacted with).
    pub n_clutter: usize,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            seed: 7,
            n_videos: 32,
            val_videos: 8,
            videos_per_participant: 8,
            min_duration_s: 20.0,
            max_duration_s: 30.0,
            fps: 16.0,
            width: 48,
            height: 48,
            sample_rate: 44_100,
            n_nouns: 8,
            n_verbs: 6,
            min_gap_s: 1.5,
            mean_gap_s: 2.5,
            edge_margin_s: 1.0,
            change_s: 0.1,
            segment_before_s: 0.2,
            segment_after_s: 0.6,
            quiet_interaction_prob: 0.1,
            quiet_gain: 0.03,
            distractor_rate: 0.12,
            distractor_clearance_s: 0.35,
            silence_rate: 0.04,
            silence_min_s: 0.5,
            silence_max_s: 1.5,
            event_level: 0.5,
            level_jitter_db: 3.0,
            ambient_level: 0.02,
            pixel_noise: 3.0,
            flicker: 0.05,
            drift_px: 3.0,
            texture_contrast: 0.35,
            object_scale: 0.22,
            position_jitter: 0.1,
            n_clutter: 2,
        }
    }
}

fn finite_in(field: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), SynthError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(SynthError::config(
            field,
            format!("must be a finite number in [{lo}, {hi}], got {v}"),
        ))
    }
}

impl WorldConfig {
    /// Checks every field, naming the first one that is out of range.
    pub fn validate(&self) -> Result<(), SynthError> {
        if self.n_videos == 0 {
            return Err(SynthError::config("n_videos", "must be at least 1"));
        }
        if self.val_videos > self.n_videos {
            return Err(SynthError::config(
                "val_videos",
                format!("{} exceeds n_videos = {}", self.val_videos, self.n_videos),
            ));
        }
        if self.videos_per_participant == 0 {
            return Err(SynthError::config(
                "videos_per_participant",
                "must be at least 1",
            ));
        }
        finite_in("fps", self.fps, 1.0, 240.0)?;
        finite_in("min_duration_s", self.min_duration_s, 0.0, 86_400.0)?;
        finite_in("max_duration_s", self.max_duration_s, 0.0, 86_400.0)?;
        if self.max_duration_s < self.min_duration_s {
            return Err(SynthError::config(
                "max_duration_s",
                format!(
                    "{} is below min_duration_s = {}",
                    self.max_duration_s, self.min_duration_s
                ),
            ));
        }
        finite_in("edge_margin_s", self.edge_margin_s, 0.0, 3_600.0)?;
        let shortest = 2.0 * self.edge_margin_s + 0.1;
        if self.min_duration_s < shortest {
            return Err(SynthError::config(
                "min_duration_s",
                format!(
                    "{} leaves no room for interactions; need at least 2 * edge_margin_s + 0.1 = {shortest}",
                    self.min_duration_s
                ),
            ));
        }
        if !(8..=4096).contains(&self.width) {
            return Err(SynthError::config("width", "must be in [8, 4096]"));
        }
        if !(8..=4096).contains(&self.height) {
            return Err(SynthError::config("height", "must be in [8, 4096]"));
        }
        if !(8_000..=192_000).contains(&self.sample_rate) {
            return Err(SynthError::config(
                "sample_rate",
                "must be in [8000, 192000] Hz",
            ));
        }
        if self.n_nouns == 0 || self.n_nouns > MAX_NOUNS {
            return Err(SynthError::config(
                "n_nouns",
                format!("must be in [1, {MAX_NOUNS}], got {}", self.n_nouns),
            ));
        }
        if !matches!(self.n_verbs, 2 | 4 | 6) || self.n_verbs > MAX_VERBS {
            return Err(SynthError::config(
                "n_verbs",
                format!(
                    "must be 2 (open/close), 4 (+turn-on/off) or 6 (+put/take), got {}",
                    self.n_verbs
                ),
            ));
        }
        finite_in("min_gap_s", self.min_gap_s, 0.05, 3_600.0)?;
        finite_in("mean_gap_s", self.mean_gap_s, self.min_gap_s, 3_600.0)?;
        finite_in("change_s", self.change_s, 0.0, 1.0)?;
        if self.change_s >= self.min_gap_s {
            return Err(SynthError::config(
                "change_s",
                "must be shorter than min_gap_s so transitions do not overlap",
            ));
        }
        finite_in("segment_before_s", self.segment_before_s, 0.0, 60.0)?;
        finite_in("segment_after_s", self.segment_after_s, 0.0, 60.0)?;
        if self.segment_before_s + self.segment_after_s < 0.01 {
            return Err(SynthError::config(
                "segment_after_s",
                "segments must last at least 0.01 s (one centisecond)",
            ));
        }
        finite_in(
            "quiet_interaction_prob",
            self.quiet_interaction_prob,
            0.0,
            1.0,
        )?;
        finite_in("quiet_gain", self.quiet_gain, 0.0, 1.0)?;
        finite_in("distractor_rate", self.distractor_rate, 0.0, 20.0)?;
        finite_in(
            "distractor_clearance_s",
            self.distractor_clearance_s,
            0.0,
            60.0,
        )?;
        finite_in("silence_rate", self.silence_rate, 0.0, 20.0)?;
        finite_in("silence_min_s", self.silence_min_s, 0.0, 60.0)?;
        finite_in(
            "silence_max_s",
            self.silence_max_s,
            self.silence_min_s,
            60.0,
        )?;
        finite_in("event_level", self.event_level, 0.0, 1.0)?;
        finite_in("level_jitter_db", self.level_jitter_db, 0.0, 24.0)?;
        finite_in("ambient_level", self.ambient_level, 0.0, 0.5)?;
        finite_in("pixel_noise", self.pixel_noise, 0.0, 128.0)?;
        finite_in("flicker", self.flicker, 0.0, 0.5)?;
        finite_in("drift_px", self.drift_px, 0.0, 1_000.0)?;
        finite_in("texture_contrast", self.texture_contrast, 0.0, 1.0)?;
        finite_in("object_scale", self.object_scale, 0.05, 0.45)?;
        finite_in("position_jitter", self.position_jitter, 0.0, 0.3)?;
        if self.n_clutter > 64 {
            return Err(SynthError::config("n_clutter", "must be at most 64"));
        }
        Ok(())
    }

    /// Number of training videos (the first `n_videos - val_videos`).
    pub fn train_videos(&self) -> usize {
        self.n_videos.saturating_sub(self.val_videos)
    }
}
