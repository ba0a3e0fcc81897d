//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in the audio front end.
///
/// Decoding variants carry the offending file so that a data loader processing thousands of
/// clips can report which one is broken; processing variants name the quantity that was bad.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// The file could not be opened, read or written.
    #[error("{path}: I/O error: {source}")]
    Io {
        /// File being read or written.
        path: PathBuf,
        /// Underlying operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but holds zero bytes.
    #[error("{path}: file is empty")]
    EmptyFile {
        /// Offending file.
        path: PathBuf,
    },
    /// No demuxer recognised the container (e.g. a text or image file).
    #[error("{path}: not a recognised audio container: {reason}")]
    UnrecognizedFormat {
        /// Offending file.
        path: PathBuf,
        /// What the prober reported.
        reason: String,
    },
    /// The container holds no audio stream (e.g. a silent video).
    #[error("{path}: no audio track")]
    NoAudioTrack {
        /// Offending file.
        path: PathBuf,
    },
    /// The audio codec is not supported by the enabled decoders.
    #[error("{path}: unsupported audio codec {codec}{hint}")]
    UnsupportedCodec {
        /// Offending file.
        path: PathBuf,
        /// Codec name, e.g. `opus`.
        codec: String,
        /// Extra advice (e.g. enable the `ffmpeg` feature), possibly empty.
        hint: String,
    },
    /// The stream is malformed beyond what a decoder can skip over.
    #[error("{path}: corrupt audio stream: {reason}")]
    Corrupt {
        /// Offending file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// The stream ends well before the length its container declares.
    #[error("{path}: truncated audio: container declares {expected} frames, decoded {decoded}")]
    Truncated {
        /// Offending file.
        path: PathBuf,
        /// Frames declared by the container.
        expected: u64,
        /// Frames actually decoded.
        decoded: u64,
    },
    /// Decoding succeeded but produced no samples.
    #[error("{path}: audio stream holds zero samples")]
    NoSamples {
        /// Offending file.
        path: PathBuf,
    },
    /// A sample is NaN or infinite; spectrograms and logs would silently propagate it.
    #[error("{what}: non-finite sample {value} at channel {channel}, index {index}")]
    NonFiniteSample {
        /// File or buffer holding the sample.
        what: String,
        /// Channel of the sample (0 for mono buffers).
        channel: usize,
        /// Index of the sample within its channel.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// The FFmpeg fallback decoder failed.
    #[error("{path}: ffmpeg: {reason}")]
    Ffmpeg {
        /// Offending file.
        path: PathBuf,
        /// FFmpeg's message.
        reason: String,
    },
    /// A resampler or spectrogram parameter is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The input is too short for the requested transform.
    #[error("input of {n_samples} samples is too short: {reason}")]
    TooShort {
        /// Length of the offending input.
        n_samples: usize,
        /// Why it is too short.
        reason: String,
    },
}

impl AudioError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        AudioError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Returns the first NaN/Inf in `samples`, as an error naming `what`.
pub(crate) fn check_finite(samples: &[f32], what: &str, channel: usize) -> Result<(), AudioError> {
    use rayon::prelude::*;
    // A branch-free (vectorised) scan per block, blocks in parallel; the position is only
    // searched for once something is known to be wrong.
    let finite = samples
        .par_chunks(1 << 16)
        .all(|c| c.iter().fold(true, |ok, x| ok & x.is_finite()));
    if finite {
        return Ok(());
    }
    let index = samples.iter().position(|x| !x.is_finite()).unwrap_or(0);
    Err(AudioError::NonFiniteSample {
        what: what.to_string(),
        channel,
        index,
        value: samples[index],
    })
}
