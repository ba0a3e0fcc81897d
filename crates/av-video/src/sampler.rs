//! The RepLAI sample builder: a moment of interaction, two video clips around it and the audio
//! spanning both (spec §1.3 and §2).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use moi_detect::{MoiConfig, Moment};
use rand::Rng;
use serde::{Deserialize, Serialize};

use av_audio::ReplaiAudioFrontEnd;

use crate::error::VideoError;
use crate::source::{Frame, VideoSource, PTS_EPS};
use crate::temporal::{crop_or_loop_pad, grid_times, uniform_subsample};
use crate::transform::{apply_spatial, ClipSpec, SpatialParams};

/// Where the moment a sample is built around comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MomentMode {
    /// A detected moment of interaction, uniformly among the valid ones (RepLAI).
    #[default]
    Moi,
    /// A uniform time in the valid range, ignoring audio events (the "w/o MoI" ablation).
    Random,
}

/// Everything that shapes one RepLAI sample. Defaults are the released EPIC configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// Video clip parameters (fps, frames, scales, crop, normalisation, G1 switch).
    pub clip: ClipSpec,
    /// Margin between the moment and each clip (`delta_non_overlap`).
    pub delta_s: f64,
    /// Duration of each video clip.
    pub clip_s: f64,
    /// Duration of the audio window centred on the moment.
    pub audio_s: f64,
    /// Detected or uniformly random moments.
    pub moments: MomentMode,
    /// Moment detector settings; its `delta_s`/`clip_s` are overwritten by the fields above so
    /// the validity filter and the clip windows always agree.
    pub moi: MoiConfig,
    /// Reproduce the reference decoder's audio window for early moments (`t < audio_s / 2`):
    /// `[audio_s/2 - t, audio_s/2 + t]` instead of `[0, t + audio_s/2]` (gotcha G9).
    pub compat_audio_window: bool,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            clip: ClipSpec::default(),
            delta_s: 0.1,
            clip_s: 0.5,
            audio_s: 2.0,
            moments: MomentMode::Moi,
            moi: MoiConfig::default(),
            compat_audio_window: false,
        }
    }
}

/// One training (or evaluation) example.
#[derive(Debug, Clone)]
pub struct ReplaiSample {
    /// Clip before the moment, `(3, T, crop, crop)` row-major, normalised.
    pub video_before: Vec<f32>,
    /// Clip after the moment, same layout.
    pub video_after: Vec<f32>,
    /// Log-mel network input `(1, 125, 80)` row-major, from `av_audio::ReplaiAudioFrontEnd`.
    pub audio: Vec<f32>,
    /// Time of the moment in seconds.
    pub moment_s: f64,
    /// Name of the source the sample came from.
    pub source: String,
}

/// Time windows of one sample, in seconds (after intersection with the source).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleWindows {
    /// Video clip before the moment: `[t - delta - clip, t - delta]`.
    pub before: (f64, f64),
    /// Video clip after the moment: `[t + delta, t + delta + clip]`.
    pub after: (f64, f64),
    /// Audio window: `[t - A/2, t + A/2]` intersected with `[0, D]` (or the G9 quirk).
    pub audio: (f64, f64),
}

/// Builds [`ReplaiSample`]s; cheap to share between worker threads (`&self` methods).
#[derive(Debug)]
pub struct ReplaiSampler {
    cfg: SamplerConfig,
    front_ends: Mutex<HashMap<u32, Arc<ReplaiAudioFrontEnd>>>,
}

impl ReplaiSampler {
    /// Validates the configuration.
    pub fn new(cfg: SamplerConfig) -> Result<Self, VideoError> {
        cfg.clip.validate()?;
        for (name, v) in [
            ("delta_s", cfg.delta_s),
            ("clip_s", cfg.clip_s),
            ("audio_s", cfg.audio_s),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(VideoError::InvalidConfig(format!(
                    "{name} must be finite and non-negative, got {v}"
                )));
            }
        }
        if cfg.clip_s <= 0.0 || cfg.audio_s <= 0.0 {
            return Err(VideoError::InvalidConfig(
                "clip_s and audio_s must be positive".into(),
            ));
        }
        let mut cfg = cfg;
        cfg.moi.delta_s = cfg.delta_s;
        cfg.moi.clip_s = cfg.clip_s;
        Ok(Self {
            cfg,
            front_ends: Mutex::new(HashMap::new()),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Valid range of moment times for a source of duration `duration_s`:
    /// `[delta + clip, D - delta - clip]`, or `None` when the source is too short.
    pub fn valid_range(&self, duration_s: f64) -> Option<(f64, f64)> {
        let m = self.cfg.delta_s + self.cfg.clip_s;
        let (lo, hi) = (m, duration_s - m);
        (duration_s.is_finite() && hi >= lo - PTS_EPS).then_some((lo, hi.max(lo)))
    }

    /// Window arithmetic for a moment at `t` in a source of duration `duration_s`.
    pub fn windows(&self, t: f64, duration_s: f64) -> SampleWindows {
        let (d, v, half) = (self.cfg.delta_s, self.cfg.clip_s, self.cfg.audio_s / 2.0);
        let audio = if self.cfg.compat_audio_window && t < half {
            // The reference slices from the first decoded frame by (start - first) twice, so an
            // early window keeps its length 2t but starts at half - t.
            (half - t, (half + t).min(duration_s))
        } else {
            ((t - half).max(0.0), (t + half).min(duration_s))
        };
        SampleWindows {
            before: (t - d - v, t - d),
            after: (t + d, t + d + v),
            audio,
        }
    }

    /// Runs moment detection on the source's audio and returns the valid moments (`D` is the
    /// video duration, as in the reference). Errors when the source has no audio.
    pub fn moments(&self, src: &mut dyn VideoSource) -> Result<Vec<Moment>, VideoError> {
        let name = src.name().to_string();
        let duration = src.meta().duration_s;
        let (samples, rate) = src.read_audio()?.ok_or_else(|| VideoError::NoAudio {
            source_name: name.clone(),
        })?;
        let mut moi = self.cfg.moi;
        moi.duration_s = Some(duration);
        moi_detect::detect(&samples, rate, &moi).map_err(|source| VideoError::Moi {
            source_name: name,
            source,
        })
    }

    fn front_end(&self, name: &str, rate: u32) -> Result<Arc<ReplaiAudioFrontEnd>, VideoError> {
        let mut map = self
            .front_ends
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(fe) = map.get(&rate) {
            return Ok(Arc::clone(fe));
        }
        let fe = Arc::new(
            ReplaiAudioFrontEnd::new(rate).map_err(|source| VideoError::Audio {
                source_name: name.to_string(),
                source,
            })?,
        );
        map.insert(rate, Arc::clone(&fe));
        Ok(fe)
    }

    /// Picks the moment: uniformly among `moments` that pass the validity filter (Moi mode) or
    /// uniformly in the valid range (Random mode).
    pub fn pick_moment<R: Rng + ?Sized>(
        &self,
        name: &str,
        duration_s: f64,
        moments: &[Moment],
        rng: &mut R,
    ) -> Result<f64, VideoError> {
        let no_moment = || VideoError::NoValidMoment {
            source_name: name.to_string(),
        };
        let (lo, hi) = self.valid_range(duration_s).ok_or_else(no_moment)?;
        match self.cfg.moments {
            MomentMode::Moi => {
                let valid: Vec<f64> = moments
                    .iter()
                    .map(|m| m.time_s)
                    .filter(|&t| t >= lo - PTS_EPS && t <= hi + PTS_EPS)
                    .collect();
                if valid.is_empty() {
                    return Err(no_moment());
                }
                Ok(valid[rng.random_range(0..valid.len())])
            }
            MomentMode::Random => {
                if hi > lo {
                    Ok(rng.random_range(lo..=hi))
                } else {
                    Ok(lo)
                }
            }
        }
    }

    /// Timestamps of the `num_frames` frames of one clip window (train: random crop of the
    /// window's frame grid; eval: centred), or an error when no grid time falls on the source.
    fn clip_times<R: Rng + ?Sized>(
        &self,
        name: &str,
        window: (f64, f64),
        src_fps: f64,
        duration_s: f64,
        rng: Option<&mut R>,
    ) -> Result<Vec<f64>, VideoError> {
        let spec = &self.cfg.clip;
        // The last frame of a stream of duration D is at D - 1/fps: grid times past half a frame
        // beyond it have no frame in the reference's [start, end] read either.
        let lo = window.0.max(0.0);
        let hi = window.1.min(duration_s - 0.5 / src_fps);
        let grid = grid_times(lo, hi, spec.fps);
        if grid.is_empty() {
            return Err(VideoError::WindowOutOfRange {
                source_name: name.to_string(),
                t0_s: window.0,
                t1_s: window.1,
                duration_s,
            });
        }
        let nt = ((self.cfg.clip_s * spec.fps) + 1e-9).floor().max(1.0) as usize;
        let picked = crop_or_loop_pad(grid.len(), nt, rng);
        Ok(uniform_subsample(nt, spec.num_frames)
            .into_iter()
            .map(|k| grid[picked[k]])
            .collect())
    }

    /// Builds one sample around a moment chosen from `moments` (see [`Self::pick_moment`]).
    ///
    /// `train` selects random scale/crop/flip and random temporal crops (independent for the two
    /// clips); otherwise the eval transform and centred windows are used. All randomness comes
    /// from `rng`, so a seeded generator reproduces the sample exactly.
    pub fn sample<R: Rng>(
        &self,
        src: &mut dyn VideoSource,
        moments: &[Moment],
        rng: &mut R,
        train: bool,
    ) -> Result<ReplaiSample, VideoError> {
        let name = src.name().to_string();
        let meta = src.meta().clone();
        if meta.duration_s.is_nan() || meta.duration_s <= 0.0 || meta.n_frames == 0 {
            return Err(VideoError::EmptySource {
                source_name: name,
                reason: format!("duration {} s, {} frames", meta.duration_s, meta.n_frames),
            });
        }
        let t = self.pick_moment(&name, meta.duration_s, moments, rng)?;
        self.sample_at(src, t, rng, train)
    }

    /// Builds one sample around a given moment time `t` (no validity check beyond the windows
    /// having frames and audio).
    pub fn sample_at<R: Rng>(
        &self,
        src: &mut dyn VideoSource,
        t: f64,
        rng: &mut R,
        train: bool,
    ) -> Result<ReplaiSample, VideoError> {
        let name = src.name().to_string();
        let meta = src.meta().clone();
        let w = self.windows(t, meta.duration_s);
        let (tb, ta) = if train {
            (
                self.clip_times(&name, w.before, meta.fps, meta.duration_s, Some(&mut *rng))?,
                self.clip_times(&name, w.after, meta.fps, meta.duration_s, Some(&mut *rng))?,
            )
        } else {
            (
                self.clip_times::<R>(&name, w.before, meta.fps, meta.duration_s, None)?,
                self.clip_times::<R>(&name, w.after, meta.fps, meta.duration_s, None)?,
            )
        };
        // One decode pass for both clips.
        let wanted: Vec<f64> = tb.iter().chain(ta.iter()).copied().collect();
        let (all, frames) = read_unique(src, &name, &wanted, (w.before.0, w.after.1))?;
        let lookup = |times: &[f64]| -> Vec<&Frame> {
            times.iter().map(|&x| frame_at(&all, &frames, x)).collect()
        };
        let fb = lookup(&tb);
        let fa = lookup(&ta);
        let (fh, fw, _) = frames[0].image.dim();
        let spec = &self.cfg.clip;
        let (pb, pa) = if train {
            (
                SpatialParams::train(spec, fw, fh, rng)?,
                SpatialParams::train(spec, fw, fh, rng)?,
            )
        } else {
            let p = SpatialParams::eval(spec, fw, fh)?;
            (p, p)
        };
        let mut video_before = vec![0f32; spec.clip_len()];
        let mut video_after = vec![0f32; spec.clip_len()];
        let imgs_b: Vec<_> = fb.iter().map(|f| &f.image).collect();
        let imgs_a: Vec<_> = fa.iter().map(|f| &f.image).collect();
        apply_spatial(&imgs_b, &pb, spec, &mut video_before)?;
        apply_spatial(&imgs_a, &pa, spec, &mut video_after)?;

        let audio = self.audio_for(src, w.audio)?;
        Ok(ReplaiSample {
            video_before,
            video_after,
            audio,
            moment_s: t,
            source: name,
        })
    }

    /// One clip `[t0, t0 + clip_s]` of a source, without audio: the unit of the
    /// action-recognition probes (EPIC-100 action segments, UCF-101, HMDB-51), whose labels cover
    /// a whole segment rather than a moment. `train` selects the random temporal crop and the
    /// random scale/crop/flip, otherwise the centred window and the eval transform; a window
    /// shorter than the clip is loop-padded, as in the reference.
    pub fn clip_at<R: Rng>(
        &self,
        src: &mut dyn VideoSource,
        t0: f64,
        rng: &mut R,
        train: bool,
    ) -> Result<Vec<f32>, VideoError> {
        let name = src.name().to_string();
        let meta = src.meta().clone();
        let window = (t0, t0 + self.cfg.clip_s);
        let times = if train {
            self.clip_times(&name, window, meta.fps, meta.duration_s, Some(&mut *rng))?
        } else {
            self.clip_times::<R>(&name, window, meta.fps, meta.duration_s, None)?
        };
        let (unique, frames) = read_unique(src, &name, &times, window)?;
        let (fh, fw, _) = frames[0].image.dim();
        let picked: Vec<_> = times
            .iter()
            .map(|&x| &frame_at(&unique, &frames, x).image)
            .collect();
        let spec = &self.cfg.clip;
        let params = if train {
            SpatialParams::train(spec, fw, fh, rng)?
        } else {
            SpatialParams::eval(spec, fw, fh)?
        };
        let mut out = vec![0f32; spec.clip_len()];
        apply_spatial(&picked, &params, spec, &mut out)?;
        Ok(out)
    }

    /// Log-mel network input for the audio window `[a0, a1]` of a source.
    pub fn audio_for(
        &self,
        src: &mut dyn VideoSource,
        window: (f64, f64),
    ) -> Result<Vec<f32>, VideoError> {
        let name = src.name().to_string();
        let (samples, rate) =
            src.read_audio_window(window.0, window.1)?
                .ok_or_else(|| VideoError::NoAudio {
                    source_name: name.clone(),
                })?;
        if samples.is_empty() {
            return Err(VideoError::WindowOutOfRange {
                source_name: name,
                t0_s: window.0,
                t1_s: window.1,
                duration_s: src.meta().duration_s,
            });
        }
        let fe = self.front_end(&name, rate)?;
        fe.network_input(&samples)
            .map_err(|source| VideoError::Audio {
                source_name: name,
                source,
            })
    }
}

/// Decodes each distinct time of `times` once, in time order (loop padding repeats times out of
/// order, and a sample's two clips may share frames), and checks that all frames have one size.
/// Returns the sorted distinct times and their frames.
fn read_unique(
    src: &mut dyn VideoSource,
    name: &str,
    times: &[f64],
    window: (f64, f64),
) -> Result<(Vec<f64>, Vec<Frame>), VideoError> {
    let mut unique = times.to_vec();
    unique.sort_by(|a, b| a.total_cmp(b));
    unique.dedup_by(|a, b| (*a - *b).abs() < PTS_EPS);
    let frames = src.read_frames_at(&unique)?;
    if frames.is_empty() || frames.len() != unique.len() {
        return Err(VideoError::NoFramesInWindow {
            source_name: name.to_string(),
            t0_s: window.0,
            t1_s: window.1,
        });
    }
    let (fh, fw, _) = frames[0].image.dim();
    for (i, f) in frames.iter().enumerate() {
        crate::source::check_frame(name, i, &f.image, Some((fh, fw)))?;
    }
    Ok((unique, frames))
}

/// The frame of [`read_unique`]'s output decoded for time `x`.
fn frame_at<'a>(unique: &[f64], frames: &'a [Frame], x: f64) -> &'a Frame {
    let i = unique
        .partition_point(|&a| a < x - PTS_EPS)
        .min(unique.len() - 1);
    &frames[i]
}

/// Sample range `[i0, i1)` of the window `[a0, a1]` seconds in a track of `n` samples.
pub fn audio_slice(n: usize, rate: u32, window: (f64, f64)) -> (usize, usize) {
    let r = rate as f64;
    let i0 = (window.0 * r).round().max(0.0) as usize;
    let i1 = (window.1 * r).round().max(0.0) as usize;
    (i0.min(n), i1.min(n))
}
