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
    /// See [`FfmpegSource::set_skip_non_reference`].
    skip_non_reference: bool,
    /// Whether packet decode timestamps come from the container's index (MP4/MOV) rather
    /// than being guessed by libavformat; only then may a read stop once they pass its end.
    container_dts: bool,
    /// The decoder's reordering depth when the current decode pass output its first frame.
    depth_at_first_frame: Option<i32>,
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
        Self::open_with(path, false)
    }

    /// [`Self::open`]; `probe` forces `avformat_find_stream_info` (see [`open_input`]).
    fn open_with(path: impl AsRef<Path>, probe: bool) -> Result<Self, VideoError> {
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
        let input = open_input(&path, probe).map_err(|e| decode_err("cannot open container", e))?;
        // SAFETY: the context is open; `iformat` is set by avformat_open_input.
        let container_dts = unsafe { is_mov(input.as_ptr()) };
        // Without probing, a stream whose header lacks a parameter (an audio stream without a
        // channel count, say) is not eligible for `best`: probe then, as ffmpeg-next would.
        if !probe
            && [ff::media::Type::Video, ff::media::Type::Audio]
                .into_iter()
                .any(|t| {
                    input.streams().best(t).is_none()
                        && input.streams().any(|st| st.parameters().medium() == t)
                })
        {
            return Self::open_with(path, true);
        }
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
            skip_non_reference: true,
            container_dts,
            depth_at_first_frame: None,
        })
    }

    /// Whether [`VideoSource::read_frames_at`] may skip decoding non-reference frames that no
    /// requested time needs (default on; the output is identical either way, see the tests).
    pub fn set_skip_non_reference(&mut self, on: bool) {
        self.skip_non_reference = on;
    }

    fn decode_err(&self, reason: impl Into<String>) -> VideoError {
        VideoError::Decode {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Makes the demuxer skip every stream but `keep` (`AVDISCARD_ALL`): a pass over the video
    /// then never reads the interleaved audio packets' data, and the audio pass never reads the
    /// video's (tens of kilobytes per frame).
    fn demux_only(&mut self, keep: usize) {
        // SAFETY: the format context stays open for the lifetime of `self.input`; its `streams`
        // array holds `nb_streams` valid stream pointers, and `discard` is a plain field the
        // demuxer reads on each packet.
        unsafe {
            let ctx = &mut *self.input.as_mut_ptr();
            for i in 0..ctx.nb_streams as usize {
                let st = &mut **ctx.streams.add(i);
                st.discard = if i == keep {
                    ff::ffi::AVDiscard::AVDISCARD_DEFAULT
                } else {
                    ff::ffi::AVDiscard::AVDISCARD_ALL
                };
            }
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

    /// Positions the demuxer at or before `t_s` (video clock) *on the audio stream*. A seek on
    /// the container clock lands on the video keyframe, which can be seconds earlier with long
    /// GOPs; every audio packet after it would then be decoded for nothing. Audio packets are
    /// all sync points, so this lands right before the window.
    fn seek_audio_before(&mut self, aidx: usize, atb: f64, t_s: f64) -> Result<(), VideoError> {
        let start_s = self.start_pts as f64 * self.time_base;
        let ts = ((t_s + start_s).max(0.0) / atb).floor() as i64;
        // SAFETY: the format context is open for the lifetime of `self.input`, and `aidx` is
        // one of its stream indices; avformat_seek_file only moves the demuxer.
        let r = unsafe {
            ff::ffi::avformat_seek_file(self.input.as_mut_ptr(), aidx as i32, i64::MIN, ts, ts, 0)
        };
        if r < 0 {
            // Not every demuxer seeks per stream: fall back to the container clock.
            return self.seek_before(t_s);
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
        visit: impl FnMut(f64, &mut ff::frame::Video) -> Result<bool, VideoError>,
    ) -> Result<bool, VideoError> {
        self.decode_forward_needing(None, visit)
    }

    /// [`Self::decode_forward`], telling libavcodec to skip the *non-reference* frames whose
    /// packet time `needed.wants` rejects (`skip_frame = AVDISCARD_NONREF` for those packets).
    /// No other frame depends on a non-reference frame, so every frame that is still decoded
    /// is bit-identical to a full decode; the skipped ones simply never reach `visit`.
    fn decode_forward_needing(
        &mut self,
        needed: Option<&Needed<'_>>,
        mut visit: impl FnMut(f64, &mut ff::frame::Video) -> Result<bool, VideoError>,
    ) -> Result<bool, VideoError> {
        let result = self.decode_loop(needed, &mut visit);
        // Later reads (and other callers) decode everything again.
        self.decoder.skip_frame(ff::Discard::Default);
        result
    }

    fn decode_loop(
        &mut self,
        needed: Option<&Needed<'_>>,
        visit: &mut impl FnMut(f64, &mut ff::frame::Video) -> Result<bool, VideoError>,
    ) -> Result<bool, VideoError> {
        let mut frame = ff::frame::Video::empty();
        let mut packet = ff::Packet::empty();
        let mut bad_packets = 0usize;
        let tb = self.time_base;
        let start = self.start_pts;
        let mut eof = false;
        self.depth_at_first_frame = None;
        loop {
            if !eof {
                match packet.read(&mut self.input) {
                    Ok(()) => {
                        if packet.stream() != self.stream_index {
                            continue;
                        }
                        if let Some(needed) = needed {
                            // Decode timestamps never decrease and no frame is presented before
                            // it is decoded (pts >= dts), so once a packet's dts passes the last
                            // wanted time, no packet still to come holds a wanted frame: drain
                            // the decoder instead of feeding it frames (often P-frames) that are
                            // only there to push the last wanted ones out of its reorder buffer.
                            if self.container_dts
                                && packet
                                    .dts()
                                    .is_some_and(|dts| (dts - start) as f64 * tb > needed.last)
                            {
                                eof = true;
                                let _ = self.decoder.send_eof();
                                continue;
                            }
                            // Single-threaded decoding: the setting applies to this packet.
                            let skip = packet
                                .pts()
                                .is_some_and(|pts| !(needed.wants)((pts - start) as f64 * tb));
                            self.decoder.skip_frame(if skip {
                                ff::Discard::NonReference
                            } else {
                                ff::Discard::Default
                            });
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
                        if self.depth_at_first_frame.is_none() {
                            self.depth_at_first_frame = Some(self.reorder_depth());
                        }
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
        // Convert straight into the frame's own buffer: no intermediate AVFrame, no row copy.
        let (w, h) = (w as usize, h as usize);
        // Slack after the last row: SIMD paths of swscale may store a little past a row's end.
        const SLACK: usize = 64;
        let mut out: Vec<u8> = Vec::with_capacity(w * h * 3 + SLACK);
        let Some(s) = scaler.as_mut() else {
            return Err(self.decode_err("pixel conversion: no scaler"));
        };
        let dst_planes = [
            out.as_mut_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        ];
        let dst_strides = [(w * 3) as i32, 0, 0, 0];
        // SAFETY: the context was built for exactly this input size and format and for packed
        // RGB24 output of the same size; `out` has room for `h` rows of `3 w` bytes plus
        // `SLACK`, which is what sws_scale writes for RGB24 with that stride. The source
        // pointers come from a decoded frame that outlives the call.
        let written = unsafe {
            let src = frame.as_ptr();
            ff::ffi::sws_scale(
                s.as_mut_ptr(),
                (*src).data.as_ptr() as *const *const u8,
                (*src).linesize.as_ptr(),
                0,
                h as i32,
                dst_planes.as_ptr(),
                dst_strides.as_ptr(),
            )
        };
        if written != h as i32 {
            return Err(self.decode_err(format!("pixel conversion wrote {written} of {h} rows")));
        }
        // SAFETY: sws_scale returned the number of output rows it produced, all `h` of them, so
        // the first `w * h * 3` bytes are initialised (no 0.9 MB zero-fill per frame needed).
        unsafe { out.set_len(w * h * 3) };
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
        self.demux_only(aidx);
        self.seek_audio_before(aidx, atb, t0_s - PRE_ROLL_S)?;
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
                        // The part of this frame that falls inside the window.
                        let lo = rel.clamp(0, out.len() as i64) as usize;
                        let hi = (rel + samples.len() as i64).clamp(0, out.len() as i64) as usize;
                        if lo < hi {
                            let k0 = (lo as i64 - rel) as usize;
                            out[lo..hi].copy_from_slice(&samples[k0..k0 + (hi - lo)]);
                            written = Some(match written {
                                None => (lo, hi),
                                Some((a, b)) => (a.min(lo), b.max(hi)),
                            });
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
            open_input(path, false).map_err(|e| err(format!("cannot open container: {e}")))?;
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

/// Opens a container for reading. `avformat_find_stream_info` (which ffmpeg-next's `input`
/// always calls) decodes the first packets of every stream to fill in codec parameters; an
/// MP4/MOV header already declares everything this crate reads (frame size, frame rate, frame
/// count, duration, sample rate, channels), so for those files the probe is skipped unless a
/// parameter is missing (`probe` forces it). That is a tenth of the open-decode-close cost of a
/// short read, paid once per training sample.
pub(crate) fn open_input(
    path: &Path,
    probe: bool,
) -> Result<ff::format::context::Input, ff::Error> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or(ff::Error::InvalidData)?
        .as_bytes()
        .to_vec();
    let c_path = std::ffi::CString::new(bytes).map_err(|_| ff::Error::InvalidData)?;
    let mut ps = std::ptr::null_mut();
    // SAFETY: `ps` starts null as avformat_open_input requires; on failure it frees the
    // context and leaves `ps` null, on success `ps` is a valid open context that we either
    // wrap (Input closes it on drop) or close ourselves.
    unsafe {
        let r = ff::ffi::avformat_open_input(
            &mut ps,
            c_path.as_ptr(),
            std::ptr::null(),
            std::ptr::null_mut(),
        );
        if r < 0 {
            return Err(ff::Error::from(r));
        }
        if probe || !header_is_complete(ps) {
            let r = ff::ffi::avformat_find_stream_info(ps, std::ptr::null_mut());
            if r < 0 {
                ff::ffi::avformat_close_input(&mut ps);
                return Err(ff::Error::from(r));
            }
        }
        Ok(ff::format::context::Input::wrap(ps))
    }
}

/// Whether an open format context is the MP4/MOV demuxer.
///
/// # Safety
/// `ctx` must be an open format context.
unsafe fn is_mov(ctx: *const ff::ffi::AVFormatContext) -> bool {
    let ctx = &*ctx;
    !ctx.iformat.is_null()
        && std::ffi::CStr::from_ptr((*ctx.iformat).name).to_bytes() == b"mov,mp4,m4a,3gp,3g2,mj2"
}

/// Whether an opened MP4/MOV header already gives every parameter the sources read, with at
/// most one video and one audio stream (with several, probing informs which one is "best").
///
/// # Safety
/// `ctx` must be an open format context.
unsafe fn header_is_complete(ctx: *const ff::ffi::AVFormatContext) -> bool {
    if !is_mov(ctx) {
        return false;
    }
    let ctx = &*ctx;
    if ctx.nb_streams == 0 {
        return false;
    }
    let streams = std::slice::from_raw_parts(ctx.streams, ctx.nb_streams as usize);
    let count = |t: ff::ffi::AVMediaType| {
        streams
            .iter()
            .filter(|&&st| (*(*st).codecpar).codec_type == t)
            .count()
    };
    if count(ff::ffi::AVMediaType::AVMEDIA_TYPE_VIDEO) > 1
        || count(ff::ffi::AVMediaType::AVMEDIA_TYPE_AUDIO) > 1
    {
        return false;
    }
    streams.iter().all(|&st| {
        let st = &*st;
        let par = &*st.codecpar;
        match par.codec_type {
            ff::ffi::AVMediaType::AVMEDIA_TYPE_VIDEO => {
                par.codec_id != ff::ffi::AVCodecID::AV_CODEC_ID_NONE
                    && par.width > 0
                    && par.height > 0
                    && st.avg_frame_rate.num > 0
                    && st.avg_frame_rate.den > 0
                    && st.duration > 0
                    && st.nb_frames > 0
            }
            ff::ffi::AVMediaType::AVMEDIA_TYPE_AUDIO => {
                // The decoder takes the channel layout from the stream's own config.
                par.codec_id != ff::ffi::AVCodecID::AV_CODEC_ID_NONE && par.sample_rate > 0
            }
            // Data, subtitle and attachment streams are never decoded here.
            _ => true,
        }
    })
}

/// Which frames a read wants, by presentation time in seconds: `wants` decides per packet
/// (the others may be skipped if no frame references them), and no frame after `last` is
/// wanted (decoding can stop once the packets' decode times pass it).
struct Needed<'a> {
    wants: &'a dyn Fn(f64) -> bool,
    last: f64,
}

/// A new reference to `src`'s (reference-counted) picture: no pixel copy, unlike `clone`.
fn frame_ref(src: &ff::frame::Video) -> ff::frame::Video {
    let mut dst = ff::frame::Video::empty();
    // SAFETY: both pointers are valid AVFrames; av_frame_ref only adds buffer references and
    // copies properties into the empty destination. Frames from the decoder are always
    // reference-counted; on failure (out of memory) fall back to a deep copy.
    let r = unsafe { ff::ffi::av_frame_ref(dst.as_mut_ptr(), src.as_ptr()) };
    if r < 0 {
        return src.clone();
    }
    dst
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
    if planar && kind == 3 {
        // AAC's native float planes: the same sums in the same order, without per-sample
        // format dispatch.
        for c in 0..ch {
            let buf = frame.data(c);
            if buf.len() < n * bytes {
                return Err("short audio plane".into());
            }
            for (o, b) in out.iter_mut().zip(buf.chunks_exact(4)) {
                *o += f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
    } else if planar {
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
        self.until_reorder_depth_settles(|src| src.read_window(t0_s, t1_s))
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
        self.until_reorder_depth_settles(|src| {
            if src.skip_non_reference {
                if let Some(frames) = src.read_frames_at_skipping(times_s, true)? {
                    return Ok(frames);
                }
            }
            // A frame farther than half a period from its time was picked (a gap in the
            // stream): a skipped frame might have been nearer, so decode everything.
            Ok(src
                .read_frames_at_skipping(times_s, false)?
                .unwrap_or_default())
        })
    }
}

impl FfmpegSource {
    /// Every frame whose time falls in `[t0_s, t1_s]`, in one seek and decode pass.
    fn read_window(&mut self, t0_s: f64, t1_s: f64) -> Result<Vec<Frame>, VideoError> {
        self.demux_only(self.stream_index);
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

    /// The decoder's current frame-reordering depth (`has_b_frames`).
    fn reorder_depth(&self) -> i32 {
        // SAFETY: the codec context is open for the lifetime of `self.decoder`.
        unsafe { (*self.decoder.as_ptr()).has_b_frames }
    }

    /// Runs a read again while the decoder's reordering depth grew after its last decode pass
    /// had output a frame.
    ///
    /// An H.264 decoder that meets a frame more out of order than its depth allows (the
    /// stream's parameter sets do not bound the reordering, and the container's estimate, or
    /// the probe's, was short) raises the depth and drops that frame, so such a pass may miss
    /// a frame. Reading again with the larger depth is exact. A raise before the first output
    /// (the parameter sets' own bound, applied at the first slice) drops nothing.
    fn until_reorder_depth_settles<R>(
        &mut self,
        mut read: impl FnMut(&mut Self) -> Result<R, VideoError>,
    ) -> Result<R, VideoError> {
        for _ in 0..4 {
            let result = read(self)?;
            match self.depth_at_first_frame {
                Some(d) if self.reorder_depth() > d => continue,
                _ => return Ok(result),
            }
        }
        Err(self.decode_err("the decoder's frame-reordering depth kept growing"))
    }

    /// Nearest frames to ascending `times_s`. With `skip`, non-reference frames farther than
    /// half a frame period from every requested time are not decoded; then `None` is returned
    /// if some pick lies farther than that from its time, since a skipped frame could have been
    /// nearer (only possible with gaps or a variable frame rate).
    fn read_frames_at_skipping(
        &mut self,
        times_s: &[f64],
        skip: bool,
    ) -> Result<Option<Vec<Frame>>, VideoError> {
        let period = 1.0 / self.meta.fps;
        let first = times_s[0];
        // On a constant-rate stream the nearest frame is within half a period of its time.
        let reach = 0.5 * period + 2.0 * PTS_EPS;
        let near_a_time = |t: f64| {
            let i = times_s.partition_point(|&x| x < t);
            (i < times_s.len() && times_s[i] - t <= reach) || (i > 0 && t - times_s[i - 1] <= reach)
        };
        // Start half a frame early: the nearest frame to `first` may precede it.
        self.demux_only(self.stream_index);
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
        let needed = Needed {
            wants: &near_a_time,
            last: times_s[times_s.len() - 1] + reach,
        };
        let needed = if skip { Some(&needed) } else { None };
        self.decode_forward_needing(needed, |t, f| {
            while j < times_s.len() && t >= times_s[j] - PTS_EPS {
                let target = times_s[j];
                // Ties go to the earlier frame.
                match prev {
                    Some(pt) if target - pt <= t - target => {
                        if !same(&pending, pt) {
                            pending.push((pt, frame_ref(&prev_frame)));
                        }
                    }
                    _ => {
                        if !same(&pending, t) {
                            pending.push((t, frame_ref(f)));
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
                        pending.push((pt, frame_ref(&prev_frame)));
                    }
                    picks.push(pending.len() - 1);
                    j += 1;
                }
                // In the skipping read, decoding may have stopped early (or skipped the frame
                // that was nearest); only the full read may report a frame missing.
                _ if skip => return Ok(None),
                _ => {
                    return Err(VideoError::NoFramesInWindow {
                        source_name: self.name.clone(),
                        t0_s: times_s[j] - period,
                        t1_s: times_s[j] + period,
                    })
                }
            }
        }
        if skip {
            let far = picks
                .iter()
                .zip(times_s)
                .any(|(&p, &t)| (pending[p].0 - t).abs() > reach);
            if far {
                return Ok(None);
            }
        }
        let mut converted: Vec<Option<Frame>> = pending
            .iter()
            .map(|(t, f)| self.to_rgb(&mut scaler, f, *t).map(Some))
            .collect::<Result<_, _>>()?;
        // A frame picked once (the usual case) is moved, not copied (0.9 MB at 640x480).
        let mut uses = vec![0usize; converted.len()];
        picks.iter().for_each(|&p| uses[p] += 1);
        for p in picks {
            uses[p] -= 1;
            let frame = if uses[p] == 0 {
                converted[p].take()
            } else {
                converted[p].clone()
            };
            out.extend(frame);
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/media")
            .join(name)
    }

    /// Skipping `avformat_find_stream_info` for MP4 must not change what a source reports or
    /// decodes: metadata, frames at the sampler's times, the whole audio track and a window.
    #[test]
    fn mp4_header_without_probing_changes_nothing() {
        for name in [
            "idx30_gop30_44k.mp4",
            "idx16_gop250_48k.mp4",
            "idx16_faststart.mp4",
            "video_only.mp4",
        ] {
            let path = fixture(name);
            // SAFETY: the context is open until closed below.
            let complete = unsafe {
                let mut input = open_input(&path, false).unwrap();
                header_is_complete(input.as_mut_ptr())
            };
            assert!(complete, "{name}: the fast path should apply");
            let mut fast = FfmpegSource::open_with(&path, false).unwrap();
            let mut probed = FfmpegSource::open_with(&path, true).unwrap();
            assert_eq!(fast.meta, probed.meta, "{name}");
            assert_eq!(fast.start_pts, probed.start_pts, "{name}");
            assert_eq!(fast.time_base, probed.time_base, "{name}");
            assert_eq!(fast.audio_stream, probed.audio_stream, "{name}");
            let d = fast.meta.duration_s;
            let times: Vec<f64> = (0..40).map(|i| d * i as f64 / 40.0).collect();
            let a = fast.read_frames_at(&times).unwrap();
            let b = probed.read_frames_at(&times).unwrap();
            assert_eq!(a.len(), b.len(), "{name}");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.pts_s, y.pts_s, "{name}");
                assert!(x.image == y.image, "{name}: frame at {} differs", x.pts_s);
            }
            // The x264 fixtures bound their reordering in the parameter sets: no read may have
            // needed a second pass (the depth never grows after a pass's first frame).
            for src in [&fast, &probed] {
                assert_eq!(
                    src.depth_at_first_frame,
                    Some(src.reorder_depth()),
                    "{name}"
                );
            }
            assert_eq!(
                fast.read_audio_window(0.4, d - 0.3).unwrap(),
                probed.read_audio_window(0.4, d - 0.3).unwrap(),
                "{name}"
            );
        }
    }
}
