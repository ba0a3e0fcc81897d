//! Typed errors of the optimisers and schedules.

use candle_core::DType;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, OptimError>;

/// Configuration, parameter and checkpoint-state problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OptimError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A hyper-parameter is outside its domain.
    #[error("{optimizer}: invalid configuration: {what}")]
    InvalidConfig {
        /// Optimiser or schedule that rejected the value.
        optimizer: &'static str,
        /// The offending value and its allowed range.
        what: String,
    },
    /// Two parameters share a name, or one parameter appears twice.
    #[error("{optimizer}: parameter `{name}` appears more than once across the parameter groups")]
    DuplicateParam {
        /// Optimiser that rejected the groups.
        optimizer: &'static str,
        /// Duplicated name.
        name: String,
    },
    /// Only float parameters can be optimised.
    #[error("{optimizer}: parameter `{name}` has non-float dtype {dtype:?}")]
    NonFloatParam {
        /// Optimiser that rejected the groups.
        optimizer: &'static str,
        /// Parameter name.
        name: String,
        /// Its dtype.
        dtype: DType,
    },
    /// A gradient does not have its parameter's shape or dtype.
    #[error("{optimizer}: gradient of `{name}` has shape {got:?} / {got_dtype:?}, parameter is {expected:?} / {dtype:?}")]
    GradMismatch {
        /// Optimiser.
        optimizer: &'static str,
        /// Parameter name.
        name: String,
        /// Parameter shape.
        expected: Vec<usize>,
        /// Gradient shape.
        got: Vec<usize>,
        /// Parameter dtype.
        dtype: DType,
        /// Gradient dtype.
        got_dtype: DType,
    },
    /// A state tensor names no parameter of this optimiser (a different model, or a renamed
    /// parameter): loading it silently would restart that parameter's state.
    #[error("{optimizer}: state tensor `{name}` matches no parameter of this optimiser")]
    UnexpectedState {
        /// Optimiser.
        optimizer: &'static str,
        /// Unmatched tensor name.
        name: String,
    },
    /// A state tensor has the wrong shape or is malformed.
    #[error("{optimizer}: state tensor `{name}` has shape {got:?}, expected {expected:?}")]
    StateShape {
        /// Optimiser.
        optimizer: &'static str,
        /// Tensor name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape found.
        got: Vec<usize>,
    },
    /// A state tensor that must come with another one is missing.
    #[error(
        "{optimizer}: state tensor `{name}` is missing (its companion `{companion}` is present)"
    )]
    MissingState {
        /// Optimiser.
        optimizer: &'static str,
        /// Missing tensor name.
        name: String,
        /// Tensor that was found.
        companion: String,
    },
}

impl From<OptimError> for candle_core::Error {
    fn from(e: OptimError) -> Self {
        match e {
            OptimError::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}
