//! Bias-free 2-D and 3-D convolutions that keep PyTorch's weight layout.
//!
//! candle 0.11 has no conv3d, so a (kt, kh, kw) kernel is factored: spatial (1, k, k)
//! kernels run as conv2d on (B*T, C, H, W); temporal (k, 1, 1) kernels fold the k shifted
//! (and strided) frames into the channel axis and become one matmul; a full kernel (stem)
//! folds the temporal taps into channels and runs one conv2d. conv1d (wrong weight grad)
//! is never used.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

use super::conv_cm::{conv3d_cm, conv_cm_applies};
use super::ops::{conv2d_padded, out_len, pad_for_window, subsample, unfold};
use crate::error::bad_input;

/// Geometry of a 3-D convolution, in PyTorch's (t, h, w) order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dConfig {
    /// Kernel (kt, kh, kw).
    pub kernel: [usize; 3],
    /// Stride (st, sh, sw).
    pub stride: [usize; 3],
    /// Zero padding (pt, ph, pw), applied on both sides.
    pub padding: [usize; 3],
}

/// A bias-free Conv3d whose weight has PyTorch's (out, in, kt, kh, kw) shape, so
/// state dicts load unchanged.
#[derive(Debug, Clone)]
pub struct Conv3d {
    weight: Tensor,
    cfg: Conv3dConfig,
    /// The variable `weight` is a reshape of (a 2-D conv's 4-D weight), if any: fused blocks
    /// flatten this instead, since every reshape between a variable and its use costs the
    /// backward pass a zero-fill and an add over the whole weight.
    source: Option<Tensor>,
}

/// PyTorch's default conv init: kaiming_uniform(a = sqrt 5) = U(-1/sqrt(fan_in), +).
fn default_conv_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Builds a bias-free [`Conv3d`] whose weight is `<vb prefix>.weight`.
pub fn conv3d(in_c: usize, out_c: usize, cfg: Conv3dConfig, vb: VarBuilder) -> Result<Conv3d> {
    let [kt, kh, kw] = cfg.kernel;
    let init = default_conv_init(in_c * kt * kh * kw);
    let weight = vb.get_with_hints((out_c, in_c, kt, kh, kw), "weight", init)?;
    Conv3d::new(weight, cfg)
}

impl Conv3d {
    /// Wraps an existing (out, in, kt, kh, kw) weight.
    pub fn new(weight: Tensor, cfg: Conv3dConfig) -> Result<Self> {
        let (_, _, kt, kh, kw) = weight.dims5()?;
        if [kt, kh, kw] != cfg.kernel || cfg.stride.contains(&0) {
            return Err(bad_input(
                "conv3d.weight",
                format!("shape {:?} does not match config {cfg:?}", weight.dims()),
            ));
        }
        Ok(Self {
            weight,
            cfg,
            source: None,
        })
    }

    /// The (out, in, kt, kh, kw) weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The tensor the weight was reshaped from (a 2-D conv's variable), else the weight: what
    /// a fused block packs, so that its gradient crosses one graph edge fewer.
    pub(crate) fn param_source(&self) -> &Tensor {
        self.source.as_ref().unwrap_or(&self.weight)
    }

    /// The geometry.
    pub fn config(&self) -> Conv3dConfig {
        self.cfg
    }

    fn check_input(&self, x: &Tensor) -> Result<(usize, usize, usize, usize, usize)> {
        let (b, c, t, h, w) = x.dims5().map_err(|_| {
            bad_input(
                "conv3d input",
                format!("expected rank 5 (B, C, T, H, W), got shape {:?}", x.dims()),
            )
        })?;
        let in_c = self.weight.dim(1)?;
        if c != in_c {
            return Err(bad_input(
                "conv3d input",
                format!("expected {in_c} channels, got shape {:?}", x.dims()),
            ));
        }
        Ok((b, c, t, h, w))
    }

    /// Stacks the kt temporal taps (after padding and striding T) on a new axis 2:
    /// (B, C, T, H, W) -> (B, C, kt, T', H, W); channel-major so that a reshape to
    /// C*kt matches the weight's (in, kt) flattening.
    fn fold_time(&self, x: &Tensor) -> Result<Tensor> {
        let [kt, _, _] = self.cfg.kernel;
        let [st, _, _] = self.cfg.stride;
        let [pt, _, _] = self.cfg.padding;
        // (B, C, T, H, W) as (B, C, T, H*W): a (kt, 1) unfold gives (B, C*kt, T'*H*W).
        let (b, c, t, h, w) = x.dims5()?;
        let cols = unfold(&x.reshape((b, c, t, h * w))?, (kt, 1), (st, 1), (pt, 0))?;
        let t_out = cols.dim(2)? / (h * w);
        cols.reshape((b, c, kt, t_out, h, w))
    }
}

impl Conv3d {
    /// Convolves a channel-major (C, B, T, H, W) tensor into channel-major (O, B, T', H', W').
    ///
    /// The encoders keep activations channel-major because on CPU the convolution then needs
    /// no layout change at all (see [`super::conv_cm`]); elsewhere this permutes around
    /// [`Module::forward`].
    pub fn forward_cm(&self, x: &Tensor) -> Result<Tensor> {
        let (c, _, _, _, _) = x.dims5().map_err(|_| {
            bad_input(
                "conv3d input",
                format!("expected rank 5 (C, B, T, H, W), got shape {:?}", x.dims()),
            )
        })?;
        if !conv_cm_applies(x) {
            return self
                .forward(&x.permute((1, 0, 2, 3, 4))?)?
                .permute((1, 0, 2, 3, 4));
        }
        let in_c = self.weight.dim(1)?;
        if c != in_c {
            return Err(bad_input(
                "conv3d input",
                format!("expected {in_c} channels first, got shape {:?}", x.dims()),
            ));
        }
        // conv3d_cm checks the kernel against the input size.
        conv3d_cm(x, &self.weight, self.cfg.into())
    }
}

impl Module for Conv3d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, t, h, w) = self.check_input(x)?;
        let (o, _, kt, kh, kw) = self.weight.dims5()?;
        let [st, sh, sw] = self.cfg.stride;
        let [pt, ph, pw] = self.cfg.padding;
        let t_out = out_len(t, kt, st, pt);
        let h_out = out_len(h, kh, sh, ph);
        let w_out = out_len(w, kw, sw, pw);
        let (Some(t_out), Some(h_out), Some(w_out)) = (t_out, h_out, w_out) else {
            return Err(bad_input(
                "conv3d input",
                format!("shape {:?} too small for {:?}", x.dims(), self.cfg),
            ));
        };
        if kh == 1 && kw == 1 {
            // Pointwise in space: stride/pad H and W by views, then a matmul over (C*kt).
            let x = pad_for_window(x, 3, 1, sh, ph, 0.0)?;
            let x = pad_for_window(&x, 4, 1, sw, pw, 0.0)?;
            let x = subsample(&x, 3, 0, sh, h_out)?;
            let x = subsample(&x, 4, 0, sw, w_out)?;
            let folded = self.fold_time(&x)?; // (B, C, kt, T', H', W')
            let folded = folded.reshape((b, c * kt, t_out * h_out * w_out))?;
            let wm = self.weight.reshape((o, c * kt))?;
            let y = wm.broadcast_matmul(&folded)?; // (B, O, T'H'W')
            return y.reshape((b, o, t_out, h_out, w_out));
        }
        // Spatial or full kernel: fold the temporal taps into channels, one conv2d per frame.
        let folded = self.fold_time(x)?; // (B, C, kt, T', H, W)
        let frames = folded
            .permute((0, 3, 1, 2, 4, 5))?
            .reshape((b * t_out, c * kt, h, w))?;
        let w2 = self.weight.reshape((o, c * kt, kh, kw))?;
        let y = conv2d_padded(&frames, &w2, (sh, sw), (ph, pw))?; // (B*T', O, H', W')
        y.reshape((b, t_out, o, h_out, w_out))?
            .permute((0, 2, 1, 3, 4))
    }
}

/// A bias-free Conv2d with per-axis stride/padding that is correct (forward and backward)
/// for any input size.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    stride: (usize, usize),
    padding: (usize, usize),
}

/// Builds a bias-free square-kernel [`Conv2d`] whose weight is `<vb prefix>.weight`.
pub fn conv2d(
    in_c: usize,
    out_c: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let init = default_conv_init(in_c * kernel * kernel);
    let weight = vb.get_with_hints((out_c, in_c, kernel, kernel), "weight", init)?;
    Ok(Conv2d {
        weight,
        stride: (stride, stride),
        padding: (padding, padding),
    })
}

impl Conv2d {
    /// Wraps an (out, in, kh, kw) weight.
    pub fn new(weight: Tensor, stride: (usize, usize), padding: (usize, usize)) -> Result<Self> {
        weight.dims4()?;
        if stride.0 == 0 || stride.1 == 0 {
            return Err(bad_input("conv2d", "stride must be positive"));
        }
        Ok(Self {
            weight,
            stride,
            padding,
        })
    }

    /// The (out, in, kh, kw) weight.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Conv2d {
    /// Convolves a channel-major (C, B, 1, H, W) tensor into (O, B, 1, H', W'): the 2-D
    /// convolution as a (1, kh, kw) 3-D one, so 2-D and 3-D encoders share one fast path.
    pub fn forward_cm(&self, x: &Tensor) -> Result<Tensor> {
        self.as_conv3d()?.forward_cm(x)
    }

    /// The same convolution as a (1, kh, kw) [`Conv3d`] sharing this weight (gradients flow to
    /// it through a reshape).
    pub fn as_conv3d(&self) -> Result<Conv3d> {
        let (o, c, kh, kw) = self.weight.dims4()?;
        let (s0, s1) = self.stride;
        let (p0, p1) = self.padding;
        let mut conv = Conv3d::new(
            self.weight.reshape((o, c, 1, kh, kw))?,
            Conv3dConfig {
                kernel: [1, kh, kw],
                stride: [1, s0, s1],
                padding: [0, p0, p1],
            },
        )?;
        conv.source = Some(self.weight.clone());
        Ok(conv)
    }
}

impl Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let in_c = self.weight.dim(1)?;
        match x.dims4() {
            Ok((_, c, _, _)) if c == in_c => {}
            _ => {
                return Err(bad_input(
                    "conv2d input",
                    format!("expected (B, {in_c}, H, W), got shape {:?}", x.dims()),
                ))
            }
        }
        conv2d_padded(x, &self.weight, self.stride, self.padding)
    }
}
