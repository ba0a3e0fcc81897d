//! Run telemetry: metrics as JSON lines, a progress bar (hidden when stderr is not a terminal),
//! and loss curves drawn to SVG at the end of a run.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;

use crate::error::TrainError;

/// Appends one JSON object per line; also keeps the numeric series in memory for plotting.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
    series: BTreeMap<String, Vec<(f64, f64)>>,
}

impl MetricsLog {
    /// Opens (appending, so a resumed run continues the same file) `path`.
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| TrainError::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            out: BufWriter::new(f),
            series: BTreeMap::new(),
        })
    }

    /// Writes a record; numeric fields are also kept as series against `x_key` (e.g. "step").
    pub fn log(
        &mut self,
        x_key: &str,
        record: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), TrainError> {
        let line = serde_json::to_string(record)
            .map_err(|e| TrainError::other("serialising metrics", e))?;
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| TrainError::io(&self.path, e))?;
        if let Some(x) = record.get(x_key).and_then(|v| v.as_f64()) {
            for (k, v) in record {
                if k == x_key {
                    continue;
                }
                if let Some(y) = v.as_f64() {
                    self.series.entry(k.clone()).or_default().push((x, y));
                }
            }
        }
        Ok(())
    }

    /// The in-memory series of one key.
    pub fn series(&self, key: &str) -> Option<&[(f64, f64)]> {
        self.series.get(key).map(|v| v.as_slice())
    }
}

/// Reads the numeric series of a metrics JSONL file (e.g. after a resumed run) for `keys`, against `x_key`.
pub fn read_series(
    path: &Path,
    x_key: &str,
    keys: &[&str],
) -> Result<BTreeMap<String, Vec<(f64, f64)>>, TrainError> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for (lineno, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| TrainError::other(format!("{}:{}", path.display(), lineno + 1), e))?;
        let Some(x) = v.get(x_key).and_then(|x| x.as_f64()) else {
            continue;
        };
        for k in keys {
            if let Some(y) = v.get(*k).and_then(|y| y.as_f64()) {
                out.entry((*k).to_string()).or_default().push((x, y));
            }
        }
    }
    Ok(out)
}

/// Draws one line per series (shared x axis) into an SVG file.
pub fn plot_series(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &BTreeMap<String, Vec<(f64, f64)>>,
) -> Result<(), TrainError> {
    let pts: Vec<(f64, f64)> = series
        .values()
        .flatten()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    if pts.is_empty() {
        return Ok(());
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in &pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart.configure_mesh().x_desc(x_label).draw()?;
        for (i, (name, s)) in series.iter().enumerate() {
            let colour = Palette99::pick(i).to_rgba();
            let data: Vec<(f64, f64)> = s
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect();
            chart
                .draw_series(LineSeries::new(data, colour.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| TrainError::other(format!("drawing {}", path.display()), e))
}

/// Progress bar over the optimiser steps of a run; hidden when stderr is not a terminal.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `total` steps, starting at `pos`.
    pub fn new(total: usize, pos: usize, quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(total as u64)
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} eta {eta} {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_position(pos as u64);
        Self { bar }
    }

    /// Advances one step and shows the latest loss terms, lr and throughput.
    pub fn step(&self, msg: String) {
        self.bar.set_message(msg);
        self.bar.inc(1);
    }

    /// Prints a line above the bar (or plainly when hidden).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trip_and_plot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("m.jsonl");
        let mut log = MetricsLog::open(&p).expect("open");
        for step in 0..5 {
            let mut r = serde_json::Map::new();
            r.insert("step".into(), step.into());
            r.insert("loss".into(), (1.0 / (step as f64 + 1.0)).into());
            r.insert("note".into(), "x".into());
            log.log("step", &r).expect("log");
        }
        assert_eq!(log.series("loss").map(|s| s.len()), Some(5));
        let s = read_series(&p, "step", &["loss"]).expect("read");
        assert_eq!(s["loss"][4], (4.0, 0.2));
        let svg = dir.path().join("loss.svg");
        plot_series(&svg, "loss", "step", &s).expect("plot");
        let text = std::fs::read_to_string(&svg).expect("svg");
        assert!(
            text.contains("<svg") && text.contains("polyline"),
            "no line drawn"
        );
    }
}
