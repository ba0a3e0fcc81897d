//! MP4 decoding through FFmpeg: frame-exact seeks, fps conversion, A/V alignment, bad files.
#![cfg(feature = "ffmpeg")]

mod common;

use av_video::temporal::grid_times;
use av_video::{open_source, FfmpegSource, ReplaiSampler, SamplerConfig, VideoError, VideoSource};
use common::{frame_index, media, onset};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn metadata_of_the_fixtures() -> anyhow::Result<()> {
    let src = FfmpegSource::open(media("idx30_gop30_44k.mp4"))?;
    let m = src.meta();
    assert_eq!((m.width, m.height, m.n_frames), (160, 120, 120));
    assert!((m.fps - 30.0).abs() < 1e-9);
    assert!((m.duration_s - 4.0).abs() < 1e-3);
    assert!(m.has_audio);
    let v = FfmpegSource::open(media("video_only.mp4"))?;
    assert!(!v.meta().has_audio);
    Ok(())
}

/// Reads at many arbitrary times, out of order, and checks every returned frame's own index.
fn check_exact(file: &str, fps: f64, n: usize) -> anyhow::Result<()> {
    let mut src = FfmpegSource::open(media(file))?;
    let starts = [2.345, 0.0, 3.9, 1.01, 0.52, 3.0, 1.999, 0.25, 3.3];
    for &t0 in &starts {
        let t0: f64 = t0 * (n as f64 / fps) / 4.0;
        let t1 = t0 + 0.5;
        let frames = src.read_frames(t0, t1)?;
        let first = (t0 * fps - 1e-6).ceil() as usize;
        let last = (((t1 * fps) + 1e-6).floor() as usize).min(n - 1);
        let want: Vec<usize> = (first..=last).collect();
        let got: Vec<usize> = frames.iter().map(|f| frame_index(&f.image)).collect();
        assert_eq!(got, want, "{file}: window [{t0}, {t1}]");
        for f in &frames {
            assert!((f.pts_s - frame_index(&f.image) as f64 / fps).abs() < 1e-3);
            assert_eq!(f.image.dim(), (120, 160, 3));
        }
    }
    Ok(())
}

#[test]
fn frame_exact_reads_gop30() -> anyhow::Result<()> {
    check_exact("idx30_gop30_44k.mp4", 30.0, 120)
}

#[test]
fn frame_exact_reads_gop250() -> anyhow::Result<()> {
    check_exact("idx16_gop250_48k.mp4", 16.0, 96)
}

#[test]
fn read_at_converts_30_to_16_fps() -> anyhow::Result<()> {
    let mut src = FfmpegSource::open(media("idx30_gop30_44k.mp4"))?;
    for t0 in [0.0, 1.3, 3.4] {
        let times = grid_times(t0, t0 + 0.5, 16.0);
        let got: Vec<usize> = src
            .read_frames_at(&times)?
            .iter()
            .map(|f| frame_index(&f.image))
            .collect();
        let want: Vec<usize> = times
            .iter()
            .map(|t| {
                let x = t * 30.0;
                let i = if x - x.floor() > 0.5 {
                    x.ceil()
                } else {
                    x.floor()
                };
                (i as usize).min(119)
            })
            .collect();
        assert_eq!(got, want, "t0 = {t0}");
    }
    // Repeated times (loop padding) return the same frame.
    let got: Vec<usize> = src
        .read_frames_at(&[1.0, 1.0, 1.0])?
        .iter()
        .map(|f| frame_index(&f.image))
        .collect();
    assert_eq!(got, vec![30, 30, 30]);
    Ok(())
}

/// Skipping the non-reference frames nobody asked for must not change a single byte.
#[test]
fn skipping_non_reference_frames_changes_nothing() -> anyhow::Result<()> {
    for (file, n, fps) in [
        ("idx30_gop30_44k.mp4", 120usize, 30.0),
        ("idx16_gop250_48k.mp4", 96, 16.0),
    ] {
        let mut fast = FfmpegSource::open(media(file))?;
        let mut full = FfmpegSource::open(media(file))?;
        full.set_skip_non_reference(false);
        let d = n as f64 / fps;
        let mut requests: Vec<Vec<f64>> = Vec::new();
        // The sampler's 16 fps grids at many offsets, both clips of a sample at once.
        for k in 0..23 {
            let t = 0.6 + (d - 1.2) * k as f64 / 22.0;
            let mut times = grid_times(t - 0.6, t - 0.1, 16.0);
            times.extend(grid_times(t + 0.1, t + 0.6, 16.0));
            requests.push(times);
        }
        // Sparse, dense and repeated times, and the ends of the file.
        requests.push(vec![0.0, 0.01, 1.0, 1.0, 2.2, d - 0.01]);
        requests.push((0..n).map(|i| i as f64 / fps).collect());
        requests.push(vec![d - 0.05]);
        for times in &requests {
            let a = fast.read_frames_at(times)?;
            let b = full.read_frames_at(times)?;
            assert_eq!(a.len(), b.len(), "{file}: {times:?}");
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.pts_s, y.pts_s, "{file}: {times:?}");
                assert!(x.image == y.image, "{file}: frame at {} differs", x.pts_s);
            }
        }
    }
    Ok(())
}

/// The first click of each file must land where it was synthesised, within one AAC frame
/// (1024 samples) and in practice within a few milliseconds.
fn check_alignment(file: &str, click_s: f64) -> anyhow::Result<()> {
    let mut src = open_source(media(file))?;
    let (audio, rate) = src
        .read_audio()?
        .ok_or_else(|| anyhow::anyhow!("no audio"))?;
    let duration = src.meta().duration_s;
    assert!(
        ((audio.len() as f64 / rate as f64) - duration).abs() < 1024.0 / rate as f64,
        "{file}: {} samples at {rate} Hz vs video {duration} s",
        audio.len()
    );
    let at = onset(&audio, 0, 0.2).ok_or_else(|| anyhow::anyhow!("no click"))?;
    let want = (click_s * rate as f64) as i64;
    let err = (at as i64 - want).abs();
    assert!(err < 1024, "{file}: click at {at}, expected {want}");
    assert!(
        err as f64 / (rate as f64) < 0.003,
        "{file}: click off by {err} samples"
    );
    Ok(())
}

#[test]
fn audio_is_aligned_with_video() -> anyhow::Result<()> {
    check_alignment("idx30_gop30_44k.mp4", 1.0)?;
    check_alignment("idx16_gop250_48k.mp4", 1.5)?;
    check_alignment("idx16_faststart.mp4", 1.5)
}

#[test]
fn bad_files_give_clear_errors() -> anyhow::Result<()> {
    let missing = media("does_not_exist.mp4");
    assert!(matches!(
        FfmpegSource::open(&missing),
        Err(VideoError::NotFound { .. })
    ));
    // moov atom lost: cannot even open.
    let e = FfmpegSource::open(media("truncated.mp4"));
    match e {
        Err(VideoError::Decode { path, .. }) => assert!(path.ends_with("truncated.mp4")),
        other => panic!("expected a decode error, got {other:?}"),
    }
    // Index intact, data cut: early frames read, late ones fail without hanging.
    let mut t = FfmpegSource::open(media("truncated_faststart.mp4"))?;
    assert!(!t.read_frames(0.0, 0.3)?.is_empty());
    let late = t.read_frames(2.5, 2.9);
    assert!(
        late.is_err() || late.as_ref().is_ok_and(|v| v.is_empty()),
        "{late:?}"
    );
    let late_at = t.read_frames_at(&[2.75]);
    assert!(late_at.is_err(), "{late_at:?}");
    // No video stream.
    assert!(matches!(
        FfmpegSource::open(media("audio_only.m4a")),
        Err(VideoError::NoVideoStream { .. })
    ));
    // No audio stream: None, and the sampler says so.
    let mut v = FfmpegSource::open(media("video_only.mp4"))?;
    assert!(v.read_audio()?.is_none());
    let s = ReplaiSampler::new(SamplerConfig::default())?;
    assert!(matches!(s.moments(&mut v), Err(VideoError::NoAudio { .. })));
    // Not a video at all.
    let dir = tempfile::tempdir()?;
    let junk = dir.path().join("junk.mp4");
    std::fs::write(&junk, b"definitely not an mp4 file")?;
    let e = FfmpegSource::open(&junk)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("junk.mp4"), "{e}");
    let empty = dir.path().join("empty.mp4");
    std::fs::write(&empty, b"")?;
    assert!(FfmpegSource::open(&empty).is_err());
    // Window outside the file.
    let mut src = FfmpegSource::open(media("idx30_gop30_44k.mp4"))?;
    assert!(matches!(
        src.read_frames(10.0, 11.0),
        Err(VideoError::WindowOutOfRange { .. })
    ));
    Ok(())
}

#[test]
fn mp4_sample_end_to_end() -> anyhow::Result<()> {
    let s = ReplaiSampler::new(SamplerConfig::default())?;
    for (file, clicks) in [
        ("idx30_gop30_44k.mp4", [1.0, 2.0, 3.1]),
        ("idx16_gop250_48k.mp4", [1.5, 3.0, 4.7]),
    ] {
        let mut src = open_source(media(file))?;
        let ms = s.moments(src.as_mut())?;
        for c in clicks {
            assert!(
                ms.iter().any(|m| (m.time_s - c).abs() < 0.03),
                "{file}: {ms:?}"
            );
        }
        let a = s.sample(src.as_mut(), &ms, &mut ChaCha8Rng::seed_from_u64(2), true)?;
        let b = s.sample(src.as_mut(), &ms, &mut ChaCha8Rng::seed_from_u64(2), true)?;
        assert_eq!(a.video_before, b.video_before);
        assert_eq!(a.video_after, b.video_after);
        assert_eq!(a.audio, b.audio);
        assert_eq!(a.video_before.len(), 3 * 8 * 112 * 112);
        assert_eq!(a.audio.len(), 125 * 80);
    }
    Ok(())
}

#[test]
fn ffmpeg_and_frame_folder_agree() -> anyhow::Result<()> {
    // frames16 is the first 2 s of the same picture as idx16_faststart.mp4.
    let mut mp4 = FfmpegSource::open(media("idx16_faststart.mp4"))?;
    let mut dir = open_source(media("frames16"))?;
    let a: Vec<usize> = mp4
        .read_frames(0.4, 1.2)?
        .iter()
        .map(|f| frame_index(&f.image))
        .collect();
    let b: Vec<usize> = dir
        .read_frames(0.4, 1.2)?
        .iter()
        .map(|f| frame_index(&f.image))
        .collect();
    assert_eq!(a, b);
    Ok(())
}

/// An audio window read on the shared demuxer (what the sampler does per sample) is the same
/// audio as the same span of the whole decoded track: the clicks land on the same samples and
/// the rest differs only at the noise floor. Bit equality is impossible for AAC: its decoder
/// fills noise-like bands (PNS) from a random generator whose state depends on every frame
/// decoded since the last seek; PyAV's seek-then-decode differs from its full decode the same
/// way (max 0.0007 per 1024-sample block on these files).
#[test]
fn audio_window_matches_the_whole_track() -> anyhow::Result<()> {
    for (file, click) in [("idx30_gop30_44k.mp4", 2.0), ("idx16_gop250_48k.mp4", 3.0)] {
        let mut whole = FfmpegSource::open(media(file))?;
        let (track, rate) = whole
            .read_audio()?
            .ok_or_else(|| anyhow::anyhow!("no audio"))?;
        let mut src = FfmpegSource::open(media(file))?;
        for (t0, t1) in [
            (1.0, 3.0),
            (click - 0.37, click + 1.63),
            (click - 1.9, click + 0.1),
        ] {
            let (win, r) = src
                .read_audio_window(t0, t1)?
                .ok_or_else(|| anyhow::anyhow!("no audio"))?;
            assert_eq!(r, rate);
            let i0 = (t0 * rate as f64).round() as usize;
            let want = ((t1 - t0) * rate as f64).round() as usize;
            assert_eq!(win.len(), want, "{file}: window {t0}..{t1}");
            let same = &track[i0..i0 + win.len()];
            let at_win = onset(&win, 0, 0.2).ok_or_else(|| anyhow::anyhow!("no click"))?;
            let at_track = onset(same, 0, 0.2).ok_or_else(|| anyhow::anyhow!("no click"))?;
            assert_eq!(at_win, at_track, "{file}: window {t0}..{t1}: click moved");
            let rms = (win
                .iter()
                .zip(same)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                / win.len() as f32)
                .sqrt();
            assert!(rms < 1e-3, "{file}: window {t0}..{t1} differs, rms {rms}");
        }
    }
    Ok(())
}
