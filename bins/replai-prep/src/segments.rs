//! `replai-prep segments`: cut the long source videos of a dataset into the files the reference
//! trains and evaluates on, by running the `ffmpeg` command-line tool.
//!
//! * `--kind fixed`: consecutive 10 s windows of every source video of the split, named
//!   `<video_id>_<start:06>_<stop:06>.MP4` (RepLAI pretraining segments);
//! * `--kind actions`: one file per annotated action, named
//!   `<video_id>_<HHMMSScc>_<HHMMSScc>.MP4` (RepLAI linear-probe action segments).
//!
//! Video is re-encoded (H.264, frame-accurate cuts; input-side seeking while transcoding is exact
//! in ffmpeg), at `--fps` (default: the manifest's `media.fps`) and with audio resampled to
//! `--audio-rate` (default: `media.audio_rate`). `--frames` writes a JPEG frame folder (with the
//! `meta.toml` that `av_video::FrameFolderSource` reads) plus a mono 16-bit WAV per segment instead. Existing outputs are skipped unless `--overwrite`, so an
//! interrupted run can be resumed; every output is written under a temporary name and renamed
//! when complete.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use av_data::{fixed_windows, pretrain_segment_name, Dataset, SplitData};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// What to cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// Consecutive fixed-length windows of every source video (pretraining segments).
    Fixed,
    /// One segment per annotated action (evaluation segments).
    Actions,
}

/// Arguments of `replai-prep segments`.
#[derive(clap::Args, Debug)]
pub struct SegmentsArgs {
    /// Dataset manifest; its `media.sources` template locates the long videos.
    #[arg(long)]
    manifest: PathBuf,
    /// Data root the manifest's relative paths start from.
    #[arg(long)]
    root: PathBuf,
    /// Fixed windows or per-action segments.
    #[arg(long, value_enum)]
    kind: Kind,
    /// Splits whose videos / actions are cut (repeatable).
    #[arg(long, default_values_t = vec!["train".to_string()])]
    split: Vec<String>,
    /// Output directory (default: `<root>/<media root>/segments` or `.../action_segments`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Window length in whole seconds (`--kind fixed`).
    #[arg(long, default_value_t = 10)]
    segment_s: u64,
    /// Keep a shorter last window when at least this long (default: complete windows only).
    #[arg(long)]
    min_tail_s: Option<f64>,
    /// Output frame rate (default: the manifest's `media.fps`; native if neither).
    #[arg(long)]
    fps: Option<f64>,
    /// Output audio sample rate (default: the manifest's `media.audio_rate`; native if neither).
    #[arg(long)]
    audio_rate: Option<u32>,
    /// Keep the source frame rate and sample rate, ignoring the manifest.
    #[arg(long, conflicts_with_all = ["fps", "audio_rate"])]
    native: bool,
    /// Scale so that the shorter side has this many pixels (aspect kept).
    #[arg(long)]
    short_side: Option<u32>,
    /// Write a frame folder (`%06d.jpg`) and a mono WAV per segment instead of a video file.
    #[arg(long)]
    frames: bool,
    /// Extension of the video outputs.
    #[arg(long, default_value = "MP4")]
    ext: String,
    /// x264 constant rate factor of the video outputs.
    #[arg(long, default_value_t = 23)]
    crf: u32,
    /// Parallel ffmpeg processes.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Re-create outputs that already exist.
    #[arg(long)]
    overwrite: bool,
    /// Print the ffmpeg command lines instead of running them.
    #[arg(long)]
    dry_run: bool,
    /// Do not compare class lists with the manifest's stated counts.
    #[arg(long)]
    ignore_class_counts: bool,
    /// The ffmpeg executable.
    #[arg(long, default_value = "ffmpeg")]
    ffmpeg: PathBuf,
    /// The ffprobe executable (durations for `--kind fixed`).
    #[arg(long, default_value = "ffprobe")]
    ffprobe: PathBuf,
}

/// One segment to cut.
#[derive(Debug, Clone)]
struct Job {
    src: PathBuf,
    start_s: f64,
    dur_s: f64,
    /// Video file, or frame folder with `--frames`.
    out: PathBuf,
    /// WAV next to the frame folder with `--frames`.
    wav: Option<PathBuf>,
}

/// Transcoding settings shared by all jobs.
struct Encode {
    fps: Option<f64>,
    audio_rate: Option<u32>,
    short_side: Option<u32>,
    crf: u32,
}

/// Checks that a tool runs; a missing binary gets an actionable message.
fn require_tool(tool: &Path) -> Result<()> {
    match Command::new(tool).arg("-version").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => bail!("{} -version failed with {}", tool.display(), o.status),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "`{}` was not found on PATH. `replai-prep segments` cuts and transcodes video with the \
             ffmpeg command-line tools: install them (Debian/Ubuntu: `apt-get install ffmpeg`) or \
             pass --ffmpeg/--ffprobe with their paths",
            tool.display()
        ),
        Err(e) => Err(e).with_context(|| format!("running {}", tool.display())),
    }
}

/// Container duration in seconds, from ffprobe.
fn probe_duration(ffprobe: &Path, src: &Path) -> Result<f64> {
    let out = Command::new(ffprobe)
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=noprint_wrappers=1:nokey=1",
        ])
        .arg(src)
        .output()
        .with_context(|| format!("running {} on {}", ffprobe.display(), src.display()))?;
    if !out.status.success() {
        bail!(
            "ffprobe failed on {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let d: f64 = text.trim().parse().with_context(|| {
        format!(
            "ffprobe printed no duration for {} ({:?})",
            src.display(),
            text.trim()
        )
    })?;
    if !(d.is_finite() && d > 0.0) {
        bail!("{} has duration {d}", src.display());
    }
    Ok(d)
}

/// The ffmpeg argument list of one job.
fn ffmpeg_args(
    job: &Job,
    enc: &Encode,
    frames: bool,
    tmp_out: &Path,
    tmp_wav: Option<&Path>,
) -> Vec<String> {
    let mut a: Vec<String> = ["-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Input-side seek + duration: applies to every output; exact when transcoding.
    a.extend([
        "-ss".into(),
        format!("{:.3}", job.start_s),
        "-t".into(),
        format!("{:.3}", job.dur_s),
        "-i".into(),
    ]);
    a.push(job.src.to_string_lossy().into_owned());
    let mut filters = Vec::new();
    if let Some(fps) = enc.fps {
        filters.push(format!("fps={fps}"));
    }
    if let Some(s) = enc.short_side {
        filters.push(format!(
            "scale='if(gt(iw,ih),-2,{s})':'if(gt(iw,ih),{s},-2)'"
        ));
    }
    a.extend(["-map".into(), "0:v:0".into()]);
    if !filters.is_empty() {
        a.extend(["-vf".into(), filters.join(",")]);
    }
    if frames {
        a.extend([
            "-q:v".into(),
            "2".into(),
            "-start_number".into(),
            "1".into(),
        ]);
        a.push(tmp_out.join("%06d.jpg").to_string_lossy().into_owned());
        if let Some(wav) = tmp_wav {
            a.extend([
                "-map".into(),
                "0:a:0".into(),
                "-vn".into(),
                "-ac".into(),
                "1".into(),
            ]);
            if let Some(r) = enc.audio_rate {
                a.extend(["-ar".into(), r.to_string()]);
            }
            a.extend(["-c:a".into(), "pcm_s16le".into()]);
            a.push(wav.to_string_lossy().into_owned());
        }
    } else {
        a.extend(["-map".into(), "0:a:0?".into()]);
        a.extend(
            [
                "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        a.extend(["-crf".into(), enc.crf.to_string()]);
        a.extend(["-c:a".into(), "aac".into(), "-b:a".into(), "128k".into()]);
        if let Some(r) = enc.audio_rate {
            a.extend(["-ar".into(), r.to_string()]);
        }
        a.extend(["-movflags".into(), "+faststart".into()]);
        a.push(tmp_out.to_string_lossy().into_owned());
    }
    a
}

/// Temporary sibling of an output path (same extension so ffmpeg picks the same muxer).
fn partial(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = match name.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.partial.{ext}"),
        None => format!("{name}.partial"),
    };
    path.with_file_name(tmp)
}

fn run_job(ffmpeg: &Path, job: &Job, enc: &Encode, frames: bool) -> Result<()> {
    let tmp_out = partial(&job.out);
    let tmp_wav = job.wav.as_deref().map(partial);
    if frames {
        if tmp_out.exists() {
            std::fs::remove_dir_all(&tmp_out)
                .with_context(|| format!("removing stale {}", tmp_out.display()))?;
        }
        std::fs::create_dir_all(&tmp_out)
            .with_context(|| format!("creating {}", tmp_out.display()))?;
    }
    let args = ffmpeg_args(job, enc, frames, &tmp_out, tmp_wav.as_deref());
    let out = Command::new(ffmpeg)
        .args(&args)
        .output()
        .with_context(|| format!("running {}", ffmpeg.display()))?;
    if !out.status.success() {
        let _ = if frames {
            std::fs::remove_dir_all(&tmp_out)
        } else {
            std::fs::remove_file(&tmp_out)
        };
        if let Some(w) = &tmp_wav {
            let _ = std::fs::remove_file(w);
        }
        bail!(
            "ffmpeg failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    if frames
        && std::fs::read_dir(&tmp_out)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    {
        bail!(
            "ffmpeg wrote no frame for [{:.3}, +{:.3}] s",
            job.start_s,
            job.dur_s
        );
    }
    if frames {
        // What av_video::FrameFolderSource needs to open the folder: the frame rate, and the WAV
        // written next to it.
        let mut meta = format!("fps = {:?}\n", enc.fps.unwrap_or(16.0));
        if let Some(w) = job.wav.as_deref().and_then(Path::file_name) {
            meta.push_str(&format!("audio = \"../{}\"\n", w.to_string_lossy()));
        }
        let meta_path = tmp_out.join("meta.toml");
        std::fs::write(&meta_path, meta)
            .with_context(|| format!("writing {}", meta_path.display()))?;
    }
    if frames && job.out.exists() {
        std::fs::remove_dir_all(&job.out)
            .with_context(|| format!("replacing {}", job.out.display()))?;
    }
    std::fs::rename(&tmp_out, &job.out)
        .with_context(|| format!("renaming into {}", job.out.display()))?;
    if let (Some(tmp), Some(wav)) = (tmp_wav, &job.wav) {
        std::fs::rename(&tmp, wav).with_context(|| format!("renaming into {}", wav.display()))?;
    }
    Ok(())
}

/// Builds the job list from the manifest.
fn plan(args: &SegmentsArgs, ds: &Dataset, out_dir: &Path) -> Result<Vec<Job>> {
    let media = &ds.manifest.media;
    let sources = media.sources.as_deref().unwrap_or(media.template.as_str());
    let base = ds.root.join(&ds.manifest.roots.media);
    let mut jobs = Vec::new();
    let name_out = |stem: &str| -> (PathBuf, Option<PathBuf>) {
        if args.frames {
            (
                out_dir.join(stem),
                Some(out_dir.join(format!("{stem}.wav"))),
            )
        } else {
            (out_dir.join(format!("{stem}.{}", args.ext)), None)
        }
    };
    for split in &args.split {
        let data = ds.splits.get(split).with_context(|| {
            format!(
                "manifest {} has no split {split:?} (it has: {:?})",
                ds.manifest.name,
                ds.splits.keys().collect::<Vec<_>>()
            )
        })?;
        match args.kind {
            Kind::Actions => {
                let SplitData::Segments(segs) = data else {
                    bail!(
                        "split {split} of {} has no temporal action annotations; use --kind fixed",
                        ds.manifest.name
                    );
                };
                let vars = data.template_vars();
                for (s, v) in segs.iter().zip(vars) {
                    let (out, wav) = name_out(&s.stem());
                    let dur = s.duration_s();
                    if dur <= 0.0 {
                        bail!(
                            "action {} of {} has zero length; cannot cut it",
                            s.uid,
                            s.video_id
                        );
                    }
                    jobs.push(Job {
                        src: base.join(v.render(sources)),
                        start_s: s.start_s,
                        dur_s: dur,
                        out,
                        wav,
                    });
                }
            }
            Kind::Fixed => {
                // One entry per source video, in name order.
                let mut videos: BTreeMap<PathBuf, String> = BTreeMap::new();
                for v in data.template_vars() {
                    videos.insert(base.join(v.render(sources)), v.video_id.clone());
                }
                for (src, video_id) in videos {
                    let d = probe_duration(&args.ffprobe, &src)?;
                    let min_tail = args.min_tail_s.unwrap_or(args.segment_s as f64);
                    for (a, b) in fixed_windows(d, args.segment_s, min_tail) {
                        let name = pretrain_segment_name(&video_id, a, b, &args.ext);
                        let stem = name
                            .rsplit_once('.')
                            .map_or(name.as_str(), |(s, _)| s)
                            .to_string();
                        let (out, wav) = name_out(&stem);
                        jobs.push(Job {
                            src: src.clone(),
                            start_s: a as f64,
                            dur_s: (b - a) as f64,
                            out,
                            wav,
                        });
                    }
                }
            }
        }
    }
    // Different splits can share videos (fixed windows); keep each output once.
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|j| seen.insert(j.out.clone()));
    Ok(jobs)
}

/// Runs `replai-prep segments`.
pub fn run(args: &SegmentsArgs) -> Result<std::process::ExitCode> {
    let manifest = crate::load_manifest(&args.manifest, args.ignore_class_counts)?;
    let ds = Dataset::load(&manifest, &args.root).context("reading the dataset's annotations")?;
    if args.segment_s == 0 {
        bail!("--segment-s must be positive");
    }
    if let Some(f) = args.fps {
        if !(f.is_finite() && f > 0.0) {
            bail!("--fps must be positive, got {f}");
        }
    }
    if args.frames && (args.native || args.fps.or(manifest.media.fps).is_none()) {
        bail!(
            "--frames needs a frame rate for each folder's meta.toml: give --fps (or media.fps in the manifest), not --native"
        );
    }
    let enc = Encode {
        fps: if args.native {
            None
        } else {
            args.fps.or(manifest.media.fps)
        },
        audio_rate: if args.native {
            None
        } else {
            args.audio_rate.or(manifest.media.audio_rate)
        },
        short_side: args.short_side,
        crf: args.crf,
    };
    let out_dir = match &args.out {
        Some(o) => o.clone(),
        None => args.root.join(&manifest.roots.media).join(match args.kind {
            Kind::Fixed => "segments",
            Kind::Actions => "action_segments",
        }),
    };
    if !args.dry_run || args.kind == Kind::Fixed {
        // Fixed windows need durations even for a dry run.
        require_tool(&args.ffprobe)?;
    }
    if !args.dry_run {
        require_tool(&args.ffmpeg)?;
    }
    let jobs = plan(args, &ds, &out_dir)?;
    if args.dry_run {
        for j in &jobs {
            let tmp_wav = j.wav.as_deref().map(partial);
            let a = ffmpeg_args(j, &enc, args.frames, &partial(&j.out), tmp_wav.as_deref());
            println!(
                "{} {}",
                args.ffmpeg.display(),
                a.iter()
                    .map(|s| shell_quote(s))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        eprintln!("{} segment(s) planned (dry run)", jobs.len());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let (todo, skipped): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| {
        args.overwrite || !(j.out.exists() && j.wav.as_ref().is_none_or(|w| w.exists()))
    });
    let missing_src: Vec<&PathBuf> = {
        let mut v: Vec<&PathBuf> = todo
            .iter()
            .map(|j| &j.src)
            .filter(|s| !s.is_file())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    if !missing_src.is_empty() {
        for s in &missing_src {
            eprintln!("missing source video: {}", s.display());
        }
        bail!("{} source video(s) missing; run `replai-prep validate --check sources` for the full list", missing_src.len());
    }
    let bar = ProgressBar::new(todo.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} segments ({eta} left) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let failures = Mutex::new(Vec::new());
    let started = Instant::now();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(args.jobs.max(1))
        .build()
        .context("starting worker threads")?;
    pool.install(|| {
        todo.par_iter().for_each(|j| {
            if let Err(e) = run_job(&args.ffmpeg, j, &enc, args.frames) {
                if let Ok(mut f) = failures.lock() {
                    f.push((j.out.clone(), format!("{e:#}")));
                }
            }
            bar.inc(1);
        })
    });
    bar.finish_and_clear();
    let failures = failures.into_inner().unwrap_or_default();
    let seconds: f64 = todo.iter().map(|j| j.dur_s).sum();
    println!(
        "segments: {} written, {} already present, {} failed; {:.1} s of media in {:.1} s -> {}",
        todo.len() - failures.len(),
        skipped.len(),
        failures.len(),
        seconds,
        started.elapsed().as_secs_f64(),
        out_dir.display()
    );
    for (out, e) in &failures {
        eprintln!("failed: {}: {e}", out.display());
    }
    Ok(if failures.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,+%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_names_keep_the_extension() {
        assert_eq!(
            partial(Path::new("/a/P01_01_000000_000010.MP4")),
            PathBuf::from("/a/P01_01_000000_000010.partial.MP4")
        );
        assert_eq!(
            partial(Path::new("/a/P01_01_000000_000010")),
            PathBuf::from("/a/P01_01_000000_000010.partial")
        );
    }

    #[test]
    fn ffmpeg_arguments() {
        let job = Job {
            src: "in.MP4".into(),
            start_s: 0.54,
            dur_s: 1.69,
            out: "o.MP4".into(),
            wav: None,
        };
        let enc = Encode {
            fps: Some(16.0),
            audio_rate: Some(44100),
            short_side: Some(256),
            crf: 23,
        };
        let a = ffmpeg_args(&job, &enc, false, Path::new("o.partial.MP4"), None);
        let s = a.join(" ");
        assert!(s.contains("-ss 0.540 -t 1.690 -i in.MP4"), "{s}");
        assert!(s.contains("fps=16,scale="), "{s}");
        assert!(s.contains("-ar 44100"), "{s}");
        assert!(s.ends_with("o.partial.MP4"), "{s}");
        let f = ffmpeg_args(
            &job,
            &enc,
            true,
            Path::new("o.partial"),
            Some(Path::new("o.partial.wav")),
        )
        .join(" ");
        assert!(
            f.contains("o.partial/%06d.jpg")
                && f.contains("-ac 1 -ar 44100 -c:a pcm_s16le o.partial.wav"),
            "{f}"
        );
    }
}
