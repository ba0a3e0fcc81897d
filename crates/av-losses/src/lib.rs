//! Self-supervised audio-visual losses in candle: RepLAI AVC and AStC, AVID xID memory bank,
//! VICReg.
//!
//! Every loss takes raw projection-head outputs, normalises where the reference does, and
//! returns scalars on the autograd graph; values and gradients match PyTorch references to
//! about 1e-7 in f32 (see `tests/fixtures/README.md`). Design notes, the G4 gradient question
//! and the NCE partition constant are discussed in `docs/losses.md`.
//!
//! ```
//! use av_losses::{avc_loss, AvcConfig};
//! use candle_core::{DType, Device, Tensor};
//!
//! # fn main() -> candle_core::Result<()> {
//! // Identical embeddings: every softmax is uniform, the loss is ln(batch).
//! let x = Tensor::ones((4, 16), DType::F32, &Device::Cpu)?;
//! let out = avc_loss(&x, &x, &x, &AvcConfig::default())?;
//! assert!((out.loss.to_scalar::<f32>()? - 4f32.ln()).abs() < 1e-6);
//! # Ok(())
//! # }
//! ```

pub mod astc;
pub mod avc;
pub mod error;
pub mod ops;
pub mod replai;
pub mod vicreg;
pub mod xid;

pub use astc::{astc_loss, astc_loss_from_scores, astc_scores, AstcConfig, AstcScores};
pub use avc::{avc_loss, AvcConfig, AvcOutput};
pub use error::LossError;
pub use replai::{replai_loss, ReplaiEmbeddings, ReplaiLossConfig, ReplaiLossOutput};
pub use vicreg::{vicreg_loss, VicregConfig, VicregOutput};
pub use xid::{
    nce_loss, rince_loss, sample_negatives, MemoryBank, RinceSchedule, XidConfig, XidLoss,
    XidObjective, XidOutput, AUDIO_BANK_KEY, PARTITION_KEY, VIDEO_BANK_KEY,
};
