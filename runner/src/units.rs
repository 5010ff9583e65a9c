//! Link quantities and durations as people write them: `100mbit`, `12.5MB/s`, `20ms`, `2.5`
//! seconds. Read by the command line (`simulate --bandwidth --rtt`, `--warmup`, `--run`, ...)
//! and by the shaper (`--rate --delay`). Every value is range-checked here, so that no
//! number a user types can overflow a `Duration` or make a run last forever.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// The slowest link accepted: 1 kbit/s. Slower "links" only make a run last forever (the
/// simulator's clock, the shaper's sleeps).
pub const MIN_BANDWIDTH_BYTES_PER_S: f64 = 1e3 / 8.0;

/// The longest link delay accepted (`--delay`, `simulate --rtt`): 10 s, far beyond any real
/// WAN (a geostationary satellite hop is about 0.6 s round trip).
pub const MAX_LINK_DELAY: Duration = Duration::from_secs(10);

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

/// Parses a rate like `100mbit`, `1gbit`, `12.5MB/s`, `500kbit` into bytes per second; at
/// least [`MIN_BANDWIDTH_BYTES_PER_S`].
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
    if bytes < MIN_BANDWIDTH_BYTES_PER_S {
        bail!("bandwidth {s:?} is below 1kbit, slower than any link worth modelling");
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

/// Parses a link delay (`--delay 20ms`, `simulate --rtt 20ms`), at most [`MAX_LINK_DELAY`];
/// `flag` names the option in errors.
pub fn parse_link_delay(s: &str, flag: &str) -> Result<Duration> {
    let secs = parse_duration(s).with_context(|| flag.to_owned())?;
    seconds(secs, flag, MAX_LINK_DELAY)
}

/// `secs` seconds as a `Duration`, if it is a number from 0 to `max`; `flag` names the option
/// in errors. (`Duration::from_secs_f64` panics on values past `u64::MAX` seconds.)
pub fn seconds(secs: f64, flag: &str, max: Duration) -> Result<Duration> {
    match Duration::try_from_secs_f64(secs) {
        Ok(d) if d <= max => Ok(d),
        _ if secs.is_finite() && secs > 0.0 => bail!(
            "{flag} {secs} is too long: at most {} seconds",
            max.as_secs_f64()
        ),
        _ => bail!(
            "{flag} must be a number of seconds from 0 to {}",
            max.as_secs_f64()
        ),
    }
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

    #[test]
    fn absurd_values_are_refused_not_panicked_on() {
        let e = parse_bandwidth("0.000000000000000000000000000001bit").unwrap_err();
        assert!(e.to_string().contains("below 1kbit"), "{e}");
        assert_eq!(parse_bandwidth("1kbit").unwrap(), MIN_BANDWIDTH_BYTES_PER_S);
        let e = parse_link_delay("1000000000000000000000000000000s", "--rtt").unwrap_err();
        assert!(format!("{e:#}").contains("--rtt"), "{e:#}");
        assert!(format!("{e:#}").contains("at most 10 seconds"), "{e:#}");
        assert_eq!(
            parse_link_delay("20ms", "--delay").unwrap(),
            Duration::from_millis(20)
        );
        let max = Duration::from_secs(60);
        for bad in [1e300, f64::INFINITY, f64::NAN, -1.0, 61.0, 1.8e19, 1e20] {
            let e = seconds(bad, "--warmup", max).unwrap_err().to_string();
            assert!(e.contains("--warmup"), "{bad}: {e}");
        }
        assert_eq!(seconds(60.0, "--warmup", max).unwrap(), max);
        assert_eq!(seconds(0.0, "--warmup", max).unwrap(), Duration::ZERO);
    }
}
