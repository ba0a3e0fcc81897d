//! `find_peaks` against every run of the scipy fixtures in `fixtures/peaks/`.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use moi_detect::{find_peaks, PeakOptions, PeakWarning, Peaks, Range};
use serde_json::Value;

fn fixtures_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/peaks")
}

fn opt_f64(v: &Value) -> Result<Option<f64>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => Ok(Some(n.as_f64().ok_or_else(|| anyhow!("bad number {n}"))?)),
        other => bail!("expected a number or null, got {other}"),
    }
}

/// scipy condition argument: `None`, a number (lower bound) or a `(min, max)` pair.
fn condition(v: &Value) -> Result<Option<Range>> {
    match v {
        Value::Null => Ok(None),
        Value::Number(_) => Ok(Some(Range::at_least(opt_f64(v)?.unwrap_or(0.0)))),
        Value::Array(a) if a.len() == 2 => Ok(Some(Range {
            min: opt_f64(&a[0])?,
            max: opt_f64(&a[1])?,
        })),
        other => bail!("bad condition {other}"),
    }
}

fn options(params: &Value) -> Result<PeakOptions> {
    Ok(PeakOptions {
        height: condition(&params["height"])?,
        threshold: condition(&params["threshold"])?,
        distance: opt_f64(&params["distance"])?,
        prominence: condition(&params["prominence"])?,
        width: condition(&params["width"])?,
        wlen: opt_f64(&params["wlen"])?,
        rel_height: opt_f64(&params["rel_height"])?.unwrap_or(0.5),
        plateau_size: condition(&params["plateau_size"])?,
    })
}

fn ints(v: &Value) -> Result<Vec<usize>> {
    v.as_array()
        .ok_or_else(|| anyhow!("expected an array"))?
        .iter()
        .map(|x| {
            x.as_u64()
                .map(|u| u as usize)
                .ok_or_else(|| anyhow!("bad index {x}"))
        })
        .collect()
}

fn floats(v: &Value) -> Result<Vec<f64>> {
    v.as_array()
        .ok_or_else(|| anyhow!("expected an array"))?
        .iter()
        .map(|x| x.as_f64().ok_or_else(|| anyhow!("bad float {x}")))
        .collect()
}

fn check_ints(name: &str, got: &Option<Vec<usize>>, props: &Value) -> Result<()> {
    match (got, props.get(name)) {
        (None, None) => Ok(()),
        (Some(g), Some(e)) => {
            let e = ints(e)?;
            if *g != e {
                bail!("{name}: got {g:?}, scipy {e:?}");
            }
            Ok(())
        }
        (g, e) => bail!(
            "{name}: presence differs (ours {}, scipy {})",
            g.is_some(),
            e.is_some()
        ),
    }
}

/// Relative 1e-12 (the fixtures' README); we report how many values are not bit-identical.
fn check_floats(
    name: &str,
    got: &Option<Vec<f64>>,
    props: &Value,
    inexact: &mut usize,
) -> Result<()> {
    match (got, props.get(name)) {
        (None, None) => Ok(()),
        (Some(g), Some(e)) => {
            let e = floats(e)?;
            if g.len() != e.len() {
                bail!("{name}: {} values, scipy {}", g.len(), e.len());
            }
            for (i, (a, b)) in g.iter().zip(&e).enumerate() {
                if a != b {
                    *inexact += 1;
                    let tol = 1e-12 * a.abs().max(b.abs());
                    if (a - b).abs() > tol {
                        bail!("{name}[{i}]: got {a:e}, scipy {b:e}");
                    }
                }
            }
            Ok(())
        }
        (g, e) => bail!(
            "{name}: presence differs (ours {}, scipy {})",
            g.is_some(),
            e.is_some()
        ),
    }
}

fn compare(p: &Peaks, run: &Value, inexact: &mut usize) -> Result<()> {
    let expected = ints(&run["peaks"])?;
    if p.peaks != expected {
        bail!("peaks: got {:?}, scipy {:?}", p.peaks, expected);
    }
    let props = &run["properties"];
    check_ints("plateau_sizes", &p.plateau_sizes, props)?;
    check_ints("left_edges", &p.left_edges, props)?;
    check_ints("right_edges", &p.right_edges, props)?;
    check_ints("left_bases", &p.left_bases, props)?;
    check_ints("right_bases", &p.right_bases, props)?;
    check_floats("peak_heights", &p.peak_heights, props, inexact)?;
    check_floats("left_thresholds", &p.left_thresholds, props, inexact)?;
    check_floats("right_thresholds", &p.right_thresholds, props, inexact)?;
    check_floats("prominences", &p.prominences, props, inexact)?;
    check_floats("widths", &p.widths, props, inexact)?;
    check_floats("width_heights", &p.width_heights, props, inexact)?;
    check_floats("left_ips", &p.left_ips, props, inexact)?;
    check_floats("right_ips", &p.right_ips, props, inexact)?;
    let mut expected_warnings: Vec<PeakWarning> = Vec::new();
    for w in run["warnings"]
        .as_array()
        .ok_or_else(|| anyhow!("warnings"))?
    {
        let w = w.as_str().unwrap_or_default();
        let kind = if w.contains("prominence of 0") {
            PeakWarning::ZeroProminence
        } else if w.contains("width of 0") {
            PeakWarning::ZeroWidth
        } else {
            bail!("unknown warning {w}")
        };
        if !expected_warnings.contains(&kind) {
            expected_warnings.push(kind);
        }
    }
    let mut got = p.warnings.clone();
    got.sort_by_key(|w| *w as u8);
    expected_warnings.sort_by_key(|w| *w as u8);
    if got != expected_warnings {
        bail!("warnings: got {got:?}, scipy {expected_warnings:?}");
    }
    Ok(())
}

#[test]
fn every_scipy_run_agrees() -> Result<()> {
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("INDEX.json"))?)?;
    let mut files: Vec<_> = std::fs::read_dir(fixtures_dir())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("peaks_") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        30,
        "expected the 30 signals of the fixture set"
    );
    let (mut checked, mut tie_rightmost, mut skipped, mut inexact) = (0, 0, 0, 0usize);
    let mut failures = Vec::new();
    for path in &files {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        let x = floats(&case["x"])?;
        for run in case["runs"].as_array().ok_or_else(|| anyhow!("runs"))? {
            let label = format!("{}/{}", case["name"].as_str().unwrap_or("?"), run["label"]);
            let tie = &run["distance_tie_check"];
            if tie["tie_sensitive"].as_bool() == Some(true) {
                if tie["scipy_matches_rightmost_first"].as_bool() != Some(true) {
                    // scipy's unstable argsort matches neither simple rule here.
                    skipped += 1;
                    continue;
                }
                tie_rightmost += 1;
            }
            let opts = options(&run["params"])?;
            match find_peaks(&x, &opts) {
                Ok(p) => {
                    if let Err(e) = compare(&p, run, &mut inexact) {
                        failures.push(format!("{label}: {e}"));
                    }
                }
                Err(e) => failures.push(format!("{label}: error {e}")),
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // 390 runs: 2 tie-sensitive runs match no simple tie rule (int_walk_1e4), the other 9
    // tie-sensitive ones match "rightmost first", which is this crate's rule.
    assert_eq!(checked + skipped, 390);
    assert_eq!(skipped, 2);
    assert_eq!(tie_rightmost, 9);
    let n_index = index["cases"].as_array().map_or(0, |c| c.len());
    assert!(n_index > 0, "INDEX.json lists the cases");
    eprintln!("checked {checked} runs ({tie_rightmost} tie-sensitive), skipped {skipped}, {inexact} float values within 1e-12 but not bit-identical");
    Ok(())
}

#[test]
fn invalid_options_are_errors() {
    let x = [0.0, 1.0, 0.0];
    for opts in [
        PeakOptions {
            distance: Some(0.5),
            ..Default::default()
        },
        PeakOptions {
            distance: Some(f64::NAN),
            ..Default::default()
        },
        PeakOptions {
            prominence: Some(Range::any()),
            wlen: Some(1.0),
            ..Default::default()
        },
        PeakOptions {
            width: Some(Range::any()),
            rel_height: -0.1,
            ..Default::default()
        },
    ] {
        assert!(find_peaks(&x, &opts).is_err(), "{opts:?}");
    }
}

#[test]
fn nan_samples_are_never_peaks() -> Result<()> {
    let x = [0.0, f64::NAN, 0.0, 2.0, 1.0, f64::NAN, 3.0, 0.0];
    let p = find_peaks(
        &x,
        &PeakOptions {
            prominence: Some(Range::any()),
            ..Default::default()
        },
    )?;
    // x[6] follows a NaN, so `x[5] < x[6]` is false, exactly as in scipy.
    assert_eq!(p.peaks, vec![3]);
    assert_eq!(p.prominences, Some(vec![1.0]));
    Ok(())
}
