//! The crate's error type: every variant names the file, key or step it is about.

use std::path::{Path, PathBuf};

/// Errors of configuration, data loading, checkpoints and training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A configuration value is malformed or out of range.
    #[error("config error in {what}: {msg}")]
    Config {
        /// File, key or override concerned.
        what: String,
        /// What is wrong.
        msg: String,
    },
    /// A configuration key does not exist.
    #[error("unknown config key `{key}` ({origin}){}", suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default())]
    UnknownKey {
        /// The offending dotted key.
        key: String,
        /// Where it came from (file path or "command line").
        origin: String,
        /// The closest existing key, when one is close enough.
        suggestion: Option<String>,
    },
    /// Filesystem failure.
    #[error("{}: {source}", path.display())]
    Io {
        /// File or directory concerned.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A checkpoint is missing, corrupt or does not fit the model.
    #[error("checkpoint {}: {msg}", path.display())]
    Checkpoint {
        /// Checkpoint file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// Tensor computation failed.
    #[error("{context}: {source}")]
    Candle {
        /// What was being computed.
        context: String,
        /// Underlying error.
        source: candle_core::Error,
    },
    /// The loss became NaN or infinite; the last good checkpoint is kept.
    #[error("non-finite loss at epoch {epoch}, step {step} ({terms}); stopping. Last good checkpoint: {last_good}")]
    NonFiniteLoss {
        /// Epoch (0-based).
        epoch: usize,
        /// Global optimiser step.
        step: usize,
        /// Loss terms at the failing step.
        terms: String,
        /// Path of the last checkpoint written, or "none".
        last_good: String,
    },
    /// Too many samples failed to load in a row.
    #[error("data loading failed: {0}")]
    Data(String),
    /// Anything else from a dependency crate, with context.
    #[error("{context}: {msg}")]
    Other {
        /// What was being done.
        context: String,
        /// Underlying message.
        msg: String,
    },
}

impl TrainError {
    /// Wraps an I/O error with its path.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Wraps a candle error with what was being done.
    pub fn candle(context: impl Into<String>, source: candle_core::Error) -> Self {
        TrainError::Candle {
            context: context.into(),
            source,
        }
    }

    /// Wraps any displayable error with context.
    pub fn other(context: impl Into<String>, err: impl std::fmt::Display) -> Self {
        TrainError::Other {
            context: context.into(),
            msg: err.to_string(),
        }
    }
}

/// Adds context to candle results.
pub(crate) trait CandleContext<T> {
    /// Maps a candle error into [`TrainError::Candle`] with `ctx`.
    fn ctx(self, ctx: &str) -> Result<T, TrainError>;
}

impl<T> CandleContext<T> for candle_core::Result<T> {
    fn ctx(self, ctx: &str) -> Result<T, TrainError> {
        self.map_err(|e| TrainError::candle(ctx, e))
    }
}
