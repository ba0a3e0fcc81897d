//! `moi-detect`: moments of interaction (RepLAI audio peaks) in audio and video files.
//!
//! Every input file is decoded to mono at its native rate (av-audio: WAV, FLAC, Ogg Vorbis,
//! MP3, AAC in ADTS or MP4/M4A, more with the `ffmpeg` feature), analysed with
//! `moi_detect::analyze`, and reported on stdout, one JSON object per line (or CSV rows) in the
//! order the inputs were given (directories are walked recursively, sorted by path). Files run
//! in parallel. A file that cannot be analysed is reported on stderr with its path and the
//! reason; the exit code is non-zero for that only with `--strict`.

mod plot;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use moi_detect::{CurveKind, MoiAnalysis, MoiConfig};
use rayon::prelude::*;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One JSON object per input file and line.
    Json,
    /// `file,time_s,index,prominence` rows (per frame with `--curve`).
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlotFormat {
    /// Labelled vector plot.
    Svg,
    /// Text-free raster plot (no fonts are compiled in).
    Png,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Curve {
    /// scipy PSD spectrogram, as the released RepLAI code (default).
    Psd,
    /// Log-mel bands (the paper's wording).
    Logmel,
}

/// Detect moments of interaction (audio peaks, RepLAI reference detector) in audio/video files.
#[derive(Debug, Parser)]
#[command(name = "moi-detect", version, about)]
struct Args {
    /// Audio or video files, or directories to walk recursively.
    #[arg(required = true, value_name = "FILE_OR_DIR")]
    inputs: Vec<PathBuf>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Also output the energy curve and its frame times.
    #[arg(long)]
    curve: bool,
    /// Draw the spectrogram, curve and moments. One input: a file ending in .svg or .png. Several
    /// inputs: a directory, receiving `<input file name>.<svg|png>` per input.
    #[arg(long, value_name = "OUT")]
    plot: Option<PathBuf>,
    /// Image format of per-file plots when `--plot` is a directory.
    #[arg(long, value_enum, default_value_t = PlotFormat::Svg)]
    plot_format: PlotFormat,
    /// Files processed in parallel (default: all cores).
    #[arg(long, short = 'j', value_name = "N")]
    jobs: Option<usize>,
    /// Exit with status 1 if any input could not be analysed.
    #[arg(long)]
    strict: bool,
    /// Energy curve.
    #[arg(long = "curve-kind", value_enum, default_value_t = Curve::Psd)]
    curve_kind: Curve,
    /// Minimal prominence of a moment (z-score units).
    #[arg(long, default_value_t = 1.0)]
    prominence: f64,
    /// Minimal distance between moments in frames (224 samples each).
    #[arg(long, default_value_t = 10.0)]
    distance: f64,
    /// Margin around a moment in seconds (validity filter).
    #[arg(long, default_value_t = 0.1)]
    delta: f64,
    /// Clip length in seconds (validity filter).
    #[arg(long, default_value_t = 0.5)]
    clip: f64,
}

#[derive(Serialize)]
struct JsonMoment {
    time_s: f64,
    index: usize,
    prominence: f64,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    file: &'a str,
    sample_rate: u32,
    duration_s: f64,
    moments: Vec<JsonMoment>,
    #[serde(skip_serializing_if = "Option::is_none")]
    curve: Option<&'a [f64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    curve_times_s: Option<&'a [f64]>,
}

/// One analysed file.
struct Report {
    file: String,
    sample_rate: u32,
    duration_s: f64,
    analysis: MoiAnalysis,
}

/// Expands directories (recursively, sorted, hidden entries skipped); plain paths are kept
/// as given so that a missing file is reported like any other bad input.
fn collect_inputs(inputs: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            errors.push(dir.to_path_buf());
            return;
        };
        let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                walk(&p, out, errors);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut errors = Vec::new();
            walk(p, &mut out, &mut errors);
            // Unreadable directories surface as failing inputs.
            out.extend(errors);
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn analyse_file(path: &Path, cfg: &MoiConfig, plot_to: Option<PathBuf>) -> Result<Report> {
    let (mono, sample_rate) = av_audio::decode_mono(path)?;
    let analysis = moi_detect::analyze(&mono, sample_rate, cfg)?;
    if let Some(target) = plot_to {
        plot::draw(&target, path, &mono, sample_rate, &analysis, cfg)
            .with_context(|| format!("plotting to {}", target.display()))?;
    }
    Ok(Report {
        file: path.display().to_string(),
        sample_rate,
        duration_s: mono.len() as f64 / f64::from(sample_rate),
        analysis,
    })
}

/// Where the plot of input `i` goes, or `None` without `--plot`.
fn plot_target(args: &Args, path: &Path, n_inputs: usize) -> Option<PathBuf> {
    let out = args.plot.as_ref()?;
    if n_inputs == 1 && plot::format_of(out).is_some() {
        return Some(out.clone());
    }
    let ext = match args.plot_format {
        PlotFormat::Svg => "svg",
        PlotFormat::Png => "png",
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    Some(out.join(format!("{name}.{ext}")))
}

fn write_report(out: &mut impl Write, r: &Report, args: &Args, first: bool) -> Result<()> {
    let a = &r.analysis;
    match args.format {
        Format::Json => {
            let rep = JsonReport {
                file: &r.file,
                sample_rate: r.sample_rate,
                duration_s: r.duration_s,
                moments: a
                    .valid
                    .iter()
                    .map(|m| JsonMoment {
                        time_s: m.time_s,
                        index: m.index,
                        prominence: m.prominence,
                    })
                    .collect(),
                curve: args.curve.then_some(a.curve.as_slice()),
                curve_times_s: args.curve.then_some(a.times_s.as_slice()),
            };
            serde_json::to_writer(&mut *out, &rep)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let file = csv_field(&r.file);
            if args.curve {
                if first {
                    writeln!(out, "file,index,time_s,curve,moment,prominence")?;
                }
                let mut next = a.valid.iter().peekable();
                for (k, (&c, &t)) in a.curve.iter().zip(&a.times_s).enumerate() {
                    match next.peek() {
                        Some(m) if m.index == k => {
                            writeln!(out, "{file},{k},{t},{c},1,{}", m.prominence)?;
                            next.next();
                        }
                        _ => writeln!(out, "{file},{k},{t},{c},0,")?,
                    }
                }
            } else {
                if first {
                    writeln!(out, "file,time_s,index,prominence")?;
                }
                for m in &a.valid {
                    writeln!(out, "{file},{},{},{}", m.time_s, m.index, m.prominence)?;
                }
            }
        }
    }
    Ok(())
}

/// Quotes a CSV field when needed (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn run(args: &Args) -> Result<bool> {
    let cfg = MoiConfig {
        curve: match args.curve_kind {
            Curve::Psd => CurveKind::ScipyPsd,
            Curve::Logmel => CurveKind::LogMel,
        },
        prominence: args.prominence,
        distance: args.distance,
        delta_s: args.delta,
        clip_s: args.clip,
        ..MoiConfig::default()
    };
    cfg.validate().context("invalid detector options")?;
    let files = collect_inputs(&args.inputs);
    if let Some(out) = &args.plot {
        if files.len() > 1 || plot::format_of(out).is_none() {
            if plot::format_of(out).is_some() {
                bail!(
                    "--plot {}: {} inputs need a directory, not a single image file",
                    out.display(),
                    files.len()
                );
            }
            std::fs::create_dir_all(out)
                .with_context(|| format!("creating plot directory {}", out.display()))?;
        }
    }
    let mut pool = rayon::ThreadPoolBuilder::new();
    if let Some(j) = args.jobs {
        if j == 0 {
            bail!("--jobs must be at least 1");
        }
        pool = pool.num_threads(j);
    }
    let pool = pool.build().context("starting the worker pool")?;
    let bar = if std::io::stderr().is_terminal() && files.len() > 1 {
        let b = ProgressBar::new(files.len() as u64);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed} {wide_msg}")
        {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let n = files.len();
    let results: Vec<Result<Report>> = pool.install(|| {
        files
            .par_iter()
            .map(|p| {
                let r = analyse_file(p, &cfg, plot_target(args, p, n));
                bar.inc(1);
                r
            })
            .collect()
    });
    bar.finish_and_clear();

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut all_ok = true;
    let mut first = true;
    for (path, r) in files.iter().zip(results) {
        match r {
            Ok(rep) => {
                write_report(&mut out, &rep, args, first)?;
                first = false;
            }
            Err(e) => {
                all_ok = false;
                // The library errors already name the file; add it when they do not.
                let msg = format!("{e:#}");
                let p = path.display().to_string();
                if msg.contains(&p) {
                    eprintln!("moi-detect: {msg}");
                } else {
                    eprintln!("moi-detect: {p}: {msg}");
                }
            }
        }
    }
    out.flush()?;
    if files.is_empty() {
        eprintln!("moi-detect: no input files found");
        all_ok = false;
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) if !args.strict => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("moi-detect: {e:#}");
            ExitCode::from(2)
        }
    }
}
