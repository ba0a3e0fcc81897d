//! Parameter groups and the split of a `VarMap` into what is optimised and how.

use std::collections::HashSet;

use candle_core::Var;
use candle_nn::VarMap;

use crate::error::{OptimError, Result};

/// Parameters sharing a learning-rate multiplier and a weight decay (PyTorch's param_groups).
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// `(name, variable)` pairs; names key the optimiser state in checkpoints.
    pub vars: Vec<(String, Var)>,
    /// This group's learning rate is `lr * lr_mult` (RepLAI's `backbone_lr_mult`).
    pub lr_mult: f64,
    /// L2 weight decay of this group (coupled for SGD/LARS/Adam, decoupled for AdamW).
    pub weight_decay: f64,
}

impl ParamGroup {
    /// A group with `lr_mult` 1 and the given weight decay.
    pub fn new(vars: Vec<(String, Var)>, weight_decay: f64) -> Self {
        Self {
            vars,
            lr_mult: 1.0,
            weight_decay,
        }
    }

    /// Same group with another learning-rate multiplier.
    pub fn with_lr_mult(mut self, lr_mult: f64) -> Self {
        self.lr_mult = lr_mult;
        self
    }
}

/// `(name, variable)` pairs, the unit the helpers below sort and split.
pub type NamedVars = Vec<(String, Var)>;

/// Names of buffers that live in a `VarMap` but are statistics, not parameters.
const BUFFER_SUFFIXES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// `true` for batch-norm running statistics (`running_mean`, `running_var`,
/// `num_batches_tracked`): candle keeps them in the `VarMap` so they are saved with the model,
/// but an optimiser must never touch them (weight decay would shrink them every step).
pub fn is_running_stat(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    BUFFER_SUFFIXES.contains(&last)
}

/// Every optimisable variable of `varmap`, sorted by name: running statistics and non-float
/// variables are left out.
///
/// RepLAI decays every one of these (biases and BN affine included), so its two groups are
/// built from this list.
pub fn trainable_vars(varmap: &VarMap) -> NamedVars {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut out: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, var)| !is_running_stat(name) && var.dtype().is_float())
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Splits the optimisable variables into `(decay, no_decay)`: tensors of rank >= 2 (conv and
/// linear weights) decay; rank <= 1 (biases, BN/LN affine) do not, the convention of VICReg's
/// LARS and most modern recipes. Running statistics are in neither list. Both sorted by name.
pub fn split_decay(varmap: &VarMap) -> (NamedVars, NamedVars) {
    trainable_vars(varmap)
        .into_iter()
        .partition(|(_, var)| var.rank() >= 2)
}

/// Splits `vars` into those whose name starts with `prefix` and the rest (e.g. RepLAI's `mlp.`
/// heads versus the backbone).
pub fn partition_by_prefix(vars: Vec<(String, Var)>, prefix: &str) -> (NamedVars, NamedVars) {
    vars.into_iter()
        .partition(|(name, _)| name.starts_with(prefix))
}

/// Checks the groups: unique names, no variable listed twice, float dtypes, sane numbers.
pub(crate) fn validate_groups(optimizer: &'static str, groups: &[ParamGroup]) -> Result<()> {
    let mut names = HashSet::new();
    let mut ids = HashSet::new();
    for g in groups {
        if !(g.lr_mult.is_finite() && g.lr_mult >= 0.0) {
            return Err(OptimError::InvalidConfig {
                optimizer,
                what: format!("lr_mult must be finite and >= 0, got {}", g.lr_mult),
            });
        }
        if !(g.weight_decay.is_finite() && g.weight_decay >= 0.0) {
            return Err(OptimError::InvalidConfig {
                optimizer,
                what: format!(
                    "weight_decay must be finite and >= 0, got {}",
                    g.weight_decay
                ),
            });
        }
        for (name, var) in &g.vars {
            if !names.insert(name.clone()) || !ids.insert(var.as_tensor().id()) {
                return Err(OptimError::DuplicateParam {
                    optimizer,
                    name: name.clone(),
                });
            }
            if !var.dtype().is_float() {
                return Err(OptimError::NonFloatParam {
                    optimizer,
                    name: name.clone(),
                    dtype: var.dtype(),
                });
            }
        }
    }
    Ok(())
}

/// Checks a finite, non-negative hyper-parameter.
pub(crate) fn check_hparam(optimizer: &'static str, name: &str, v: f64) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(OptimError::InvalidConfig {
            optimizer,
            what: format!("{name} must be finite and >= 0, got {v}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Init, VarBuilder};

    #[test]
    fn running_stats_are_never_optimised() -> candle_core::Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        vb.get_with_hints((4, 3), "fc.weight", Init::Const(1.0))?;
        vb.get_with_hints(4, "fc.bias", Init::Const(0.0))?;
        vb.get_with_hints(4, "bn.weight", Init::Const(1.0))?;
        vb.get_with_hints(4, "bn.running_mean", Init::Const(0.0))?;
        vb.get_with_hints(4, "bn.running_var", Init::Const(1.0))?;
        vb.get_with_hints((), "bn.num_batches_tracked", Init::Const(0.0))?;
        let names = |v: &[(String, Var)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
        let (decay, no_decay) = split_decay(&vm);
        assert_eq!(names(&decay), ["fc.weight"]);
        assert_eq!(names(&no_decay), ["bn.weight", "fc.bias"]);
        assert_eq!(
            names(&trainable_vars(&vm)),
            ["bn.weight", "fc.bias", "fc.weight"]
        );
        let (heads, rest) = partition_by_prefix(trainable_vars(&vm), "fc.");
        assert_eq!(names(&heads), ["fc.bias", "fc.weight"]);
        assert_eq!(names(&rest), ["bn.weight"]);
        Ok(())
    }

    #[test]
    fn duplicate_names_are_rejected() -> candle_core::Result<()> {
        let a = Var::zeros(3, DType::F32, &Device::Cpu)?;
        let b = Var::zeros(3, DType::F32, &Device::Cpu)?;
        let groups = vec![
            ParamGroup::new(vec![("w".into(), a.clone())], 0.0),
            ParamGroup::new(vec![("w".into(), b)], 0.0),
        ];
        assert!(matches!(
            validate_groups("test", &groups),
            Err(OptimError::DuplicateParam { .. })
        ));
        let same_var = vec![ParamGroup::new(
            vec![("x".into(), a.clone()), ("y".into(), a)],
            0.0,
        )];
        assert!(validate_groups("test", &same_var).is_err());
        Ok(())
    }
}
