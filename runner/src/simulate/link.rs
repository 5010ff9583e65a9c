//! The modelled network link: bandwidth, round-trip time and a TCP window.

use anyhow::{bail, Result};

use super::limits::MAX_SIMULATED_S;
use super::sender::RAW_PAGE_HEADER;

/// A WAN link as the simulator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// Line rate in bytes per second.
    pub bytes_per_s: f64,
    /// Round-trip time in seconds.
    pub rtt_s: f64,
    /// Bytes in flight at most (TCP window); throughput is capped at `window / rtt`.
    pub window_bytes: f64,
}

impl LinkModel {
    /// Throughput one stream gets: the line rate, or less when the window cannot fill a
    /// round trip.
    pub fn throughput(&self) -> f64 {
        if self.rtt_s > 0.0 {
            self.bytes_per_s.min(self.window_bytes / self.rtt_s)
        } else {
            self.bytes_per_s
        }
    }

    /// Checks up front that one full pass over `mem_bytes` of `page_size`-byte pages, every
    /// page whole (what the "none" codec row sends first), fits within
    /// [`MAX_SIMULATED_S`], so that a link too slow to simulate is refused at once instead
    /// of after hours; `who` names the guest.
    pub fn check_first_pass(&self, mem_bytes: usize, page_size: usize, who: &str) -> Result<()> {
        let pages = (mem_bytes / page_size.max(1)) as f64;
        let bytes = pages * (page_size as f64 + RAW_PAGE_HEADER as f64);
        let secs = bytes / self.throughput() + self.rtt_s;
        if secs.is_nan() || secs > MAX_SIMULATED_S {
            bail!(
                "over this link ({} bytes/s, a {}-byte window per {} s round trip) the first \
                 pass of {who} ({} MiB) alone takes {} hours of simulated time, more than the \
                 {} hours the simulator runs a migration; raise --bandwidth or --window-mib, \
                 or lower --rtt or --mem-mib",
                readable(self.bytes_per_s),
                readable(self.window_bytes),
                self.rtt_s,
                mem_bytes >> 20,
                readable(secs / 3600.0),
                MAX_SIMULATED_S / 3600.0
            );
        }
        Ok(())
    }

    /// The same link shared equally by `n` streams.
    pub fn share(&self, n: usize) -> LinkModel {
        LinkModel {
            bytes_per_s: self.bytes_per_s / n.max(1) as f64,
            window_bytes: self.window_bytes,
            ..*self
        }
    }
}

/// A number for a message: plain when it reads well, else in scientific notation.
fn readable(x: f64) -> String {
    if (0.1..1e12).contains(&x) {
        format!("{x:.1}")
    } else {
        format!("{x:.3e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_caps_throughput() {
        let l = LinkModel {
            bytes_per_s: 125e6,
            rtt_s: 0.1,
            window_bytes: 4.0 * 1024.0 * 1024.0,
        };
        assert!((l.throughput() - 41_943_040.0).abs() < 1.0);
        assert_eq!(l.share(2).bytes_per_s, 62.5e6);
    }

    #[test]
    fn a_link_too_slow_to_simulate_is_refused_up_front() {
        let l = LinkModel {
            bytes_per_s: 12.5e6,
            rtt_s: 0.02,
            window_bytes: 4.0 * 1024.0 * 1024.0,
        };
        l.check_first_pass(128 << 20, 4096, "hot-set").unwrap();
        // 1 kbit/s: 128 MiB take 12 days
        let slow = LinkModel {
            bytes_per_s: 125.0,
            ..l
        };
        let e = slow
            .check_first_pass(128 << 20, 4096, "hot-set")
            .unwrap_err();
        assert!(
            e.to_string().contains("first pass of hot-set (128 MiB)"),
            "{e}"
        );
        // a window of almost nothing: throughput is almost nothing
        let shut = LinkModel {
            window_bytes: 1e-300,
            ..l
        };
        assert!(shut.check_first_pass(1 << 20, 4096, "idle").is_err());
    }
}
