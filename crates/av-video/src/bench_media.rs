//! The media the workspace's speed benchmarks read, generated once with the `ffmpeg` CLI into
//! `$TMPDIR/av_video_bench` so that every bench (the sampler here, the loader in `av-train`)
//! times the same files as the PyAV baseline script.
//!
//! Ten seconds of `testsrc2` at 640x480 and 30 fps, H.264 (`-preset veryfast -crf 23`) with GOP
//! 30 and GOP 250, stereo AAC at 44.1 kHz with a click every 0.9 s (so every segment has moments
//! of interaction), and a frame folder extracted from the GOP 30 file at 16 fps.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::VideoError;

/// Paths of the generated bench media.
#[derive(Debug, Clone)]
pub struct BenchMedia {
    /// 640x480 30 fps H.264 with a keyframe every 30 frames.
    pub gop30: PathBuf,
    /// The same with a keyframe every 250 frames.
    pub gop250: PathBuf,
    /// A frame folder (16 fps JPEGs, WAV audio) extracted from `gop30`.
    pub frames16: PathBuf,
}

impl BenchMedia {
    /// Generates whatever is missing (needs the `ffmpeg` CLI on `PATH`) and returns the paths.
    pub fn ensure() -> Result<Self, VideoError> {
        let dir = std::env::temp_dir().join("av_video_bench");
        std::fs::create_dir_all(&dir).map_err(|source| VideoError::Io {
            path: dir.clone(),
            source,
        })?;
        let media = Self {
            gop30: dir.join("gop30.mp4"),
            gop250: dir.join("gop250.mp4"),
            frames16: dir.join("frames16"),
        };
        make_mp4(&media.gop30, 30)?;
        make_mp4(&media.gop250, 250)?;
        make_folder(&media.frames16, &media.gop30)?;
        Ok(media)
    }
}

fn ffmpeg(out: &Path, args: &[&str]) -> Result<(), VideoError> {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(VideoError::Decode {
            path: out.to_path_buf(),
            reason: format!("ffmpeg CLI exited with {s} while generating bench media"),
        }),
        Err(e) => Err(VideoError::Decode {
            path: out.to_path_buf(),
            reason: format!("cannot run the ffmpeg CLI (is it installed?): {e}"),
        }),
    }
}

/// Audio with a click about every 0.9 s so that every segment has moments of interaction.
const AUDIO: &str = "aevalsrc=exprs='0.01*(random(0)-0.5)+0.8*sin(2*PI*2000*t)*lt(mod(t,0.9),0.01)|0.01*(random(1)-0.5)+0.4*sin(2*PI*2000*t)*lt(mod(t,0.9),0.01)':s=44100:d=10";

fn make_mp4(path: &Path, gop: u32) -> Result<(), VideoError> {
    if path.exists() {
        return Ok(());
    }
    // Written under a temporary name and renamed once complete, so an interrupted run never
    // leaves a truncated file that later runs would take as done.
    let part = path.with_extension("part.mp4");
    let g = gop.to_string();
    ffmpeg(
        path,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=640x480:r=30:d=10",
            "-f",
            "lavfi",
            "-i",
            AUDIO,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "23",
            "-pix_fmt",
            "yuv420p",
            "-g",
            &g,
            "-keyint_min",
            &g,
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-shortest",
            &part.to_string_lossy(),
        ],
    )?;
    std::fs::rename(&part, path).map_err(|source| VideoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn make_folder(dir: &Path, mp4: &Path) -> Result<(), VideoError> {
    if dir.join(crate::META_FILE).exists() {
        return Ok(());
    }
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).map_err(|source| VideoError::Io {
        path: frames.clone(),
        source,
    })?;
    let pattern = frames.join("%06d.jpg");
    ffmpeg(
        dir,
        &[
            "-i",
            &mp4.to_string_lossy(),
            "-vf",
            "fps=16",
            "-q:v",
            "3",
            &pattern.to_string_lossy(),
        ],
    )?;
    let wav = dir.join("audio.wav");
    ffmpeg(
        &wav,
        &[
            "-i",
            &mp4.to_string_lossy(),
            "-vn",
            "-ac",
            "2",
            "-c:a",
            "pcm_s16le",
            &wav.to_string_lossy(),
        ],
    )?;
    let meta = dir.join(crate::META_FILE);
    std::fs::write(&meta, "fps = 16.0\naudio = \"audio.wav\"\n")
        .map_err(|source| VideoError::Io { path: meta, source })
}
