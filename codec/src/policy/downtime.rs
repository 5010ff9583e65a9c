//! QEMU-style rule: stop once what remains can be sent within the downtime limit.

use super::{Decision, IterationReport, StopPolicy, DEFAULT_CEILING};

/// Stop when `remaining bytes / bandwidth <= limit`. Remaining bytes are estimated from the
/// wire bytes per page of the last iteration (so compression counts), falling back to
/// `page_size` before any page was sent. No iteration cap of its own beyond a hard ceiling.
#[derive(Debug, Clone)]
pub struct DowntimeLimit {
    /// Longest acceptable pause, in microseconds (300 ms by default).
    pub limit_us: u64,
    /// Bytes per page before anything was measured.
    pub page_size: u64,
    /// Hard ceiling on iterations so that a workload that never fits still ends.
    pub ceiling: u32,
}

impl DowntimeLimit {
    /// 300 ms, the given page size, a ceiling of 30 iterations.
    pub const fn new(page_size: u64) -> Self {
        DowntimeLimit {
            limit_us: 300_000,
            page_size,
            ceiling: DEFAULT_CEILING,
        }
    }

    /// Expected pause in microseconds if the VM stopped after this report.
    pub fn expected_downtime_us(&self, r: &IterationReport) -> u64 {
        let per_page = if r.pages_sent > 0 {
            r.bytes_sent.div_ceil(r.pages_sent)
        } else {
            self.page_size
        };
        let bytes = r.pages_remaining.saturating_mul(per_page);
        if r.bandwidth_bytes_per_s == 0 {
            return u64::MAX;
        }
        // bytes * 1e6 / bandwidth without overflow for any realistic input
        ((u128::from(bytes) * 1_000_000) / u128::from(r.bandwidth_bytes_per_s))
            .min(u128::from(u64::MAX)) as u64
    }
}

impl StopPolicy for DowntimeLimit {
    fn decide(&mut self, r: &IterationReport) -> Decision {
        if r.iteration >= self.ceiling || self.expected_downtime_us(r) <= self.limit_us {
            Decision::StopAndCopy
        } else {
            Decision::Continue
        }
    }

    fn name(&self) -> &'static str {
        "downtime-limit"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_when_the_rest_fits_the_limit() {
        let mut p = DowntimeLimit::new(4096);
        // 12.5 MB/s (100 Mbit/s), 1000 bytes per page on the wire
        let mut r = IterationReport {
            iteration: 2,
            pages_sent: 1000,
            bytes_sent: 1_000_000,
            pages_remaining: 5000, // 5 MB -> 400 ms
            bandwidth_bytes_per_s: 12_500_000,
            ..Default::default()
        };
        assert_eq!(p.expected_downtime_us(&r), 400_000);
        assert_eq!(p.decide(&r), Decision::Continue);
        r.pages_remaining = 3000; // 240 ms
        assert_eq!(p.decide(&r), Decision::StopAndCopy);
    }

    #[test]
    fn never_fitting_workload_still_ends() {
        let mut p = DowntimeLimit::new(4096);
        let mut it = 1;
        loop {
            let r = IterationReport {
                iteration: it,
                pages_sent: 100_000,
                bytes_sent: 400_000_000,
                pages_remaining: 100_000,
                bandwidth_bytes_per_s: 1_000_000,
                ..Default::default()
            };
            if p.decide(&r) == Decision::StopAndCopy {
                break;
            }
            it += 1;
        }
        assert_eq!(it, DEFAULT_CEILING);
        // unknown bandwidth never looks like it fits
        assert_eq!(
            p.expected_downtime_us(&IterationReport {
                pages_remaining: 1,
                ..Default::default()
            }),
            u64::MAX
        );
    }
}
