//! Projection heads (RepLAI, xID/AVID, VICReg) and linear-probe classifiers.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::bad_input;
use crate::layers::mlp::check_2d;
use crate::layers::{linear, LinearInit, Mlp, MlpBn};

/// Dimensions of the five RepLAI heads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplaiHeadsConfig {
    /// Backbone feature size (512).
    pub in_dim: usize,
    /// Hidden width (512).
    pub hidden: usize,
    /// Embedding size (128).
    pub out_dim: usize,
}

impl Default for ReplaiHeadsConfig {
    fn default() -> Self {
        Self {
            in_dim: 512,
            hidden: 512,
            out_dim: 128,
        }
    }
}

/// RepLAI's `mlp` ModuleDict: two-layer MLPs without BN, Xavier-uniform weights.
/// Build it with `vb` at prefix `mlp` to get the checkpoint keys `mlp.<head>.{0,2}.*`.
#[derive(Debug, Clone)]
pub struct ReplaiHeads {
    /// AVC video head in_dim -> hidden -> out_dim (L2-normalised by the loss).
    pub video_clr: Mlp,
    /// AVC audio head.
    pub audio_clr: Mlp,
    /// AStC video head (not normalised).
    pub video_aot: Mlp,
    /// AStC audio head.
    pub audio_aot: Mlp,
    /// AStC difference head out_dim -> hidden -> out_dim, applied to after - before.
    pub aot_diff: Mlp,
}

impl ReplaiHeads {
    /// Builds the five heads under `vb` (`vb.pp("video_clr")`, ...).
    pub fn new(cfg: &ReplaiHeadsConfig, vb: VarBuilder) -> Result<Self> {
        let x = LinearInit::XavierUniform;
        let main = [cfg.in_dim, cfg.hidden, cfg.out_dim];
        Ok(Self {
            video_clr: Mlp::new(&main, x, vb.pp("video_clr"))?,
            audio_clr: Mlp::new(&main, x, vb.pp("audio_clr"))?,
            video_aot: Mlp::new(&main, x, vb.pp("video_aot"))?,
            audio_aot: Mlp::new(&main, x, vb.pp("audio_aot"))?,
            aot_diff: Mlp::new(
                &[cfg.out_dim, cfg.hidden, cfg.out_dim],
                x,
                vb.pp("aot_diff"),
            )?,
        })
    }
}

/// Row-wise L2 normalisation with PyTorch's `F.normalize` epsilon (1e-12).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?;
    x.broadcast_div(&norm)
}

/// Dimensions of an AVID/AV-SSRL projection head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XidHeadConfig {
    /// Layer sizes, [512, 512, 512, 128] in both references.
    pub dims: Vec<usize>,
}

impl Default for XidHeadConfig {
    fn default() -> Self {
        Self {
            dims: vec![512, 512, 512, 128],
        }
    }
}

/// xID / AVID projection head (`projection.{0,2,4}`): Linear-ReLU-Linear-ReLU-Linear,
/// PyTorch default init. Build with `vb` at e.g. `video_proj`.
#[derive(Debug, Clone)]
pub struct XidHead {
    mlp: Mlp,
}

impl XidHead {
    /// Builds the head with keys `projection.<i>.{weight,bias}`.
    pub fn new(cfg: &XidHeadConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            mlp: Mlp::new(&cfg.dims, LinearInit::TorchDefault, vb.pp("projection"))?,
        })
    }
}

impl Module for XidHead {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.mlp.forward(x)
    }
}

/// Dimensions of the VICReg expander.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VicregExpanderConfig {
    /// [in, hidden..., out]: AV-SSRL [512, 4096, 4096, 4096].
    pub dims: Vec<usize>,
    /// Bias on the last Linear (AV-SSRL true, official VICReg false).
    pub last_bias: bool,
}

impl Default for VicregExpanderConfig {
    fn default() -> Self {
        Self {
            dims: vec![512, 4096, 4096, 4096],
            last_bias: true,
        }
    }
}

/// VICReg expander (`expansion.{0,1,3,4,6}`): Linear, BN1d, ReLU, Linear, BN1d, ReLU,
/// Linear. Build with `vb` at e.g. `video_exp`.
#[derive(Debug, Clone)]
pub struct VicregExpander {
    mlp: MlpBn,
}

impl VicregExpander {
    /// Builds the expander with keys `expansion.<i>.*`.
    pub fn new(cfg: &VicregExpanderConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            mlp: MlpBn::new(&cfg.dims, cfg.last_bias, vb.pp("expansion"))?,
        })
    }
}

impl ModuleT for VicregExpander {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.mlp.forward_t(x, train)
    }
}

/// A single linear probe `Linear(in, classes)`, weight N(0, 0.01), bias 0.
#[derive(Debug, Clone)]
pub struct LinearClassifier {
    fc: Linear,
    in_dim: usize,
}

impl LinearClassifier {
    /// Builds it with keys `<vb prefix>.{weight,bias}`.
    pub fn new(in_dim: usize, classes: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc: linear(in_dim, classes, true, LinearInit::Normal001, vb)?,
            in_dim,
        })
    }
}

impl Module for LinearClassifier {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_2d(x, self.in_dim, "classifier input")?;
        self.fc.forward(x)
    }
}

/// RepLAI's `ClassifierMTL`: independent linear heads on the same feature (EPIC-100:
/// `verb_class` 97, `noun_class` 300). Keys `<task>.{weight,bias}`.
#[derive(Debug, Clone)]
pub struct MultiTaskClassifier {
    /// (task name, head) in construction order.
    pub heads: Vec<(String, LinearClassifier)>,
}

impl MultiTaskClassifier {
    /// Builds one head per `(task, classes)`.
    pub fn new(in_dim: usize, tasks: &[(&str, usize)], vb: VarBuilder) -> Result<Self> {
        if tasks.is_empty() {
            return Err(bad_input("MultiTaskClassifier", "needs at least one task"));
        }
        let heads = tasks
            .iter()
            .map(|(name, k)| {
                Ok((
                    name.to_string(),
                    LinearClassifier::new(in_dim, *k, vb.pp(*name))?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { heads })
    }

    /// EPIC-Kitchens-100 verb (97) and noun (300) heads.
    pub fn epic100(in_dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(in_dim, &[("verb_class", 97), ("noun_class", 300)], vb)
    }

    /// Logits of every head, in construction order.
    pub fn forward_all(&self, x: &Tensor) -> Result<Vec<(String, Tensor)>> {
        self.heads
            .iter()
            .map(|(n, h)| Ok((n.clone(), h.forward(x)?)))
            .collect()
    }
}
