//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, generating or exporting a world.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// A configuration field is out of range; `field` is the serde key so a user can fix it.
    #[error("invalid world configuration: `{field}`: {reason}")]
    InvalidConfig {
        /// Offending key of [`crate::WorldConfig`].
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A video index past the end of the world was requested.
    #[error("video index {index} is out of range (the world has {len} videos)")]
    NoSuchVideo {
        /// Requested index.
        index: usize,
        /// Number of videos in the world.
        len: usize,
    },
    /// Writing an exported file or directory failed.
    #[error("{path}: I/O error: {source}")]
    Io {
        /// File or directory being written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Encoding a frame image failed.
    #[error("{path}: cannot encode frame image: {reason}")]
    Image {
        /// Image file being written.
        path: PathBuf,
        /// What the encoder reported.
        reason: String,
    },
    /// Writing a WAV file failed.
    #[error("{path}: cannot write audio: {source}")]
    Audio {
        /// WAV file being written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: Box<av_audio::AudioError>,
    },
    /// Serialising labels or metadata failed.
    #[error("{what}: cannot serialise: {reason}")]
    Serialize {
        /// What was being written (file name or table).
        what: String,
        /// What the serialiser reported.
        reason: String,
    },
    /// Wrapping a video into an `av_video` source failed.
    #[error("video {video_id}: cannot build an in-memory source: {source}")]
    Source {
        /// Synthetic video id.
        video_id: String,
        /// Underlying error.
        #[source]
        source: Box<av_video::VideoError>,
    },
    /// The `ffmpeg` command-line tool failed or is missing (only with the `ffmpeg` feature).
    #[error("{path}: ffmpeg: {reason}")]
    Ffmpeg {
        /// MP4 file being written.
        path: PathBuf,
        /// What went wrong (missing binary, exit status and stderr tail).
        reason: String,
    },
}

impl SynthError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SynthError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        SynthError::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}
