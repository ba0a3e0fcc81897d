//! The frame resize against Pillow's own output: the RepLAI reference scales frames with
//! `PIL.Image.resize` (BILINEAR for training, NEAREST for evaluation), so ours must give the same
//! bytes. Golden data: tests/fixtures/resize/pil_resize.json, made by `make_pil_resize.py` there
//! (Pillow 11.3.0, the horizontal-first order of Pillow before 13) from seeded random images.

use av_video::{resize, resize_crop};
use ndarray::{s, Array3};
use serde_json::Value;

fn fixture() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/resize/pil_resize.json");
    let text = std::fs::read_to_string(&path).expect("read pil_resize.json");
    serde_json::from_str(&text).expect("parse pil_resize.json")
}

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn image(v: &Value, h: usize, w: usize) -> Array3<u8> {
    let data = bytes(v["rgb"].as_str().expect("rgb"));
    Array3::from_shape_vec((h, w, 3), data).expect("image shape")
}

fn dim(v: &Value, key: &str) -> usize {
    v[key].as_u64().expect("size") as usize
}

#[test]
fn resize_matches_pillow_exactly() {
    let fx = fixture();
    let cases = fx["cases"].as_array().expect("cases");
    assert!(cases.len() >= 6);
    for case in cases {
        let input = &fx["inputs"][case["input"].as_str().expect("input")];
        let src = image(input, dim(input, "h"), dim(input, "w"));
        let (h, w) = (dim(case, "h"), dim(case, "w"));
        let want = image(case, h, w);
        let bilinear = case["filter"] == "bilinear";
        let got = resize(src.view(), h, w, bilinear);
        let differ = got.iter().zip(want.iter()).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ,
            0,
            "{} {}x{} {}: {differ} of {} values differ from Pillow",
            case["input"],
            w,
            h,
            case["filter"],
            want.len()
        );
        // The crop-only path the sampler uses gives the same window, mirrored or not.
        if h > 6 && w > 6 {
            let window = (2, 3, h - 5, w - 6);
            let part = resize_crop(src.view(), h, w, window, true, bilinear);
            let expect = want.slice(s![2..h - 3, 3..w - 3;-1, ..]).to_owned();
            assert_eq!(part, expect, "crop window of {w}x{h}");
        }
    }
}
