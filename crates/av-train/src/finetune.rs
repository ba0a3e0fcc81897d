//! Full fine-tuning (AV-SSRL protocol): the video encoder and a dropout + linear verb/noun
//! classifier on the probe's view features (`[f(before), f(after)]` or `f(clip)`, see
//! [`crate::views`]), first `warmup_epochs` training only the classifier,
//! then every layer; evaluation at video level (softmax averaged over the evaluation views, as
//! the probe). Checkpoints after every epoch through [`CheckpointManager`]; `model.resume`
//! continues a run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use av_models::MultiTaskClassifier;
use av_optim::{AdamW, AdamWConfig, LrSchedule, Optimizer, Sgd, SgdConfig, StepMilestones};
use av_video::ReplaiSampler;
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{self, CheckpointKind, CheckpointManager, RngState, TrainState};
use crate::config::Config;
use crate::data::{clip_shape, sampler_config};
use crate::error::{CandleContext, TrainError};
use crate::init::SeededVarMap;
use crate::loader::{derive_seed, Dataset, EpochLoader, LoaderConfig, LoaderStats};
use crate::metrics::{MetricsLog, Progress};
use crate::model::{video_config, VideoEncoder};
use crate::pretrain::select_device;
use crate::probe::{
    cross_entropy, fit_probe, head_metrics, probe_features, ProbeData, ProbeMetrics, ProbeSplit,
};
use crate::views::{clips_of, eval_views, random_pos, view_clips, Protocol};

/// Augmented training clips of labelled segments.
struct SegmentDataset {
    split: ProbeSplit,
    sampler: ReplaiSampler,
    protocol: Protocol,
    clips_per_segment: usize,
    shape: [usize; 4],
    delta: f64,
}

struct SegItem {
    clips: Vec<Vec<f32>>,
    verb: usize,
    noun: usize,
}

struct SegBatch {
    clips: Tensor,
    verb: Vec<usize>,
    noun: Vec<usize>,
}

impl Dataset for SegmentDataset {
    type Item = SegItem;
    type Batch = SegBatch;
    fn len(&self) -> usize {
        self.split.segments.len() * self.clips_per_segment.max(1)
    }
    fn get(&self, index: usize, rng: &mut ChaCha8Rng) -> Result<SegItem, String> {
        let seg = &self.split.segments[index % self.split.segments.len()];
        let pos = random_pos(self.protocol, seg, self.delta, rng);
        let clips = view_clips(
            &self.sampler,
            self.protocol,
            &self.split.videos,
            seg,
            pos,
            rng,
            true,
        )?;
        Ok(SegItem {
            clips,
            verb: seg.verb,
            noun: seg.noun,
        })
    }
    fn collate(&self, items: Vec<SegItem>) -> Result<SegBatch, String> {
        // Clip 0 of every item, then clip 1: one encoder call over (m B, 3, T, H, W).
        let m = self.protocol.clips_per_view();
        let all: Vec<&[f32]> = (0..m)
            .flat_map(|j| items.iter().map(move |i| i.clips[j].as_slice()))
            .collect();
        Ok(SegBatch {
            clips: av_data::stack_f32(&all, &self.shape, &Device::Cpu)
                .map_err(|e| e.to_string())?,
            verb: items.iter().map(|i| i.verb).collect(),
            noun: items.iter().map(|i| i.noun).collect(),
        })
    }
}

/// Encoder + dropout + linear heads.
struct Finetuner {
    enc: VideoEncoder,
    clf: MultiTaskClassifier,
    dropout: f64,
    clips_per_view: usize,
    /// BatchNorm with batch statistics while training (else running statistics, frozen).
    bn_train: bool,
}

impl Finetuner {
    fn logits(&self, clips: &Tensor, n: usize, train: bool) -> Result<Vec<Tensor>, TrainError> {
        let f = self.enc.features(clips, train && self.bn_train)?;
        let parts: Vec<Tensor> = (0..self.clips_per_view)
            .map(|j| f.narrow(0, j * n, n))
            .collect::<candle_core::Result<_>>()
            .ctx("split")?;
        let feat = Tensor::cat(&parts, 1).ctx("concat")?;
        let feat = if train && self.dropout > 0.0 {
            candle_nn::ops::dropout(&feat, self.dropout as f32).ctx("dropout")?
        } else {
            feat
        };
        Ok(self
            .clf
            .forward_all(&feat)
            .ctx("classifier")?
            .into_iter()
            .map(|(_, t)| t)
            .collect())
    }
}

/// Summary of a fine-tuning run.
#[derive(Debug, Clone)]
pub struct FinetuneOutcome {
    /// Metrics on the evaluation split after the last epoch.
    pub metrics: ProbeMetrics,
    /// Mean training loss per epoch run in this process.
    pub epoch_losses: Vec<f64>,
    /// Final checkpoint state file.
    pub checkpoint: PathBuf,
}

fn make_optimizer(
    cfg: &Config,
    vars: Vec<(String, candle_core::Var)>,
) -> Result<Box<dyn Optimizer>, TrainError> {
    let f = &cfg.finetune;
    let err = |e: av_optim::OptimError| TrainError::other("fine-tuning optimiser", e);
    Ok(match f.optimizer.as_str() {
        "sgd" => Box::new(
            Sgd::from_vars(
                vars,
                SgdConfig {
                    lr: f.lr,
                    momentum: 0.9,
                    weight_decay: f.weight_decay,
                    dampening: 0.0,
                    nesterov: false,
                },
            )
            .map_err(err)?,
        ),
        "adamw" => {
            Box::new(AdamW::from_vars(vars, AdamWConfig::adamw(f.lr, f.weight_decay)).map_err(err)?)
        }
        _ => Box::new(
            AdamW::from_vars(vars, AdamWConfig::adam_l2(f.lr, f.weight_decay)).map_err(err)?,
        ),
    })
}

/// Evaluates at video level on `split` with the probe's evaluation views.
fn evaluate(
    ft: &Finetuner,
    split: &ProbeSplit,
    sampler: &ReplaiSampler,
    cfg: &Config,
    data: &ProbeData,
) -> Result<ProbeMetrics, TrainError> {
    let shape = clip_shape(cfg);
    let views = eval_views(
        data.protocol,
        &split.segments,
        cfg.probe.eval_clips,
        cfg.probe.single_clip,
        cfg.sampler.delta_s,
        cfg.run.seed,
    );
    let m = data.protocol.clips_per_view();
    let mut logits_v = Vec::new();
    let mut logits_n = Vec::new();
    let (mut lv, mut ln, mut grp) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in views.chunks(cfg.finetune.batch_size.max(1)) {
        let n = chunk.len();
        let mut per_clip: Vec<Vec<f32>> = vec![Vec::new(); m];
        for v in chunk {
            let seg = &split.segments[v.segment];
            let clips = clips_of(sampler, data.protocol, &split.videos, &split.segments, v)
                .map_err(TrainError::Data)?;
            for (j, c) in clips.into_iter().enumerate() {
                per_clip[j].extend(c);
            }
            lv.push(seg.verb);
            ln.push(seg.noun);
            grp.push(v.segment);
        }
        let clips = Tensor::from_vec(
            per_clip.concat(),
            (m * n, shape[0], shape[1], shape[2], shape[3]),
            &ft.enc.device,
        )
        .ctx("eval clips")?;
        let out = ft.logits(&clips, n, false)?;
        logits_v.push(out[0].clone());
        if let Some(o) = out.get(1) {
            logits_n.push(o.clone());
        }
    }
    let cat = |v: &[Tensor]| Tensor::cat(v, 0).ctx("eval logits");
    let verb = head_metrics(&cat(&logits_v)?, &lv, &grp, data.n_verbs)?;
    let noun = if data.n_nouns > 0 {
        Some(head_metrics(&cat(&logits_n)?, &ln, &grp, data.n_nouns)?)
    } else {
        None
    };
    Ok(ProbeMetrics {
        verb,
        noun,
        counts: [0, 0, split.segments.len(), views.len()],
        train_loss: f64::NAN,
    })
}

/// Sets the classifier to the linear probe trained on the initial encoder's features (the probe's
/// views, cache and protocol), folded so that it takes raw features.
fn init_from_probe(
    ft: &Finetuner,
    cfg: &Config,
    data: &ProbeData,
    run_dir: &Path,
    device: &Device,
) -> Result<(), TrainError> {
    let cache = crate::pipeline::cache_dir(cfg, run_dir);
    let feats = probe_features(&ft.enc, data, cfg, Some(&cache))?;
    let fitted = fit_probe(
        &feats.train,
        data.n_verbs,
        data.n_nouns,
        &cfg.probe,
        cfg.run.seed,
        device,
    )?;
    tracing::info!(
        "classifier initialised from the linear probe (loss {:.4})",
        fitted.train_loss
    );
    let vars = ft.enc.varmap.data().lock().expect("varmap lock");
    for (name, t) in fitted.folded_weights()? {
        let key = format!("classifier.{name}");
        let var = vars
            .get(&key)
            .ok_or_else(|| TrainError::Data(format!("no fine-tuning parameter {key}")))?;
        var.set(&t.to_device(device).ctx("probe head")?)
            .ctx("setting the classifier from the probe")?;
    }
    Ok(())
}

/// Fine-tunes the encoder of `init` (or random init) on `data.train`, evaluates on `data.val`.
pub fn finetune(
    cfg: &Config,
    init: Option<&Path>,
    data: &ProbeData,
    run_dir: &Path,
    quiet: bool,
) -> Result<FinetuneOutcome, TrainError> {
    std::fs::create_dir_all(run_dir).map_err(|e| TrainError::io(run_dir, e))?;
    cfg.save(run_dir)?;
    let device = select_device(&cfg.run.device)?;
    let vc = video_config(cfg);
    let enc = match init {
        Some(p) => VideoEncoder::load(&vc, p, &device)?,
        None => VideoEncoder::random(&vc, cfg.run.seed, &device)?,
    };
    let vb = SeededVarMap::new(enc.varmap.clone(), derive_seed(cfg.run.seed, 0xf1e, 0, 0))
        .var_builder(DType::F32, &device);
    let m = data.protocol.clips_per_view();
    let heads: &[(&str, usize)] = if data.n_nouns > 0 {
        &[("verb_class", data.n_verbs), ("noun_class", data.n_nouns)]
    } else {
        &[("verb_class", data.n_verbs)]
    };
    let clf = MultiTaskClassifier::new(m * enc.out_dim(), heads, vb.pp("classifier"))
        .map_err(|e| TrainError::other("building the classifier", e))?;
    let f = &cfg.finetune;
    let ft = Finetuner {
        enc,
        clf,
        dropout: f.dropout,
        clips_per_view: m,
        bn_train: !f.freeze_bn,
    };
    let all_vars = av_optim::trainable_vars(&ft.enc.varmap);
    let (clf_vars, _) = av_optim::partition_by_prefix(all_vars.clone(), "classifier.");
    let sampler = ReplaiSampler::new(sampler_config(cfg)).map_err(|e| TrainError::Config {
        what: "sampler".into(),
        msg: e.to_string(),
    })?;
    let ds = Arc::new(SegmentDataset {
        split: data.train.clone(),
        sampler: ReplaiSampler::new(sampler_config(cfg))
            .map_err(|e| TrainError::other("sampler", e))?,
        protocol: data.protocol,
        clips_per_segment: f.clips_per_segment,
        shape: clip_shape(cfg),
        delta: cfg.sampler.delta_s,
    });
    // LP-FT: the probe is the converged form of the classifier-only warm-up.
    let lp_init = f.head_init == "probe";
    let warmup_epochs = if lp_init { 0 } else { f.warmup_epochs };
    let total_epochs = warmup_epochs + f.epochs;
    let mut ckm = CheckpointManager::new(
        run_dir.join("checkpoints"),
        cfg.checkpoint.keep_last,
        cfg.checkpoint.latest_minutes,
    )?;
    let mut epoch = 0;
    let mut step = 0;
    // Dropout draws from candle's unseedable generator; the trainer RNG only drives sampling.
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.run.seed, 0xf7, 0, 0));
    let resume = match cfg.model.resume.as_str() {
        "" => None,
        "auto" => Some(run_dir.join("checkpoints").join("latest.json")).filter(|p| p.is_file()),
        p => Some(PathBuf::from(p)),
    };
    let mut pending_optim = None;
    if lp_init && resume.is_none() {
        init_from_probe(&ft, cfg, data, run_dir, &device)?;
    }
    if let Some(path) = resume {
        let ck = checkpoint::load_checkpoint(&path, &device)?;
        checkpoint::restore_varmap(&ft.enc.varmap, &ck.model, &ck.path)?;
        rng = ck
            .state
            .rng
            .restore()
            .map_err(|msg| TrainError::Checkpoint {
                path: ck.path.clone(),
                msg,
            })?;
        epoch = ck.state.epoch;
        step = ck.state.step;
        pending_optim = Some((ck.optim, ck.path));
    }
    let stats = Arc::new(LoaderStats::default());
    let lcfg = LoaderConfig {
        workers: cfg.data.workers,
        prefetch: cfg.data.prefetch,
        batch_size: f.batch_size,
        seed: derive_seed(cfg.run.seed, 0xf17e, 0, 0),
        shuffle: true,
        max_retries: cfg.data.max_retries,
    };
    let mut metrics = MetricsLog::open(&run_dir.join("metrics.jsonl"))?;
    let spe = crate::loader::batches_per_epoch(ds.len(), f.batch_size);
    if spe == 0 {
        return Err(TrainError::Config {
            what: "finetune.batch_size".into(),
            msg: format!(
                "{} training clips are less than one batch of {}",
                ds.len(),
                f.batch_size
            ),
        });
    }
    let progress = Progress::new(total_epochs * spe, step, quiet);
    let mut epoch_losses = Vec::new();
    let mut opt: Option<(bool, Box<dyn Optimizer>)> = None;
    let mut last = None;
    while epoch < total_epochs {
        let warm = epoch < warmup_epochs;
        // A new optimiser when the phase changes (the reference builds one per phase).
        if opt.as_ref().is_none_or(|(w, _)| *w != warm) {
            let vars = if warm {
                clf_vars.clone()
            } else {
                all_vars.clone()
            };
            let mut o = make_optimizer(cfg, vars)?;
            if let Some((state, path)) = pending_optim.take() {
                o.load_state(&state).map_err(|e| TrainError::Checkpoint {
                    path,
                    msg: format!("optimiser state: {e}"),
                })?;
            }
            opt = Some((warm, o));
        }
        let Some((_, o)) = opt.as_mut() else {
            unreachable!("optimiser set above")
        };
        let lr = if warm {
            f.lr
        } else {
            StepMilestones {
                base_lr: f.lr,
                milestones: f.milestones.clone(),
                gamma: f.gamma,
            }
            .lr(epoch - warmup_epochs)
        };
        o.set_lr(lr);
        let mut sum = 0.0;
        let mut nb = 0;
        for batch in EpochLoader::new(ds.clone(), lcfg, epoch, 0, stats.clone()) {
            let b = batch?;
            let n = b.data.verb.len();
            let clips = b.data.clips.to_device(&device).ctx("batch to device")?;
            // Fused blocks pack their parameters for this step (see av_models::PackedParams).
            let packed = av_models::PackedParams::start();
            let out = ft.logits(&clips, n, true)?;
            let u = |v: &[usize]| {
                Tensor::from_vec(
                    v.iter().map(|&x| x as u32).collect::<Vec<_>>(),
                    v.len(),
                    &device,
                )
            };
            let l1 = cross_entropy(&out[0], &u(&b.data.verb).ctx("labels")?).ctx("verb loss")?;
            let loss = match out.get(1) {
                Some(o) => {
                    let l2 = cross_entropy(o, &u(&b.data.noun).ctx("labels")?).ctx("noun loss")?;
                    ((l1 + l2).ctx("loss")? * 0.5).ctx("loss")?
                }
                None => l1,
            };
            let v = loss.to_scalar::<f32>().ctx("loss")? as f64;
            if !v.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    step,
                    terms: format!("loss={v}"),
                    last_good: ckm
                        .last_good()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "none".into()),
                });
            }
            let g = packed.backward(&loss).ctx("backward")?;
            o.step(&g)
                .map_err(|e| TrainError::other("fine-tuning step", e))?;
            step += 1;
            sum += v;
            nb += 1;
            progress.step(format!(
                "ep {epoch}{} loss {v:.4} lr {lr:.1e}",
                if warm { " (classifier only)" } else { "" }
            ));
        }
        let mean = sum / nb.max(1) as f64;
        epoch_losses.push(mean);
        epoch += 1;
        let mut rec = serde_json::Map::new();
        rec.insert("epoch".into(), epoch.into());
        rec.insert("step".into(), step.into());
        rec.insert("loss".into(), mean.into());
        rec.insert("lr".into(), lr.into());
        rec.insert(
            "phase".into(),
            (if warm { "classifier" } else { "all" }).into(),
        );
        metrics.log("epoch", &rec)?;
        let st = TrainState {
            version: 1,
            epoch,
            step,
            batch_in_epoch: 0,
            scheduler_step: epoch,
            rng: RngState::capture(&rng),
            bad_samples: stats.bad(),
            model_file: String::new(),
            optim_file: String::new(),
            extra: serde_json::json!({"phase": if warm { "classifier" } else { "all" }}),
        };
        let optim = o
            .state_tensors()
            .map_err(|e| TrainError::other("optimiser state", e))?;
        // The optimiser of the warm-up phase does not carry into the main phase.
        let optim = if epoch == warmup_epochs {
            Default::default()
        } else {
            optim
        };
        last = Some(ckm.save(
            CheckpointKind::Epoch,
            &checkpoint::varmap_tensors(&ft.enc.varmap),
            &optim,
            &st,
        )?);
    }
    progress.finish();
    let metrics_out = evaluate(&ft, &data.val, &sampler, cfg, data)?;
    let checkpoint = match last {
        Some(p) => p,
        None => ckm
            .last_good()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| run_dir.join("checkpoints").join("latest.json")),
    };
    Ok(FinetuneOutcome {
        metrics: metrics_out,
        epoch_losses,
        checkpoint,
    })
}
