//! Optimisers (momentum SGD, Adam/AdamW, LARS) and learning-rate schedules (OneCycle as
//! PyTorch, cosine with warm-up, step milestones) over candle `Var`s.
//!
//! candle 0.11's `SGD` has no momentum and its `AdamW` hides its state, so neither can
//! reproduce the references nor be checkpointed. The optimisers here follow PyTorch's update
//! order exactly (tested against recorded PyTorch trajectories), support parameter groups with
//! a learning-rate multiplier and per-group weight decay, skip parameters without gradient, and
//! export their state as named tensors so a resumed run continues bit-identically. See
//! `docs/optim.md`.
//!
//! ```
//! use av_optim::{LrSchedule, OneCycle, OneCycleConfig, Optimizer, ParamGroup, Sgd, SgdConfig};
//! use candle_core::{DType, Device, Var};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let w = Var::ones(3, DType::F32, &Device::Cpu)?;
//! let group = ParamGroup::new(vec![("w".to_string(), w.clone())], 1e-4);
//! let mut sgd = Sgd::new(vec![group], SgdConfig::replai(0.005))?;
//! let schedule = OneCycle::new(OneCycleConfig::new(0.005, 100))?;
//! // RepLAI steps the schedule at the start of every epoch: epoch 0 uses step 1.
//! sgd.apply_schedule(&schedule, 1);
//! let loss = w.as_tensor().sqr()?.sum_all()?;
//! sgd.step(&loss.backward()?)?;
//! assert!(w.as_tensor().to_vec1::<f32>()?[0] < 1.0);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

pub mod adamw;
pub mod error;
pub mod lars;
pub mod params;
pub mod schedule;
pub mod sgd;
mod slots;

pub use adamw::{AdamW, AdamWConfig};
pub use error::{OptimError, Result};
pub use lars::{Lars, LarsConfig};
pub use params::{
    is_running_stat, partition_by_prefix, split_decay, trainable_vars, NamedVars, ParamGroup,
};
pub use schedule::{
    Anneal, Constant, CosineWarmup, LrSchedule, OneCycle, OneCycleConfig, StepMilestones,
};
pub use sgd::{Sgd, SgdConfig};

/// What the training loop needs from an optimiser.
pub trait Optimizer {
    /// Applies one update from the gradients of a `backward()` call.
    fn step(&mut self, grads: &GradStore) -> Result<()>;

    /// Current base learning rate.
    fn lr(&self) -> f64;

    /// Sets the base learning rate (groups use `lr * lr_mult`).
    fn set_lr(&mut self, lr: f64);

    /// Sets the momentum (SGD, LARS) or beta1 (Adam), as cycled by OneCycle.
    fn set_momentum(&mut self, momentum: f64);

    /// Optimiser state as `{param name}.{field}` tensors (copies), for checkpoints.
    ///
    /// Parameters that never stepped have no entry.
    fn state_tensors(&self) -> Result<HashMap<String, Tensor>>;

    /// Restores [`Optimizer::state_tensors`] output; parameters without entries start fresh.
    /// A key that matches no parameter is an error (a different or renamed model).
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;

    /// Sets the learning rate, and the momentum if the schedule cycles it, for `step`.
    fn apply_schedule(&mut self, schedule: &dyn LrSchedule, step: usize) {
        self.set_lr(schedule.lr(step));
        if let Some(m) = schedule.momentum(step) {
            self.set_momentum(m);
        }
    }
}
