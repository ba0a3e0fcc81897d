//! AVID's 9-convolution 2-D audio CNN (`avid_spec_cnn_9`, AVID `Conv2D(depth=10)`).

use candle_core::{ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::bad_input;
use crate::layers::fused_chain::{conv_bn_chain, Shortcut};
use crate::layers::{batch_norm, conv2d, global_max_pool, BatchNorm, Conv2d};
use crate::video::scale;

/// Configuration of [`AudioCnn`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AudioCnnConfig {
    /// Channel multiplier (1.0 = reference 64/64/128/256/512).
    pub width_mult: f64,
    /// Input channels (1 for a single spectrogram).
    pub in_channels: usize,
}

impl Default for AudioCnnConfig {
    fn default() -> Self {
        Self {
            width_mult: 1.0,
            in_channels: 1,
        }
    }
}

impl AudioCnnConfig {
    /// The same network with every channel count scaled by `width_mult`.
    pub fn with_width(mut self, width_mult: f64) -> Self {
        self.width_mult = width_mult;
        self
    }
}

/// `Basic2DBlock`: conv3x3 (stride s) -> BN -> ReLU -> conv3x3 -> BN -> ReLU, no shortcut.
#[derive(Debug, Clone)]
struct Block2d {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
}

impl Block2d {
    fn new(in_c: usize, out_c: usize, s: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv1: conv2d(in_c, out_c, 3, s, 1, vb.pp("conv1"))?,
            bn1: batch_norm(out_c, vb.pp("bn1"))?,
            conv2: conv2d(out_c, out_c, 3, 1, 1, vb.pp("conv2"))?,
            bn2: batch_norm(out_c, vb.pp("bn2"))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (c1, c2) = (self.conv1.as_conv3d()?, self.conv2.as_conv3d()?);
        let units = [(&c1, &self.bn1, true), (&c2, &self.bn2, true)];
        if let Some(y) = conv_bn_chain(x, &units, Shortcut::None, train)? {
            return Ok(y);
        }
        let y = self
            .bn1
            .forward_t_cm(&self.conv1.forward_cm(x)?, train)?
            .relu()?;
        self.bn2
            .forward_t_cm(&self.conv2.forward_cm(&y)?, train)?
            .relu()
    }
}

/// Audio encoder: (B, 1, T, F) log-mel -> (B, out_dim) after a global max pool
/// ([`AudioCnn::feature_map`] gives the un-pooled (B, 512, T/16, F/16) map RepLAI uses).
#[derive(Debug, Clone)]
pub struct AudioCnn {
    cfg: AudioCnnConfig,
    conv1: Conv2d,
    bn1: BatchNorm,
    blocks: Vec<Block2d>,
    out_dim: usize,
}

impl AudioCnn {
    /// Builds the network with keys `conv1.{0,1}.*` and `block{1..4}.{conv1,bn1,conv2,bn2}.*`.
    pub fn new(cfg: &AudioCnnConfig, vb: VarBuilder) -> Result<Self> {
        if !(cfg.width_mult.is_finite() && cfg.width_mult > 0.0) || cfg.in_channels == 0 {
            return Err(bad_input(
                "AudioCnnConfig",
                format!("width_mult must be positive and in_channels >= 1, got {cfg:?}"),
            ));
        }
        let w = [64, 64, 128, 256, 512].map(|c| scale(c, cfg.width_mult));
        let c1 = vb.pp("conv1");
        let conv1 = conv2d(cfg.in_channels, w[0], 7, 2, 3, c1.pp("0"))?;
        let bn1 = batch_norm(w[0], c1.pp("1"))?;
        let strides = [2, 2, 2, 1];
        let blocks = (0..4)
            .map(|i| Block2d::new(w[i], w[i + 1], strides[i], vb.pp(format!("block{}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            conv1,
            bn1,
            blocks,
            out_dim: w[4],
        })
    }

    /// Output dimension (512 at width 1).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Stage outputs named as in AV-SSRL's `return_embs`: `conv1`, `block1`..`block4`.
    pub fn forward_stages(&self, x: &Tensor, train: bool) -> Result<Vec<(String, Tensor)>> {
        self.run(x, train, true)?
            .into_iter()
            .map(|(name, t)| Ok((name, from_channel_major_2d(&t)?)))
            .collect()
    }

    /// Runs the network on (B, C, T, F) and returns channel-major (C, B, 1, T', F') maps:
    /// every named stage with `all_stages`, else only the last one.
    fn run(&self, x: &Tensor, train: bool, all_stages: bool) -> Result<Vec<(String, Tensor)>> {
        let (b, c, t, f) = match x.dims4() {
            Ok(d) if d.1 == self.cfg.in_channels => d,
            _ => {
                return Err(bad_input(
                    "audio input",
                    format!(
                        "expected (B, {}, T, F), got shape {:?}",
                        self.cfg.in_channels,
                        x.dims()
                    ),
                ))
            }
        };
        // Channel-major with a unit time-of-clip axis, so the 3-D channel-major convolution
        // serves the 2-D network too.
        let x = x.transpose(0, 1)?.contiguous()?.reshape((c, b, 1, t, f))?;
        let mut out = Vec::with_capacity(5);
        let c1 = self.conv1.as_conv3d()?;
        let mut y = match conv_bn_chain(&x, &[(&c1, &self.bn1, true)], Shortcut::None, train)? {
            Some(y) => y,
            None => self.bn1.forward_t_cm(&c1.forward_cm(&x)?, train)?.relu()?,
        };
        if all_stages {
            out.push(("conv1".to_string(), y.clone()));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            y = b.forward_t(&y, train)?;
            if all_stages || i + 1 == self.blocks.len() {
                out.push((format!("block{}", i + 1), y.clone()));
            }
        }
        Ok(out)
    }

    /// The last map, channel-major (C, B, 1, T', F').
    fn feature_map_cm(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self.run(x, train, false)?.pop() {
            Some((_, t)) => Ok(t),
            None => Err(bad_input("audio input", "network has no stages")),
        }
    }

    /// The un-pooled `block4` map (B, 512, T', F') that RepLAI's backbone returns.
    pub fn feature_map(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        from_channel_major_2d(&self.feature_map_cm(x, train)?)
    }
}

/// (C, B, 1, H, W) -> (B, C, H, W), contiguous.
fn from_channel_major_2d(x: &Tensor) -> Result<Tensor> {
    x.squeeze(2)?.transpose(0, 1)?.contiguous()
}

impl ModuleT for AudioCnn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // (C, B, 1, T', F') -> (C, B) -> (B, C).
        global_max_pool(&self.feature_map_cm(x, train)?)?
            .t()?
            .contiguous()
    }
}
