//! Typed errors for bad inputs and bad configurations.
//!
//! The public functions return [`candle_core::Result`] (the agreed API, so that model and
//! training code can chain them with tensor operations); a [`LossError`] is converted into
//! `candle_core::Error::Wrapped` and its message names the loss and the offending tensor.

use candle_core::DType;

/// What went wrong before any arithmetic was attempted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LossError {
    /// An embedding is not a (batch, dim) matrix.
    #[error("{loss}: `{tensor}` must be a 2-D (batch, dim) tensor, got shape {shape:?}")]
    NotMatrix {
        /// Loss that rejected the input.
        loss: &'static str,
        /// Argument name.
        tensor: &'static str,
        /// Shape that was passed.
        shape: Vec<usize>,
    },
    /// Two inputs that must agree in shape do not.
    #[error("{loss}: `{tensor}` has shape {got:?} but `{reference}` has shape {expected:?}")]
    ShapeMismatch {
        /// Loss that rejected the input.
        loss: &'static str,
        /// Argument name.
        tensor: &'static str,
        /// Argument the shape is compared with.
        reference: &'static str,
        /// Shape of `reference`.
        expected: Vec<usize>,
        /// Shape of `tensor`.
        got: Vec<usize>,
    },
    /// Inputs mix dtypes, or a dtype is not a float type.
    #[error("{loss}: `{tensor}` has dtype {got:?}, expected {expected}")]
    DType {
        /// Loss that rejected the input.
        loss: &'static str,
        /// Argument name.
        tensor: &'static str,
        /// What was expected, in words.
        expected: String,
        /// Dtype that was passed.
        got: DType,
    },
    /// The batch is too small for the statistic the loss needs.
    #[error("{loss}: batch of {batch} rows is too small: {why}")]
    BatchTooSmall {
        /// Loss that rejected the input.
        loss: &'static str,
        /// Rows passed.
        batch: usize,
        /// Why more rows are required.
        why: &'static str,
    },
    /// A configuration value is outside its domain.
    #[error("{loss}: invalid configuration: {what}")]
    InvalidConfig {
        /// Loss whose configuration was rejected.
        loss: &'static str,
        /// The offending value and its allowed range.
        what: String,
    },
    /// A dataset index does not address a memory-bank row.
    #[error("{bank}: index {index} at batch position {position} is out of range for {rows} rows")]
    IndexOutOfRange {
        /// Bank name.
        bank: String,
        /// Offending index.
        index: usize,
        /// Position of the index in the batch.
        position: usize,
        /// Rows in the bank.
        rows: usize,
    },
    /// Non-finite values would be written into a memory bank and poison it permanently.
    #[error("{bank}: refusing to write non-finite values from `{tensor}` into the memory bank")]
    NonFinite {
        /// Bank name.
        bank: String,
        /// Argument holding the non-finite values.
        tensor: &'static str,
    },
    /// A checkpoint lacks a tensor the loss state needs.
    #[error("loss state: missing tensor `{name}`")]
    MissingState {
        /// Expected tensor name.
        name: String,
    },
    /// A checkpoint tensor has the wrong shape.
    #[error("loss state: tensor `{name}` has shape {got:?}, expected {expected}")]
    StateShape {
        /// Tensor name.
        name: String,
        /// Expected shape, in words.
        expected: String,
        /// Shape found.
        got: Vec<usize>,
    },
}

impl From<LossError> for candle_core::Error {
    fn from(e: LossError) -> Self {
        candle_core::Error::wrap(e)
    }
}
