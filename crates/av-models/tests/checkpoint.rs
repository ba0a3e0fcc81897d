//! Checkpoint import/export: zip and legacy `.pth`, safetensors round trips, load
//! reports, key names and parameter counts, and errors on bad files and inputs.
// Tests panic on failure by design; unwrap is the clearest way to say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use av_models::checkpoint::{
    load_checkpoint, save_varmap, sniff, varmap_tensors, with_num_batches_tracked, Format,
    AVID_VIDEO_PREFIX,
};
use av_models::{
    check_finite, load_into, load_tensors, num_trainable_params, save_safetensors, strip_prefix,
    AudioCnn, AudioCnnConfig, ModelError, MultiTaskClassifier, R2Plus1d, R2Plus1dConfig,
    ReplaiHeads, ReplaiHeadsConfig, VicregExpander, VicregExpanderConfig, XidHead, XidHeadConfig,
};
use candle_core::{DType, Device, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, fixture, load};

fn new_video(width: f64) -> (VarMap, R2Plus1d) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = R2Plus1d::new(&R2Plus1dConfig::avid().with_width(width), vb).unwrap();
    (varmap, net)
}

#[test]
fn zip_and_legacy_pth_hold_identical_tensors() {
    let zip = load_checkpoint(fixture("video_avid_ckpt.pth")).unwrap();
    let legacy = load_checkpoint(fixture("video_avid_ckpt_legacy.pth")).unwrap();
    assert_eq!(zip.format, Format::TorchZip);
    assert_eq!(legacy.format, Format::TorchLegacy);
    assert_eq!(legacy.nested_key.as_deref(), Some("model"));
    assert_eq!(zip.tensors.len(), 201);
    assert_eq!(legacy.tensors.len(), 201);
    for (k, a) in &zip.tensors {
        assert!(k.starts_with(AVID_VIDEO_PREFIX), "{k}");
        let b = &legacy.tensors[k];
        assert_eq!(a.dtype(), b.dtype(), "{k}");
        assert_eq!(a.dims(), b.dims(), "{k}");
        let (a, b) = (
            a.to_dtype(DType::F64).unwrap(),
            b.to_dtype(DType::F64).unwrap(),
        );
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert_eq!(d.to_scalar::<f64>().unwrap(), 0.0, "{k}");
    }
    let nbt = &legacy.tensors["module.video_model.conv1.1.num_batches_tracked"];
    assert_eq!(nbt.dtype(), DType::I64);
    assert_eq!(nbt.to_scalar::<i64>().unwrap(), 1);
}

#[test]
fn legacy_pth_reproduces_pytorch_features_and_round_trips_through_safetensors() {
    let io = load("io.safetensors");
    let weights = strip_prefix(
        load_tensors(fixture("video_avid_ckpt_legacy.pth")).unwrap(),
        AVID_VIDEO_PREFIX,
    );
    let (varmap, net) = new_video(0.25);
    let report = load_into(&varmap, &weights, "").unwrap();
    assert!(report.is_clean(), "{report:?}");
    let f = net.forward_t(&io["input.video"], false).unwrap();
    assert_close(
        "legacy eval.video.features",
        &f,
        &io["eval.video.features"],
        1e-4,
    );

    // Export (atomic) and reload through candle's mmap loader: same features.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("video.safetensors");
    save_varmap(&varmap, &out).unwrap();
    assert_eq!(sniff(&out).unwrap(), Format::Safetensors);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left behind");
    // SAFETY: the file was just written by this test and is not modified while mapped.
    let vb =
        unsafe { VarBuilder::from_mmaped_safetensors(&[&out], DType::F32, &Device::Cpu).unwrap() };
    let net2 = R2Plus1d::new(&R2Plus1dConfig::avid().with_width(0.25), vb).unwrap();
    let f2 = net2.forward_t(&io["input.video"], false).unwrap();
    assert_close("reloaded features", &f2, &f, 1e-7);

    // With num_batches_tracked the export has exactly the PyTorch key set.
    let mut map = varmap_tensors(&varmap).unwrap();
    with_num_batches_tracked(&mut map, 1).unwrap();
    let mut got: Vec<_> = map.keys().cloned().collect();
    let mut want: Vec<_> = weights.keys().cloned().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    let out2 = dir.path().join("video_full.safetensors");
    save_safetensors(&map, &out2).unwrap();
    let back = load_tensors(&out2).unwrap();
    assert_eq!(
        back["conv1.1.num_batches_tracked"]
            .to_scalar::<i64>()
            .unwrap(),
        1
    );
}

#[test]
fn load_report_names_missing_unexpected_and_misshaped_keys() {
    let mut weights = strip_prefix(
        load_tensors(fixture("video_avid_ckpt.pth")).unwrap(),
        AVID_VIDEO_PREFIX,
    );
    weights.remove("conv2x.0.spt_bn1.running_var");
    weights.insert(
        "conv3x.0.spt_conv1.weight".into(),
        Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
    );
    weights.insert(
        "fc.weight".into(),
        Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
    );
    let (varmap, _net) = new_video(0.25);
    let report = load_into(&varmap, &weights, "").unwrap();
    assert_eq!(
        report.missing,
        vec!["conv2x.0.spt_bn1.running_var".to_string()]
    );
    assert_eq!(report.unexpected, vec!["fc.weight".to_string()]);
    assert_eq!(report.mismatched.len(), 1);
    assert_eq!(report.mismatched[0].0, "conv3x.0.spt_conv1.weight");
    assert_eq!(report.mismatched[0].1, vec![32, 16, 1, 3, 3]);
    let err = report.strict().unwrap_err().to_string();
    for name in [
        "conv2x.0.spt_bn1.running_var",
        "fc.weight",
        "conv3x.0.spt_conv1.weight",
    ] {
        assert!(err.contains(name), "{err}");
    }

    // A model of the wrong width: every conv is reported, not a panic.
    let (varmap, _net) = new_video(0.125);
    let report = load_into(&varmap, &weights, "").unwrap();
    assert!(report.mismatched.len() > 100);

    // Prefix mapping on the raw checkpoint.
    let raw = load_tensors(fixture("video_avid_ckpt.pth")).unwrap();
    let (varmap, _net) = new_video(0.25);
    assert!(load_into(&varmap, &raw, AVID_VIDEO_PREFIX)
        .unwrap()
        .is_clean());
}

#[test]
fn parameter_names_and_shapes_match_the_reference_state_dicts() {
    let keys = std::fs::read_to_string(fixture("keys.txt")).unwrap();
    let mut expected: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    for line in keys.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f[1].ends_with("num_batches_tracked") {
            continue;
        }
        expected
            .entry(f[0])
            .or_default()
            .push((f[1].to_string(), f[2].replace(' ', "")));
    }
    let shapes = |vm: &VarMap| -> Vec<(String, String)> {
        let mut v: Vec<_> = varmap_tensors(vm)
            .unwrap()
            .into_iter()
            .map(|(k, t)| (k, format!("{:?}", t.dims()).replace(' ', "")))
            .collect();
        v.sort();
        v
    };
    let (vm, _) = new_video(0.25);
    let mut want = expected["video.safetensors"].clone();
    want.sort();
    assert_eq!(shapes(&vm), want);

    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    AudioCnn::new(&AudioCnnConfig::default().with_width(0.25), vb).unwrap();
    let mut want = expected["audio.safetensors"].clone();
    want.sort();
    assert_eq!(shapes(&vm), want);

    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = ReplaiHeadsConfig {
        in_dim: 128,
        hidden: 128,
        out_dim: 32,
    };
    ReplaiHeads::new(&cfg, vb.pp("mlp")).unwrap();
    let mut want = expected["heads.safetensors"].clone();
    want.sort();
    assert_eq!(shapes(&vm), want);
}

#[test]
fn full_width_parameter_counts() {
    let count = |build: &dyn Fn(VarBuilder)| {
        let vm = VarMap::new();
        build(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu));
        num_trainable_params(&vm)
    };
    assert_eq!(
        count(&|vb| drop(R2Plus1d::new(&R2Plus1dConfig::avid(), vb).unwrap())),
        15_379_136
    );
    assert_eq!(
        count(&|vb| drop(AudioCnn::new(&AudioCnnConfig::default(), vb).unwrap())),
        4_725_696
    );
    assert_eq!(
        count(&|vb| drop(ReplaiHeads::new(&ReplaiHeadsConfig::default(), vb.pp("mlp")).unwrap())),
        1_444_992
    );
    assert_eq!(
        count(&|vb| drop(XidHead::new(&XidHeadConfig::default(), vb.pp("video_proj")).unwrap())),
        590_976
    );
    // 512*4096+4096 + 2*4096 + 2*(4096*4096+4096) + 2*4096 (AV-SSRL: biased last Linear)
    assert_eq!(
        count(&|vb| drop(
            VicregExpander::new(&VicregExpanderConfig::default(), vb.pp("video_exp")).unwrap()
        )),
        35_680_256
    );
    assert_eq!(
        count(&|vb| drop(MultiTaskClassifier::epic100(512, vb).unwrap())),
        512 * 397 + 397
    );
}

#[test]
fn vicreg_and_xid_key_names() {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    let cfg = VicregExpanderConfig {
        dims: vec![8, 16, 16, 4],
        last_bias: true,
    };
    let exp = VicregExpander::new(&cfg, vb.pp("video_exp")).unwrap();
    XidHead::new(
        &XidHeadConfig {
            dims: vec![8, 8, 8, 4],
        },
        vb.pp("video_proj"),
    )
    .unwrap();
    let mut names: Vec<_> = varmap_tensors(&vm).unwrap().into_keys().collect();
    names.sort();
    let want = [
        "video_exp.expansion.0.bias",
        "video_exp.expansion.0.weight",
        "video_exp.expansion.1.bias",
        "video_exp.expansion.1.running_mean",
        "video_exp.expansion.1.running_var",
        "video_exp.expansion.1.weight",
        "video_exp.expansion.3.bias",
        "video_exp.expansion.3.weight",
        "video_exp.expansion.4.bias",
        "video_exp.expansion.4.running_mean",
        "video_exp.expansion.4.running_var",
        "video_exp.expansion.4.weight",
        "video_exp.expansion.6.bias",
        "video_exp.expansion.6.weight",
        "video_proj.projection.0.bias",
        "video_proj.projection.0.weight",
        "video_proj.projection.2.bias",
        "video_proj.projection.2.weight",
        "video_proj.projection.4.bias",
        "video_proj.projection.4.weight",
    ];
    assert_eq!(names, want);
    let x = Tensor::randn(0f32, 1.0, (5, 8), &Device::Cpu).unwrap();
    assert_eq!(exp.forward_t(&x, true).unwrap().dims(), &[5, 4]);
}

#[test]
fn bad_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.pth");
    std::fs::write(&text, "this is not a checkpoint at all").unwrap();
    assert!(matches!(
        load_tensors(&text),
        Err(ModelError::NotACheckpoint { .. })
    ));
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        load_tensors(&empty),
        Err(ModelError::NotACheckpoint { .. })
    ));
    assert!(matches!(
        load_tensors(dir.path().join("absent.pth")),
        Err(ModelError::Io { .. })
    ));

    // Truncations of both torch formats at several points.
    for name in ["video_avid_ckpt_legacy.pth", "video_avid_ckpt.pth"] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        for cut in [20, 100, 2_000, 50_000, bytes.len() / 2, bytes.len() - 10] {
            let p = dir.path().join(format!("cut_{cut}_{name}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let r = load_tensors(&p);
            assert!(r.is_err(), "{name} cut at {cut} loaded");
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains("cut_"), "error names the file: {msg}");
        }
    }
    // A zip that is not a torch checkpoint.
    let z = dir.path().join("other.zip");
    {
        let f = std::fs::File::create(&z).unwrap();
        let mut w = zip::ZipWriter::new(f);
        w.start_file("hello.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut w, b"hi").unwrap();
        w.finish().unwrap();
    }
    let msg = load_tensors(&z).unwrap_err().to_string();
    assert!(msg.contains("data.pkl"), "{msg}");
}

#[test]
fn bad_inputs_are_named_errors() {
    let (_vm, video) = new_video(0.125);
    let e = video
        .forward_t(
            &Tensor::zeros((1, 3, 8, 32), DType::F32, &Device::Cpu).unwrap(),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("video input") && e.contains("(B, 3, T, H, W)"),
        "{e}"
    );
    let e = video
        .forward_t(
            &Tensor::zeros((1, 1, 8, 32, 32), DType::F32, &Device::Cpu).unwrap(),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("video input"), "{e}");
    // An empty clip: an error naming the input, not a panic.
    let e = video
        .forward_t(
            &Tensor::zeros((1, 3, 0, 32, 32), DType::F32, &Device::Cpu).unwrap(),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("input"), "{e}");

    let vm = VarMap::new();
    let audio = AudioCnn::new(
        &AudioCnnConfig::default().with_width(0.125),
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let e = audio
        .forward_t(
            &Tensor::zeros((1, 2, 125, 80), DType::F32, &Device::Cpu).unwrap(),
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("audio input"), "{e}");

    let x = Tensor::new(&[1.0f32, f32::NAN, 2.0, f32::INFINITY], &Device::Cpu).unwrap();
    let e = check_finite(&x, "input.audio").unwrap_err().to_string();
    assert!(e.contains("input.audio") && e.contains("2 of 4"), "{e}");
    assert!(check_finite(&Tensor::ones(3, DType::F32, &Device::Cpu).unwrap(), "ok").is_ok());
}

#[test]
fn torchvision_layout_matches_pytorch() {
    // Key names and shapes of the full torchvision r2plus1d_18 (with the Kinetics fc).
    let text = std::fs::read_to_string(fixture("torchvision_r2plus1d_18_keys.txt")).unwrap();
    let mut lines = text.lines();
    let count: usize = lines
        .next()
        .unwrap()
        .trim_start_matches("# params ")
        .parse()
        .unwrap();
    let mut want: Vec<String> = lines
        .filter(|l| !l.contains("num_batches_tracked"))
        .map(|l| l.replace(' ', ""))
        .collect();
    want.sort();
    let vm = VarMap::new();
    let cfg = R2Plus1dConfig {
        num_classes: Some(400),
        ..R2Plus1dConfig::torchvision()
    };
    R2Plus1d::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
    assert_eq!(num_trainable_params(&vm), count);
    let mut got: Vec<String> = varmap_tensors(&vm)
        .unwrap()
        .into_iter()
        .map(|(k, t)| format!("{k}\t{:?}", t.dims()).replace(' ', ""))
        .collect();
    got.sort();
    assert_eq!(got, want);

    // Numerics at width 0.125, one block per stage, float64 (see make_torchvision_fixture.py).
    let t = load("torchvision_small.safetensors");
    let cfg = R2Plus1dConfig {
        depth: [1, 1, 1, 1],
        ..R2Plus1dConfig::torchvision().with_width(0.125)
    };
    let weights: HashMap<String, Tensor> = t
        .iter()
        .filter(|(k, _)| !k.starts_with("io."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for train in [false, true] {
        let vm = VarMap::new();
        let net =
            R2Plus1d::new(&cfg, VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu)).unwrap();
        load_into(&vm, &weights, "").unwrap().strict().unwrap();
        let f = net.forward_t(&t["io.input"], train).unwrap();
        if train {
            assert_close(
                "torchvision train features",
                &f,
                &t["io.train_features"],
                1e-10,
            );
            let w = vm.data().lock().unwrap()["stem.0.weight"].clone();
            let grads = f.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            assert_close(
                "torchvision stem grad",
                grads.get(w.as_tensor()).unwrap(),
                &t["io.grad.stem.0.weight"],
                1e-8,
            );
        } else {
            assert_close(
                "torchvision eval features",
                &f,
                &t["io.eval_features"],
                1e-10,
            );
        }
    }
}
