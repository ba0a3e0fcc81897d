//! Linear layers with the reference repos' initialisations and Sequential-indexed MLPs.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use super::norm::{batch_norm, BatchNorm};
use crate::error::bad_input;

/// How a Linear layer's weight is initialised when it is not loaded from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinearInit {
    /// PyTorch's default: weight and bias U(-1/sqrt(in), 1/sqrt(in)).
    TorchDefault,
    /// Xavier-uniform weight, default bias (RepLAI heads).
    XavierUniform,
    /// Weight N(0, 0.01), bias 0 (linear-probe classifiers).
    Normal001,
}

/// Builds a `Linear(in, out)` with `weight` (out, in) and optionally `bias` (out).
pub fn linear(
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    init: LinearInit,
    vb: VarBuilder,
) -> Result<Linear> {
    let bound = 1.0 / (in_dim.max(1) as f64).sqrt();
    let default = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let (w_init, b_init) = match init {
        LinearInit::TorchDefault => (default, default),
        LinearInit::XavierUniform => {
            let a = (6.0 / (in_dim + out_dim).max(1) as f64).sqrt();
            (Init::Uniform { lo: -a, up: a }, default)
        }
        LinearInit::Normal001 => (
            Init::Randn {
                mean: 0.0,
                stdev: 0.01,
            },
            Init::Const(0.0),
        ),
    };
    let w = vb.get_with_hints((out_dim, in_dim), "weight", w_init)?;
    let b = if bias {
        Some(vb.get_with_hints(out_dim, "bias", b_init)?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// Checks that `x` is (B, dim) before a matmul so the error names the layer.
pub(crate) fn check_2d(x: &Tensor, dim: usize, name: &str) -> Result<()> {
    match x.dims2() {
        Ok((_, d)) if d == dim => Ok(()),
        _ => Err(bad_input(
            name,
            format!("expected (B, {dim}), got shape {:?}", x.dims()),
        )),
    }
}

/// `Linear -> ReLU -> Linear -> ... -> Linear` as a PyTorch `nn.Sequential` without
/// normalisation: Linear layers sit at indices 0, 2, 4, ... (`<prefix>.0.weight`, ...).
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
    in_dim: usize,
}

impl Mlp {
    /// Builds an MLP through `dims` = [in, hidden..., out] (at least two entries).
    pub fn new(dims: &[usize], init: LinearInit, vb: VarBuilder) -> Result<Self> {
        if dims.len() < 2 {
            return Err(bad_input(
                "mlp",
                format!("needs at least [in, out] dims, got {dims:?}"),
            ));
        }
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| linear(d[0], d[1], true, init, vb.pp((2 * i).to_string())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            in_dim: dims[0],
        })
    }

    /// Input dimension.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_2d(x, self.in_dim, "mlp input")?;
        let mut y = x.clone();
        let last = self.layers.len() - 1;
        for (i, l) in self.layers.iter().enumerate() {
            y = l.forward(&y)?;
            if i < last {
                y = y.relu()?;
            }
        }
        Ok(y)
    }
}

/// `Linear -> BatchNorm1d -> ReLU -> ... -> Linear` (`nn.Sequential` indices 0, 1, 3, 4,
/// 6, ...): the VICReg expander shape. Hidden Linears are biased as in AV-SSRL.
#[derive(Debug, Clone)]
pub struct MlpBn {
    hidden: Vec<(Linear, BatchNorm)>,
    last: Linear,
    in_dim: usize,
}

impl MlpBn {
    /// Builds it through `dims` = [in, hidden..., out]; `last_bias` controls the final
    /// Linear's bias (AV-SSRL: true; official VICReg: false).
    pub fn new(dims: &[usize], last_bias: bool, vb: VarBuilder) -> Result<Self> {
        if dims.len() < 2 {
            return Err(bad_input(
                "mlp",
                format!("needs at least [in, out] dims, got {dims:?}"),
            ));
        }
        let n = dims.len() - 1;
        let mut hidden = Vec::with_capacity(n - 1);
        for i in 0..n - 1 {
            let l = linear(
                dims[i],
                dims[i + 1],
                true,
                LinearInit::TorchDefault,
                vb.pp((3 * i).to_string()),
            )?;
            let bn = batch_norm(dims[i + 1], vb.pp((3 * i + 1).to_string()))?;
            hidden.push((l, bn));
        }
        let last = linear(
            dims[n - 1],
            dims[n],
            last_bias,
            LinearInit::TorchDefault,
            vb.pp((3 * (n - 1)).to_string()),
        )?;
        Ok(Self {
            hidden,
            last,
            in_dim: dims[0],
        })
    }
}

impl ModuleT for MlpBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_2d(x, self.in_dim, "mlp input")?;
        let mut y = x.clone();
        for (l, bn) in &self.hidden {
            y = bn.forward_t(&l.forward(&y)?, train)?.relu()?;
        }
        self.last.forward(&y)
    }
}
