//! AVID cross-modal instance discrimination (xID) with a memory bank per modality.
//!
//! References: AVID-CMA `criterions/avid.py` and `criterions/nce.py` (NCE with a frozen
//! partition constant), AV-SSRL `criterions/xid.py` and `criterions/nce.py` (RINCE). Spec:
//! `avid_xid_vicreg.md` section 1.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Tensor, D};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::LossError;
use crate::ops::{
    check_matrix, check_non_negative, check_positive, check_same, l2_normalize, logsumexp_last,
    rowwise_dot, softplus,
};

const LOSS: &str = "xID";

/// Checkpoint name of the video memory bank (AVID's `train_criterion` key).
pub const VIDEO_BANK_KEY: &str = "nce_average.view1_mem";
/// Checkpoint name of the audio memory bank.
pub const AUDIO_BANK_KEY: &str = "nce_average.view2_mem";
/// Checkpoint name of the NCE partition constant Z (-1 while unset, as in AVID).
pub const PARTITION_KEY: &str = "criterion.avg_exp_score";

/// One L2-normalised embedding per training item, updated by momentum, never by gradient.
///
/// Rows are addressed by the dataset's item (video) index, not by clip index: several clips of
/// one video share a row. Updates happen in place on the bank's storage, so a tensor obtained
/// from [`MemoryBank::tensor`] sees later updates; take [`MemoryBank::snapshot`] to freeze one.
/// For the same reason the type is not `Clone` (a shallow clone would share those updates);
/// use [`MemoryBank::try_clone`] for an independent copy.
#[derive(Debug)]
pub struct MemoryBank {
    name: String,
    mem: Tensor,
}

impl MemoryBank {
    /// Random bank as AVID initialises it: i.i.d. standard normal entries, rows L2-normalised.
    ///
    /// The normal draws come from `rng` (Box-Muller), so a seeded generator gives the same bank
    /// on every device and run.
    pub fn random<R: Rng + ?Sized>(
        name: impl Into<String>,
        rows: usize,
        dim: usize,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        let name = name.into();
        if rows == 0 || dim == 0 {
            return Err(LossError::InvalidConfig {
                loss: LOSS,
                what: format!(
                    "memory bank `{name}` needs rows > 0 and dim > 0, got {rows} x {dim}"
                ),
            }
            .into());
        }
        if !dtype.is_float() {
            return Err(LossError::InvalidConfig {
                loss: LOSS,
                what: format!("memory bank `{name}` needs a float dtype, got {dtype:?}"),
            }
            .into());
        }
        let mut data = Vec::with_capacity(rows * dim);
        while data.len() < rows * dim {
            let (z0, z1) = standard_normal_pair(rng);
            data.push(z0);
            data.push(z1);
        }
        data.truncate(rows * dim);
        for row in data.chunks_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        let mem = Tensor::from_vec(data, (rows, dim), device)?.to_dtype(dtype)?;
        Ok(Self { name, mem })
    }

    /// Wraps an existing (rows, dim) float tensor, e.g. a bank loaded from a checkpoint.
    ///
    /// The rows are taken as they are (not renormalised) so that a reload is bit-exact.
    pub fn from_tensor(name: impl Into<String>, mem: Tensor) -> Result<Self> {
        let name = name.into();
        let (rows, dim) = match mem.dims() {
            &[r, d] => (r, d),
            dims => {
                return Err(LossError::StateShape {
                    name,
                    expected: "(rows, dim)".to_string(),
                    got: dims.to_vec(),
                }
                .into())
            }
        };
        if rows == 0 || dim == 0 || !mem.dtype().is_float() {
            return Err(LossError::StateShape {
                name,
                expected: format!("a non-empty float matrix (dtype {:?})", mem.dtype()),
                got: vec![rows, dim],
            }
            .into());
        }
        // Own the storage: in-place updates must not leak into the caller's tensor.
        let mem = mem.detach().copy()?;
        Ok(Self { name, mem })
    }

    /// An independent deep copy (own storage).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(Self {
            name: self.name.clone(),
            mem: self.mem.copy()?,
        })
    }

    /// Name used in errors and checkpoints.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of rows (training items).
    pub fn rows(&self) -> usize {
        self.mem.dims()[0]
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.mem.dims()[1]
    }

    /// The live bank (shares storage with later in-place updates).
    pub fn tensor(&self) -> &Tensor {
        &self.mem
    }

    /// A copy of the bank that later updates do not touch.
    pub fn snapshot(&self) -> Result<Tensor> {
        self.mem.copy()
    }

    /// Rows at `indices` (any shape of u32 indices), shape `indices.dims() ++ [dim]`, detached.
    pub fn gather(&self, indices: &Tensor) -> Result<Tensor> {
        let flat = indices.flatten_all()?.to_device(self.mem.device())?;
        let rows = self.mem.index_select(&flat, 0)?;
        let mut shape = indices.dims().to_vec();
        shape.push(self.dim());
        rows.reshape(shape)
    }

    /// `mem[i] <- normalize(momentum * mem[i] + (1 - momentum) * normalize(e_i))` for each
    /// `(i, e_i)`, without gradient. Repeated indices resolve as last-write-wins, like
    /// PyTorch's `index_copy_`, each computed from the pre-update row.
    pub fn momentum_update(
        &mut self,
        indices: &[usize],
        embeddings: &Tensor,
        momentum: f64,
    ) -> Result<()> {
        let (b, d) = check_matrix(LOSS, "embeddings", embeddings)?;
        if b != indices.len() || d != self.dim() {
            return Err(LossError::ShapeMismatch {
                loss: LOSS,
                tensor: "embeddings",
                reference: "indices x bank dim",
                expected: vec![indices.len(), self.dim()],
                got: vec![b, d],
            }
            .into());
        }
        if !(0.0..=1.0).contains(&momentum) {
            return Err(LossError::InvalidConfig {
                loss: LOSS,
                what: format!("memory momentum must be in [0, 1], got {momentum}"),
            }
            .into());
        }
        if b == 0 {
            return Ok(());
        }
        if !all_finite(embeddings)? {
            return Err(LossError::NonFinite {
                bank: self.name.clone(),
                tensor: "embeddings",
            }
            .into());
        }
        let idx = self.index_tensor(indices)?;
        let e = l2_normalize(&embeddings.detach())?
            .to_device(self.mem.device())?
            .to_dtype(self.mem.dtype())?;
        let old = self.mem.index_select(&idx, 0)?;
        let new = l2_normalize(&((old * momentum)? + (e * (1.0 - momentum))?)?)?;
        let scatter_idx = idx.reshape((b, 1))?.broadcast_as((b, d))?.contiguous()?;
        self.mem.scatter_set(&scatter_idx, &new, 0)
    }

    /// Validates `indices` against the bank and uploads them as u32.
    fn index_tensor(&self, indices: &[usize]) -> Result<Tensor> {
        let rows = self.rows();
        let mut out = Vec::with_capacity(indices.len());
        for (position, &index) in indices.iter().enumerate() {
            if index >= rows || index > u32::MAX as usize {
                return Err(LossError::IndexOutOfRange {
                    bank: self.name.clone(),
                    index,
                    position,
                    rows,
                }
                .into());
            }
            out.push(index as u32);
        }
        Tensor::from_vec(out, indices.len(), self.mem.device())
    }
}

/// Two independent standard normal draws (Box-Muller on two uniforms in (0, 1]).
fn standard_normal_pair<R: Rng + ?Sized>(rng: &mut R) -> (f64, f64) {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    let r = (-2.0 * u1.ln()).sqrt();
    let t = std::f64::consts::TAU * u2;
    (r * t.cos(), r * t.sin())
}

/// `true` when no element is NaN or infinite (`0 * x` is 0 for finite values, NaN otherwise).
fn all_finite(x: &Tensor) -> Result<bool> {
    let s = x
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()?;
    Ok(s.is_finite())
}

/// Draws `k` negatives per query, uniformly with replacement over the `rows - 1` bank rows
/// other than the query's own, as AVID's alias sampler does (draw `r` in `[0, rows - 2]`, add 1
/// when `r >= own index`). Negatives may repeat and may be other items of the same batch.
///
/// Returns a (b, k) u32 tensor on `device`.
pub fn sample_negatives<R: Rng + ?Sized>(
    indices: &[usize],
    rows: usize,
    k: usize,
    device: &Device,
    rng: &mut R,
) -> Result<Tensor> {
    if rows < 2 || rows > u32::MAX as usize {
        return Err(LossError::InvalidConfig {
            loss: LOSS,
            what: format!("negative sampling needs 2..=2^32-1 bank rows, got {rows}"),
        }
        .into());
    }
    let mut out = Vec::with_capacity(indices.len() * k);
    for (position, &own) in indices.iter().enumerate() {
        if own >= rows {
            return Err(LossError::IndexOutOfRange {
                bank: "negative sampler".to_string(),
                index: own,
                position,
                rows,
            }
            .into());
        }
        for _ in 0..k {
            let r = rng.random_range(0..rows - 1);
            out.push(if r >= own { r + 1 } else { r } as u32);
        }
    }
    Tensor::from_vec(out, (indices.len(), k), device)
}

/// Which objective turns the memory-bank scores into a loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum XidObjective {
    /// AVID's noise-contrastive estimation with a partition constant Z frozen at the first
    /// batch (`criterions/nce.py` NCECriterion).
    Nce,
    /// AV-SSRL's robust InfoNCE; `q` is annealed per epoch with [`RinceSchedule`], `q == 0`
    /// is plain InfoNCE.
    Rince {
        /// Exponent q (0.001 at epoch 0 up to 0.4 in AV-SSRL).
        q: f64,
        /// Density weight lambda (`lam`, 0.01).
        lambda: f64,
    },
}

/// Settings of the xID loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XidConfig {
    /// Negatives per query K (1024 in every shipped config).
    #[serde(default = "default_negatives")]
    pub num_negatives: usize,
    /// Score temperature tau (0.07, hard-coded in the references).
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Memory momentum mu (0.5 in the configs; 0.9 is only the class default).
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// Loss form.
    #[serde(default = "default_objective")]
    pub objective: XidObjective,
}

fn default_negatives() -> usize {
    1024
}
fn default_temperature() -> f64 {
    0.07
}
fn default_momentum() -> f64 {
    0.5
}
fn default_objective() -> XidObjective {
    XidObjective::Nce
}

impl Default for XidConfig {
    fn default() -> Self {
        Self {
            num_negatives: default_negatives(),
            temperature: default_temperature(),
            momentum: default_momentum(),
            objective: default_objective(),
        }
    }
}

impl XidConfig {
    /// AV-SSRL's setting: RINCE with `q = 0.001` (epoch 0) and `lambda = 0.01`.
    pub fn av_ssrl() -> Self {
        Self {
            objective: XidObjective::Rince {
                q: 0.001,
                lambda: 0.01,
            },
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.num_negatives == 0 {
            return Err(LossError::InvalidConfig {
                loss: LOSS,
                what: "num_negatives must be >= 1".to_string(),
            }
            .into());
        }
        check_positive(LOSS, "temperature", self.temperature)?;
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(LossError::InvalidConfig {
                loss: LOSS,
                what: format!("momentum must be in [0, 1], got {}", self.momentum),
            }
            .into());
        }
        if let XidObjective::Rince { q, lambda } = self.objective {
            check_non_negative(LOSS, "RINCE q", q)?;
            check_positive(LOSS, "RINCE lambda", lambda)?;
        }
        Ok(())
    }
}

/// AV-SSRL's linear q annealing: `q(e) = q0 + e * (q_max - q0) / (num_epochs - 1)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RinceSchedule {
    /// q at epoch 0 (config value 0.001).
    pub q0: f64,
    /// q at the last epoch (hard-coded 0.4).
    pub q_max: f64,
    /// Number of training epochs (100).
    pub num_epochs: usize,
}

impl RinceSchedule {
    /// The AV-SSRL schedule over `num_epochs`: 0.001 -> 0.4.
    pub fn av_ssrl(num_epochs: usize) -> Self {
        Self {
            q0: 0.001,
            q_max: 0.4,
            num_epochs,
        }
    }

    /// q for 0-based `epoch`; with a single epoch the schedule stays at `q0`.
    pub fn q(&self, epoch: usize) -> f64 {
        if self.num_epochs <= 1 {
            return self.q0;
        }
        self.q0 + epoch as f64 * (self.q_max - self.q0) / (self.num_epochs - 1) as f64
    }
}

/// Scores and loss of one xID step; the scores are `<query, bank row> / tau`.
#[derive(Debug, Clone)]
pub struct XidOutput {
    /// `(l_v2a + l_a2v) / 2`, scalar.
    pub loss: Tensor,
    /// Video query against the audio bank, scalar.
    pub l_v2a: Tensor,
    /// Audio query against the video bank, scalar.
    pub l_a2v: Tensor,
    /// (b, 1) positive scores `<v, audio_bank[y]> / tau`.
    pub v2a_pos: Tensor,
    /// (b, K) negative scores `<v, audio_bank[neg]> / tau`.
    pub v2a_neg: Tensor,
    /// (b, 1) positive scores `<a, video_bank[y]> / tau`.
    pub a2v_pos: Tensor,
    /// (b, K) negative scores `<a, video_bank[neg]> / tau`.
    pub a2v_neg: Tensor,
    /// (b, K) u32 negative indices used for both directions.
    pub negatives: Tensor,
}

/// Cross-modal instance discrimination against two memory banks (video and audio).
///
/// One training step is [`XidLoss::forward`] (scores against the *stale* banks, loss; on the
/// first call with the NCE objective this also freezes Z), backward on the loss, then
/// [`XidLoss::update`] with the same embeddings and indices.
///
/// The banks are public building blocks ([`MemoryBank::gather`], [`nce_loss`] takes a
/// positives axis of any size), so AVID's CMA positive-set term can be added on top without
/// changing this type.
#[derive(Debug)]
pub struct XidLoss {
    cfg: XidConfig,
    video: MemoryBank,
    audio: MemoryBank,
    z: Option<f64>,
}

impl XidLoss {
    /// Fresh random banks of `n_items` rows (one per training video) and `dim` columns.
    pub fn new<R: Rng + ?Sized>(
        n_items: usize,
        dim: usize,
        cfg: XidConfig,
        dtype: DType,
        device: &Device,
        rng: &mut R,
    ) -> Result<Self> {
        cfg.validate()?;
        let video = MemoryBank::random(VIDEO_BANK_KEY, n_items, dim, dtype, device, rng)?;
        let audio = MemoryBank::random(AUDIO_BANK_KEY, n_items, dim, dtype, device, rng)?;
        Self::from_banks(video, audio, cfg)
    }

    /// Uses existing banks (same shape and dtype), with Z unset.
    pub fn from_banks(video: MemoryBank, audio: MemoryBank, cfg: XidConfig) -> Result<Self> {
        cfg.validate()?;
        check_same(LOSS, "audio bank", &audio.mem, "video bank", &video.mem)?;
        if video.rows() < 2 {
            return Err(LossError::InvalidConfig {
                loss: LOSS,
                what: format!(
                    "memory banks need >= 2 rows for negatives, got {}",
                    video.rows()
                ),
            }
            .into());
        }
        Ok(Self {
            cfg,
            video,
            audio,
            z: None,
        })
    }

    /// Current settings.
    pub fn config(&self) -> &XidConfig {
        &self.cfg
    }

    /// Replaces the objective, e.g. to set this epoch's RINCE q.
    pub fn set_objective(&mut self, objective: XidObjective) -> Result<()> {
        let cfg = XidConfig {
            objective,
            ..self.cfg.clone()
        };
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// Video memory bank (`view1_mem`).
    pub fn video_bank(&self) -> &MemoryBank {
        &self.video
    }

    /// Audio memory bank (`view2_mem`).
    pub fn audio_bank(&self) -> &MemoryBank {
        &self.audio
    }

    /// The frozen NCE partition constant, `None` before the first NCE step.
    pub fn partition_constant(&self) -> Option<f64> {
        self.z
    }

    /// Overrides Z (e.g. CMA restoring AVID's value); `None` makes the next step estimate it.
    pub fn set_partition_constant(&mut self, z: Option<f64>) -> Result<()> {
        if let Some(z) = z {
            check_positive(LOSS, "partition constant Z", z)?;
        }
        self.z = z;
        Ok(())
    }

    /// Samples `num_negatives` per query with `rng`, then runs [`Self::forward_with_negatives`].
    ///
    /// # Shapes
    /// `v`, `a`: (b, D) projection-head outputs (normalised here); `indices`: b item indices.
    pub fn forward<R: Rng + ?Sized>(
        &mut self,
        v: &Tensor,
        a: &Tensor,
        indices: &[usize],
        rng: &mut R,
    ) -> Result<XidOutput> {
        let negatives = sample_negatives(
            indices,
            self.video.rows(),
            self.cfg.num_negatives,
            self.video.mem.device(),
            rng,
        )?;
        self.forward_with_negatives(v, a, indices, &negatives)
    }

    /// Scores and loss with caller-chosen negatives ((b, K) u32 bank rows).
    pub fn forward_with_negatives(
        &mut self,
        v: &Tensor,
        a: &Tensor,
        indices: &[usize],
        negatives: &Tensor,
    ) -> Result<XidOutput> {
        let (b, d) = check_matrix(LOSS, "v", v)?;
        check_same(LOSS, "a", a, "v", v)?;
        if d != self.video.dim() || b != indices.len() || b == 0 {
            return Err(LossError::ShapeMismatch {
                loss: LOSS,
                tensor: "v",
                reference: "indices x bank dim",
                expected: vec![indices.len(), self.video.dim()],
                got: vec![b, d],
            }
            .into());
        }
        let negatives = self.check_negatives(negatives, b)?;
        let pos_idx = self.video.index_tensor(indices)?;
        let inv_tau = 1.0 / self.cfg.temperature;
        let vn = l2_normalize(v)?;
        let an = l2_normalize(a)?;
        let bank_rows = |bank: &MemoryBank, idx: &Tensor, like: &Tensor| -> Result<Tensor> {
            bank.gather(idx)?
                .to_device(like.device())?
                .to_dtype(like.dtype())
        };
        // Video queries score against the audio bank and vice versa.
        let score = |q: &Tensor, bank: &MemoryBank| -> Result<(Tensor, Tensor)> {
            let pos = (rowwise_dot(q, &bank_rows(bank, &pos_idx, q)?)? * inv_tau)?.unsqueeze(1)?;
            let neg_rows = bank_rows(bank, &negatives, q)?;
            let neg = (neg_rows.broadcast_mul(&q.unsqueeze(1)?)?.sum(D::Minus1)? * inv_tau)?;
            Ok((pos, neg))
        };
        let (v2a_pos, v2a_neg) = score(&vn, &self.audio)?;
        let (a2v_pos, a2v_neg) = score(&an, &self.video)?;
        let (l_v2a, l_a2v) = match self.cfg.objective {
            XidObjective::Nce => {
                let z = match self.z {
                    Some(z) => z,
                    None => {
                        // AVID: mean exp score of the first batch's v2a negatives, then frozen.
                        let z = v2a_neg
                            .detach()
                            .exp()?
                            .mean_all()?
                            .to_dtype(DType::F64)?
                            .to_scalar::<f64>()?;
                        check_positive(LOSS, "estimated partition constant Z", z)?;
                        self.z = Some(z);
                        z
                    }
                };
                (
                    nce_loss(&v2a_pos, &v2a_neg, z)?,
                    nce_loss(&a2v_pos, &a2v_neg, z)?,
                )
            }
            XidObjective::Rince { q, lambda } => (
                rince_loss(&v2a_pos, &v2a_neg, q, lambda)?,
                rince_loss(&a2v_pos, &a2v_neg, q, lambda)?,
            ),
        };
        let loss = ((&l_v2a + &l_a2v)? * 0.5)?;
        Ok(XidOutput {
            loss,
            l_v2a,
            l_a2v,
            v2a_pos,
            v2a_neg,
            a2v_pos,
            a2v_neg,
            negatives,
        })
    }

    /// Momentum update of both banks at `indices` with this step's embeddings (no gradient).
    ///
    /// Call after [`Self::forward`] so the step scored against the stale banks, as AVID does.
    pub fn update(&mut self, v: &Tensor, a: &Tensor, indices: &[usize]) -> Result<()> {
        check_same(LOSS, "a", a, "v", v)?;
        let mu = self.cfg.momentum;
        self.video.momentum_update(indices, v, mu)?;
        self.audio.momentum_update(indices, a, mu)
    }

    /// Named state for checkpoints: both banks (copies) and Z (`-1` while unset, f64 scalar).
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let z = Tensor::new(self.z.unwrap_or(-1.0), &Device::Cpu)?;
        Ok(vec![
            (VIDEO_BANK_KEY.to_string(), self.video.snapshot()?),
            (AUDIO_BANK_KEY.to_string(), self.audio.snapshot()?),
            (PARTITION_KEY.to_string(), z),
        ])
    }

    /// Restores [`Self::state_tensors`] output (or AVID's `train_criterion` tensors).
    ///
    /// Both banks must match the current shape. A missing Z (AV-SSRL checkpoints have none)
    /// or a negative one leaves Z unset. Banks keep their current dtype and device.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let fetch = |key: &str, current: &MemoryBank| -> Result<Tensor> {
            let t = state.get(key).ok_or_else(|| LossError::MissingState {
                name: key.to_string(),
            })?;
            if t.dims() != current.mem.dims() {
                return Err(LossError::StateShape {
                    name: key.to_string(),
                    expected: format!("{:?}", current.mem.dims()),
                    got: t.dims().to_vec(),
                }
                .into());
            }
            t.to_device(current.mem.device())?
                .to_dtype(current.mem.dtype())
        };
        let video = MemoryBank::from_tensor(VIDEO_BANK_KEY, fetch(VIDEO_BANK_KEY, &self.video)?)?;
        let audio = MemoryBank::from_tensor(AUDIO_BANK_KEY, fetch(AUDIO_BANK_KEY, &self.audio)?)?;
        let z = match state.get(PARTITION_KEY) {
            None => None,
            Some(t) => {
                if t.elem_count() != 1 {
                    return Err(LossError::StateShape {
                        name: PARTITION_KEY.to_string(),
                        expected: "a single value".to_string(),
                        got: t.dims().to_vec(),
                    }
                    .into());
                }
                let z = t
                    .flatten_all()?
                    .to_dtype(DType::F64)?
                    .to_vec1::<f64>()?
                    .first()
                    .copied()
                    .unwrap_or(-1.0);
                (z > 0.0 && z.is_finite()).then_some(z)
            }
        };
        self.video = video;
        self.audio = audio;
        self.z = z;
        Ok(())
    }

    fn check_negatives(&self, negatives: &Tensor, b: usize) -> Result<Tensor> {
        let k = match negatives.dims() {
            &[nb, k] if nb == b && k > 0 => k,
            dims => {
                return Err(LossError::ShapeMismatch {
                    loss: LOSS,
                    tensor: "negatives",
                    reference: "(batch, K >= 1)",
                    expected: vec![b, self.cfg.num_negatives],
                    got: dims.to_vec(),
                }
                .into())
            }
        };
        let as_u32 = negatives.to_dtype(DType::U32)?;
        let rows = self.video.rows();
        let flat = as_u32.flatten_all()?.to_vec1::<u32>()?;
        if let Some((position, &index)) =
            flat.iter().enumerate().find(|(_, i)| **i as usize >= rows)
        {
            return Err(LossError::IndexOutOfRange {
                bank: "negatives".to_string(),
                index: index as usize,
                position: position / k,
                rows,
            }
            .into());
        }
        as_u32.to_device(self.video.mem.device())
    }
}

/// AVID's NCE loss with a fixed partition constant `z` (batch mean, scalar).
///
/// Per query with positive scores `pos` (b, P) and negative scores `neg` (b, K):
/// `l = -mean_p log(e^pos / (e^pos + K z)) - sum_k log(K z / (e^neg_k + K z))`. Evaluated as
/// `mean_p softplus(c - pos) + sum_k softplus(neg - c)` with `c = ln(K z)`, the same function
/// without overflow. P = 1 for xID; CMA uses its positive set here.
pub fn nce_loss(pos: &Tensor, neg: &Tensor, z: f64) -> Result<Tensor> {
    check_positive(LOSS, "partition constant Z", z)?;
    let (b, _) = check_matrix(LOSS, "positive scores", pos)?;
    let (bn, k) = check_matrix(LOSS, "negative scores", neg)?;
    if b != bn {
        return Err(LossError::ShapeMismatch {
            loss: LOSS,
            tensor: "negative scores",
            reference: "positive scores",
            expected: pos.dims().to_vec(),
            got: neg.dims().to_vec(),
        }
        .into());
    }
    let c = (k as f64 * z).ln();
    let pos_term = softplus(&pos.affine(-1.0, c)?)?.mean(1)?;
    let neg_term = softplus(&neg.affine(1.0, -c)?)?.sum(1)?;
    (pos_term + neg_term)?.mean_all()
}

/// AV-SSRL's robust InfoNCE (batch mean, scalar); `pos` is (b, 1), `neg` (b, K).
///
/// With `p = e^pos` and `S = sum_k e^neg_k`:
/// `L = mean(-p^q / q) + mean((lambda (p + S))^q / q)`, evaluated in log space; `q == 0` is
/// InfoNCE `mean(log(p + S) - log p)`, as the reference switches to it.
pub fn rince_loss(pos: &Tensor, neg: &Tensor, q: f64, lambda: f64) -> Result<Tensor> {
    check_non_negative(LOSS, "RINCE q", q)?;
    check_positive(LOSS, "RINCE lambda", lambda)?;
    let (b, p) = check_matrix(LOSS, "positive scores", pos)?;
    let (bn, _) = check_matrix(LOSS, "negative scores", neg)?;
    if p != 1 || bn != b {
        return Err(LossError::ShapeMismatch {
            loss: LOSS,
            tensor: "positive/negative scores",
            reference: "(b, 1) and (b, K)",
            expected: vec![b, 1],
            got: vec![bn, p],
        }
        .into());
    }
    let lse = logsumexp_last(&Tensor::cat(&[pos, neg], 1)?)?;
    if q == 0.0 {
        return (lse - pos)?.mean_all();
    }
    let pos_term = (pos * q)?.exp()?.mean_all()?;
    let all_term = lse.affine(q, q * lambda.ln())?.exp()?.mean_all()?;
    (all_term - pos_term)? / q
}
