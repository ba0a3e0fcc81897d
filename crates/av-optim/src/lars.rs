//! LARS as in the official VICReg code (`main_vicreg.py`, class LARS).
//!
//! Per parameter: `g = grad + wd * w`, scaled by the trust ratio
//! `eta * ||w|| / ||g||` (1 when either norm is 0); `mu = momentum * mu + g` (mu starts at
//! zero); `w -= lr * mu`. Rank-1 tensors (biases, norm affine) skip both the decay and the
//! trust ratio when `exclude_rank1` is set, VICReg's `exclude_bias_and_norm` filter.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::params::{check_hparam, ParamGroup};
use crate::slots::{check_no_unexpected, flatten, take_state, Slot};
use crate::Optimizer;

const NAME: &str = "LARS";
const MU: &str = "mu";

/// Hyper-parameters of [`Lars`] (VICReg defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LarsConfig {
    /// Base learning rate (VICReg: `base_lr * batch / 256`).
    pub lr: f64,
    /// Momentum, 0.9.
    #[serde(default = "momentum")]
    pub momentum: f64,
    /// Trust coefficient eta, 0.001.
    #[serde(default = "eta")]
    pub eta: f64,
    /// Skip decay and adaptation for rank <= 1 tensors, true.
    #[serde(default = "yes")]
    pub exclude_rank1: bool,
}

fn momentum() -> f64 {
    0.9
}
fn eta() -> f64 {
    0.001
}
fn yes() -> bool {
    true
}

impl LarsConfig {
    /// VICReg's settings with the given learning rate.
    pub fn vicreg(lr: f64) -> Self {
        Self {
            lr,
            momentum: momentum(),
            eta: eta(),
            exclude_rank1: true,
        }
    }
}

/// LARS over parameter groups (each group's `weight_decay` applies).
#[derive(Debug)]
pub struct Lars {
    cfg: LarsConfig,
    slots: Vec<Slot>,
    mu: Vec<Option<Tensor>>,
}

impl Lars {
    /// Optimiser over `groups`.
    pub fn new(groups: Vec<ParamGroup>, cfg: LarsConfig) -> Result<Self> {
        check_hparam(NAME, "lr", cfg.lr)?;
        check_hparam(NAME, "momentum", cfg.momentum)?;
        check_hparam(NAME, "eta", cfg.eta)?;
        let slots = flatten(NAME, groups)?;
        let mu = vec![None; slots.len()];
        Ok(Self { cfg, slots, mu })
    }
}

impl Optimizer for Lars {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (slot, mu) in self.slots.iter().zip(self.mu.iter_mut()) {
            let Some(grad) = slot.grad(NAME, grads)? else {
                continue;
            };
            let w = slot.value();
            let adapt = !(self.cfg.exclude_rank1 && w.rank() <= 1);
            let mut g = grad;
            if adapt {
                if slot.weight_decay != 0.0 {
                    g = (g + w.affine(slot.weight_decay, 0.0)?)?;
                }
                // Trust ratio on the device: no host round-trip per parameter.
                let w_norm = w.sqr()?.sum_all()?.sqrt()?;
                let g_norm = g.sqr()?.sum_all()?.sqrt()?;
                let ratio = ((&w_norm * self.cfg.eta)? / &g_norm)?;
                let ok = (w_norm.gt(0.0)?.to_dtype(w.dtype())?
                    * g_norm.gt(0.0)?.to_dtype(w.dtype())?)?
                .gt(0.0)?;
                let one = ratio.ones_like()?;
                let q = ok.where_cond(&ratio, &one)?;
                g = g.broadcast_mul(&q)?;
            }
            let new_mu = match mu.take() {
                None => g,
                Some(m) => (m.affine(self.cfg.momentum, 0.0)? + g)?,
            };
            slot.var
                .set(&(w - new_mu.affine(self.cfg.lr * slot.lr_mult, 0.0)?)?)?;
            *mu = Some(new_mu);
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
        for (slot, m) in self.slots.iter().zip(&self.mu) {
            if let Some(m) = m {
                out.insert(format!("{}.{MU}", slot.name), m.copy()?);
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        check_no_unexpected(NAME, state, &self.slots, &[MU])?;
        let mut mu = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            mu.push(take_state(NAME, state, slot, MU, slot.var.dims())?);
        }
        self.mu = mu;
        Ok(())
    }
}
