//! The linear probe: frozen video encoder -> cached features -> linear verb/noun heads trained
//! with SGD -> top-1/top-5, per-class accuracy and confusion matrices.
//!
//! This one code path serves `replai-pretrain`'s final report, `replai-linear-eval` and the
//! `linear_probe` example, so their numbers agree exactly for the same config and weights.
//!
//! **What a probe example is.** A labelled interaction at time `t` is represented by the clip
//! before (`[t - delta - clip, t - delta]`) and the clip after (`[t + delta, t + delta + clip]`),
//! exactly the pair RepLAI pretrains on; the feature is the concatenation
//! `[f(before), f(after)]` (2 x 512-d at full width). A verb such as open vs close is a
//! *direction* of change, which neither clip alone determines but a linear function of both can;
//! a clip spanning the change would mix both states inside one max-pooled vector.
//!
//! **Views.** Training uses `train_views` augmented views per segment (random scale/crop/flip,
//! random temporal crop, moment jittered by up to `sampler.delta_s`). Evaluation uses
//! `eval_clips` views with the evaluation transform at moments spread evenly over
//! `[t - delta, t + delta]`; "clip" accuracy scores each view alone, "video" accuracy averages
//! the softmax over the views of a segment (the corrected protocol). With `single_clip` (the
//! reference's G8) a single randomly jittered view is used for evaluation. With `bn_train_mode`
//! (G7) the training features are extracted with BatchNorm in training mode (batch statistics,
//! running statistics updated), in batches of `batch_size`, before the validation features.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use av_models::MultiTaskClassifier;
use av_optim::{LrSchedule, Optimizer, Sgd, SgdConfig, StepMilestones};
use av_video::ReplaiSampler;
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarMap;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::{Config, ProbeConfig};
use crate::data::{clip_shape, LabelledSegment, VideoSet};
use crate::error::{CandleContext, TrainError};
use crate::init::SeededVarMap;
use crate::loader::derive_seed;
use crate::model::VideoEncoder;
use crate::views::{clips_of, eval_views, train_views, Protocol, View};

/// One split of labelled segments and the videos they come from.
#[derive(Clone)]
pub struct ProbeSplit {
    /// Videos.
    pub videos: VideoSet,
    /// Labelled segments.
    pub segments: Vec<LabelledSegment>,
}

/// Train and validation splits plus class counts.
#[derive(Clone)]
pub struct ProbeData {
    /// Probe training split.
    pub train: ProbeSplit,
    /// Probe evaluation split.
    pub val: ProbeSplit,
    /// Verb classes (single-label datasets such as UCF-101: the label classes).
    pub n_verbs: usize,
    /// Noun classes; 0 for a single-label dataset (no noun head).
    pub n_nouns: usize,
    /// Identifies the data for the feature cache (e.g. the world config).
    pub key: String,
    /// Which clips represent a segment.
    pub protocol: Protocol,
    /// Names of the heads' classes (for confusion matrices), when the dataset defines them.
    pub class_names: [Vec<String>; 2],
    /// Name of the first head: `verb`, or `label` for single-label datasets.
    pub first_head: String,
    /// AV-SSRL's "rest" (unseen) classes of a single-label dataset (`files.rest_classes`).
    pub rest_classes: Vec<usize>,
}

impl ProbeData {
    /// The synthetic world's probe: training-split interactions vs validation-split ones.
    pub fn synthetic(world: &std::sync::Arc<av_synth::World>) -> Self {
        let (tv, ts) = crate::data::synthetic_segments(world, av_synth::Split::Train);
        let (vv, vs) = crate::data::synthetic_segments(world, av_synth::Split::Validation);
        let wc = world.config();
        let key = format!(
            "{:016x}",
            crate::checkpoint::fnv1a(format!("{wc:?}").as_bytes())
        );
        Self {
            train: ProbeSplit {
                videos: tv,
                segments: ts,
            },
            val: ProbeSplit {
                videos: vv,
                segments: vs,
            },
            n_verbs: wc.n_verbs,
            n_nouns: wc.n_nouns,
            key,
            protocol: Protocol::Pair,
            class_names: [Vec::new(), Vec::new()],
            first_head: "verb".into(),
            rest_classes: Vec::new(),
        }
    }
}

/// Features of one split: `n` rows of `dim` values with labels and the segment each row is from.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    /// Row-major (n, dim).
    pub x: Vec<f32>,
    /// Feature width.
    pub dim: usize,
    /// Verb label per row.
    pub verb: Vec<usize>,
    /// Noun label per row.
    pub noun: Vec<usize>,
    /// Segment index per row (rows of one segment are its views).
    pub group: Vec<usize>,
}

impl FeatureSet {
    /// Rows.
    pub fn len(&self) -> usize {
        self.verb.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.verb.is_empty()
    }
}

/// Features of both splits.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeFeatures {
    /// Probe training features.
    pub train: FeatureSet,
    /// Evaluation features.
    pub val: FeatureSet,
}

/// Extracts the feature of every view, in order, batching the encoder calls: the clips of a
/// view are encoded in one call and their features concatenated (`[f(before), f(after)]` or
/// `f(clip)`).
struct Extractor<'a> {
    enc: &'a VideoEncoder,
    sampler: &'a ReplaiSampler,
    data: &'a ProbeData,
    batch: usize,
    shape: [usize; 4],
}

fn extract(
    ex: &Extractor<'_>,
    split: &ProbeSplit,
    views: &[View],
    bn_train: bool,
) -> Result<FeatureSet, TrainError> {
    let Extractor {
        enc,
        sampler,
        data,
        batch,
        shape,
    } = *ex;
    let per: usize = shape.iter().product();
    let d = enc.out_dim();
    let m = data.protocol.clips_per_view();
    let mut x = Vec::with_capacity(views.len() * m * d);
    for chunk in views.chunks(batch.max(1)) {
        let clips: Vec<Result<Vec<Vec<f32>>, String>> = chunk
            .par_iter()
            .map(|v| {
                clips_of(sampler, data.protocol, &split.videos, &split.segments, v)
                    .map_err(|e| format!("segment {}: {e}", v.segment))
            })
            .collect();
        let n = chunk.len();
        // Clip j of every view, then clip j + 1: the features of clip j are rows j*n..(j+1)*n.
        let mut per_clip: Vec<Vec<f32>> = (0..m).map(|_| Vec::with_capacity(n * per)).collect();
        for c in clips {
            for (j, clip) in c.map_err(TrainError::Data)?.into_iter().enumerate() {
                per_clip[j].extend_from_slice(&clip);
            }
        }
        let flat: Vec<f32> = per_clip.concat();
        let t = Tensor::from_vec(
            flat,
            (m * n, shape[0], shape[1], shape[2], shape[3]),
            &enc.device,
        )
        .ctx("probe clips")?;
        let f = enc
            .features(&t, bn_train)?
            .to_dtype(DType::F32)
            .ctx("features")?;
        let parts: Vec<Tensor> = (0..m)
            .map(|j| f.narrow(0, j * n, n))
            .collect::<candle_core::Result<_>>()
            .ctx("features")?;
        let cat = Tensor::cat(&parts, 1)
            .ctx("features")?
            .to_device(&Device::Cpu)
            .ctx("features")?;
        x.extend(
            cat.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .ctx("features")?,
        );
    }
    Ok(FeatureSet {
        x,
        dim: m * d,
        verb: views
            .iter()
            .map(|v| split.segments[v.segment].verb)
            .collect(),
        noun: views
            .iter()
            .map(|v| split.segments[v.segment].noun)
            .collect(),
        group: views.iter().map(|v| v.segment).collect(),
    })
}

/// Feature cache file for an encoder, data and protocol.
fn cache_path(dir: &Path, enc: &VideoEncoder, data: &ProbeData, cfg: &Config) -> PathBuf {
    let p = &cfg.probe;
    let spec = format!(
        "{}|{:?}|{:?}|views{}:{}|single{}|bn{}|bs{}|seed{}",
        data.key,
        data.protocol,
        cfg.sampler,
        p.train_views,
        p.eval_clips,
        p.single_clip,
        p.bn_train_mode,
        p.batch_size,
        cfg.run.seed
    );
    dir.join(format!(
        "{}-{:016x}.safetensors",
        enc.key,
        crate::checkpoint::fnv1a(spec.as_bytes())
    ))
}

fn to_tensors(
    prefix: &str,
    f: &FeatureSet,
    out: &mut std::collections::HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    let n = f.len();
    let u = |v: &[usize]| {
        Tensor::from_vec(
            v.iter().map(|&x| x as u32).collect::<Vec<u32>>(),
            n,
            &Device::Cpu,
        )
    };
    out.insert(
        format!("{prefix}.x"),
        Tensor::from_vec(f.x.clone(), (n, f.dim), &Device::Cpu).ctx("cache")?,
    );
    out.insert(format!("{prefix}.verb"), u(&f.verb).ctx("cache")?);
    out.insert(format!("{prefix}.noun"), u(&f.noun).ctx("cache")?);
    out.insert(format!("{prefix}.group"), u(&f.group).ctx("cache")?);
    Ok(())
}

fn from_tensors(prefix: &str, m: &std::collections::HashMap<String, Tensor>) -> Option<FeatureSet> {
    let x = m.get(&format!("{prefix}.x"))?;
    let (_, dim) = x.dims2().ok()?;
    let u = |k: &str| -> Option<Vec<usize>> {
        Some(
            m.get(&format!("{prefix}.{k}"))?
                .to_vec1::<u32>()
                .ok()?
                .into_iter()
                .map(|v| v as usize)
                .collect(),
        )
    };
    Some(FeatureSet {
        x: x.flatten_all().ok()?.to_vec1::<f32>().ok()?,
        dim,
        verb: u("verb")?,
        noun: u("noun")?,
        group: u("group")?,
    })
}

/// Features for both splits, read from / written to the cache directory when given.
pub fn probe_features(
    enc: &VideoEncoder,
    data: &ProbeData,
    cfg: &Config,
    cache_dir: Option<&Path>,
) -> Result<ProbeFeatures, TrainError> {
    if let Some(dir) = cache_dir {
        let path = cache_path(dir, enc, data, cfg);
        if path.is_file() {
            if let Ok(m) = crate::checkpoint::load_tensors(&path, &Device::Cpu) {
                if let (Some(train), Some(val)) =
                    (from_tensors("train", &m), from_tensors("val", &m))
                {
                    tracing::info!("probe features from cache {}", path.display());
                    return Ok(ProbeFeatures { train, val });
                }
            }
            tracing::warn!("ignoring unreadable feature cache {}", path.display());
        }
    }
    let sampler =
        ReplaiSampler::new(crate::data::sampler_config(cfg)).map_err(|e| TrainError::Config {
            what: "sampler".into(),
            msg: e.to_string(),
        })?;
    let p = &cfg.probe;
    let delta = cfg.sampler.delta_s;
    let seed = cfg.run.seed;
    let shape = clip_shape(cfg);
    let train_views = train_views(
        data.protocol,
        &data.train.segments,
        p.train_views,
        delta,
        seed,
    );
    let val_views = eval_views(
        data.protocol,
        &data.val.segments,
        p.eval_clips,
        p.single_clip,
        delta,
        seed,
    );
    let ex = Extractor {
        enc,
        sampler: &sampler,
        data,
        batch: p.batch_size,
        shape,
    };
    let train = extract(&ex, &data.train, &train_views, p.bn_train_mode)?;
    let val = extract(&ex, &data.val, &val_views, false)?;
    let feats = ProbeFeatures { train, val };
    if let Some(dir) = cache_dir {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let mut m = std::collections::HashMap::new();
        to_tensors("train", &feats.train, &mut m)?;
        to_tensors("val", &feats.val, &mut m)?;
        crate::checkpoint::save_tensors(&cache_path(dir, enc, data, cfg), &m)?;
    }
    Ok(feats)
}

/// Top-k accuracies of one head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadMetrics {
    /// Top-1 (%), video level (softmax averaged over views) unless `single_clip`.
    pub top1: f64,
    /// Top-5 (%).
    pub top5: f64,
    /// Top-1 (%) of every view scored alone.
    pub clip_top1: f64,
    /// Top-5 (%) of every view scored alone.
    pub clip_top5: f64,
    /// Video-level accuracy (%) per class (NaN-free: classes absent from the split are omitted).
    pub per_class: BTreeMap<usize, f64>,
    /// Mean of `per_class`.
    pub mean_class_accuracy: f64,
    /// `confusion[true][pred]` counts at video level.
    #[serde(skip)]
    pub confusion: Vec<Vec<usize>>,
}

/// Probe result for both heads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeMetrics {
    /// Verb head (single-label datasets: the label head).
    pub verb: HeadMetrics,
    /// Noun head; `None` for single-label datasets.
    pub noun: Option<HeadMetrics>,
    /// Training segments/views and evaluation segments/views.
    pub counts: [usize; 4],
    /// Final training loss of the classifier.
    pub train_loss: f64,
}

fn standardise(train: &FeatureSet) -> (Vec<f32>, Vec<f32>) {
    let d = train.dim;
    let n = train.len().max(1) as f64;
    let mut mean = vec![0f64; d];
    for row in train.x.chunks(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += *v as f64;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; d];
    for row in train.x.chunks(d) {
        for ((s, v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (*v as f64 - m).powi(2);
        }
    }
    let std: Vec<f32> = var
        .iter()
        .map(|s| ((s / n).sqrt().max(1e-6)) as f32)
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

fn apply_norm(
    f: &FeatureSet,
    norm: &Option<(Vec<f32>, Vec<f32>)>,
    dev: &Device,
) -> Result<Tensor, TrainError> {
    let mut x = f.x.clone();
    if let Some((mean, std)) = norm {
        for row in x.chunks_mut(f.dim) {
            for ((v, m), s) in row.iter_mut().zip(mean).zip(std) {
                *v = (*v - m) / s;
            }
        }
    }
    Tensor::from_vec(x, (f.len(), f.dim), dev).ctx("probe features")
}

pub(crate) fn cross_entropy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<Tensor> {
    let logp = av_losses::ops::log_softmax_last(logits)?;
    logp.gather(&labels.unsqueeze(1)?, 1)?.mean_all()?.neg()
}

/// A trained linear probe: its heads, the standardisation its inputs need, and its final loss.
pub struct FittedProbe {
    /// The heads (`verb_class`, and `noun_class` unless single-label).
    pub clf: MultiTaskClassifier,
    /// Their parameters.
    pub varmap: VarMap,
    /// Training-set mean and std applied to features first (`probe.standardize`).
    pub norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Mean loss of the last epoch.
    pub train_loss: f64,
}

impl FittedProbe {
    /// The heads as weights for raw (unstandardised) features, keyed `<head>.weight` /
    /// `<head>.bias`: `W' = W / std`, `b' = b - W' mean`. This is how fine-tuning starts from
    /// the probe (LP-FT).
    pub fn folded_weights(&self) -> Result<Vec<(String, Tensor)>, TrainError> {
        let vars = self.varmap.data().lock().expect("varmap lock").clone();
        let mut out = Vec::new();
        for (name, var) in &vars {
            let Some(head) = name.strip_suffix(".weight") else {
                continue;
            };
            let w = var.as_tensor().clone();
            let b = vars
                .get(&format!("{head}.bias"))
                .map(|v| v.as_tensor().clone())
                .ok_or_else(|| TrainError::Data(format!("probe head {head} has no bias")))?;
            let (w, b) = match &self.norm {
                None => (w, b),
                Some((mean, std)) => {
                    let dev = w.device().clone();
                    let d = mean.len();
                    let inv: Vec<f32> = std.iter().map(|s| 1.0 / s).collect();
                    let inv = Tensor::from_vec(inv, (1, d), &dev).ctx("fold")?;
                    let mean = Tensor::from_vec(mean.clone(), (d, 1), &dev).ctx("fold")?;
                    let w2 = w.broadcast_mul(&inv).ctx("fold")?;
                    let shift = w2.matmul(&mean).ctx("fold")?.squeeze(1).ctx("fold")?;
                    (w2, (b - shift).ctx("fold")?)
                }
            };
            out.push((format!("{head}.weight"), w));
            out.push((format!("{head}.bias"), b));
        }
        Ok(out)
    }
}

fn check_labels(f: &FeatureSet, n_verbs: usize, n_nouns: usize) -> Result<(), TrainError> {
    let mut checks = vec![("verb", &f.verb, n_verbs)];
    if n_nouns > 0 {
        checks.push(("noun", &f.noun, n_nouns));
    }
    for (what, labels, n) in checks {
        if let Some(bad) = labels.iter().find(|&&l| l >= n) {
            return Err(TrainError::Data(format!(
                "{what} label {bad} out of range for {n} classes"
            )));
        }
    }
    Ok(())
}

/// Trains the linear heads on `train` (SGD with step milestones, mean of the heads'
/// cross-entropies); `n_nouns == 0` trains a single head.
pub fn fit_probe(
    train: &FeatureSet,
    n_verbs: usize,
    n_nouns: usize,
    p: &ProbeConfig,
    seed: u64,
    device: &Device,
) -> Result<FittedProbe, TrainError> {
    if train.is_empty() {
        return Err(TrainError::Data(
            "probe needs training segments, got none".into(),
        ));
    }
    check_labels(train, n_verbs, n_nouns)?;
    let two_heads = n_nouns > 0;
    let norm = p.standardize.then(|| standardise(train));
    let xtr = apply_norm(train, &norm, device)?;
    let varmap = VarMap::new();
    let vb = SeededVarMap::new(varmap.clone(), derive_seed(seed, 0xc1a5, 0, 0))
        .var_builder(DType::F32, device);
    let heads: &[(&str, usize)] = if two_heads {
        &[("verb_class", n_verbs), ("noun_class", n_nouns)]
    } else {
        &[("verb_class", n_verbs)]
    };
    let clf = MultiTaskClassifier::new(train.dim, heads, vb)
        .map_err(|e| TrainError::other("building the probe", e))?;
    let vars = av_optim::trainable_vars(&varmap);
    let mut opt = Sgd::from_vars(
        vars,
        SgdConfig {
            lr: p.lr,
            momentum: p.momentum,
            weight_decay: p.weight_decay,
            dampening: 0.0,
            nesterov: false,
        },
    )
    .map_err(|e| TrainError::other("probe optimiser", e))?;
    let sched = StepMilestones {
        base_lr: p.lr,
        milestones: p.milestones.clone(),
        gamma: p.gamma,
    };
    let u32s = |v: &[usize]| {
        Tensor::from_vec(
            v.iter().map(|&x| x as u32).collect::<Vec<u32>>(),
            v.len(),
            device,
        )
    };
    let yv = u32s(&train.verb).ctx("labels")?;
    let yn = u32s(&train.noun).ctx("labels")?;
    let n = train.len();
    let mut last_loss = f64::NAN;
    for epoch in 0..p.epochs {
        opt.set_lr(sched.lr(epoch));
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
            seed,
            0x5b,
            epoch as u64,
            0,
        )));
        let mut sum = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(p.batch_size) {
            let idx = u32s(chunk).ctx("batch")?;
            let xb = xtr.index_select(&idx, 0).ctx("batch")?;
            let outs = clf.forward_all(&xb).ctx("probe forward")?;
            let lv = cross_entropy(&outs[0].1, &yv.index_select(&idx, 0).ctx("batch")?)
                .ctx("verb loss")?;
            // The reference's loss is the mean of the heads' cross-entropies.
            let loss = if two_heads {
                let ln = cross_entropy(&outs[1].1, &yn.index_select(&idx, 0).ctx("batch")?)
                    .ctx("noun loss")?;
                ((lv + ln).ctx("loss")? * 0.5).ctx("loss")?
            } else {
                lv
            };
            let g = loss.backward().ctx("probe backward")?;
            opt.step(&g)
                .map_err(|e| TrainError::other("probe step", e))?;
            sum += loss.to_scalar::<f32>().ctx("loss")? as f64;
            batches += 1;
        }
        last_loss = sum / batches.max(1) as f64;
        if !last_loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                epoch,
                step: 0,
                terms: format!("probe loss {last_loss}"),
                last_good: "none (probe)".into(),
            });
        }
    }
    Ok(FittedProbe {
        clf,
        varmap,
        norm,
        train_loss: last_loss,
    })
}

/// Trains the verb/noun linear heads on `feats.train` and evaluates them on `feats.val`.
pub fn train_and_evaluate(
    feats: &ProbeFeatures,
    n_verbs: usize,
    n_nouns: usize,
    p: &ProbeConfig,
    seed: u64,
    device: &Device,
) -> Result<ProbeMetrics, TrainError> {
    let train = &feats.train;
    if train.is_empty() || feats.val.is_empty() {
        return Err(TrainError::Data(format!(
            "probe needs training and evaluation segments, got {} and {}",
            train.len(),
            feats.val.len()
        )));
    }
    check_labels(&feats.val, n_verbs, n_nouns)?;
    let two_heads = n_nouns > 0;
    let fitted = fit_probe(train, n_verbs, n_nouns, p, seed, device)?;
    let xva = apply_norm(&feats.val, &fitted.norm, device)?;
    let clf = &fitted.clf;
    let last_loss = fitted.train_loss;
    let outs = clf.forward_all(&xva).ctx("probe eval")?;
    let val = &feats.val;
    let verb = head_metrics(&outs[0].1, &val.verb, &val.group, n_verbs)?;
    let noun = if two_heads {
        Some(head_metrics(&outs[1].1, &val.noun, &val.group, n_nouns)?)
    } else {
        None
    };
    let segs = |f: &FeatureSet| {
        let mut g = f.group.clone();
        g.dedup();
        g.len()
    };
    Ok(ProbeMetrics {
        verb,
        noun,
        counts: [segs(train), train.len(), segs(val), val.len()],
        train_loss: last_loss,
    })
}

fn topk_hit(p: &[f32], label: usize, k: usize) -> bool {
    let target = p[label];
    // Rank = number of classes scoring strictly higher (ties favour the label, like torch.topk
    // on distinct values).
    p.iter().filter(|&&v| v > target).count() < k
}

pub(crate) fn head_metrics(
    logits: &Tensor,
    labels: &[usize],
    group: &[usize],
    n_classes: usize,
) -> Result<HeadMetrics, TrainError> {
    let probs = candle_nn::ops::softmax(logits, D::Minus1)
        .ctx("softmax")?
        .to_vec2::<f32>()
        .ctx("softmax")?;
    let k5 = 5.min(n_classes);
    let n = labels.len();
    let clip1 = labels
        .iter()
        .zip(&probs)
        .filter(|(l, p)| topk_hit(p, **l, 1))
        .count();
    let clip5 = labels
        .iter()
        .zip(&probs)
        .filter(|(l, p)| topk_hit(p, **l, k5))
        .count();
    // Average the softmax over the views of each segment (rows of a segment are contiguous).
    let mut seg_probs: Vec<(usize, Vec<f32>, usize)> = Vec::new();
    for i in 0..n {
        match seg_probs.last_mut() {
            Some((g, acc, cnt)) if *g == group[i] => {
                acc.iter_mut().zip(&probs[i]).for_each(|(a, p)| *a += p);
                *cnt += 1;
            }
            _ => seg_probs.push((group[i], probs[i].clone(), 1)),
        }
    }
    let seg_labels: Vec<usize> = {
        let mut out = Vec::new();
        let mut last = None;
        for i in 0..n {
            if last != Some(group[i]) {
                out.push(labels[i]);
                last = Some(group[i]);
            }
        }
        out
    };
    let mut confusion = vec![vec![0usize; n_classes]; n_classes];
    let mut top1 = 0;
    let mut top5 = 0;
    for ((_, acc, _), &l) in seg_probs.iter().zip(&seg_labels) {
        let pred = acc
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0;
        confusion[l][pred] += 1;
        top1 += usize::from(topk_hit(acc, l, 1));
        top5 += usize::from(topk_hit(acc, l, k5));
    }
    let ns = seg_labels.len().max(1) as f64;
    let per_class: BTreeMap<usize, f64> = confusion
        .iter()
        .enumerate()
        .filter_map(|(c, row)| {
            let tot: usize = row.iter().sum();
            (tot > 0).then(|| (c, 100.0 * row[c] as f64 / tot as f64))
        })
        .collect();
    let mean_class_accuracy = if per_class.is_empty() {
        0.0
    } else {
        per_class.values().sum::<f64>() / per_class.len() as f64
    };
    Ok(HeadMetrics {
        top1: 100.0 * top1 as f64 / ns,
        top5: 100.0 * top5 as f64 / ns,
        clip_top1: 100.0 * clip1 as f64 / n.max(1) as f64,
        clip_top5: 100.0 * clip5 as f64 / n.max(1) as f64,
        per_class,
        mean_class_accuracy,
        confusion,
    })
}

/// Writes `confusion_<head>.csv` and `confusion_<head>.svg` into `dir`.
pub fn write_confusion(
    dir: &Path,
    head: &str,
    m: &HeadMetrics,
    class_names: &[String],
) -> Result<(), TrainError> {
    let n = m.confusion.len();
    let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| i.to_string());
    let mut csv = String::from("true\\pred");
    for j in 0..n {
        csv.push(',');
        csv.push_str(&name(j));
    }
    csv.push('\n');
    for (i, row) in m.confusion.iter().enumerate() {
        csv.push_str(&name(i));
        for v in row {
            csv.push_str(&format!(",{v}"));
        }
        csv.push('\n');
    }
    crate::checkpoint::atomic_write(&dir.join(format!("confusion_{head}.csv")), csv.as_bytes())?;
    draw_confusion(
        &dir.join(format!("confusion_{head}.svg")),
        head,
        &m.confusion,
    )
}

fn draw_confusion(path: &Path, title: &str, c: &[Vec<usize>]) -> Result<(), TrainError> {
    use plotters::prelude::*;
    let n = c.len();
    if n == 0 {
        return Ok(());
    }
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (560, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{title}: confusion (rows = true)"),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(30)
            .build_cartesian_2d(0..n, 0..n)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .draw()?;
        chart.draw_series(c.iter().enumerate().flat_map(|(i, row)| {
            let tot = row.iter().sum::<usize>().max(1) as f64;
            row.iter().enumerate().map(move |(j, &v)| {
                let frac = v as f64 / tot;
                let shade = (255.0 * (1.0 - frac)) as u8;
                Rectangle::new(
                    [(j, n - 1 - i), (j + 1, n - i)],
                    RGBColor(shade, shade, 255).filled(),
                )
            })
        }))?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| TrainError::other(format!("drawing {}", path.display()), e))
}

/// The probe result as the `probe.json` entry: `{"verb": {"top1", "top5", ...}, "noun": {...}}`
/// (single-label datasets: `{"label": {...}}`).
pub fn metrics_json(m: &ProbeMetrics) -> serde_json::Value {
    let head = |h: &HeadMetrics| {
        serde_json::json!({
            "top1": h.top1, "top5": h.top5, "clip_top1": h.clip_top1, "clip_top5": h.clip_top5,
            "mean_class_accuracy": h.mean_class_accuracy,
            "per_class": h.per_class,
        })
    };
    let mut out = serde_json::json!({
        "segments": {"train": m.counts[0], "train_views": m.counts[1], "val": m.counts[2], "val_views": m.counts[3]},
        "train_loss": m.train_loss,
    });
    match &m.noun {
        Some(n) => {
            out["verb"] = head(&m.verb);
            out["noun"] = head(n);
        }
        None => out["label"] = head(&m.verb),
    }
    out
}

/// Full probe of one encoder: features (cached) then classifier; confusion files into `out_dir`.
pub fn run_probe(
    enc: &VideoEncoder,
    data: &ProbeData,
    cfg: &Config,
    cache_dir: Option<&Path>,
    out_dir: Option<&Path>,
    label: &str,
) -> Result<ProbeMetrics, TrainError> {
    let feats = probe_features(enc, data, cfg, cache_dir)?;
    let feats = select_training(feats, &cfg.probe, cfg.run.seed)?;
    let m = train_and_evaluate(
        &feats,
        data.n_verbs,
        data.n_nouns,
        &cfg.probe,
        cfg.run.seed,
        &enc.device,
    )?;
    if let Some(dir) = out_dir {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        write_confusion(
            dir,
            &format!("{label}_{}", data.first_head),
            &m.verb,
            &data.class_names[0],
        )?;
        if let Some(n) = &m.noun {
            write_confusion(dir, &format!("{label}_noun"), n, &data.class_names[1])?;
        }
    }
    Ok(m)
}

/// Applies the concept-generalisation options to the training features: `few_shot_ratio` keeps
/// that fraction of training segments per verb class (at least one, via `av_data::few_shot`),
/// and `unseen_verbs` removes those classes from training entirely.
pub fn select_training(
    mut f: ProbeFeatures,
    p: &ProbeConfig,
    seed: u64,
) -> Result<ProbeFeatures, TrainError> {
    if p.few_shot_ratio >= 1.0 && p.unseen_verbs.is_empty() {
        return Ok(f);
    }
    let t = &f.train;
    let mut segs: Vec<(usize, usize)> = Vec::new();
    for (g, v) in t.group.iter().zip(&t.verb) {
        if segs.last().map(|s| s.0) != Some(*g) {
            segs.push((*g, *v));
        }
    }
    let segs: Vec<(usize, usize)> = segs
        .into_iter()
        .filter(|(_, v)| !p.unseen_verbs.contains(v))
        .collect();
    let kept = if p.few_shot_ratio < 1.0 {
        av_data::few_shot(&segs, |s| s.1, p.few_shot_ratio, seed).map_err(|e| {
            TrainError::Config {
                what: "probe.few_shot_ratio".into(),
                msg: e.to_string(),
            }
        })?
    } else {
        segs
    };
    let keep: std::collections::HashSet<usize> = kept.into_iter().map(|s| s.0).collect();
    let mut out = FeatureSet {
        x: Vec::new(),
        dim: t.dim,
        verb: Vec::new(),
        noun: Vec::new(),
        group: Vec::new(),
    };
    for i in 0..t.len() {
        if keep.contains(&t.group[i]) {
            out.x.extend_from_slice(&t.x[i * t.dim..(i + 1) * t.dim]);
            out.verb.push(t.verb[i]);
            out.noun.push(t.noun[i]);
            out.group.push(t.group[i]);
        }
    }
    if out.is_empty() {
        return Err(TrainError::Data(
            "concept-generalisation filters left no training segments".into(),
        ));
    }
    f.train = out;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn blobs(n_per: usize, classes: usize, seed: u64, views: usize) -> FeatureSet {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let dim = 8;
        let mut f = FeatureSet {
            x: vec![],
            dim,
            verb: vec![],
            noun: vec![],
            group: vec![],
        };
        let mut g = 0;
        for c in 0..classes {
            for _ in 0..n_per {
                for _ in 0..views {
                    for j in 0..dim {
                        let centre = if j == c { 3.0 } else { 0.0 };
                        f.x.push(centre + rng.random_range(-1.0f32..1.0));
                    }
                    f.verb.push(c);
                    f.noun.push((c + 1) % classes);
                    f.group.push(g);
                }
                g += 1;
            }
        }
        f
    }

    #[test]
    fn separable_features_are_learned() {
        let feats = ProbeFeatures {
            train: blobs(20, 4, 1, 1),
            val: blobs(10, 4, 2, 3),
        };
        let p = ProbeConfig {
            lr: 0.1,
            batch_size: 16,
            epochs: 20,
            milestones: vec![15],
            ..ProbeConfig::default()
        };
        let m = train_and_evaluate(&feats, 4, 4, &p, 0, &Device::Cpu).expect("probe");
        assert!(m.verb.top1 > 90.0, "verb top1 {}", m.verb.top1);
        let noun = m.noun.as_ref().expect("two heads");
        assert!(noun.top1 > 90.0, "noun top1 {}", noun.top1);
        assert_eq!(m.verb.top5, 100.0, "4 classes: top-5 is always a hit");
        assert_eq!(m.counts, [80, 80, 40, 120]);
        let total: usize = m.verb.confusion.iter().flatten().sum();
        assert_eq!(total, 40, "confusion counts segments, not views");
        // Deterministic for a seed.
        let again = train_and_evaluate(&feats, 4, 4, &p, 0, &Device::Cpu).expect("probe");
        assert_eq!(m, again);
    }

    #[test]
    fn folded_heads_take_raw_features() {
        // LP-FT starts fine-tuning from these: they must give the probe's logits on raw input.
        let mut train = blobs(10, 3, 5, 1);
        for (i, v) in train.x.iter_mut().enumerate() {
            *v = *v * (1.0 + (i % 8) as f32) + 4.0;
        }
        let p = ProbeConfig {
            epochs: 3,
            batch_size: 8,
            ..ProbeConfig::default()
        };
        let fitted = fit_probe(&train, 3, 3, &p, 0, &Device::Cpu).expect("fit");
        assert!(fitted.norm.is_some(), "the default standardises");
        let raw =
            Tensor::from_vec(train.x.clone(), (train.len(), train.dim), &Device::Cpu).expect("x");
        let normed = apply_norm(&train, &fitted.norm, &Device::Cpu).expect("norm");
        let want = fitted.clf.forward_all(&normed).expect("probe logits");
        let folded: std::collections::HashMap<String, Tensor> =
            fitted.folded_weights().expect("fold").into_iter().collect();
        for (name, logits) in want {
            let w = &folded[&format!("{name}.weight")];
            let b = &folded[&format!("{name}.bias")];
            let got = raw
                .matmul(&w.t().expect("t"))
                .and_then(|x| x.broadcast_add(b))
                .expect("folded logits");
            let diff = (got - logits)
                .and_then(|d| d.abs())
                .and_then(|d| d.max_all())
                .and_then(|d| d.to_scalar::<f32>())
                .expect("diff");
            assert!(diff < 1e-4, "{name}: {diff}");
        }
    }

    #[test]
    fn noise_features_stay_near_chance() {
        let mut train = blobs(20, 4, 3, 1);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        train.verb.shuffle(&mut rng);
        let feats = ProbeFeatures {
            val: blobs(25, 4, 4, 1),
            train,
        };
        let p = ProbeConfig {
            lr: 0.05,
            batch_size: 16,
            epochs: 10,
            ..ProbeConfig::default()
        };
        let m = train_and_evaluate(&feats, 4, 4, &p, 0, &Device::Cpu).expect("probe");
        assert!(
            m.verb.top1 < 50.0,
            "shuffled labels cannot be learned: {}",
            m.verb.top1
        );
    }

    #[test]
    fn topk_semantics() {
        let p = [0.1, 0.5, 0.2, 0.15, 0.05];
        assert!(topk_hit(&p, 1, 1));
        assert!(!topk_hit(&p, 2, 1));
        assert!(topk_hit(&p, 2, 2));
        assert!(!topk_hit(&p, 4, 4));
        assert_eq!(crate::views::eval_offsets(3, 0.1), vec![-0.1, 0.0, 0.1]);
        assert_eq!(crate::views::eval_offsets(1, 0.1), vec![0.0]);
    }

    #[test]
    fn few_shot_and_unseen_filter_training() {
        let f = ProbeFeatures {
            train: blobs(10, 4, 1, 2),
            val: blobs(2, 4, 2, 1),
        };
        let p = ProbeConfig {
            few_shot_ratio: 0.5,
            unseen_verbs: vec![0],
            ..ProbeConfig::default()
        };
        let out = select_training(f, &p, 0).expect("filter");
        assert!(!out.train.verb.contains(&0));
        assert_eq!(
            out.train.len(),
            3 * 5 * 2,
            "half of 10 segments of 3 classes, 2 views each"
        );
    }
}
