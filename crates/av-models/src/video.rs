//! R(2+1)D-18 video encoders: AVID's variant (used by AVID, AV-SSRL and RepLAI) and
//! torchvision's `r2plus1d_18`, with state-dict-compatible parameter names.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::bad_input;
use crate::layers::fused_chain::{conv_bn_chain, conv_bn_pool_chain, Shortcut};
use crate::layers::{
    batch_norm, conv3d, global_avg_pool, global_max_pool, linear, BatchNorm, Conv3d, Conv3dConfig,
    LinearInit, MaxPool,
};

/// Which reference implementation's block structure and parameter names to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VideoLayout {
    /// AVID `R2Plus1D`: full 3-D stem + max pool, intermediate width = output width,
    /// BN after the residual sum, BN-free 1x1x1 shortcut (`conv1`, `conv2x`..`conv5x`).
    #[default]
    Avid,
    /// torchvision `r2plus1d_18`: factored stem, "midplanes" intermediate width,
    /// BN'd shortcut (`stem`, `layer1`..`layer4`, optional `fc`).
    Torchvision,
}

/// Global pooling applied to the last feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalPool {
    /// `AdaptiveMaxPool3d(1)` (AVID, RepLAI).
    Max,
    /// `AdaptiveAvgPool3d(1)` (torchvision).
    Avg,
}

/// Configuration of [`R2Plus1d`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct R2Plus1dConfig {
    /// Block structure and key names.
    pub layout: VideoLayout,
    /// Channel multiplier (1.0 = reference; 0.25 / 0.125 for CPU experiments).
    pub width_mult: f64,
    /// Blocks per stage ([2, 2, 2, 2] = depth 18, [1; 4] = 10, [3, 4, 6, 3] = 34).
    pub depth: [usize; 4],
    /// Input channels (3 for RGB).
    pub in_channels: usize,
    /// Global pooling of the final map.
    pub pool: GlobalPool,
    /// torchvision's `fc` classifier (400 for Kinetics weights); `None` = features only.
    pub num_classes: Option<usize>,
}

impl Default for R2Plus1dConfig {
    fn default() -> Self {
        Self::avid()
    }
}

impl R2Plus1dConfig {
    /// AVID / RepLAI R(2+1)D-18 (15,379,136 parameters, 512-d max-pooled output).
    pub fn avid() -> Self {
        Self {
            layout: VideoLayout::Avid,
            width_mult: 1.0,
            depth: [2, 2, 2, 2],
            in_channels: 3,
            pool: GlobalPool::Max,
            num_classes: None,
        }
    }

    /// torchvision `r2plus1d_18` backbone (average pool, no `fc`).
    pub fn torchvision() -> Self {
        Self {
            layout: VideoLayout::Torchvision,
            pool: GlobalPool::Avg,
            ..Self::avid()
        }
    }

    /// The same network with every channel count scaled by `width_mult`.
    pub fn with_width(mut self, width_mult: f64) -> Self {
        self.width_mult = width_mult;
        self
    }

    /// Stage widths after the multiplier (reference 64, 128, 256, 512).
    pub fn widths(&self) -> [usize; 4] {
        [64, 128, 256, 512].map(|c| scale(c, self.width_mult))
    }
}

/// Scales a channel count, keeping at least one channel.
pub(crate) fn scale(c: usize, w: f64) -> usize {
    ((c as f64 * w).round() as usize).max(1)
}

fn cfg3(kernel: [usize; 3], stride: [usize; 3], padding: [usize; 3]) -> Conv3dConfig {
    Conv3dConfig {
        kernel,
        stride,
        padding,
    }
}

fn spatial(s: usize) -> Conv3dConfig {
    cfg3([1, 3, 3], [1, s, s], [0, 1, 1])
}

fn temporal(s: usize) -> Conv3dConfig {
    cfg3([3, 1, 1], [s, 1, 1], [1, 0, 0])
}

/// AVID `BasicR2P1DBlock`.
#[derive(Debug, Clone)]
struct AvidBlock {
    spt_conv1: Conv3d,
    spt_bn1: BatchNorm,
    tmp_conv1: Conv3d,
    tmp_bn1: BatchNorm,
    spt_conv2: Conv3d,
    spt_bn2: BatchNorm,
    tmp_conv2: Conv3d,
    out_bn: BatchNorm,
    res_conv: Option<Conv3d>,
}

impl AvidBlock {
    fn new(in_c: usize, out_c: usize, s: usize, vb: VarBuilder) -> Result<Self> {
        let res_conv = if in_c != out_c || s != 1 {
            Some(conv3d(
                in_c,
                out_c,
                cfg3([1, 1, 1], [s, s, s], [0, 0, 0]),
                vb.pp("res_conv"),
            )?)
        } else {
            None
        };
        Ok(Self {
            spt_conv1: conv3d(in_c, out_c, spatial(s), vb.pp("spt_conv1"))?,
            spt_bn1: batch_norm(out_c, vb.pp("spt_bn1"))?,
            tmp_conv1: conv3d(out_c, out_c, temporal(s), vb.pp("tmp_conv1"))?,
            tmp_bn1: batch_norm(out_c, vb.pp("tmp_bn1"))?,
            spt_conv2: conv3d(out_c, out_c, spatial(1), vb.pp("spt_conv2"))?,
            spt_bn2: batch_norm(out_c, vb.pp("spt_bn2"))?,
            tmp_conv2: conv3d(out_c, out_c, temporal(1), vb.pp("tmp_conv2"))?,
            out_bn: batch_norm(out_c, vb.pp("out_bn"))?,
            res_conv,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let shortcut = match &self.res_conv {
            Some(c) => Shortcut::Conv(c),
            None => Shortcut::Identity,
        };
        let units = [
            (&self.spt_conv1, &self.spt_bn1, true),
            (&self.tmp_conv1, &self.tmp_bn1, true),
            (&self.spt_conv2, &self.spt_bn2, true),
            (&self.tmp_conv2, &self.out_bn, true),
        ];
        if let Some(y) = conv_bn_chain(x, &units, shortcut, train)? {
            return Ok(y);
        }
        let y = self
            .spt_bn1
            .forward_t_cm(&self.spt_conv1.forward_cm(x)?, train)?
            .relu()?;
        let y = self
            .tmp_bn1
            .forward_t_cm(&self.tmp_conv1.forward_cm(&y)?, train)?
            .relu()?;
        let y = self
            .spt_bn2
            .forward_t_cm(&self.spt_conv2.forward_cm(&y)?, train)?
            .relu()?;
        let y = self.tmp_conv2.forward_cm(&y)?;
        let shortcut = match &self.res_conv {
            Some(c) => c.forward_cm(x)?,
            None => x.clone(),
        };
        self.out_bn.forward_t_cm(&(y + shortcut)?, train)?.relu()
    }
}

/// torchvision `Conv2Plus1D` followed by its BatchNorm: spatial conv, BN(mid), ReLU,
/// temporal conv, BN(out). Keys `<p>.0.0`, `<p>.0.1`, `<p>.0.3`, `<p>.1`.
#[derive(Debug, Clone)]
struct TvConv {
    spatial: Conv3d,
    mid_bn: BatchNorm,
    temporal: Conv3d,
    bn: BatchNorm,
}

impl TvConv {
    fn new(in_c: usize, out_c: usize, mid: usize, s: usize, vb: VarBuilder) -> Result<Self> {
        let seq = vb.pp("0");
        Ok(Self {
            spatial: conv3d(in_c, mid, spatial(s), seq.pp("0"))?,
            mid_bn: batch_norm(mid, seq.pp("1"))?,
            temporal: conv3d(mid, out_c, temporal(s), seq.pp("3"))?,
            bn: batch_norm(out_c, vb.pp("1"))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self
            .mid_bn
            .forward_t_cm(&self.spatial.forward_cm(x)?, train)?
            .relu()?;
        self.bn.forward_t_cm(&self.temporal.forward_cm(&y)?, train)
    }
}

/// torchvision `BasicBlock` with `Conv2Plus1D` convolutions.
#[derive(Debug, Clone)]
struct TvBlock {
    conv1: TvConv,
    conv2: TvConv,
    downsample: Option<(Conv3d, BatchNorm)>,
}

impl TvBlock {
    fn new(in_c: usize, out_c: usize, s: usize, vb: VarBuilder) -> Result<Self> {
        // torchvision: midplanes = (in * out * 27) // (in * 9 + 3 * out), shared by both convs.
        let mid = (in_c * out_c * 27) / (in_c * 9 + 3 * out_c);
        let downsample = if in_c != out_c || s != 1 {
            let ds = vb.pp("downsample");
            Some((
                conv3d(
                    in_c,
                    out_c,
                    cfg3([1, 1, 1], [s, s, s], [0, 0, 0]),
                    ds.pp("0"),
                )?,
                batch_norm(out_c, ds.pp("1"))?,
            ))
        } else {
            None
        };
        Ok(Self {
            conv1: TvConv::new(in_c, out_c, mid, s, vb.pp("conv1"))?,
            conv2: TvConv::new(out_c, out_c, mid, 1, vb.pp("conv2"))?,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv1.forward_t(x, train)?.relu()?;
        let y = self.conv2.forward_t(&y, train)?;
        let shortcut = match &self.downsample {
            Some((c, bn)) => bn.forward_t_cm(&c.forward_cm(x)?, train)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }
}

#[derive(Debug, Clone)]
enum Block {
    Avid(AvidBlock),
    Tv(TvBlock),
}

impl Block {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Block::Avid(b) => b.forward_t(x, train),
            Block::Tv(b) => b.forward_t(x, train),
        }
    }
}

#[derive(Debug, Clone)]
enum Stem {
    /// `conv1.0` Conv3d (3,7,7) s (1,2,2) p (1,3,3), `conv1.1` BN, ReLU, max pool.
    Avid {
        conv: Conv3d,
        bn: BatchNorm,
        pool: MaxPool<3>,
    },
    /// `stem.0` Conv3d (1,7,7), `stem.1` BN, ReLU, `stem.3` Conv3d (3,1,1), `stem.4` BN, ReLU.
    Tv {
        spatial: Conv3d,
        bn1: BatchNorm,
        temporal: Conv3d,
        bn2: BatchNorm,
    },
}

/// R(2+1)D video encoder: (B, C, T, H, W) -> (B, out_dim) after global pooling
/// (or (B, num_classes) when a torchvision `fc` is configured).
#[derive(Debug, Clone)]
pub struct R2Plus1d {
    cfg: R2Plus1dConfig,
    stem: Stem,
    stages: Vec<(String, Vec<Block>)>,
    fc: Option<candle_nn::Linear>,
    out_dim: usize,
}

impl R2Plus1d {
    /// Builds the encoder; parameter names are relative to `vb`'s prefix and equal the
    /// reference state-dict keys with the DDP/wrapper prefix stripped.
    pub fn new(cfg: &R2Plus1dConfig, vb: VarBuilder) -> Result<Self> {
        if !(cfg.width_mult.is_finite() && cfg.width_mult > 0.0) || cfg.in_channels == 0 {
            return Err(bad_input(
                "R2Plus1dConfig",
                format!("width_mult must be positive and in_channels >= 1, got {cfg:?}"),
            ));
        }
        let widths = cfg.widths();
        let stem_out = widths[0];
        let stem = match cfg.layout {
            VideoLayout::Avid => {
                let v = vb.pp("conv1");
                Stem::Avid {
                    conv: conv3d(
                        cfg.in_channels,
                        stem_out,
                        cfg3([3, 7, 7], [1, 2, 2], [1, 3, 3]),
                        v.pp("0"),
                    )?,
                    bn: batch_norm(stem_out, v.pp("1"))?,
                    pool: MaxPool {
                        kernel: [1, 3, 3],
                        stride: [1, 2, 2],
                        padding: [0, 1, 1],
                    },
                }
            }
            VideoLayout::Torchvision => {
                let v = vb.pp("stem");
                let mid = scale(45, cfg.width_mult);
                Stem::Tv {
                    spatial: conv3d(
                        cfg.in_channels,
                        mid,
                        cfg3([1, 7, 7], [1, 2, 2], [0, 3, 3]),
                        v.pp("0"),
                    )?,
                    bn1: batch_norm(mid, v.pp("1"))?,
                    temporal: conv3d(mid, stem_out, temporal(1), v.pp("3"))?,
                    bn2: batch_norm(stem_out, v.pp("4"))?,
                }
            }
        };
        let mut stages = Vec::with_capacity(4);
        let mut in_c = stem_out;
        for (i, (&out_c, &n)) in widths.iter().zip(cfg.depth.iter()).enumerate() {
            let name = match cfg.layout {
                VideoLayout::Avid => format!("conv{}x", i + 2),
                VideoLayout::Torchvision => format!("layer{}", i + 1),
            };
            let sv = vb.pp(&name);
            let mut blocks = Vec::with_capacity(n);
            for j in 0..n {
                let s = if i > 0 && j == 0 { 2 } else { 1 };
                let bv = sv.pp(j.to_string());
                blocks.push(match cfg.layout {
                    VideoLayout::Avid => Block::Avid(AvidBlock::new(in_c, out_c, s, bv)?),
                    VideoLayout::Torchvision => Block::Tv(TvBlock::new(in_c, out_c, s, bv)?),
                });
                in_c = out_c;
            }
            stages.push((name, blocks));
        }
        let fc = match cfg.num_classes {
            Some(k) => Some(linear(
                in_c,
                k,
                true,
                LinearInit::TorchDefault,
                vb.pp("fc"),
            )?),
            None => None,
        };
        let out_dim = cfg.num_classes.unwrap_or(in_c);
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            stages,
            fc,
            out_dim,
        })
    }

    /// Output dimension of [`ModuleT::forward_t`] (512 at width 1 without `fc`).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &R2Plus1dConfig {
        &self.cfg
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        match x.dims5() {
            Ok((_, c, _, _, _)) if c == self.cfg.in_channels => Ok(()),
            _ => Err(bad_input(
                "video input",
                format!(
                    "expected (B, {}, T, H, W), got shape {:?}",
                    self.cfg.in_channels,
                    x.dims()
                ),
            )),
        }
    }

    /// Runs the network and returns every stage output, named as in AVID's
    /// `return_embs` (`conv1` after the stem pool, `conv2x`..`conv5x`) or torchvision's
    /// module names (`stem`, `layer1`..`layer4`); the AVID stem also yields `conv1.0`
    /// (raw stem convolution) and `conv1.2` (after BN + ReLU).
    pub fn forward_stages(&self, x: &Tensor, train: bool) -> Result<Vec<(String, Tensor)>> {
        self.run(x, train, true)?
            .into_iter()
            .map(|(name, t)| Ok((name, from_channel_major(&t)?)))
            .collect()
    }

    /// Runs the network on (B, C, T, H, W) and returns channel-major (C, B, ...) maps: every
    /// named stage with `all_stages`, else only the last map.
    fn run(&self, x: &Tensor, train: bool, all_stages: bool) -> Result<Vec<(String, Tensor)>> {
        self.check_input(x)?;
        let x = &x.permute((1, 0, 2, 3, 4))?.contiguous()?;
        let mut out = Vec::with_capacity(7);
        let mut keep = |name: &str, t: &Tensor| {
            if all_stages {
                out.push((name.to_string(), t.clone()));
            }
        };
        let mut y = match &self.stem {
            Stem::Avid { conv, bn, pool } if !all_stages => {
                let units = [(conv, bn, true)];
                match conv_bn_pool_chain(x, &units, Shortcut::None, Some(pool), train)? {
                    Some(p) => p,
                    None => pool.forward(&bn.forward_t_cm(&conv.forward_cm(x)?, train)?.relu()?)?,
                }
            }
            Stem::Avid { conv, bn, pool } => {
                let c = conv.forward_cm(x)?;
                keep("conv1.0", &c);
                let r = bn.forward_t_cm(&c, train)?.relu()?;
                keep("conv1.2", &r);
                let p = pool.forward(&r)?;
                keep("conv1", &p);
                p
            }
            Stem::Tv {
                spatial,
                bn1,
                temporal,
                bn2,
            } => {
                let y = bn1.forward_t_cm(&spatial.forward_cm(x)?, train)?.relu()?;
                let y = bn2.forward_t_cm(&temporal.forward_cm(&y)?, train)?.relu()?;
                keep("stem", &y);
                y
            }
        };
        for (name, blocks) in &self.stages {
            for b in blocks {
                y = b.forward_t(&y, train)?;
            }
            keep(name, &y);
        }
        if !all_stages {
            let last = self.stages.last().map_or("stem", |s| s.0.as_str());
            out.push((last.to_string(), y));
        }
        Ok(out)
    }

    /// The last map, channel-major (C, B, T', H', W').
    fn feature_map_cm(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self.run(x, train, false)?.pop() {
            Some((_, t)) => Ok(t),
            None => Err(bad_input("video input", "network has no stages")),
        }
    }

    /// The un-pooled last feature map, (B, 512, T/8, H/32, W/32) at width 1.
    pub fn feature_map(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        from_channel_major(&self.feature_map_cm(x, train)?)
    }
}

/// (C, B, ...) -> (B, C, ...), contiguous.
pub(crate) fn from_channel_major(x: &Tensor) -> Result<Tensor> {
    x.transpose(0, 1)?.contiguous()
}

impl ModuleT for R2Plus1d {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        // Pool the channel-major map directly: (C, B, ...) -> (C, B) -> (B, C).
        let map = self.feature_map_cm(x, train)?;
        let pooled = match self.cfg.pool {
            GlobalPool::Max => global_max_pool(&map)?,
            GlobalPool::Avg => global_avg_pool(&map)?,
        }
        .t()?
        .contiguous()?;
        match &self.fc {
            Some(fc) => fc.forward(&pooled),
            None => Ok(pooled),
        }
    }
}
