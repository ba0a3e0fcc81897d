//! Per-file cache of detected moments, so an epoch does not re-run detection.
//!
//! The index is one JSON file mapping each media path to its size, modification time, video
//! duration and valid moments (or the error that made it unusable). An entry is used only while
//! size and mtime still match the file on disk, and the whole index is discarded when the
//! detector or window settings change (a fingerprint of the configuration is stored).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use moi_detect::Moment;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::VideoError;
use crate::sampler::ReplaiSampler;
use crate::source::open_source;

/// One moment as stored on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMoment {
    /// Time of the peak in seconds.
    pub time_s: f64,
    /// Index of the peak on the detection curve.
    pub index: usize,
    /// Peak prominence.
    pub prominence: f64,
    /// Left base index of the peak.
    pub left_base: usize,
    /// Right base index of the peak.
    pub right_base: usize,
}

impl From<&Moment> for StoredMoment {
    fn from(m: &Moment) -> Self {
        Self {
            time_s: m.time_s,
            index: m.index,
            prominence: m.prominence,
            left_base: m.left_base,
            right_base: m.right_base,
        }
    }
}

impl From<&StoredMoment> for Moment {
    fn from(m: &StoredMoment) -> Self {
        Moment {
            time_s: m.time_s,
            index: m.index,
            prominence: m.prominence,
            left_base: m.left_base,
            right_base: m.right_base,
        }
    }
}

/// Cached detection result for one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// File size in bytes when detection ran.
    pub size: u64,
    /// Modification time (nanoseconds since the Unix epoch) when detection ran.
    pub mtime_ns: u64,
    /// Video duration `D` in seconds.
    pub duration_s: f64,
    /// Valid moments in time order (empty: the segment has none and is replaced by the loader).
    pub moments: Vec<StoredMoment>,
    /// Why the file could not be analysed, if it could not.
    pub error: Option<String>,
}

impl IndexEntry {
    /// The cached moments as detector values.
    pub fn moments(&self) -> Vec<Moment> {
        self.moments.iter().map(Moment::from).collect()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct IndexFile {
    version: u32,
    fingerprint: String,
    entries: BTreeMap<String, IndexEntry>,
}

/// Outcome of [`MomentIndex::build`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    /// Files whose cached entry was still valid.
    pub cached: usize,
    /// Files analysed in this run.
    pub computed: usize,
    /// Files with no valid moment.
    pub without_moments: usize,
    /// Files that failed to open or decode, with the reason.
    pub failed: Vec<(PathBuf, String)>,
}

/// Moments per media file, keyed by (path, size, mtime).
#[derive(Debug, Clone, Default)]
pub struct MomentIndex {
    fingerprint: String,
    entries: BTreeMap<String, IndexEntry>,
}

const VERSION: u32 = 1;

fn stamp(path: &Path) -> Result<(u64, u64), VideoError> {
    let md = std::fs::metadata(path).map_err(|e| VideoError::io(path, e))?;
    let mtime = md
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // Frame folders: the folder's own size is meaningless; use its metadata file's.
    if md.is_dir() {
        let meta = path.join(crate::folder::META_FILE);
        if let Ok(m) = std::fs::metadata(&meta) {
            let mt = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            return Ok((m.len(), mt.max(mtime)));
        }
    }
    Ok((md.len(), mtime))
}

fn key(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

impl MomentIndex {
    /// An empty index for the sampler's configuration.
    pub fn new(sampler: &ReplaiSampler) -> Self {
        Self {
            fingerprint: Self::fingerprint(sampler),
            entries: BTreeMap::new(),
        }
    }

    fn fingerprint(sampler: &ReplaiSampler) -> String {
        let c = sampler.config();
        format!("delta={} clip={} moi={:?}", c.delta_s, c.clip_s, c.moi)
    }

    /// Loads an index; a missing file or one written with other settings gives an empty index.
    pub fn load(path: impl AsRef<Path>, sampler: &ReplaiSampler) -> Result<Self, VideoError> {
        let path = path.as_ref();
        let mut idx = Self::new(sampler);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(idx),
            Err(e) => return Err(VideoError::io(path, e)),
        };
        let file: IndexFile = serde_json::from_str(&text).map_err(|e| VideoError::Index {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if file.version == VERSION && file.fingerprint == idx.fingerprint {
            idx.entries = file.entries;
        }
        Ok(idx)
    }

    /// Writes the index atomically (temporary file + rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), VideoError> {
        let path = path.as_ref();
        let file = IndexFile {
            version: VERSION,
            fingerprint: self.fingerprint.clone(),
            entries: self.entries.clone(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| VideoError::Index {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| VideoError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| VideoError::io(path, e))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `file` if it is still valid (same size and mtime as on disk).
    pub fn get(&self, file: impl AsRef<Path>) -> Option<&IndexEntry> {
        let file = file.as_ref();
        let e = self.entries.get(&key(file))?;
        let (size, mtime) = stamp(file).ok()?;
        (e.size == size && e.mtime_ns == mtime).then_some(e)
    }

    /// Analyses one file (no caching).
    pub fn analyse(file: &Path, sampler: &ReplaiSampler) -> Result<IndexEntry, VideoError> {
        let (size, mtime_ns) = stamp(file)?;
        let mut src = open_source(file)?;
        let duration_s = src.meta().duration_s;
        let entry = match sampler.moments(src.as_mut()) {
            Ok(ms) => IndexEntry {
                size,
                mtime_ns,
                duration_s,
                moments: ms.iter().map(StoredMoment::from).collect(),
                error: None,
            },
            Err(e) => IndexEntry {
                size,
                mtime_ns,
                duration_s,
                moments: Vec::new(),
                error: Some(e.to_string()),
            },
        };
        Ok(entry)
    }

    /// Cached moments of `file`, running detection (and caching the result) when needed.
    pub fn moments_for(
        &mut self,
        file: impl AsRef<Path>,
        sampler: &ReplaiSampler,
    ) -> Result<Vec<Moment>, VideoError> {
        let file = file.as_ref();
        if let Some(e) = self.get(file) {
            return Ok(e.moments());
        }
        let e = Self::analyse(file, sampler)?;
        let ms = e.moments();
        self.entries.insert(key(file), e);
        Ok(ms)
    }

    /// Analyses every file without a valid entry, in parallel (rayon's pool), with a progress
    /// bar on stderr when `progress` is set. Files that fail are recorded, not fatal.
    pub fn build(
        &mut self,
        files: &[PathBuf],
        sampler: &ReplaiSampler,
        progress: bool,
    ) -> BuildReport {
        let todo: Vec<&PathBuf> = files.iter().filter(|f| self.get(f).is_none()).collect();
        let mut report = BuildReport {
            cached: files.len() - todo.len(),
            ..BuildReport::default()
        };
        let bar = if progress {
            let b = indicatif::ProgressBar::new(todo.len() as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "moments {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
            ) {
                b.set_style(style);
            }
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let results: Vec<(PathBuf, Result<IndexEntry, VideoError>)> = todo
            .par_iter()
            .map(|f| {
                let r = Self::analyse(f, sampler);
                bar.inc(1);
                ((*f).clone(), r)
            })
            .collect();
        bar.finish_and_clear();
        for (f, r) in results {
            match r {
                Ok(e) => {
                    report.computed += 1;
                    if let Some(err) = &e.error {
                        report.failed.push((f.clone(), err.clone()));
                    } else if e.moments.is_empty() {
                        report.without_moments += 1;
                    }
                    self.entries.insert(key(&f), e);
                }
                Err(e) => report.failed.push((f, e.to_string())),
            }
        }
        report
    }
}
