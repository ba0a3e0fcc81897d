//! Training for self-supervised audio-visual representation learning: configuration, data loading,
//! checkpoints, the pretraining loop (RepLAI, xID, VICReg), the linear probe and fine-tuning.
//!
//! The binaries `replai-pretrain`, `replai-linear-eval` and `replai-finetune` are thin wrappers
//! around this crate, so the probe a pretraining run reports is computed by exactly the same code
//! as a stand-alone evaluation.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod distributed;
pub mod error;
pub mod finetune;
pub mod init;
pub mod labelled;
pub mod loader;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod pretrain;
pub mod probe;
pub mod views;

pub use config::Config;
pub use error::TrainError;
