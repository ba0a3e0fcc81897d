//! Typed errors of the models crate.

use std::path::PathBuf;

/// Everything that can go wrong while building, feeding or (de)serialising a model.
///
/// Variants carry the file or tensor name so that a failed import of a 2 GB checkpoint
/// says which entry was wrong instead of "shape mismatch".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is neither safetensors, a zip `.pth` nor a legacy torch pickle.
    #[error("{path}: not a checkpoint ({reason})")]
    NotACheckpoint {
        /// The offending file.
        path: PathBuf,
        /// What the sniffing saw.
        reason: String,
    },
    /// The checkpoint is recognised but its content is malformed or unsupported.
    #[error("{path}: malformed checkpoint: {msg}")]
    Malformed {
        /// The offending file.
        path: PathBuf,
        /// What was wrong.
        msg: String,
    },
    /// A tensor uses a storage type that candle cannot represent.
    #[error("{path}: tensor `{name}` has unsupported storage type {storage}")]
    UnsupportedDtype {
        /// The offending file.
        path: PathBuf,
        /// Tensor name in the state dict.
        name: String,
        /// PyTorch storage class, e.g. `IntStorage`.
        storage: String,
    },
    /// A model input or a tensor handed to a helper is unusable.
    #[error("tensor `{name}`: {msg}")]
    BadTensor {
        /// Which tensor (input name or state-dict key).
        name: String,
        /// What was wrong with it.
        msg: String,
    },
    /// Loading left keys unmatched, see [`crate::checkpoint::LoadReport`].
    #[error("checkpoint does not match the model: {0}")]
    Mismatch(String),
    /// A candle operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate's fallible non-forward functions.
pub type Result<T> = std::result::Result<T, ModelError>;

/// Builds a candle error naming the tensor, for use inside `Module::forward` (whose
/// signature is fixed to `candle_core::Result`).
pub(crate) fn bad_input(name: &str, msg: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(format!("tensor `{name}`: {msg}"))
}
