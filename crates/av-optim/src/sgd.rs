//! Stochastic gradient descent with momentum, PyTorch semantics.
//!
//! candle's `SGD` has no momentum, weight decay or parameter groups, so RepLAI's optimiser
//! (`torch.optim.SGD`, momentum cycled by OneCycle, wd 1e-4 on every parameter) is written here.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};
use crate::params::{check_hparam, ParamGroup};
use crate::slots::{check_no_unexpected, flatten, take_state, Slot};
use crate::Optimizer;

const NAME: &str = "SGD";
const BUF: &str = "momentum_buffer";

/// Hyper-parameters of [`Sgd`] (PyTorch names and defaults except `lr`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SgdConfig {
    /// Base learning rate (each group uses `lr * lr_mult`).
    pub lr: f64,
    /// Momentum mu; 0 disables the buffer.
    #[serde(default)]
    pub momentum: f64,
    /// Weight decay for groups built by [`Sgd::from_vars`]; [`Sgd::new`] uses each
    /// [`ParamGroup::weight_decay`] instead.
    #[serde(default)]
    pub weight_decay: f64,
    /// Dampening of the gradient in the buffer update (not applied on the first step).
    #[serde(default)]
    pub dampening: f64,
    /// Nesterov momentum (requires momentum > 0 and dampening 0).
    #[serde(default)]
    pub nesterov: bool,
}

impl SgdConfig {
    /// RepLAI's optimiser: momentum 0.9 (cycled by OneCycle), weight decay 1e-4.
    pub fn replai(lr: f64) -> Self {
        Self {
            lr,
            momentum: 0.9,
            weight_decay: 1e-4,
            dampening: 0.0,
            nesterov: false,
        }
    }

    fn validate(&self) -> Result<()> {
        check_hparam(NAME, "lr", self.lr)?;
        check_hparam(NAME, "momentum", self.momentum)?;
        check_hparam(NAME, "weight_decay", self.weight_decay)?;
        check_hparam(NAME, "dampening", self.dampening)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(OptimError::InvalidConfig {
                optimizer: NAME,
                what: "Nesterov momentum requires momentum > 0 and dampening 0".to_string(),
            });
        }
        Ok(())
    }
}

/// Momentum SGD over parameter groups.
///
/// Per parameter with gradient `grad`, group weight decay `wd` and learning rate
/// `lr * lr_mult`: `g = grad + wd * w`; `buf = g` on the first step, else
/// `buf = mu * buf + (1 - dampening) * g`; `d = g + mu * buf` (Nesterov) or `d = buf`;
/// `w -= lr * d`. Parameters without a gradient are skipped and keep their buffer.
#[derive(Debug)]
pub struct Sgd {
    cfg: SgdConfig,
    slots: Vec<Slot>,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// Optimiser over `groups` (each group's `weight_decay` applies; `cfg.weight_decay` is
    /// not used here).
    pub fn new(groups: Vec<ParamGroup>, cfg: SgdConfig) -> Result<Self> {
        cfg.validate()?;
        let slots = flatten(NAME, groups)?;
        let buffers = vec![None; slots.len()];
        Ok(Self {
            cfg,
            slots,
            buffers,
        })
    }

    /// One group with `cfg.weight_decay` and `lr_mult` 1.
    pub fn from_vars(vars: Vec<(String, candle_core::Var)>, cfg: SgdConfig) -> Result<Self> {
        let wd = cfg.weight_decay;
        Self::new(vec![ParamGroup::new(vars, wd)], cfg)
    }

    /// Current settings (lr and momentum as last set).
    pub fn config(&self) -> &SgdConfig {
        &self.cfg
    }

    /// The momentum buffer of parameter `name`, if it has stepped.
    pub fn momentum_buffer(&self, name: &str) -> Option<&Tensor> {
        self.slots
            .iter()
            .position(|s| s.name == name)
            .and_then(|i| self.buffers[i].as_ref())
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let mu = self.cfg.momentum;
        for (slot, buf) in self.slots.iter().zip(self.buffers.iter_mut()) {
            let Some(grad) = slot.grad(NAME, grads)? else {
                continue;
            };
            let w = slot.value();
            let g = if slot.weight_decay != 0.0 {
                (grad + w.affine(slot.weight_decay, 0.0)?)?
            } else {
                grad
            };
            let d = if mu != 0.0 {
                let new_buf = match buf.take() {
                    None => g.copy()?,
                    Some(b) => {
                        let damp = 1.0 - self.cfg.dampening;
                        let g_term = if damp == 1.0 {
                            g.clone()
                        } else {
                            g.affine(damp, 0.0)?
                        };
                        (b.affine(mu, 0.0)? + g_term)?
                    }
                };
                let d = if self.cfg.nesterov {
                    (&g + new_buf.affine(mu, 0.0)?)?
                } else {
                    new_buf.clone()
                };
                *buf = Some(new_buf);
                d
            } else {
                g
            };
            let lr = self.cfg.lr * slot.lr_mult;
            slot.var.set(&(w - d.affine(lr, 0.0)?)?)?;
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    fn set_momentum(&mut self, momentum: f64) {
        self.cfg.momentum = momentum;
    }

    fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (slot, buf) in self.slots.iter().zip(&self.buffers) {
            if let Some(b) = buf {
                out.insert(format!("{}.{BUF}", slot.name), b.copy()?);
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        check_no_unexpected(NAME, state, &self.slots, &[BUF])?;
        let mut buffers = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            buffers.push(take_state(NAME, state, slot, BUF, slot.var.dims())?);
        }
        self.buffers = buffers;
        Ok(())
    }
}
