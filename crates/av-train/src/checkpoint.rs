//! Checkpoints: model weights as safetensors under their PyTorch names, optimiser buffers as a
//! second safetensors file, and a small JSON state (epoch, step, sampler position, scheduler
//! step, RNG). Every file is written atomically (temp file, fsync, rename, fsync of the directory),
//! and a checkpoint's JSON is written last, so a crash leaves either the old or the new set.
//!
//! Layout in `<run>/checkpoints/`:
//! * `epoch_NNNN.{safetensors,optim.safetensors,json}`: end of epoch N (1-based count of finished
//!   epochs); only the newest `keep_last` are kept.
//! * `step_NNNNNNNN.*`: timed snapshots in the middle of an epoch; only the newest is kept.
//! * `latest.json`: a copy of the newest checkpoint's JSON (whichever kind); resume reads it.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::TrainError;

/// Writes `bytes` to `path` so that readers see either the old file or the complete new one.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    atomic_write_with(path, |f| f.write_all(bytes))
}

/// Like [`atomic_write`], with the content produced by `write` into the temporary file.
pub fn atomic_write_with(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), TrainError> {
    atomic_write_inner(path, write, || Ok(()))
}

/// The implementation, with a hook between the fsync of the temporary file and the rename so tests
/// can simulate a crash at the worst moment.
pub(crate) fn atomic_write_inner(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> Result<(), TrainError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path.file_name().ok_or_else(|| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: "not a file path".into(),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        write(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        drop(f);
        before_rename()?;
        std::fs::rename(&tmp, path)?;
        // Persist the rename itself; opening a directory for fsync is not supported everywhere.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(TrainError::io(path, e));
    }
    Ok(())
}

/// Serialises tensors as safetensors, atomically.
pub fn save_tensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<(), TrainError> {
    let mut sorted: Vec<(&String, &Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::tensor::serialize(sorted.iter().map(|(k, v)| (k.as_str(), *v)), None)
        .map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("serialising tensors: {e}"),
        })?;
    atomic_write(path, &bytes)
}

/// Loads every tensor of a safetensors file onto `device`.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, TrainError> {
    if !path.is_file() {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: "file not found".into(),
        });
    }
    candle_core::safetensors::load(path, device).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("reading safetensors: {e}"),
    })
}

/// The current values of every variable of a `VarMap`, by name.
pub fn varmap_tensors(varmap: &candle_nn::VarMap) -> HashMap<String, Tensor> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect()
}

/// Copies `tensors` into the variables of `varmap` with the same name; every variable must be
/// present with the same shape (used for exact resume, where a partial load would be a bug).
pub fn restore_varmap(
    varmap: &candle_nn::VarMap,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<(), TrainError> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut missing = Vec::new();
    for (name, var) in data.iter() {
        match tensors.get(name) {
            None => missing.push(name.clone()),
            Some(t) => {
                if t.dims() != var.dims() {
                    return Err(TrainError::Checkpoint {
                        path: path.to_path_buf(),
                        msg: format!(
                            "tensor {name}: checkpoint shape {:?}, model shape {:?}",
                            t.dims(),
                            var.dims()
                        ),
                    });
                }
                let t = t
                    .to_dtype(var.dtype())
                    .and_then(|t| t.to_device(var.device()))
                    .map_err(|e| TrainError::Checkpoint {
                        path: path.to_path_buf(),
                        msg: format!("tensor {name}: {e}"),
                    })?;
                var.set(&t).map_err(|e| TrainError::Checkpoint {
                    path: path.to_path_buf(),
                    msg: format!("tensor {name}: {e}"),
                })?;
            }
        }
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: format!(
                "{} model tensors missing (architecture mismatch?), e.g. {}",
                missing.len(),
                missing[..missing.len().min(5)].join(", ")
            ),
        });
    }
    Ok(())
}

/// Serialisable position of a `ChaCha8Rng`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngState {
    /// The 32-byte seed, hex.
    pub seed: String,
    /// Stream id.
    pub stream: u64,
    /// Word position, decimal (u128 does not fit JSON numbers).
    pub word_pos: String,
}

impl RngState {
    /// Captures the exact position of `rng`.
    pub fn capture(rng: &rand_chacha::ChaCha8Rng) -> Self {
        let seed = rng.get_seed().iter().map(|b| format!("{b:02x}")).collect();
        Self {
            seed,
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    /// Rebuilds a generator at the captured position.
    pub fn restore(&self) -> Result<rand_chacha::ChaCha8Rng, String> {
        use rand::SeedableRng;
        if self.seed.len() != 64 {
            return Err(format!(
                "rng seed must be 64 hex digits, got {}",
                self.seed.len()
            ));
        }
        let mut seed = [0u8; 32];
        for (i, b) in seed.iter_mut().enumerate() {
            *b = u8::from_str_radix(&self.seed[2 * i..2 * i + 2], 16)
                .map_err(|e| format!("rng seed: {e}"))?;
        }
        let mut rng = rand_chacha::ChaCha8Rng::from_seed(seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(
            self.word_pos
                .parse::<u128>()
                .map_err(|e| format!("rng word_pos: {e}"))?,
        );
        Ok(rng)
    }
}

/// Everything besides tensors needed to continue a run exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Format version of this file.
    pub version: u32,
    /// Epoch in progress (0-based); equals the number of finished epochs at an epoch boundary.
    pub epoch: usize,
    /// Optimiser steps taken so far.
    pub step: usize,
    /// Batches of `epoch` already consumed (the sampler position).
    pub batch_in_epoch: usize,
    /// Learning-rate scheduler position.
    pub scheduler_step: usize,
    /// Trainer RNG (used by stochastic losses such as xID's negative sampling).
    pub rng: RngState,
    /// Samples skipped as unreadable so far.
    pub bad_samples: usize,
    /// Model weights file, relative to the state file's directory.
    pub model_file: String,
    /// Optimiser buffers file, relative to the state file's directory.
    pub optim_file: String,
    /// Free-form extras (method name, last losses, ...).
    #[serde(default)]
    pub extra: serde_json::Value,
}

/// Writes numbered and timed checkpoints and prunes old ones.
#[derive(Debug)]
pub struct CheckpointManager {
    dir: PathBuf,
    keep_last: usize,
    latest_every: Option<Duration>,
    last_latest: Instant,
    last_good: Option<PathBuf>,
}

/// What kind of checkpoint to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// End of epoch: kept subject to `keep_last`.
    Epoch,
    /// Mid-epoch snapshot: only the newest is kept.
    Latest,
}

impl CheckpointManager {
    /// Creates `dir` if needed. `latest_minutes <= 0` disables timed snapshots.
    pub fn new(
        dir: impl Into<PathBuf>,
        keep_last: usize,
        latest_minutes: f64,
    ) -> Result<Self, TrainError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
        let latest_every = (latest_minutes > 0.0 && latest_minutes.is_finite())
            .then(|| Duration::from_secs_f64(latest_minutes * 60.0));
        let last_good = dir.join("latest.json");
        Ok(Self {
            keep_last: keep_last.max(1),
            latest_every,
            last_latest: Instant::now(),
            last_good: last_good.is_file().then_some(last_good),
            dir,
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True when the timed snapshot is due.
    pub fn latest_due(&self) -> bool {
        self.latest_every
            .is_some_and(|d| self.last_latest.elapsed() >= d)
    }

    /// The last checkpoint state file written or found, for error messages.
    pub fn last_good(&self) -> Option<&Path> {
        self.last_good.as_deref()
    }

    /// Writes a checkpoint; returns the path of its JSON state file.
    pub fn save(
        &mut self,
        kind: CheckpointKind,
        model: &HashMap<String, Tensor>,
        optim: &HashMap<String, Tensor>,
        state: &TrainState,
    ) -> Result<PathBuf, TrainError> {
        let tag = match kind {
            CheckpointKind::Epoch => format!("epoch_{:04}", state.epoch),
            CheckpointKind::Latest => format!("step_{:08}", state.step),
        };
        let model_file = format!("{tag}.safetensors");
        let optim_file = format!("{tag}.optim.safetensors");
        save_tensors(&self.dir.join(&model_file), model)?;
        save_tensors(&self.dir.join(&optim_file), optim)?;
        let mut st = state.clone();
        st.model_file = model_file;
        st.optim_file = optim_file;
        let json = serde_json::to_vec_pretty(&st)
            .map_err(|e| TrainError::other("serialising train state", e))?;
        let state_path = self.dir.join(format!("{tag}.json"));
        atomic_write(&state_path, &json)?;
        atomic_write(&self.dir.join("latest.json"), &json)?;
        self.last_latest = Instant::now();
        self.last_good = Some(state_path.clone());
        self.prune(&tag)?;
        Ok(state_path)
    }

    /// Deletes older step snapshots and epoch checkpoints beyond `keep_last`.
    fn prune(&self, keep_tag: &str) -> Result<(), TrainError> {
        let mut epochs = Vec::new();
        let mut steps = Vec::new();
        let rd = std::fs::read_dir(&self.dir).map_err(|e| TrainError::io(&self.dir, e))?;
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(tag) = name.strip_suffix(".json") {
                if tag.starts_with("epoch_") {
                    epochs.push(tag.to_string());
                } else if tag.starts_with("step_") {
                    steps.push(tag.to_string());
                }
            }
        }
        epochs.sort();
        steps.sort();
        let mut doomed: Vec<String> = steps.into_iter().filter(|t| t != keep_tag).collect();
        if epochs.len() > self.keep_last {
            let n = epochs.len() - self.keep_last;
            doomed.extend(epochs.into_iter().take(n).filter(|t| t != keep_tag));
        }
        for tag in doomed {
            // The JSON goes first so a half-deleted set is never mistaken for a checkpoint.
            for suffix in [".json", ".safetensors", ".optim.safetensors"] {
                let p = self.dir.join(format!("{tag}{suffix}"));
                if p.exists() {
                    std::fs::remove_file(&p).map_err(|e| TrainError::io(&p, e))?;
                }
            }
        }
        Ok(())
    }
}

/// A checkpoint read back from disk.
#[derive(Debug)]
pub struct LoadedCheckpoint {
    /// Its state.
    pub state: TrainState,
    /// Model tensors by name.
    pub model: HashMap<String, Tensor>,
    /// Optimiser buffers by name.
    pub optim: HashMap<String, Tensor>,
    /// The JSON file it was read from.
    pub path: PathBuf,
}

/// Resolves a user-given location to a checkpoint state file: a `.json` state, a run directory
/// (`<run>/checkpoints/latest.json`), or a checkpoint directory (`latest.json`).
pub fn resolve_state_file(path: &Path) -> Result<PathBuf, TrainError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    for cand in [
        path.join("checkpoints").join("latest.json"),
        path.join("latest.json"),
    ] {
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: "no checkpoint state found (expected a .json state file, a run directory with checkpoints/latest.json, or a checkpoint directory)".into(),
    })
}

/// Reads a checkpoint's state and tensors.
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<LoadedCheckpoint, TrainError> {
    let path = resolve_state_file(path)?;
    let text = std::fs::read_to_string(&path).map_err(|e| TrainError::io(&path, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: path.clone(),
        msg: format!("malformed state: {e}"),
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let model = load_tensors(&dir.join(&state.model_file), device)?;
    let optim = load_tensors(&dir.join(&state.optim_file), device)?;
    Ok(LoadedCheckpoint {
        state,
        model,
        optim,
        path,
    })
}

/// Model weights file of a checkpoint location: a `.safetensors` file is returned as is,
/// anything else goes through [`resolve_state_file`].
pub fn resolve_weights_file(path: &Path) -> Result<PathBuf, TrainError> {
    if path.is_file() && path.extension().is_some_and(|e| e != "json") {
        return Ok(path.to_path_buf());
    }
    let state_path = resolve_state_file(path)?;
    let text = std::fs::read_to_string(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: state_path.clone(),
        msg: format!("malformed state: {e}"),
    })?;
    Ok(state_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(state.model_file))
}

/// 64-bit FNV-1a of a file's bytes: a cheap content key for feature caches (not cryptographic).
pub fn file_hash(path: &Path) -> Result<u64, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    Ok(fnv1a(&bytes))
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};

    #[test]
    fn failed_write_keeps_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("w.bin");
        atomic_write(&p, b"old contents").expect("first write");
        // Crash after the new bytes are fully written and synced, just before the rename.
        let err = atomic_write_inner(
            &p,
            |f| f.write_all(b"new contents that never land"),
            || Err(std::io::Error::other("simulated crash")),
        );
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"old contents");
        // A writer failing half-way also leaves the old file and no temporary behind.
        let err = atomic_write_with(&p, |f| {
            f.write_all(b"partial")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&p).expect("read"), b"old contents");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
        atomic_write(&p, b"new").expect("second write");
        assert_eq!(std::fs::read(&p).expect("read"), b"new");
    }

    #[test]
    fn rng_state_round_trips() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
        for _ in 0..7 {
            rng.next_u32();
        }
        let st = RngState::capture(&rng);
        let mut back = st.restore().expect("restore");
        for _ in 0..10 {
            assert_eq!(rng.next_u64(), back.next_u64());
        }
    }

    fn state(epoch: usize, step: usize) -> TrainState {
        TrainState {
            version: 1,
            epoch,
            step,
            batch_in_epoch: 0,
            scheduler_step: epoch,
            rng: RngState::capture(&rand_chacha::ChaCha8Rng::seed_from_u64(0)),
            bad_samples: 0,
            model_file: String::new(),
            optim_file: String::new(),
            extra: serde_json::Value::Null,
        }
    }

    #[test]
    fn keeps_last_k_and_latest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = CheckpointManager::new(dir.path().join("ck"), 2, 0.0).expect("manager");
        let dev = Device::Cpu;
        let mut model = HashMap::new();
        for e in 1..=4 {
            model.insert(
                "w".to_string(),
                Tensor::full(e as f32, (2, 2), &dev).expect("tensor"),
            );
            m.save(
                CheckpointKind::Epoch,
                &model,
                &HashMap::new(),
                &state(e, e * 10),
            )
            .expect("save");
        }
        m.save(
            CheckpointKind::Latest,
            &model,
            &HashMap::new(),
            &state(4, 43),
        )
        .expect("save latest");
        m.save(
            CheckpointKind::Latest,
            &model,
            &HashMap::new(),
            &state(4, 47),
        )
        .expect("save latest");
        let mut names: Vec<String> = std::fs::read_dir(m.dir())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "epoch_0003.json",
                "epoch_0004.json",
                "latest.json",
                "step_00000047.json"
            ]
        );
        let ck = load_checkpoint(dir.path().join("ck").as_path(), &dev).expect("load latest");
        assert_eq!(ck.state.step, 47);
        let w = ck.model["w"]
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("values");
        assert_eq!(w, vec![4.0; 4]);
        assert!(load_checkpoint(&dir.path().join("nope"), &dev).is_err());
    }
}
