//! Numbers as people read them on a plot: three significant digits and a unit that keeps
//! them short ("12.3 s", "350 ms", "45.2 MiB").

/// What a metric counts, which decides how its numbers are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// Seconds; written in ms below 1 s.
    Seconds,
    /// Bytes; written in KiB, MiB or GiB.
    Bytes,
    /// A plain count; written with k or M above 10 000.
    Count,
    /// Any other unit, written after the number as given ("%", "pages/s").
    Custom(String),
}

impl Unit {
    /// The scale an axis of values up to `max` is drawn in: (divisor, unit name).
    pub fn axis_scale(&self, max: f64) -> (f64, String) {
        match self {
            Unit::Seconds if max < 1.0 => (1e-3, "ms".into()),
            Unit::Seconds => (1.0, "s".into()),
            Unit::Bytes => {
                let (d, n) = binary_scale(max);
                (d, n.into())
            }
            Unit::Count if max >= 1e7 => (1e6, "millions".into()),
            Unit::Count if max >= 1e4 => (1e3, "thousands".into()),
            Unit::Count => (1.0, String::new()),
            Unit::Custom(u) => (1.0, u.clone()),
        }
    }

    /// `v` written with its own best scale: "12.3 s", "350 ms", "1.20 GiB", "45.2k".
    pub fn format(&self, v: f64) -> String {
        match self {
            Unit::Seconds if v != 0.0 && v.abs() < 1.0 => format!("{} ms", digits(v * 1e3)),
            Unit::Seconds => format!("{} s", digits(v)),
            Unit::Bytes => {
                let (d, n) = binary_scale(v.abs());
                format!("{} {n}", digits(v / d))
            }
            Unit::Count if v.abs() >= 1e7 => format!("{}M", digits(v / 1e6)),
            Unit::Count if v.abs() >= 1e4 => format!("{}k", digits(v / 1e3)),
            Unit::Count if v.fract() == 0.0 => format!("{v:.0}"),
            Unit::Count => digits(v),
            Unit::Custom(u) if u.is_empty() => digits(v),
            Unit::Custom(u) => format!("{} {u}", digits(v)),
        }
    }
}

/// The binary unit that writes `max` with at most three digits before the point.
fn binary_scale(max: f64) -> (f64, &'static str) {
    const K: f64 = 1024.0;
    if max >= 1000.0 * K * K {
        (K * K * K, "GiB")
    } else if max >= 1000.0 * K {
        (K * K, "MiB")
    } else if max >= 1000.0 {
        (K, "KiB")
    } else {
        (1.0, "B")
    }
}

/// Three significant digits for numbers below 100, whole numbers above: short, and exact
/// enough to compare bars by.
pub fn digits(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a < 10.0 {
        format!("{v:.2}")
    } else if a < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// An axis tick in its axis' scale: as few decimals as the tick step needs.
pub fn tick(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 || step <= 0.0 {
        0
    } else {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    };
    format!("{v:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_short_with_their_own_unit() {
        assert_eq!(Unit::Seconds.format(12.34), "12.3 s");
        assert_eq!(Unit::Seconds.format(0.35), "350 ms");
        assert_eq!(Unit::Seconds.format(0.0), "0 s");
        assert_eq!(Unit::Seconds.format(1.5), "1.50 s");
        assert_eq!(Unit::Bytes.format(45.2 * 1048576.0), "45.2 MiB");
        assert_eq!(Unit::Bytes.format(1.2 * 1073741824.0), "1.20 GiB");
        assert_eq!(Unit::Bytes.format(512.0), "512 B");
        assert_eq!(Unit::Bytes.format(1010.0 * 1048576.0), "0.99 GiB");
        assert_eq!(Unit::Count.format(45_200.0), "45.2k");
        assert_eq!(Unit::Count.format(12.0), "12");
        assert_eq!(Unit::Custom("%".into()).format(3.0), "3.00 %");
    }

    #[test]
    fn axis_scales_follow_the_largest_value() {
        assert_eq!(Unit::Seconds.axis_scale(0.5), (1e-3, "ms".into()));
        assert_eq!(Unit::Bytes.axis_scale(3e9).1, "GiB");
        assert_eq!(tick(0.25, 0.05), "0.25");
        assert_eq!(tick(20.0, 5.0), "20");
    }
}
