//! Reads back what the plots wrote, for tests: the `rect` and `text` elements of an SVG from
//! plotters, and the box each text covers (estimated from its characters, 0.6 em each).

/// A `rect` element.
#[derive(Debug, Clone, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
    pub fill: String,
}

/// A `text` element.
#[derive(Debug, Clone, PartialEq)]
pub struct Label {
    pub x: f64,
    pub y: f64,
    pub size: f64,
    pub anchor: String,
    pub dy: String,
    pub rotate: f64,
    pub fill: String,
    pub text: String,
}

/// An axis-aligned box: (left, top, right, bottom).
pub type Bbox = (f64, f64, f64, f64);

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let len = tag[start..].find('"')?;
    Some(tag[start..start + len].to_owned())
}

fn num(tag: &str, name: &str) -> f64 {
    attr(tag, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no number {name} in {tag}"))
}

/// Every `rect`, in drawing order.
pub fn rects(svg: &str) -> Vec<Rect> {
    svg.split("<rect")
        .skip(1)
        .map(|s| {
            let tag = &s[..s.find("/>").expect("rect closes")];
            Rect {
                x: num(tag, "x"),
                y: num(tag, "y"),
                w: num(tag, "width"),
                h: num(tag, "height"),
                fill: attr(tag, "fill").unwrap_or_default(),
            }
        })
        .collect()
}

/// A `polyline` element (plotters' line series and axes).
#[derive(Debug, Clone, PartialEq)]
pub struct Polyline {
    pub stroke: String,
    pub points: Vec<(f64, f64)>,
}

/// Every `polyline`, in drawing order.
pub fn polylines(svg: &str) -> Vec<Polyline> {
    svg.split("<polyline")
        .skip(1)
        .map(|s| {
            let tag = &s[..s.find("/>").expect("polyline closes")];
            let points = attr(tag, "points")
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| {
                    let (x, y) = p.split_once(',')?;
                    Some((x.parse().ok()?, y.parse().ok()?))
                })
                .collect();
            Polyline {
                stroke: attr(tag, "stroke").unwrap_or_default(),
                points,
            }
        })
        .collect()
}

/// Every `text`, in drawing order.
pub fn labels(svg: &str) -> Vec<Label> {
    svg.split("<text")
        .skip(1)
        .map(|s| {
            let close = s.find('>').expect("text opens");
            let tag = &s[..close];
            let body = &s[close + 1..s.find("</text>").expect("text closes")];
            let rotate = attr(tag, "transform")
                .and_then(|t| {
                    t.strip_prefix("rotate(")
                        .and_then(|r| r.split(',').next())
                        .and_then(|a| a.trim().parse().ok())
                })
                .unwrap_or(0.0);
            Label {
                x: num(tag, "x"),
                y: num(tag, "y"),
                size: num(tag, "font-size"),
                anchor: attr(tag, "text-anchor").unwrap_or_else(|| "start".into()),
                dy: attr(tag, "dy").unwrap_or_default(),
                rotate,
                fill: attr(tag, "fill").unwrap_or_default(),
                text: body
                    .trim()
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&amp;", "&"),
            }
        })
        .collect()
}

impl Label {
    /// The box the text covers: 0.6 em a character wide, 1 em tall, placed by its anchor
    /// and `dy` as plotters sets them, then turned by its rotation about (x, y).
    pub fn bbox(&self) -> Bbox {
        let w = self.text.chars().count() as f64 * 0.6 * self.size;
        let (l0, l1) = match self.anchor.as_str() {
            "middle" => (-w / 2.0, w / 2.0),
            "end" => (-w, 0.0),
            _ => (0.0, w),
        };
        let (t0, t1) = match self.dy.as_str() {
            "0.76em" => (0.0, self.size),                   // top
            "0.5ex" => (-self.size / 2.0, self.size / 2.0), // centre
            _ => (-self.size, 0.0),                         // bottom
        };
        let (x0, y0, x1, y1) = match self.rotate as i64 {
            270 => (t0, -l1, t1, -l0),
            90 => (-t1, l0, -t0, l1),
            _ => (l0, t0, l1, t1),
        };
        (self.x + x0, self.y + y0, self.x + x1, self.y + y1)
    }
}

impl Rect {
    pub fn bbox(&self) -> Bbox {
        (self.x, self.y, self.x + self.w, self.y + self.h)
    }
}

/// Whether two boxes share more than a hairline.
pub fn overlap(a: Bbox, b: Bbox) -> bool {
    a.0 < b.2 - 0.5 && b.0 < a.2 - 0.5 && a.1 < b.3 - 0.5 && b.1 < a.3 - 0.5
}

/// `#RRGGBB` as plotters writes colours.
pub fn hex(c: plotters::style::RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}
