//! End to end on a very small synthetic world: pretrain a few steps, probe the pretrained and the
//! random-init encoders, and check that a stand-alone linear evaluation of the saved checkpoint
//! reproduces the numbers of `probe.json` (one probe code path).

use replai::train::pipeline::{
    cache_dir, pretrain_and_probe, probe_data, probe_encoder, world_for,
};
use replai::train::Config;

fn tiny(dir: &std::path::Path) -> Config {
    let mut ov: Vec<String> = [
        "synthetic.n_videos=4",
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
        "optim.epochs=2",
        // Per-epoch OneCycle needs >= 4 epochs for a non-empty warm-up; per step has 4 steps.
        "optim.schedule=onecycle-step",
        "data.samples_per_epoch=8",
        "probe.epochs=3",
        "probe.batch_size=16",
        "probe.eval_clips=2",
        "probe.train_views=1",
        "run.name=e2e",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ov.push(format!("run.out_dir={}", dir.display()));
    Config::load(None, &ov).expect("valid config")
}

#[test]
fn pretrain_probe_and_linear_eval_agree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = tiny(tmp.path());
    let run = tmp.path().join("e2e");
    let report = pretrain_and_probe(&cfg, &run, true).expect("default pipeline");
    assert_eq!(report.pretrain.steps, 4);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("probe.json")).expect("probe.json"))
            .expect("json");
    for who in ["pretrained", "random"] {
        for head in ["verb", "noun"] {
            for k in ["top1", "top5"] {
                let v = json[who][head][k].as_f64().expect("a number");
                assert!((0.0..=100.0).contains(&v), "{who}.{head}.{k} = {v}");
            }
        }
    }

    // Linear evaluation from the saved config, without the feature cache, gives the same numbers.
    let saved = Config::load(Some(&run.join("config.toml")), &["probe.cache_dir=".into()])
        .expect("saved config");
    let world = world_for(&saved).expect("world");
    let data = probe_data(&saved, world.as_ref()).expect("probe data");
    let fresh_cache = tmp.path().join("fresh-cache");
    let pre = probe_encoder(&saved, Some(&run), &data, Some(&fresh_cache), None)
        .expect("probe checkpoint");
    let rnd = probe_encoder(&saved, None, &data, Some(&fresh_cache), None).expect("probe random");
    assert_eq!(
        json["pretrained"]["verb"]["top1"].as_f64(),
        Some(pre.verb.top1)
    );
    assert_eq!(
        json["pretrained"]["noun"]["top5"].as_f64(),
        pre.noun.as_ref().map(|n| n.top5)
    );
    assert_eq!(json["random"]["verb"]["top1"].as_f64(), Some(rnd.verb.top1));
    assert_eq!(Some(&pre), report.pretrained.as_ref());
    assert!(cache_dir(&saved, &run).ends_with("features"));
}
