//! The reference detector against the scipy float64 pipeline on the four `fixtures/moi/` cases,
//! and the streaming detectors against the offline one.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, ensure, Context, Result};
use moi_detect::{
    analyze, detect, find_peaks, log_spectrogram, MoiConfig, PeakOptions, Range, StreamingDetector,
    WindowedDetector,
};
use safetensors::SafeTensors;
use serde_json::Value;

const CASES: [&str; 4] = [
    "clicks_44k",
    "chirp_knocks_44k",
    "silence_burst_44k",
    "clicks_48k",
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/moi")
}

struct Case {
    input: Vec<f32>,
    curve: Vec<f64>,
    meta: Value,
    sample_rate: u32,
}

fn load(name: &str) -> Result<Case> {
    let bytes = std::fs::read(dir().join(format!("{name}.safetensors")))?;
    let st = SafeTensors::deserialize(&bytes).with_context(|| format!("{name}.safetensors"))?;
    let input = st
        .tensor("input")?
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let curve = st
        .tensor("curve_f64")?
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect();
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(
        dir().join(format!("{name}.json")),
    )?)?;
    let sample_rate = meta["sample_rate"]
        .as_u64()
        .ok_or_else(|| anyhow!("sample_rate"))? as u32;
    Ok(Case {
        input,
        curve,
        meta,
        sample_rate,
    })
}

fn ints(v: &Value) -> Vec<usize> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().map(|u| u as usize))
                .collect()
        })
        .unwrap_or_default()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

#[test]
fn reference_curve_peaks_and_valid_moments() -> Result<()> {
    for name in CASES {
        let c = load(name)?;
        let a = analyze(&c.input, c.sample_rate, &MoiConfig::default())?;
        ensure!(
            a.curve.len() == c.curve.len(),
            "{name}: {} frames, scipy {}",
            a.curve.len(),
            c.curve.len()
        );
        let err = a
            .curve
            .iter()
            .zip(&c.curve)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        eprintln!("{name}: max |curve - curve_f64| = {err:e}");
        ensure!(err <= 1e-9, "{name}: curve differs by {err:e}");

        let r = &c.meta["f64"];
        let peaks: Vec<usize> = a.peaks.iter().map(|m| m.index).collect();
        ensure!(
            peaks == ints(&r["peaks"]),
            "{name}: peaks {peaks:?} vs {:?}",
            r["peaks"]
        );
        let lb: Vec<usize> = a.peaks.iter().map(|m| m.left_base).collect();
        let rb: Vec<usize> = a.peaks.iter().map(|m| m.right_base).collect();
        ensure!(
            lb == ints(&r["properties"]["left_bases"]),
            "{name}: left bases {lb:?}"
        );
        ensure!(
            rb == ints(&r["properties"]["right_bases"]),
            "{name}: right bases {rb:?}"
        );
        for (m, p) in a.peaks.iter().zip(floats(&r["properties"]["prominences"])) {
            ensure!(
                (m.prominence - p).abs() <= 1e-9,
                "{name}: prominence {} vs {p}",
                m.prominence
            );
        }
        for (m, t) in a.peaks.iter().zip(floats(&r["peak_times_s"])) {
            // The fixture's times are 1 ulp off scipy's own `t` in places; ours are scipy's
            // `(128 + 224 k) / fs` exactly (checked below for the last frame).
            ensure!(
                (m.time_s - t).abs() <= 1e-12,
                "{name}: time {} vs {t}",
                m.time_s
            );
        }
        let valid: Vec<usize> = a.valid.iter().map(|m| m.index).collect();
        ensure!(
            valid == ints(&r["valid"]["peaks"]),
            "{name}: valid {valid:?}"
        );
        ensure!(a.duration_s == r["valid"]["D_s"].as_f64().unwrap_or(f64::NAN));
        ensure!(detect(&c.input, c.sample_rate, &MoiConfig::default())? == a.valid);
        // Times of the scipy frame grid.
        let t_last = (128.0 + 224.0 * (a.times_s.len() - 1) as f64) / f64::from(c.sample_rate);
        ensure!(a.times_s.last() == Some(&t_last));
    }
    Ok(())
}

#[test]
fn curve_matches_scipy_peaks_when_searched_with_find_peaks() -> Result<()> {
    // The scipy curve itself through our find_peaks gives scipy's peaks (separates curve and
    // peak-finder errors).
    for name in CASES {
        let c = load(name)?;
        let opts = PeakOptions {
            distance: Some(10.0),
            prominence: Some(Range::at_least(1.0)),
            ..Default::default()
        };
        let p = find_peaks(&c.curve, &opts)?;
        ensure!(p.peaks == ints(&c.meta["f64"]["peaks"]), "{name}");
    }
    Ok(())
}

#[test]
fn streaming_equals_offline_for_any_chunking() -> Result<()> {
    let cfg = MoiConfig::default();
    for name in ["chirp_knocks_44k", "clicks_48k"] {
        let c = load(name)?;
        let offline = analyze(&c.input, c.sample_rate, &cfg)?;
        for chunk in [
            1usize,
            7,
            100,
            223,
            224,
            225,
            255,
            256,
            257,
            1000,
            4097,
            65_537,
            c.input.len(),
        ] {
            let mut s = StreamingDetector::new(c.sample_rate, cfg)?;
            for part in c.input.chunks(chunk) {
                s.push(part)?;
                s.push(&[])?;
            }
            // Only the not-yet-framed tail of the audio is kept.
            ensure!(s.buffered_bytes() < (offline.curve.len() * 129 + 256) * 8 + 4 * 256);
            let streamed = s.finish()?;
            ensure!(
                streamed == offline,
                "{name}: chunk {chunk} differs from offline"
            );
        }
    }
    Ok(())
}

#[test]
fn streaming_short_and_empty_inputs() -> Result<()> {
    let cfg = MoiConfig::default();
    for n in [0usize, 1, 100, 255, 256, 257, 480] {
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        let offline = analyze(&x, 44_100, &cfg)?;
        let mut s = StreamingDetector::new(44_100, cfg)?;
        for part in x.chunks(33) {
            s.push(part)?;
        }
        ensure!(s.finish()? == offline, "n = {n}");
        ensure!(offline.peaks.is_empty());
        let expected_frames = match n {
            0 => 0,
            1..=255 => 1,
            _ => (n - 256) / 224 + 1,
        };
        ensure!(offline.curve.len() == expected_frames, "n = {n}");
    }
    Ok(())
}

#[test]
fn nan_and_inf_are_errors_with_position() -> Result<()> {
    let mut x = vec![0.1f32; 5000];
    x[4321] = f32::NAN;
    let e = detect(&x, 44_100, &MoiConfig::default())
        .err()
        .ok_or_else(|| anyhow!("NaN accepted"))?;
    ensure!(e.to_string().contains("4321"), "{e}");
    x[4321] = f32::INFINITY;
    ensure!(detect(&x, 44_100, &MoiConfig::default()).is_err());
    let mut s = StreamingDetector::new(44_100, MoiConfig::default())?;
    s.push(&x[..4000])?;
    let e = s
        .push(&x[4000..])
        .err()
        .ok_or_else(|| anyhow!("Inf accepted"))?;
    ensure!(e.to_string().contains("4321"), "{e}");
    ensure!(
        detect(&x[..10], 0, &MoiConfig::default()).is_err(),
        "zero sample rate"
    );
    Ok(())
}

#[test]
fn silence_has_no_moments() -> Result<()> {
    let x = vec![0.0f32; 44_100 * 3];
    let a = analyze(&x, 44_100, &MoiConfig::default())?;
    ensure!(a.peaks.is_empty() && a.valid.is_empty());
    ensure!(
        a.curve.iter().all(|&v| v == 0.0),
        "constant rows give z = 0 exactly"
    );
    Ok(())
}

/// The windowed detector's definition, computed naively (two-pass statistics per window,
/// `find_peaks` with `wlen = 2h + 1`).
fn windowed_reference(
    x: &[f32],
    sr: u32,
    cfg: &MoiConfig,
    half: usize,
) -> Result<Vec<(usize, f64)>> {
    let spec = log_spectrogram(x, sr, cfg)?;
    let (t, nb) = (spec.n_frames, spec.n_bins);
    let mut curve = vec![0.0; t];
    for (k, ck) in curve.iter_mut().enumerate() {
        let (lo, hi) = (k.saturating_sub(half), (k + half + 1).min(t));
        let n = (hi - lo) as f64;
        let mut acc = 0.0;
        for b in 0..nb {
            let mean = (lo..hi).map(|j| spec.data[j * nb + b]).sum::<f64>() / n;
            let var = (lo..hi)
                .map(|j| (spec.data[j * nb + b] - mean).powi(2))
                .sum::<f64>()
                / n;
            acc += (spec.data[k * nb + b] - mean) / (var.sqrt() + cfg.z_eps);
        }
        *ck = acc / nb as f64;
    }
    let opts = PeakOptions {
        distance: Some(cfg.distance),
        prominence: Some(Range::at_least(cfg.prominence)),
        wlen: Some((2 * half + 1) as f64),
        ..Default::default()
    };
    let p = find_peaks(&curve, &opts)?;
    let d = x.len() as f64 / f64::from(sr);
    let (lo_t, hi_t) = cfg.valid_range(d);
    let prom = p.prominences.unwrap_or_default();
    Ok(p.peaks
        .iter()
        .zip(prom)
        .filter(|(&k, _)| {
            let tk = (128.0 + 224.0 * k as f64) / f64::from(sr);
            lo_t <= tk && tk <= hi_t
        })
        .map(|(&k, pr)| (k, pr))
        .collect())
}

fn run_windowed(
    x: &[f32],
    sr: u32,
    cfg: MoiConfig,
    window_s: f64,
    chunk: usize,
) -> Result<Vec<moi_detect::Moment>> {
    let mut w = WindowedDetector::new(sr, cfg, window_s)?;
    let mut out = Vec::new();
    for part in x.chunks(chunk) {
        out.extend(w.push(part)?);
    }
    out.extend(w.finish()?);
    Ok(out)
}

#[test]
fn windowed_equals_offline_when_the_window_covers_the_file() -> Result<()> {
    let cfg = MoiConfig::default();
    for name in CASES {
        let c = load(name)?;
        let offline = analyze(&c.input, c.sample_rate, &cfg)?;
        let d = c.input.len() as f64 / f64::from(c.sample_rate);
        for chunk in [1000usize, 4097, c.input.len()] {
            let got = run_windowed(&c.input, c.sample_rate, cfg, 2.5 * d, chunk)?;
            ensure!(
                got.len() == offline.valid.len(),
                "{name}/{chunk}: {got:?} vs {:?}",
                offline.valid
            );
            for (g, o) in got.iter().zip(&offline.valid) {
                ensure!(
                    g.index == o.index
                        && g.left_base == o.left_base
                        && g.right_base == o.right_base,
                    "{name}"
                );
                ensure!(g.time_s == o.time_s);
                ensure!(
                    (g.prominence - o.prominence).abs() < 1e-9,
                    "{name}: {} vs {}",
                    g.prominence,
                    o.prominence
                );
            }
        }
    }
    Ok(())
}

#[test]
fn windowed_matches_its_naive_definition_and_ignores_chunking() -> Result<()> {
    let cfg = MoiConfig::default();
    for name in ["clicks_44k", "clicks_48k", "chirp_knocks_44k"] {
        let c = load(name)?;
        let window_s = 1.5;
        let w = WindowedDetector::new(c.sample_rate, cfg, window_s)?;
        let half = w.half_window_frames();
        let expected = windowed_reference(&c.input, c.sample_rate, &cfg, half)?;
        let mut first: Option<Vec<moi_detect::Moment>> = None;
        for chunk in [97usize, 2048, 44_100] {
            let got = run_windowed(&c.input, c.sample_rate, cfg, window_s, chunk)?;
            let pairs: Vec<usize> = got.iter().map(|m| m.index).collect();
            let exp: Vec<usize> = expected.iter().map(|e| e.0).collect();
            ensure!(pairs == exp, "{name}/{chunk}: {pairs:?} vs naive {exp:?}");
            for (g, e) in got.iter().zip(&expected) {
                ensure!(
                    (g.prominence - e.1).abs() < 1e-8,
                    "{name}: {} vs {}",
                    g.prominence,
                    e.1
                );
            }
            match &first {
                None => first = Some(got),
                Some(f) => ensure!(*f == got, "{name}: chunking changed the result"),
            }
        }
    }
    Ok(())
}
