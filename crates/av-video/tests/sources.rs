//! Frame folders, in-memory sources, fps conversion and bad input (no FFmpeg needed).

mod common;

use av_video::temporal::grid_times;
use av_video::{open_source, FrameFolderSource, InMemorySource, VideoError, VideoSource};
use common::{frame_index, indexed_frames, media};

#[test]
fn frame_folder_reads_its_frames_by_timestamp() -> anyhow::Result<()> {
    let mut src = FrameFolderSource::open(media("frames16"))?;
    let m = src.meta().clone();
    assert_eq!((m.n_frames, m.width, m.height), (32, 160, 120));
    assert_eq!(m.fps, 16.0);
    assert!((m.duration_s - 2.0).abs() < 1e-9);
    assert!(m.has_audio);
    // [0.5, 1.0] holds frames 8..=16 at 16 fps (both ends inclusive).
    let frames = src.read_frames(0.5, 1.0)?;
    let idx: Vec<usize> = frames.iter().map(|f| frame_index(&f.image)).collect();
    assert_eq!(idx, (8..=16).collect::<Vec<_>>());
    for f in &frames {
        assert_eq!(frame_index(&f.image) as f64 / 16.0, f.pts_s);
    }
    Ok(())
}

#[test]
fn frame_folder_audio_is_aligned() -> anyhow::Result<()> {
    let mut src = open_source(media("frames16"))?;
    let (audio, rate) = src
        .read_audio()?
        .ok_or_else(|| anyhow::anyhow!("no audio"))?;
    assert_eq!(rate, 16_000);
    assert_eq!(audio.len(), 32_000);
    let at = common::onset(&audio, 0, 0.2).ok_or_else(|| anyhow::anyhow!("no click"))?;
    assert!(
        (at as i64 - 16_000).abs() <= 2,
        "click at sample {at}, expected 16000"
    );
    Ok(())
}

#[test]
fn fps_conversion_by_timestamp() -> anyhow::Result<()> {
    // 30 fps in memory -> 16 fps grid: each grid time takes the nearest 30 fps frame.
    let mut src = InMemorySource::new("thirty", indexed_frames(60, 24, 32), 30.0, None)?;
    let times = grid_times(0.5, 1.0, 16.0);
    assert_eq!(times.len(), 9);
    let frames = src.read_frames_at(&times)?;
    let got: Vec<usize> = frames.iter().map(|f| frame_index(&f.image)).collect();
    let want: Vec<usize> = times
        .iter()
        .map(|t| {
            let x = t * 30.0;
            if x - x.floor() > 0.5 {
                x.ceil() as usize
            } else {
                x.floor() as usize
            }
        })
        .collect();
    assert_eq!(got, want);
    // 0.75 s is 22.5 source frames: the tie goes to the earlier frame.
    assert_eq!(got, vec![15, 17, 19, 21, 22, 24, 26, 28, 30]);
    // The default trait implementation (decode a range, pick nearest) agrees.
    struct Plain(InMemorySource);
    impl VideoSource for Plain {
        fn meta(&self) -> &av_video::VideoMeta {
            self.0.meta()
        }
        fn read_frames(&mut self, a: f64, b: f64) -> Result<Vec<av_video::Frame>, VideoError> {
            self.0.read_frames(a, b)
        }
        fn read_audio(&mut self) -> Result<Option<(Vec<f32>, u32)>, VideoError> {
            self.0.read_audio()
        }
        fn name(&self) -> &str {
            self.0.name()
        }
    }
    let mut plain = Plain(InMemorySource::new(
        "thirty",
        indexed_frames(60, 24, 32),
        30.0,
        None,
    )?);
    let got2: Vec<usize> = plain
        .read_frames_at(&times)?
        .iter()
        .map(|f| frame_index(&f.image))
        .collect();
    assert_eq!(got2, want);
    Ok(())
}

#[test]
fn window_outside_source_is_an_error() -> anyhow::Result<()> {
    let mut src = InMemorySource::new("short", indexed_frames(16, 24, 32), 16.0, None)?;
    assert!(matches!(
        src.read_frames(5.0, 6.0),
        Err(VideoError::WindowOutOfRange { .. })
    ));
    assert!(matches!(
        src.read_frames(-3.0, -2.0),
        Err(VideoError::WindowOutOfRange { .. })
    ));
    assert!(matches!(
        src.read_frames(f64::NAN, 1.0),
        Err(VideoError::InvalidConfig(_))
    ));
    assert!(matches!(
        src.read_frames_at(&[7.0]),
        Err(VideoError::NoFramesInWindow { .. })
    ));
    let mut folder = FrameFolderSource::open(media("frames16"))?;
    let e = folder
        .read_frames(10.0, 11.0)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("frames16") && e.contains("outside"), "{e}");
    Ok(())
}

#[test]
fn empty_and_malformed_in_memory_sources() {
    assert!(matches!(
        InMemorySource::new("empty", vec![], 16.0, None),
        Err(VideoError::EmptySource { .. })
    ));
    assert!(matches!(
        InMemorySource::new("fps", indexed_frames(2, 8, 8), 0.0, None),
        Err(VideoError::InvalidConfig(_))
    ));
    let mut frames = indexed_frames(2, 8, 8);
    frames.push(ndarray::Array3::zeros((9, 8, 3)));
    let e = InMemorySource::new("mixed", frames, 16.0, None)
        .err()
        .map(|e| e.to_string());
    assert!(e.unwrap_or_default().contains("frame 2"));
    let nan = Some((vec![0.0, f32::NAN], 16_000));
    assert!(InMemorySource::new("nan", indexed_frames(2, 8, 8), 16.0, nan).is_err());
}

fn copy_folder(dst: &std::path::Path) -> anyhow::Result<()> {
    let src = media("frames16");
    std::fs::create_dir_all(dst.join("frames"))?;
    std::fs::copy(src.join("meta.toml"), dst.join("meta.toml"))?;
    std::fs::copy(src.join("audio.wav"), dst.join("audio.wav"))?;
    for e in std::fs::read_dir(src.join("frames"))? {
        let e = e?;
        std::fs::copy(e.path(), dst.join("frames").join(e.file_name()))?;
    }
    Ok(())
}

#[test]
fn corrupt_jpeg_names_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    copy_folder(dir.path())?;
    let bad = dir.path().join("frames/000010.jpg");
    let bytes = std::fs::read(&bad)?;
    std::fs::write(&bad, &bytes[..bytes.len() / 5])?; // truncated JPEG
    let mut src = FrameFolderSource::open(dir.path())?;
    // Frames before the broken one still read.
    assert_eq!(src.read_frames(0.0, 0.5)?.len(), 9);
    match src.read_frames(0.5, 0.6) {
        Err(VideoError::Image { path, reason }) => {
            assert!(path.ends_with("000010.jpg"), "{path:?}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected an image error, got {other:?}"),
    }
    // Not even a JPEG.
    std::fs::write(&bad, b"this is not an image")?;
    let e = src
        .read_frames_at(&[0.5625])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("000010.jpg") && e.contains("bad frame image"),
        "{e}"
    );
    Ok(())
}

#[test]
fn frame_folder_metadata_errors() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Missing folder.
    let missing = dir.path().join("nope");
    assert!(matches!(
        FrameFolderSource::open(&missing),
        Err(VideoError::NotFound { .. })
    ));
    assert!(matches!(
        open_source(&missing),
        Err(VideoError::NotFound { .. })
    ));
    copy_folder(dir.path())?;
    // Bad metadata values.
    std::fs::write(dir.path().join("meta.toml"), "fps = -3.0\n")?;
    assert!(matches!(
        FrameFolderSource::open(dir.path()),
        Err(VideoError::Metadata { .. })
    ));
    std::fs::write(dir.path().join("meta.toml"), "fps = 16.0\nfsp = 3\n")?;
    let e = FrameFolderSource::open(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("meta.toml") && e.contains("fsp"), "{e}");
    std::fs::write(
        dir.path().join("meta.toml"),
        "fps = 16.0\naudio = \"gone.wav\"\n",
    )?;
    let e = FrameFolderSource::open(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("gone.wav"), "{e}");
    // No audio: has_audio false, read_audio None.
    std::fs::write(dir.path().join("meta.toml"), "fps = 16.0\n")?;
    let mut src = FrameFolderSource::open(dir.path())?;
    assert!(!src.meta().has_audio);
    assert!(src.read_audio()?.is_none());
    // No frames at all.
    for e in std::fs::read_dir(dir.path().join("frames"))? {
        std::fs::remove_file(e?.path())?;
    }
    assert!(matches!(
        FrameFolderSource::open(dir.path()),
        Err(VideoError::EmptySource { .. })
    ));
    Ok(())
}

#[cfg(not(feature = "ffmpeg"))]
#[test]
fn files_need_the_ffmpeg_feature() {
    let e = open_source(media("idx30_gop30_44k.mp4"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.contains("ffmpeg") && e.contains("idx30_gop30_44k.mp4"),
        "{e}"
    );
}
