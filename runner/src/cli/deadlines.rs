//! The deadline flags of `send`, `receive`, `demo` and `coordinator`.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;
use pagewire_runner::migrate::Deadlines;
use pagewire_runner::units::seconds;

/// Longest deadline accepted (a day): anything longer is a mistake, not a slow link.
const MAX_DEADLINE: Duration = Duration::from_secs(86_400);

/// How long either side of a migration waits for the other.
#[derive(Args, Clone)]
pub struct DeadlineArgs {
    /// Seconds to connect, complete the TLS handshake and say hello.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Seconds the stream may stall (no byte moving) before the migration is abandoned;
    /// the source keeps running.
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    progress_timeout: f64,
    /// Seconds the switchover may take beyond the time the last pages need: the source's
    /// pause is bounded by it, and so are the destination's wait for the commit and the
    /// source's wait for "started".
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    switchover_timeout: f64,
}

impl DeadlineArgs {
    /// The engine's deadlines.
    pub fn deadlines(&self) -> Result<Deadlines> {
        Ok(Deadlines {
            handshake: deadline("--handshake-timeout", self.handshake_timeout)?,
            progress: deadline("--progress-timeout", self.progress_timeout)?,
            switchover: deadline("--switchover-timeout", self.switchover_timeout)?,
            ..Deadlines::default()
        })
    }
}

/// `v` seconds of flag `flag` as a deadline: more than zero (a zero deadline would fail
/// every wait), at most a day.
pub fn deadline(flag: &str, v: f64) -> Result<Duration> {
    if v.is_nan() || v <= 0.0 {
        bail!("{flag} must be more than 0 seconds, not {v}");
    }
    seconds(v, flag, MAX_DEADLINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_must_be_positive_and_sane() {
        assert_eq!(deadline("--x", 1.5).unwrap(), Duration::from_millis(1500));
        for bad in [0.0, -1.0, f64::NAN] {
            let e = deadline("--x", bad).unwrap_err().to_string();
            assert!(e.contains("--x must be more than 0 seconds"), "{e}");
        }
        for bad in [f64::INFINITY, 1e300, 86_401.0] {
            let e = deadline("--x", bad).unwrap_err().to_string();
            assert!(e.contains("--x ") && e.contains("86400"), "{e}");
        }
    }
}
