//! Width-0.25 AVID video/audio encoders and RepLAI heads against PyTorch outputs
//! (tests/fixtures/README.md): eval features, per-stage activations, heads, train-mode
//! outputs, BN running stats after one train pass, and first-conv weight gradients, in
//! float32 and float64.
// Tests panic on failure by design; unwrap is the clearest way to say so.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use av_models::checkpoint::{load_checkpoint, Format, AVID_VIDEO_PREFIX};
use av_models::{
    l2_normalize, load_into, strip_prefix, AudioCnn, AudioCnnConfig, R2Plus1d, R2Plus1dConfig,
    ReplaiHeads, ReplaiHeadsConfig,
};
use candle_core::{DType, Device, Module, ModuleT, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, load};

const NET_TOL: f64 = 1e-4;
const VIDEO_TRAIN_GRAD_TOL: f64 = 3e-4;
const BN_STATS_TOL: f64 = 1e-5;
/// float64 against PyTorch's float64: only summation order differs.
const F64_TOL: f64 = 1e-10;

fn video_weights() -> HashMap<String, Tensor> {
    let ckpt = load_checkpoint(common::fixture("video_avid_ckpt.pth")).expect("zip pth loads");
    assert_eq!(ckpt.format, Format::TorchZip);
    assert_eq!(ckpt.nested_key.as_deref(), Some("model"));
    strip_prefix(ckpt.tensors, AVID_VIDEO_PREFIX)
}

fn video_model(weights: &HashMap<String, Tensor>, dtype: DType) -> (VarMap, R2Plus1d) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let net = R2Plus1d::new(&R2Plus1dConfig::avid().with_width(0.25), vb).unwrap();
    let report = load_into(&varmap, weights, "").unwrap().strict().unwrap();
    assert_eq!(
        report.loaded,
        201 - 33,
        "every tensor but the 33 num_batches_tracked loads"
    );
    (varmap, net)
}

fn audio_model(dtype: DType) -> (VarMap, AudioCnn) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let net = AudioCnn::new(&AudioCnnConfig::default().with_width(0.25), vb).unwrap();
    load_into(&varmap, &load("audio.safetensors"), "")
        .unwrap()
        .strict()
        .unwrap();
    (varmap, net)
}

fn var(varmap: &VarMap, name: &str) -> candle_core::Var {
    varmap.data().lock().unwrap()[name].clone()
}

/// Gradient of sum(features^2) with respect to `conv1.0.weight`.
fn first_conv_grad(varmap: &VarMap, features: &Tensor) -> Tensor {
    let grads = features
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    grads
        .get(var(varmap, "conv1.0.weight").as_tensor())
        .expect("grad exists")
        .clone()
}

#[test]
fn video_eval_features_and_stages_match_pytorch() {
    let io = load("io.safetensors");
    let acts = load("activations_row0.safetensors");
    let (_vm, net) = video_model(&video_weights(), DType::F32);
    let x = &io["input.video"];
    let stages = net.forward_stages(x, false).unwrap();
    for (name, t) in &stages {
        let want = &acts[&format!("video.{name}")];
        assert_close(
            &format!("video.{name}"),
            &t.narrow(0, 0, 1).unwrap(),
            want,
            NET_TOL,
        );
    }
    assert_eq!(stages.len(), 7);
    let f = net.forward_t(x, false).unwrap();
    assert_close(
        "eval.video.features",
        &f,
        &io["eval.video.features"],
        NET_TOL,
    );

    // Odd sizes (intermediate 5 and 3) exercise the asymmetric padding paths.
    let xo = &io["input.video_odd"];
    let map = net.feature_map(xo, false).unwrap();
    assert_close(
        "eval.video_odd.conv5x",
        &map,
        &io["eval.video_odd.conv5x"],
        NET_TOL,
    );
    let f = net.forward_t(xo, false).unwrap();
    assert_close(
        "eval.video_odd.features",
        &f,
        &io["eval.video_odd.features"],
        NET_TOL,
    );
}

#[test]
fn video_float64_matches_pytorch_float64() {
    let io = load("io.safetensors");
    let (_vm, net) = video_model(&video_weights(), DType::F64);
    for (input, key) in [
        ("input.video", "eval.video.features_f64"),
        ("input.video_odd", "eval.video_odd.features_f64"),
    ] {
        let x = io[input].to_dtype(DType::F64).unwrap();
        assert_close(key, &net.forward_t(&x, false).unwrap(), &io[key], F64_TOL);
    }
}

#[test]
fn video_train_mode_outputs_running_stats_and_gradients() {
    let io = load("io.safetensors");
    let w = video_weights();
    // Train mode on input.video_odd: batch statistics, running stats updated once.
    let (vm, net) = video_model(&w, DType::F32);
    let f = net.forward_t(&io["input.video_odd"], true).unwrap();
    assert_close(
        "train.video.features",
        &f,
        &io["train.video.features"],
        NET_TOL,
    );
    for stat in ["running_mean", "running_var"] {
        let got = var(&vm, &format!("conv1.1.{stat}"));
        assert_close(
            &format!("train.video.conv1.1.{stat}"),
            got.as_tensor(),
            &io[&format!("train.video.conv1.1.{stat}")],
            BN_STATS_TOL,
        );
    }
    let g = first_conv_grad(&vm, &f);
    assert_close(
        "grad.video.conv1.0.weight.train",
        &g,
        &io["grad.video.conv1.0.weight.train"],
        VIDEO_TRAIN_GRAD_TOL,
    );

    // Eval-mode gradient on input.video.
    let (vm, net) = video_model(&w, DType::F32);
    let f = net.forward_t(&io["input.video"], false).unwrap();
    let g = first_conv_grad(&vm, &f);
    assert_close(
        "grad.video.conv1.0.weight.eval",
        &g,
        &io["grad.video.conv1.0.weight.eval"],
        NET_TOL,
    );
}

#[test]
fn video_float64_train_and_gradients_match_pytorch_float64() {
    let io = load("io.safetensors");
    let w = video_weights();
    let (vm, net) = video_model(&w, DType::F64);
    let x = io["input.video_odd"].to_dtype(DType::F64).unwrap();
    let f = net.forward_t(&x, true).unwrap();
    assert_close(
        "train.video.features_f64",
        &f,
        &io["train.video.features_f64"],
        F64_TOL,
    );
    let g = first_conv_grad(&vm, &f);
    assert_close(
        "grad.video.conv1.0.weight.train_f64",
        &g,
        &io["grad.video.conv1.0.weight.train_f64"],
        1e-8,
    );

    let (vm, net) = video_model(&w, DType::F64);
    let x = io["input.video"].to_dtype(DType::F64).unwrap();
    let g = first_conv_grad(&vm, &net.forward_t(&x, false).unwrap());
    assert_close(
        "grad.video.conv1.0.weight.eval_f64",
        &g,
        &io["grad.video.conv1.0.weight.eval_f64"],
        1e-8,
    );
}

#[test]
fn audio_eval_train_and_gradients_match_pytorch() {
    let io = load("io.safetensors");
    let acts = load("activations_row0.safetensors");
    let x = &io["input.audio"];

    let (vm, net) = audio_model(DType::F32);
    for (name, t) in net.forward_stages(x, false).unwrap() {
        assert_close(
            &format!("audio.{name}"),
            &t.narrow(0, 0, 1).unwrap(),
            &acts[&format!("audio.{name}")],
            NET_TOL,
        );
    }
    assert_close(
        "eval.audio.block4",
        &net.feature_map(x, false).unwrap(),
        &io["eval.audio.block4"],
        NET_TOL,
    );
    let f = net.forward_t(x, false).unwrap();
    assert_close(
        "eval.audio.features",
        &f,
        &io["eval.audio.features"],
        NET_TOL,
    );
    let g = first_conv_grad(&vm, &f);
    assert_close(
        "grad.audio.conv1.0.weight.eval",
        &g,
        &io["grad.audio.conv1.0.weight.eval"],
        NET_TOL,
    );

    let (vm, net) = audio_model(DType::F32);
    let f = net.forward_t(x, true).unwrap();
    assert_close(
        "train.audio.features",
        &f,
        &io["train.audio.features"],
        NET_TOL,
    );
    for stat in ["running_mean", "running_var"] {
        assert_close(
            &format!("train.audio.conv1.1.{stat}"),
            var(&vm, &format!("conv1.1.{stat}")).as_tensor(),
            &io[&format!("train.audio.conv1.1.{stat}")],
            BN_STATS_TOL,
        );
    }
    let g = first_conv_grad(&vm, &f);
    assert_close(
        "grad.audio.conv1.0.weight.train",
        &g,
        &io["grad.audio.conv1.0.weight.train"],
        NET_TOL,
    );

    // train.audio.block4 comes from a separate fresh copy.
    let (_vm, net) = audio_model(DType::F32);
    assert_close(
        "train.audio.block4",
        &net.feature_map(x, true).unwrap(),
        &io["train.audio.block4"],
        NET_TOL,
    );
}

#[test]
fn audio_float64_matches_pytorch_float64() {
    let io = load("io.safetensors");
    let x = io["input.audio"].to_dtype(DType::F64).unwrap();
    let (_vm, net) = audio_model(DType::F64);
    assert_close(
        "eval.audio.block4_f64",
        &net.feature_map(&x, false).unwrap(),
        &io["eval.audio.block4_f64"],
        F64_TOL,
    );
    assert_close(
        "eval.audio.features_f64",
        &net.forward_t(&x, false).unwrap(),
        &io["eval.audio.features_f64"],
        F64_TOL,
    );
    let (vm, net) = audio_model(DType::F64);
    let g = first_conv_grad(&vm, &net.forward_t(&x, false).unwrap());
    assert_close(
        "grad.audio.conv1.0.weight.eval_f64",
        &g,
        &io["grad.audio.conv1.0.weight.eval_f64"],
        1e-8,
    );
    let (vm, net) = audio_model(DType::F64);
    let f = net.forward_t(&x, true).unwrap();
    assert_close(
        "train.audio.features_f64",
        &f,
        &io["train.audio.features_f64"],
        F64_TOL,
    );
    let g = first_conv_grad(&vm, &f);
    assert_close(
        "grad.audio.conv1.0.weight.train_f64",
        &g,
        &io["grad.audio.conv1.0.weight.train_f64"],
        1e-8,
    );
}

#[test]
fn replai_heads_match_pytorch() {
    let io = load("io.safetensors");
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let cfg = ReplaiHeadsConfig {
        in_dim: 128,
        hidden: 128,
        out_dim: 32,
    };
    let heads = ReplaiHeads::new(&cfg, vb.pp("mlp")).unwrap();
    let report = load_into(&varmap, &load("heads.safetensors"), "")
        .unwrap()
        .strict()
        .unwrap();
    assert_eq!(report.loaded, 20);

    let x = &io["heads_in.x"];
    for (name, h) in [
        ("video_clr", &heads.video_clr),
        ("audio_clr", &heads.audio_clr),
        ("video_aot", &heads.video_aot),
        ("audio_aot", &heads.audio_aot),
    ] {
        assert_close(
            &format!("heads_out.{name}"),
            &h.forward(x).unwrap(),
            &io[&format!("heads_out.{name}")],
            NET_TOL,
        );
    }
    let d = heads.aot_diff.forward(&io["heads_in.d"]).unwrap();
    assert_close("heads_out.aot_diff", &d, &io["heads_out.aot_diff"], NET_TOL);

    // On the eval features, rows 0/1 of the video playing before/after.
    let hv = &io["eval.video.features"];
    let ha = &io["eval.audio.features"];
    let vclr = heads.video_clr.forward(hv).unwrap();
    assert_close("heads.video_clr", &vclr, &io["heads.video_clr"], NET_TOL);
    assert_close(
        "heads.video_clr_normalized",
        &l2_normalize(&vclr).unwrap(),
        &io["heads.video_clr_normalized"],
        NET_TOL,
    );
    let aclr = heads.audio_clr.forward(ha).unwrap();
    assert_close("heads.audio_clr", &aclr, &io["heads.audio_clr"], NET_TOL);
    assert_close(
        "heads.audio_clr_normalized",
        &l2_normalize(&aclr).unwrap(),
        &io["heads.audio_clr_normalized"],
        NET_TOL,
    );
    assert_close(
        "heads.audio_aot",
        &heads.audio_aot.forward(ha).unwrap(),
        &io["heads.audio_aot"],
        NET_TOL,
    );
    let g = heads.video_aot.forward(hv).unwrap();
    assert_close("heads.video_aot", &g, &io["heads.video_aot"], NET_TOL);
    let (g0, g1) = (g.narrow(0, 0, 1).unwrap(), g.narrow(0, 1, 1).unwrap());
    let fwd = heads.aot_diff.forward(&(&g1 - &g0).unwrap()).unwrap();
    let bwd = heads.aot_diff.forward(&(&g0 - &g1).unwrap()).unwrap();
    assert_close(
        "heads.aot_diff_fwd",
        &fwd,
        &io["heads.aot_diff_fwd"],
        NET_TOL,
    );
    assert_close(
        "heads.aot_diff_bwd",
        &bwd,
        &io["heads.aot_diff_bwd"],
        NET_TOL,
    );
}
