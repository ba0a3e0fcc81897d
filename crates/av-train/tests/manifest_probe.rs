//! The probe and fine-tuning on labelled data read through dataset manifests: the synthetic
//! world exported to disk and read back as an EPIC-KITCHENS-100 copy (frame folders, EPIC CSVs,
//! the repository's `data-manifests/synthetic/manifest.toml`), and the same videos laid out as a
//! UCF-101 copy (single-label, `classInd.txt` + split lists).

use std::path::{Path, PathBuf};

use av_synth::ExportOptions;
use av_train::data::synthetic_world;
use av_train::finetune::finetune;
use av_train::pipeline::{probe_data, probe_encoder};
use av_train::probe::metrics_json;
use av_train::views::Protocol;
use av_train::Config;

fn repo_manifest(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../data-manifests")
        .join(rel)
}

fn base_overrides() -> Vec<String> {
    [
        "synthetic.n_videos=6",
        "synthetic.val_videos=2",
        "synthetic.min_duration_s=6",
        "synthetic.max_duration_s=6",
        "synthetic.width=24",
        "synthetic.height=24",
        "sampler.crop=16",
        "sampler.min_scale=16",
        "sampler.max_scale=20",
        "sampler.eval_scale=16",
        "sampler.num_frames=4",
        "model.video_width=0.125",
        "probe.epochs=3",
        "probe.batch_size=16",
        "probe.eval_clips=3",
        "probe.train_views=2",
        "finetune.warmup_epochs=1",
        "finetune.epochs=1",
        "finetune.batch_size=4",
        "data.workers=1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Exports the small world into `dir` and returns the config that generated it.
fn export_world(dir: &Path) -> Config {
    let cfg = Config::load(None, &base_overrides()).expect("valid config");
    let world = synthetic_world(&cfg).expect("world");
    world
        .export(dir, &ExportOptions::default())
        .expect("export");
    cfg
}

fn rows_of(root: &Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(root.join("annotations").join(file))
        .expect("csv")
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

fn with(cfg_over: &[String], more: &[String]) -> Config {
    let mut ov = base_overrides();
    ov.extend(cfg_over.iter().cloned());
    ov.extend(more.iter().cloned());
    Config::load(None, &ov).expect("valid config")
}

#[test]
fn epic_layout_probe_uses_single_clips_and_video_level_averaging() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("export");
    export_world(&root);
    let manifest = repo_manifest("synthetic/manifest.toml");
    let ds = [
        format!("probe.manifest={}", manifest.display()),
        format!("probe.data_root={}", root.display()),
    ];
    let cfg = with(&ds, &[]);
    let data = probe_data(&cfg, None).expect("manifest data");
    assert_eq!(data.protocol, Protocol::Clip);
    assert_eq!(data.first_head, "verb");
    // Every CSV row is a segment; every exported video is opened from its frame folder.
    let rows = |f: &str| {
        std::fs::read_to_string(root.join("annotations").join(f))
            .expect("csv")
            .lines()
            .count()
            - 1
    };
    assert_eq!(data.train.segments.len(), rows("EPIC_100_train.csv"));
    assert_eq!(data.val.segments.len(), rows("EPIC_100_validation.csv"));
    assert_eq!(data.train.videos.len(), 4);
    assert_eq!(data.val.videos.len(), 2);
    assert!(data
        .train
        .segments
        .iter()
        .all(|s| s.stop_s > s.start_s && s.start_s >= 0.0));

    let out = tmp.path().join("eval");
    let m = probe_encoder(
        &cfg,
        None,
        &data,
        Some(&tmp.path().join("cache")),
        Some(&out),
    )
    .expect("probe");
    let n_train = data.train.segments.len();
    let n_val = data.val.segments.len();
    assert_eq!(m.counts, [n_train, 2 * n_train, n_val, 3 * n_val]);
    let noun = m.noun.as_ref().expect("EPIC has a noun head");
    for v in [m.verb.top1, m.verb.top5, noun.top1, m.verb.clip_top1] {
        assert!((0.0..=100.0).contains(&v), "{v}");
    }
    // Confusion counts segments (video level), labelled with the class names of the CSVs.
    let total: usize = m.verb.confusion.iter().flatten().sum();
    assert_eq!(total, n_val);
    let csv = std::fs::read_to_string(out.join("confusion_random_verb.csv")).expect("csv");
    let first_verb = rows_of(&root, "EPIC_100_verb_classes.csv")[0]
        .split(',')
        .nth(1)
        .expect("key")
        .to_string();
    assert!(
        csv.lines()
            .next()
            .expect("header")
            .starts_with(&format!("true\\pred,{first_verb},")),
        "{csv}"
    );
    // A cached second run gives identical numbers.
    let again =
        probe_encoder(&cfg, None, &data, Some(&tmp.path().join("cache")), None).expect("probe");
    assert_eq!(m, again);

    // The reference's single random clip (G8): one view per evaluation segment.
    let g8 = with(&ds, &["probe.single_clip=true".into()]);
    let m8 =
        probe_encoder(&g8, None, &probe_data(&g8, None).expect("data"), None, None).expect("probe");
    assert_eq!(m8.counts[3], n_val);

    // Fine-tuning reads the same manifest and evaluates the same views.
    // The reference protocol: random heads, a classifier-only warm-up epoch, then all layers.
    let reference = with(
        &ds,
        &[
            "finetune.head_init=random".into(),
            "finetune.dropout=0.5".into(),
        ],
    );
    let ft = finetune(&reference, None, &data, &tmp.path().join("ft"), true).expect("fine-tune");
    assert_eq!(ft.epoch_losses.len(), 2);
    assert_eq!(ft.metrics.counts[3], 3 * n_val);
    assert!(ft.metrics.noun.is_some());

    // LP-FT with no fine-tuning epoch is the probe itself: same heads, same evaluation views.
    let lp = with(
        &ds,
        &[
            "finetune.head_init=probe".into(),
            "finetune.epochs=0".into(),
        ],
    );
    let lp_out = finetune(&lp, None, &data, &tmp.path().join("lp"), true).expect("LP-FT");
    assert_eq!(lp_out.epoch_losses.len(), 0);
    assert_eq!(lp_out.metrics.verb.top1, m.verb.top1);
    assert_eq!(lp_out.metrics.verb.confusion, m.verb.confusion);
}

/// Lays the exported videos out as UCF-101 (`<Class>/v_<Class>_gNN_c01` frame folders), one
/// class per video: the verb of its first interaction.
fn ucf_copy(export: &Path, root: &Path) -> (usize, usize) {
    let csv = |f: &str| std::fs::read_to_string(export.join("annotations").join(f)).expect("csv");
    let classes: Vec<String> = csv("EPIC_100_verb_classes.csv")
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).expect("key").to_string())
        .map(|k| {
            let mut c = k.chars();
            c.next()
                .map_or(String::new(), |f| f.to_uppercase().chain(c).collect())
        })
        .collect();
    let lists = root.join("ucfTrainTestlist");
    std::fs::create_dir_all(&lists).expect("mkdir");
    let ind: String = classes
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} {c}\n", i + 1))
        .collect();
    std::fs::write(lists.join("classInd.txt"), ind).expect("classInd");
    let mut n = 0;
    for (split, list) in [
        ("EPIC_100_train.csv", "trainlist01.txt"),
        ("EPIC_100_validation.csv", "testlist01.txt"),
    ] {
        let mut out = String::new();
        let mut seen = std::collections::BTreeSet::new();
        for line in csv(split).lines().skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            let (video, verb) = (cols[2], cols[10].parse::<usize>().expect("verb id"));
            if !seen.insert(video.to_string()) {
                continue;
            }
            let class = &classes[verb];
            let name = format!("v_{class}_g{:02}_c01", seen.len());
            let dir = root.join("UCF-101").join(class).join(&name);
            std::fs::create_dir_all(dir.parent().expect("parent")).expect("mkdir");
            copy_dir(&export.join("videos").join(video), &dir);
            if list.starts_with("train") {
                out.push_str(&format!("{class}/{name}.avi {}\n", verb + 1));
            } else {
                out.push_str(&format!("{class}/{name}.avi\n"));
            }
            n += 1;
        }
        std::fs::write(lists.join(list), out).expect("list");
    }
    (n, classes.len())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}

#[test]
fn ucf_layout_probe_is_single_label_with_dense_clips() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let export = tmp.path().join("export");
    export_world(&export);
    let root = tmp.path().join("ucf");
    let (videos, n_classes) = ucf_copy(&export, &root);
    // The repository's UCF-101 manifest, with frame folders instead of .avi files.
    let text = std::fs::read_to_string(repo_manifest("ucf101/manifest.toml"))
        .expect("manifest")
        .replace("layout = \"video\"", "layout = \"frames\"")
        .replace("template = \"{path}\"", "template = \"{stem}\"")
        .replace("labels = 101", &format!("labels = {n_classes}"));
    let manifest = tmp.path().join("ucf101.toml");
    std::fs::write(&manifest, text).expect("manifest");
    let ds = [
        format!("probe.manifest={}", manifest.display()),
        format!("probe.data_root={}", root.display()),
        "probe.eval_clips=10".to_string(),
    ];
    let cfg = with(&ds, &[]);
    let data = match probe_data(&cfg, None) {
        Ok(d) => d,
        Err(e) => panic!("ucf data: {e}"),
    };
    assert_eq!(data.first_head, "label");
    assert_eq!(data.n_nouns, 0);
    assert_eq!(data.train.segments.len() + data.val.segments.len(), videos);
    assert!(data.val.segments.iter().all(|s| s.stop_s.is_infinite()));
    let m = probe_encoder(&cfg, None, &data, None, None).expect("probe");
    assert!(m.noun.is_none());
    // AVID's test protocol: 10 dense clips per test video, softmax averaged.
    assert_eq!(m.counts[3], 10 * data.val.segments.len());
    let json = metrics_json(&m);
    assert!(
        json.get("label").is_some() && json.get("verb").is_none(),
        "{json}"
    );

    // Missing media are all reported, before any feature is computed.
    let gone: Vec<PathBuf> = std::fs::read_to_string(root.join("ucfTrainTestlist/testlist01.txt"))
        .expect("list")
        .lines()
        .map(|l| root.join("UCF-101").join(l.trim().trim_end_matches(".avi")))
        .collect();
    for g in &gone {
        std::fs::remove_dir_all(g).expect("remove");
    }
    let err = match probe_data(&cfg, None) {
        Ok(_) => panic!("missing videos must fail"),
        Err(e) => e.to_string(),
    };
    for g in &gone {
        let name = g.file_name().expect("name").to_string_lossy().into_owned();
        assert!(err.contains(&name), "{name} not in: {err}");
    }
}

#[test]
fn manifest_mistakes_are_config_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let manifest = repo_manifest("synthetic/manifest.toml");
    // A manifest without a data root.
    let err = Config::load(None, &[format!("probe.manifest={}", manifest.display())])
        .expect_err("needs a root");
    assert!(err.to_string().contains("probe.data_root"), "{err}");
    assert!(Config::load(None, &["probe.protocol=pairs".into()]).is_err());
    // An unknown split names the ones that exist.
    let root = tmp.path().join("export");
    export_world(&root);
    let cfg = with(
        &[
            format!("probe.manifest={}", manifest.display()),
            format!("probe.data_root={}", root.display()),
        ],
        &["probe.eval_split=test".into()],
    );
    let err = match probe_data(&cfg, None) {
        Ok(_) => panic!("no test split"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("\"test\"") && err.contains("validation"),
        "{err}"
    );
}
