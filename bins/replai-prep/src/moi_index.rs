//! `replai-prep moi-index`: run the moment-of-interaction detector over every audio / video file
//! of a dataset once, in parallel, and store the moments in a JSON index so training does not
//! redo it every epoch (the reference recomputes it on every `__getitem__`).
//!
//! Entries are keyed by canonical path and carry the file's size and modification time; a rerun
//! with the same detector settings reuses every entry whose file is unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use av_data::{Dataset, MediaLayout};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use moi_detect::{CurveKind, MoiConfig, Moment};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Version of the index file layout.
const INDEX_VERSION: u32 = 1;

/// Which energy curve the detector searches.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Curve {
    /// The released RepLAI code (scipy PSD spectrogram).
    ScipyPsd,
    /// The paper's wording (log-mel bands).
    LogMel,
}

/// Arguments of `replai-prep moi-index`.
#[derive(clap::Args, Debug)]
pub struct MoiIndexArgs {
    /// Index every file under this directory (recursively) whose extension is in --ext.
    #[arg(
        long,
        conflicts_with = "manifest",
        required_unless_present = "manifest"
    )]
    dir: Option<PathBuf>,
    /// Extensions indexed with --dir (comma-separated, case-insensitive).
    #[arg(
        long,
        default_value = "wav,flac,mp4,m4a,mkv,ogg,mp3",
        value_delimiter = ','
    )]
    ext: Vec<String>,
    /// Index the media of a dataset manifest (its WAVs for the frame-folder layout).
    #[arg(long, requires = "root")]
    manifest: Option<PathBuf>,
    /// Data root of --manifest.
    #[arg(long)]
    root: Option<PathBuf>,
    /// Splits of --manifest to index (repeatable; default: all).
    #[arg(long)]
    split: Vec<String>,
    /// Output JSON index; an existing index is updated incrementally.
    #[arg(long)]
    out: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Minimal peak prominence (RepLAI: 1.0).
    #[arg(long, default_value_t = 1.0)]
    prominence: f64,
    /// Margin between a moment and its clips, seconds (RepLAI command: 0.1).
    #[arg(long, default_value_t = 0.1)]
    delta_s: f64,
    /// Length of each before/after clip, seconds (RepLAI: 0.5).
    #[arg(long, default_value_t = 0.5)]
    clip_s: f64,
    /// Energy curve.
    #[arg(long, value_enum, default_value = "scipy-psd")]
    curve: Curve,
    /// Recompute every entry even if the file is unchanged.
    #[arg(long)]
    force: bool,
}

/// The JSON index file.
#[derive(Debug, Serialize, Deserialize)]
pub struct MoiIndexFile {
    /// Layout version.
    pub version: u32,
    /// Detector settings every entry was computed with.
    pub config: MoiConfig,
    /// Entries by canonical path.
    pub files: BTreeMap<String, IndexEntry>,
}

/// Moments of one file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexEntry {
    /// File size in bytes when indexed.
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch when indexed.
    pub mtime_ns: u128,
    /// Native sample rate of the decoded audio.
    pub sample_rate: u32,
    /// Audio duration in seconds.
    pub duration_s: f64,
    /// Valid moments, in time order.
    pub moments: Vec<Moment>,
}

fn file_key(p: &Path) -> Result<(String, u64, u128)> {
    let canon = std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))?;
    let meta = std::fs::metadata(&canon)
        .with_context(|| format!("reading metadata of {}", p.display()))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok((canon.to_string_lossy().into_owned(), meta.len(), mtime))
}

fn walk(dir: &Path, exts: &BTreeSet<String>, out: &mut Vec<PathBuf>) -> Result<()> {
    let rd = std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in rd {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let p = entry.path();
        if p.is_dir() {
            walk(&p, exts, out)?;
        } else if p
            .extension()
            .is_some_and(|e| exts.contains(&e.to_string_lossy().to_ascii_lowercase()))
        {
            out.push(p);
        }
    }
    Ok(())
}

fn inputs(args: &MoiIndexArgs) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if let Some(dir) = &args.dir {
        let exts: BTreeSet<String> = args
            .ext
            .iter()
            .map(|e| e.trim().trim_start_matches('.').to_ascii_lowercase())
            .collect();
        walk(dir, &exts, &mut files)?;
    } else if let (Some(m), Some(root)) = (&args.manifest, &args.root) {
        let manifest = crate::load_manifest(m, false)?;
        let ds = Dataset::load(&manifest, root).context("reading the dataset's annotations")?;
        let splits: Vec<String> = if args.split.is_empty() {
            ds.splits.keys().cloned().collect()
        } else {
            args.split.clone()
        };
        for s in &splits {
            if !ds.splits.contains_key(s) {
                bail!("manifest {} has no split {s:?}", manifest.name);
            }
            if manifest.media.layout == MediaLayout::Frames {
                files.extend(ds.audio_paths(s));
            } else {
                files.extend(ds.media_paths(s, false));
            }
        }
    }
    files.sort();
    files.dedup();
    if files.is_empty() {
        bail!("no input file found");
    }
    Ok(files)
}

fn detect_file(p: &Path, cfg: &MoiConfig) -> Result<(u32, f64, Vec<Moment>)> {
    let (samples, rate) =
        av_audio::decode_mono(p).with_context(|| format!("decoding audio of {}", p.display()))?;
    let duration = if rate == 0 {
        0.0
    } else {
        samples.len() as f64 / f64::from(rate)
    };
    let moments = moi_detect::detect(&samples, rate, cfg)
        .with_context(|| format!("detecting moments in {}", p.display()))?;
    Ok((rate, duration, moments))
}

/// Runs `replai-prep moi-index`.
pub fn run(args: &MoiIndexArgs) -> Result<std::process::ExitCode> {
    let cfg = MoiConfig {
        prominence: args.prominence,
        delta_s: args.delta_s,
        clip_s: args.clip_s,
        curve: match args.curve {
            Curve::ScipyPsd => CurveKind::ScipyPsd,
            Curve::LogMel => CurveKind::LogMel,
        },
        ..MoiConfig::default()
    };
    cfg.validate().context("invalid detector settings")?;
    let files = inputs(args)?;

    let mut old: BTreeMap<String, IndexEntry> = BTreeMap::new();
    if args.out.exists() && !args.force {
        let text = std::fs::read_to_string(&args.out)
            .with_context(|| format!("reading {}", args.out.display()))?;
        let prev: MoiIndexFile = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a MoI index; pass --force to replace it",
                args.out.display()
            )
        })?;
        if prev.version == INDEX_VERSION && prev.config == cfg {
            old = prev.files;
        } else {
            eprintln!(
                "{}: detector settings changed, recomputing every entry",
                args.out.display()
            );
        }
    }

    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} files ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let failures = Mutex::new(Vec::new());
    let reused = std::sync::atomic::AtomicUsize::new(0);
    let work = || -> Vec<(String, IndexEntry)> {
        files
            .par_iter()
            .filter_map(|p| {
                let res = (|| -> Result<(String, IndexEntry)> {
                    let (key, size, mtime_ns) = file_key(p)?;
                    if let Some(e) = old
                        .get(&key)
                        .filter(|e| e.size == size && e.mtime_ns == mtime_ns)
                    {
                        reused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return Ok((key, e.clone()));
                    }
                    let (sample_rate, duration_s, moments) = detect_file(p, &cfg)?;
                    Ok((
                        key,
                        IndexEntry {
                            size,
                            mtime_ns,
                            sample_rate,
                            duration_s,
                            moments,
                        },
                    ))
                })();
                bar.inc(1);
                match res {
                    Ok(kv) => Some(kv),
                    Err(e) => {
                        if let Ok(mut f) = failures.lock() {
                            f.push((p.clone(), format!("{e:#}")));
                        }
                        None
                    }
                }
            })
            .collect()
    };
    let entries = match args.jobs {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build()
            .context("starting worker threads")?
            .install(work),
        None => work(),
    };
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let mut failures = failures.into_inner().unwrap_or_default();
    failures.sort();

    let index = MoiIndexFile {
        version: INDEX_VERSION,
        config: cfg,
        files: entries.into_iter().collect(),
    };
    if let Some(parent) = args.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = args.out.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&index)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;

    let n = index.files.len();
    let reused = reused.into_inner();
    let moments: usize = index.files.values().map(|e| e.moments.len()).sum();
    let without = index
        .files
        .values()
        .filter(|e| e.moments.is_empty())
        .count();
    let audio_s: f64 = index.files.values().map(|e| e.duration_s).sum();
    println!(
        "moi-index: {} files indexed ({} computed, {} unchanged and reused), {} failed",
        n,
        n - reused,
        reused,
        failures.len()
    );
    println!(
        "  {moments} moments in {:.1} min of audio ({:.1} per minute); {without} file(s) without a valid moment (skipped by training)",
        audio_s / 60.0,
        if audio_s > 0.0 { moments as f64 / (audio_s / 60.0) } else { 0.0 }
    );
    println!("  {:.1} s elapsed -> {}", elapsed, args.out.display());
    for (p, e) in &failures {
        eprintln!("failed: {}: {e}", p.display());
    }
    Ok(if failures.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
