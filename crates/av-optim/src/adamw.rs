//! Adam / AdamW with PyTorch's update order, parameter groups and exportable state.
//!
//! candle's `AdamW` keeps its moments private (no checkpointing) and has no parameter groups
//! or coupled-L2 mode; AVID and AV-SSRL train with `torch.optim.Adam(weight_decay=...)`, i.e.
//! coupled L2, which `decoupled: false` reproduces.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};
use crate::params::{check_hparam, ParamGroup};
use crate::slots::{check_no_unexpected, flatten, scalar_u64, take_state, Slot};
use crate::Optimizer;

const NAME: &str = "AdamW";
const FIELDS: [&str; 3] = ["exp_avg", "exp_avg_sq", "step"];

/// Hyper-parameters of [`AdamW`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Base learning rate (each group uses `lr * lr_mult`).
    pub lr: f64,
    /// First-moment decay (the "momentum" a OneCycle schedule cycles), 0.9.
    #[serde(default = "beta1")]
    pub beta1: f64,
    /// Second-moment decay, 0.999.
    #[serde(default = "beta2")]
    pub beta2: f64,
    /// Denominator guard, 1e-8.
    #[serde(default = "eps")]
    pub eps: f64,
    /// Weight decay for groups built by [`AdamW::from_vars`].
    #[serde(default)]
    pub weight_decay: f64,
    /// `true`: AdamW (`w *= 1 - lr * wd` before the update); `false`: Adam with L2 added to the
    /// gradient, as `torch.optim.Adam(weight_decay=...)` in AVID and AV-SSRL.
    #[serde(default = "yes")]
    pub decoupled: bool,
}

fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn eps() -> f64 {
    1e-8
}
fn yes() -> bool {
    true
}

impl AdamWConfig {
    /// AdamW with PyTorch defaults and the given learning rate and decay.
    pub fn adamw(lr: f64, weight_decay: f64) -> Self {
        Self {
            lr,
            beta1: beta1(),
            beta2: beta2(),
            eps: eps(),
            weight_decay,
            decoupled: true,
        }
    }

    /// `torch.optim.Adam` with coupled L2 decay (AVID: lr 5e-4 / wd 1e-5).
    pub fn adam_l2(lr: f64, weight_decay: f64) -> Self {
        Self {
            decoupled: false,
            ..Self::adamw(lr, weight_decay)
        }
    }

    fn validate(&self) -> Result<()> {
        check_hparam(NAME, "lr", self.lr)?;
        check_hparam(NAME, "weight_decay", self.weight_decay)?;
        check_hparam(NAME, "eps", self.eps)?;
        for (n, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(OptimError::InvalidConfig {
                    optimizer: NAME,
                    what: format!("{n} must be in [0, 1), got {b}"),
                });
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step: u64,
}

/// Adam(W) over parameter groups.
///
/// Per parameter at step t: (decoupled) `w *= 1 - lr * wd` or (coupled) `g += wd * w`;
/// `m = m + (1 - beta1) (g - m)`; `v = beta2 v + (1 - beta2) g^2`;
/// `w -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)`.
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    moments: Vec<Option<Moments>>,
}

impl AdamW {
    /// Optimiser over `groups` (each group's `weight_decay` applies).
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<Self> {
        cfg.validate()?;
        let slots = flatten(NAME, groups)?;
        let moments = vec![None; slots.len()];
        Ok(Self {
            cfg,
            slots,
            moments,
        })
    }

    /// One group with `cfg.weight_decay` and `lr_mult` 1.
    pub fn from_vars(vars: Vec<(String, candle_core::Var)>, cfg: AdamWConfig) -> Result<Self> {
        let wd = cfg.weight_decay;
        Self::new(vec![ParamGroup::new(vars, wd)], cfg)
    }

    /// Current settings.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            decoupled,
            ..
        } = self.cfg;
        for (slot, state) in self.slots.iter().zip(self.moments.iter_mut()) {
            let Some(grad) = slot.grad(NAME, grads)? else {
                continue;
            };
            let lr = lr * slot.lr_mult;
            let wd = slot.weight_decay;
            let mut w = slot.value();
            let mut g = grad;
            if wd != 0.0 {
                if decoupled {
                    w = w.affine(1.0 - lr * wd, 0.0)?;
                } else {
                    g = (g + w.affine(wd, 0.0)?)?;
                }
            }
            let prev = match state.take() {
                Some(m) => m,
                None => Moments {
                    exp_avg: g.zeros_like()?,
                    exp_avg_sq: g.zeros_like()?,
                    step: 0,
                },
            };
            let step = prev.step + 1;
            let exp_avg = (&prev.exp_avg + (&g - &prev.exp_avg)?.affine(1.0 - beta1, 0.0)?)?;
            let exp_avg_sq =
                (prev.exp_avg_sq.affine(beta2, 0.0)? + g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
            let bc1 = 1.0 - beta1.powf(step as f64);
            let bc2_sqrt = (1.0 - beta2.powf(step as f64)).sqrt();
            let denom = exp_avg_sq.sqrt()?.affine(1.0 / bc2_sqrt, eps)?;
            let update = (&exp_avg / denom)?.affine(lr / bc1, 0.0)?;
            slot.var.set(&(w - update)?)?;
            *state = Some(Moments {
                exp_avg,
                exp_avg_sq,
                step,
            });
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.cfg.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Sets beta1, as PyTorch's OneCycleLR does for Adam-family optimisers.
    fn set_momentum(&mut self, momentum: f64) {
        self.cfg.beta1 = momentum;
    }

    fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for (slot, m) in self.slots.iter().zip(&self.moments) {
            if let Some(m) = m {
                out.insert(format!("{}.exp_avg", slot.name), m.exp_avg.copy()?);
                out.insert(format!("{}.exp_avg_sq", slot.name), m.exp_avg_sq.copy()?);
                let step = Tensor::new(m.step as i64, &candle_core::Device::Cpu)?;
                out.insert(format!("{}.step", slot.name), step);
            }
        }
        Ok(out)
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        check_no_unexpected(NAME, state, &self.slots, &FIELDS)?;
        let mut moments = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            let shape = slot.var.dims();
            let parts = (
                take_state(NAME, state, slot, "exp_avg", shape)?,
                take_state(NAME, state, slot, "exp_avg_sq", shape)?,
                take_state(NAME, state, slot, "step", &[])?,
            );
            moments.push(match parts {
                (None, None, None) => None,
                (Some(exp_avg), Some(exp_avg_sq), Some(step)) => {
                    let key = format!("{}.step", slot.name);
                    Some(Moments {
                        exp_avg,
                        exp_avg_sq,
                        step: scalar_u64(NAME, &key, &step.to_dtype(DType::F64)?)?,
                    })
                }
                (a, b, _) => {
                    let missing = match (a.is_some(), b.is_some()) {
                        (false, _) => "exp_avg",
                        (_, false) => "exp_avg_sq",
                        _ => "step",
                    };
                    return Err(OptimError::MissingState {
                        optimizer: NAME,
                        name: format!("{}.{missing}", slot.name),
                        companion: format!("{}.*", slot.name),
                    });
                }
            });
        }
        self.moments = moments;
        Ok(())
    }
}
