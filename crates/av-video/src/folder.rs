//! Folders of extracted frames (JPEG/PNG) with a `meta.toml` file.
//!
//! Layout (what `ffmpeg -i in.mp4 -vf fps=16 frames/%06d.jpg` plus an audio extraction gives):
//!
//! ```text
//! P01_04_000070_000080/
//!   meta.toml          fps = 16.0
//!                      audio = "audio.wav"      # optional, relative to the folder
//!                      frames = "frames"        # optional sub-folder, default "frames"
//!                      start_s = 0.0            # optional time of the first frame
//!   frames/000001.jpg  # frame k (1-based, as ffmpeg numbers) is at start_s + (k-1)/fps
//!   frames/000002.jpg
//!   audio.wav          # any format av-audio decodes (WAV, FLAC, ...)
//! ```
//!
//! Frames are ordered by the number in their file stem (falling back to the file name), so
//! `1.jpg, 2.jpg, 10.jpg` sort numerically.

use std::path::{Path, PathBuf};

use ndarray::Array3;
use serde::Deserialize;

use crate::error::VideoError;
use crate::source::{check_window, index_range, Frame, VideoMeta, VideoSource, PTS_EPS};

/// Name of the metadata file inside a frame folder.
pub const META_FILE: &str = "meta.toml";

/// Contents of `meta.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FolderMeta {
    fps: f64,
    #[serde(default)]
    audio: Option<PathBuf>,
    #[serde(default)]
    frames: Option<PathBuf>,
    #[serde(default)]
    start_s: f64,
}

/// A clip stored as numbered image files plus optional audio (pure Rust, no FFmpeg).
#[derive(Debug)]
pub struct FrameFolderSource {
    name: String,
    files: Vec<PathBuf>,
    audio_path: Option<PathBuf>,
    audio: Option<(Vec<f32>, u32)>,
    start_s: f64,
    meta: VideoMeta,
}

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

impl FrameFolderSource {
    /// Opens a folder: reads `meta.toml`, lists the frames and reads the first frame's size.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, VideoError> {
        let dir = dir.as_ref();
        let meta_path = dir.join(META_FILE);
        let text =
            std::fs::read_to_string(&meta_path).map_err(|e| VideoError::io(&meta_path, e))?;
        let fm: FolderMeta = toml::from_str(&text).map_err(|e| VideoError::Metadata {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        if !(fm.fps.is_finite() && fm.fps > 0.0 && fm.start_s.is_finite()) {
            return Err(VideoError::Metadata {
                path: meta_path,
                reason: format!("fps must be positive (got {}), start_s finite", fm.fps),
            });
        }
        let frame_dir = match &fm.frames {
            Some(sub) => dir.join(sub),
            None if dir.join("frames").is_dir() => dir.join("frames"),
            None => dir.to_path_buf(),
        };
        let rd = std::fs::read_dir(&frame_dir).map_err(|e| VideoError::io(&frame_dir, e))?;
        let mut files = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| VideoError::io(&frame_dir, e))?;
            let p = entry.path();
            if p.is_file() && is_image(&p) {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(VideoError::EmptySource {
                source_name: dir.display().to_string(),
                reason: format!("no .jpg/.jpeg/.png files in {}", frame_dir.display()),
            });
        }
        let key = |p: &PathBuf| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            let digits: String = stem
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            (digits.parse::<u64>().unwrap_or(u64::MAX), p.clone())
        };
        files.sort_by_key(key);
        let (width, height) =
            image::image_dimensions(&files[0]).map_err(|e| VideoError::Image {
                path: files[0].clone(),
                reason: e.to_string(),
            })?;
        let audio_path = match &fm.audio {
            Some(a) => {
                let p = dir.join(a);
                if !p.is_file() {
                    return Err(VideoError::Metadata {
                        path: meta_path,
                        reason: format!("audio file {} does not exist", p.display()),
                    });
                }
                Some(p)
            }
            None => None,
        };
        let meta = VideoMeta {
            fps: fm.fps,
            duration_s: files.len() as f64 / fm.fps,
            n_frames: files.len(),
            width,
            height,
            has_audio: audio_path.is_some(),
        };
        Ok(Self {
            name: dir.display().to_string(),
            files,
            audio_path,
            audio: None,
            start_s: fm.start_s,
            meta,
        })
    }

    /// Path of frame `i` (0-based).
    pub fn frame_path(&self, i: usize) -> Option<&Path> {
        self.files.get(i).map(|p| p.as_path())
    }

    fn load(&self, i: usize) -> Result<Frame, VideoError> {
        let path = &self.files[i];
        let img = image::open(path)
            .map_err(|e| VideoError::Image {
                path: path.clone(),
                reason: e.to_string(),
            })?
            .into_rgb8();
        let (w, h) = img.dimensions();
        if (w, h) != (self.meta.width, self.meta.height) {
            return Err(VideoError::Image {
                path: path.clone(),
                reason: format!(
                    "frame is {w}x{h} but the first frame is {}x{}",
                    self.meta.width, self.meta.height
                ),
            });
        }
        let image =
            Array3::from_shape_vec((h as usize, w as usize, 3), img.into_raw()).map_err(|e| {
                VideoError::Image {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?;
        Ok(Frame {
            pts_s: self.start_s + i as f64 / self.meta.fps,
            image,
        })
    }
}

impl VideoSource for FrameFolderSource {
    fn meta(&self) -> &VideoMeta {
        &self.meta
    }

    fn read_frames(&mut self, t0_s: f64, t1_s: f64) -> Result<Vec<Frame>, VideoError> {
        check_window(
            &self.name,
            t0_s - self.start_s,
            t1_s - self.start_s,
            self.meta.duration_s,
        )?;
        index_range(
            self.files.len(),
            self.meta.fps,
            t0_s - self.start_s,
            t1_s - self.start_s,
        )
        .map(|i| self.load(i))
        .collect()
    }

    fn read_audio(&mut self) -> Result<Option<(Vec<f32>, u32)>, VideoError> {
        if self.audio.is_none() {
            if let Some(p) = &self.audio_path {
                let (samples, rate) =
                    av_audio::decode_mono(p).map_err(|source| VideoError::Audio {
                        source_name: self.name.clone(),
                        source,
                    })?;
                self.audio = Some((samples, rate));
            }
        }
        Ok(self.audio.clone())
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_frames_at(&mut self, times_s: &[f64]) -> Result<Vec<Frame>, VideoError> {
        let fps = self.meta.fps;
        let n = self.files.len();
        let last = (n - 1) as f64 / fps;
        let mut out: Vec<Frame> = Vec::with_capacity(times_s.len());
        for &t in times_s {
            let rel = t - self.start_s;
            if !rel.is_finite() || rel < -1.0 / fps - PTS_EPS || rel > last + 1.0 / fps + PTS_EPS {
                return Err(VideoError::NoFramesInWindow {
                    source_name: self.name.clone(),
                    t0_s: t,
                    t1_s: t,
                });
            }
            let x = rel * fps;
            let i = if x - x.floor() > 0.5 {
                x.ceil()
            } else {
                x.floor()
            };
            let i = (i.max(0.0) as usize).min(n - 1);
            // Requested times repeat (loop padding); decode each file once.
            match out
                .iter()
                .find(|f| (f.pts_s - (self.start_s + i as f64 / fps)).abs() < PTS_EPS)
            {
                Some(f) => out.push(f.clone()),
                None => out.push(self.load(i)?),
            }
        }
        Ok(out)
    }
}
