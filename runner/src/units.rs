//! Link quantities as people write them: `100mbit`, `12.5MB/s`, `20ms`. Read by the
//! command line (`simulate --bandwidth --rtt`) and by the shaper (`--rate --delay`).

use anyhow::{bail, Context, Result};

/// Splits `"12.5mbit"` into its number and its lower-case unit; `what` names the option in
/// errors, `example` shows a valid value.
fn number_and_unit(s: &str, what: &str, example: &str) -> Result<(f64, String)> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("{what} {s:?}: expected a number and a unit like {example}"))?;
    Ok((v, unit.trim().to_owned()))
}

/// Parses a rate like `100mbit`, `1gbit`, `12.5MB/s`, `500kbit` into bytes per second.
pub fn parse_bandwidth(s: &str) -> Result<f64> {
    let (v, unit) = number_and_unit(s, "bandwidth", "100mbit")?;
    let bytes = match unit.as_str() {
        "bit" | "bps" => v / 8.0,
        "kbit" | "kbps" => v * 1e3 / 8.0,
        "mbit" | "mbps" => v * 1e6 / 8.0,
        "gbit" | "gbps" => v * 1e9 / 8.0,
        "b/s" | "" => v,
        "kb/s" => v * 1e3,
        "mb/s" => v * 1e6,
        "gb/s" => v * 1e9,
        other => bail!("bandwidth {s:?}: unknown unit {other:?} (use bit, kbit, mbit, gbit, or B/s, MB/s, GB/s)"),
    };
    if !(bytes.is_finite() && bytes > 0.0) {
        bail!("bandwidth {s:?} must be positive");
    }
    Ok(bytes)
}

/// Parses a duration like `20ms`, `0.5s`, `300us` into seconds.
pub fn parse_duration(s: &str) -> Result<f64> {
    let (v, unit) = number_and_unit(s, "duration", "20ms")?;
    let secs = match unit.as_str() {
        "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        other => bail!("duration {s:?}: unknown unit {other:?} (use s, ms or us)"),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        bail!("duration {s:?} must not be negative");
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates_and_durations() {
        assert_eq!(parse_bandwidth("100mbit").unwrap(), 12.5e6);
        assert_eq!(parse_bandwidth("1Gbit").unwrap(), 125e6);
        assert_eq!(parse_bandwidth("12.5MB/s").unwrap(), 12.5e6);
        assert!(parse_bandwidth("fast").is_err());
        assert!(parse_bandwidth("10parsec").is_err());
        assert!(parse_bandwidth("0mbit").is_err());
        assert_eq!(parse_duration("20ms").unwrap(), 0.02);
        assert_eq!(parse_duration("1.5s").unwrap(), 1.5);
        assert!(parse_duration("5min").is_err());
    }
}
