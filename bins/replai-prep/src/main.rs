//! Data preparation: cut long videos into segments, extract frame folders, precompute the MoI index, validate a dataset.
//!
//! ```text
//! replai-prep validate  --manifest M.toml --root DIR [--check prepared|sources|annotations]
//! replai-prep segments  --manifest M.toml --root DIR --kind fixed|actions [--split train] ...
//! replai-prep moi-index (--dir DIR | --manifest M.toml --root DIR) --out index.json
//! ```

mod moi_index;
mod segments;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use av_data::{DataError, Manifest, MediaCheck};
use clap::{Parser, Subcommand, ValueEnum};

/// Prepare datasets for RepLAI / AVID / VICReg training and evaluation.
#[derive(Parser, Debug)]
#[command(name = "replai-prep", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a copy of a dataset against its manifest; lists every problem, exits non-zero if any.
    Validate(ValidateArgs),
    /// Cut long videos into fixed 10 s pretraining segments or per-action segments (via ffmpeg).
    Segments(segments::SegmentsArgs),
    /// Detect moments of interaction in every audio/video file, in parallel, into a JSON index.
    MoiIndex(moi_index::MoiIndexArgs),
}

/// Which media `validate` checks.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Check {
    /// The prepared media the samples read (`media.template`).
    Prepared,
    /// The long source videos (`media.sources`).
    Sources,
    /// Only the annotation files.
    Annotations,
}

#[derive(clap::Args, Debug)]
struct ValidateArgs {
    /// Dataset manifest (see data-manifests/).
    #[arg(long)]
    manifest: PathBuf,
    /// Data root the manifest's relative paths start from.
    #[arg(long)]
    root: PathBuf,
    /// What to check besides the annotation files.
    #[arg(long, value_enum, default_value = "prepared")]
    check: Check,
    /// Do not compare class lists with the manifest's stated counts (trimmed or partial copies).
    #[arg(long)]
    ignore_class_counts: bool,
    /// Print the report (or the problem list) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// Loads a manifest; `ignore_counts` drops its stated class counts.
pub(crate) fn load_manifest(path: &std::path::Path, ignore_counts: bool) -> Result<Manifest> {
    let mut m = Manifest::from_file(path)
        .with_context(|| format!("loading manifest {}", path.display()))?;
    if ignore_counts {
        m.classes = Default::default();
    }
    Ok(m)
}

fn validate(args: &ValidateArgs) -> Result<ExitCode> {
    let manifest = load_manifest(&args.manifest, args.ignore_class_counts)?;
    let check = match args.check {
        Check::Prepared => MediaCheck::Prepared,
        Check::Sources => MediaCheck::Sources,
        Check::Annotations => MediaCheck::None,
    };
    match av_data::validate(&manifest, &args.root, check) {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}: OK", report.name);
                for (split, n) in &report.samples {
                    println!("  split {split}: {n} samples");
                }
                let (v, n, l) = report.classes;
                if v + n > 0 {
                    println!("  classes: {v} verbs, {n} nouns");
                }
                if l > 0 {
                    println!("  classes: {l}");
                }
                println!("  media checked: {}", report.media_checked);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(DataError::Invalid(issues)) => {
            if args.json {
                let list: Vec<serde_json::Value> = issues
                    .iter()
                    .map(|i| {
                        serde_json::json!({
                            "file": i.file, "line": i.line, "column": i.column,
                            "field": i.field, "kind": format!("{:?}", i.kind), "reason": i.reason,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                // Every problem, not just the first `Display` lines.
                for i in issues.iter() {
                    println!("{i}");
                }
            }
            eprintln!(
                "{}: {} problem{} found in {}",
                manifest.name,
                issues.len(),
                if issues.len() == 1 { "" } else { "s" },
                args.root.display()
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e).context("validating dataset"),
    }
}

fn main() -> Result<ExitCode> {
    // Per-sample decoding frees and reallocates megabytes; keep them (see av_audio::mem).
    av_audio::mem::keep_freed_memory();
    let cli = Cli::parse();
    match &cli.command {
        Command::Validate(a) => validate(a),
        Command::Segments(a) => segments::run(a),
        Command::MoiIndex(a) => moi_index::run(a),
    }
}
