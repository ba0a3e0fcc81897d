//! Writing a world to disk in the layouts the loaders read: frame folders that
//! `av_video::FrameFolderSource` opens, WAV tracks, EPIC-KITCHENS-100 annotation CSVs, the
//! configuration and timelines as JSON, and (with the `ffmpeg` feature) MP4 files.
//!
//! ```text
//! <dir>/world.json                               config + every video's timeline
//! <dir>/annotations/EPIC_100_train.csv           EPIC-100 schema, training videos
//! <dir>/annotations/EPIC_100_validation.csv      EPIC-100 schema, validation videos
//! <dir>/annotations/EPIC_100_verb_classes.csv
//! <dir>/annotations/EPIC_100_noun_classes.csv
//! <dir>/annotations/EPIC_100_video_info.csv      duration, fps and size per video
//! <dir>/videos/<video_id>/meta.toml              fps, audio = "audio.wav", frames = "frames"
//! <dir>/videos/<video_id>/frames/000001.png      frame k (1-based) at (k-1)/fps
//! <dir>/videos/<video_id>/audio.wav              mono float WAV at the world's sample rate
//! <dir>/mp4/<video_id>.MP4                       only when requested (ffmpeg feature)
//! ```

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::config::WorldConfig;
use crate::error::SynthError;
use crate::script::{Split, VideoScript};
use crate::world::{SynthVideo, World};

/// Image format of exported frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// Lossless: a round trip gives the generated pixels back exactly.
    Png,
    /// Smaller files, lossy, like frames extracted from real video.
    Jpeg {
        /// Encoder quality, 1..=100.
        quality: u8,
    },
}

/// What [`World::export`] writes besides annotations and frame folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    /// Frame image format.
    pub frame_format: FrameFormat,
    /// Also encode `mp4/<video_id>.MP4` (H.264 + AAC) with the `ffmpeg` command-line tool;
    /// needs the `ffmpeg` cargo feature and `ffmpeg` on `PATH`.
    pub mp4: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self {
            frame_format: FrameFormat::Png,
            mp4: false,
        }
    }
}

/// Counts of what an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    /// The export root.
    pub root: PathBuf,
    /// Frame folders written.
    pub videos: usize,
    /// Frame images written.
    pub frames: usize,
    /// Annotation rows written (train + validation).
    pub interactions: usize,
    /// MP4 files written.
    pub mp4_files: usize,
}

/// Annotation file names, as in the EPIC-KITCHENS-100 repository.
pub const TRAIN_CSV: &str = "EPIC_100_train.csv";
/// Validation annotations.
pub const VALIDATION_CSV: &str = "EPIC_100_validation.csv";
/// Verb classes.
pub const VERB_CLASSES_CSV: &str = "EPIC_100_verb_classes.csv";
/// Noun classes.
pub const NOUN_CLASSES_CSV: &str = "EPIC_100_noun_classes.csv";
/// Duration, frame rate and size of every video.
pub const VIDEO_INFO_CSV: &str = "EPIC_100_video_info.csv";

#[derive(Serialize)]
struct WorldFile<'a> {
    config: &'a WorldConfig,
    videos: &'a [VideoScript],
}

fn create_dir(p: &Path) -> Result<(), SynthError> {
    std::fs::create_dir_all(p).map_err(|e| SynthError::io(p, e))
}

fn write_text(p: &Path, text: &str) -> Result<(), SynthError> {
    std::fs::write(p, text).map_err(|e| SynthError::io(p, e))
}

/// Writes one frame image.
fn write_frame(
    path: &Path,
    frame: &ndarray::Array3<u8>,
    format: FrameFormat,
) -> Result<(), SynthError> {
    let (h, w, _) = frame.dim();
    let img_err = |reason: String| SynthError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let pixels: Vec<u8> = frame.iter().copied().collect();
    match format {
        FrameFormat::Png => image::save_buffer_with_format(
            path,
            &pixels,
            w as u32,
            h as u32,
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| img_err(e.to_string())),
        FrameFormat::Jpeg { quality } => {
            let file = std::fs::File::create(path).map_err(|e| SynthError::io(path, e))?;
            let mut out = std::io::BufWriter::new(file);
            let enc =
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
            image::ImageEncoder::write_image(
                enc,
                &pixels,
                w as u32,
                h as u32,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| img_err(e.to_string()))?;
            std::io::Write::flush(&mut out).map_err(|e| SynthError::io(path, e))
        }
    }
}

/// Writes `video` as a frame folder under `videos_dir`; returns the number of frames.
pub fn write_frame_folder(
    video: &SynthVideo,
    videos_dir: &Path,
    format: FrameFormat,
) -> Result<usize, SynthError> {
    let dir = videos_dir.join(video.id());
    let frames_dir = dir.join("frames");
    create_dir(&frames_dir)?;
    let ext = match format {
        FrameFormat::Png => "png",
        FrameFormat::Jpeg { .. } => "jpg",
    };
    for (k, frame) in video.frames.iter().enumerate() {
        write_frame(
            &frames_dir.join(format!("{:06}.{ext}", k + 1)),
            frame,
            format,
        )?;
    }
    let wav = dir.join("audio.wav");
    av_audio::write_wav(&wav, &video.audio, video.sample_rate()).map_err(|source| {
        SynthError::Audio {
            path: wav.clone(),
            source: Box::new(source),
        }
    })?;
    // Debug formatting of f64 always keeps a decimal point, which TOML needs for a float.
    let meta = format!(
        "# Synthetic video {} (av-synth)\nfps = {:?}\naudio = \"audio.wav\"\nframes = \"frames\"\nstart_s = 0.0\n",
        video.id(),
        video.fps()
    );
    write_text(&dir.join(av_video::META_FILE), &meta)?;
    Ok(video.frames.len())
}

/// Whether MP4 export can work: the `ffmpeg` feature is on and `ffmpeg -version` runs.
pub fn ffmpeg_cli_available() -> bool {
    #[cfg(feature = "ffmpeg")]
    {
        std::process::Command::new("ffmpeg")
            .arg("-version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
    #[cfg(not(feature = "ffmpeg"))]
    {
        false
    }
}

/// Encodes `video` to an MP4 file (H.264, yuv420p, AAC 44.1 kHz) through the `ffmpeg` CLI,
/// piping raw RGB frames and reading the already exported WAV.
#[cfg(feature = "ffmpeg")]
pub fn write_mp4(video: &SynthVideo, wav: &Path, out: &Path) -> Result<(), SynthError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let fail = |reason: String| SynthError::Ffmpeg {
        path: out.to_path_buf(),
        reason,
    };
    let (h, w) = match video.frames.first() {
        Some(f) => (f.dim().0, f.dim().1),
        None => return Err(fail("video has no frames".into())),
    };
    let mut child = Command::new("ffmpeg")
        .args([
            "-y",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
        ])
        .arg(format!("{w}x{h}"))
        .arg("-r")
        .arg(format!("{}", video.fps()))
        .args(["-i", "-", "-i"])
        .arg(wav)
        // yuv420p needs even sizes: pad by one pixel when odd.
        .args([
            "-vf",
            "pad=ceil(iw/2)*2:ceil(ih/2)*2",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-crf",
            "18",
        ])
        .args(["-c:a", "aac", "-b:a", "128k", "-ar"])
        .arg(video.sample_rate().to_string())
        .arg(out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot start `ffmpeg` (is it on PATH?): {e}")))?;
    {
        let Some(stdin) = child.stdin.as_mut() else {
            return Err(fail("no stdin pipe to ffmpeg".into()));
        };
        for f in video.frames.iter() {
            let bytes: Vec<u8> = f.iter().copied().collect();
            stdin
                .write_all(&bytes)
                .map_err(|e| fail(format!("writing frames to ffmpeg: {e}")))?;
        }
    }
    drop(child.stdin.take());
    let output = child
        .wait_with_output()
        .map_err(|e| fail(format!("waiting for ffmpeg: {e}")))?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let tail: String = err.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(fail(format!("exited with {}: {tail}", output.status)));
    }
    Ok(())
}

impl World {
    /// Writes annotations, `world.json` and every video (rendered one per worker at a time, so
    /// memory stays bounded) under `dir`, which is created if needed.
    pub fn export(
        &self,
        dir: impl AsRef<Path>,
        opts: &ExportOptions,
    ) -> Result<ExportSummary, SynthError> {
        let root = dir.as_ref().to_path_buf();
        if opts.mp4 && !cfg!(feature = "ffmpeg") {
            return Err(SynthError::Ffmpeg {
                path: root.join("mp4"),
                reason: "MP4 export needs av-synth's `ffmpeg` cargo feature".into(),
            });
        }
        if let FrameFormat::Jpeg { quality } = opts.frame_format {
            if !(1..=100).contains(&quality) {
                return Err(SynthError::config(
                    "jpeg quality",
                    format!("must be 1..=100, got {quality}"),
                ));
            }
        }
        let ann = root.join("annotations");
        let videos_dir = root.join("videos");
        create_dir(&ann)?;
        create_dir(&videos_dir)?;
        let world_json = serde_json::to_string_pretty(&WorldFile {
            config: self.config(),
            videos: self.scripts(),
        })
        .map_err(|e| SynthError::Serialize {
            what: "world.json".into(),
            reason: e.to_string(),
        })?;
        write_text(&root.join("world.json"), &world_json)?;
        write_text(
            &ann.join(TRAIN_CSV),
            &self.labels_epic_csv(Some(Split::Train))?,
        )?;
        write_text(
            &ann.join(VALIDATION_CSV),
            &self.labels_epic_csv(Some(Split::Validation))?,
        )?;
        write_text(&ann.join(VERB_CLASSES_CSV), &self.verb_classes_csv()?)?;
        write_text(&ann.join(NOUN_CLASSES_CSV), &self.noun_classes_csv()?)?;
        write_text(&ann.join(VIDEO_INFO_CSV), &self.video_info_csv()?)?;
        let mp4_dir = root.join("mp4");
        if opts.mp4 {
            create_dir(&mp4_dir)?;
        }
        let counts: Vec<(usize, usize)> = (0..self.len())
            .into_par_iter()
            .map(|i| -> Result<(usize, usize), SynthError> {
                let video = self.video(i)?;
                let frames = write_frame_folder(&video, &videos_dir, opts.frame_format)?;
                #[cfg(feature = "ffmpeg")]
                let mp4 = if opts.mp4 {
                    let wav = videos_dir.join(video.id()).join("audio.wav");
                    write_mp4(&video, &wav, &mp4_dir.join(format!("{}.MP4", video.id())))?;
                    1
                } else {
                    0
                };
                #[cfg(not(feature = "ffmpeg"))]
                let mp4 = 0;
                Ok((frames, mp4))
            })
            .collect::<Result<_, SynthError>>()?;
        Ok(ExportSummary {
            root,
            videos: counts.len(),
            frames: counts.iter().map(|c| c.0).sum(),
            interactions: self.scripts().iter().map(|s| s.interactions.len()).sum(),
            mp4_files: counts.iter().map(|c| c.1).sum(),
        })
    }
}
