//! `--plot`: the log spectrogram as a heatmap above the energy curve, with the moments marked.
//!
//! SVG plots carry a title, axis labels and a legend. The workspace builds plotters without
//! font support, and raster text needs a font, so PNG plots are text-free: same panels and
//! colours, no labels. Colours: viridis heatmap (dark = quiet, yellow = loud); curve in blue;
//! valid moments as red vertical lines and dots; peaks outside the validity range in orange;
//! the time ranges excluded by the validity filter shaded grey.

use std::path::Path;

use anyhow::{anyhow, Result};
use moi_detect::{log_spectrogram, MoiAnalysis, MoiConfig};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

/// Image format implied by a file name, if any.
pub fn format_of(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "svg" => Some("svg"),
        "png" => Some("png"),
        _ => None,
    }
}

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 800;

/// Renders the plot of one recording to `target` (`.svg` or `.png`).
pub fn draw(
    target: &Path,
    title: &Path,
    samples: &[f32],
    sample_rate: u32,
    a: &MoiAnalysis,
    cfg: &MoiConfig,
) -> Result<()> {
    let spec = log_spectrogram(samples, sample_rate, cfg)?;
    let title = title.display().to_string();
    match format_of(target) {
        Some("svg") => {
            let root = SVGBackend::new(target, (WIDTH, HEIGHT)).into_drawing_area();
            render(root, true, &title, &spec, sample_rate, a, cfg, 500)
        }
        Some(_) => {
            // Rasterise into memory and encode with the workspace's `image` (plotters' own
            // encoder would pull in a second, older `image` crate).
            let mut rgb = vec![0u8; WIDTH as usize * HEIGHT as usize * 3];
            {
                let root =
                    BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
                render(root, false, &title, &spec, sample_rate, a, cfg, 1300)?;
            }
            image::save_buffer_with_format(
                target,
                &rgb,
                WIDTH,
                HEIGHT,
                image::ExtendedColorType::Rgb8,
                image::ImageFormat::Png,
            )
            .map_err(|err| anyhow!("{}: writing the PNG: {err}", target.display()))
        }
        None => Err(anyhow!(
            "{}: plot name must end in .svg or .png",
            target.display()
        )),
    }
}

fn e<E: std::fmt::Display>(err: E) -> anyhow::Error {
    anyhow!("drawing failed: {err}")
}

/// Max-pools `n` items into `m <= n` groups: the index range of group `g`.
fn group(g: usize, m: usize, n: usize) -> std::ops::Range<usize> {
    (g * n / m)..(((g + 1) * n / m).max(g * n / m + 1))
}

#[allow(clippy::too_many_arguments)]
fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    labelled: bool,
    title: &str,
    spec: &moi_detect::LogSpectrogram,
    sample_rate: u32,
    a: &MoiAnalysis,
    cfg: &MoiConfig,
    max_cols: usize,
) -> Result<()> {
    root.fill(&WHITE).map_err(e)?;
    let root = if labelled {
        root.titled(title, ("sans-serif", 18)).map_err(e)?
    } else {
        root.margin(8, 8, 8, 8)
    };
    let (top, bottom) = root.split_vertically(HEIGHT as i32 * 11 / 20);
    let t_end = a
        .duration_s
        .max(a.times_s.last().copied().unwrap_or(0.0))
        .max(1e-3);
    let label = if labelled { 45 } else { 0 };

    // Heatmap.
    let (nf, nb) = (spec.n_frames, spec.n_bins);
    let mut top_chart = ChartBuilder::on(&top)
        .margin(5)
        .x_label_area_size(if labelled { 30 } else { 0 })
        .y_label_area_size(label + 15)
        .build_cartesian_2d(0f64..t_end, 0f64..nb.max(1) as f64)
        .map_err(e)?;
    if labelled {
        top_chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("time (s)")
            .y_desc(if cfg.curve == moi_detect::CurveKind::LogMel {
                "mel band"
            } else {
                "frequency bin"
            })
            .draw()
            .map_err(e)?;
    }
    if nf > 0 && nb > 0 {
        let cols = nf.min(max_cols);
        let rows = nb.min(if labelled { 65 } else { nb });
        let mut grid = vec![f64::NEG_INFINITY; cols * rows];
        for c in 0..cols {
            for k in group(c, cols, nf) {
                let frame = spec.frame(k);
                for r in 0..rows {
                    for &v in &frame[group(r, rows, nb)] {
                        let g = &mut grid[c * rows + r];
                        *g = g.max(v);
                    }
                }
            }
        }
        let lo = grid.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = grid.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let hop_s = cfg.hop() as f64 / f64::from(sample_rate);
        let seg_s = cfg.nperseg as f64 / f64::from(sample_rate);
        top_chart
            .draw_series((0..cols).flat_map(|c| {
                let ks = group(c, cols, nf);
                let x0 = ks.start as f64 * hop_s;
                let x1 = (ks.end - 1) as f64 * hop_s + seg_s;
                let grid = &grid;
                (0..rows).map(move |r| {
                    let bs = group(r, rows, nb);
                    let v = ((grid[c * rows + r] - lo) / span) as f32;
                    Rectangle::new(
                        [(x0, bs.start as f64), (x1.min(t_end), bs.end as f64)],
                        ViridisRGB::get_color(v).filled(),
                    )
                })
            }))
            .map_err(e)?;
    }

    // Curve.
    let (cmin, cmax) = a
        .curve
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let (cmin, cmax) = if cmin.is_finite() && cmax > cmin {
        let pad = 0.05 * (cmax - cmin);
        (cmin - pad, cmax + pad)
    } else {
        (-1.0, 1.0)
    };
    let mut chart = ChartBuilder::on(&bottom)
        .margin(5)
        .x_label_area_size(if labelled { 35 } else { 0 })
        .y_label_area_size(label + 15)
        .build_cartesian_2d(0f64..t_end, cmin..cmax)
        .map_err(e)?;
    if labelled {
        chart
            .configure_mesh()
            .x_desc("time (s)")
            .y_desc("energy (mean z-score)")
            .draw()
            .map_err(e)?;
    }
    let (lo_t, hi_t) = cfg.valid_range(a.duration_s);
    let grey = RGBColor(225, 225, 225).filled();
    chart
        .draw_series([
            Rectangle::new([(0.0, cmin), (lo_t.clamp(0.0, t_end), cmax)], grey),
            Rectangle::new([(hi_t.clamp(0.0, t_end), cmin), (t_end, cmax)], grey),
        ])
        .map_err(e)?;
    let n = a.curve.len();
    let cols = n.min(4 * max_cols);
    let blue = RGBColor(31, 90, 180);
    if cols == n {
        let s = chart
            .draw_series(LineSeries::new(
                a.times_s.iter().copied().zip(a.curve.iter().copied()),
                blue.stroke_width(1),
            ))
            .map_err(e)?;
        if labelled {
            s.label("energy curve")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], blue));
        }
    } else if cols > 0 {
        // Min/max envelope per pixel column keeps every spike visible.
        let s = chart
            .draw_series((0..cols).map(|c| {
                let ks = group(c, cols, n);
                let seg = &a.curve[ks.clone()];
                let lo = seg.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = seg.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let t = a.times_s[ks.start];
                PathElement::new([(t, lo), (t, hi)], blue)
            }))
            .map_err(e)?;
        if labelled {
            s.label("energy curve (min/max per pixel)")
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], blue));
        }
    }
    let valid: Vec<usize> = a.valid.iter().map(|m| m.index).collect();
    let red = RGBColor(220, 30, 30);
    let orange = RGBColor(245, 150, 20);
    for (is_valid, colour, name) in [
        (true, red, "valid moment"),
        (false, orange, "peak outside valid range"),
    ] {
        let pts: Vec<(f64, f64)> = a
            .peaks
            .iter()
            .filter(|m| valid.contains(&m.index) == is_valid)
            .map(|m| (m.time_s, a.curve[m.index]))
            .collect();
        let s = chart
            .draw_series(
                pts.iter()
                    .map(|&(t, v)| Circle::new((t, v), 4, colour.filled())),
            )
            .map_err(e)?;
        if labelled && !pts.is_empty() {
            s.label(name)
                .legend(move |(x, y)| Circle::new((x + 9, y), 4, colour.filled()));
        }
        chart
            .draw_series(
                pts.iter()
                    .map(|&(t, _)| PathElement::new([(t, cmin), (t, cmax)], colour)),
            )
            .map_err(e)?;
        top_chart
            .draw_series(pts.iter().map(|&(t, _)| {
                PathElement::new([(t, 0.0), (t, nb.max(1) as f64)], colour.stroke_width(1))
            }))
            .map_err(e)?;
    }
    if labelled {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}
