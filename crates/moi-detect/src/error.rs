//! The crate's error type.

/// Everything that can go wrong while detecting moments of interaction.
///
/// Callers usually only need the message; the variants exist so that a batch driver can tell
/// "this input is unusable" ([`MoiError::NonFinite`], [`MoiError::InvalidInput`]) from "the
/// caller asked for something impossible" ([`MoiError::InvalidConfig`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoiError {
    /// A sample or curve value is NaN or infinite; the z-score would silently poison every frame.
    #[error("{what}: value at index {index} is not finite ({value})")]
    NonFinite {
        /// Which buffer held the value (`"audio samples"`, `"curve"`).
        what: &'static str,
        /// Position of the first offending value.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// A configuration field is out of its domain (e.g. `nperseg == 0`, `distance < 1`).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The input cannot be analysed as given (e.g. a zero sample rate).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The log-mel variant's front end (av-audio) refused the request.
    #[error("log-mel front end: {0}")]
    Audio(#[from] av_audio::AudioError),
}

/// Shorthand used throughout the crate.
pub type Result<T, E = MoiError> = std::result::Result<T, E>;
