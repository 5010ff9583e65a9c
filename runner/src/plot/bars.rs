//! Grouped bar charts: one panel per metric (total time, downtime, wire bytes, ...), bars
//! grouped by workload, one colour per series (method) across every panel, one legend above
//! the panels, and every value written above its bar.
//!
//! The layout is computed, not left to chance: every bar has a slot at least as wide as the
//! widest value label (labels turn upright when horizontal ones would make the figure too
//! wide), and each axis runs from zero to where the tallest bar still has room for its
//! label, so labels never overlap each other, the bars, or the legend.
//!
//! ```no_run
//! use pagewire_runner::plot::{BarChart, Group, Unit};
//! let chart = BarChart::new("idle guest, 100 Mbit/s, 20 ms", ["qemu", "pagewire"])
//!     .panel("total time", Unit::Seconds, vec![
//!         Group::new("idle", vec![Some(12.3), Some(4.1)]),
//!         Group::new("compile", vec![Some(40.0), None]), // None: no result, drawn as "n/a"
//!     ]);
//! chart.write_svg(std::path::Path::new("compare.svg")).unwrap();
//! ```

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::format::{tick, Unit};
use super::palette::{INK, SERIES};
use super::text::{font, width};

/// One group of bars (a workload): one value per series, `None` where there is none.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

impl Group {
    pub fn new(name: impl Into<String>, values: Vec<Option<f64>>) -> Self {
        Group {
            name: name.into(),
            values,
        }
    }
}

/// One metric's panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// What is measured ("total time"); the axis unit is added to it.
    pub metric: String,
    pub unit: Unit,
    pub groups: Vec<Group>,
}

impl Panel {
    /// The label written above a bar of `value` ("n/a" where it is missing; a zero in the
    /// unit of the panel's axis, "0 ms" beside "350 ms").
    pub fn label(&self, value: Option<f64>) -> String {
        match value {
            None => MISSING.to_owned(),
            Some(0.0) => {
                let (_, unit) = self.unit.axis_scale(self.max());
                format!("0 {unit}").trim_end().to_owned()
            }
            Some(v) => self.unit.format(v),
        }
    }

    /// Every label, group by group.
    fn labels(&self) -> impl Iterator<Item = String> + '_ {
        self.groups
            .iter()
            .flat_map(move |g| g.values.iter().map(move |v| self.label(*v)))
    }

    /// The largest value (0 without any).
    fn max(&self) -> f64 {
        self.groups
            .iter()
            .flat_map(|g| g.values.iter().flatten())
            .fold(0.0, |a: f64, &b| a.max(b))
    }
}

/// A figure of bar-chart panels sharing series, colours and legend.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub title: String,
    /// Series names, in legend and bar order; series `i` has colour `palette::SERIES[i]`.
    pub series: Vec<String>,
    pub panels: Vec<Panel>,
    /// Panels per row (1: stacked).
    pub columns: usize,
}

// Layout, in SVG pixels.
const MARGIN: f64 = 16.0;
const TITLE_PX: f64 = 18.0;
const TITLE_H: f64 = 34.0;
const LEGEND_PX: f64 = 13.0;
const LEGEND_ROW: f64 = 22.0;
const SWATCH: f64 = 12.0;
const LEGEND_ENTRY_GAP: f64 = 22.0;
const CAPTION_PX: f64 = 14.0;
const CAPTION_H: f64 = 26.0;
const TICK_PX: f64 = 11.0;
const Y_AXIS: f64 = 56.0;
const X_AXIS: f64 = 28.0;
const GROUP_PX: f64 = 13.0;
const PLOT_H: f64 = 220.0;
const RIGHT_PAD: f64 = 12.0;
const PANEL_GAP: f64 = 24.0;
/// Space between a bar's top and its label.
const LABEL_GAP: f64 = 4.0;
/// Value label sizes tried in turn before labels turn upright.
const LABEL_PX: [f64; 2] = [11.0, 10.0];
const MIN_SLOT: f64 = 22.0;
const MAX_BAR: f64 = 44.0;
/// Widest plot area that horizontal labels may ask for.
const MAX_PLOT_W: f64 = 1100.0;
const MISSING: &str = "n/a";
const MISSING_INK: RGBColor = RGBColor(110, 110, 110);

/// How value labels are set.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Labels {
    Horizontal(f64),
    /// Reading upwards, for slots narrower than the labels.
    Upright(f64),
}

impl Labels {
    /// Pixels a label of `text` takes above its bar, gap included.
    fn height(self, text: &str) -> f64 {
        match self {
            Labels::Horizontal(px) => px + LABEL_GAP,
            Labels::Upright(px) => width(text, px) + LABEL_GAP,
        }
    }
}

/// Where everything goes.
#[derive(Debug, Clone)]
struct Layout {
    labels: Labels,
    slot: f64,
    group_w: f64,
    plot_w: f64,
    plot_h: f64,
    panel_w: f64,
    panel_h: f64,
    legend_rows: Vec<Vec<(usize, f64)>>,
    width: f64,
    height: f64,
}

impl BarChart {
    /// An empty figure; add panels with [`BarChart::panel`].
    pub fn new<S: Into<String>>(
        title: impl Into<String>,
        series: impl IntoIterator<Item = S>,
    ) -> Self {
        BarChart {
            title: title.into(),
            series: series.into_iter().map(Into::into).collect(),
            panels: Vec::new(),
            columns: 1,
        }
    }

    /// Adds a panel for `metric`, in `unit`.
    pub fn panel(mut self, metric: impl Into<String>, unit: Unit, groups: Vec<Group>) -> Self {
        self.panels.push(Panel {
            metric: metric.into(),
            unit,
            groups,
        });
        self
    }

    /// Sets the panels per row.
    pub fn columns(mut self, n: usize) -> Self {
        self.columns = n.max(1);
        self
    }

    /// Writes the figure to `path`.
    pub fn write_svg(&self, path: &Path) -> Result<()> {
        let svg = self.to_svg()?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The figure as an SVG document.
    pub fn to_svg(&self) -> Result<String> {
        self.check()?;
        let layout = self.layout();
        let mut svg = String::new();
        {
            let size = (layout.width.ceil() as u32, layout.height.ceil() as u32);
            let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
            root.fill(&WHITE).map_err(err)?;
            self.draw_title(&root, &layout)?;
            self.draw_legend(&root, &layout)?;
            for (i, p) in self.panels.iter().enumerate() {
                let col = (i % self.columns) as f64;
                let row = (i / self.columns) as f64;
                let x0 = MARGIN + col * (layout.panel_w + PANEL_GAP);
                let y0 = panels_top(&layout) + row * (layout.panel_h + PANEL_GAP);
                self.draw_panel(&root, &layout, p, (x0, y0))?;
            }
            root.present().map_err(err)?;
        }
        Ok(svg)
    }

    fn check(&self) -> Result<()> {
        if self.series.is_empty() || self.panels.is_empty() {
            bail!("a bar chart needs at least one series and one panel");
        }
        if self.series.len() > SERIES.len() {
            bail!(
                "{} series, but only {} colours tell series apart",
                self.series.len(),
                SERIES.len()
            );
        }
        for p in &self.panels {
            for g in &p.groups {
                if g.values.len() != self.series.len() {
                    bail!(
                        "{} / {}: {} values for {} series",
                        p.metric,
                        g.name,
                        g.values.len(),
                        self.series.len()
                    );
                }
                if let Some(v) = g
                    .values
                    .iter()
                    .flatten()
                    .find(|v| !(v.is_finite() && **v >= 0.0))
                {
                    bail!("{} / {}: bars start at zero, not {v}", p.metric, g.name);
                }
            }
        }
        Ok(())
    }

    fn all_labels(&self) -> impl Iterator<Item = String> + '_ {
        self.panels.iter().flat_map(Panel::labels)
    }

    fn layout(&self) -> Layout {
        let n = self.series.len() as f64;
        let groups = self
            .panels
            .iter()
            .map(|p| p.groups.len())
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let name_w = self
            .panels
            .iter()
            .flat_map(|p| &p.groups)
            .map(|g| width(&g.name, GROUP_PX) + 8.0)
            .fold(0.0, f64::max);
        let widest = |px: f64| self.all_labels().map(|l| width(&l, px)).fold(0.0, f64::max);
        let group_w = |slot: f64| (n * slot + (slot * 0.6).max(12.0)).max(name_w);
        let (labels, slot) = LABEL_PX
            .iter()
            .map(|&px| (Labels::Horizontal(px), (widest(px) + 4.0).max(MIN_SLOT)))
            .find(|&(_, slot)| groups * group_w(slot) <= MAX_PLOT_W)
            .unwrap_or((
                Labels::Upright(LABEL_PX[0]),
                MIN_SLOT.max(LABEL_PX[0] + 8.0),
            ));
        let plot_w = (groups * group_w(slot)).max(200.0);
        let tallest_label = self
            .all_labels()
            .map(|l| labels.height(&l))
            .fold(0.0, f64::max);
        let plot_h = PLOT_H.max(tallest_label * 2.0 + 60.0);
        let panel_w = Y_AXIS + plot_w + RIGHT_PAD;
        let panel_h = CAPTION_H + plot_h + X_AXIS;
        let cols = self.columns.min(self.panels.len()) as f64;
        let rows = self.panels.len().div_ceil(self.columns) as f64;
        let mut width_px = 2.0 * MARGIN + cols * panel_w + (cols - 1.0) * PANEL_GAP;
        let entry_w = |s: &str| SWATCH + 6.0 + width(s, LEGEND_PX);
        let widest_entry = self.series.iter().map(|s| entry_w(s)).fold(0.0, f64::max);
        width_px = width_px
            .max(2.0 * MARGIN + widest_entry)
            .max(2.0 * MARGIN + width(&self.title, TITLE_PX));
        let mut legend_rows: Vec<Vec<(usize, f64)>> = vec![Vec::new()];
        let mut x = MARGIN;
        for (i, s) in self.series.iter().enumerate() {
            let w = entry_w(s);
            if x > MARGIN && x + w > width_px - MARGIN {
                legend_rows.push(Vec::new());
                x = MARGIN;
            }
            legend_rows
                .last_mut()
                .expect("one row at least")
                .push((i, x));
            x += w + LEGEND_ENTRY_GAP;
        }
        let mut l = Layout {
            labels,
            slot,
            group_w: group_w(slot),
            plot_w,
            plot_h,
            panel_w,
            panel_h,
            legend_rows,
            width: width_px,
            height: 0.0,
        };
        l.height = panels_top(&l) + rows * panel_h + (rows - 1.0) * PANEL_GAP + MARGIN;
        l
    }

    fn draw_title(&self, root: &DrawingArea<SVGBackend, Shift>, l: &Layout) -> Result<()> {
        let style = font(TITLE_PX)
            .style(FontStyle::Bold)
            .color(&INK)
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            self.title.clone(),
            px((l.width / 2.0, MARGIN + TITLE_H / 2.0)),
            style,
        ))
        .map_err(err)
    }

    fn draw_legend(&self, root: &DrawingArea<SVGBackend, Shift>, l: &Layout) -> Result<()> {
        let style = font(LEGEND_PX)
            .color(&INK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (r, row) in l.legend_rows.iter().enumerate() {
            let yc = MARGIN + TITLE_H + (r as f64 + 0.5) * LEGEND_ROW;
            for &(i, x) in row {
                root.draw(&Rectangle::new(
                    [
                        px((x, yc - SWATCH / 2.0)),
                        px((x + SWATCH, yc + SWATCH / 2.0)),
                    ],
                    SERIES[i].filled(),
                ))
                .map_err(err)?;
                root.draw(&Text::new(
                    self.series[i].clone(),
                    px((x + SWATCH + 6.0, yc)),
                    style.clone(),
                ))
                .map_err(err)?;
            }
        }
        Ok(())
    }

    fn draw_panel(
        &self,
        root: &DrawingArea<SVGBackend, Shift>,
        l: &Layout,
        p: &Panel,
        (x0, y0): (f64, f64),
    ) -> Result<()> {
        let max = p.max();
        let (div, unit_name) = p.unit.axis_scale(max);
        let caption = if unit_name.is_empty() {
            p.metric.clone()
        } else {
            format!("{} ({unit_name})", p.metric)
        };
        root.draw(&Text::new(
            caption,
            px((x0 + Y_AXIS, y0 + CAPTION_H / 2.0)),
            font(CAPTION_PX)
                .style(FontStyle::Bold)
                .color(&INK)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))
        .map_err(err)?;

        // Headroom: the tallest label must fit between its bar and the top of the plot.
        let room = p
            .labels()
            .map(|lab| l.labels.height(&lab))
            .fold(0.0, f64::max)
            + 2.0;
        let top = if max > 0.0 {
            max / div * l.plot_h / (l.plot_h - room)
        } else {
            1.0
        };
        let step = nice_step(top / 5.0);
        let area = root
            .clone()
            .shrink(px((x0, y0 + CAPTION_H)), px((l.panel_w, l.plot_h + X_AXIS)));
        let mut chart = ChartBuilder::on(&area)
            .x_label_area_size(X_AXIS as u32)
            .y_label_area_size(Y_AXIS as u32)
            .margin_right(RIGHT_PAD as u32)
            .build_cartesian_2d(0f64..l.plot_w, 0f64..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(6)
            .y_label_formatter(&|v| tick(*v, step))
            .y_label_style(font(TICK_PX).color(&INK))
            .axis_style(INK)
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(err)?;

        let n = self.series.len() as f64;
        let bar_w = (l.slot * 0.8).min(MAX_BAR);
        let baseline = chart.backend_coord(&(0.0, 0.0)).1;
        for (gi, g) in p.groups.iter().enumerate() {
            let g_left = gi as f64 * l.group_w;
            let first_slot = g_left + (l.group_w - n * l.slot) / 2.0;
            let centre = chart.backend_coord(&(g_left + l.group_w / 2.0, 0.0)).0;
            root.draw(&Text::new(
                g.name.clone(),
                (centre, baseline + 8),
                font(GROUP_PX)
                    .color(&INK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(err)?;
            for (si, v) in g.values.iter().enumerate() {
                let mid = first_slot + (si as f64 + 0.5) * l.slot;
                let bar_top = match v {
                    Some(v) => {
                        let r = Rectangle::new(
                            [(mid - bar_w / 2.0, 0.0), (mid + bar_w / 2.0, v / div)],
                            SERIES[si].filled(),
                        );
                        chart.draw_series(std::iter::once(r)).map_err(err)?;
                        chart.backend_coord(&(mid, v / div)).1
                    }
                    None => baseline,
                };
                let x = chart.backend_coord(&(mid, 0.0)).0;
                let y = bar_top - LABEL_GAP as i32;
                let color = if v.is_some() { INK } else { MISSING_INK };
                let text = p.label(*v);
                let style = match l.labels {
                    Labels::Horizontal(s) => font(s)
                        .color(&color)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    Labels::Upright(s) => font(s)
                        .transform(FontTransform::Rotate270)
                        .color(&color)
                        .pos(Pos::new(HPos::Left, VPos::Center)),
                };
                root.draw(&Text::new(text, (x, y), style)).map_err(err)?;
            }
        }
        Ok(())
    }
}

/// Top of the first row of panels: below the title and the legend.
fn panels_top(l: &Layout) -> f64 {
    MARGIN + TITLE_H + l.legend_rows.len() as f64 * LEGEND_ROW + 10.0
}

/// 1, 2 or 5 times a power of ten, at least `raw`: the step of the axis ticks.
fn nice_step(raw: f64) -> f64 {
    if !(raw > 0.0 && raw.is_finite()) {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

fn px((x, y): (f64, f64)) -> (i32, i32) {
    (x.round() as i32, y.round() as i32)
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e:?}")
}

/// Test support: what every chart must satisfy, checked on its SVG text.
#[cfg(test)]
pub(crate) mod readable {
    use super::*;
    use crate::plot::svg_check::{hex, labels, overlap, rects, Label, Rect};

    /// The bars of series `i`: rects of its colour below the legend.
    fn bars_of(rects: &[Rect], i: usize, legend_bottom: f64) -> Vec<Rect> {
        rects
            .iter()
            .filter(|r| r.fill == hex(SERIES[i]) && r.y > legend_bottom)
            .cloned()
            .collect()
    }

    /// Everything a reader needs, checked on the SVG text: legend, labels, bars, and room.
    pub(crate) fn assert_readable(chart: &BarChart, svg: &str) {
        let texts = labels(svg);
        let rects = rects(svg);
        // The legend: every series once, beside a swatch of its colour.
        let mut legend_bottom = 0.0f64;
        for (i, s) in chart.series.iter().enumerate() {
            let entries: Vec<&Label> = texts.iter().filter(|t| &t.text == s).collect();
            assert_eq!(entries.len(), 1, "{s} once in the legend");
            let t = entries[0];
            let swatch = rects
                .iter()
                .find(|r| {
                    r.fill == hex(SERIES[i]) && r.x < t.x && (r.y + r.h / 2.0 - t.y).abs() < 2.0
                })
                .unwrap_or_else(|| panic!("a swatch for {s}"));
            legend_bottom = legend_bottom.max(swatch.y + swatch.h).max(t.bbox().3);
        }
        // Every value's label, as often as the value occurs.
        let expected: Vec<String> = chart.all_labels().collect();
        for e in &expected {
            let want = expected.iter().filter(|x| *x == e).count();
            let have = texts.iter().filter(|t| &t.text == e).count();
            assert!(have >= want, "label {e}: {have} of {want}");
        }
        // One bar per value present, in its series' colour only.
        let present: usize = chart
            .panels
            .iter()
            .flat_map(|p| &p.groups)
            .map(|g| g.values.iter().flatten().count())
            .sum();
        let bars: Vec<Rect> = (0..chart.series.len())
            .flat_map(|i| bars_of(&rects, i, legend_bottom))
            .collect();
        assert_eq!(bars.len(), present, "one bar per value");
        // Each bar's label sits centred above its top, never inside.
        let value_labels: Vec<&Label> = texts
            .iter()
            .filter(|t| expected.contains(&t.text))
            .collect();
        for b in &bars {
            let centre = b.x + b.w / 2.0;
            let l = value_labels
                .iter()
                .filter(|t| {
                    let bb = t.bbox();
                    ((bb.0 + bb.2) / 2.0 - centre).abs() < 3.0 && bb.3 <= b.y
                })
                .min_by(|a, c| (b.y - a.bbox().3).total_cmp(&(b.y - c.bbox().3)))
                .unwrap_or_else(|| panic!("no label above the bar at {b:?}"));
            let gap = b.y - l.bbox().3;
            assert!(
                gap <= LABEL_GAP + 2.0,
                "{} floats {gap} px above its bar",
                l.text
            );
            assert!(
                l.bbox().1 > legend_bottom,
                "{} reaches into the legend",
                l.text
            );
        }
        // No text over another text or over a bar; everything inside the figure.
        for (i, a) in texts.iter().enumerate() {
            let ab = a.bbox();
            for c in &texts[i + 1..] {
                assert!(!overlap(ab, c.bbox()), "{:?} overlaps {:?}", a.text, c.text);
            }
            for b in &bars {
                assert!(!overlap(ab, b.bbox()), "{:?} overlaps a bar {b:?}", a.text);
            }
            let l = chart.layout();
            assert!(
                ab.0 >= 0.0 && ab.1 >= 0.0 && ab.2 <= l.width && ab.3 <= l.height,
                "{} outside",
                a.text
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::readable::assert_readable;
    use super::*;
    use crate::plot::svg_check::{hex, labels, rects, Rect};

    const METHODS: [&str; 4] = [
        "QEMU direct",
        "QEMU xbzrle",
        "QEMU multifd+zstd",
        "pagewire tunnel",
    ];

    fn comparison() -> BarChart {
        let groups = |vals: [[Option<f64>; 4]; 3]| {
            ["idle", "key-value store", "kernel compile"]
                .iter()
                .zip(vals)
                .map(|(w, v)| Group::new(*w, v.to_vec()))
                .collect::<Vec<_>>()
        };
        let mib = (1u64 << 20) as f64;
        BarChart::new("QEMU against pagewire, 100 Mbit/s, 20 ms", METHODS)
            .panel(
                "total time",
                Unit::Seconds,
                groups([
                    [Some(45.2), Some(44.9), Some(41.0), Some(12.3)],
                    [Some(88.0), Some(61.5), Some(70.2), Some(30.1)],
                    [Some(120.0), None, Some(99.9), Some(52.0)],
                ]),
            )
            .panel(
                "downtime",
                Unit::Seconds,
                groups([
                    [Some(0.30), Some(0.29), Some(0.31), Some(0.12)],
                    [Some(0.28), Some(0.25), Some(0.30), Some(0.2)],
                    [Some(0.30), None, Some(0.0), Some(0.18)],
                ]),
            )
            .panel(
                "wire bytes",
                Unit::Bytes,
                groups([
                    [
                        Some(530.0 * mib),
                        Some(528.0 * mib),
                        Some(300.0 * mib),
                        Some(45.0 * mib),
                    ],
                    [
                        Some(1100.0 * mib),
                        Some(700.0 * mib),
                        Some(800.0 * mib),
                        Some(200.0 * mib),
                    ],
                    [
                        Some(1500.0 * mib),
                        None,
                        Some(900.0 * mib),
                        Some(400.0 * mib),
                    ],
                ]),
            )
            .panel(
                "CPU time",
                Unit::Seconds,
                groups([
                    [Some(3.0), Some(5.5), Some(20.0), Some(9.0)],
                    [Some(6.0), Some(9.5), Some(31.0), Some(14.0)],
                    [Some(8.0), None, Some(40.0), Some(18.0)],
                ]),
            )
            .columns(2)
    }

    /// Writes `svg` under `$PAGEWIRE_PLOT_DIR`, if set, for a person to look at.
    fn keep(name: &str, svg: &str) {
        if let Some(dir) = std::env::var_os("PAGEWIRE_PLOT_DIR") {
            std::fs::write(Path::new(&dir).join(name), svg).unwrap();
        }
    }

    #[test]
    fn comparison_reads_at_a_glance() {
        let chart = comparison();
        let svg = chart.to_svg().unwrap();
        keep("bars-comparison.svg", &svg);
        assert_eq!(chart.layout().labels, Labels::Horizontal(11.0));
        assert_readable(&chart, &svg);
        let texts = labels(&svg);
        // A zero in its panel's unit: "0 ms" among the downtimes.
        for l in ["12.3 s", "300 ms", "1.46 GiB", "45.0 MiB", "0 ms"] {
            assert!(texts.iter().any(|t| t.text == l), "{l}");
        }
        let missing = texts.iter().filter(|t| t.text == MISSING).count();
        assert_eq!(missing, 4, "one n/a per missing value");
    }

    #[test]
    fn each_series_keeps_its_colour_in_every_panel() {
        let svg = comparison().to_svg().unwrap();
        let rects = rects(&svg);
        for i in 0..METHODS.len() {
            let n = rects.iter().filter(|r| r.fill == hex(SERIES[i])).count();
            // 4 panels x 3 workloads, less the missing ones (xbzrle's compile), plus the swatch
            let missing = if i == 1 { 4 } else { 0 };
            assert_eq!(n, 12 - missing + 1, "{}", METHODS[i]);
        }
    }

    #[test]
    fn axes_start_at_zero_with_room_above_the_tallest_bar() {
        let chart = comparison();
        let svg = chart.to_svg().unwrap();
        let rects = rects(&svg);
        let bars: Vec<&Rect> = rects
            .iter()
            .filter(|r| SERIES.iter().any(|c| hex(*c) == r.fill) && r.h > SWATCH + 1.0)
            .collect();
        // Bars of a panel share one baseline: the axis' zero.
        let mut bottoms: Vec<i64> = bars.iter().map(|r| (r.y + r.h).round() as i64).collect();
        bottoms.sort();
        bottoms.dedup();
        assert_eq!(
            bottoms.len(),
            2,
            "two rows of panels, one baseline each: {bottoms:?}"
        );
        let zeros = labels(&svg)
            .iter()
            .filter(|t| t.text.parse::<f64>() == Ok(0.0))
            .count();
        assert_eq!(zeros, 4, "every axis has a 0 tick");
    }

    #[test]
    fn crowded_labels_turn_upright_and_still_keep_apart() {
        let series: Vec<String> = (0..8).map(|i| format!("method {i}")).collect();
        let groups: Vec<Group> = (0..6)
            .map(|g| {
                Group::new(
                    format!("workload {g}"),
                    (0..8)
                        .map(|s| Some(1e9 + (g * 8 + s) as f64 * 3.3e7))
                        .collect(),
                )
            })
            .collect();
        let chart = BarChart::new("many", series).panel("wire bytes", Unit::Bytes, groups);
        let svg = chart.to_svg().unwrap();
        keep("bars-crowded.svg", &svg);
        assert_eq!(chart.layout().labels, Labels::Upright(11.0));
        assert!(labels(&svg).iter().any(|t| t.rotate == 270.0));
        assert_readable(&chart, &svg);
    }

    #[test]
    fn all_missing_or_zero_still_draws() {
        let title = "a title much longer than the one narrow panel below it, which is fine";
        let chart = BarChart::new(title, ["a", "b"]).panel(
            "time",
            Unit::Seconds,
            vec![Group::new("w", vec![None, Some(0.0)])],
        );
        let svg = chart.to_svg().unwrap();
        assert_readable(&chart, &svg);
        let texts = labels(&svg);
        assert!(texts.iter().any(|t| t.text == "n/a") && texts.iter().any(|t| t.text == "0 ms"));
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let one = |v: Vec<Option<f64>>| {
            BarChart::new("t", ["a", "b"]).panel("m", Unit::Count, vec![Group::new("g", v)])
        };
        let e = one(vec![Some(1.0)]).to_svg().unwrap_err().to_string();
        assert!(e.contains("1 values for 2 series"), "{e}");
        let e = one(vec![Some(1.0), Some(-2.0)])
            .to_svg()
            .unwrap_err()
            .to_string();
        assert!(e.contains("zero"), "{e}");
        let e = one(vec![Some(f64::NAN), None])
            .to_svg()
            .unwrap_err()
            .to_string();
        assert!(e.contains("zero"), "{e}");
        let nine: Vec<String> = (0..9).map(|i| i.to_string()).collect();
        let e = BarChart::new("t", nine)
            .panel("m", Unit::Count, vec![])
            .to_svg()
            .unwrap_err()
            .to_string();
        assert!(e.contains("colours"), "{e}");
    }
}
