//! Data sources for pretraining and probing: the built-in synthetic world or a directory of
//! videos (frame folders, or MP4 with the `ffmpeg` feature), the RepLAI sample dataset used by the
//! loader, and the labelled interactions of the synthetic world used by the probe.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use av_synth::{Split, World};
use av_video::{MomentMode, ReplaiSample, ReplaiSampler, SamplerConfig, VideoSource};
use candle_core::{Device, Tensor};
use moi_detect::Moment;
use rand_chacha::ChaCha8Rng;

use crate::config::Config;
use crate::error::TrainError;
use crate::loader::Dataset;

/// Network input shape of one audio sample (channels, frames, mels).
pub const AUDIO_SHAPE: [usize; 3] = [1, 125, 80];

/// Builds the clip sampler of a run.
pub fn sampler_config(cfg: &Config) -> SamplerConfig {
    let s = &cfg.sampler;
    let clip = av_video::ClipSpec {
        fps: s.fps,
        num_frames: s.num_frames,
        min_scale: s.min_scale,
        max_scale: s.max_scale,
        crop: s.crop,
        eval_scale: s.eval_scale,
        compat_swap_wh: s.compat_swap_wh,
        ..av_video::ClipSpec::default()
    };
    SamplerConfig {
        clip,
        delta_s: s.delta_s,
        clip_s: s.clip_s,
        audio_s: s.audio_s,
        moments: if s.moments == "random" {
            MomentMode::Random
        } else {
            MomentMode::Moi
        },
        ..SamplerConfig::default()
    }
}

/// Shape `(3, T, crop, crop)` of one clip.
pub fn clip_shape(cfg: &Config) -> [usize; 4] {
    let c = cfg.sampler.crop as usize;
    [3, cfg.sampler.num_frames, c, c]
}

/// Where videos come from.
#[derive(Clone)]
pub enum VideoSet {
    /// Videos of the synthetic world (rendered in memory), by world index.
    Synthetic {
        /// The world.
        world: Arc<World>,
        /// World indices in this set.
        indices: Vec<usize>,
    },
    /// Files or frame folders opened with `av_video::open_source`.
    Files(Vec<PathBuf>),
}

impl VideoSet {
    /// Number of videos.
    pub fn len(&self) -> usize {
        match self {
            VideoSet::Synthetic { indices, .. } => indices.len(),
            VideoSet::Files(p) => p.len(),
        }
    }

    /// True when there are no videos.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens video `i` of the set.
    pub fn open(&self, i: usize) -> Result<Box<dyn VideoSource>, String> {
        match self {
            VideoSet::Synthetic { world, indices } => {
                let w = *indices
                    .get(i)
                    .ok_or_else(|| format!("video {i} out of range"))?;
                let v = world
                    .videos()
                    .get(w)
                    .ok_or_else(|| format!("world video {w} was not rendered"))?;
                v.to_source()
                    .map(|s| Box::new(s) as Box<dyn VideoSource>)
                    .map_err(|e| e.to_string())
            }
            VideoSet::Files(paths) => {
                let p = paths
                    .get(i)
                    .ok_or_else(|| format!("video {i} out of range"))?;
                av_video::open_source(p).map_err(|e| format!("{}: {e}", p.display()))
            }
        }
    }
}

/// Generates (renders) the synthetic world of a run.
pub fn synthetic_world(cfg: &Config) -> Result<Arc<World>, TrainError> {
    let world = World::generate(&cfg.synthetic)
        .map_err(|e| TrainError::other("generating the synthetic world", e))?;
    Ok(Arc::new(world))
}

/// Lists the videos of a `folder` data source: every entry of `data.root` (or those named in
/// `data.list`, one relative path per line), sorted.
pub fn folder_videos(root: &Path, list: Option<&Path>) -> Result<Vec<PathBuf>, TrainError> {
    let mut out = Vec::new();
    if let Some(list) = list {
        let text = std::fs::read_to_string(list).map_err(|e| TrainError::io(list, e))?;
        let mut missing = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let p = root.join(line);
            if !p.exists() {
                missing.push(format!("{}:{}: {}", list.display(), n + 1, p.display()));
            }
            out.push(p);
        }
        if !missing.is_empty() {
            return Err(TrainError::Data(format!(
                "{} listed videos do not exist:\n  {}",
                missing.len(),
                missing.join("\n  ")
            )));
        }
    } else {
        let rd = std::fs::read_dir(root).map_err(|e| TrainError::io(root, e))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                out.push(e.path());
            }
        }
        out.sort();
    }
    if out.is_empty() {
        return Err(TrainError::Data(format!(
            "no videos found under {}",
            root.display()
        )));
    }
    Ok(out)
}

/// Training videos of a run.
pub fn pretrain_videos(cfg: &Config, world: Option<&Arc<World>>) -> Result<VideoSet, TrainError> {
    match cfg.data.source.as_str() {
        "synthetic" => {
            let world = world.ok_or_else(|| {
                TrainError::Data("the synthetic source needs a generated world".into())
            })?;
            Ok(VideoSet::Synthetic {
                world: world.clone(),
                indices: world.split_indices(Split::Train),
            })
        }
        _ => {
            let list = (!cfg.data.list.is_empty()).then(|| PathBuf::from(&cfg.data.list));
            Ok(VideoSet::Files(folder_videos(
                Path::new(&cfg.data.root),
                list.as_deref(),
            )?))
        }
    }
}

/// RepLAI samples (before clip, after clip, audio) around moments of interaction.
pub struct PretrainDataset {
    videos: VideoSet,
    sampler: ReplaiSampler,
    moments: Vec<OnceLock<Result<Vec<Moment>, String>>>,
    len: usize,
    clip_shape: [usize; 4],
}

/// A collated pretraining batch on the CPU.
pub struct HostBatch {
    /// (B, 3, T, H, W).
    pub video_before: Tensor,
    /// (B, 3, T, H, W).
    pub video_after: Tensor,
    /// (B, 1, 125, 80).
    pub audio: Tensor,
}

impl PretrainDataset {
    /// `samples_per_epoch == 0` means one sample per video.
    pub fn new(cfg: &Config, videos: VideoSet) -> Result<Self, TrainError> {
        let sampler = ReplaiSampler::new(sampler_config(cfg)).map_err(|e| TrainError::Config {
            what: "sampler".into(),
            msg: e.to_string(),
        })?;
        if videos.is_empty() {
            return Err(TrainError::Data("no training videos".into()));
        }
        let len = if cfg.data.samples_per_epoch == 0 {
            videos.len()
        } else {
            cfg.data.samples_per_epoch
        };
        Ok(Self {
            moments: (0..videos.len()).map(|_| OnceLock::new()).collect(),
            videos,
            sampler,
            len,
            clip_shape: clip_shape(cfg),
        })
    }

    /// Number of distinct videos (xID memory-bank rows).
    pub fn n_videos(&self) -> usize {
        self.videos.len()
    }

    /// Video of sample `index`.
    pub fn video_of(&self, index: usize) -> usize {
        index % self.videos.len()
    }

    /// Detected moments of video `v` (computed once, shared by all workers).
    pub fn moments(&self, v: usize, src: &mut dyn VideoSource) -> Result<Vec<Moment>, String> {
        if self.sampler.config().moments == MomentMode::Random {
            return Ok(Vec::new());
        }
        self.moments[v]
            .get_or_init(|| self.sampler.moments(src).map_err(|e| e.to_string()))
            .clone()
    }
}

impl Dataset for PretrainDataset {
    type Item = ReplaiSample;
    type Batch = HostBatch;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, index: usize, rng: &mut ChaCha8Rng) -> Result<ReplaiSample, String> {
        let v = self.video_of(index);
        let mut src = self.videos.open(v)?;
        let moments = self.moments(v, &mut *src)?;
        self.sampler
            .sample(&mut *src, &moments, rng, true)
            .map_err(|e| e.to_string())
    }

    fn collate(&self, items: Vec<ReplaiSample>) -> Result<HostBatch, String> {
        let dev = Device::Cpu;
        let vb: Vec<&[f32]> = items.iter().map(|s| s.video_before.as_slice()).collect();
        let va: Vec<&[f32]> = items.iter().map(|s| s.video_after.as_slice()).collect();
        let au: Vec<&[f32]> = items.iter().map(|s| s.audio.as_slice()).collect();
        Ok(HostBatch {
            video_before: av_data::stack_f32(&vb, &self.clip_shape, &dev)
                .map_err(|e| format!("video_before: {e}"))?,
            video_after: av_data::stack_f32(&va, &self.clip_shape, &dev)
                .map_err(|e| format!("video_after: {e}"))?,
            audio: av_data::stack_f32(&au, &AUDIO_SHAPE, &dev)
                .map_err(|e| format!("audio: {e}"))?,
        })
    }
}

/// A labelled interaction or action segment: what the probe and fine-tuning classify.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledSegment {
    /// Index of the video in its [`VideoSet`].
    pub video: usize,
    /// Labelled time of the state change (the before/after pair protocol).
    pub time_s: f64,
    /// Start of the labelled window in the video's timeline (the single-clip protocol).
    pub start_s: f64,
    /// End of the labelled window; `f64::INFINITY` means "to the end of the video" (whole-clip
    /// datasets such as UCF-101, whose duration is only known once the file is opened).
    pub stop_s: f64,
    /// Verb class.
    pub verb: usize,
    /// Noun class.
    pub noun: usize,
}

/// Labelled interactions of one split of the synthetic world, with their videos.
pub fn synthetic_segments(world: &Arc<World>, split: Split) -> (VideoSet, Vec<LabelledSegment>) {
    let indices = world.split_indices(split);
    let mut segs = Vec::new();
    for (vi, &w) in indices.iter().enumerate() {
        if let Some(s) = world.scripts().get(w) {
            for it in &s.interactions {
                segs.push(LabelledSegment {
                    video: vi,
                    time_s: it.time_s,
                    start_s: it.start_s,
                    stop_s: it.stop_s,
                    verb: it.verb,
                    noun: it.noun,
                });
            }
        }
    }
    (
        VideoSet::Synthetic {
            world: world.clone(),
            indices,
        },
        segs,
    )
}
