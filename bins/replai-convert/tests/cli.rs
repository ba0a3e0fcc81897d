//! End-to-end runs of the binary on the av-models fixture checkpoints.
// Tests panic on failure by design; unwrap is the clearest way to say so.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/av-models/tests/fixtures")
        .join(name)
}

fn run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_replai-convert"))
        .args(args)
        .output()
        .expect("binary runs")
}

#[test]
fn converts_zip_and_legacy_pth_with_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for name in ["video_avid_ckpt.pth", "video_avid_ckpt_legacy.pth"] {
        let out = dir.path().join(format!("{name}.safetensors"));
        let o = run(&[
            fixture(name).as_os_str(),
            out.as_os_str(),
            "--prefix".as_ref(),
            "module.video_model.".as_ref(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
        assert_eq!(t.len(), 201);
        assert!(t.contains_key("conv1.0.weight"));
        assert!(t.keys().all(|k| !k.starts_with("module.")));
        assert_eq!(t["conv1.0.weight"].dims(), &[16, 3, 3, 7, 7]);
        outputs.push(t);
    }
    // Both formats convert to the same tensors.
    for (k, a) in &outputs[0] {
        let b = &outputs[1][k];
        let a = a.to_dtype(candle_core::DType::F64).unwrap();
        let b = b.to_dtype(candle_core::DType::F64).unwrap();
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert_eq!(d, 0.0, "{k}");
    }
    // No prefix keeps every key unchanged; safetensors input works too.
    let all = dir.path().join("all.safetensors");
    let o = run(&[fixture("video_avid_ckpt.pth").as_os_str(), all.as_os_str()]);
    assert!(o.status.success());
    let o = run(&[all.as_os_str(), "--list".as_ref()]);
    let listing = String::from_utf8(o.stdout).unwrap();
    assert!(o.status.success());
    assert!(
        listing.contains("module.video_model.conv1.0.weight\tF32\t[16, 3, 3, 7, 7]"),
        "{listing}"
    );
    assert_eq!(listing.lines().filter(|l| !l.starts_with('#')).count(), 201);
}

#[test]
fn list_and_errors() {
    let o = run(&[
        fixture("video_avid_ckpt_legacy.pth").as_os_str(),
        "--list".as_ref(),
        "--prefix".as_ref(),
        "module.video_model.conv5x.1.".as_ref(),
    ]);
    assert!(o.status.success());
    let s = String::from_utf8(o.stdout).unwrap();
    assert!(
        s.contains("TorchLegacy") && s.contains("nested under `model`"),
        "{s}"
    );
    assert!(s.contains("out_bn.running_var\tF32\t[128]"), "{s}");

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pth");
    std::fs::write(&junk, "hello").unwrap();
    let o = run(&[junk.as_os_str(), "--list".as_ref()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("junk.pth") && err.contains("not a checkpoint"),
        "{err}"
    );

    let o = run(&[
        fixture("video_avid_ckpt.pth").as_os_str(),
        "--list".as_ref(),
        "--prefix".as_ref(),
        "nope.".as_ref(),
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no tensors under prefix `nope.`"));

    let o = run(&[fixture("video_avid_ckpt.pth").as_os_str()]);
    assert!(!o.status.success(), "missing output path is an error");
}
