//! Layers over candle that avoid its broken CPU backward paths (see the crate docs):
//! no conv1d, no max_pool2d, no softmax_last_dim anywhere in a training path.

pub mod bn_fused;
pub mod conv;
pub mod conv_cm;
pub(crate) mod fused_chain;
mod gemm_dispatch;
mod max_pool_op;
pub mod mlp;
pub mod norm;
pub mod ops;
pub(crate) mod par_vec;
pub mod pool;
pub mod sgemm;
mod simd;
pub mod unfold;

pub use conv::{conv2d, conv3d, Conv2d, Conv3d, Conv3dConfig};
pub use mlp::{linear, LinearInit, Mlp, MlpBn};
pub use norm::{batch_norm, BatchNorm};
pub use ops::{conv_impl, set_conv_impl, ConvImpl};
pub use pool::{global_avg_pool, global_max_pool, MaxPool};
