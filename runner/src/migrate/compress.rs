//! LZ4 on or off, chosen while migrating. On a slow link LZ4's 2-3x fewer bytes win; on a
//! fast one its compression (under 1 GB/s of pages here) makes the CPU the bottleneck and
//! plain frames move memory faster (`docs/PERFORMANCE.md`, "The best setting depends on the
//! link"). The sender measures, per iteration, the time spent in the encoder against the
//! iteration's wall time: the share left is the CPU headroom, time spent waiting for the
//! link.

use anyhow::{bail, Result};

/// How frames are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Pick LZ4 on or off per iteration from the measured headroom ([`AutoLz4`]).
    Auto,
    /// LZ4 on every frame where it saves bytes.
    Lz4,
    /// Frames stored.
    None,
}

impl Compression {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }

    /// Looks a setting up by name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Compression::Auto),
            "lz4" => Ok(Compression::Lz4),
            "none" => Ok(Compression::None),
            _ => bail!("unknown compression {s:?}: use auto, lz4 or none"),
        }
    }
}

/// Iterations with fewer pages say too little about speed to act on.
pub const MIN_PAGES: u64 = 1024;
/// Below this headroom the encoder is the bottleneck: try frames without LZ4.
pub const CPU_BOUND: f64 = 0.25;
/// Above this headroom the sender mostly waits for the link: try LZ4.
pub const LINK_BOUND: f64 = 0.5;
/// The other setting must have moved pages this much faster to switch back to it.
pub const HYSTERESIS: f64 = 1.1;

/// The choice of LZ4 per iteration: start with it on; leave it when the encoder is the
/// bottleneck, come back when the link is; once both have been seen, the one that moved
/// more pages per second wins a contested switch.
#[derive(Debug, Clone)]
pub struct AutoLz4 {
    on: bool,
    /// Pages per second last seen with LZ4 off (`[0]`) and on (`[1]`).
    rate: [Option<f64>; 2],
}

impl Default for AutoLz4 {
    fn default() -> Self {
        AutoLz4 {
            on: true,
            rate: [None, None],
        }
    }
}

impl AutoLz4 {
    /// LZ4 for the current iteration.
    pub fn on(&self) -> bool {
        self.on
    }

    /// After an iteration of `pages` pages that took `seconds`, `encoder_seconds` of them
    /// inside the encoder: LZ4 for the next iteration.
    pub fn next(&mut self, pages: u64, seconds: f64, encoder_seconds: f64) -> bool {
        if pages < MIN_PAGES || seconds <= 0.0 {
            return self.on;
        }
        let rate = pages as f64 / seconds;
        self.rate[usize::from(self.on)] = Some(rate);
        let headroom = 1.0 - (encoder_seconds / seconds).clamp(0.0, 1.0);
        let other = self.rate[usize::from(!self.on)];
        let other_better = other.is_none_or(|r| r > rate * HYSTERESIS);
        let switch = if self.on {
            headroom < CPU_BOUND && other_better
        } else {
            headroom > LINK_BOUND && other_better
        };
        if switch {
            self.on = !self.on;
        }
        self.on
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [Compression::Auto, Compression::Lz4, Compression::None] {
            assert_eq!(Compression::parse(c.name()).unwrap(), c);
        }
        assert!(Compression::parse("zip").is_err());
    }

    #[test]
    fn a_slow_link_keeps_lz4() {
        let mut a = AutoLz4::default();
        // 10% of the time in the encoder, the rest waiting for the link
        for _ in 0..10 {
            assert!(a.next(30_000, 10.0, 1.0));
        }
    }

    #[test]
    fn a_busy_cpu_drops_lz4_and_stays_off_while_it_is_busy() {
        let mut a = AutoLz4::default();
        assert!(!a.next(30_000, 0.2, 0.19));
        for _ in 0..5 {
            assert!(!a.next(30_000, 0.1, 0.09));
        }
    }

    #[test]
    fn lz4_comes_back_when_the_link_is_the_bottleneck_again_unless_it_was_slower() {
        let mut a = AutoLz4::default();
        assert!(!a.next(30_000, 0.2, 0.19)); // CPU-bound with LZ4: 150k pages/s
                                             // without LZ4 the link became the bottleneck, and it moved fewer pages per second
        assert!(a.next(30_000, 0.4, 0.05));
        // CPU-bound with LZ4 again, but plain frames were slower: stay
        assert!(a.next(30_000, 0.2, 0.19));
        // LZ4 gets much slower (the link got faster?): plain frames were faster
        assert!(!a.next(30_000, 0.5, 0.45));
    }

    #[test]
    fn small_iterations_change_nothing() {
        let mut a = AutoLz4::default();
        assert!(a.next(MIN_PAGES - 1, 0.001, 0.001));
        assert!(a.next(5000, 0.0, 0.0));
        assert_eq!(a.rate, [None, None]);
    }
}
