//! The world: a validated configuration, the cheap per-video timelines, and rendering of
//! videos either all at once (in parallel) or one at a time on demand.

use std::sync::Arc;

use ndarray::Array3;
use rayon::prelude::*;

use crate::config::WorldConfig;
use crate::error::SynthError;
use crate::labels;
use crate::render::render_frames;
use crate::script::{build_script, Distractor, Interaction, Silence, Split, VideoScript};
use crate::sound::render_audio;

/// One rendered untrimmed video: its timeline, frames and audio track.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthVideo {
    /// Timeline and metadata (ids, split, interactions, distractors, states).
    pub script: VideoScript,
    /// Frames, each `(height, width, 3)` RGB; frame k is shown at `k / fps`. Shared, so that
    /// sources opened per training sample do not copy the video.
    pub frames: Arc<[Array3<u8>]>,
    /// Mono audio in `[-1, 1]` at `script.sample_rate`, sample 0 at time 0 (shared likewise).
    pub audio: Arc<[f32]>,
}

impl SynthVideo {
    /// EPIC-style id, e.g. `S01_03`.
    pub fn id(&self) -> &str {
        &self.script.video_id
    }

    /// Labelled interactions in time order.
    pub fn interactions(&self) -> &[Interaction] {
        &self.script.interactions
    }

    /// Loud sounds that change nothing visible.
    pub fn distractors(&self) -> &[Distractor] {
        &self.script.distractors
    }

    /// Ambient drop-outs.
    pub fn silences(&self) -> &[Silence] {
        &self.script.silences
    }

    /// Frame rate.
    pub fn fps(&self) -> f64 {
        self.script.fps
    }

    /// Audio sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.script.sample_rate
    }

    /// Duration in seconds (`frames.len() / fps`).
    pub fn duration_s(&self) -> f64 {
        self.script.duration_s
    }

    /// A video source for the sampler; shares frames and audio with this video (no copy).
    pub fn to_source(&self) -> Result<av_video::InMemorySource, SynthError> {
        av_video::InMemorySource::shared(
            self.script.video_id.clone(),
            Arc::clone(&self.frames),
            self.script.fps,
            Some((Arc::clone(&self.audio), self.script.sample_rate)),
        )
        .map_err(|source| SynthError::Source {
            video_id: self.script.video_id.clone(),
            source: Box::new(source),
        })
    }
}

/// A synthetic world. Construction only computes timelines (microseconds per video); pixels
/// and samples are rendered by [`World::generate`] / [`World::render_all`] (all videos, in
/// parallel) or by [`World::video`] (one video, on demand, for bounded memory).
#[derive(Debug, Clone)]
pub struct World {
    cfg: WorldConfig,
    scripts: Vec<VideoScript>,
    rendered: Vec<SynthVideo>,
}

/// Renders video `script` of a world configured by `cfg`.
fn render(cfg: &WorldConfig, script: &VideoScript) -> SynthVideo {
    SynthVideo {
        script: script.clone(),
        frames: render_frames(cfg, script).into(),
        audio: render_audio(cfg, script).into(),
    }
}

impl World {
    /// Validates `cfg` and lays out every video's timeline without rendering anything.
    pub fn new(cfg: WorldConfig) -> Result<Self, SynthError> {
        cfg.validate()?;
        let scripts = (0..cfg.n_videos)
            .into_par_iter()
            .map(|i| build_script(&cfg, i))
            .collect();
        Ok(World {
            cfg,
            scripts,
            rendered: Vec::new(),
        })
    }

    /// Builds and renders every video in parallel (identical output for any thread count:
    /// each video draws only from its own seed).
    pub fn generate(cfg: &WorldConfig) -> Result<Self, SynthError> {
        let mut w = World::new(cfg.clone())?;
        w.render_all();
        Ok(w)
    }

    /// Renders (and keeps) every video, in parallel; a no-op if already rendered.
    pub fn render_all(&mut self) {
        if self.rendered.len() == self.scripts.len() {
            return;
        }
        let cfg = &self.cfg;
        self.rendered = self.scripts.par_iter().map(|s| render(cfg, s)).collect();
    }

    /// The configuration the world was built from.
    pub fn config(&self) -> &WorldConfig {
        &self.cfg
    }

    /// Number of videos.
    pub fn len(&self) -> usize {
        self.scripts.len()
    }

    /// Whether the world has no videos (never true for a validated config).
    pub fn is_empty(&self) -> bool {
        self.scripts.is_empty()
    }

    /// Timelines of all videos (available without rendering).
    pub fn scripts(&self) -> &[VideoScript] {
        &self.scripts
    }

    /// Rendered videos: all of them after [`World::generate`] or [`World::render_all`], none for
    /// a world made with [`World::new`] (use [`World::video`] to render one on demand).
    pub fn videos(&self) -> &[SynthVideo] {
        &self.rendered
    }

    /// Video `index`: a copy of the kept rendering if any, otherwise rendered now (only this
    /// video is materialised, so memory stays bounded for big worlds).
    pub fn video(&self, index: usize) -> Result<SynthVideo, SynthError> {
        if let Some(v) = self.rendered.get(index) {
            return Ok(v.clone());
        }
        let script = self.scripts.get(index).ok_or(SynthError::NoSuchVideo {
            index,
            len: self.scripts.len(),
        })?;
        Ok(render(&self.cfg, script))
    }

    /// Indices of the videos in `split`.
    pub fn split_indices(&self, split: Split) -> Vec<usize> {
        self.scripts
            .iter()
            .filter(|s| s.split == split)
            .map(|s| s.index)
            .collect()
    }

    /// EPIC-KITCHENS-100 style annotation CSV of all interactions (`split = None`) or of one split.
    pub fn labels_epic_csv(&self, split: Option<Split>) -> Result<String, SynthError> {
        labels::epic_csv(&self.scripts, split)
    }

    /// `EPIC_100_verb_classes.csv` equivalent for this world's verbs.
    pub fn verb_classes_csv(&self) -> Result<String, SynthError> {
        labels::verb_classes_csv(self.cfg.n_verbs)
    }

    /// `EPIC_100_video_info.csv` equivalent: every video's duration, frame rate and size.
    pub fn video_info_csv(&self) -> Result<String, SynthError> {
        labels::video_info_csv(&self.scripts)
    }

    /// `EPIC_100_noun_classes.csv` equivalent for this world's nouns.
    pub fn noun_classes_csv(&self) -> Result<String, SynthError> {
        labels::noun_classes_csv(self.cfg.n_nouns)
    }
}
