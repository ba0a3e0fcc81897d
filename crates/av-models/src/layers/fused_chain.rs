//! A chain of conv -> BatchNorm -> ReLU units (with an optional residual) as one autograd node.
//!
//! candle's backward pass allocates a zero tensor and adds into it for every edge of the graph,
//! and its ReLU backward alone makes six passes over the activation. For a ResNet block built
//! from separate ops that bookkeeping cost more than the convolutions' arithmetic. This op runs a
//! whole block (AVID's R(2+1)D block, the audio CNN's 2-D block, a stem) forward, keeps the
//! activations the backward pass needs, and computes every gradient by hand: one graph node
//! per block. The arithmetic is that of the separate layers (tested against them and against
//! PyTorch through the encoders' fixture tests).
//!
//! A custom op takes at most three tensors, so the parameters (each unit's conv weight, BN
//! weight, BN bias, then the residual conv's weight) travel as one flat tensor, the op's
//! second input, whose gradient holds all of theirs. Inside a `PackedParams` scope the op
//! reads them in place instead and takes a one-value token variable as that input (see
//! `packed_params`).

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::bn_fused::slice;
use super::conv_cm::{self, CmGeometry, ConvElem, PatchCopy, Sizes};
use super::par_vec::{par_concat, par_init, par_init_map};
use super::simd::dispatch;
use crate::packed_params::{BlockParams, GradSlot};

/// Name of the op in errors.
const OP: &str = "fused block";
use super::max_pool_op::{unpool_planes, Pool3, PoolElem};
use super::{BatchNorm, Conv3d, MaxPool};

/// One conv (no bias) -> BatchNorm -> optional ReLU unit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UnitSpec {
    /// Input channels.
    pub in_c: usize,
    /// Output channels.
    pub out_c: usize,
    /// Convolution geometry.
    pub geom: CmGeometry,
    /// Apply ReLU after the BatchNorm.
    pub relu: bool,
}

/// What is added to the last unit's convolution output, before its BatchNorm.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Residual {
    /// Nothing (a plain chain).
    None,
    /// The chain's input itself (same shape as the last conv output).
    Identity,
    /// A bias-free convolution of the chain's input into the last unit's channels.
    Conv(CmGeometry),
}

/// BatchNorm statistics mode for the whole chain.
#[derive(Debug, Clone)]
pub(crate) enum BnMode {
    /// Batch statistics (training); the batch mean and biased variance of each unit are
    /// reported back through [`FusedChain::batch_stats`].
    Train,
    /// Running statistics (mean, variance) per unit.
    Eval(Vec<(Vec<f64>, Vec<f64>)>),
}

/// Per-channel (mean, biased variance) of one BatchNorm.
type MeanVar = (Vec<f64>, Vec<f64>);

/// Per unit batch statistics, shared between the op and its caller.
type BatchStats = Arc<Mutex<Vec<MeanVar>>>;

/// Activations of one forward pass that the backward pass reads.
struct Saved<T> {
    /// Per unit: conv output (plus residual for the last unit), and BN+ReLU output for all
    /// units but the last (whose output is the op's result and is not read again). Unit i's
    /// conv input is the chain input for i = 0, else `act[i - 1]`; the ReLU masks are
    /// recomputed from the conv outputs.
    conv_out: Vec<Vec<T>>,
    act: Vec<Vec<T>>,
    /// Per unit: mean and 1/sqrt(var + eps) used to normalise.
    mean: Vec<Vec<f64>>,
    invstd: Vec<Vec<f64>>,
    /// Conv sizes per unit, then the residual conv's.
    sizes: Vec<Sizes>,
    res_sizes: Option<Sizes>,
    /// Per unit, then for the residual conv: the input copy a strided spatial convolution
    /// packed its patches from, which its weight gradient packs from again.
    copies: Vec<PatchCopy<T>>,
    res_copy: PatchCopy<T>,
    /// With a trailing max pool: each pooled value's argmax (the un-pooled output itself is
    /// not kept: the backward pass reads only the conv outputs).
    pool_arg: Option<Vec<u32>>,
}

enum SavedAny {
    F32(Saved<f32>),
    F64(Saved<f64>),
}

/// The custom op: (x (C, B, T, H, W), flat params or a token) -> y (O, B, T', H', W').
pub(crate) struct FusedChain {
    units: Vec<UnitSpec>,
    residual: Residual,
    mode: BnMode,
    eps: f64,
    /// Keep activations for a backward pass (only when some input tracks gradients).
    keep: bool,
    /// A max pool over (T, H, W) applied to the last unit's output (the R(2+1)D stem's), and
    /// its pooled (T', H', W'); pooling inside the op spares the graph an edge the size of the
    /// largest activation of the network.
    pool: Option<(Pool3, [usize; 3])>,
    /// Whether the input needs a gradient (false for a network's first layer).
    need_dx: bool,
    saved: Mutex<Option<SavedAny>>,
    /// Per unit batch (mean, biased var), written by a training forward pass.
    stats: BatchStats,
    /// Inside a `PackedParams` scope: the named parameter variables, read in place (the op's
    /// second input is then a token), and where their gradients go instead of back to candle.
    in_place: Option<(Vec<Tensor>, GradSlot)>,
}

impl FusedChain {
    /// Number of parameters the flat tensor must hold.
    pub(crate) fn param_len(units: &[UnitSpec], residual: Residual) -> usize {
        let unit: usize = units
            .iter()
            .map(|u| u.out_c * u.in_c * u.geom.kernel.iter().product::<usize>() + 2 * u.out_c)
            .sum();
        let res = match (residual, units.first(), units.last()) {
            (Residual::Conv(g), Some(first), Some(last)) => {
                last.out_c * first.in_c * g.kernel.iter().product::<usize>()
            }
            _ => 0,
        };
        unit + res
    }
}

/// The block's parameters as one slice per named tensor, checked against the layer sizes:
/// (weight, gamma, beta) per unit, then the shortcut's weight (`Parts`, as read in place), or
/// the same cut from their flat concatenation (`Flat`).
enum ParamSrc<'a, T> {
    Flat(&'a [T]),
    Parts(Vec<&'a [T]>),
}

impl<'a, T> ParamSrc<'a, T> {
    /// Slice i is part i (see above), or an error naming the size that does not match.
    fn split(
        self,
        units: &[UnitSpec],
        sizes: &[Sizes],
        res: Option<&Sizes>,
    ) -> Result<Vec<&'a [T]>> {
        let mut lens = Vec::with_capacity(3 * units.len() + 1);
        for (u, s) in units.iter().zip(sizes) {
            lens.extend([s.weight_len(), u.out_c, u.out_c]);
        }
        if let Some(rs) = res {
            lens.push(rs.weight_len());
        }
        let total: usize = lens.iter().sum();
        match self {
            ParamSrc::Flat(mut p) => {
                if p.len() != total {
                    return Err(candle_core::Error::Msg(format!(
                        "fused block: {} parameters given, {total} expected",
                        p.len()
                    )));
                }
                Ok(lens
                    .iter()
                    .map(|&n| {
                        let (a, b) = p.split_at(n);
                        p = b;
                        a
                    })
                    .collect())
            }
            ParamSrc::Parts(parts) => {
                let got: Vec<usize> = parts.iter().map(|p| p.len()).collect();
                if got != lens {
                    return Err(candle_core::Error::Msg(format!(
                        "fused block: parameter sizes {got:?}, expected {lens:?}"
                    )));
                }
                Ok(parts)
            }
        }
    }
}

/// Per-channel mean and biased variance of a channel-major (C, L) buffer, in f64.
fn channel_stats<T: ChainElem>(x: &[T], c: usize) -> (Vec<f64>, Vec<f64>) {
    let l = x.len() / c;
    let per: Vec<(f64, f64)> = x
        .par_chunks(l)
        .map(|row| {
            // Sums around a first estimate of the mean (the row's first value), then the
            // exact mean and variance from the shifted moments: accurate without two passes.
            let shift = row.first().map_or(0.0, |v| v.to_f64());
            let (s, s2) = T::sums(row, shift);
            let n = l as f64;
            let d = s / n;
            (shift + d, (s2 / n - d * d).max(0.0))
        })
        .collect();
    per.into_iter().unzip()
}

/// y = [relu]((x - mean) * invstd * gamma + beta), channel-major (C, L).
fn bn_act<T: ChainElem>(
    x: &[T],
    gamma: &[T],
    beta: &[T],
    mean: &[f64],
    invstd: &[f64],
    relu: bool,
) -> Vec<T> {
    let c = gamma.len();
    let l = x.len() / c;
    // SAFETY: `affine` writes every element of its piece (one channel's row).
    unsafe {
        par_init(x.len(), l, |ch, dst| {
            let scale = invstd[ch] * gamma[ch].to_f64();
            let src = &x[ch * l..(ch + 1) * l];
            T::affine(src, dst, mean[ch], scale, beta[ch].to_f64(), relu);
        })
    }
}

/// Backward of [`bn_act`]: (dx, dgamma, dbeta). In train mode the statistics depend on x.
///
/// The ReLU mask is recomputed from `x` with the forward's own arithmetic (the same values
/// cast to `T`, the same operations in the same order), so it is the forward's `y > 0`
/// exactly, without reading `y`: one stream fewer in both passes over the activation.
#[allow(clippy::too_many_arguments)]
fn bn_act_backward<T: ChainElem>(
    dy: &[T],
    x: &[T],
    gamma: &[T],
    beta: &[T],
    mean: &[f64],
    invstd: &[f64],
    relu: bool,
    train: bool,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let c = gamma.len();
    let l = x.len() / c;
    // SAFETY: `bn_grad` writes every element of its piece (one channel's row).
    let (dx, sums): (Vec<T>, Vec<(f64, f64)>) = unsafe {
        par_init_map(x.len(), l, |ch, dst| {
            let r = ch * l..(ch + 1) * l;
            let (g, xs) = (&dy[r.clone()], &x[r]);
            let (m, inv) = (mean[ch], invstd[ch]);
            // The affine of `bn_act`, whose result's sign is the ReLU mask.
            let mask = relu.then(|| [inv * gamma[ch].to_f64(), beta[ch].to_f64()]);
            // Σ g and Σ g * xhat, with g = dy masked by the ReLU.
            let (s_g, s_gx) = T::masked_sums(g, xs, m, mask);
            let s_gx = s_gx * inv;
            let k = gamma[ch].to_f64() * inv;
            if train {
                let (a, b) = (s_g / l as f64, s_gx / l as f64 * inv);
                // dx = k * (g - a - (x - m) * inv * s_gx / L)
                T::bn_grad(g, xs, dst, k, a, b, m, mask);
            } else {
                T::bn_grad(g, xs, dst, k, 0.0, 0.0, m, mask);
            }
            (s_gx, s_g)
        })
    };
    let dgamma = sums.iter().map(|s| T::from_f64(s.0)).collect();
    let dbeta = sums.iter().map(|s| T::from_f64(s.1)).collect();
    (dx, dgamma, dbeta)
}

impl FusedChain {
    fn forward<T: ChainElem>(
        &self,
        x: &[T],
        dims: [usize; 5],
        p: ParamSrc<'_, T>,
    ) -> Result<(Vec<T>, Shape)> {
        let mut sizes = Vec::with_capacity(self.units.len());
        let mut d = dims;
        for u in &self.units {
            let s = Sizes::new(d, u.out_c, u.geom).ok_or_else(|| too_small(d, u.geom))?;
            d = s.out_dims();
            sizes.push(s);
        }
        let res_sizes = match self.residual {
            Residual::Conv(g) => Some(Sizes::new(dims, d[0], g).ok_or_else(|| too_small(dims, g))?),
            _ => None,
        };
        let p = p.split(&self.units, &sizes, res_sizes.as_ref())?;
        let n_units = self.units.len();
        let mut conv_out = Vec::with_capacity(n_units);
        let mut act: Vec<Vec<T>> = Vec::with_capacity(n_units);
        let mut means = Vec::with_capacity(n_units);
        let mut invstds = Vec::with_capacity(n_units);
        let mut copies = Vec::with_capacity(n_units);
        let mut res_copy = None;
        let mut batch = Vec::with_capacity(n_units);
        for (i, (u, s)) in self.units.iter().zip(&sizes).enumerate() {
            let input = if i == 0 { x } else { &act[i - 1] };
            let (mut a, copy) = conv_cm::forward_keeping(input, p[3 * i], s);
            copies.push(copy.filter(|_| self.keep));
            if i + 1 == n_units {
                match (self.residual, res_sizes) {
                    (Residual::Identity, _) => {
                        if x.len() != a.len() {
                            return Err(candle_core::Error::Msg(format!(
                                "fused block: identity shortcut of {dims:?} does not match the \
                                 block output {:?}",
                                s.out_dims()
                            )));
                        }
                        a.par_iter_mut()
                            .zip(x.par_iter())
                            .for_each(|(v, r)| *v += *r);
                    }
                    (Residual::Conv(_), Some(rs)) => {
                        if rs.out_dims() != s.out_dims() {
                            return Err(candle_core::Error::Msg(format!(
                                "fused block: shortcut output {:?} does not match the block \
                                 output {:?}",
                                rs.out_dims(),
                                s.out_dims()
                            )));
                        }
                        let (r, copy) = conv_cm::forward_keeping(x, p[3 * n_units], &rs);
                        res_copy = copy.filter(|_| self.keep);
                        a.par_iter_mut()
                            .zip(r.par_iter())
                            .for_each(|(v, r)| *v += *r);
                    }
                    _ => {}
                }
            }
            let (mean, var) = match &self.mode {
                BnMode::Train => {
                    let (m, v) = channel_stats(&a, u.out_c);
                    batch.push((m.clone(), v.clone()));
                    (m, v)
                }
                BnMode::Eval(st) => st[i].clone(),
            };
            let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect();
            let y = bn_act(&a, p[3 * i + 1], p[3 * i + 2], &mean, &invstd, u.relu);
            conv_out.push(a);
            act.push(y);
            means.push(mean);
            invstds.push(invstd);
        }
        if let BnMode::Train = self.mode {
            *lock(&self.stats) = batch;
        }
        // The block output is the op's result (the backward pass does not read it).
        let out = act.pop().unwrap_or_default();
        let (out, shape, pool_arg) = match self.pool {
            Some((g, o3)) => {
                let (y, arg) = T::pool_planes(&out, [d[0] * d[1], d[2], d[3], d[4]], g, o3);
                let shape = [d[0], d[1], o3[0], o3[1], o3[2]];
                (y, shape, Some(arg))
            }
            None => (out, d, None),
        };
        if self.keep {
            let saved = Saved {
                conv_out,
                act,
                mean: means,
                invstd: invstds,
                sizes,
                res_sizes,
                copies,
                res_copy,
                pool_arg,
            };
            *lock(&self.saved) = Some(T::wrap(saved));
        }
        Ok((out, Shape::from(shape.to_vec())))
    }

    /// (dx, one gradient per parameter part, in the parts' order).
    fn backward<T: ChainElem>(
        &self,
        x: &[T],
        p: ParamSrc<'_, T>,
        dy: &[T],
        saved: &Saved<T>,
    ) -> Result<(Vec<T>, Vec<Vec<T>>)> {
        let p = p.split(&self.units, &saved.sizes, saved.res_sizes.as_ref())?;
        let train = matches!(self.mode, BnMode::Train);
        // Per unit (dW, dgamma, dbeta), then the shortcut's dW, in the parameters' order.
        let mut unit_grads: Vec<[Vec<T>; 3]> = Vec::with_capacity(self.units.len());
        let mut res_dw: Option<Vec<T>> = None;
        // The incoming gradient is read in place; each unit's input gradient replaces it. With
        // a pool it is first routed back to the un-pooled output's maxima.
        let mut g: std::borrow::Cow<'_, [T]> = match (&saved.pool_arg, self.pool) {
            (Some(arg), Some((_, o3))) => {
                let d = saved.sizes.last().map(|s| s.out_dims()).unwrap_or_default();
                let dims = [d[0] * d[1], d[2], d[3], d[4]];
                std::borrow::Cow::Owned(unpool_planes(dy, arg, dims, o3))
            }
            _ => std::borrow::Cow::Borrowed(dy),
        };
        let mut dx_res: Option<Vec<T>> = None;
        for i in (0..self.units.len()).rev() {
            let u = &self.units[i];
            let (da, dgamma, dbeta) = bn_act_backward(
                &g,
                &saved.conv_out[i],
                p[3 * i + 1],
                p[3 * i + 2],
                &saved.mean[i],
                &saved.invstd[i],
                u.relu,
                train,
            );
            // A conv shortcut's gradients (an identity shortcut's is `da` itself, moved below).
            if let (true, Residual::Conv(_), Some(rs)) =
                (i + 1 == self.units.len(), self.residual, saved.res_sizes)
            {
                let w = p[3 * self.units.len()];
                let kept = saved.res_copy.as_ref();
                let (dxr, dw) = conv_cm::backward_from(x, kept, w, &da, &rs, self.need_dx);
                res_dw = Some(dw);
                if self.need_dx {
                    dx_res = Some(dxr);
                }
            }
            let input = if i == 0 { x } else { &saved.act[i - 1] };
            let need = i > 0 || self.need_dx;
            let kept = saved.copies[i].as_ref();
            let (dinput, dw) =
                conv_cm::backward_from(input, kept, p[3 * i], &da, &saved.sizes[i], need);
            debug_assert_eq!(dw.len(), p[3 * i].len());
            unit_grads.push([dw, dgamma, dbeta]);
            let identity = matches!(self.residual, Residual::Identity);
            if i + 1 == self.units.len() && identity && self.need_dx {
                dx_res = Some(da);
            }
            g = std::borrow::Cow::Owned(dinput);
        }
        let mut dp: Vec<Vec<T>> = unit_grads.into_iter().rev().flatten().collect();
        dp.extend(res_dw);
        let mut g = g.into_owned();
        if let Some(r) = dx_res {
            g.par_iter_mut()
                .zip(r.par_iter())
                .for_each(|(v, r)| *v += *r);
        }
        Ok((g, dp))
    }
}

impl FusedChain {
    /// (dx if needed, the parameter gradients: flat like `p`, or one per part when the parts
    /// are read in place) from the (x, params or token, grad) storages of element type T.
    fn grads<T: ChainElem>(
        &self,
        [(xc, xl), (pc, pl), (gc, gl)]: [(&CpuStorage, &Layout); 3],
        saved: &Saved<T>,
        x: &Tensor,
        p: &Tensor,
    ) -> Result<(Option<Tensor>, ParamGrads)> {
        let (dx, dp) = match &self.in_place {
            Some((parts, _)) => {
                let guards = read_parts(parts)?;
                let src = ParamSrc::Parts(part_slices(&guards)?);
                self.backward::<T>(slice(xc, xl, OP)?, src, slice(gc, gl, OP)?, saved)?
            }
            None => {
                let src = ParamSrc::Flat(slice(pc, pl, OP)?);
                self.backward::<T>(slice(xc, xl, OP)?, src, slice(gc, gl, OP)?, saved)?
            }
        };
        let dp = match &self.in_place {
            Some((parts, _)) => ParamGrads::Parts(
                dp.into_iter()
                    .zip(parts)
                    .map(|(g, part)| Tensor::from_vec(g, part.shape(), part.device()))
                    .collect::<Result<Vec<_>>>()?,
            ),
            None => {
                let pieces: Vec<&[T]> = dp.iter().map(|v| &v[..]).collect();
                ParamGrads::Flat(Tensor::from_vec(
                    par_concat(&pieces),
                    p.shape(),
                    p.device(),
                )?)
            }
        };
        Ok((self.grad_tensor(dx, x)?, dp))
    }

    /// The input gradient as a tensor shaped like `x`, when one was computed.
    fn grad_tensor<T: candle_core::WithDType>(
        &self,
        dx: Vec<T>,
        x: &Tensor,
    ) -> Result<Option<Tensor>> {
        if !self.need_dx {
            return Ok(None);
        }
        Tensor::from_vec(dx, x.shape(), x.device()).map(Some)
    }
}

/// A block's parameter gradients: one flat tensor (back to candle), or one per named
/// variable (to the `PackedParams` scope).
enum ParamGrads {
    Flat(Tensor),
    Parts(Vec<Tensor>),
}

/// Read locks on the storages of parameters read in place, held while the op reads them.
#[allow(clippy::type_complexity)]
fn read_parts(
    parts: &[Tensor],
) -> Result<Vec<(impl std::ops::Deref<Target = Storage> + '_, &Layout)>> {
    Ok(parts.iter().map(|t| t.storage_and_layout()).collect())
}

/// The values of parameters read in place (contiguous CPU variables of type T).
fn part_slices<'a, T: candle_core::WithDType, G: std::ops::Deref<Target = Storage>>(
    guards: &'a [(G, &Layout)],
) -> Result<Vec<&'a [T]>> {
    guards
        .iter()
        .map(|(storage, layout)| match &**storage {
            Storage::Cpu(c) => slice::<T>(c, layout, OP),
            _ => Err(candle_core::Error::Msg(
                "fused block: CPU parameters only".into(),
            )),
        })
        .collect()
}

fn too_small(d: [usize; 5], g: CmGeometry) -> candle_core::Error {
    candle_core::Error::Msg(format!("fused block: input {d:?} is too small for {g:?}"))
}

fn lock<V>(m: &Mutex<V>) -> std::sync::MutexGuard<'_, V> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Element-type specific pieces: vectorisable f32 loops, and wrapping of saved activations.
trait ChainElem: ConvElem + PoolElem {
    /// dst = [relu]((src - mean) * scale + shift), writing every element of `dst`.
    fn affine(
        src: &[Self],
        dst: &mut [MaybeUninit<Self>],
        mean: f64,
        scale: f64,
        shift: f64,
        relu: bool,
    );
    /// dst = k * (g' - a - (x - m) * b), writing every element of `dst`. With a `mask`
    /// [scale, shift], g' is g where `(x - m) * scale + shift > 0` (in `Self` arithmetic, as
    /// [`ChainElem::affine`] computes it) and 0 elsewhere; without one, g' = g.
    #[allow(clippy::too_many_arguments)]
    fn bn_grad(
        g: &[Self],
        x: &[Self],
        dst: &mut [MaybeUninit<Self>],
        k: f64,
        a: f64,
        b: f64,
        m: f64,
        mask: Option<[f64; 2]>,
    );
    /// (Σ g', Σ g' (x - m)) with g' as in [`ChainElem::bn_grad`], accumulated in f64.
    fn masked_sums(g: &[Self], x: &[Self], m: f64, mask: Option<[f64; 2]>) -> (f64, f64);
    /// (Σ x, Σ (x - m)^2), accumulated in f64.
    fn sums(x: &[Self], m: f64) -> (f64, f64);
    /// Stores saved activations of this type.
    fn wrap(s: Saved<Self>) -> SavedAny;
}

/// The element loops, written once per type; f32 runs them through [`dispatch`] so they are
/// vectorised for the CPU at hand.
macro_rules! chain_kernels {
    ($t:ty, $m:ident) => {
        mod $m {
            use std::mem::MaybeUninit;

            /// Lane-wise partial sums over short blocks (vectorisable), carried in f64.
            const LANES: usize = 16;
            const BLOCK: usize = 1024;

            #[inline(always)]
            pub(super) fn affine(
                src: &[$t],
                dst: &mut [MaybeUninit<$t>],
                mean: f64,
                scale: f64,
                shift: f64,
                relu: bool,
            ) {
                let (m, scale, shift) = (mean as $t, scale as $t, shift as $t);
                if relu {
                    for (d, s) in dst.iter_mut().zip(src) {
                        d.write(((*s - m) * scale + shift).max(0.0));
                    }
                } else {
                    for (d, s) in dst.iter_mut().zip(src) {
                        d.write((*s - m) * scale + shift);
                    }
                }
            }

            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            pub(super) fn bn_grad(
                g: &[$t],
                x: &[$t],
                dst: &mut [MaybeUninit<$t>],
                k: f64,
                a: f64,
                b: f64,
                m: f64,
                mask: Option<[f64; 2]>,
            ) {
                // k * (g - a - (x - m) b) = k g - k a - (k b) (x - m)
                let (kk, ka, kb, mm) = (k as $t, (k * a) as $t, (k * b) as $t, m as $t);
                if let Some([scale, shift]) = mask {
                    let (sc, sh) = (scale as $t, shift as $t);
                    for ((d, gv), xv) in dst.iter_mut().zip(g).zip(x) {
                        let gv = if (*xv - mm) * sc + sh > 0.0 { *gv } else { 0.0 };
                        d.write(kk * gv - ka - kb * (*xv - mm));
                    }
                } else {
                    for ((d, gv), xv) in dst.iter_mut().zip(g).zip(x) {
                        d.write(kk * *gv - ka - kb * (*xv - mm));
                    }
                }
            }

            #[inline(always)]
            pub(super) fn masked_sums(
                g: &[$t],
                x: &[$t],
                m: f64,
                mask: Option<[f64; 2]>,
            ) -> (f64, f64) {
                match mask {
                    Some([scale, shift]) => {
                        masked_sums_impl::<true>(g, x, m, scale as $t, shift as $t)
                    }
                    None => masked_sums_impl::<false>(g, x, m, 0.0, 0.0),
                }
            }

            #[inline(always)]
            fn masked_sums_impl<const RELU: bool>(
                g: &[$t],
                x: &[$t],
                m: f64,
                sc: $t,
                sh: $t,
            ) -> (f64, f64) {
                let mm = m as $t;
                let n = g.len().min(x.len());
                let (mut s_g, mut s_gx) = (0.0f64, 0.0f64);
                let mut start = 0;
                while start < n {
                    let end = (start + BLOCK).min(n);
                    let mut a = [0.0 as $t; LANES];
                    let mut b = [0.0 as $t; LANES];
                    let mut i = start;
                    while i + LANES <= end {
                        let gc: &[$t; LANES] = g[i..i + LANES].try_into().expect("lane block");
                        let xc: &[$t; LANES] = x[i..i + LANES].try_into().expect("lane block");
                        for l in 0..LANES {
                            let keep = !RELU || (xc[l] - mm) * sc + sh > 0.0;
                            let gv = if keep { gc[l] } else { 0.0 };
                            a[l] += gv;
                            b[l] += gv * (xc[l] - mm);
                        }
                        i += LANES;
                    }
                    for i in i..end {
                        let keep = !RELU || (x[i] - mm) * sc + sh > 0.0;
                        let gv = if keep { g[i] } else { 0.0 };
                        a[0] += gv;
                        b[0] += gv * (x[i] - mm);
                    }
                    s_g += a.iter().map(|&v| v as f64).sum::<f64>();
                    s_gx += b.iter().map(|&v| v as f64).sum::<f64>();
                    start = end;
                }
                (s_g, s_gx)
            }

            #[inline(always)]
            pub(super) fn sums(x: &[$t], m: f64) -> (f64, f64) {
                let mm = m as $t;
                let (mut s, mut s2) = (0.0f64, 0.0f64);
                for xb in x.chunks(BLOCK) {
                    let mut a = [0.0 as $t; LANES];
                    let mut b = [0.0 as $t; LANES];
                    let full = xb.len() / LANES * LANES;
                    for xc in xb[..full].chunks_exact(LANES) {
                        for l in 0..LANES {
                            let d = xc[l] - mm;
                            a[l] += d;
                            b[l] += d * d;
                        }
                    }
                    for v in &xb[full..] {
                        let d = *v - mm;
                        a[0] += d;
                        b[0] += d * d;
                    }
                    s += a.iter().map(|&v| v as f64).sum::<f64>();
                    s2 += b.iter().map(|&v| v as f64).sum::<f64>();
                }
                // Σ (x - m) and Σ (x - m)^2 around the shift m.
                (s, s2)
            }
        }
    };
}
chain_kernels!(f32, k32);
chain_kernels!(f64, k64);

dispatch! {
    fn affine_f32(src: &[f32], dst: &mut [MaybeUninit<f32>], mean: f64, scale: f64, shift: f64, relu: bool) -> () => k32::affine
}
dispatch! {
    fn bn_grad_f32(
        g: &[f32], x: &[f32], dst: &mut [MaybeUninit<f32>], k: f64, a: f64, b: f64, m: f64, mask: Option<[f64; 2]>,
    ) -> () => k32::bn_grad
}
/// [`ChainElem::masked_sums`] for f32: explicit AVX-512 where available (LLVM leaves the
/// masked reduction scalar), the portable loop otherwise.
fn masked_sums_f32(g: &[f32], x: &[f32], m: f64, mask: Option<[f64; 2]>) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx512() {
        // SAFETY: AVX-512 F/DQ were detected at run time.
        return unsafe { masked_sums_avx512(g, x, m, mask) };
    }
    k32::masked_sums(g, x, m, mask)
}

/// 16 lanes at a time, partial sums in f32 over blocks of 1024 values, carried in f64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn masked_sums_avx512(g: &[f32], x: &[f32], m: f64, mask: Option<[f64; 2]>) -> (f64, f64) {
    use std::arch::x86_64::*;
    let n = g.len().min(x.len());
    let mm = _mm512_set1_ps(m as f32);
    let zero = _mm512_setzero_ps();
    let [scale, shift] = mask.unwrap_or_default();
    let (sc, sh) = (_mm512_set1_ps(scale as f32), _mm512_set1_ps(shift as f32));
    let (mut s_g, mut s_gx) = (0.0f64, 0.0f64);
    let mut i = 0;
    while i + 16 <= n {
        let end = (i + 1024).min(n / 16 * 16);
        let (mut a, mut b) = (zero, zero);
        while i < end {
            // SAFETY: i + 16 <= n, so the 16 lanes read are inside both slices.
            let (gv, xv) = unsafe {
                (
                    _mm512_loadu_ps(g.as_ptr().add(i)),
                    _mm512_loadu_ps(x.as_ptr().add(i)),
                )
            };
            let xm = _mm512_sub_ps(xv, mm);
            let gv = if mask.is_some() {
                // (x - m) * scale + shift, multiplied and added separately as in `affine`.
                let pre = _mm512_add_ps(_mm512_mul_ps(xm, sc), sh);
                let keep = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(pre, zero);
                _mm512_maskz_mov_ps(keep, gv)
            } else {
                gv
            };
            a = _mm512_add_ps(a, gv);
            b = _mm512_fmadd_ps(gv, xm, b);
            i += 16;
        }
        s_g += _mm512_reduce_add_ps(a) as f64;
        s_gx += _mm512_reduce_add_ps(b) as f64;
    }
    let (t_g, t_gx) = k32::masked_sums(&g[i..n], &x[i..n], m, mask);
    (s_g + t_g, s_gx + t_gx)
}
/// [`ChainElem::sums`] for f32: explicit AVX-512 where available (LLVM leaves the portable
/// loop's two lane-wise accumulators scalar), the portable loop (AVX2 build where the CPU has
/// it) otherwise. All give the same bits: per-lane f32 sums over the same blocks, added up
/// lane by lane in f64.
fn sums_f32(x: &[f32], m: f64) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx512() {
        // SAFETY: AVX-512 F/DQ were detected at run time.
        return unsafe { sums_avx512(x, m) };
    }
    sums_portable_f32(x, m)
}

dispatch! {
    fn sums_portable_f32(x: &[f32], m: f64) -> (f64, f64) => k32::sums
}

/// `k32::sums` with the 16 lanes in one register per sum: the same operations on the same
/// lanes (a subtraction, then an add and a separate multiply-add pair per value).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq")]
fn sums_avx512(x: &[f32], m: f64) -> (f64, f64) {
    use std::arch::x86_64::*;
    const LANES: usize = 16;
    const BLOCK: usize = 1024;
    let mm = m as f32;
    let mmv = _mm512_set1_ps(mm);
    let (mut s, mut s2) = (0.0f64, 0.0f64);
    for xb in x.chunks(BLOCK) {
        let (mut a, mut b) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let full = xb.len() / LANES * LANES;
        for xc in xb[..full].chunks_exact(LANES) {
            // SAFETY: the chunk holds exactly 16 values.
            let d = _mm512_sub_ps(unsafe { _mm512_loadu_ps(xc.as_ptr()) }, mmv);
            a = _mm512_add_ps(a, d);
            b = _mm512_add_ps(b, _mm512_mul_ps(d, d));
        }
        let (mut la, mut lb) = ([0.0f32; LANES], [0.0f32; LANES]);
        // SAFETY: each array holds 16 floats.
        unsafe {
            _mm512_storeu_ps(la.as_mut_ptr(), a);
            _mm512_storeu_ps(lb.as_mut_ptr(), b);
        }
        for v in &xb[full..] {
            let d = *v - mm;
            la[0] += d;
            lb[0] += d * d;
        }
        s += la.iter().map(|&v| v as f64).sum::<f64>();
        s2 += lb.iter().map(|&v| v as f64).sum::<f64>();
    }
    (s, s2)
}

/// Implements [`ChainElem`] for one type from its element loops.
macro_rules! impl_chain_elem {
    ($t:ty, $variant:ident, $affine:path, $bn_grad:path, $masked_sums:path, $sums:path) => {
        impl ChainElem for $t {
            fn affine(
                src: &[Self],
                dst: &mut [MaybeUninit<Self>],
                mean: f64,
                scale: f64,
                shift: f64,
                relu: bool,
            ) {
                $affine(src, dst, mean, scale, shift, relu)
            }
            fn bn_grad(
                g: &[Self],
                x: &[Self],
                dst: &mut [MaybeUninit<Self>],
                k: f64,
                a: f64,
                b: f64,
                m: f64,
                mask: Option<[f64; 2]>,
            ) {
                $bn_grad(g, x, dst, k, a, b, m, mask)
            }
            fn masked_sums(g: &[Self], x: &[Self], m: f64, mask: Option<[f64; 2]>) -> (f64, f64) {
                $masked_sums(g, x, m, mask)
            }
            fn sums(x: &[Self], m: f64) -> (f64, f64) {
                $sums(x, m)
            }
            fn wrap(s: Saved<Self>) -> SavedAny {
                SavedAny::$variant(s)
            }
        }
    };
}
impl_chain_elem!(f32, F32, affine_f32, bn_grad_f32, masked_sums_f32, sums_f32);
impl_chain_elem!(
    f64,
    F64,
    k64::affine,
    k64::bn_grad,
    k64::masked_sums,
    k64::sums
);

impl CustomOp2 for FusedChain {
    fn name(&self) -> &'static str {
        "fused-conv-bn-relu-chain"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dims: [usize; 5] = l1
            .dims()
            .try_into()
            .map_err(|_| candle_core::Error::Msg("fused block: input must be rank 5".into()))?;
        // Parameters read in place hold their own locks for the pass; otherwise `s2` is
        // their flat concatenation.
        let guards = match &self.in_place {
            Some((parts, _)) => read_parts(parts)?,
            None => Vec::new(),
        };
        match (s1, s2) {
            (CpuStorage::F32(_), CpuStorage::F32(_)) => {
                let src = match &self.in_place {
                    Some(_) => ParamSrc::Parts(part_slices(&guards)?),
                    None => ParamSrc::Flat(slice(s2, l2, OP)?),
                };
                let (y, sh) = self.forward::<f32>(slice(s1, l1, OP)?, dims, src)?;
                Ok((CpuStorage::F32(y), sh))
            }
            (CpuStorage::F64(_), CpuStorage::F64(_)) => {
                let src = match &self.in_place {
                    Some(_) => ParamSrc::Parts(part_slices(&guards)?),
                    None => ParamSrc::Flat(slice(s2, l2, OP)?),
                };
                let (y, sh) = self.forward::<f64>(slice(s1, l1, OP)?, dims, src)?;
                Ok((CpuStorage::F64(y), sh))
            }
            _ => Err(candle_core::Error::UnsupportedDTypeForOp(
                s1.dtype(),
                "fused block",
            )),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // Borrowed, not taken: a graph may be differentiated more than once.
        let guard = lock(&self.saved);
        let saved = guard.as_ref().ok_or_else(|| {
            candle_core::Error::Msg("fused block: backward without saved activations".into())
        })?;
        let (xs, xl) = x.storage_and_layout();
        let (ps, pl) = p.storage_and_layout();
        let (gs, gl) = grad.storage_and_layout();
        let (Storage::Cpu(xc), Storage::Cpu(pc), Storage::Cpu(gc)) = (&*xs, &*ps, &*gs) else {
            return Err(candle_core::Error::Msg(
                "fused block: CPU tensors only".into(),
            ));
        };
        let st = [(xc, xl), (pc, pl), (gc, gl)];
        let (dx, dp) = match saved {
            SavedAny::F32(sv) => self.grads::<f32>(st, sv, x, p)?,
            SavedAny::F64(sv) => self.grads::<f64>(st, sv, x, p)?,
        };
        match (dp, &self.in_place) {
            (ParamGrads::Parts(gs), Some((_, slot))) => {
                *lock(slot) = Some(gs);
                Ok((dx, None))
            }
            (ParamGrads::Flat(dp), _) => Ok((dx, Some(dp))),
            (ParamGrads::Parts(_), None) => Err(candle_core::Error::Msg(
                "fused block: per-part gradients without a scope".into(),
            )),
        }
    }
}

/// Runs a fused chain on a contiguous channel-major CPU input. `params` is the flat
/// concatenation described in the module docs, or the parts read in place. In train mode,
/// returns each unit's batch (mean, biased variance) for the caller's running statistics.
pub(crate) fn run_chain(
    x: &Tensor,
    params: BlockParams,
    units: Vec<UnitSpec>,
    (residual, pool): (Residual, Option<(Pool3, [usize; 3])>),
    mode: BnMode,
    eps: f64,
) -> Result<(Tensor, Vec<MeanVar>)> {
    let expect = FusedChain::param_len(&units, residual);
    let (input, in_place) = match params {
        BlockParams::Flat(flat) => (flat, None),
        BlockParams::InPlace { parts, token, slot } => (token, Some((parts, slot))),
    };
    let given = match &in_place {
        Some((parts, _)) => parts.iter().map(|p| p.elem_count()).sum(),
        None => input.elem_count(),
    };
    if given != expect {
        return Err(candle_core::Error::Msg(format!(
            "fused block: {given} parameters given, {expect} expected"
        )));
    }
    let stats = Arc::new(Mutex::new(Vec::new()));
    let op = FusedChain {
        units,
        residual,
        mode,
        eps,
        keep: x.track_op() || input.track_op(),
        pool,
        need_dx: x.track_op(),
        saved: Mutex::new(None),
        stats: stats.clone(),
        in_place,
    };
    let y = x.contiguous()?.apply_op2(&input.contiguous()?, op)?;
    let batch = std::mem::take(&mut *lock(&stats));
    Ok((y, batch))
}

/// The shortcut of a [`conv_bn_chain`], in terms of the model's layers.
pub(crate) enum Shortcut<'a> {
    /// No shortcut.
    None,
    /// Add the chain input.
    Identity,
    /// Add a convolution of the chain input.
    Conv(&'a Conv3d),
}

/// Runs conv -> BN -> [ReLU] units (the bool) on a channel-major input as one fused node,
/// with `shortcut` added before the last BN, updating the BNs' running statistics in train
/// mode. Returns `None` when the fused op does not apply (non-CPU device or a dtype other than
/// f32/f64 on every tensor); the caller then runs the layers one by one.
pub(crate) fn conv_bn_chain(
    x: &Tensor,
    units: &[(&Conv3d, &BatchNorm, bool)],
    shortcut: Shortcut<'_>,
    train: bool,
) -> Result<Option<Tensor>> {
    conv_bn_pool_chain(x, units, shortcut, None, train)
}

/// [`conv_bn_chain`] followed by a max pool over (T, H, W) inside the same node (the R(2+1)D
/// stem: conv, BN, ReLU, pool).
pub(crate) fn conv_bn_pool_chain(
    x: &Tensor,
    units: &[(&Conv3d, &BatchNorm, bool)],
    shortcut: Shortcut<'_>,
    pool: Option<&MaxPool<3>>,
    train: bool,
) -> Result<Option<Tensor>> {
    let dt = x.dtype();
    let same = |t: &Tensor| t.dtype() == dt && t.device().is_cpu();
    let applies = conv_cm::conv_cm_applies(x)
        && units
            .iter()
            .all(|(c, bn, _)| same(c.weight()) && same(bn.weight()) && same(bn.bias()))
        && match shortcut {
            Shortcut::Conv(c) => same(c.weight()),
            _ => true,
        };
    let Some(eps) = units.first().map(|u| u.1.eps()) else {
        return Ok(None);
    };
    if !applies || units.iter().any(|u| u.1.eps() != eps) {
        return Ok(None);
    }
    let in_c = units[0].0.weight().dim(1)?;
    if x.rank() != 5 || x.dim(0)? != in_c {
        return Err(crate::error::bad_input(
            "conv3d input",
            format!(
                "expected channel-major ({in_c}, B, T, H, W), got shape {:?}",
                x.dims()
            ),
        ));
    }
    // Output sizes of every unit: BN in train mode needs more than one value per channel.
    let mut counts = Vec::with_capacity(units.len());
    let mut d = x.dims5()?;
    for (conv, _, _) in units {
        let g = conv.config();
        let dims = [d.0, d.1, d.2, d.3, d.4];
        let s = Sizes::new(dims, conv.weight().dim(0)?, g.into()).ok_or_else(|| {
            crate::error::bad_input(
                "conv3d input",
                format!("shape {dims:?} too small for {g:?}"),
            )
        })?;
        let [o, b, t, h, w] = s.out_dims();
        d = (o, b, t, h, w);
        counts.push(b * t * h * w);
    }
    if train && counts.iter().any(|&n| n < 2) {
        return Err(crate::error::bad_input(
            "batch-norm input",
            format!(
                "train mode needs more than 1 value per channel, got input shape {:?}",
                x.dims()
            ),
        ));
    }
    let mut parts = Vec::with_capacity(3 * units.len() + 1);
    let mut specs = Vec::with_capacity(units.len());
    for (conv, bn, relu) in units {
        let (o, c, _, _, _) = conv.weight().dims5()?;
        specs.push(UnitSpec {
            in_c: c,
            out_c: o,
            geom: conv.config().into(),
            relu: *relu,
        });
        parts.push(conv.param_source().clone());
        parts.push(bn.weight().clone());
        parts.push(bn.bias().clone());
    }
    let residual = match shortcut {
        Shortcut::None => Residual::None,
        Shortcut::Identity => Residual::Identity,
        Shortcut::Conv(c) => {
            parts.push(c.param_source().clone());
            Residual::Conv(c.config().into())
        }
    };
    let params = crate::packed_params::block_params(&parts)?;
    let mode = if train {
        BnMode::Train
    } else {
        let stats = units
            .iter()
            .map(|(_, bn, _)| {
                Ok((
                    bn.running_mean().to_dtype(DType::F64)?.to_vec1::<f64>()?,
                    bn.running_var().to_dtype(DType::F64)?.to_vec1::<f64>()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        BnMode::Eval(stats)
    };
    let pool = match pool {
        Some(mp) => {
            let (g, o3) = mp.pool3(&[d.0, d.1, d.2, d.3, d.4])?;
            if d.2 * d.3 * d.4 > u32::MAX as usize {
                return Ok(None);
            }
            Some((g, o3))
        }
        None => None,
    };
    let (y, batch) = run_chain(x, params, specs, (residual, pool), mode, eps)?;
    if train {
        let dev = x.device();
        for (((_, bn, _), (mean, var)), &n) in units.iter().zip(&batch).zip(&counts) {
            bn.update_running(
                &Tensor::new(mean.as_slice(), dev)?,
                &Tensor::new(var.as_slice(), dev)?,
                n,
            )?;
        }
    }
    Ok(Some(y))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, ModuleT, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    use crate::{AudioCnn, AudioCnnConfig};

    use super::{bn_act, bn_act_backward, ChainElem};

    /// The backward pass recomputes the ReLU mask from the conv output; it must be exactly
    /// the forward's `y > 0`, also for values right at the boundary.
    fn recomputed_mask_matches_forward<T: ChainElem>() {
        let (c, l) = (3, 4099);
        let mean = [0.25, -1.0, 3.0];
        let invstd = [1.7, 0.3, 9.1];
        let gamma = [0.9, -1.3, 0.002].map(T::from_f64);
        let beta = [0.1, 0.0, -0.07].map(T::from_f64);
        // Values scattered around each channel's boundary x0 = m - shift / scale, some of them
        // within an ulp or two of it.
        let x: Vec<T> = (0..c * l)
            .map(|i| {
                let ch = i / l;
                let scale = invstd[ch] * gamma[ch].to_f64();
                let x0 = mean[ch] - beta[ch].to_f64() / scale;
                let j = (i % l) as f64 - (l / 2) as f64;
                T::from_f64(x0 + j * 1e-7 * x0.abs().max(1.0))
            })
            .collect();
        let y = bn_act(&x, &gamma, &beta, &mean, &invstd, true);
        // With dy = 1, dbeta is the number of unmasked values per channel.
        let dy = vec![T::from_f64(1.0); x.len()];
        let (_, _, dbeta) = bn_act_backward(&dy, &x, &gamma, &beta, &mean, &invstd, true, true);
        for ch in 0..c {
            let kept = y[ch * l..(ch + 1) * l]
                .iter()
                .filter(|v| v.to_f64() > 0.0)
                .count();
            assert!(
                kept > 0 && kept < l,
                "channel {ch}: the boundary is not inside the data"
            );
            assert_eq!(dbeta[ch].to_f64(), kept as f64, "channel {ch}");
        }
    }

    #[test]
    fn recomputed_relu_mask_is_the_forwards() {
        recomputed_mask_matches_forward::<f32>();
        recomputed_mask_matches_forward::<f64>();
    }

    /// The vectorised f32 channel sums give the portable loop's bits: the same per-lane sums
    /// over the same blocks, whatever the length's tail.
    #[test]
    fn vector_sums_equal_the_portable_loop() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 3.0
        };
        #[cfg(target_arch = "x86_64")]
        if !super::super::simd::has_avx512() {
            eprintln!("no AVX-512: the vectorised sums do not run here");
            return;
        }
        for len in [0, 1, 15, 16, 17, 1023, 1024, 1025, 2048 + 37, 20160] {
            let x: Vec<f32> = (0..len).map(|_| next()).collect();
            for m in [0.0, 0.7, -2.5] {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512 F/DQ are present (checked above).
                let (s, s2) = unsafe { super::sums_avx512(&x, m) };
                #[cfg(not(target_arch = "x86_64"))]
                let (s, s2) = super::sums_f32(&x, m);
                let (p, p2) = super::k32::sums(&x, m);
                assert_eq!(
                    (s.to_bits(), s2.to_bits()),
                    (p.to_bits(), p2.to_bits()),
                    "len {len}"
                );
            }
        }
    }

    #[test]
    fn one_value_per_channel_in_train_mode_is_an_error_not_nan() -> candle_core::Result<()> {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let net = AudioCnn::new(&AudioCnnConfig::default().with_width(0.125), vb)?;
        // 16 x 16 -> 1 x 1 in the last blocks: with batch 1, BN sees one value per channel.
        let x = Tensor::ones((1, 1, 16, 16), DType::F32, &Device::Cpu)?;
        let err = net.forward_t(&x, true).expect_err("must refuse");
        assert!(err.to_string().contains("more than 1 value"), "{err}");
        // Eval mode is fine and finite.
        let y = net.forward_t(&x, false)?;
        let s = y.sum_all()?.to_scalar::<f32>()?;
        assert!(s.is_finite());
        Ok(())
    }
}
