//! SVG plots of a simulation: pages remaining per iteration, and bytes, total time and
//! downtime for every combination.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::migration::RunResult;
use super::report::SimReport;
use super::sender::CodecMode;

/// One number drawn per run.
type Metric = fn(&RunResult) -> f64;

const COLORS: [RGBColor; 5] = [RED, BLUE, GREEN, MAGENTA, BLACK];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e:?}")
}

/// File-name-safe form of a workload name.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes every plot for `report` into `dir`; returns the files written.
pub fn write_all(report: &SimReport, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for w in report.workloads() {
        let p = dir.join(format!("remaining-{}.svg", slug(&w)));
        remaining(report, &w, &p)?;
        files.push(p);
        let p = dir.join(format!("combinations-{}.svg", slug(&w)));
        combinations(report, &w, &p)?;
        files.push(p);
    }
    Ok(files)
}

/// Pages left to send after each iteration, one line per policy, codec "all".
fn remaining(report: &SimReport, workload: &str, path: &Path) -> Result<()> {
    let rows: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.workload == workload && r.codec == CodecMode::All)
        .collect();
    let max_it = rows
        .iter()
        .map(|r| r.result.rows.len())
        .max()
        .unwrap_or(1)
        .max(2) as u32;
    let max_pages = rows
        .iter()
        .flat_map(|r| r.result.rows.iter().map(|i| i.sent))
        .max()
        .unwrap_or(1)
        .max(1);
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{workload}: pages to send per iteration (codec: all)"),
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(1u32..max_it, (1u64..max_pages * 2).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("iteration (last: stop-and-copy)")
        .y_desc("pages sent")
        .draw()
        .map_err(err)?;
    for (i, r) in rows.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                r.result
                    .rows
                    .iter()
                    .map(|it| (it.iteration, it.sent.max(1))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(r.policy.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE)
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Three panels: wire MiB, total seconds and downtime ms for every policy x codec.
fn combinations(report: &SimReport, workload: &str, path: &Path) -> Result<()> {
    let rows: Vec<_> = report
        .rows
        .iter()
        .filter(|r| r.workload == workload)
        .collect();
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let panels = root.split_evenly((3, 1));
    let metrics: [(&str, Metric); 3] = [
        ("wire MiB", |r| r.bytes as f64 / (1u64 << 20) as f64),
        ("total time s", |r| r.total_s),
        ("downtime ms", |r| r.downtime_s * 1e3),
    ];
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} / {}", r.policy, r.codec.name()))
        .collect();
    for (panel, (title, f)) in panels.iter().zip(metrics.iter()) {
        let values: Vec<f64> = rows.iter().map(|r| f(&r.result)).collect();
        let max = values.iter().cloned().fold(0.0, f64::max).max(1e-9) * 1.1;
        let n = values.len().max(1);
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{workload}: {title}"), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(20)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .draw()
            .map_err(err)?;
        for (i, v) in values.iter().enumerate() {
            let color = COLORS[(i % CodecMode::ALL.len()) % COLORS.len()];
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, *v)],
                    color.filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    labels[i].clone(),
                    (i as f64 + 0.15, max * 0.98),
                    ("sans-serif", 9)
                        .into_font()
                        .transform(FontTransform::Rotate90),
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}
