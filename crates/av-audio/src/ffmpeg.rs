//! FFmpeg fallback decoder (feature `ffmpeg`): codecs symphonia lacks, e.g. Opus and
//! multichannel AAC. libavformat applies MP4 edit lists and libavcodec honours the priming
//! skip, so no extra trimming is needed here. Channels are kept (converted to planar f32 with
//! libswresample at the native rate) so that [`DecodedAudio::mono`] averages them exactly as
//! the reference does, rather than applying FFmpeg's downmix matrix.

use std::path::Path;

use ff::format::sample::Type as SampleType;
use ff::format::Sample;
use ffmpeg_next as ff;

use crate::{AudioError, DecodedAudio};

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> AudioError {
    AudioError::Ffmpeg {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

/// Appends the planar f32 samples of `frame` to `channels`.
fn push_frame(channels: &mut Vec<Vec<f32>>, frame: &ff::frame::Audio) {
    let n = frame.samples();
    let planes = frame.planes();
    if channels.is_empty() {
        channels.resize(planes, Vec::new());
    }
    for (c, ch) in channels.iter_mut().enumerate().take(planes) {
        ch.extend_from_slice(&frame.plane::<f32>(c)[..n]);
    }
}

/// Decodes the best audio stream of `path` with libavformat/libavcodec.
pub(crate) fn decode(path: &Path) -> Result<DecodedAudio, AudioError> {
    ff::init().map_err(|e| err(path, "initialisation", e))?;
    let mut input = ff::format::input(path).map_err(|e| AudioError::UnrecognizedFormat {
        path: path.to_path_buf(),
        reason: format!("ffmpeg: {e}"),
    })?;
    let stream = input
        .streams()
        .best(ff::media::Type::Audio)
        .ok_or_else(|| AudioError::NoAudioTrack {
            path: path.to_path_buf(),
        })?;
    let index = stream.index();
    let codec_id = stream.parameters().id();
    let ctx = ff::codec::context::Context::from_parameters(stream.parameters())
        .map_err(|e| err(path, "codec parameters", e))?;
    let mut decoder = ctx
        .decoder()
        .audio()
        .map_err(|_| AudioError::UnsupportedCodec {
            path: path.to_path_buf(),
            codec: format!("{codec_id:?}").to_lowercase(),
            hint: " (no FFmpeg decoder available)".into(),
        })?;

    let mut channels: Vec<Vec<f32>> = Vec::new();
    let mut rate = decoder.rate();
    let mut resampler: Option<ff::software::resampling::Context> = None;
    let mut decoded = ff::frame::Audio::empty();
    let mut converted = ff::frame::Audio::empty();
    let target = Sample::F32(SampleType::Planar);

    let mut drain = |decoder: &mut ff::decoder::Audio,
                     channels: &mut Vec<Vec<f32>>,
                     resampler: &mut Option<ff::software::resampling::Context>,
                     rate: &mut u32|
     -> Result<(), AudioError> {
        while decoder.receive_frame(&mut decoded).is_ok() {
            if decoded.samples() == 0 {
                continue;
            }
            if decoded.format() == target {
                push_frame(channels, &decoded);
                *rate = decoded.rate();
                continue;
            }
            if resampler.is_none() {
                let mut layout = decoded.channel_layout();
                if layout.channels() != i32::from(decoded.channels()) {
                    layout = ff::ChannelLayout::default(i32::from(decoded.channels()));
                }
                decoded.set_channel_layout(layout);
                *resampler = Some(
                    ff::software::resampling::Context::get(
                        decoded.format(),
                        layout,
                        decoded.rate(),
                        target,
                        layout,
                        decoded.rate(),
                    )
                    .map_err(|e| err(path, "sample format conversion", e))?,
                );
            }
            if let Some(r) = resampler.as_mut() {
                converted = ff::frame::Audio::empty();
                r.run(&decoded, &mut converted)
                    .map_err(|e| err(path, "sample format conversion", e))?;
                push_frame(channels, &converted);
                *rate = decoded.rate();
            }
        }
        Ok(())
    };

    for (s, packet) in input.packets() {
        if s.index() != index {
            continue;
        }
        decoder
            .send_packet(&packet)
            .map_err(|e| AudioError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("ffmpeg decode: {e}"),
            })?;
        drain(&mut decoder, &mut channels, &mut resampler, &mut rate)?;
    }
    decoder.send_eof().map_err(|e| err(path, "flush", e))?;
    drain(&mut decoder, &mut channels, &mut resampler, &mut rate)?;
    Ok(DecodedAudio {
        channels,
        sample_rate: rate,
    })
}
