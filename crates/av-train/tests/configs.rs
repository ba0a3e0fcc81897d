//! The shipped configuration files parse, validate, and `synthetic.toml` is the built-in default.

use std::path::PathBuf;

use av_train::Config;

fn configs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn every_shipped_config_loads() {
    let mut n = 0;
    for entry in std::fs::read_dir(configs_dir()).expect("configs/ exists") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(Some(&path), &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 5, "expected the five shipped configs, found {n}");
}

#[test]
fn synthetic_toml_is_the_default() {
    let cfg =
        Config::load(Some(&configs_dir().join("synthetic.toml")), &[]).expect("synthetic.toml");
    assert_eq!(
        cfg,
        Config::default(),
        "configs/synthetic.toml drifted from Config::default()"
    );
}

#[test]
fn reference_values_are_kept() {
    let epic =
        Config::load(Some(&configs_dir().join("epic-kitchens-100.toml")), &[]).expect("epic");
    assert_eq!(
        (epic.optim.lr, epic.optim.batch_size, epic.optim.epochs),
        (0.005, 128, 100)
    );
    assert_eq!(epic.optim.schedule, "onecycle-epoch");
    assert_eq!(
        (epic.probe.lr, epic.probe.batch_size, epic.probe.epochs),
        (0.005, 128, 30)
    );
    assert_eq!(epic.probe.milestones, vec![18, 24]);
    let ego = Config::load(Some(&configs_dir().join("ego4d.toml")), &[]).expect("ego4d");
    assert_eq!((ego.optim.lr, ego.optim.batch_size), (0.05, 512));
    let vic = Config::load(Some(&configs_dir().join("vggsound-vicreg.toml")), &[]).expect("vicreg");
    assert_eq!(vic.method.name, "vicreg");
    assert_eq!(
        (vic.optim.lr, vic.optim.weight_decay, vic.optim.batch_size),
        (5e-4, 1e-6, 32)
    );
}
