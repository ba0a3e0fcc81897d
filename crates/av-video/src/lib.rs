//! Video sources (MP4 via FFmpeg, frame folders, in-memory), frame-accurate clip reads, clip
//! transforms and the RepLAI before/after sample builder.
//!
//! * [`VideoSource`] is the one interface; `FfmpegSource` (feature `ffmpeg`),
//!   [`FrameFolderSource`] and [`InMemorySource`] implement it, and [`open_source`] picks one.
//! * [`clip_tensor`] and [`ClipSpec`] turn frames into normalised `(3, T, H, W)` clips.
//! * [`ReplaiSampler`] builds the `(video_before, video_after, audio)` triplet around a moment of
//!   interaction; [`MomentIndex`] caches the moments per file.
//!
//! ```
//! use av_video::{clip_tensor, ClipSpec, InMemorySource, VideoSource};
//! use rand::SeedableRng;
//!
//! let frames: Vec<_> = (0..16).map(|i| ndarray::Array3::from_elem((48, 64, 3), i as u8 * 10)).collect();
//! let mut src = InMemorySource::new("ramp", frames, 16.0, None)?;
//! let clip = src.read_frames(0.0, 0.45)?; // eight frames at 16 fps
//! let spec = ClipSpec { crop: 32, min_scale: 36, max_scale: 44, eval_scale: 36, ..ClipSpec::default() };
//! let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
//! let x = clip_tensor(&clip, &spec, Some(&mut rng))?;
//! assert_eq!(x.len(), 3 * 8 * 32 * 32);
//! # Ok::<(), av_video::VideoError>(())
//! ```

pub mod bench_media;
mod error;
#[cfg(feature = "ffmpeg")]
mod ffmpeg;
mod folder;
mod index;
mod sampler;
mod source;
pub mod temporal;
mod transform;

pub use error::VideoError;
#[cfg(feature = "ffmpeg")]
pub use ffmpeg::FfmpegSource;
pub use folder::{FrameFolderSource, META_FILE};
pub use index::{BuildReport, IndexEntry, MomentIndex, StoredMoment};
pub use sampler::{
    audio_slice, MomentMode, ReplaiSample, ReplaiSampler, SampleWindows, SamplerConfig,
};
pub use source::{open_source, Frame, InMemorySource, VideoMeta, VideoSource};
pub use transform::{apply_spatial, clip_tensor, resize, resize_crop, ClipSpec, SpatialParams};

/// The seeded generator the examples and benches use (re-exported so callers need no `rand`).
pub type SampleRng = rand_chacha::ChaCha8Rng;

/// A [`SampleRng`] from a seed: same seed, same samples.
pub fn seeded_rng(seed: u64) -> SampleRng {
    <SampleRng as rand::SeedableRng>::seed_from_u64(seed)
}
