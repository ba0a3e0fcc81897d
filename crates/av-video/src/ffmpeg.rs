//! MP4 and other containers through FFmpeg (feature `ffmpeg`), with frame-accurate seeking.
//!
//! video-rs's `Decoder::seek` jumps to the nearest keyframe within a second, which may lie
//! *after* the requested time (see `stack-notes.md`), so this source drives libavformat and
//! libavcodec (the ffmpeg-next bindings video-rs is built on) directly:
//!
//! 1. seek the demuxer to the last keyframe at or before the first requested time
//!    (`avformat_seek_file` with `max_ts = target`),
//! 2. flush the decoder and decode forward,
//! 3. drop frames before the target and convert to RGB only the frames that are kept.
//!
//! Audio is decoded by a second demuxer (libavformat applies MP4 edit lists and libavcodec
//! drops the AAC priming samples), converted to f32 and averaged over channels exactly as the
//! reference does (no FFmpeg downmix matrix), and placed on the video timeline by its
//! presentation timestamps so that sample 0 is at video time 0.

use std::path::{Path, PathBuf};
use std::sync::Once;

use ff::format::sample::Type as SampleType;
use ff::format::Sample;
use ffmpeg_next as ff;
use ndarray::Array3;

use crate::error::VideoError;
use crate::source::{check_window, Frame, VideoMeta, VideoSource, PTS_EPS};

static INIT: Once = Once::new();

fn init() {
    INIT.call_once(|| {
        // Registration cannot fail on FFmpeg >= 4; silence the library's own stderr chatter
        // (truncated files log dozens of lines) because every failure becomes a typed error.
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Fatal);
    });
}

/// A video file decoded through FFmpeg with frame-accurate reads.
pub struct FfmpegSource {
    path: PathBuf,
    name: String,
    input: ff::format::context::Input,
    decoder: ff::decoder::Video,
    stream_index: usize,
    time_base: f64,
    start_pts: i64,
    meta: VideoMeta,
    audio: Option<(Vec<f32>, u32)>,
    /// Index and time base of the best audio stream, if any.
    audio_stream: Option<(usize, f64)>,
    /// Audio decoder for window reads on the shared demuxer, created on first use.
    audio_decoder: Option<ff::decoder::Audio>,
}

impl std::fmt::Debug for FfmpegSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfmpegSource")
            .field("path", &self.path)
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

fn rational(r: ff::Rational) -> f64 {
    if r.denominator() == 0 {
        0.0
    } else {
        r.numerator() as f64 / r.denominator() as f64
    }
}

impl FfmpegSource {
    /// Opens a file and its best video stream.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, VideoError> {
        init();
        let path = path.as_ref().to_path_buf();
        let md = std::fs::metadata(&path).map_err(|e| VideoError::io(&path, e))?;
        if md.is_dir() {
            return Err(VideoError::Decode {
                path,
                reason: "is a directory (open frame folders with FrameFolderSource)".into(),
            });
        }
        let decode_err = |what: &str, e: ff::Error| VideoError::Decode {
            path: path.clone(),
            reason: format!("{what}: {e}"),
        };
        let input = ff::format::input(&path).map_err(|e| decode_err("cannot open container", e))?;
        let stream = input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| VideoError::NoVideoStream { path: path.clone() })?;
        let stream_index = stream.index();
        let time_base = rational(stream.time_base());
        if time_base <= 0.0 {
            return Err(VideoError::Decode {
                path,
                reason: "video stream has no time base".into(),
            });
        }
        let start_pts = match stream.start_time() {
            ts if ts == ff::ffi::AV_NOPTS_VALUE => 0,
            ts => ts,
        };
        let mut fps = rational(stream.avg_frame_rate());
        if !(fps.is_finite() && fps > 0.0) {
            fps = rational(stream.rate());
        }
        if !(fps.is_finite() && fps > 0.0) {
            return Err(VideoError::Decode {
                path,
                reason: "video stream declares no frame rate".into(),
            });
        }
        let duration_s = if stream.duration() > 0 {
            stream.duration() as f64 * time_base
        } else if input.duration() > 0 {
            input.duration() as f64 / ff::ffi::AV_TIME_BASE as f64
        } else {
            0.0
        };
        let n_frames = if stream.frames() > 0 {
            stream.frames() as usize
        } else {
            (duration_s * fps).round() as usize
        };
        let ctx = ff::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| decode_err("codec parameters", e))?;
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| decode_err("no decoder for the video codec", e))?;
        let (width, height) = (decoder.width(), decoder.height());
        if width == 0 || height == 0 {
            return Err(VideoError::Decode {
                path,
                reason: "video stream has no frame size".into(),
            });
        }
        let audio_stream = input
            .streams()
            .best(ff::media::Type::Audio)
            .map(|a| (a.index(), rational(a.time_base())));
        let has_audio = audio_stream.is_some();
        if duration_s <= 0.0 || n_frames == 0 {
            return Err(VideoError::EmptySource {
                source_name: path.display().to_string(),
                reason: "video stream has zero duration".into(),
            });
        }
        let meta = VideoMeta {
            fps,
            duration_s,
            n_frames,
            width,
            height,
            has_audio,
        };
        Ok(Self {
            name: path.display().to_string(),
            path,
            input,
            decoder,
            stream_index,
            time_base,
            start_pts,
            meta,
            audio: None,
            audio_stream,
            audio_decoder: None,
        })
    }

    fn decode_err(&self, reason: impl Into<String>) -> VideoError {
        VideoError::Decode {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Positions the demuxer on the last keyframe at or before `t_s` and flushes the decoder.
    fn seek_before(&mut self, t_s: f64) -> Result<(), VideoError> {
        // Stream index -1 seeks in AV_TIME_BASE units on the container clock.
        let start_s = self.start_pts as f64 * self.time_base;
        let ts = ((t_s + start_s).max(0.0) * ff::ffi::AV_TIME_BASE as f64).floor() as i64;
        let r = self.input.seek(ts, ..ts + 1);
        if r.is_err() {
            // Some demuxers refuse a bounded seek near the start: rewind fully instead.
            self.input
                .seek(i64::MIN + 1, ..i64::MAX)
                .map_err(|e| self.decode_err(format!("seek to {t_s:.3} s failed: {e}")))?;
        }
        self.decoder.flush();
        Ok(())
    }

    /// Decodes forward from the current position, handing every frame to `visit` with its time;
    /// stops when `visit` returns `false` or the stream ends. Returns whether it was stopped.
    /// `visit` may swap the frame out (the buffer it leaves behind is reused for the next one),
    /// which avoids copying every decoded picture of a long GOP.
    fn decode_forward(
        &mut self,
        mut visit: impl FnMut(f64, &mut ff::frame::Video) -> Result<bool, VideoError>,
    ) -> Result<bool, VideoError> {
        let mut frame = ff::frame::Video::empty();
        let mut packet = ff::Packet::empty();
        let mut bad_packets = 0usize;
        let tb = self.time_base;
        let start = self.start_pts;
        let mut eof = false;
        loop {
            if !eof {
                match packet.read(&mut self.input) {
                    Ok(()) => {
                        if packet.stream() != self.stream_index {
                            continue;
                        }
                        if self.decoder.send_packet(&packet).is_err() {
                            // A corrupt packet: skip it, but give up on a file made of them.
                            bad_packets += 1;
                            if bad_packets > 64 {
                                return Err(self.decode_err("too many undecodable packets"));
                            }
                            continue;
                        }
                    }
                    Err(ff::Error::Eof) => {
                        eof = true;
                        let _ = self.decoder.send_eof();
                    }
                    Err(ff::Error::InvalidData) => {
                        bad_packets += 1;
                        if bad_packets > 64 {
                            return Err(self.decode_err("too many unreadable packets"));
                        }
                        continue;
                    }
                    Err(e) => return Err(self.decode_err(format!("read error: {e}"))),
                }
            }
            loop {
                match self.decoder.receive_frame(&mut frame) {
                    Ok(()) => {
                        let pts = frame.timestamp().or(frame.pts()).unwrap_or(start);
                        let t = (pts - start) as f64 * tb;
                        if !visit(t, &mut frame)? {
                            return Ok(true);
                        }
                    }
                    Err(ff::Error::Eof) => return Ok(false),
                    Err(_) => break, // EAGAIN: needs more input
                }
            }
            if eof {
                // Drained after EOF without an Eof error: nothing more will come.
                return Ok(false);
            }
        }
    }

    fn to_rgb(
        &self,
        scaler: &mut Option<ff::software::scaling::Context>,
        frame: &ff::frame::Video,
        pts_s: f64,
    ) -> Result<Frame, VideoError> {
        let (w, h) = (frame.width(), frame.height());
        let stale = scaler.as_ref().is_none_or(|s| {
            s.input().width != w || s.input().height != h || s.input().format != frame.format()
        });
        if stale {
            *scaler = Some(
                ff::software::scaling::Context::get(
                    frame.format(),
                    w,
                    h,
                    ff::format::Pixel::RGB24,
                    w,
                    h,
                    ff::software::scaling::Flags::BILINEAR,
                )
                .map_err(|e| self.decode_err(format!("pixel conversion: {e}")))?,
            );
        }
        let mut rgb = ff::frame::Video::empty();
        if let Some(s) = scaler.as_mut() {
            s.run(frame, &mut rgb)
                .map_err(|e| self.decode_err(format!("pixel conversion: {e}")))?;
        }
        let (w, h) = (w as usize, h as usize);
        let stride = rgb.stride(0);
        let data = rgb.data(0);
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            out.extend_from_slice(&data[y * stride..y * stride + w * 3]);
        }
        let image = Array3::from_shape_vec((h, w, 3), out)
            .map_err(|e| self.decode_err(format!("frame buffer: {e}")))?;
        Ok(Frame { pts_s, image })
    }

    /// Decodes only the audio around `[t0_s, t1_s]` on the shared demuxer: seek a little
    /// earlier (the AAC decoder needs one frame of history), place every decoded frame on the
    /// video clock by its timestamp and keep the samples inside the window.
    fn decode_audio_window(
        &mut self,
        t0_s: f64,
        t1_s: f64,
    ) -> Result<Option<(Vec<f32>, u32)>, VideoError> {
        let Some((aidx, atb)) = self.audio_stream else {
            return Ok(None);
        };
        if self.audio_decoder.is_none() {
            let params = self
                .input
                .stream(aidx)
                .map(|s| s.parameters())
                .ok_or_else(|| self.decode_err("audio stream vanished"))?;
            let ctx = ff::codec::context::Context::from_parameters(params)
                .map_err(|e| self.decode_err(format!("audio codec parameters: {e}")))?;
            let dec = ctx
                .decoder()
                .audio()
                .map_err(|e| self.decode_err(format!("no decoder for the audio codec: {e}")))?;
            self.audio_decoder = Some(dec);
        }
        const PRE_ROLL_S: f64 = 0.1;
        self.seek_before(t0_s - PRE_ROLL_S)?;
        let video_start_s = self.start_pts as f64 * self.time_base;
        let path = self.path.clone();
        let err = |reason: String| VideoError::Decode {
            path: path.clone(),
            reason,
        };
        let Some(decoder) = self.audio_decoder.as_mut() else {
            return Ok(None);
        };
        decoder.flush();
        let mut out: Vec<f32> = Vec::new();
        let mut rate = 0u32;
        let mut written: Option<(usize, usize)> = None;
        let mut frame = ff::frame::Audio::empty();
        let mut packet = ff::Packet::empty();
        let mut eof = false;
        let mut bad = 0usize;
        'outer: loop {
            if !eof {
                match packet.read(&mut self.input) {
                    Ok(()) => {
                        if packet.stream() != aidx {
                            continue;
                        }
                        if decoder.send_packet(&packet).is_err() {
                            bad += 1;
                            if bad > 64 {
                                return Err(err("too many undecodable audio packets".into()));
                            }
                            continue;
                        }
                    }
                    Err(ff::Error::Eof) => {
                        eof = true;
                        let _ = decoder.send_eof();
                    }
                    Err(ff::Error::InvalidData) => {
                        bad += 1;
                        if bad > 64 {
                            return Err(err("too many unreadable audio packets".into()));
                        }
                        continue;
                    }
                    Err(e) => return Err(err(format!("audio read error: {e}"))),
                }
            }
            loop {
                match decoder.receive_frame(&mut frame) {
                    Ok(()) => {
                        if rate == 0 {
                            rate = frame.rate();
                            if rate == 0 {
                                return Err(err("audio frame without a sample rate".into()));
                            }
                            out =
                                vec![0.0; ((t1_s - t0_s) * rate as f64).round().max(0.0) as usize];
                        }
                        let Some(pts) = frame.timestamp().or(frame.pts()) else {
                            continue;
                        };
                        let ts = pts as f64 * atb - video_start_s;
                        if ts > t1_s {
                            break 'outer;
                        }
                        let samples = mix_to_mono(&frame).map_err(err)?;
                        let rel = ((ts - t0_s) * rate as f64).round() as i64;
                        for (k, v) in samples.iter().enumerate() {
                            let j = rel + k as i64;
                            if j >= 0 && (j as usize) < out.len() {
                                out[j as usize] = *v;
                                let j = j as usize;
                                written = Some(match written {
                                    None => (j, j + 1),
                                    Some((a, b)) => (a.min(j), b.max(j + 1)),
                                });
                            }
                        }
                    }
                    Err(ff::Error::Eof) => break 'outer,
                    Err(_) => break,
                }
            }
            if eof {
                break;
            }
        }
        let Some((a, b)) = written else {
            return Ok(Some((Vec::new(), rate.max(1))));
        };
        if let Some(i) = out[a..b].iter().position(|x| !x.is_finite()) {
            return Err(err(format!("audio sample {i} is not finite")));
        }
        Ok(Some((out[a..b].to_vec(), rate)))
    }

    fn decode_audio(&self) -> Result<Option<(Vec<f32>, u32)>, VideoError> {
        let path = &self.path;
        let err = |reason: String| VideoError::Decode {
            path: path.clone(),
            reason,
        };
        let mut input =
            ff::format::input(path).map_err(|e| err(format!("cannot open container: {e}")))?;
        let Some(stream) = input.streams().best(ff::media::Type::Audio) else {
            return Ok(None);
        };
        let index = stream.index();
        let atb = rational(stream.time_base());
        let ctx = ff::codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| err(format!("audio codec parameters: {e}")))?;
        let mut decoder = ctx
            .decoder()
            .audio()
            .map_err(|e| err(format!("no decoder for the audio codec: {e}")))?;
        let video_start_s = self.start_pts as f64 * self.time_base;
        let mut mono: Vec<f32> = Vec::new();
        let mut rate = 0u32;
        let mut first = true;
        let mut frame = ff::frame::Audio::empty();
        let mut packet = ff::Packet::empty();
        let mut eof = false;
        let mut bad = 0usize;
        loop {
            if !eof {
                match packet.read(&mut input) {
                    Ok(()) => {
                        if packet.stream() != index {
                            continue;
                        }
                        if decoder.send_packet(&packet).is_err() {
                            bad += 1;
                            if bad > 64 {
                                return Err(err("too many undecodable audio packets".into()));
                            }
                            continue;
                        }
                    }
                    Err(ff::Error::Eof) => {
                        eof = true;
                        let _ = decoder.send_eof();
                    }
                    Err(ff::Error::InvalidData) => {
                        bad += 1;
                        if bad > 64 {
                            return Err(err("too many unreadable audio packets".into()));
                        }
                        continue;
                    }
                    Err(e) => return Err(err(format!("audio read error: {e}"))),
                }
            }
            let mut done = false;
            loop {
                match decoder.receive_frame(&mut frame) {
                    Ok(()) => {
                        let samples = mix_to_mono(&frame).map_err(err)?;
                        if first {
                            first = false;
                            rate = frame.rate();
                            // Place the first sample on the video clock: pad a late start with
                            // silence, drop samples that precede video time 0.
                            if let Some(pts) = frame.timestamp().or(frame.pts()) {
                                let t0 = pts as f64 * atb - video_start_s;
                                let shift = (t0 * rate as f64).round() as i64;
                                if shift > 0 {
                                    mono.resize(shift as usize, 0.0);
                                    mono.extend_from_slice(&samples);
                                } else {
                                    let skip = ((-shift) as usize).min(samples.len());
                                    mono.extend_from_slice(&samples[skip..]);
                                }
                                continue;
                            }
                        }
                        mono.extend_from_slice(&samples);
                    }
                    Err(ff::Error::Eof) => {
                        done = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if done || eof {
                break;
            }
        }
        if rate == 0 || mono.is_empty() {
            return Err(err("audio stream decodes to zero samples".into()));
        }
        if let Some(i) = mono.iter().position(|x| !x.is_finite()) {
            return Err(err(format!("audio sample {i} is not finite")));
        }
        Ok(Some((mono, rate)))
    }
}

/// Channel mean of one decoded audio frame, for every sample format FFmpeg decoders produce.
fn mix_to_mono(frame: &ff::frame::Audio) -> Result<Vec<f32>, String> {
    let n = frame.samples();
    let ch = frame.channels() as usize;
    if ch == 0 {
        return Err("audio frame without channels".into());
    }
    let (kind, planar) = match frame.format() {
        Sample::U8(t) => (0, t == SampleType::Planar),
        Sample::I16(t) => (1, t == SampleType::Planar),
        Sample::I32(t) => (2, t == SampleType::Planar),
        Sample::F32(t) => (3, t == SampleType::Planar),
        Sample::F64(t) => (4, t == SampleType::Planar),
        other => return Err(format!("unsupported audio sample format {other:?}")),
    };
    let bytes = [1usize, 2, 4, 4, 8][kind];
    let read = |buf: &[u8], i: usize| -> f32 {
        let b = &buf[i * bytes..(i + 1) * bytes];
        match kind {
            0 => (b[0] as f32 - 128.0) / 128.0,
            1 => i16::from_ne_bytes([b[0], b[1]]) as f32 / 32768.0,
            2 => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
            3 => f32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            _ => f64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
        }
    };
    let mut out = vec![0f32; n];
    let inv = 1.0 / ch as f32;
    if planar {
        for c in 0..ch {
            let buf = frame.data(c);
            if buf.len() < n * bytes {
                return Err("short audio plane".into());
            }
            for (i, o) in out.iter_mut().enumerate() {
                *o += read(buf, i);
            }
        }
    } else {
        let buf = frame.data(0);
        if buf.len() < n * ch * bytes {
            return Err("short audio buffer".into());
        }
        for (i, o) in out.iter_mut().enumerate() {
            for c in 0..ch {
                *o += read(buf, i * ch + c);
            }
        }
    }
    out.iter_mut().for_each(|o| *o *= inv);
    Ok(out)
}

impl VideoSource for FfmpegSource {
    fn meta(&self) -> &VideoMeta {
        &self.meta
    }

    fn read_frames(&mut self, t0_s: f64, t1_s: f64) -> Result<Vec<Frame>, VideoError> {
        check_window(&self.name, t0_s, t1_s, self.meta.duration_s)?;
        self.seek_before(t0_s)?;
        let mut scaler = None;
        let mut kept: Vec<(f64, ff::frame::Video)> = Vec::new();
        self.decode_forward(|t, f| {
            if t > t1_s + PTS_EPS {
                return Ok(false);
            }
            if t >= t0_s - PTS_EPS {
                let mut owned = ff::frame::Video::empty();
                std::mem::swap(&mut owned, f);
                kept.push((t, owned));
            }
            Ok(true)
        })?;
        kept.iter()
            .map(|(t, f)| self.to_rgb(&mut scaler, f, *t))
            .collect()
    }

    fn read_audio(&mut self) -> Result<Option<(Vec<f32>, u32)>, VideoError> {
        if self.audio.is_none() && self.meta.has_audio {
            self.audio = self.decode_audio()?;
        }
        Ok(self.audio.clone())
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn read_audio_window(
        &mut self,
        t0_s: f64,
        t1_s: f64,
    ) -> Result<Option<(Vec<f32>, u32)>, VideoError> {
        if let Some((samples, rate)) = &self.audio {
            let (i0, i1) = crate::sampler::audio_slice(samples.len(), *rate, (t0_s, t1_s));
            return Ok(Some((samples[i0..i1.max(i0)].to_vec(), *rate)));
        }
        if !(t0_s.is_finite() && t1_s.is_finite()) || t1_s <= t0_s {
            return Err(VideoError::InvalidConfig(format!(
                "{}: bad audio window [{t0_s}, {t1_s}]",
                self.name
            )));
        }
        let (t0_s, t1_s) = (t0_s.max(0.0), t1_s);
        self.decode_audio_window(t0_s, t1_s)
    }

    fn read_frames_at(&mut self, times_s: &[f64]) -> Result<Vec<Frame>, VideoError> {
        if times_s.is_empty() {
            return Ok(Vec::new());
        }
        if times_s.iter().any(|t| !t.is_finite()) || times_s.windows(2).any(|w| w[1] < w[0]) {
            return Err(VideoError::InvalidConfig(format!(
                "{}: requested times must be finite and ascending",
                self.name
            )));
        }
        let period = 1.0 / self.meta.fps;
        let first = times_s[0];
        let last = times_s[times_s.len() - 1];
        if last < -period || first > self.meta.duration_s + period {
            return Err(VideoError::WindowOutOfRange {
                source_name: self.name.clone(),
                t0_s: first,
                t1_s: last,
                duration_s: self.meta.duration_s,
            });
        }
        // Start half a frame early: the nearest frame to `first` may precede it.
        self.seek_before(first - period)?;
        let mut scaler = None;
        // Decide each requested time as soon as the first frame at or after it arrives: the
        // nearest frame is then either that one or the previous one. Only the chosen frames are
        // converted to RGB; `prev` is the only decoded frame kept alive.
        let mut out: Vec<Frame> = Vec::with_capacity(times_s.len());
        let mut prev: Option<f64> = None;
        let mut prev_frame = ff::frame::Video::empty();
        let mut j = 0usize;
        // Frames are converted after decoding finishes (`to_rgb` needs `&self` while the decoder
        // is borrowed); at most `times_s.len()` distinct frames are held.
        let mut pending: Vec<(f64, ff::frame::Video)> = Vec::new();
        let mut picks: Vec<usize> = Vec::with_capacity(times_s.len());
        let same = |pending: &Vec<(f64, ff::frame::Video)>, t: f64| {
            pending
                .last()
                .is_some_and(|(lt, _)| (lt - t).abs() <= PTS_EPS)
        };
        self.decode_forward(|t, f| {
            while j < times_s.len() && t >= times_s[j] - PTS_EPS {
                let target = times_s[j];
                // Ties go to the earlier frame.
                match prev {
                    Some(pt) if target - pt <= t - target => {
                        if !same(&pending, pt) {
                            pending.push((pt, prev_frame.clone()));
                        }
                    }
                    _ => {
                        if !same(&pending, t) {
                            pending.push((t, f.clone()));
                        }
                    }
                }
                picks.push(pending.len() - 1);
                j += 1;
            }
            if j == times_s.len() {
                return Ok(false);
            }
            prev = Some(t);
            std::mem::swap(&mut prev_frame, f);
            Ok(true)
        })?;
        // Times past the last decoded frame: use it when it is within one frame period.
        while j < times_s.len() {
            match prev {
                Some(pt) if times_s[j] - pt <= period + PTS_EPS => {
                    if !same(&pending, pt) {
                        pending.push((pt, prev_frame.clone()));
                    }
                    picks.push(pending.len() - 1);
                    j += 1;
                }
                _ => {
                    return Err(VideoError::NoFramesInWindow {
                        source_name: self.name.clone(),
                        t0_s: times_s[j] - period,
                        t1_s: times_s[j] + period,
                    })
                }
            }
        }
        let converted: Vec<Frame> = pending
            .iter()
            .map(|(t, f)| self.to_rgb(&mut scaler, f, *t))
            .collect::<Result<_, _>>()?;
        for p in picks {
            out.push(converted[p].clone());
        }
        Ok(out)
    }
}
