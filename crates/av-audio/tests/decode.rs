//! Decoding tests on the tiny committed media files (`tests/fixtures/make_media.sh`) and on
//! broken files created in a temporary directory.

mod common;

use std::path::{Path, PathBuf};

use av_audio::{decode_file, decode_mono, write_wav, write_wav_pcm16, AudioError, DecodedAudio};
use common::fixtures;

fn media(name: &str) -> PathBuf {
    fixtures().join("media").join(name)
}

/// Amplitude of the `hz` component of `x` (least-squares fit of a sine and a cosine).
fn tone_amplitude(x: &[f32], sr: u32, hz: f64) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for (i, &v) in x.iter().enumerate() {
        let ph = 2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(sr);
        s += f64::from(v) * ph.sin();
        c += f64::from(v) * ph.cos();
    }
    2.0 * (s * s + c * c).sqrt() / x.len() as f64
}

/// The `tone.*` files: 0.25 s stereo at 44.1 kHz, left 440 Hz, right 880 Hz, amplitude 1/8.
fn check_tone(audio: &DecodedAudio, name: &str, frames: std::ops::RangeInclusive<usize>, tol: f64) {
    assert_eq!(audio.sample_rate, 44_100, "{name}");
    assert_eq!(audio.channels.len(), 2, "{name}");
    assert!(
        frames.contains(&audio.n_frames()),
        "{name}: {} frames",
        audio.n_frames()
    );
    assert!(
        audio.channels.iter().all(|c| c.len() == audio.n_frames()),
        "{name}"
    );
    // Skip the codec's start-up and tail.
    let n = audio.n_frames();
    let mid = |c: &Vec<f32>| c[n / 8..n - n / 8].to_vec();
    let (l, r) = (mid(&audio.channels[0]), mid(&audio.channels[1]));
    let (l440, l880) = (
        tone_amplitude(&l, 44_100, 440.0),
        tone_amplitude(&l, 44_100, 880.0),
    );
    let (r440, r880) = (
        tone_amplitude(&r, 44_100, 440.0),
        tone_amplitude(&r, 44_100, 880.0),
    );
    assert!(
        (l440 - 0.125).abs() < tol,
        "{name}: left 440 Hz amplitude {l440}"
    );
    assert!(
        (r880 - 0.125).abs() < tol,
        "{name}: right 880 Hz amplitude {r880}"
    );
    assert!(
        l880 < 0.005 && r440 < 0.005,
        "{name}: channel crosstalk {l880} {r440}"
    );
}

#[test]
fn decodes_lossless_formats_exactly() -> anyhow::Result<()> {
    for name in ["tone.wav", "tone.flac"] {
        let a = decode_file(media(name))?;
        check_tone(&a, name, 11_025..=11_025, 1e-3);
    }
    // FLAC is lossless: identical samples to the WAV.
    assert_eq!(
        decode_file(media("tone.wav"))?,
        decode_file(media("tone.flac"))?
    );
    Ok(())
}

#[test]
fn decodes_lossy_formats() -> anyhow::Result<()> {
    for (name, frames) in [
        ("tone.ogg", 10_800..=11_300),
        ("tone.mp3", 11_025..=11_025 + 1152),
        ("tone.m4a", 11_025..=11_025),
    ] {
        let a = decode_file(media(name))?;
        // Low-bitrate codecs lose a little level (64 kb/s AAC: about -9%).
        check_tone(&a, name, frames, 0.02);
    }
    Ok(())
}

#[test]
fn aac_priming_is_trimmed_so_a_click_stays_in_place() -> anyhow::Result<()> {
    // click.m4a: silence with one impulse at sample 11025 (0.25 s), AAC with 1024 priming
    // frames recorded in the MP4 edit list.
    let (x, sr) = decode_mono(media("click.m4a"))?;
    assert_eq!(sr, 44_100);
    let peak = x
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
        .map(|(i, _)| i)
        .unwrap_or(0);
    // Untrimmed, the click would sit at 11025 + 1024. One AAC frame (1024) is the acceptance
    // bound; the edit list gives it to the sample.
    assert!(
        peak.abs_diff(11_025) <= 2,
        "click decoded at sample {peak}, expected 11025"
    );
    assert_eq!(x.len(), 22_050, "edit list duration is 0.5 s");
    Ok(())
}

#[test]
fn mono_mixdown_averages_channels() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("stereo.wav");
    let left: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
    let right: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.037).cos() * 0.25).collect();
    write_float_wav(&p, &[left.clone(), right.clone()], 22_050)?;
    let a = decode_file(&p)?;
    assert_eq!(a.channels, vec![left.clone(), right.clone()]);
    let (mono, sr) = decode_mono(&p)?;
    assert_eq!(sr, 22_050);
    for i in 0..1000 {
        assert_eq!(mono[i], (left[i] + right[i]) / 2.0);
    }
    Ok(())
}

#[test]
fn wav_round_trips() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let x: Vec<f32> = (0..4410).map(|i| (i as f32 * 0.05).sin() * 0.7).collect();
    let p = dir.path().join("f32.wav");
    write_wav(&p, &x, 44_100)?;
    let (y, sr) = decode_mono(&p)?;
    assert_eq!((y, sr), (x.clone(), 44_100));
    let p16 = dir.path().join("i16.wav");
    write_wav_pcm16(&p16, &x, 16_000)?;
    let (y, sr) = decode_mono(&p16)?;
    assert_eq!(sr, 16_000);
    let err = x
        .iter()
        .zip(&y)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err <= 0.5 / 32768.0 + 1e-9, "16-bit round trip error {err}");
    // Non-finite samples cannot be written.
    assert!(matches!(
        write_wav(&p, &[0.0, f32::NAN], 8000),
        Err(AudioError::NonFiniteSample { index: 1, .. })
    ));
    Ok(())
}

/// Writes an IEEE-float WAV with any number of channels (interleaved), bypassing our writer's
/// checks so tests can store NaN.
fn write_float_wav(path: &Path, channels: &[Vec<f32>], sr: u32) -> anyhow::Result<()> {
    let nch = channels.len() as u16;
    let n = channels[0].len();
    let data_len = (n * channels.len() * 4) as u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(4 + 24 + 8 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&3u16.to_le_bytes());
    b.extend_from_slice(&nch.to_le_bytes());
    b.extend_from_slice(&sr.to_le_bytes());
    b.extend_from_slice(&(sr * 4 * u32::from(nch)).to_le_bytes());
    b.extend_from_slice(&(4 * nch).to_le_bytes());
    b.extend_from_slice(&32u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n {
        for c in channels {
            b.extend_from_slice(&c[i].to_le_bytes());
        }
    }
    std::fs::write(path, b)?;
    Ok(())
}

fn named(err: &AudioError, path: &Path) -> bool {
    err.to_string().contains(&path.display().to_string())
}

#[test]
fn empty_file_is_an_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("empty.wav");
    std::fs::write(&p, b"")?;
    let e = decode_file(&p)
        .err()
        .ok_or_else(|| anyhow::anyhow!("decoded an empty file"))?;
    assert!(matches!(e, AudioError::EmptyFile { .. }), "{e}");
    assert!(named(&e, &p));
    Ok(())
}

#[test]
fn zero_sample_wav_is_an_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("zero.wav");
    write_float_wav(&p, &[Vec::new()], 16_000)?;
    let e = decode_file(&p)
        .err()
        .ok_or_else(|| anyhow::anyhow!("decoded zero samples"))?;
    assert!(matches!(e, AudioError::NoSamples { .. }), "{e}");
    assert!(named(&e, &p));
    Ok(())
}

#[test]
fn truncated_files_are_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    for name in ["tone.wav", "tone.flac"] {
        let bytes = std::fs::read(media(name))?;
        let p = dir.path().join(format!("cut_{name}"));
        std::fs::write(&p, &bytes[..bytes.len() / 3])?;
        let e = decode_file(&p)
            .err()
            .ok_or_else(|| anyhow::anyhow!("{name}: decoded a cut file"))?;
        // WAV declares its data length, so the cut is detected as truncation; FLAC's reader
        // runs out of data while probing the stream.
        let ok = match name {
            "tone.wav" => matches!(
                e,
                AudioError::Truncated {
                    expected: 11_025,
                    ..
                }
            ),
            _ => matches!(e, AudioError::Truncated { .. } | AudioError::Corrupt { .. }),
        };
        assert!(ok, "{name}: {e}");
        assert!(named(&e, &p));
    }
    // Cut inside the header: nothing recognisable is left.
    let bytes = std::fs::read(media("tone.wav"))?;
    let p = dir.path().join("header_only.wav");
    std::fs::write(&p, &bytes[..20])?;
    let e = decode_file(&p)
        .err()
        .ok_or_else(|| anyhow::anyhow!("decoded a 20-byte file"))?;
    assert!(named(&e, &p), "{e}");
    Ok(())
}

#[test]
fn corrupt_stream_is_an_error() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut bytes = std::fs::read(media("tone.flac"))?;
    // Overwrite the audio frames (after the 8 KB of headers/first frames) with noise.
    let mut state = 0x2545_f491_u32;
    for b in bytes.iter_mut().skip(4096) {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        *b = state as u8;
    }
    let p = dir.path().join("noise.flac");
    std::fs::write(&p, &bytes)?;
    let e = decode_file(&p)
        .err()
        .ok_or_else(|| anyhow::anyhow!("decoded a corrupt file"))?;
    assert!(
        matches!(e, AudioError::Corrupt { .. } | AudioError::Truncated { .. }),
        "unexpected error kind: {e}"
    );
    assert!(named(&e, &p));
    Ok(())
}

#[test]
fn non_audio_files_are_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, "this is not audio\n".repeat(100))?;
    let e = decode_file(&p)
        .err()
        .ok_or_else(|| anyhow::anyhow!("decoded a text file"))?;
    // Symphonia's probe rejects the format; with the `ffmpeg` feature the fallback demuxer opens
    // the text but finds no audio stream. Both are clear errors naming the file.
    assert!(
        matches!(
            e,
            AudioError::UnrecognizedFormat { .. } | AudioError::NoAudioTrack { .. }
        ),
        "{e}"
    );
    assert!(named(&e, &p));

    let e = decode_file(media("video_only.mp4"))
        .err()
        .ok_or_else(|| anyhow::anyhow!("decoded audio from a silent video"))?;
    assert!(matches!(e, AudioError::NoAudioTrack { .. }), "{e}");

    let missing = dir.path().join("missing.wav");
    let e = decode_file(&missing)
        .err()
        .ok_or_else(|| anyhow::anyhow!("decoded a missing file"))?;
    assert!(
        matches!(e, AudioError::Io { .. }) && named(&e, &missing),
        "{e}"
    );
    let e = decode_file(dir.path())
        .err()
        .ok_or_else(|| anyhow::anyhow!("decoded a directory"))?;
    assert!(matches!(e, AudioError::Io { .. }), "{e}");
    Ok(())
}

#[test]
fn non_finite_samples_are_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("nan.wav");
    let mut x = vec![0.1f32; 500];
    x[321] = f32::NAN;
    write_float_wav(&p, &[vec![0.0; 500], x], 8000)?;
    match decode_file(&p) {
        Err(
            e @ AudioError::NonFiniteSample {
                channel: 1,
                index: 321,
                ..
            },
        ) => assert!(named(&e, &p)),
        other => panic!("expected NonFiniteSample at channel 1, index 321, got {other:?}"),
    }
    Ok(())
}

/// Without the `ffmpeg` feature, codecs symphonia lacks fail with an error naming the codec.
#[cfg(not(feature = "ffmpeg"))]
#[test]
fn unsupported_codecs_name_the_codec() -> anyhow::Result<()> {
    for (name, codec) in [("tone.opus", "opus"), ("tone_5p1.m4a", "aac (6 channels)")] {
        let e = decode_file(media(name))
            .err()
            .ok_or_else(|| anyhow::anyhow!("{name} decoded"))?;
        match &e {
            AudioError::UnsupportedCodec { codec: c, .. } => assert_eq!(c, codec, "{name}"),
            other => panic!("{name}: expected UnsupportedCodec, got {other}"),
        }
        assert!(
            e.to_string().contains("ffmpeg"),
            "{name}: error should point at the feature: {e}"
        );
    }
    Ok(())
}

/// With the `ffmpeg` feature, the same files decode through libavcodec.
#[cfg(feature = "ffmpeg")]
#[test]
fn ffmpeg_decodes_opus_and_multichannel_aac() -> anyhow::Result<()> {
    let a = decode_file(media("tone.opus"))?;
    assert_eq!((a.sample_rate, a.channels.len()), (48_000, 2));
    assert_eq!(a.n_frames(), 12_000, "Opus pre-skip must be applied");
    let n = a.n_frames();
    let l = &a.channels[0][n / 8..n - n / 8];
    assert!((tone_amplitude(l, 48_000, 440.0) - 0.125).abs() < 0.01);

    let b = decode_file(media("tone_5p1.m4a"))?;
    assert_eq!((b.sample_rate, b.channels.len()), (48_000, 6));
    // The front-left channel carries the full tone (the LFE channel is band-limited by the
    // encoder, so the 440 Hz tone is absent there and the plain mean is lower).
    let k = b.n_frames();
    let amp = tone_amplitude(&b.channels[0][k / 8..k - k / 8], 48_000, 440.0);
    assert!(
        (amp - 0.125).abs() < 0.015,
        "5.1 front-left amplitude {amp}"
    );
    // Mono is the arithmetic mean of the six channels, as the reference's ToMono.
    let m = b.mono();
    for i in [k / 4, k / 2, 3 * k / 4] {
        let mean = b.channels.iter().map(|c| c[i]).sum::<f32>() / 6.0;
        assert!(
            (m[i] - mean).abs() < 1e-6,
            "mono[{i}] {} vs mean {mean}",
            m[i]
        );
    }
    Ok(())
}
