//! SVG plots of a simulation, per workload: pages sent per iteration under each policy
//! (`remaining-*.svg`), and wire bytes, total time and downtime of every policy x codec
//! combination (`combinations-*.svg`, a [`BarChart`]).
//!
//! Every policy sees the same guest until it stops, so their page curves are the same
//! curve cut at different iterations: drawn together they hide each other. The curves are
//! therefore small multiples, one panel per policy on shared axes, its own curve in its
//! colour and marker over the others in grey, and its stop-and-copy marked and labelled.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{Row, SimReport};
use super::sender::CodecMode;
use crate::plot::format::digits;
use crate::plot::palette::{FAINT, INK, SERIES};
use crate::plot::text::{font, width};
use crate::plot::{BarChart, Group, Unit};

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
        std::fs::write(&p, remaining(report, &w)?)
            .map_err(|e| anyhow!("cannot write {}: {e}", p.display()))?;
        files.push(p);
        let p = dir.join(format!("combinations-{}.svg", slug(&w)));
        combinations(report, &w).write_svg(&p)?;
        files.push(p);
    }
    Ok(files)
}

/// Policies in report order, each once.
fn policies(report: &SimReport) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for r in &report.rows {
        if !names.contains(&r.policy) {
            names.push(r.policy.clone());
        }
    }
    names
}

/// Wire bytes, total time and downtime of every run of `workload`: bars grouped by policy,
/// one colour per codec setting.
pub fn combinations(report: &SimReport, workload: &str) -> BarChart {
    let codecs: Vec<&str> = CodecMode::ALL.iter().map(|c| c.name()).collect();
    let title = format!(
        "{workload}: codec settings (colours) under each stop policy, {} Mbit/s, RTT {} ms",
        short(report.bandwidth_bytes_per_s * 8.0 / 1e6),
        short(report.rtt_s * 1e3)
    );
    let groups = |f: fn(&Row) -> f64| -> Vec<Group> {
        policies(report)
            .into_iter()
            .map(|p| {
                let values = CodecMode::ALL
                    .iter()
                    .map(|&c| report.find(workload, &p, c).map(f))
                    .collect();
                Group::new(p, values)
            })
            .collect()
    };
    BarChart::new(title, codecs)
        .panel("wire bytes", Unit::Bytes, groups(|r| r.result.bytes as f64))
        .panel("total time", Unit::Seconds, groups(|r| r.result.total_s))
        .panel("downtime", Unit::Seconds, groups(|r| r.result.downtime_s))
}

// Layout of the page curves, in SVG pixels.
const MARGIN: f64 = 16.0;
const TITLE_H: f64 = 34.0;
const PANEL_W: f64 = 540.0;
const PANEL_H: f64 = 300.0;
const CAPTION_H: f64 = 24.0;
const PANEL_GAP: f64 = 24.0;
const X_AXIS: f64 = 40.0;
const Y_AXIS: f64 = 60.0;
const RIGHT_PAD: f64 = 14.0;
const STOP_PX: f64 = 12.0;
/// Log-scale headroom above the highest point, for the stop-and-copy label.
const HEADROOM: f64 = 8.0;

/// How policy `i` is drawn: its colour, and a marker shape of its own (so that print in
/// grey still tells them apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
    Square,
    Cross,
}

const MARKERS: [Marker; 4] = [
    Marker::Circle,
    Marker::Triangle,
    Marker::Square,
    Marker::Cross,
];

/// Pages sent in each iteration under every policy (codec "all"), one panel per policy.
pub fn remaining(report: &SimReport, workload: &str) -> Result<String> {
    let rows: Vec<&Row> = report
        .rows
        .iter()
        .filter(|r| r.workload == workload && r.codec == CodecMode::All)
        .collect();
    let max_it = rows
        .iter()
        .map(|r| r.result.rows.len())
        .max()
        .unwrap_or(1)
        .max(2) as f64;
    let max_pages = rows
        .iter()
        .flat_map(|r| r.result.rows.iter().map(|i| i.sent))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    // A log scale has no 0: pages sent 0 are drawn at 1, and the axis says so.
    let any_zero = rows
        .iter()
        .any(|r| r.result.rows.iter().any(|i| i.sent == 0));
    let y_desc = if any_zero {
        "pages sent (0 drawn at 1)"
    } else {
        "pages sent"
    };
    let cols = rows.len().clamp(1, 2);
    let n_rows = rows.len().div_ceil(cols).max(1);
    let w = 2.0 * MARGIN + cols as f64 * PANEL_W + (cols as f64 - 1.0) * PANEL_GAP;
    let h = MARGIN + TITLE_H + n_rows as f64 * (PANEL_H + PANEL_GAP) - PANEL_GAP + MARGIN;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w.ceil() as u32, h.ceil() as u32))
            .into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        root.draw(&Text::new(
            format!("{workload}: pages sent per iteration, codec all (grey: the other policies)"),
            ((w / 2.0) as i32, (MARGIN + TITLE_H / 2.0) as i32),
            font(17.0)
                .style(FontStyle::Bold)
                .color(&INK)
                .pos(Pos::new(HPos::Center, VPos::Center)),
        ))
        .map_err(err)?;
        for i in 0..rows.len() {
            let x0 = MARGIN + (i % cols) as f64 * (PANEL_W + PANEL_GAP);
            let y0 = MARGIN + TITLE_H + (i / cols) as f64 * (PANEL_H + PANEL_GAP);
            policy_panel(&root, &rows, i, (x0, y0), (max_it, max_pages), y_desc)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// Panel `i`: policy `i`'s curve in colour over the others in grey.
fn policy_panel(
    root: &DrawingArea<SVGBackend, Shift>,
    rows: &[&Row],
    i: usize,
    (x0, y0): (f64, f64),
    (max_it, max_pages): (f64, f64),
    y_desc: &str,
) -> Result<()> {
    let r = rows[i];
    let color = SERIES[i % SERIES.len()];
    let marker = MARKERS[i % MARKERS.len()];
    root.draw(&Text::new(
        format!(
            "{}: {}, downtime {}",
            r.policy,
            plural(u64::from(r.result.iterations), "iteration"),
            Unit::Seconds.format(r.result.downtime_s)
        ),
        ((x0 + Y_AXIS) as i32, (y0 + CAPTION_H / 2.0) as i32),
        font(14.0)
            .style(FontStyle::Bold)
            .color(&color)
            .pos(Pos::new(HPos::Left, VPos::Center)),
    ))
    .map_err(err)?;
    let area = root.clone().shrink(
        ((x0) as i32, (y0 + CAPTION_H) as i32),
        (PANEL_W as u32, (PANEL_H - CAPTION_H) as u32),
    );
    let mut chart = ChartBuilder::on(&area)
        .x_label_area_size(X_AXIS as u32)
        .y_label_area_size(Y_AXIS as u32)
        .margin_right(RIGHT_PAD as u32)
        .build_cartesian_2d(
            0.5f64..max_it + 0.5,
            (1f64..max_pages * HEADROOM).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("iteration (the last: stop-and-copy)")
        .y_desc(y_desc)
        .axis_desc_style(font(12.0).color(&INK))
        .label_style(font(11.0).color(&INK))
        .x_labels(12)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| compact(*v))
        .axis_style(INK)
        .bold_line_style(RGBColor(228, 228, 228))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(err)?;
    let points = |r: &Row| -> Vec<(f64, f64)> {
        r.result
            .rows
            .iter()
            .map(|it| (f64::from(it.iteration), it.sent.max(1) as f64))
            .collect()
    };
    for (j, other) in rows.iter().enumerate() {
        if j != i {
            chart
                .draw_series(LineSeries::new(points(other), FAINT.stroke_width(1)))
                .map_err(err)?;
        }
    }
    let own = points(r);
    chart
        .draw_series(LineSeries::new(own.clone(), color.stroke_width(2)))
        .map_err(err)?;
    for &p in &own[..own.len().saturating_sub(1)] {
        draw_marker(&mut chart, marker, p, 3, color.filled())?;
    }
    let Some(&stop) = own.last() else {
        return Ok(());
    };
    draw_marker(&mut chart, marker, stop, 6, color.filled())?;
    // The stop-and-copy's label: up and to the right of its marker, or to the left where
    // the plot ends.
    let (px, py) = chart.backend_coord(&stop);
    let sent = r.result.rows.last().map_or(0, |it| it.sent);
    let text = plural(sent, "page");
    let right_edge = (x0 + PANEL_W - RIGHT_PAD) as i32;
    let (x, h) = if px + 10 + width(&text, STOP_PX) as i32 <= right_edge {
        (px + 10, HPos::Left)
    } else {
        (px - 10, HPos::Right)
    };
    root.draw(&Text::new(
        text,
        (x, py - 8),
        font(STOP_PX)
            .style(FontStyle::Bold)
            .color(&color)
            .pos(Pos::new(h, VPos::Bottom)),
    ))
    .map_err(err)?;
    Ok(())
}

type LogChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::combinators::LogCoord<f64>,
    >,
>;

fn draw_marker(
    chart: &mut LogChart,
    m: Marker,
    at: (f64, f64),
    size: i32,
    style: ShapeStyle,
) -> Result<()> {
    let e = EmptyElement::at(at);
    match m {
        Marker::Circle => chart.draw_series([e + Circle::new((0, 0), size, style)]),
        Marker::Triangle => chart.draw_series([e + TriangleMarker::new((0, 0), size + 1, style)]),
        Marker::Square => {
            chart.draw_series([e + Rectangle::new([(-size, -size), (size, size)], style)])
        }
        Marker::Cross => chart.draw_series([e + Cross::new((0, 0), size, style.stroke_width(2))]),
    }
    .map_err(err)?;
    Ok(())
}

/// "1 page", "20k pages".
fn plural(n: u64, what: &str) -> String {
    let s = if n == 1 { "" } else { "s" };
    format!("{} {what}{s}", compact(n as f64))
}

/// A number without the zeros after its point: "20", "1.5".
fn short(v: f64) -> String {
    let d = digits(v);
    if d.contains('.') {
        d.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        d
    }
}

/// A tick or count in few characters: 950, 1k, 20k, 3M.
fn compact(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", digits(v / 1e6).trim_end_matches(".00"))
    } else if v >= 1e4 {
        format!("{}k", digits(v / 1e3).trim_end_matches(".0"))
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::bars::readable::assert_readable;
    use crate::plot::svg_check::{hex, labels, overlap, polylines};
    use crate::simulate::{RunResult, SimIteration};

    /// Stop iterations of the four policies: the curve they share, cut at different points.
    const STOPS: [(&str, u32); 4] = [
        ("xen-classic", 30),
        ("xen-today", 5),
        ("downtime-limit", 2),
        ("smart-stop", 9),
    ];

    /// Pages sent in iteration `i` (1-based) of the curve every policy follows.
    fn curve(i: u32) -> u64 {
        (32768u64 >> (2 * (i - 1)).min(40)).max(50 + u64::from(i % 3))
    }

    fn run(stop: u32, codec: usize) -> RunResult {
        let rows: Vec<SimIteration> = (1..=stop + 1)
            .map(|i| SimIteration {
                iteration: i,
                sent: curve(i),
                dirtied: 0,
                remaining: 0,
                bytes: curve(i) * 4096 / (codec as u64 + 1),
                seconds: 1.0,
                start_s: f64::from(i),
            })
            .collect();
        RunResult {
            iterations: stop,
            total_s: rows.len() as f64 / (codec as f64 + 1.0),
            downtime_s: curve(stop + 1) as f64 * 4096.0 / 12.5e6,
            bytes: rows.iter().map(|r| r.bytes).sum(),
            final_start_s: f64::from(stop),
            rows,
        }
    }

    fn report() -> SimReport {
        let mut rows = Vec::new();
        for (policy, stop) in STOPS {
            for (c, &codec) in CodecMode::ALL.iter().enumerate() {
                rows.push(Row {
                    workload: "database".into(),
                    policy: policy.into(),
                    codec,
                    result: run(stop, c),
                });
            }
        }
        SimReport {
            bandwidth_bytes_per_s: 12.5e6,
            rtt_s: 0.02,
            rows,
            groups: Vec::new(),
        }
    }

    fn keep(name: &str, svg: &str) {
        if let Some(dir) = std::env::var_os("PAGEWIRE_PLOT_DIR") {
            std::fs::write(Path::new(&dir).join(name), svg).unwrap();
        }
    }

    #[test]
    fn combinations_group_by_policy_with_a_colour_per_codec() {
        let mut r = report();
        r.rows
            .retain(|x| !(x.policy == "xen-today" && x.codec == CodecMode::Xbzrle));
        let chart = combinations(&r, "database");
        let svg = chart.to_svg().unwrap();
        keep("sim-combinations.svg", &svg);
        assert_eq!(chart.series, ["none", "xbzrle (qemu)", "cbr only", "all"]);
        assert_eq!(chart.panels.len(), 3);
        for p in &chart.panels {
            let names: Vec<&str> = p.groups.iter().map(|g| g.name.as_str()).collect();
            assert_eq!(names, STOPS.map(|s| s.0));
            assert_eq!(p.groups[1].values[1], None, "the missing run");
        }
        assert_readable(&chart, &svg);
    }

    #[test]
    fn page_curves_never_hide_each_other() {
        let svg = remaining(&report(), "database").unwrap();
        keep("sim-remaining.svg", &svg);
        let texts = labels(&svg);
        let lines = polylines(&svg);
        let faint = hex(FAINT);
        // One curve in colour per policy, each its own colour, over three grey ones.
        for (i, (policy, stop)) in STOPS.iter().enumerate() {
            let colour = hex(SERIES[i]);
            let own: Vec<_> = lines.iter().filter(|l| l.stroke == colour).collect();
            assert_eq!(own.len(), 1, "{policy}: one curve in its colour");
            assert_eq!(
                own[0].points.len(),
                *stop as usize + 1,
                "{policy}: its iterations"
            );
            let caption = texts
                .iter()
                .find(|t| {
                    t.text.starts_with(&format!(
                        "{policy}: {}",
                        plural(u64::from(*stop), "iteration")
                    ))
                })
                .unwrap_or_else(|| panic!("{policy}: caption"));
            assert_eq!(caption.fill, colour, "{policy}: caption in its colour");
            // The stop-and-copy labelled beside its marker, above it.
            let want = plural(curve(stop + 1), "page");
            let label = texts
                .iter()
                .find(|t| t.text == want && t.fill == colour)
                .unwrap_or_else(|| panic!("{policy}: stop label {want}"));
            let (sx, sy) = *own[0].points.last().unwrap();
            let b = label.bbox();
            assert!(b.3 <= sy - 4.0, "{policy}: label above its stop");
            assert!(
                b.0 >= sx + 4.0 || b.2 <= sx - 4.0,
                "{policy}: label beside its stop"
            );
        }
        let grey = lines.iter().filter(|l| l.stroke == faint).count();
        assert_eq!(grey, STOPS.len() * (STOPS.len() - 1), "the others, in grey");
        // No text over another, none outside the figure.
        let width: f64 = svg[..200]
            .split("width=\"")
            .nth(1)
            .and_then(|w| w.split('"').next())
            .and_then(|w| w.parse().ok())
            .unwrap();
        for (i, a) in texts.iter().enumerate() {
            for c in &texts[i + 1..] {
                assert!(
                    !overlap(a.bbox(), c.bbox()),
                    "{:?} overlaps {:?}",
                    a.text,
                    c.text
                );
            }
            let b = a.bbox();
            assert!(b.0 >= 0.0 && b.2 <= width, "{:?} leaves the figure", a.text);
        }
    }

    #[test]
    fn a_stop_that_sends_nothing_is_drawn_at_one_and_said_so() {
        let mut r = report();
        let before = remaining(&r, "database").unwrap();
        assert!(!before.contains("0 drawn at 1"));
        for row in r.rows.iter_mut().filter(|x| x.policy == "smart-stop") {
            row.result.rows.last_mut().unwrap().sent = 0;
        }
        let svg = remaining(&r, "database").unwrap();
        let texts = labels(&svg);
        assert!(texts.iter().any(|t| t.text == "pages sent (0 drawn at 1)"));
        assert!(texts
            .iter()
            .any(|t| t.text == "0 pages" && t.fill == hex(SERIES[3])));
    }

    #[test]
    fn numbers_in_words() {
        assert_eq!(plural(1, "page"), "1 page");
        assert_eq!(plural(0, "page"), "0 pages");
        assert_eq!(plural(20_000, "page"), "20k pages");
        assert_eq!(short(20.0), "20");
        assert_eq!(short(1.5), "1.5");
        assert_eq!(short(100.0), "100");
    }

    #[test]
    fn compact_counts() {
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(20_000.0), "20k");
        assert_eq!(compact(32_768.0), "32.8k");
        assert_eq!(compact(3e6), "3M");
    }
}
