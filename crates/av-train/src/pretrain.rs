//! The pretraining loop: loader -> model -> loss -> optimiser, with schedules, checkpoints,
//! exact resume, metrics and the non-finite-loss guard.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use av_optim::{
    AdamW, AdamWConfig, Constant, CosineWarmup, LrSchedule, OneCycle, OneCycleConfig, Optimizer,
    ParamGroup, Sgd, SgdConfig, StepMilestones,
};
use candle_core::Device;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{self, CheckpointKind, CheckpointManager, RngState, TrainState};
use crate::config::Config;
use crate::data::{pretrain_videos, PretrainDataset};
use crate::distributed::{Distributed, SingleProcess};
use crate::error::{CandleContext, TrainError};
use crate::loader::{batches_per_epoch, derive_seed, EpochLoader, LoaderConfig, LoaderStats};
use crate::metrics::{plot_series, MetricsLog, Progress};
use crate::model::{DeviceBatch, PretrainModel, HEAD_PREFIX};

/// Picks the compute device: `cpu`, `cuda` (GPU 0 when available, else CPU) or `cuda:N`.
pub fn select_device(spec: &str) -> Result<Device, TrainError> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::cuda_if_available(0).ctx("selecting a CUDA device"),
        s => {
            if let Some(n) = s.strip_prefix("cuda:") {
                let n: usize = n.parse().map_err(|_| TrainError::Config {
                    what: "run.device".into(),
                    msg: format!("expected cuda:<index>, got {s:?}"),
                })?;
                Device::new_cuda(n).ctx("opening the CUDA device (build with --features cuda)")
            } else {
                Err(TrainError::Config {
                    what: "run.device".into(),
                    msg: format!("expected cpu, cuda or cuda:N, got {s:?}"),
                })
            }
        }
    }
}

/// How a run's learning-rate schedule is indexed.
pub struct Schedule {
    inner: Box<dyn LrSchedule>,
    per_epoch: bool,
}

impl Schedule {
    /// Builds the configured schedule for `steps_per_epoch` optimiser steps per epoch.
    pub fn new(cfg: &Config, steps_per_epoch: usize) -> Result<Self, TrainError> {
        let o = &cfg.optim;
        let total_steps_run = o.epochs * steps_per_epoch.max(1);
        let oc = |total: usize| -> Result<Box<dyn LrSchedule>, TrainError> {
            let mut c = OneCycleConfig::new(o.lr, total);
            c.pct_start = o.pct_start;
            Ok(Box::new(OneCycle::new(c).map_err(|e| {
                TrainError::Config {
                    what: "optim.schedule".into(),
                    msg: e.to_string(),
                }
            })?))
        };
        let (inner, per_epoch): (Box<dyn LrSchedule>, bool) = match o.schedule.as_str() {
            "onecycle-epoch" => (
                oc(if o.total_steps > 0 {
                    o.total_steps
                } else {
                    o.epochs
                })?,
                true,
            ),
            "onecycle-step" => (
                oc(if o.total_steps > 0 {
                    o.total_steps
                } else {
                    total_steps_run
                })?,
                false,
            ),
            "cosine" => (
                Box::new(CosineWarmup {
                    base_lr: o.lr,
                    warmup_steps: o.warmup_epochs * steps_per_epoch,
                    total_steps: total_steps_run,
                    final_ratio: 0.001,
                }),
                false,
            ),
            "step" => (
                Box::new(StepMilestones {
                    base_lr: o.lr,
                    milestones: o.milestones.clone(),
                    gamma: o.gamma,
                }),
                true,
            ),
            _ => (Box::new(Constant(o.lr)), true),
        };
        Ok(Self { inner, per_epoch })
    }

    /// The scheduler step for a batch: per-epoch schedules are stepped once at the start of each
    /// epoch, before its first batch (the reference's OneCycle: epoch e uses step e + 1; for
    /// milestones, epoch e uses e); per-step schedules use the global step.
    pub fn index(&self, epoch: usize, global_step: usize, onecycle: bool) -> usize {
        if self.per_epoch {
            if onecycle {
                epoch + 1
            } else {
                epoch
            }
        } else {
            global_step
        }
    }

    /// The schedule.
    pub fn schedule(&self) -> &dyn LrSchedule {
        &*self.inner
    }
}

/// Builds the optimiser: heads and backbone as two groups (backbone lr x `backbone_lr_mult`),
/// weight decay on every trainable parameter as the reference, never on BN running statistics.
pub fn build_optimizer(
    cfg: &Config,
    varmap: &candle_nn::VarMap,
) -> Result<Box<dyn Optimizer>, TrainError> {
    let o = &cfg.optim;
    let (heads, backbone) =
        av_optim::partition_by_prefix(av_optim::trainable_vars(varmap), &format!("{HEAD_PREFIX}."));
    let groups = vec![
        ParamGroup::new(heads, o.weight_decay),
        ParamGroup::new(backbone, o.weight_decay).with_lr_mult(o.backbone_lr_mult),
    ];
    let err = |e: av_optim::OptimError| TrainError::Config {
        what: "optim".into(),
        msg: e.to_string(),
    };
    Ok(match o.name.as_str() {
        "sgd" => Box::new(
            Sgd::new(
                groups,
                SgdConfig {
                    lr: o.lr,
                    momentum: o.momentum,
                    weight_decay: o.weight_decay,
                    dampening: 0.0,
                    nesterov: false,
                },
            )
            .map_err(err)?,
        ),
        "adam" => {
            Box::new(AdamW::new(groups, AdamWConfig::adam_l2(o.lr, o.weight_decay)).map_err(err)?)
        }
        _ => Box::new(AdamW::new(groups, AdamWConfig::adamw(o.lr, o.weight_decay)).map_err(err)?),
    })
}

/// What a finished (or step-limited) pretraining run reports.
#[derive(Debug, Clone)]
pub struct PretrainOutcome {
    /// Run directory.
    pub run_dir: PathBuf,
    /// Optimiser steps taken in total (including before a resume).
    pub steps: usize,
    /// Total loss of every step taken in this process, in order.
    pub losses: Vec<f64>,
    /// Weights file of the final checkpoint.
    pub weights: PathBuf,
    /// Wall-clock seconds of the training loop in this process.
    pub train_s: f64,
    /// Fraction of the loop spent waiting for data.
    pub idle_fraction: f64,
    /// Samples replaced because they failed to load.
    pub bad_samples: usize,
    /// The first few reasons samples failed.
    pub bad_reasons: Vec<String>,
}

/// Where the run directory of a config is.
pub fn run_dir(cfg: &Config) -> PathBuf {
    Path::new(&cfg.run.out_dir).join(&cfg.run.name)
}

/// Runs pretraining. `world` must be the generated synthetic world when `data.source` is
/// `synthetic`. Resumes from `model.resume` (`auto` = this run's `latest.json` if present).
pub fn pretrain(
    cfg: &Config,
    run_dir: &Path,
    world: Option<&Arc<av_synth::World>>,
    quiet: bool,
) -> Result<PretrainOutcome, TrainError> {
    std::fs::create_dir_all(run_dir).map_err(|e| TrainError::io(run_dir, e))?;
    cfg.save(run_dir)?;
    let device = select_device(&cfg.run.device)?;
    let dist: Box<dyn Distributed> = Box::new(SingleProcess);
    let videos = pretrain_videos(cfg, world)?;
    let ds = Arc::new(PretrainDataset::new(cfg, videos)?);
    let bs = cfg.optim.batch_size / dist.world_size();
    let spe = batches_per_epoch(crate::loader::Dataset::len(&*ds), bs);
    if spe == 0 {
        return Err(TrainError::Config {
            what: "data.samples_per_epoch".into(),
            msg: format!(
                "{} samples per epoch is less than one batch of {bs}",
                crate::loader::Dataset::len(&*ds)
            ),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.run.seed, 0x7a17, 0, 0));
    let mut model = PretrainModel::new(cfg, &device, ds.n_videos(), &mut rng)?;
    if !cfg.model.init.is_empty() {
        let n = model.init_from(Path::new(&cfg.model.init))?;
        tracing::info!("initialised {n} encoder tensors from {}", cfg.model.init);
    }
    let mut opt = build_optimizer(cfg, &model.varmap)?;
    let sched = Schedule::new(cfg, spe)?;
    let onecycle = cfg.optim.schedule == "onecycle-epoch";
    let mut ckm = CheckpointManager::new(
        run_dir.join("checkpoints"),
        cfg.checkpoint.keep_last,
        cfg.checkpoint.latest_minutes,
    )?;

    let (mut epoch, mut start_batch, mut step, mut bad_before) = (0usize, 0usize, 0usize, 0usize);
    let resume = match cfg.model.resume.as_str() {
        "" => None,
        "auto" => Some(run_dir.join("checkpoints").join("latest.json")).filter(|p| p.is_file()),
        p => Some(PathBuf::from(p)),
    };
    if let Some(path) = resume {
        let ck = checkpoint::load_checkpoint(&path, &device)?;
        checkpoint::restore_varmap(&model.varmap, &ck.model, &ck.path)?;
        let (extra, optim): (
            std::collections::HashMap<_, _>,
            std::collections::HashMap<_, _>,
        ) = ck
            .optim
            .into_iter()
            .partition(|(k, _)| k.starts_with("xid."));
        opt.load_state(&optim).map_err(|e| TrainError::Checkpoint {
            path: ck.path.clone(),
            msg: format!("optimiser state: {e}"),
        })?;
        model.load_extra_state(&extra)?;
        rng = ck
            .state
            .rng
            .restore()
            .map_err(|msg| TrainError::Checkpoint {
                path: ck.path.clone(),
                msg,
            })?;
        epoch = ck.state.epoch;
        start_batch = ck.state.batch_in_epoch;
        step = ck.state.step;
        bad_before = ck.state.bad_samples;
        tracing::info!(
            "resumed from {} at epoch {epoch}, batch {start_batch}, step {step}",
            ck.path.display()
        );
    }

    let stats = Arc::new(LoaderStats::default());
    let lcfg = LoaderConfig {
        workers: cfg.data.workers,
        prefetch: cfg.data.prefetch,
        batch_size: bs,
        seed: cfg.run.seed,
        shuffle: true,
        max_retries: cfg.data.max_retries,
    };
    let total_steps = cfg.optim.epochs * spe;
    let limit = if cfg.run.max_steps > 0 {
        cfg.run.max_steps.min(total_steps)
    } else {
        total_steps
    };
    let mut metrics = MetricsLog::open(&run_dir.join("metrics.jsonl"))?;
    let progress = Progress::new(limit, step.min(limit), quiet);
    let t_start = Instant::now();
    let mut losses = Vec::new();
    let mut last_weights = None;
    let mut samples_done = 0usize;

    let make_state = |epoch: usize,
                      batch: usize,
                      step: usize,
                      rng: &ChaCha8Rng,
                      bad: usize,
                      extra: serde_json::Value| TrainState {
        version: 1,
        epoch,
        step,
        batch_in_epoch: batch,
        scheduler_step: sched.index(epoch, step, onecycle),
        rng: RngState::capture(rng),
        bad_samples: bad,
        model_file: String::new(),
        optim_file: String::new(),
        extra,
    };
    let save = |kind: CheckpointKind,
                ckm: &mut CheckpointManager,
                model: &PretrainModel,
                opt: &dyn Optimizer,
                st: &TrainState|
     -> Result<PathBuf, TrainError> {
        let weights = checkpoint::varmap_tensors(&model.varmap);
        let mut optim = opt
            .state_tensors()
            .map_err(|e| TrainError::other("optimiser state", e))?;
        optim.extend(model.extra_state()?);
        let p = ckm.save(kind, &weights, &optim, st)?;
        Ok(p.with_extension("safetensors"))
    };

    'epochs: while epoch < cfg.optim.epochs && step < limit {
        opt.apply_schedule(sched.schedule(), sched.index(epoch, step, onecycle));
        let loader = EpochLoader::new(ds.clone(), lcfg, epoch, start_batch, stats.clone());
        let mut batch_in_epoch = start_batch;
        for batch in loader {
            let batch = batch?;
            if !sched.per_epoch {
                opt.apply_schedule(sched.schedule(), step);
            }
            let t_step = Instant::now();
            let db = DeviceBatch {
                video_before: batch
                    .data
                    .video_before
                    .to_device(&device)
                    .ctx("batch to device")?,
                video_after: batch
                    .data
                    .video_after
                    .to_device(&device)
                    .ctx("batch to device")?,
                audio: batch.data.audio.to_device(&device).ctx("batch to device")?,
                indices: batch.indices.iter().map(|&i| ds.video_of(i)).collect(),
            };
            // Fused blocks pack their parameters for this step (see av_models::PackedParams).
            let packed = av_models::PackedParams::start();
            let out = model.loss(&db, true, &mut rng)?;
            let mut terms = Vec::with_capacity(out.terms.len());
            for (k, t) in &out.terms {
                terms.push((
                    k.clone(),
                    t.to_dtype(candle_core::DType::F64)
                        .and_then(|t| t.to_scalar::<f64>())
                        .ctx("loss value")?,
                ));
            }
            let total = terms.first().map(|t| t.1).unwrap_or(f64::NAN);
            if !terms.iter().all(|(_, v)| v.is_finite()) {
                let last_good = ckm
                    .last_good()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none".into());
                return Err(TrainError::NonFiniteLoss {
                    epoch,
                    step,
                    terms: terms
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    last_good,
                });
            }
            let grads = packed.backward(&out.total).ctx("backward")?;
            opt.step(&grads)
                .map_err(|e| TrainError::other(format!("optimiser step {step}"), e))?;
            step += 1;
            batch_in_epoch += 1;
            samples_done += bs;
            losses.push(total);
            let elapsed = t_start.elapsed().as_secs_f64();
            let sps = samples_done as f64 / elapsed.max(1e-9);
            let idle = stats.wait_s() / elapsed.max(1e-9);
            let msg = format!(
                "ep {epoch} {} lr {:.2e} {sps:.1} samples/s idle {:.0}%",
                terms
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.4}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                opt.lr(),
                idle * 100.0
            );
            progress.step(msg);
            if cfg.run.log_every > 0 && step % cfg.run.log_every == 0 {
                let mut rec = serde_json::Map::new();
                rec.insert("step".into(), step.into());
                rec.insert("epoch".into(), epoch.into());
                for (k, v) in &terms {
                    rec.insert(k.clone(), (*v).into());
                }
                rec.insert("lr".into(), opt.lr().into());
                rec.insert("step_s".into(), t_step.elapsed().as_secs_f64().into());
                rec.insert("samples_per_s".into(), sps.into());
                rec.insert("idle_fraction".into(), idle.into());
                rec.insert("bad_samples".into(), (bad_before + stats.bad()).into());
                metrics.log("step", &rec)?;
            }
            let due_steps = cfg.checkpoint.latest_every_steps > 0
                && step % cfg.checkpoint.latest_every_steps == 0;
            // Stopping at an epoch boundary is handled by the epoch checkpoint below.
            let stop_mid_epoch = step >= limit && batch_in_epoch < spe;
            if stop_mid_epoch || due_steps || ckm.latest_due() {
                let st = make_state(
                    epoch,
                    batch_in_epoch,
                    step,
                    &rng,
                    bad_before + stats.bad(),
                    serde_json::json!({"method": cfg.method.name, "loss": total}),
                );
                last_weights = Some(save(CheckpointKind::Latest, &mut ckm, &model, &*opt, &st)?);
            }
            if stop_mid_epoch {
                break 'epochs;
            }
        }
        epoch += 1;
        start_batch = 0;
        let every = cfg.checkpoint.every_epochs;
        if (every > 0 && epoch % every == 0) || epoch == cfg.optim.epochs {
            let st = make_state(
                epoch,
                0,
                step,
                &rng,
                bad_before + stats.bad(),
                serde_json::json!({"method": cfg.method.name}),
            );
            last_weights = Some(save(CheckpointKind::Epoch, &mut ckm, &model, &*opt, &st)?);
        }
    }
    progress.finish();
    let train_s = t_start.elapsed().as_secs_f64();
    let weights = match last_weights {
        Some(w) => w,
        None => {
            let st = make_state(
                epoch,
                start_batch,
                step,
                &rng,
                bad_before + stats.bad(),
                serde_json::json!({"method": cfg.method.name}),
            );
            save(CheckpointKind::Latest, &mut ckm, &model, &*opt, &st)?
        }
    };
    // Curves over the whole run (the JSONL file spans resumes).
    let keys = ["loss", "avc", "astc", "inv", "std", "cov"];
    let series = crate::metrics::read_series(&run_dir.join("metrics.jsonl"), "step", &keys)?;
    plot_series(
        &run_dir.join("loss.svg"),
        &format!("{} pretraining loss", cfg.method.name),
        "step",
        &series,
    )?;
    let lr = crate::metrics::read_series(&run_dir.join("metrics.jsonl"), "step", &["lr"])?;
    plot_series(&run_dir.join("lr.svg"), "learning rate", "step", &lr)?;
    drop(metrics);
    let bad_reasons = stats.reasons.lock().map(|r| r.clone()).unwrap_or_default();
    Ok(PretrainOutcome {
        run_dir: run_dir.to_path_buf(),
        steps: step,
        losses,
        weights,
        train_s,
        idle_fraction: stats.wait_s() / train_s.max(1e-9),
        bad_samples: bad_before + stats.bad(),
        bad_reasons,
    })
}
