//! The [`VideoSource`] trait, the in-memory source and [`open_source`].

use std::path::Path;
use std::sync::Arc;

use ndarray::Array3;

use crate::error::VideoError;
use crate::temporal::nearest_indices;

/// Tolerance on timestamps: window ends computed as `t - 0.6` must still catch a frame whose
/// pts is exactly on the boundary despite floating-point rounding.
pub(crate) const PTS_EPS: f64 = 1e-6;

/// Stream-level facts about a video source.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoMeta {
    /// Nominal frame rate (average frame rate of the stream).
    pub fps: f64,
    /// Duration of the video stream in seconds: the `D` of the RepLAI validity filter.
    pub duration_s: f64,
    /// Number of frames (exact for frame folders and in-memory sources, from the container otherwise).
    pub n_frames: usize,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Whether an audio track is available for this source.
    pub has_audio: bool,
}

/// One decoded RGB frame with its presentation time.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Presentation time in seconds from the start of the video stream.
    pub pts_s: f64,
    /// Pixels, `(H, W, 3)` RGB.
    pub image: Array3<u8>,
}

/// A seekable video with optional audio: the common interface of MP4 files, frame folders and
/// synthetic in-memory clips.
///
/// Sources are `Send` but not shared: a data loader opens one per worker thread (decoders are
/// single-threaded and stateful).
pub trait VideoSource: Send {
    /// Stream facts; cheap, computed when the source is opened.
    fn meta(&self) -> &VideoMeta;

    /// All frames whose presentation time lies in `[t0_s, t1_s]` (both ends inclusive, as in the
    /// reference decoder), in presentation order.
    fn read_frames(&mut self, t0_s: f64, t1_s: f64) -> Result<Vec<Frame>, VideoError>;

    /// The whole audio track mixed to mono (arithmetic mean of channels) at its native rate, with
    /// sample 0 at video time 0; `None` when the source has no audio.
    fn read_audio(&mut self) -> Result<Option<(Vec<f32>, u32)>, VideoError>;

    /// Name used in error messages and sample records (usually the path).
    fn name(&self) -> &str;

    /// Mono audio covering `[t0_s, t1_s]` (clipped to the track), at the native rate. Sources
    /// override this to decode only the window instead of the whole track.
    fn read_audio_window(
        &mut self,
        t0_s: f64,
        t1_s: f64,
    ) -> Result<Option<(Vec<f32>, u32)>, VideoError> {
        Ok(self
            .read_audio()?
            .map(|(samples, rate)| (audio_window(&samples, rate, t0_s, t1_s), rate)))
    }

    /// For each time in `times_s` (ascending), the frame whose timestamp is nearest (ties go to
    /// the earlier frame). This is frame-rate conversion by timestamp; sources override it to
    /// decode one contiguous run and convert only the frames that are kept.
    fn read_frames_at(&mut self, times_s: &[f64]) -> Result<Vec<Frame>, VideoError> {
        if times_s.is_empty() {
            return Ok(Vec::new());
        }
        let period = 1.0 / self.meta().fps.max(1e-9);
        let lo = times_s[0] - period;
        let hi = times_s[times_s.len() - 1] + period;
        let frames = self.read_frames(lo, hi)?;
        pick_nearest(self.name(), &frames, times_s, period)
    }
}

/// Selects, for each requested time, the nearest frame of `frames` (clones it), failing when the
/// nearest frame is more than one source frame period away.
pub(crate) fn pick_nearest(
    name: &str,
    frames: &[Frame],
    times_s: &[f64],
    period: f64,
) -> Result<Vec<Frame>, VideoError> {
    let pts: Vec<f64> = frames.iter().map(|f| f.pts_s).collect();
    let idx = nearest_indices(&pts, times_s);
    let mut out = Vec::with_capacity(times_s.len());
    for (&t, i) in times_s.iter().zip(idx) {
        match i {
            Some(i) if (frames[i].pts_s - t).abs() <= period + PTS_EPS => {
                out.push(frames[i].clone())
            }
            _ => {
                return Err(VideoError::NoFramesInWindow {
                    source_name: name.to_string(),
                    t0_s: t - period,
                    t1_s: t + period,
                })
            }
        }
    }
    Ok(out)
}

/// Rejects non-finite or reversed windows and windows entirely outside `[0, duration]`.
pub(crate) fn check_window(
    name: &str,
    t0_s: f64,
    t1_s: f64,
    duration_s: f64,
) -> Result<(), VideoError> {
    if !(t0_s.is_finite() && t1_s.is_finite()) || t1_s < t0_s {
        return Err(VideoError::InvalidConfig(format!(
            "{name}: bad time window [{t0_s}, {t1_s}]"
        )));
    }
    if t1_s < -PTS_EPS || t0_s > duration_s + PTS_EPS {
        return Err(VideoError::WindowOutOfRange {
            source_name: name.to_string(),
            t0_s,
            t1_s,
            duration_s,
        });
    }
    Ok(())
}

/// Checks that a frame is `(H, W, 3)` with the expected size.
pub(crate) fn check_frame(
    name: &str,
    index: usize,
    image: &Array3<u8>,
    expect: Option<(usize, usize)>,
) -> Result<(), VideoError> {
    let (h, w, c) = image.dim();
    if c != 3 || h == 0 || w == 0 {
        return Err(VideoError::FrameShape {
            source_name: name.to_string(),
            reason: format!("frame {index} has shape ({h}, {w}, {c}); expected (H>0, W>0, 3)"),
        });
    }
    if let Some((eh, ew)) = expect {
        if (h, w) != (eh, ew) {
            return Err(VideoError::FrameShape {
                source_name: name.to_string(),
                reason: format!("frame {index} is {w}x{h} but frame 0 is {ew}x{eh}"),
            });
        }
    }
    Ok(())
}

/// A clip held in memory: synthetic worlds, tests, and frames produced by another program.
///
/// Frame `i` has timestamp `i / fps`; audio sample 0 is at time 0. Frames and audio are shared
/// (`Arc`), so a data loader can open the same video for every sample without copying it.
#[derive(Debug, Clone)]
pub struct InMemorySource {
    name: String,
    frames: Arc<[Array3<u8>]>,
    audio: Option<(Arc<[f32]>, u32)>,
    meta: VideoMeta,
}

impl InMemorySource {
    /// Wraps frames (each `(H, W, 3)` RGB, all the same size) and optional mono audio.
    pub fn new(
        name: impl Into<String>,
        frames: Vec<Array3<u8>>,
        fps: f64,
        audio: Option<(Vec<f32>, u32)>,
    ) -> Result<Self, VideoError> {
        Self::shared(name, frames.into(), fps, audio.map(|(a, r)| (a.into(), r)))
    }

    /// Like [`Self::new`] over frames and audio that are already shared: no copy is made.
    pub fn shared(
        name: impl Into<String>,
        frames: Arc<[Array3<u8>]>,
        fps: f64,
        audio: Option<(Arc<[f32]>, u32)>,
    ) -> Result<Self, VideoError> {
        let name = name.into();
        if !(fps.is_finite() && fps > 0.0) {
            return Err(VideoError::InvalidConfig(format!(
                "{name}: frame rate must be positive and finite, got {fps}"
            )));
        }
        if frames.is_empty() {
            return Err(VideoError::EmptySource {
                source_name: name,
                reason: "no frames".into(),
            });
        }
        let (h, w, _) = frames[0].dim();
        for (i, f) in frames.iter().enumerate() {
            check_frame(&name, i, f, Some((h, w)))?;
        }
        if let Some((samples, rate)) = &audio {
            if *rate == 0 {
                return Err(VideoError::InvalidConfig(format!(
                    "{name}: audio sample rate is 0"
                )));
            }
            if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
                return Err(VideoError::InvalidConfig(format!(
                    "{name}: audio sample {i} is not finite"
                )));
            }
        }
        let meta = VideoMeta {
            fps,
            duration_s: frames.len() as f64 / fps,
            n_frames: frames.len(),
            width: w as u32,
            height: h as u32,
            has_audio: audio.is_some(),
        };
        Ok(Self {
            name,
            frames,
            audio,
            meta,
        })
    }
}

/// The samples of a track at `rate` covering `[t0_s, t1_s]`, clipped to the track.
fn audio_window(samples: &[f32], rate: u32, t0_s: f64, t1_s: f64) -> Vec<f32> {
    let (i0, i1) = crate::sampler::audio_slice(samples.len(), rate, (t0_s, t1_s));
    samples[i0..i1.max(i0)].to_vec()
}

/// Indices of frames with timestamp `i / fps` inside `[t0, t1]`.
pub(crate) fn index_range(n: usize, fps: f64, t0: f64, t1: f64) -> std::ops::Range<usize> {
    if n == 0 || t1 < t0 {
        return 0..0;
    }
    let first = ((t0 - PTS_EPS) * fps).ceil().max(0.0);
    let last = ((t1 + PTS_EPS) * fps).floor();
    if last < 0.0 || first > last {
        return 0..0;
    }
    let first = (first as usize).min(n);
    let last = (last as usize).saturating_add(1).min(n);
    first..last.max(first)
}

impl VideoSource for InMemorySource {
    fn meta(&self) -> &VideoMeta {
        &self.meta
    }

    fn read_frames(&mut self, t0_s: f64, t1_s: f64) -> Result<Vec<Frame>, VideoError> {
        check_window(&self.name, t0_s, t1_s, self.meta.duration_s)?;
        let fps = self.meta.fps;
        Ok(index_range(self.frames.len(), fps, t0_s, t1_s)
            .map(|i| Frame {
                pts_s: i as f64 / fps,
                image: self.frames[i].clone(),
            })
            .collect())
    }

    fn read_audio(&mut self) -> Result<Option<(Vec<f32>, u32)>, VideoError> {
        Ok(self.audio.as_ref().map(|(a, r)| (a.to_vec(), *r)))
    }

    fn read_audio_window(
        &mut self,
        t0_s: f64,
        t1_s: f64,
    ) -> Result<Option<(Vec<f32>, u32)>, VideoError> {
        Ok(self
            .audio
            .as_ref()
            .map(|(samples, rate)| (audio_window(samples, *rate, t0_s, t1_s), *rate)))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_frames_at(&mut self, times_s: &[f64]) -> Result<Vec<Frame>, VideoError> {
        let fps = self.meta.fps;
        let n = self.frames.len();
        times_s
            .iter()
            .map(|&t| {
                // Nearest index, ties to the earlier frame.
                let x = t * fps;
                let i = if x - x.floor() > 0.5 {
                    x.ceil()
                } else {
                    x.floor()
                };
                let last = (n - 1) as f64 / fps;
                if !t.is_finite() || t < -1.0 / fps - PTS_EPS || t > last + 1.0 / fps + PTS_EPS {
                    return Err(VideoError::NoFramesInWindow {
                        source_name: self.name.clone(),
                        t0_s: t,
                        t1_s: t,
                    });
                }
                let i = (i.max(0.0) as usize).min(n - 1);
                Ok(Frame {
                    pts_s: i as f64 / fps,
                    image: self.frames[i].clone(),
                })
            })
            .collect()
    }
}

/// Opens a path as a video source: a directory becomes a [`crate::FrameFolderSource`], a file
/// goes through FFmpeg (an error explaining the missing feature when built without `ffmpeg`).
pub fn open_source(path: impl AsRef<Path>) -> Result<Box<dyn VideoSource>, VideoError> {
    let path = path.as_ref();
    let md = std::fs::metadata(path).map_err(|e| VideoError::io(path, e))?;
    if md.is_dir() {
        return Ok(Box::new(crate::folder::FrameFolderSource::open(path)?));
    }
    #[cfg(feature = "ffmpeg")]
    {
        Ok(Box::new(crate::ffmpeg::FfmpegSource::open(path)?))
    }
    #[cfg(not(feature = "ffmpeg"))]
    {
        Err(VideoError::FfmpegDisabled {
            path: path.to_path_buf(),
        })
    }
}
