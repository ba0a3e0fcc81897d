//! Parameter gradients of the fused blocks without candle's per-edge bookkeeping.
//!
//! A fused block (see `layers::fused_chain`) takes all its parameters as one flat tensor, the
//! concatenation of its named variables. candle's backward pass allocates a zero tensor and
//! adds into it for every graph edge, so each parameter's gradient crosses three of them
//! (op -> concatenation -> reshape -> variable), three zero-fills and three adds over every
//! weight of the network per step: a quarter of the audio encoder's backward pass.
//!
//! Inside a [`PackedParams`] scope each block's concatenation is instead a fresh variable
//! whose gradient the block's op hands straight to the scope (no edge at all), and
//! [`PackedParams::backward`] gives every named variable a view of it. The gradients are the
//! same values (`0 + g` is `g`); the scope exists because a plain `loss.backward()` would
//! leave the named variables without gradients.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Storage, Tensor, Var};

use crate::layers::bn_fused::slice;
use crate::layers::par_vec::par_concat;

/// Where a fused block inside a scope leaves its flat parameter gradient. The block's op
/// hands it over here instead of returning it to candle, whose backward pass would zero-fill
/// a buffer of the same size and add the gradient into it before anyone could read it.
pub(crate) type GradSlot = Arc<Mutex<Option<Tensor>>>;

/// Empties a slot, returning what it held.
fn take(slot: &GradSlot) -> Option<Tensor> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// One packed block: its flat gradient's slot and where each named variable sits in it.
struct Pack {
    grad: GradSlot,
    members: Vec<(Tensor, usize)>,
}

thread_local! {
    /// Whether fused blocks built on this thread pack their parameters.
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// Blocks packed since the scope started, in order.
    static PACKS: RefCell<Vec<Pack>> = const { RefCell::new(Vec::new()) };
}

/// A scope in which the encoders' fused blocks take their parameters as one variable each;
/// end it with [`PackedParams::backward`] to get gradients for the named variables.
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
                let Some(g) = take(&pack.grad) else {
                    continue;
                };
                for (member, off) in &pack.members {
                    let view = g
                        .narrow(0, *off, member.elem_count())?
                        .reshape(member.shape())?;
                    let sum = match grads.get(member) {
                        Some(prev) => (prev + &view)?,
                        None => view,
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

/// The 1-D concatenation of `parts` (each flattened) that a fused block takes. Inside a scope,
/// when every part is a variable of the same float type on the CPU, it is a new variable (so
/// the block's node stays on the gradient path) recorded for [`PackedParams::backward`], with
/// the slot the block must leave its parameter gradient in. Otherwise it is candle's `cat`,
/// whose backward reaches the parts itself, and no slot.
pub(crate) fn concat(parts: &[Tensor]) -> Result<(Tensor, Option<GradSlot>)> {
    let packable = ACTIVE.with(|a| a.get())
        && parts.first().is_some_and(|p| {
            matches!(p.dtype(), DType::F32 | DType::F64)
                && parts
                    .iter()
                    .all(|t| t.is_variable() && t.dtype() == p.dtype() && t.device().is_cpu())
        });
    if !packable {
        let flat = parts
            .iter()
            .map(|t| t.flatten_all())
            .collect::<Result<Vec<_>>>()?;
        return Ok((Tensor::cat(&flat, 0)?, None));
    }
    let flat = match parts[0].dtype() {
        DType::F64 => gather::<f64>(parts)?,
        _ => gather::<f32>(parts)?,
    };
    let mut members = Vec::with_capacity(parts.len());
    let mut off = 0;
    for p in parts {
        members.push((p.clone(), off));
        off += p.elem_count();
    }
    let grad = GradSlot::default();
    PACKS.with(|k| {
        k.borrow_mut().push(Pack {
            grad: grad.clone(),
            members,
        })
    });
    Ok((flat, Some(grad)))
}

/// Copies the parts' values, in order, into one new 1-D variable (on the rayon pool: the
/// video encoder's deep blocks hold millions of values).
fn gather<T: candle_core::WithDType>(parts: &[Tensor]) -> Result<Tensor> {
    let parts = parts
        .iter()
        .map(|p| p.contiguous())
        .collect::<Result<Vec<_>>>()?;
    let guards: Vec<_> = parts.iter().map(|p| p.storage_and_layout()).collect();
    let mut slices: Vec<&[T]> = Vec::with_capacity(parts.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(cpu) = &**storage else {
            candle_core::bail!("packed parameters: CPU tensors only");
        };
        slices.push(slice::<T>(cpu, layout, "packed parameters")?);
    }
    let data = par_concat(&slices);
    let n = data.len();
    Ok(Var::from_vec(data, n, &candle_core::Device::Cpu)?.into_inner())
}
