//! A run interrupted after a few steps and resumed from its checkpoint continues with exactly
//! the losses of an uninterrupted run (weights, BN statistics, optimiser buffers, schedule,
//! sampler position and RNG all restored).

use av_train::pretrain::pretrain;
use av_train::Config;

fn tiny(dir: &std::path::Path, name: &str, extra: &[&str]) -> Config {
    let mut ov: Vec<String> = [
        "synthetic.n_videos=3",
        "synthetic.val_videos=1",
        "synthetic.min_duration_s=8",
        "synthetic.max_duration_s=8",
        "synthetic.width=24",
        "synthetic.height=24",
        "sampler.crop=16",
        "sampler.min_scale=16",
        "sampler.max_scale=20",
        "sampler.eval_scale=16",
        "sampler.num_frames=4",
        "model.video_width=0.125",
        "model.audio_width=0.125",
        "model.head_out=16",
        "optim.batch_size=4",
        "optim.epochs=4",
        "optim.lr=0.05",
        "data.samples_per_epoch=8",
        "data.workers=2",
        "run.probe_after=false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ov.push(format!("run.out_dir={}", dir.display()));
    ov.push(format!("run.name={name}"));
    ov.extend(extra.iter().map(|s| s.to_string()));
    Config::load(None, &ov).expect("valid test config")
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let world = av_train::data::synthetic_world(&tiny(tmp.path(), "w", &[])).expect("world");

    let full_cfg = tiny(tmp.path(), "full", &[]);
    let full = pretrain(&full_cfg, &tmp.path().join("full"), Some(&world), true)
        .expect("uninterrupted run");
    assert_eq!(full.steps, 8);
    assert!(full.losses.iter().all(|l| l.is_finite()));

    // Stop mid-epoch (epoch 1, batch 1), then resume in a fresh "process".
    let cut_cfg = tiny(tmp.path(), "cut", &["run.max_steps=3"]);
    let first =
        pretrain(&cut_cfg, &tmp.path().join("cut"), Some(&world), true).expect("interrupted run");
    assert_eq!(first.steps, 3);
    assert_eq!(
        first.losses,
        full.losses[..3],
        "same seed, same first steps"
    );
    let resume_cfg = tiny(tmp.path(), "cut", &["model.resume=auto"]);
    let rest =
        pretrain(&resume_cfg, &tmp.path().join("cut"), Some(&world), true).expect("resumed run");
    assert_eq!(rest.steps, 8);
    assert_eq!(
        rest.losses,
        full.losses[3..],
        "resumed losses differ from the uninterrupted run"
    );

    // The run directory has what a user needs.
    let run = tmp.path().join("cut");
    for f in [
        "config.toml",
        "metrics.jsonl",
        "loss.svg",
        "checkpoints/latest.json",
        "checkpoints/epoch_0004.safetensors",
    ] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    let lines = std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics")
        .lines()
        .count();
    assert_eq!(lines, 8, "one metrics line per step across the resume");
}

#[test]
fn non_finite_loss_stops_with_last_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tiny(
        tmp.path(),
        "nan",
        &[
            "optim.lr=1e30",
            "optim.schedule=constant",
            "checkpoint.latest_every_steps=1",
            "optim.epochs=20",
        ],
    );
    let world = av_train::data::synthetic_world(&cfg).expect("world");
    let err = pretrain(&cfg, &tmp.path().join("nan"), Some(&world), true)
        .expect_err("an lr of 1e30 must diverge");
    let msg = err.to_string();
    assert!(msg.contains("non-finite loss"), "{msg}");
    if !msg.contains("checkpoint: none") {
        let latest = tmp.path().join("nan/checkpoints/latest.json");
        assert!(latest.is_file(), "the last good checkpoint is kept");
        assert!(msg.contains("step_"), "{msg}");
    }
}
