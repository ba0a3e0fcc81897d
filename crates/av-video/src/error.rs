//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong while opening a source, reading frames or building a sample.
///
/// Variants that concern a file carry its path (or the source name, for in-memory sources) so
/// that a data loader walking thousands of segments can say which one is broken and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// The file or directory does not exist.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// Missing path.
        path: PathBuf,
    },
    /// An operating-system error while reading or writing.
    #[error("{path}: I/O error: {source}")]
    Io {
        /// File being read or written.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The container holds no video stream (e.g. an audio-only file).
    #[error("{path}: no video stream")]
    NoVideoStream {
        /// Offending file.
        path: PathBuf,
    },
    /// The sampler needs audio but the source has none.
    #[error("{source_name}: no audio stream")]
    NoAudio {
        /// Source name (file path or in-memory name).
        source_name: String,
    },
    /// The container or a packet could not be decoded (truncated or corrupt file).
    #[error("{path}: cannot decode: {reason}")]
    Decode {
        /// Offending file.
        path: PathBuf,
        /// What the decoder reported.
        reason: String,
    },
    /// A frame image in a frame folder is unreadable.
    #[error("{path}: bad frame image: {reason}")]
    Image {
        /// Offending image file.
        path: PathBuf,
        /// What the image decoder reported.
        reason: String,
    },
    /// A frame folder's metadata file is missing or malformed.
    #[error("{path}: bad frame-folder metadata: {reason}")]
    Metadata {
        /// Metadata file (or folder).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file was given but the crate was built without the `ffmpeg` feature.
    #[error("{path}: decoding video files needs the `ffmpeg` cargo feature (or extract frames into a frame folder)")]
    FfmpegDisabled {
        /// File that was to be opened.
        path: PathBuf,
    },
    /// The source has no frames, or zero duration.
    #[error("{source_name}: empty source ({reason})")]
    EmptySource {
        /// Source name.
        source_name: String,
        /// What is empty.
        reason: String,
    },
    /// A requested time window does not overlap the source.
    #[error("{source_name}: window [{t0_s:.3}, {t1_s:.3}] s is outside the source (duration {duration_s:.3} s)")]
    WindowOutOfRange {
        /// Source name.
        source_name: String,
        /// Window start.
        t0_s: f64,
        /// Window end.
        t1_s: f64,
        /// Source duration.
        duration_s: f64,
    },
    /// A window yielded no frame at all (e.g. a gap in a variable-frame-rate file).
    #[error("{source_name}: no frame with a timestamp in [{t0_s:.3}, {t1_s:.3}] s")]
    NoFramesInWindow {
        /// Source name.
        source_name: String,
        /// Window start.
        t0_s: f64,
        /// Window end.
        t1_s: f64,
    },
    /// The segment has no moment of interaction in the valid range; the data loader replaces it.
    #[error("{source_name}: no valid moment of interaction")]
    NoValidMoment {
        /// Source name.
        source_name: String,
    },
    /// Frames of one source have different sizes, or a frame is not (H, W, 3).
    #[error("{source_name}: bad frame shape: {reason}")]
    FrameShape {
        /// Source name.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The audio front end failed on this source's audio.
    #[error("{source_name}: audio: {source}")]
    Audio {
        /// Source name.
        source_name: String,
        /// Underlying error.
        #[source]
        source: av_audio::AudioError,
    },
    /// Moment detection failed on this source's audio.
    #[error("{source_name}: moment detection: {source}")]
    Moi {
        /// Source name.
        source_name: String,
        /// Underlying error.
        #[source]
        source: moi_detect::MoiError,
    },
    /// The moment index file is unreadable or malformed.
    #[error("{path}: bad moment index: {reason}")]
    Index {
        /// Index file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl VideoError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            VideoError::NotFound { path }
        } else {
            VideoError::Io { path, source }
        }
    }
}
