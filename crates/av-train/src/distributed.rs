//! The seam for multi-process data parallelism. Training code calls these two operations at the
//! points where the reference synchronises ranks (gradient averaging after backward, gathering
//! embeddings for in-batch negatives); only the single-process implementation exists so far.

use candle_core::{Tensor, Var};

/// Collective operations a data-parallel backend must provide.
pub trait Distributed: Send + Sync {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn world_size(&self) -> usize;
    /// Averages each gradient over ranks in place; `grads` pairs variables with their gradients.
    fn all_reduce_mean(&self, grads: &mut [(Var, Tensor)]) -> candle_core::Result<()>;
    /// Concatenates `t` along dim 0 over ranks (rank order). Gathered copies of other ranks carry
    /// no gradient, as in the reference's `concat_all_gather` (G4).
    fn all_gather(&self, t: &Tensor) -> candle_core::Result<Tensor>;
}

/// One process: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Distributed for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_mean(&self, _grads: &mut [(Var, Tensor)]) -> candle_core::Result<()> {
        Ok(())
    }
    fn all_gather(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        Ok(t.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_process_is_identity() {
        let d = SingleProcess;
        let t = Tensor::arange(0f32, 6., &candle_core::Device::Cpu)
            .and_then(|t| t.reshape((3, 2)))
            .expect("tensor");
        let g = d.all_gather(&t).expect("gather");
        assert_eq!(
            g.to_vec2::<f32>().expect("v"),
            t.to_vec2::<f32>().expect("v")
        );
        assert_eq!((d.rank(), d.world_size()), (0, 1));
    }
}
