//! File decoding (symphonia, optionally FFmpeg) and WAV writing.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use symphonia::core::codecs::audio::well_known as codec_ids;
use symphonia::core::codecs::audio::{AudioCodecId, AudioDecoderOptions};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::TimeBase;

use crate::error::check_finite;
use crate::mp4;
use crate::wav;
use crate::AudioError;

/// Decoded PCM audio, one `Vec` per channel, at the stream's native rate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodedAudio {
    /// Planar samples in `[-1, 1]`; all channels have the same length.
    pub channels: Vec<Vec<f32>>,
    /// Sample rate in Hz.
    pub sample_rate: u32,
}

impl DecodedAudio {
    /// Mean of the channels (the reference's `ToMono`); empty if there are no channels.
    pub fn mono(&self) -> Vec<f32> {
        match self.channels.as_slice() {
            [] => Vec::new(),
            [only] => only.clone(),
            chans => {
                let n = self.n_frames();
                let mut out = vec![0.0f32; n];
                for c in chans {
                    for (o, &x) in out.iter_mut().zip(c) {
                        *o += x;
                    }
                }
                let inv = chans.len() as f32;
                for o in &mut out {
                    *o /= inv;
                }
                out
            }
        }
    }

    /// Number of samples per channel.
    pub fn n_frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        if self.sample_rate == 0 {
            return 0.0;
        }
        self.n_frames() as f64 / f64::from(self.sample_rate)
    }
}

/// Options for [`decode_file_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Encoder-delay (priming) frames to drop from AAC in MP4/M4A when the file has no edit list.
    /// Virtually all AAC encoders prime with 1024 frames; set 0 to keep them.
    pub aac_priming_fallback: u32,
    /// Reject NaN/Inf samples (only float PCM can hold them).
    pub reject_non_finite: bool,
    /// Accept a stream that ends more than `truncation_slack` frames before the length its
    /// container declares (otherwise [`AudioError::Truncated`]).
    pub allow_truncated: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            aac_priming_fallback: 1024,
            reject_non_finite: true,
            allow_truncated: false,
        }
    }
}

/// Frames a decoded stream may fall short of the declared length before it counts as truncated
/// (containers round durations; one large codec frame is 4096 samples).
const TRUNCATION_SLACK: u64 = 4096;

/// Decodes the first audio track of `path` with default [`DecodeOptions`].
pub fn decode_file(path: impl AsRef<Path>) -> Result<DecodedAudio, AudioError> {
    decode_file_with(path, &DecodeOptions::default())
}

/// Decodes the first audio track of `path` and averages its channels.
pub fn decode_mono(path: impl AsRef<Path>) -> Result<(Vec<f32>, u32), AudioError> {
    let path = path.as_ref();
    check_regular_file(path)?;
    // Plain WAV goes straight to the channel mean; a non-finite value (float WAV only) takes
    // the planar path so that the error names the channel.
    if let Some((mono, sample_rate, maybe_non_finite)) = wav::decode_mono(path)? {
        if !maybe_non_finite || check_finite(&mono, "", 0).is_ok() {
            return Ok((mono, sample_rate));
        }
    }
    let audio = decode_file(path)?;
    Ok((audio.mono(), audio.sample_rate))
}

/// Rejects directories and empty files with errors naming them.
fn check_regular_file(path: &Path) -> Result<(), AudioError> {
    let meta = std::fs::metadata(path).map_err(|e| AudioError::io(path, e))?;
    if meta.is_dir() {
        return Err(AudioError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "is a directory"),
        ));
    }
    if meta.len() == 0 {
        return Err(AudioError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// symphonia's decode of `path`, bypassing the direct WAV reader (its oracle in tests).
#[cfg(test)]
pub(crate) fn decode_symphonia_for_tests(path: &Path) -> Result<DecodedAudio, AudioError> {
    decode_symphonia(path, &DecodeOptions::default())
}

/// Human-readable name of a symphonia codec id (for error messages).
pub(crate) fn codec_name(id: AudioCodecId) -> String {
    let known = [
        (codec_ids::CODEC_ID_OPUS, "opus"),
        (codec_ids::CODEC_ID_AAC, "aac"),
        (codec_ids::CODEC_ID_MP3, "mp3"),
        (codec_ids::CODEC_ID_MP2, "mp2"),
        (codec_ids::CODEC_ID_MP1, "mp1"),
        (codec_ids::CODEC_ID_VORBIS, "vorbis"),
        (codec_ids::CODEC_ID_FLAC, "flac"),
        (codec_ids::CODEC_ID_ALAC, "alac"),
        (codec_ids::CODEC_ID_AC3, "ac3"),
        (codec_ids::CODEC_ID_EAC3, "eac3"),
        (codec_ids::CODEC_ID_AC4, "ac4"),
        (codec_ids::CODEC_ID_DCA, "dts"),
        (codec_ids::CODEC_ID_SPEEX, "speex"),
        (codec_ids::CODEC_ID_WMA, "wma"),
        (codec_ids::CODEC_ID_WAVPACK, "wavpack"),
        (codec_ids::CODEC_ID_MONKEYS_AUDIO, "ape"),
        (codec_ids::CODEC_ID_TTA, "tta"),
    ];
    match known.iter().find(|(k, _)| *k == id) {
        Some((_, name)) => (*name).to_string(),
        None => match symphonia::default::get_codecs().get_audio_decoder(id) {
            Some(reg) => reg.codec.info.short_name.to_string(),
            None => format!("codec id {id}"),
        },
    }
}

fn unsupported(path: &Path, codec: String) -> AudioError {
    let hint = if cfg!(feature = "ffmpeg") {
        String::new()
    } else {
        " (not decodable by symphonia; rebuild av-audio with the `ffmpeg` feature)".to_string()
    };
    AudioError::UnsupportedCodec {
        path: path.to_path_buf(),
        codec,
        hint,
    }
}

/// Decodes the first audio track of `path`.
///
/// symphonia handles WAV, FLAC, Ogg Vorbis, MP3 and AAC (ADTS or MP4/M4A). In MP4 the AAC
/// priming frames are removed as the track's edit list says (symphonia does not apply edit
/// lists), falling back to [`DecodeOptions::aac_priming_fallback`], so audio stays aligned with
/// the video. With the `ffmpeg` feature, codecs symphonia lacks (Opus, multichannel AAC, ...)
/// are decoded through libavcodec instead.
pub fn decode_file_with(
    path: impl AsRef<Path>,
    opts: &DecodeOptions,
) -> Result<DecodedAudio, AudioError> {
    let path = path.as_ref();
    check_regular_file(path)?;
    let decoded = match wav::decode(path)? {
        Some(audio) => Ok(audio),
        None => decode_symphonia(path, opts),
    };
    let audio = match decoded {
        #[cfg(feature = "ffmpeg")]
        Err(AudioError::UnsupportedCodec { .. } | AudioError::UnrecognizedFormat { .. }) => {
            crate::ffmpeg::decode(path)?
        }
        other => other?,
    };
    if audio.n_frames() == 0 {
        return Err(AudioError::NoSamples {
            path: path.to_path_buf(),
        });
    }
    if opts.reject_non_finite {
        for (c, ch) in audio.channels.iter().enumerate() {
            check_finite(ch, &path.display().to_string(), c)?;
        }
    }
    Ok(audio)
}

fn decode_symphonia(path: &Path, opts: &DecodeOptions) -> Result<DecodedAudio, AudioError> {
    let file = File::open(path).map_err(|e| AudioError::io(path, e))?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            // The prober recognised a container but ran out of data while reading it.
            SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                AudioError::Corrupt {
                    path: path.to_path_buf(),
                    reason: "file ends inside the container headers (truncated or corrupt)".into(),
                }
            }
            other => AudioError::UnrecognizedFormat {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;
    let is_mp4 = format.format_info().short_name.contains("mp4");

    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::NoAudioTrack {
            path: path.to_path_buf(),
        })?
        .clone();
    let params = match &track.codec_params {
        Some(CodecParameters::Audio(p)) => p.clone(),
        _ => {
            return Err(AudioError::NoAudioTrack {
                path: path.to_path_buf(),
            })
        }
    };
    let codec = codec_name(params.codec);
    let channel_count = params.channels.as_ref().map(|c| c.count());
    if params.codec == codec_ids::CODEC_ID_AAC && channel_count.is_some_and(|c| c > 2) {
        // symphonia's AAC decoder only implements mono/stereo element layouts.
        return Err(unsupported(
            path,
            format!("aac ({} channels)", channel_count.unwrap_or(0)),
        ));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(_) => unsupported(path, codec.clone()),
            other => AudioError::Corrupt {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        })?;

    let mut channels: Vec<Vec<f32>> = Vec::new();
    let mut sample_rate = params.sample_rate.unwrap_or(0);
    let mut tmp: Vec<Vec<f32>> = Vec::new();
    let (mut n_packets, mut n_bad) = (0usize, 0usize);
    let mut first_bad: Option<String> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // Some demuxers report the end of a stream as an unexpected EOF.
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => break,
            Err(e) => {
                return Err(AudioError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("demuxing failed after {n_packets} packets: {e}"),
                })
            }
        };
        if packet.track_id != track.id {
            continue;
        }
        n_packets += 1;
        match decoder.decode(&packet) {
            Ok(buf) => {
                if buf.frames() == 0 {
                    continue;
                }
                sample_rate = buf.spec().rate();
                buf.copy_to_vecs_planar::<f32>(&mut tmp);
                if channels.is_empty() {
                    channels = vec![Vec::new(); tmp.len()];
                }
                if tmp.len() != channels.len() {
                    return Err(AudioError::Corrupt {
                        path: path.to_path_buf(),
                        reason: format!(
                            "channel count changed mid-stream from {} to {}",
                            channels.len(),
                            tmp.len()
                        ),
                    });
                }
                for (dst, src) in channels.iter_mut().zip(&tmp) {
                    dst.extend_from_slice(src);
                }
            }
            Err(SymError::DecodeError(msg)) => {
                // Skip a damaged packet as players do, but keep the timeline: fill the packet's
                // duration with silence so later audio stays aligned with the video.
                n_bad += 1;
                first_bad.get_or_insert_with(|| msg.to_string());
                let dur = packet_frames(packet.dur.get(), track.time_base, sample_rate);
                for ch in &mut channels {
                    ch.resize(ch.len() + dur, 0.0);
                }
            }
            Err(SymError::Unsupported(what)) => {
                return Err(unsupported(path, format!("{codec} ({what})")));
            }
            Err(e) => {
                return Err(AudioError::Corrupt {
                    path: path.to_path_buf(),
                    reason: format!("decoding packet {n_packets} failed: {e}"),
                })
            }
        }
    }
    let decoded_frames = channels.first().map_or(0, Vec::len) as u64;
    if n_bad > 0 && (n_bad * 20 > n_packets || decoded_frames == 0) {
        return Err(AudioError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "{n_bad} of {n_packets} packets failed to decode (first: {})",
                first_bad.unwrap_or_default()
            ),
        });
    }
    if decoded_frames == 0 {
        return Err(AudioError::NoSamples {
            path: path.to_path_buf(),
        });
    }
    if !opts.allow_truncated {
        if let Some(expected) = track.num_frames {
            let expected = expected + u64::from(track.delay.unwrap_or(0));
            if decoded_frames + TRUNCATION_SLACK < expected {
                return Err(AudioError::Truncated {
                    path: path.to_path_buf(),
                    expected,
                    decoded: decoded_frames,
                });
            }
        }
    }

    if is_mp4 && params.codec == codec_ids::CODEC_ID_AAC {
        let edit = mp4::first_audio_edit(path).map_err(|e| match e {
            mp4::Mp4Error::Io(e) => AudioError::io(path, e),
            mp4::Mp4Error::Malformed(reason) => AudioError::Corrupt {
                path: path.to_path_buf(),
                reason,
            },
        })?;
        apply_mp4_edit(
            &mut channels,
            edit.as_ref(),
            sample_rate,
            opts.aac_priming_fallback,
        );
    }
    Ok(DecodedAudio {
        channels,
        sample_rate,
    })
}

/// Converts a packet duration in the track's time base to frames at `sample_rate`.
fn packet_frames(dur: u64, time_base: Option<TimeBase>, sample_rate: u32) -> usize {
    match time_base {
        Some(tb) if sample_rate > 0 => {
            let num = u128::from(dur) * u128::from(tb.numer.get()) * u128::from(sample_rate);
            let den = u128::from(tb.denom.get());
            ((num + den / 2) / den) as usize
        }
        _ => dur as usize,
    }
}

/// Trims AAC priming (and trailing padding) as the edit list says, or drops `fallback` frames.
fn apply_mp4_edit(
    channels: &mut [Vec<f32>],
    edit: Option<&mp4::AudioEdit>,
    sample_rate: u32,
    fallback: u32,
) {
    let n = channels.first().map_or(0, Vec::len);
    let (lead_silence, skip, keep) = match edit {
        Some(e) => {
            let to_samples = |v: u64, ts: u32| -> usize {
                if ts == 0 {
                    return 0;
                }
                ((v as u128 * u128::from(sample_rate) + u128::from(ts) / 2) / u128::from(ts))
                    as usize
            };
            let skip = to_samples(e.media_time, e.media_timescale);
            let keep = e.segment_duration.map(|d| to_samples(d, e.movie_timescale));
            (to_samples(e.empty_duration, e.movie_timescale), skip, keep)
        }
        None => (0, fallback as usize, None),
    };
    let skip = skip.min(n);
    let end = keep.map_or(n, |k| (skip + k).min(n));
    for ch in channels.iter_mut() {
        ch.truncate(end);
        ch.drain(..skip);
        if lead_silence > 0 {
            ch.splice(0..0, std::iter::repeat_n(0.0, lead_silence));
        }
    }
}

/// Writes mono `f32` samples as a 32-bit IEEE-float WAV (lossless for any finite `f32`).
pub fn write_wav(path: impl AsRef<Path>, mono: &[f32], sample_rate: u32) -> Result<(), AudioError> {
    write_wav_impl(path.as_ref(), mono, sample_rate, WavSampleFormat::F32)
}

/// Writes mono samples as 16-bit PCM WAV: `round(x * 32768)` clipped to the i16 range, the
/// inverse of the usual `v / 32768` reading convention.
pub fn write_wav_pcm16(
    path: impl AsRef<Path>,
    mono: &[f32],
    sample_rate: u32,
) -> Result<(), AudioError> {
    write_wav_impl(path.as_ref(), mono, sample_rate, WavSampleFormat::I16)
}

#[derive(Clone, Copy)]
enum WavSampleFormat {
    F32,
    I16,
}

fn write_wav_impl(
    path: &Path,
    mono: &[f32],
    sample_rate: u32,
    fmt: WavSampleFormat,
) -> Result<(), AudioError> {
    if sample_rate == 0 {
        return Err(AudioError::InvalidConfig(
            "WAV sample rate must be positive".into(),
        ));
    }
    check_finite(mono, &path.display().to_string(), 0)?;
    let (format_tag, bytes_per_sample): (u16, u32) = match fmt {
        WavSampleFormat::F32 => (3, 4),
        WavSampleFormat::I16 => (1, 2),
    };
    let data_len = u32::try_from(mono.len() as u64 * u64::from(bytes_per_sample))
        .ok()
        .filter(|&l| l <= u32::MAX - 64)
        .ok_or_else(|| AudioError::InvalidConfig("too many samples for a WAV file".into()))?;
    let io = |e| AudioError::io(path, e);
    let mut w = BufWriter::new(File::create(path).map_err(io)?);
    let mut header = Vec::with_capacity(58);
    let fmt_len: u32 = if format_tag == 3 { 18 } else { 16 };
    let fact_len: u32 = if format_tag == 3 { 12 } else { 0 };
    header.extend_from_slice(b"RIFF");
    header.extend_from_slice(&(4 + 8 + fmt_len + fact_len + 8 + data_len).to_le_bytes());
    header.extend_from_slice(b"WAVEfmt ");
    header.extend_from_slice(&fmt_len.to_le_bytes());
    header.extend_from_slice(&format_tag.to_le_bytes());
    header.extend_from_slice(&1u16.to_le_bytes()); // channels
    header.extend_from_slice(&sample_rate.to_le_bytes());
    header.extend_from_slice(&(sample_rate * bytes_per_sample).to_le_bytes());
    header.extend_from_slice(&(bytes_per_sample as u16).to_le_bytes()); // block align
    header.extend_from_slice(&(bytes_per_sample as u16 * 8).to_le_bytes());
    if format_tag == 3 {
        header.extend_from_slice(&0u16.to_le_bytes()); // cbSize
        header.extend_from_slice(b"fact");
        header.extend_from_slice(&4u32.to_le_bytes());
        header.extend_from_slice(&(mono.len() as u32).to_le_bytes());
    }
    header.extend_from_slice(b"data");
    header.extend_from_slice(&data_len.to_le_bytes());
    w.write_all(&header).map_err(io)?;
    for &x in mono {
        match fmt {
            WavSampleFormat::F32 => w.write_all(&x.to_le_bytes()).map_err(io)?,
            WavSampleFormat::I16 => {
                let v = (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
                w.write_all(&v.to_le_bytes()).map_err(io)?
            }
        }
    }
    w.flush().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_is_the_channel_mean() {
        let a = DecodedAudio {
            channels: vec![vec![1.0, 0.0, -1.0], vec![0.0, 0.5, 1.0]],
            sample_rate: 4,
        };
        assert_eq!(a.mono(), [0.5, 0.25, 0.0]);
        assert_eq!(a.n_frames(), 3);
        assert!((a.duration_s() - 0.75).abs() < 1e-12);
        assert!(DecodedAudio::default().mono().is_empty());
    }

    #[test]
    fn edit_list_trims_priming_and_padding() {
        let mut ch = vec![(0..5000).map(|i| i as f32).collect::<Vec<_>>()];
        let edit = mp4::AudioEdit {
            empty_duration: 0,
            media_time: 1024,
            media_timescale: 44_100,
            segment_duration: Some(3000),
            movie_timescale: 44_100,
        };
        apply_mp4_edit(&mut ch, Some(&edit), 44_100, 1024);
        assert_eq!(ch[0].len(), 3000);
        assert_eq!(ch[0][0], 1024.0);
        let mut ch = vec![vec![1.0f32; 2000]];
        apply_mp4_edit(&mut ch, None, 44_100, 1024);
        assert_eq!(ch[0].len(), 976);
    }
}
