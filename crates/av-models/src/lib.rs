//! Encoders (AVID R(2+1)D-18, AVID audio CNN), projection heads and checkpoint import in
//! candle, name-compatible with PyTorch.
//!
//! Every model takes a `candle_nn::VarBuilder` whose variable names are exactly the
//! reference state-dict keys (wrapper prefixes stripped), so `VarMap::save` writes a
//! PyTorch-compatible safetensors file and real AVID / RepLAI / torchvision weights load
//! through [`checkpoint`]. BatchNorm running statistics are variables too
//! (`running_mean`, `running_var`): exclude them from weight decay and from the optimiser.
//!
//! candle 0.11.1 has no 3-D convolution or pooling and several CPU backward paths are
//! wrong (`conv1d` weight grad, `max_pool2d`, `softmax_last_dim`, strided conv2d with
//! uneven remainders); [`layers`] builds everything from ops whose gradients are checked
//! by finite differences in this crate's tests.
//!
//! ```
//! use av_models::{AudioCnn, AudioCnnConfig};
//! use candle_core::{DType, Device, ModuleT, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let net = AudioCnn::new(&AudioCnnConfig::default().with_width(0.125), vb)?;
//! let x = Tensor::zeros((2, 1, 125, 80), DType::F32, &Device::Cpu)?;
//! assert_eq!(net.forward_t(&x, false)?.dims(), &[2, net.out_dim()]);
//! # Ok::<(), candle_core::Error>(())
//! ```

pub mod audio;
pub mod checkpoint;
pub mod error;
pub mod heads;
pub mod layers;
pub mod packed_params;
pub mod video;

pub use audio::{AudioCnn, AudioCnnConfig};
pub use checkpoint::{
    check_finite, load_into, load_tensors, save_safetensors, strip_prefix, LoadReport,
};
pub use error::{ModelError, Result};
pub use heads::{
    l2_normalize, LinearClassifier, MultiTaskClassifier, ReplaiHeads, ReplaiHeadsConfig,
    VicregExpander, VicregExpanderConfig, XidHead, XidHeadConfig,
};
pub use layers::{BatchNorm, Mlp};
pub use packed_params::PackedParams;
pub use video::{GlobalPool, R2Plus1d, R2Plus1dConfig, VideoLayout};

/// Environment variable candle 0.11 reads once, when its own worker pool starts.
const CANDLE_SPIN_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Makes candle's worker pool park soon after each elementwise op instead of spinning.
///
/// candle 0.11 runs its elementwise ops on a pool of its own (next to rayon's, which runs this
/// crate's convolutions), whose workers spin 25,000 times after every op before they sleep. On
/// a machine with few cores that spinning takes a core from the rayon workers: a video
/// forward+backward at batch 8 ran 7 % faster on 2 cores with a limit of 200 (see
/// docs/performance/models.md). Sets the limit to 200 unless the variable is already set, and
/// returns whether it did. Call it at the start of `main`, before the first tensor op (the pool
/// reads the variable once).
///
/// # Safety
/// It writes the process environment: no other thread may read or write the environment at
/// the same time (call it before starting any thread).
pub unsafe fn limit_candle_spinning() -> bool {
    if std::env::var_os(CANDLE_SPIN_VAR).is_some() {
        return false;
    }
    std::env::set_var(CANDLE_SPIN_VAR, "200");
    true
}

/// Number of trainable parameters (every variable except BatchNorm running statistics).
pub fn num_trainable_params(varmap: &candle_nn::VarMap) -> usize {
    varmap
        .data()
        .lock()
        .map(|vars| {
            vars.iter()
                .filter(|(k, _)| is_trainable(k))
                .map(|(_, v)| v.elem_count())
                .sum()
        })
        .unwrap_or(0)
}

/// False for BatchNorm buffers (`running_mean`, `running_var`, `num_batches_tracked`),
/// which must be excluded from optimisers and weight decay.
pub fn is_trainable(name: &str) -> bool {
    !(name.ends_with("running_mean")
        || name.ends_with("running_var")
        || name.ends_with("num_batches_tracked"))
}
