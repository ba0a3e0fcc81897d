//! Export round trip: annotations, frame folders and WAV read back through the project's loaders.

use av_synth::{
    ExportOptions, FrameFormat, Split, World, WorldConfig, EPIC_COLUMNS, TRAIN_CSV, VALIDATION_CSV,
};
use av_video::{FrameFolderSource, VideoSource};

fn world() -> anyhow::Result<World> {
    Ok(World::new(WorldConfig {
        n_videos: 3,
        val_videos: 1,
        min_duration_s: 5.0,
        max_duration_s: 6.0,
        width: 24,
        height: 20,
        ..WorldConfig::default()
    })?)
}

fn parse_ts(s: &str) -> anyhow::Result<f64> {
    let parts: Vec<&str> = s.split(':').collect();
    anyhow::ensure!(parts.len() == 3, "bad timestamp {s}");
    let (h, m, sec): (f64, f64, f64) = (parts[0].parse()?, parts[1].parse()?, parts[2].parse()?);
    anyhow::ensure!(parts[2].len() == 5, "timestamp {s} is not HH:MM:SS.cc");
    Ok(h * 3600.0 + m * 60.0 + sec)
}

#[test]
fn export_round_trip() -> anyhow::Result<()> {
    let world = world()?;
    let dir = tempfile::tempdir()?;
    let summary = world.export(dir.path(), &ExportOptions::default())?;
    assert_eq!(summary.videos, 3);
    assert_eq!(summary.mp4_files, 0);

    // Annotations: EPIC header, one row per interaction, timestamps that parse back.
    let train = std::fs::read_to_string(dir.path().join("annotations").join(TRAIN_CSV))?;
    assert_eq!(train, world.labels_epic_csv(Some(Split::Train))?);
    let mut rdr = csv::Reader::from_reader(train.as_bytes());
    assert_eq!(
        rdr.headers()?.iter().collect::<Vec<_>>(),
        EPIC_COLUMNS.to_vec()
    );
    let mut rows = 0;
    for rec in rdr.records() {
        let rec = rec?;
        let video = world
            .scripts()
            .iter()
            .find(|s| s.video_id == rec[2])
            .ok_or_else(|| anyhow::anyhow!("unknown video {}", &rec[2]))?;
        assert_eq!(video.split, Split::Train);
        let k: usize = rec[0].rsplit('_').next().unwrap_or("x").parse()?;
        let it = &video.interactions[k];
        assert!((parse_ts(&rec[4])? - it.start_s).abs() < 1e-9);
        assert!((parse_ts(&rec[5])? - it.stop_s).abs() < 1e-9);
        assert!((parse_ts(&rec[3])? - it.time_s).abs() < 1e-9);
        assert_eq!(rec[10].parse::<usize>()?, it.verb);
        assert_eq!(rec[12].parse::<usize>()?, it.noun);
        assert_eq!(&rec[14], format!("[{}]", it.noun));
        let start_frame: usize = rec[6].parse()?;
        assert_eq!(start_frame, (it.start_s * 16.0 + 1e-6).floor() as usize + 1);
        rows += 1;
    }
    let n_train: usize = world
        .scripts()
        .iter()
        .filter(|s| s.split == Split::Train)
        .map(|s| s.interactions.len())
        .sum();
    assert_eq!(rows, n_train);
    let val = std::fs::read_to_string(dir.path().join("annotations").join(VALIDATION_CSV))?;
    assert_eq!(
        val.lines().count(),
        1 + world.scripts()[2].interactions.len()
    );
    let verbs = std::fs::read_to_string(dir.path().join("annotations/EPIC_100_verb_classes.csv"))?;
    assert_eq!(verbs.lines().next(), Some("id,key,instances,category"));
    assert_eq!(verbs.lines().count(), 7);
    let nouns = std::fs::read_to_string(dir.path().join("annotations/EPIC_100_noun_classes.csv"))?;
    assert_eq!(nouns.lines().count(), 9);

    // world.json records the config and the timelines.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("world.json"))?)?;
    let cfg: WorldConfig = serde_json::from_value(json["config"].clone())?;
    assert_eq!(&cfg, world.config());
    assert_eq!(json["videos"].as_array().map(|a| a.len()), Some(3));

    // Frame folder: av-video opens it; PNG frames and float WAV come back bit-exact.
    let v = world.video(1)?;
    let mut src = FrameFolderSource::open(dir.path().join("videos").join(v.id()))?;
    assert_eq!(src.meta().n_frames, v.frames.len());
    assert_eq!(src.meta().fps, 16.0);
    assert_eq!((src.meta().width, src.meta().height), (24, 20));
    let frames = src.read_frames(2.0, 2.2)?;
    assert!(!frames.is_empty());
    for f in &frames {
        assert_eq!(f.image, v.frames[(f.pts_s * 16.0).round() as usize]);
    }
    let (audio, rate) = src
        .read_audio()?
        .ok_or_else(|| anyhow::anyhow!("no audio"))?;
    assert_eq!(rate, 44_100);
    assert_eq!(audio.len(), v.audio.len());
    let max_err = audio
        .iter()
        .zip(v.audio.iter())
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(max_err < 1e-6, "WAV round trip error {max_err}");
    Ok(())
}

#[test]
fn jpeg_export_is_close_and_mp4_needs_the_feature() -> anyhow::Result<()> {
    let world = World::new(WorldConfig {
        n_videos: 1,
        val_videos: 0,
        min_duration_s: 3.0,
        max_duration_s: 3.0,
        ..WorldConfig::default()
    })?;
    let dir = tempfile::tempdir()?;
    let opts = ExportOptions {
        frame_format: FrameFormat::Jpeg { quality: 95 },
        mp4: false,
    };
    world.export(dir.path(), &opts)?;
    let v = world.video(0)?;
    let mut src = FrameFolderSource::open(dir.path().join("videos").join(v.id()))?;
    let f = &src.read_frames(1.0, 1.0)?[0];
    let want = &v.frames[16];
    let mae = f
        .image
        .iter()
        .zip(want.iter())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / want.len() as f64;
    assert!(mae < 12.0, "JPEG mean abs error {mae}");

    let mp4 = ExportOptions {
        mp4: true,
        ..ExportOptions::default()
    };
    let out = tempfile::tempdir()?;
    let res = world.export(out.path(), &mp4);
    if cfg!(feature = "ffmpeg") && av_synth::ffmpeg_cli_available() {
        let summary = res?;
        assert_eq!(summary.mp4_files, 1);
        let meta = std::fs::metadata(out.path().join("mp4").join(format!("{}.MP4", v.id())))?;
        assert!(meta.len() > 1000);
    } else if !cfg!(feature = "ffmpeg") {
        assert!(matches!(res, Err(av_synth::SynthError::Ffmpeg { .. })));
    }
    Ok(())
}
