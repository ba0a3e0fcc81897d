//! Per-parameter bookkeeping shared by the optimisers: flattened groups, gradient lookup and
//! named state import/export.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::{OptimError, Result};
use crate::params::{validate_groups, ParamGroup};

/// One parameter with its group's settings.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub name: String,
    pub var: Var,
    pub lr_mult: f64,
    pub weight_decay: f64,
}

/// Validates the groups and flattens them in order.
pub(crate) fn flatten(optimizer: &'static str, groups: Vec<ParamGroup>) -> Result<Vec<Slot>> {
    validate_groups(optimizer, &groups)?;
    Ok(groups
        .into_iter()
        .flat_map(|g| {
            let (lr_mult, weight_decay) = (g.lr_mult, g.weight_decay);
            g.vars.into_iter().map(move |(name, var)| Slot {
                name,
                var,
                lr_mult,
                weight_decay,
            })
        })
        .collect())
}

impl Slot {
    /// The detached gradient of this parameter, `None` when it received none (PyTorch skips
    /// such parameters, leaving their state untouched).
    pub fn grad(&self, optimizer: &'static str, grads: &GradStore) -> Result<Option<Tensor>> {
        let Some(g) = grads.get(self.var.as_tensor()) else {
            return Ok(None);
        };
        if g.dims() != self.var.dims() || g.dtype() != self.var.dtype() {
            return Err(OptimError::GradMismatch {
                optimizer,
                name: self.name.clone(),
                expected: self.var.dims().to_vec(),
                got: g.dims().to_vec(),
                dtype: self.var.dtype(),
                got_dtype: g.dtype(),
            });
        }
        Ok(Some(g.detach()))
    }

    /// The current value, detached from any graph.
    pub fn value(&self) -> Tensor {
        self.var.as_detached_tensor()
    }
}

/// Looks up `{name}.{field}` in `state`, checks its shape against `shape` and converts it to the
/// parameter's dtype/device (copying, so the optimiser owns its buffers).
pub(crate) fn take_state(
    optimizer: &'static str,
    state: &HashMap<String, Tensor>,
    slot: &Slot,
    field: &str,
    shape: &[usize],
) -> Result<Option<Tensor>> {
    let key = format!("{}.{field}", slot.name);
    let Some(t) = state.get(&key) else {
        return Ok(None);
    };
    if t.dims() != shape {
        return Err(OptimError::StateShape {
            optimizer,
            name: key,
            expected: shape.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    let t = t
        .to_device(slot.var.device())?
        .to_dtype(if shape.is_empty() {
            t.dtype()
        } else {
            slot.var.dtype()
        })?
        .copy()?;
    Ok(Some(t))
}

/// Rejects state keys that are not `{param}.{field}` for a known parameter and field.
pub(crate) fn check_no_unexpected(
    optimizer: &'static str,
    state: &HashMap<String, Tensor>,
    slots: &[Slot],
    fields: &[&str],
) -> Result<()> {
    let known: std::collections::HashSet<String> = slots
        .iter()
        .flat_map(|s| fields.iter().map(move |f| format!("{}.{f}", s.name)))
        .collect();
    let mut unexpected: Vec<&String> = state.keys().filter(|k| !known.contains(*k)).collect();
    unexpected.sort();
    match unexpected.first() {
        Some(name) => Err(OptimError::UnexpectedState {
            optimizer,
            name: (*name).clone(),
        }),
        None => Ok(()),
    }
}

/// Reads a scalar step counter stored as any numeric dtype.
pub(crate) fn scalar_u64(optimizer: &'static str, key: &str, t: &Tensor) -> Result<u64> {
    let v = t
        .flatten_all()?
        .to_dtype(candle_core::DType::F64)?
        .to_vec1::<f64>()?;
    match v.as_slice() {
        [x] if x.is_finite() && *x >= 0.0 && x.fract() == 0.0 => Ok(*x as u64),
        _ => Err(OptimError::StateShape {
            optimizer,
            name: key.to_string(),
            expected: vec![],
            got: t.dims().to_vec(),
        }),
    }
}
