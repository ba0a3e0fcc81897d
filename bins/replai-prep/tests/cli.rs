//! End-to-end runs of the `replai-prep` binary: `validate` on the shipped fixtures, `moi-index`
//! on WAV files written here, and (when the ffmpeg CLI is installed) `segments` on a generated
//! test video.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_replai-prep"))
}

fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data-manifests")
}

fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

#[test]
fn validate_accepts_every_fixture() {
    for (manifest, fixture) in [
        (
            "epic-kitchens-100/manifest.toml",
            "epic-kitchens-100/fixture",
        ),
        ("ego4d/lta.toml", "ego4d/fixture"),
        ("ego4d/oscc-pnr.toml", "ego4d/fixture"),
        ("vggsound/manifest.toml", "vggsound/fixture"),
        ("ucf101/manifest.toml", "ucf101/fixture"),
        ("hmdb51/manifest.toml", "hmdb51/fixture"),
        ("synthetic/manifest.toml", "synthetic/fixture"),
    ] {
        let (out, stdout, stderr) = run(bin()
            .arg("validate")
            .arg("--manifest")
            .arg(manifests().join(manifest))
            .arg("--root")
            .arg(manifests().join(fixture))
            .args(["--check", "annotations", "--ignore-class-counts"]));
        assert!(out.status.success(), "{manifest}: {stdout}\n{stderr}");
        assert!(stdout.contains(": OK"), "{manifest}: {stdout}");
    }
}

#[test]
fn validate_lists_every_problem_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ann = dir.path().join("annotations");
    std::fs::create_dir_all(&ann).expect("mkdir");
    let src = manifests().join("epic-kitchens-100/fixture/annotations");
    for f in [
        "EPIC_100_train.csv",
        "EPIC_100_verb_classes.csv",
        "EPIC_100_noun_classes.csv",
        "EPIC_100_video_info.csv",
    ] {
        std::fs::copy(src.join(f), ann.join(f)).expect("copy");
    }
    let mut val = std::fs::read_to_string(src.join("EPIC_100_validation.csv")).expect("read");
    val = val.replacen("00:00:01.72", "00:00:1.72", 1).replacen(
        ",open,3,tap,0,",
        ",open,3,tap,77,",
        1,
    );
    std::fs::write(ann.join("EPIC_100_validation.csv"), val).expect("write");

    let (out, stdout, stderr) = run(bin()
        .arg("validate")
        .arg("--manifest")
        .arg(manifests().join("epic-kitchens-100/manifest.toml"))
        .arg("--root")
        .arg(dir.path())
        .arg("--ignore-class-counts"));
    assert!(!out.status.success());
    // Both bad fields of line 3, plus all 9 remaining prepared action segments (none exist).
    assert!(
        stdout.contains("EPIC_100_validation.csv:3:5 [start_timestamp]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("EPIC_100_validation.csv:3:13 [noun_class]: unknown noun class id 77"),
        "{stdout}"
    );
    let missing = stdout
        .lines()
        .filter(|l| l.contains("media file does not exist"))
        .count();
    assert_eq!(missing, 9, "{stdout}");
    assert!(stderr.contains("11 problems found"), "{stderr}");

    // JSON output carries the same locations.
    let (out, stdout, _) = run(bin()
        .arg("validate")
        .arg("--manifest")
        .arg(manifests().join("epic-kitchens-100/manifest.toml"))
        .arg("--root")
        .arg(dir.path())
        .args(["--ignore-class-counts", "--check", "annotations", "--json"]));
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let list = v.as_array().expect("array");
    assert_eq!(list.len(), 2);
    assert_eq!(list[1]["line"], 3);
    assert_eq!(list[1]["column"], 13);
    assert_eq!(list[1]["kind"], "UnknownClass");
}

#[test]
fn validate_reports_a_bad_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = dir.path().join("m.toml");
    std::fs::write(&m, "name = \"x\"\nformat = \"epic-kitchens-100\"\nroot = \"oops\"\n[splits.train]\nfile = \"t.csv\"\n").expect("write");
    let (out, _, stderr) = run(bin()
        .arg("validate")
        .arg("--manifest")
        .arg(&m)
        .arg("--root")
        .arg(dir.path()));
    assert!(!out.status.success());
    assert!(
        stderr.contains("m.toml:3:1") && stderr.contains("root"),
        "{stderr}"
    );
}

/// A mono 44.1 kHz recording: very quiet noise with a loud 40 ms broadband burst every 1.5 s
/// (shorter than the detector's 50.8 ms minimum peak distance, so one moment per burst).
fn clicks(seconds: f64, first_burst_s: f64) -> Vec<f32> {
    let sr = 44_100.0;
    let n = (seconds * sr) as usize;
    let mut state = 0x2545_f491_u32;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let u = state as f32 / u32::MAX as f32 - 0.5;
            let t = i as f64 / sr - first_burst_s;
            let in_burst = t >= 0.0 && (t % 1.5) < 0.04;
            if in_burst {
                1.8 * u
            } else {
                0.002 * u
            }
        })
        .collect()
}

#[test]
fn moi_index_builds_and_reuses_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(audio.join("nested")).expect("mkdir");
    av_audio::write_wav(audio.join("a.wav"), &clicks(6.0, 1.0), 44_100).expect("wav");
    av_audio::write_wav(audio.join("nested/b.wav"), &clicks(5.0, 1.2), 44_100).expect("wav");
    std::fs::write(audio.join("notes.txt"), "not audio").expect("write");
    let index = dir.path().join("moi.json");

    let (out, stdout, stderr) = run(bin()
        .arg("moi-index")
        .arg("--dir")
        .arg(&audio)
        .arg("--out")
        .arg(&index)
        .args(["--jobs", "2"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("2 files indexed (2 computed, 0 unchanged and reused), 0 failed"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).expect("index")).expect("json");
    let files = v["files"].as_object().expect("files");
    assert_eq!(files.len(), 2);
    let a = files
        .iter()
        .find(|(k, _)| k.ends_with("a.wav"))
        .map(|(_, e)| e)
        .expect("a.wav indexed");
    assert_eq!(a["sample_rate"], 44_100);
    let times: Vec<f64> = a["moments"]
        .as_array()
        .expect("moments")
        .iter()
        .map(|m| m["time_s"].as_f64().expect("time"))
        .collect();
    // Bursts start at 1.0, 2.5, 4.0 s (5.5 s is outside the validity range of a 6 s file).
    assert_eq!(times.len(), 3, "{times:?}");
    for (t, want) in times.iter().zip([1.0, 2.5, 4.0]) {
        assert!((t - want).abs() < 0.08, "moment at {t}, burst at {want}");
    }

    // Unchanged files are reused; a changed file is recomputed.
    av_audio::write_wav(audio.join("nested/b.wav"), &clicks(4.0, 0.9), 44_100).expect("wav");
    let (out, stdout, _) = run(bin()
        .arg("moi-index")
        .arg("--dir")
        .arg(&audio)
        .arg("--out")
        .arg(&index));
    assert!(out.status.success());
    assert!(
        stdout.contains("2 files indexed (1 computed, 1 unchanged and reused)"),
        "{stdout}"
    );

    // Different settings invalidate the cache; an undecodable file is listed and fails the run.
    std::fs::write(audio.join("broken.wav"), b"RIFF\x00\x00\x00\x00WAVEjunk").expect("write");
    let (out, stdout, stderr) = run(bin()
        .arg("moi-index")
        .arg("--dir")
        .arg(&audio)
        .arg("--out")
        .arg(&index)
        .args(["--prominence", "2.0"]));
    assert!(!out.status.success());
    assert!(
        stdout.contains("2 files indexed (2 computed, 0 unchanged and reused), 1 failed"),
        "{stdout}"
    );
    assert!(stderr.contains("broken.wav"), "{stderr}");
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn segments_dry_run_plans_reference_names() {
    // Per-action plans need neither ffmpeg nor the videos.
    let (out, stdout, stderr) = run(bin()
        .arg("segments")
        .arg("--manifest")
        .arg(manifests().join("epic-kitchens-100/manifest.toml"))
        .arg("--root")
        .arg(manifests().join("epic-kitchens-100/fixture"))
        .args([
            "--kind",
            "actions",
            "--split",
            "validation",
            "--dry-run",
            "--ignore-class-counts",
        ]));
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4);
    assert!(lines[0].contains("-ss 0.000 -t 1.890 -i"), "{}", lines[0]);
    assert!(lines[0].contains("P01/videos/P01_11.MP4"), "{}", lines[0]);
    assert!(
        lines[0].contains("fps=16") && lines[0].contains("-ar 44100"),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].ends_with("action_segments/P01_11_00000000_00000189.partial.MP4"),
        "{}",
        lines[0]
    );
}

#[test]
fn segments_cuts_a_generated_video() {
    if !(have("ffmpeg") && have("ffprobe")) {
        eprintln!("ffmpeg/ffprobe not installed: skipping the transcoding test");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir_all(root.join("annotations")).expect("mkdir");
    std::fs::create_dir_all(root.join("S00/videos")).expect("mkdir");
    // A 23 s, 30 fps source with a 48 kHz tone.
    let made = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=96x64:rate=30:duration=23",
        ])
        .args([
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000:duration=23",
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
        ])
        .arg(root.join("S00/videos/S00_000.MP4"))
        .status()
        .expect("ffmpeg runs");
    assert!(made.success());
    let header = "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes";
    std::fs::write(
        root.join("annotations/train.csv"),
        format!("{header}\nS00_000_0,S00,S00_000,,00:00:01.50,00:00:03.25,90,195,hit cup,hit,0,cup,0,['cup'],[0]\n"),
    )
    .expect("write");
    let manifest = root.join("m.toml");
    std::fs::write(
        &manifest,
        "name = \"t\"\nformat = \"synthetic\"\n[roots]\nannotations = \"annotations\"\n[splits.train]\nfile = \"train.csv\"\n\
         [media]\ntemplate = \"action_segments/{segment}.MP4\"\nsources = \"{participant}/videos/{video_id}.MP4\"\nfps = 16.0\naudio_rate = 44100\n",
    )
    .expect("write");
    let probe = |p: &Path, entries: &str| -> String {
        let o = Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                entries,
                "-of",
                "default=noprint_wrappers=1:nokey=1",
            ])
            .arg(p)
            .output()
            .expect("ffprobe");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    let (out, stdout, stderr) = run(bin()
        .arg("segments")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--root")
        .arg(root)
        .args(["--kind", "fixed"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let a = root.join("segments/S00_000_000000_000010.MP4");
    let b = root.join("segments/S00_000_000010_000020.MP4");
    assert!(a.is_file() && b.is_file(), "{stdout}");
    assert!(
        !root.join("segments/S00_000_000020_000023.MP4").exists(),
        "partial tail is dropped by default"
    );
    let rate = probe(&a, "stream=r_frame_rate");
    assert!(rate.lines().any(|l| l == "16/1"), "{rate}");
    assert!(probe(&a, "stream=sample_rate")
        .lines()
        .any(|l| l == "44100"));
    let d: f64 = probe(&a, "format=duration").parse().expect("duration");
    assert!((d - 10.0).abs() < 0.1, "duration {d}");

    // Rerun skips existing files.
    let (out, stdout, _) = run(bin()
        .arg("segments")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--root")
        .arg(root)
        .args(["--kind", "fixed"]));
    assert!(out.status.success());
    assert!(stdout.contains("0 written, 2 already present"), "{stdout}");

    // Action segment as frame folder + WAV.
    let (out, stdout, stderr) = run(bin()
        .arg("segments")
        .arg("--manifest")
        .arg(&manifest)
        .arg("--root")
        .arg(root)
        .args(["--kind", "actions", "--frames"]));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let frames = root.join("action_segments/S00_000_00000150_00000325");
    let n = std::fs::read_dir(&frames)
        .expect("frame folder")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "jpg"))
        .count();
    assert!((27..=29).contains(&n), "{n} frames for 1.75 s at 16 fps");
    // The folder opens as a video source, with its audio.
    let src = av_video::open_source(&frames).expect("frame folder source");
    assert_eq!(src.meta().fps, 16.0);
    assert!(src.meta().has_audio);
    let (mono, sr) =
        av_audio::decode_mono(root.join("action_segments/S00_000_00000150_00000325.wav"))
            .expect("wav");
    assert_eq!(sr, 44_100);
    assert!(
        (mono.len() as f64 / 44_100.0 - 1.75).abs() < 0.05,
        "{} samples",
        mono.len()
    );
}
