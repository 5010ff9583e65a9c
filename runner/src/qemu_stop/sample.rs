//! What one `query-migrate` reply says about RAM, and the translation of those replies into
//! one [`IterationReport`] per completed pre-copy pass. Pure functions of QEMU's replies, so
//! recorded replies test them.

use pagewire::policy::IterationReport;
use serde::Serialize;
use serde_json::Value;

/// The fields of one `query-migrate` reply that the switchover needs (QEMU 7.2 names in the
/// doc comments).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RamSample {
    /// `total-time`: milliseconds since the migration started.
    pub at_ms: u64,
    /// `ram.dirty-sync-count`: 1 once setup synchronised the dirty bitmap, then one more at
    /// the end of each pass (and one in the stop-and-copy).
    pub dirty_sync_count: u64,
    /// `ram.remaining`: dirty bytes not sent yet in the current pass.
    pub remaining_bytes: u64,
    /// `ram.transferred`: bytes sent so far.
    pub transferred_bytes: u64,
    /// `ram.normal` + `ram.duplicate`: pages sent so far, full or as zero pages.
    pub pages_sent: u64,
    /// `ram.dirty-pages-rate`: pages dirtied per second, as of QEMU's last bitmap sync at
    /// least a second after the one before (so it lags behind short passes).
    pub dirty_pages_rate: u64,
    /// `ram.mbps`: megabits (10^6) per second over QEMU's last 100 ms window.
    pub mbps: f64,
    /// `ram.page-size`.
    pub page_size: u64,
}

impl RamSample {
    /// Reads a `query-migrate` reply; `None` while it has no `ram` part yet (status `setup`).
    pub fn from_query_migrate(reply: &Value) -> Option<Self> {
        let ram = reply.get("ram")?;
        let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        Some(RamSample {
            at_ms: n(reply, "total-time"),
            dirty_sync_count: n(ram, "dirty-sync-count"),
            remaining_bytes: n(ram, "remaining"),
            transferred_bytes: n(ram, "transferred"),
            pages_sent: n(ram, "normal") + n(ram, "duplicate"),
            dirty_pages_rate: n(ram, "dirty-pages-rate"),
            mbps: ram.get("mbps").and_then(Value::as_f64).unwrap_or(0.0),
            page_size: match n(ram, "page-size") {
                0 => 4096,
                p => p,
            },
        })
    }

    /// Dirty pages not sent yet in the current pass.
    pub fn remaining_pages(&self) -> u64 {
        self.remaining_bytes / self.page_size
    }

    /// QEMU's bandwidth figure in bytes per second.
    pub fn bandwidth_bytes_per_s(&self) -> u64 {
        (self.mbps * 1e6 / 8.0) as u64
    }
}

/// Counters at the moment a pass ended (QEMU's bitmap sync), estimated from the samples
/// around it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct PassMark {
    pages_sent: u64,
    transferred_bytes: u64,
    at_us: u64,
}

/// Turns successive samples into one report per completed pass.
///
/// A pass ends when QEMU synchronises the dirty bitmap (`dirty-sync-count` goes up). With
/// the downtime limit at a small floor QEMU does that only once the pass has sent (almost)
/// everything, so of the pages sent between the two samples around a sync, at most the
/// earlier sample's `remaining` belong to the old pass; the rest were sent after the sync,
/// and the sync found `remaining` now plus those. Time and bytes at the sync are
/// interpolated by the same share of pages. The first pass counts from the start of the
/// migration, so the tracker must see a reply before the first pass ends.
#[derive(Debug, Clone, Default)]
pub struct PassTracker {
    last: Option<RamSample>,
    pass_start: PassMark,
}

impl PassTracker {
    /// A tracker that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next sample; returns the report of the pass that ended since the previous
    /// one, if any. Several passes ending between two samples come out as one report
    /// numbered after the last of them.
    pub fn observe(&mut self, s: &RamSample) -> Option<IterationReport> {
        let Some(prev) = self.last.replace(*s) else {
            // The first pass starts at setup's sync, with nothing sent.
            return None;
        };
        if s.dirty_sync_count <= prev.dirty_sync_count || prev.dirty_sync_count == 0 {
            return None;
        }
        let moved = s.pages_sent.saturating_sub(prev.pages_sent);
        let before_sync = moved.min(prev.remaining_pages());
        let after_sync = moved - before_sync;
        let share = |a: u64, b: u64| -> u64 {
            // the part of a..b that the pages before the sync account for
            if moved == 0 {
                a
            } else {
                a + ((u128::from(b.saturating_sub(a)) * u128::from(before_sync))
                    / u128::from(moved)) as u64
            }
        };
        let end = PassMark {
            pages_sent: prev.pages_sent + before_sync,
            transferred_bytes: share(prev.transferred_bytes, s.transferred_bytes),
            at_us: share(prev.at_ms * 1000, s.at_ms * 1000),
        };
        let start = std::mem::replace(&mut self.pass_start, end);
        let found_dirty = s.remaining_pages() + after_sync;
        let bytes_sent = end
            .transferred_bytes
            .saturating_sub(start.transferred_bytes);
        let elapsed_us = end.at_us.saturating_sub(start.at_us);
        let bandwidth = match s.bandwidth_bytes_per_s() {
            0 if elapsed_us > 0 => {
                ((u128::from(bytes_sent) * 1_000_000) / u128::from(elapsed_us)) as u64
            }
            b => b,
        };
        Some(IterationReport {
            iteration: u32::try_from(s.dirty_sync_count - 1).unwrap_or(u32::MAX),
            pages_sent: end.pages_sent.saturating_sub(start.pages_sent),
            pages_dirtied: found_dirty,
            pages_remaining: found_dirty,
            bytes_sent,
            elapsed_us,
            bandwidth_bytes_per_s: bandwidth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A `query-migrate` reply as QEMU 7.2 sends it while active (fields it sends but the
    /// switchover ignores left out).
    fn reply(
        at_ms: u64,
        sync: u64,
        remaining: u64,
        transferred: u64,
        normal: u64,
        dup: u64,
    ) -> Value {
        json!({
            "status": "active", "setup-time": 1, "total-time": at_ms, "expected-downtime": 1148,
            "ram": {
                "total": 134750208u64, "remaining": remaining, "transferred": transferred,
                "normal": normal, "duplicate": dup, "normal-bytes": normal * 4096,
                "dirty-sync-count": sync, "dirty-pages-rate": 1964, "mbps": 67.30704,
                "page-size": 4096, "skipped": 0, "postcopy-requests": 0, "multifd-bytes": 0,
                "pages-per-second": 2050, "precopy-bytes": transferred, "downtime-bytes": 0,
                "postcopy-bytes": 0, "dirty-sync-missed-zero-copy": 0
            }
        })
    }

    fn sample(v: &Value) -> RamSample {
        RamSample::from_query_migrate(v).unwrap()
    }

    #[test]
    fn reads_the_fields_of_a_reply() {
        let s = sample(&reply(10_980, 4, 9_519_104, 92_543_306, 22_516, 15_183));
        assert_eq!(s.at_ms, 10_980);
        assert_eq!(s.dirty_sync_count, 4);
        assert_eq!(s.remaining_pages(), 2324);
        assert_eq!(s.pages_sent, 22_516 + 15_183);
        assert_eq!(s.dirty_pages_rate, 1964);
        assert_eq!(s.bandwidth_bytes_per_s(), 8_413_380);
        // setup: no ram part yet
        assert_eq!(
            RamSample::from_query_migrate(&json!({"status": "setup"})),
            None
        );
    }

    /// Samples from a real run (8 MiB/s cap, 1 ms floor): pass 1 ends between 8.59 s and
    /// 8.64 s, pass 3 between 10.93 s and 10.98 s.
    #[test]
    fn one_report_per_pass_from_recorded_replies() {
        let mut t = PassTracker::new();
        let replies = [
            reply(60, 1, 132_931_584, 839_391, 204, 240),
            reply(8_590, 1, 1_003_520, 72_350_192, 17_596, 15_057),
            // sync 2: pass 1 is over
            reply(8_640, 2, 9_568_256, 73_192_602, 17_801, 15_167),
            reply(8_740, 2, 8_728_576, 74_033_930, 18_006, 15_167),
        ];
        let reports: Vec<_> = replies
            .iter()
            .filter_map(|r| t.observe(&sample(r)))
            .collect();
        assert_eq!(reports.len(), 1);
        let r = reports[0];
        assert_eq!(r.iteration, 1);
        // 315 pages went between the two samples: the 245 that remained, then 70 after
        // the sync, which found 2336 + 70 dirty pages.
        assert_eq!(r.pages_sent, 17_596 + 15_057 + 245);
        assert_eq!(r.pages_remaining, 2336 + 70);
        assert_eq!(r.pages_dirtied, r.pages_remaining);
        assert_eq!(
            r.bytes_sent,
            72_350_192 + (73_192_602u64 - 72_350_192) * 245 / 315
        );
        assert_eq!(r.elapsed_us, 8_590_000 + 50_000 * 245 / 315);
        assert_eq!(r.bandwidth_bytes_per_s, 8_413_380);
    }

    #[test]
    fn pages_sent_after_the_sync_count_as_found_dirty() {
        let mut t = PassTracker::new();
        t.observe(&sample(&reply(
            10_000, 3, 4_096_000, 80_000_000, 20_000, 15_000,
        )));
        // 169 pages remained, 205 went: 36 of them after the sync, which found 2324 + 36.
        t.observe(&sample(&reply(
            10_930, 3, 692_224, 91_701_970, 22_311, 15_183,
        )));
        let r = t
            .observe(&sample(&reply(
                10_980, 4, 9_519_104, 92_543_306, 22_516, 15_183,
            )))
            .unwrap();
        assert_eq!(r.iteration, 3);
        assert_eq!(r.pages_remaining, 2324 + 36);
        // the pass started at the tracker's first sample's view of pass 3: not known, so
        // counted from the start of the migration
        assert_eq!(r.pages_sent, 22_311 + 15_183 + 169);
        // time and bytes at the sync: 169/205 of the way from 10.93 s to 10.98 s
        assert_eq!(r.elapsed_us, 10_930_000 + 50_000 * 169 / 205);
        let bytes = 91_701_970 + (92_543_306u64 - 91_701_970) * 169 / 205;
        assert_eq!(r.bytes_sent, bytes);
        // no report without a new sync
        assert_eq!(
            t.observe(&sample(&reply(
                11_030, 4, 8_000_000, 93_000_000, 22_800, 15_183
            ))),
            None
        );
    }

    #[test]
    fn bandwidth_falls_back_to_bytes_over_time() {
        let mut t = PassTracker::new();
        let mut a = reply(1_000, 1, 0, 4_000_000, 1000, 0);
        a["ram"]["mbps"] = json!(0);
        let mut b = reply(2_000, 2, 409_600, 8_000_000, 2000, 0);
        b["ram"]["mbps"] = json!(0);
        t.observe(&sample(&a));
        let r = t.observe(&sample(&b)).unwrap();
        // remaining was 0 pages before the sync: every page moved after it
        assert_eq!(r.pages_sent, 1000);
        assert_eq!(r.pages_remaining, 100 + 1000);
        assert_eq!(r.elapsed_us, 1_000_000);
        assert_eq!(r.bandwidth_bytes_per_s, 4_000_000);
    }
}
