//! Learning-rate (and momentum) schedules as pure functions of a step counter.
//!
//! A schedule never owns the optimiser: the training loop asks `lr(step)` / `momentum(step)`
//! and pushes the values with [`crate::Optimizer::apply_schedule`]. Because the values are a
//! pure function of the step, resuming only needs the step counter (unlike the reference, whose
//! OneCycle scheduler is not checkpointed and restarts at step 0 on resume).

use serde::{Deserialize, Serialize};

use crate::error::{OptimError, Result};

/// A learning-rate schedule; `step` counts scheduler steps (PyTorch's `last_epoch`).
pub trait LrSchedule {
    /// Base learning rate at `step` (groups multiply it by their `lr_mult`).
    fn lr(&self, step: usize) -> f64;

    /// Momentum (SGD/LARS) or beta1 (Adam) at `step`, when the schedule cycles it.
    fn momentum(&self, _step: usize) -> Option<f64> {
        None
    }
}

/// How OneCycle interpolates inside a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Anneal {
    /// `end + (start - end) / 2 * (1 + cos(pi * pct))` (PyTorch default).
    Cos,
    /// `start + (end - start) * pct`.
    Linear,
}

/// Parameters of [`OneCycle`], PyTorch's `OneCycleLR` arguments and defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneCycleConfig {
    /// Peak learning rate.
    pub max_lr: f64,
    /// Number of scheduler steps in the cycle (RepLAI: 100 = epochs).
    pub total_steps: usize,
    /// Fraction of the cycle spent increasing the learning rate, 0.3.
    #[serde(default = "pct_start")]
    pub pct_start: f64,
    /// Interpolation, cosine by default.
    #[serde(default = "anneal")]
    pub anneal: Anneal,
    /// Start learning rate is `max_lr / div_factor`, 25.
    #[serde(default = "div_factor")]
    pub div_factor: f64,
    /// Final learning rate is `initial_lr / final_div_factor`, 1e4.
    #[serde(default = "final_div_factor")]
    pub final_div_factor: f64,
    /// Cycle momentum inversely to the learning rate, true.
    #[serde(default = "yes")]
    pub cycle_momentum: bool,
    /// Momentum at the learning-rate peak, 0.85.
    #[serde(default = "base_momentum")]
    pub base_momentum: f64,
    /// Momentum at the start and end, 0.95.
    #[serde(default = "max_momentum")]
    pub max_momentum: f64,
    /// fast.ai's three-phase variant (up, down to the initial lr, then annihilation), false.
    #[serde(default)]
    pub three_phase: bool,
}

fn pct_start() -> f64 {
    0.3
}
fn anneal() -> Anneal {
    Anneal::Cos
}
fn div_factor() -> f64 {
    25.0
}
fn final_div_factor() -> f64 {
    1e4
}
fn yes() -> bool {
    true
}
fn base_momentum() -> f64 {
    0.85
}
fn max_momentum() -> f64 {
    0.95
}

impl OneCycleConfig {
    /// PyTorch defaults for the given peak learning rate and cycle length.
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        Self {
            max_lr,
            total_steps,
            pct_start: pct_start(),
            anneal: anneal(),
            div_factor: div_factor(),
            final_div_factor: final_div_factor(),
            cycle_momentum: true,
            base_momentum: base_momentum(),
            max_momentum: max_momentum(),
            three_phase: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    end_step: f64,
    start_lr: f64,
    end_lr: f64,
    start_momentum: f64,
    end_momentum: f64,
}

/// PyTorch's `OneCycleLR`, value for value.
///
/// Step 0 is the constructor's value (`max_lr / div_factor`, momentum `max_momentum`); step s
/// is the value after s calls of `scheduler.step()`. Phase ends are `pct_start * total - 1`
/// (and `2 * pct_start * total - 2` with three phases) and `total - 1`. Step `total_steps`
/// lies past the last phase end: PyTorch extrapolates the last cosine there (pct > 1), and so
/// does this type, for any step (PyTorch raises beyond `total_steps`).
///
/// RepLAI steps it once at the start of every epoch, so epoch e (0-based) trains with
/// `lr(e + 1)` and `momentum(e + 1)`, and the last epoch uses the extrapolated step 100. For a
/// per-iteration cycle, set `total_steps = epochs * iterations_per_epoch` and step every
/// iteration.
#[derive(Debug, Clone)]
pub struct OneCycle {
    cfg: OneCycleConfig,
    phases: Vec<Phase>,
}

impl OneCycle {
    /// Validates `cfg` (as PyTorch does) and precomputes the phases.
    pub fn new(cfg: OneCycleConfig) -> Result<Self> {
        let bad = |what: String| OptimError::InvalidConfig {
            optimizer: "OneCycle",
            what,
        };
        if cfg.total_steps == 0 {
            return Err(bad("total_steps must be > 0".to_string()));
        }
        if !(0.0..=1.0).contains(&cfg.pct_start) {
            return Err(bad(format!(
                "pct_start must be in [0, 1], got {}",
                cfg.pct_start
            )));
        }
        for (n, v) in [
            ("max_lr", cfg.max_lr),
            ("div_factor", cfg.div_factor),
            ("final_div_factor", cfg.final_div_factor),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(format!("{n} must be finite and > 0, got {v}")));
            }
        }
        let initial = cfg.max_lr / cfg.div_factor;
        let min = initial / cfg.final_div_factor;
        let total = cfg.total_steps as f64;
        let (lo_m, hi_m) = (cfg.base_momentum, cfg.max_momentum);
        let phases = if cfg.three_phase {
            vec![
                Phase {
                    end_step: cfg.pct_start * total - 1.0,
                    start_lr: initial,
                    end_lr: cfg.max_lr,
                    start_momentum: hi_m,
                    end_momentum: lo_m,
                },
                Phase {
                    end_step: 2.0 * cfg.pct_start * total - 2.0,
                    start_lr: cfg.max_lr,
                    end_lr: initial,
                    start_momentum: lo_m,
                    end_momentum: hi_m,
                },
                Phase {
                    end_step: total - 1.0,
                    start_lr: initial,
                    end_lr: min,
                    start_momentum: hi_m,
                    end_momentum: hi_m,
                },
            ]
        } else {
            vec![
                Phase {
                    end_step: cfg.pct_start * total - 1.0,
                    start_lr: initial,
                    end_lr: cfg.max_lr,
                    start_momentum: hi_m,
                    end_momentum: lo_m,
                },
                Phase {
                    end_step: total - 1.0,
                    start_lr: cfg.max_lr,
                    end_lr: min,
                    start_momentum: lo_m,
                    end_momentum: hi_m,
                },
            ]
        };
        // PyTorch divides by (end - start) of the phase a step falls in. A phase that ends before
        // step 0 (short runs: `pct_start * total < 1`) is never entered and is harmless; one that
        // steps can reach with no length would divide by zero (Python raises there).
        let mut start = 0.0;
        for (i, p) in phases.iter().enumerate() {
            if p.end_step >= 0.0 && p.end_step <= start {
                return Err(bad(format!(
                    "phase {} has no length (ends at step {} but starts at {start}); \
                     increase total_steps or change pct_start",
                    i + 1,
                    p.end_step
                )));
            }
            start = p.end_step;
        }
        Ok(Self { cfg, phases })
    }

    /// The configuration.
    pub fn config(&self) -> &OneCycleConfig {
        &self.cfg
    }

    fn anneal(&self, start: f64, end: f64, pct: f64) -> f64 {
        match self.cfg.anneal {
            Anneal::Cos => end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0),
            Anneal::Linear => (end - start) * pct + start,
        }
    }

    /// `(phase, pct)` for `step`, PyTorch's lookup.
    fn locate(&self, step: usize) -> (Phase, f64) {
        let s = step as f64;
        let mut start = 0.0;
        let last = self.phases.len() - 1;
        for (i, p) in self.phases.iter().enumerate() {
            if s <= p.end_step || i == last {
                return (*p, (s - start) / (p.end_step - start));
            }
            start = p.end_step;
        }
        // `phases` is never empty and the loop returns at the last phase.
        (self.phases[last], 1.0)
    }
}

impl LrSchedule for OneCycle {
    fn lr(&self, step: usize) -> f64 {
        let (p, pct) = self.locate(step);
        self.anneal(p.start_lr, p.end_lr, pct)
    }

    fn momentum(&self, step: usize) -> Option<f64> {
        if !self.cfg.cycle_momentum {
            return None;
        }
        let (p, pct) = self.locate(step);
        Some(self.anneal(p.start_momentum, p.end_momentum, pct))
    }
}

/// Linear warm-up from 0 then cosine decay to `final_ratio * base_lr`, VICReg's
/// `adjust_learning_rate`, stepped per iteration.
///
/// `lr(s) = base * s / warmup` for `s < warmup`; after, with `q = (1 + cos(pi * t / T)) / 2`,
/// `t = s - warmup`, `T = total - warmup`: `lr = base * q + base * final_ratio * (1 - q)`.
/// Steps past `total_steps` stay at the final value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosineWarmup {
    /// Peak learning rate (VICReg: `base_lr * batch / 256`).
    pub base_lr: f64,
    /// Warm-up length in steps (VICReg: 10 epochs).
    pub warmup_steps: usize,
    /// Total steps of the run.
    pub total_steps: usize,
    /// Final learning rate as a fraction of `base_lr` (VICReg: 0.001).
    #[serde(default = "final_ratio")]
    pub final_ratio: f64,
}

fn final_ratio() -> f64 {
    0.001
}

impl LrSchedule for CosineWarmup {
    fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps);
        let end = self.base_lr * self.final_ratio;
        if span == 0 {
            return end;
        }
        let t = (step - self.warmup_steps).min(span) as f64;
        let q = 0.5 * (1.0 + (std::f64::consts::PI * t / span as f64).cos());
        self.base_lr * q + end * (1.0 - q)
    }
}

/// `base_lr * gamma^k`, k = number of milestones <= step (PyTorch's `MultiStepLR`; repeated
/// milestones apply gamma repeatedly). The linear probe uses milestones 18 and 24 with gamma
/// 0.1, stepped per epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepMilestones {
    /// Learning rate before the first milestone.
    pub base_lr: f64,
    /// Steps (usually epochs) at which the rate is multiplied by `gamma`.
    pub milestones: Vec<usize>,
    /// Multiplier, 0.1.
    #[serde(default = "gamma")]
    pub gamma: f64,
}

fn gamma() -> f64 {
    0.1
}

impl StepMilestones {
    /// Schedule with gamma 0.1.
    pub fn new(base_lr: f64, milestones: Vec<usize>) -> Self {
        Self {
            base_lr,
            milestones,
            gamma: gamma(),
        }
    }
}

impl LrSchedule for StepMilestones {
    fn lr(&self, step: usize) -> f64 {
        let k = self.milestones.iter().filter(|&&m| m <= step).count();
        self.base_lr * self.gamma.powi(k as i32)
    }
}

/// A constant learning rate (AVID's MultiStep with gamma 1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Constant(pub f64);

impl LrSchedule for Constant {
    fn lr(&self, _step: usize) -> f64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milestones_count_inclusive() {
        let s = StepMilestones::new(0.005, vec![18, 24]);
        assert_eq!(s.lr(17), 0.005);
        assert!((s.lr(18) - 0.0005).abs() < 1e-18);
        assert!((s.lr(23) - 0.0005).abs() < 1e-18);
        assert!((s.lr(24) - 0.00005).abs() < 1e-18);
        let twice = StepMilestones::new(1.0, vec![3, 3]);
        assert!((twice.lr(3) - 0.01).abs() < 1e-15);
    }

    #[test]
    fn cosine_warmup_endpoints() {
        let s = CosineWarmup {
            base_lr: 0.4,
            warmup_steps: 10,
            total_steps: 110,
            final_ratio: 0.001,
        };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 0.2).abs() < 1e-15);
        assert!((s.lr(10) - 0.4).abs() < 1e-15);
        // Halfway through the cosine: q = 1/2.
        assert!((s.lr(60) - (0.2 + 0.0002)).abs() < 1e-15);
        assert!((s.lr(110) - 0.0004).abs() < 1e-15);
        assert_eq!(s.lr(500), s.lr(110));
    }

    #[test]
    fn one_cycle_rejects_empty_phases() {
        assert!(OneCycle::new(OneCycleConfig::new(0.1, 0)).is_err());
        assert!(OneCycle::new(OneCycleConfig::new(0.1, 10)).is_ok());
        // pct_start * total == 1: phase 1 ends at step 0 where it starts (PyTorch: 0/0).
        let mut c = OneCycleConfig::new(0.1, 4);
        c.pct_start = 0.25;
        assert!(OneCycle::new(c).is_err());
        let mut c = OneCycleConfig::new(0.1, 100);
        c.pct_start = 1.5;
        assert!(OneCycle::new(c).is_err());
    }

    #[test]
    fn one_cycle_short_runs_skip_the_warmup_like_pytorch() -> crate::Result<()> {
        // torch.optim.lr_scheduler.OneCycleLR(max_lr=0.05, total_steps=t), lr after s steps
        // (torch 2.15): phase 1 ends before step 0 and is never entered.
        let expected: [(usize, &[f64]); 3] = [
            (1, &[2e-07]),
            (2, &[0.04058728269748815, 2e-07]),
            (3, &[0.049720771772545594, 0.023131855133348752, 2e-07]),
        ];
        for (total, lrs) in expected {
            let s = OneCycle::new(OneCycleConfig::new(0.05, total))?;
            for (step, want) in lrs.iter().enumerate() {
                let got = s.lr(step);
                assert!(
                    (got - want).abs() < 1e-12,
                    "total {total} step {step}: {got} vs {want}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn three_phase_returns_to_initial_then_minimum() -> crate::Result<()> {
        let mut c = OneCycleConfig::new(1.0, 100);
        c.three_phase = true;
        let s = OneCycle::new(c)?;
        assert!((s.lr(29) - 1.0).abs() < 1e-15);
        assert!((s.lr(58) - 0.04).abs() < 1e-15);
        assert!((s.lr(99) - 0.04 / 1e4).abs() < 1e-15);
        assert_eq!(s.momentum(58), Some(0.95));
        assert_eq!(s.momentum(80), Some(0.95));
        Ok(())
    }
}
