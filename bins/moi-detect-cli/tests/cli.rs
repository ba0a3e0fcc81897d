//! End-to-end tests of the `moi-detect` binary on WAV files written from the MoI fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{anyhow, ensure, Context, Result};
use safetensors::SafeTensors;
use serde_json::Value;

const CASES: [&str; 4] = [
    "clicks_44k",
    "chirp_knocks_44k",
    "silence_burst_44k",
    "clicks_48k",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/moi-detect/tests/fixtures/moi")
}

/// `(input samples, sample rate, fixture json)`.
fn load(name: &str) -> Result<(Vec<f32>, u32, Value)> {
    let bytes = std::fs::read(fixtures().join(format!("{name}.safetensors")))?;
    let st = SafeTensors::deserialize(&bytes)?;
    let x = st
        .tensor("input")?
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let meta: Value = serde_json::from_str(&std::fs::read_to_string(
        fixtures().join(format!("{name}.json")),
    )?)?;
    let sr = meta["sample_rate"]
        .as_u64()
        .ok_or_else(|| anyhow!("sample_rate"))? as u32;
    Ok((x, sr, meta))
}

fn curve_f64(name: &str) -> Result<Vec<f64>> {
    let bytes = std::fs::read(fixtures().join(format!("{name}.safetensors")))?;
    let st = SafeTensors::deserialize(&bytes)?;
    Ok(st
        .tensor("curve_f64")?
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect())
}

/// A float WAV written by hand, so the tests can also produce files av-audio refuses to write
/// (NaN samples) and truncated ones.
fn float_wav(samples: &[f32], sr: u32) -> Vec<u8> {
    let data_len = (samples.len() * 4) as u32;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data_len).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    v.extend_from_slice(&3u16.to_le_bytes());
    v.extend_from_slice(&1u16.to_le_bytes());
    v.extend_from_slice(&sr.to_le_bytes());
    v.extend_from_slice(&(sr * 4).to_le_bytes());
    v.extend_from_slice(&4u16.to_le_bytes());
    v.extend_from_slice(&32u16.to_le_bytes());
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        v.extend_from_slice(&s.to_le_bytes());
    }
    v
}

fn run(args: &[&str]) -> Result<Output> {
    Command::new(env!("CARGO_BIN_EXE_moi-detect"))
        .args(args)
        .output()
        .context("running moi-detect")
}

fn json_lines(out: &Output) -> Result<Vec<Value>> {
    String::from_utf8(out.stdout.clone())?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("bad JSON line {l}")))
        .collect()
}

fn ints(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[test]
fn reference_moments_from_wav_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut paths = Vec::new();
    for name in CASES {
        let (x, sr, _) = load(name)?;
        let p = dir.path().join(format!("{name}.wav"));
        av_audio::write_wav(&p, &x, sr)?;
        paths.push(p);
    }
    // One process per file, and all files in one process with one and two jobs.
    for (name, p) in CASES.iter().zip(&paths) {
        let (x, sr, meta) = load(name)?;
        let out = run(&[p.to_str().ok_or_else(|| anyhow!("path"))?])?;
        ensure!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = json_lines(&out)?;
        ensure!(lines.len() == 1);
        let r = &lines[0];
        let keys: Vec<&String> = r
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        ensure!(
            keys == ["duration_s", "file", "moments", "sample_rate"],
            "{keys:?}"
        );
        ensure!(r["file"] == p.display().to_string());
        ensure!(r["sample_rate"] == sr);
        ensure!(r["duration_s"].as_f64() == Some(x.len() as f64 / f64::from(sr)));
        let got: Vec<u64> = r["moments"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["index"].as_u64()).collect())
            .unwrap_or_default();
        ensure!(
            got == ints(&meta["f64"]["valid"]["peaks"]),
            "{name}: {got:?}"
        );
        let times: Vec<f64> = r["moments"]
            .as_array()
            .map(|a| a.iter().filter_map(|m| m["time_s"].as_f64()).collect())
            .unwrap_or_default();
        let expected: Vec<f64> = meta["f64"]["valid"]["peak_times_s"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        ensure!(
            times.len() == expected.len(),
            "{name}: {times:?} vs {expected:?}"
        );
        for (t, e) in times.iter().zip(&expected) {
            ensure!((t - e).abs() <= 1e-12, "{name}: {t} vs {e}");
        }
        for m in r["moments"].as_array().into_iter().flatten() {
            let keys: Vec<&String> = m
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            ensure!(keys == ["index", "prominence", "time_s"]);
            ensure!(m["prominence"].as_f64().is_some_and(|p| p >= 1.0));
        }
    }
    let all: Vec<&str> = paths.iter().filter_map(|p| p.to_str()).collect();
    let one = run(&[&["--jobs", "1"], all.as_slice()].concat())?;
    let two = run(&[&["--jobs", "2"], all.as_slice()].concat())?;
    ensure!(one.status.success() && two.status.success());
    ensure!(one.stdout == two.stdout, "output must not depend on --jobs");
    ensure!(json_lines(&one)?.len() == 4);
    Ok(())
}

#[test]
fn curve_output_and_csv() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let name = "chirp_knocks_44k";
    let (x, sr, meta) = load(name)?;
    let p = dir.path().join("a,b.wav");
    av_audio::write_wav(&p, &x, sr)?;
    let ps = p.to_str().ok_or_else(|| anyhow!("path"))?;
    let out = run(&["--curve", ps])?;
    ensure!(out.status.success());
    let r = &json_lines(&out)?[0];
    let curve: Vec<f64> = r["curve"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let reference = curve_f64(name)?;
    ensure!(curve.len() == reference.len());
    let err = curve
        .iter()
        .zip(&reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    ensure!(err <= 1e-9, "curve error {err}");
    let times = r["curve_times_s"]
        .as_array()
        .ok_or_else(|| anyhow!("curve_times_s"))?;
    ensure!(times.len() == curve.len());
    ensure!(times[1].as_f64() == Some(352.0 / 44_100.0));

    let out = run(&["--format", "csv", ps])?;
    ensure!(out.status.success());
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    ensure!(lines.next() == Some("file,time_s,index,prominence"));
    let rows: Vec<&str> = lines.collect();
    let valid = ints(&meta["f64"]["valid"]["peaks"]);
    ensure!(rows.len() == valid.len(), "{rows:?}");
    for (row, k) in rows.iter().zip(&valid) {
        // The comma in the file name is quoted.
        let rest = row
            .strip_prefix(&format!("\"{ps}\","))
            .ok_or_else(|| anyhow!("row {row}"))?;
        let fields: Vec<&str> = rest.split(',').collect();
        ensure!(fields[1] == k.to_string(), "{row}");
    }

    let out = run(&["--format", "csv", "--curve", ps])?;
    let text = String::from_utf8(out.stdout)?;
    ensure!(text.lines().next() == Some("file,index,time_s,curve,moment,prominence"));
    ensure!(text.lines().count() == 1 + reference.len());
    let flagged = text
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(5) == Some("1"))
        .count();
    ensure!(flagged == valid.len());
    Ok(())
}

#[test]
fn bad_inputs_are_reported_and_skipped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (x, sr, meta) = load("silence_burst_44k")?;
    let good = float_wav(&x, sr);
    std::fs::write(d.join("01_good.wav"), &good)?;
    std::fs::write(d.join("02_empty.wav"), b"")?;
    std::fs::write(d.join("03_zero_samples.wav"), float_wav(&[], sr))?;
    std::fs::write(
        d.join("04_silent.wav"),
        float_wav(&vec![0.0; 3 * 44_100], sr),
    )?;
    let mut nan = x.clone();
    nan[1000] = f32::NAN;
    std::fs::write(d.join("05_nan.wav"), float_wav(&nan, sr))?;
    let mut inf = x.clone();
    inf[5] = f32::NEG_INFINITY;
    std::fs::write(d.join("06_inf.wav"), float_wav(&inf, sr))?;
    std::fs::write(d.join("07_truncated.wav"), &good[..good.len() / 3])?;
    let mut corrupt = good[..44].to_vec();
    corrupt.extend((0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    corrupt[20] = 0x55; // unknown format tag
    std::fs::write(d.join("08_corrupt.wav"), &corrupt)?;
    std::fs::write(d.join("09_text.txt"), "not audio at all\n")?;
    std::fs::write(
        d.join("10_fake.mp4"),
        b"\x00\x00\x00\x18ftypmp42garbage-garbage",
    )?;
    std::fs::create_dir(d.join("sub"))?;
    std::fs::write(d.join("sub/11_good.wav"), &good)?;
    let missing = d.join("does_not_exist.wav");

    let dir_s = d.to_str().ok_or_else(|| anyhow!("path"))?;
    let missing_s = missing.to_str().ok_or_else(|| anyhow!("path"))?;
    let out = run(&[dir_s, missing_s])?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(
        out.status.success(),
        "without --strict bad files do not fail the run: {stderr}"
    );
    let lines = json_lines(&out)?;
    let files: Vec<String> = lines
        .iter()
        .filter_map(|l| l["file"].as_str().map(String::from))
        .collect();
    let good_names = ["01_good.wav", "04_silent.wav", "sub/11_good.wav"];
    for g in good_names {
        ensure!(
            files.iter().any(|f| f.ends_with(g)),
            "{g} missing from {files:?}\n{stderr}"
        );
    }
    for l in &lines {
        let f = l["file"].as_str().unwrap_or_default();
        let moments = ints(&Value::Array(
            l["moments"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|m| m["index"].clone())
                .collect(),
        ));
        if f.ends_with("good.wav") {
            ensure!(moments == ints(&meta["f64"]["valid"]["peaks"]), "{f}");
        } else {
            ensure!(
                moments.is_empty(),
                "{f}: silence or no samples has no moments"
            );
        }
    }
    // Every bad input is named on stderr with a reason; zero samples may be either.
    for bad in [
        "02_empty.wav",
        "05_nan.wav",
        "06_inf.wav",
        "07_truncated.wav",
        "08_corrupt.wav",
        "09_text.txt",
        "10_fake.mp4",
        "does_not_exist.wav",
    ] {
        let line = stderr
            .lines()
            .find(|l| l.contains(bad))
            .ok_or_else(|| anyhow!("{bad} not reported:\n{stderr}"))?;
        ensure!(
            line.len() > bad.len() + d.display().to_string().len() + 15,
            "no reason given: {line}"
        );
        ensure!(!files.iter().any(|f| f.ends_with(bad)));
    }
    let zero = files.iter().any(|f| f.ends_with("03_zero_samples.wav"))
        || stderr.contains("03_zero_samples.wav");
    ensure!(zero, "zero-sample file neither processed nor reported");
    ensure!(!stderr.contains("panicked"), "{stderr}");

    let strict = run(&["--strict", dir_s])?;
    ensure!(
        strict.status.code() == Some(1),
        "--strict must fail: {:?}",
        strict.status
    );
    ensure!(
        json_lines(&strict)?.len() == lines.len(),
        "--strict still reports the good files"
    );
    let ok_only = run(&[
        "--strict",
        d.join("01_good.wav").to_str().unwrap_or_default(),
    ])?;
    ensure!(ok_only.status.success());
    Ok(())
}

#[test]
fn plots() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (x, sr, _) = load("clicks_48k")?;
    let wav = dir.path().join("clicks.wav");
    av_audio::write_wav(&wav, &x, sr)?;
    let w = wav.to_str().ok_or_else(|| anyhow!("path"))?;
    let svg = dir.path().join("plot.svg");
    let png = dir.path().join("plot.png");
    for target in [&svg, &png] {
        let out = run(&["--plot", target.to_str().unwrap_or_default(), w])?;
        ensure!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = std::fs::read_to_string(&svg)?;
    ensure!(s.contains("<svg") && s.contains("time (s)") && s.contains("valid moment"));
    let p = std::fs::read(&png)?;
    ensure!(p.starts_with(b"\x89PNG\r\n\x1a\n") && p.len() > 10_000);

    // Several inputs: --plot is a directory.
    let wav2 = dir.path().join("second.wav");
    av_audio::write_wav(&wav2, &x[..48_000], sr)?;
    let plots = dir.path().join("plots");
    let out = run(&[
        "--plot",
        plots.to_str().unwrap_or_default(),
        "--plot-format",
        "png",
        w,
        wav2.to_str().unwrap_or_default(),
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(plots.join("clicks.wav.png").is_file() && plots.join("second.wav.png").is_file());
    // ... and a single image name with several inputs is a usage error.
    let out = run(&[
        "--plot",
        svg.to_str().unwrap_or_default(),
        w,
        wav2.to_str().unwrap_or_default(),
    ])?;
    ensure!(out.status.code() == Some(2));
    Ok(())
}
