//! Batch normalisation over any rank with PyTorch's running-statistics semantics.

use candle_core::{DType, ModuleT, Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};

use crate::error::bad_input;

/// PyTorch's BatchNorm{1,2,3}d: channel axis 1, statistics over every other axis.
///
/// Train mode normalises with the biased batch variance and updates the running stats
/// as `new = (1 - momentum) old + momentum batch` using the unbiased variance; eval mode
/// uses the running stats. The running stats are `Var`s named `running_mean` /
/// `running_var` (in the VarMap when built from one, so they are saved with the model).
/// `num_batches_tracked` is not kept: it only matters for `momentum = None`.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

/// Builds a [`BatchNorm`] with PyTorch defaults (eps 1e-5, momentum 0.1, affine) from
/// `<prefix>.{weight,bias,running_mean,running_var}`.
pub fn batch_norm(channels: usize, vb: VarBuilder) -> Result<BatchNorm> {
    let weight = vb.get_with_hints(channels, "weight", Init::Const(1.0))?;
    let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
    let running_mean = vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?;
    let running_var = vb.get_with_hints(channels, "running_var", Init::Const(1.0))?;
    Ok(BatchNorm {
        weight,
        bias,
        running_mean: Var::from_tensor(&running_mean)?,
        running_var: Var::from_tensor(&running_var)?,
        eps: 1e-5,
        momentum: 0.1,
    })
}

impl BatchNorm {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.weight.elem_count()
    }

    /// The affine weight (gamma).
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The affine bias (beta).
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Current running mean.
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }

    /// Current running (unbiased) variance.
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// Sets eps and momentum (PyTorch defaults 1e-5 and 0.1).
    pub fn with_eps_momentum(mut self, eps: f64, momentum: f64) -> Self {
        self.eps = eps;
        self.momentum = momentum;
        self
    }

    /// `running = (1 - momentum) running + momentum batch`, with the unbiased variance of `n`
    /// values per channel; detached, in the running stats' own dtype.
    pub(crate) fn update_running(
        &self,
        batch_mean: &Tensor,
        batch_var: &Tensor,
        n: usize,
    ) -> Result<()> {
        let dt = self.running_mean.dtype();
        let m = self.momentum;
        let mean = batch_mean.to_dtype(dt)?;
        let unbiased = (batch_var * (n as f64 / (n as f64 - 1.0)))?.to_dtype(dt)?;
        let new_mean = ((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?;
        let new_var = ((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)
    }

    /// Reshapes a per-channel vector to broadcast against (B, C, rest).
    fn per_channel(v: &Tensor) -> Result<Tensor> {
        v.reshape((1, (), 1))
    }
}

impl BatchNorm {
    /// [`ModuleT::forward_t`] for a channel-major (C, ...) input, as the encoders keep it.
    pub fn forward_t_cm(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.channels();
        if x.rank() < 2 || x.dim(0)? != c {
            return Err(bad_input(
                "batch-norm input",
                format!(
                    "expected channel-major ({c}, ...), got shape {:?}",
                    x.dims()
                ),
            ));
        }
        self.forward_3d(x, x.reshape((1, c, ()))?, train)
    }

    /// Normalises `x3`, the (outer, C, inner) view of `x`, and returns the result in `x`'s shape.
    fn forward_3d(&self, x: &Tensor, x3: Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let n = x3.dim(0)? * x3.dim(2)?;
        let w = Self::per_channel(&self.weight)?;
        let bias = Self::per_channel(&self.bias)?;
        let y = if train {
            if n < 2 {
                return Err(bad_input(
                    "batch-norm input",
                    format!("train mode needs more than 1 value per channel, got shape {dims:?}"),
                ));
            }
            let dt = x.dtype();
            let fused = x.device().is_cpu()
                && matches!(dt, DType::F32 | DType::F64)
                && self.weight.dtype() == dt
                && self.bias.dtype() == dt;
            if fused {
                let x3 = x3.contiguous()?;
                let (mean, var) = super::bn_fused::batch_stats(&x3)?;
                let dev = x.device();
                self.update_running(
                    &Tensor::new(mean.as_slice(), dev)?,
                    &Tensor::new(var.as_slice(), dev)?,
                    n,
                )?;
                let w = self.weight.flatten_all()?;
                let b = self.bias.flatten_all()?;
                let y = super::bn_fused::normalize_train(&x3, &w, &b, &mean, &var, self.eps)?;
                return y.reshape(dims);
            }
            let mean = (x3.sum_keepdim(2)?.sum_keepdim(0)? / n as f64)?;
            let centred = x3.broadcast_sub(&mean)?;
            let var = (centred.sqr()?.sum_keepdim(2)?.sum_keepdim(0)? / n as f64)?;
            self.update_running(
                &mean.detach().flatten_all()?,
                &var.detach().flatten_all()?,
                n,
            )?;
            centred
                .broadcast_div(&(var + self.eps)?.sqrt()?)?
                .broadcast_mul(&w)?
                .broadcast_add(&bias)?
        } else {
            let dt = x.dtype();
            let rm = Self::per_channel(&self.running_mean.as_tensor().to_dtype(dt)?)?;
            let rv = Self::per_channel(&self.running_var.as_tensor().to_dtype(dt)?)?;
            x3.broadcast_sub(&rm)?
                .broadcast_div(&(rv + self.eps)?.sqrt()?)?
                .broadcast_mul(&w)?
                .broadcast_add(&bias)?
        };
        y.reshape(dims)
    }
}

impl ModuleT for BatchNorm {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.channels();
        if x.rank() < 2 || x.dim(1)? != c {
            return Err(bad_input(
                "batch-norm input",
                format!("expected (B, {c}, ...), got shape {:?}", x.dims()),
            ));
        }
        self.forward_3d(x, x.reshape((x.dim(0)?, c, ()))?, train)
    }
}
