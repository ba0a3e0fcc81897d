//! Parameter gradients of the fused blocks without candle's per-edge bookkeeping.
//!
//! A fused block (see `layers::fused_chain`) needs all its parameters in one op, and candle ops
//! take at most three tensors. Outside a scope they are one flat tensor, candle's concatenation
//! of the named variables. candle's backward pass allocates a zero tensor and adds into it for
//! every graph edge, so each parameter's gradient then crosses three of them (op ->
//! concatenation -> reshape -> variable), three zero-fills and three adds over every weight of
//! the network per step: a quarter of the audio encoder's backward pass.
//!
//! Inside a [`PackedParams`] scope a block instead reads its named variables in place and takes
//! a one-value token variable as the op's input (so its node stays on the gradient path); its
//! op hands one gradient per named variable straight to the scope (no edge, no copy), and
//! [`PackedParams::backward`] files them under the variables. The gradients are the same
//! values (`0 + g` is `g`); the scope exists because a plain `loss.backward()` would leave the
//! named variables without gradients.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

/// Where a fused block inside a scope leaves its parameter gradients, one per named variable
/// in order. The block's op hands them over here instead of returning them to candle, whose
/// backward pass would zero-fill a buffer of the same size and add the gradient into it
/// before anyone could read it.
pub(crate) type GradSlot = Arc<Mutex<Option<Vec<Tensor>>>>;

/// Empties a slot, returning what it held.
fn take(slot: &GradSlot) -> Option<Vec<Tensor>> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// One packed block: its gradients' slot and its named variables, in the same order.
struct Pack {
    grad: GradSlot,
    members: Vec<Tensor>,
}

thread_local! {
    /// Whether fused blocks built on this thread pack their parameters.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// Blocks packed since the scope started, in order.
    static PACKS: RefCell<Vec<Pack>> = const { RefCell::new(Vec::new()) };
}

/// A scope in which the encoders' fused blocks read their parameters in place and hand their
/// gradients to the scope; end it with [`PackedParams::backward`] to get gradients for the
/// named variables.
///
/// ```
/// use av_models::{AudioCnn, AudioCnnConfig, PackedParams};
/// use candle_core::{DType, Device, ModuleT, Tensor};
/// use candle_nn::{VarBuilder, VarMap};
///
/// let varmap = VarMap::new();
/// let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let net = AudioCnn::new(&AudioCnnConfig::default().with_width(0.125), vb)?;
/// let x = Tensor::randn(0f32, 1.0, (2, 1, 125, 80), &Device::Cpu)?;
/// let scope = PackedParams::start();
/// let loss = net.forward_t(&x, true)?.sqr()?.sum_all()?;
/// let grads = scope.backward(&loss)?;
/// let w = &varmap.data().lock().expect("varmap lock")["block1.conv1.weight"];
/// assert_eq!(grads.get(w).map(|g| g.dims().to_vec()), Some(w.dims().to_vec()));
/// # Ok::<(), candle_core::Error>(())
/// ```
///
/// The blocks read the variables in place, in the forward pass and again in the backward
/// pass: change them only after [`PackedParams::backward`] (as an optimiser step does).
///
/// The scope is per thread (forward passes on other threads are not packed) and ends when the
/// value is dropped; a scope started inside another one leaves the outer scope in charge. The
/// value cannot leave its thread:
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// send(av_models::PackedParams::start());
/// ```
#[must_use = "the scope ends when this value is dropped"]
pub struct PackedParams {
    /// False for a scope started inside another: the outer one ends packing.
    owner: bool,
    /// The scope's state lives in this thread's locals: the value must not move to (or be
    /// shared with) another thread, where `backward` would find no blocks and `drop` would
    /// end the wrong thread's scope.
    _this_thread: PhantomData<*const ()>,
}

impl PackedParams {
    /// Starts packing on this thread.
    pub fn start() -> Self {
        let owner = !ACTIVE.with(|a| a.replace(true));
        Self {
            owner,
            _this_thread: PhantomData,
        }
    }

    /// `loss.backward()`, plus the gradient of every named variable of the blocks packed so
    /// far in this scope (summed over the blocks that used it). Ends the scope, unless it was
    /// started inside another one: packing then goes on until the outer scope ends.
    pub fn backward(self, loss: &Tensor) -> Result<GradStore> {
        // A slot may still hold a gradient from an earlier backward pass inside this scope
        // (through a block not on this loss's path); only this pass's gradients count.
        PACKS.with(|p| p.borrow().iter().for_each(|pack| drop(take(&pack.grad))));
        let mut grads = loss.backward()?;
        // The scope's list itself is cleared when `self` drops, if this scope owns it.
        PACKS.with(|p| -> Result<()> {
            for pack in p.borrow().iter() {
                // Empty when the block was not on the loss's path.
                let Some(gs) = take(&pack.grad) else {
                    continue;
                };
                if gs.len() != pack.members.len() {
                    candle_core::bail!(
                        "packed parameters: {} gradients for {} variables",
                        gs.len(),
                        pack.members.len()
                    );
                }
                for (member, g) in pack.members.iter().zip(gs) {
                    let sum = match grads.get(member) {
                        Some(prev) => (prev + &g)?,
                        None => g,
                    };
                    grads.insert(member, sum);
                }
            }
            Ok(())
        })?;
        Ok(grads)
    }
}

impl Drop for PackedParams {
    fn drop(&mut self) {
        if self.owner {
            ACTIVE.with(|a| a.set(false));
            PACKS.with(|p| p.borrow_mut().clear());
        }
    }
}

/// The parameters a fused block takes: `parts`, its named variables in order.
pub(crate) enum BlockParams {
    /// The 1-D concatenation of the parts (each flattened), candle's `cat`, whose backward
    /// reaches the parts itself.
    Flat(Tensor),
    /// Inside a scope, when every part is a contiguous variable of the same float type on the
    /// CPU: the block reads the parts in place, takes `token` (a fresh one-value variable of
    /// their type) as its op's input, and leaves one gradient per part in `slot`, recorded
    /// for [`PackedParams::backward`].
    InPlace {
        parts: Vec<Tensor>,
        token: Tensor,
        slot: GradSlot,
    },
}

/// The [`BlockParams`] of a block whose named variables are `parts`.
pub(crate) fn block_params(parts: &[Tensor]) -> Result<BlockParams> {
    let in_place = ACTIVE.with(|a| a.get())
        && parts.first().is_some_and(|p| {
            matches!(p.dtype(), DType::F32 | DType::F64)
                && parts.iter().all(|t| {
                    t.is_variable()
                        && t.is_contiguous()
                        && t.dtype() == p.dtype()
                        && t.device().is_cpu()
                })
        });
    if !in_place {
        let flat = parts
            .iter()
            .map(|t| t.flatten_all())
            .collect::<Result<Vec<_>>>()?;
        return Ok(BlockParams::Flat(Tensor::cat(&flat, 0)?));
    }
    let token = Var::zeros(1, parts[0].dtype(), parts[0].device())?.into_inner();
    let slot = GradSlot::default();
    PACKS.with(|k| {
        k.borrow_mut().push(Pack {
            grad: slot.clone(),
            members: parts.to_vec(),
        })
    });
    Ok(BlockParams::InPlace {
        parts: parts.to_vec(),
        token,
        slot,
    })
}
