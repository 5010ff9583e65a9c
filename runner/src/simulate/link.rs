//! The modelled network link: bandwidth, round-trip time and a TCP window.

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

    /// The same link shared equally by `n` streams.
    pub fn share(&self, n: usize) -> LinkModel {
        LinkModel {
            bytes_per_s: self.bytes_per_s / n.max(1) as f64,
            window_bytes: self.window_bytes,
            ..*self
        }
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
}
