//! What a migration measured, as a table for people and JSON for scripts.

use std::fmt::Write as _;

use serde::Serialize;

/// One pre-copy iteration (the stop-and-copy is the last row).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct IterationRow {
    /// 1 for the first full pass.
    pub iteration: u32,
    /// Pages sent.
    pub pages_sent: u64,
    /// Pages the guest dirtied while they were sent (0 for the stop-and-copy).
    pub pages_dirtied: u64,
    /// Pages left to send afterwards.
    pub pages_remaining: u64,
    /// Codec stream bytes of this iteration.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Seconds since the migration started.
    pub start_s: f64,
    /// CPU seconds of the sending thread in it (the rest of `seconds` it waited for the
    /// link and the destination); not measured for the stop-and-copy (0).
    pub cpu_s: f64,
    /// Pages encoded while LZ4 was on (`--compress auto` switches it between windows).
    pub lz4_pages: u64,
    /// Pages sent while zstd compressed the stream.
    pub zstd_pages: u64,
    /// Pages sent whole past the cache (`auto`'s lowest stage).
    pub plain_pages: u64,
    /// The group's answer, when migrating as part of a group ("continue", "hold", "stop").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'static str>,
}

/// The outcome of one migration, as the source saw it (plus the destination's reply).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationReport {
    /// Free text: the workload.
    pub label: String,
    /// Guest memory in bytes.
    pub mem_bytes: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Stop policy.
    pub policy: String,
    /// Codec setting.
    pub codec: String,
    /// Who encoded: "inprocess" or "firmware".
    pub encoder: String,
    /// Compression: "auto", "lz4" or "none" (LZ4 on the frames), or "zstd:LEVEL" (zstd
    /// over the stream).
    pub compression: String,
    /// With "auto": every measurement window of lane 0 and the stage it led to.
    pub auto_windows: Vec<crate::migrate::compress::Window>,
    /// Lanes (`--lanes`): encoders on threads and connections of their own.
    pub lanes: u32,
    /// With "auto" and more than one lane: the windows of lanes 1.., each its own choice.
    pub lane_auto_windows: Vec<Vec<crate::migrate::compress::Window>>,
    /// Pre-copy iterations before the pause.
    pub iterations: u32,
    /// Wall-clock start, microseconds since the Unix epoch (to line up several migrations).
    pub start_unix_us: u64,
    /// Seconds from the start to the destination's reply that its VM runs.
    pub total_s: f64,
    /// Seconds from the pause at the source to the first instruction at the destination.
    pub downtime_s: f64,
    /// Seconds from the pause to the reply at the source (an upper bound on downtime that
    /// needs no clock agreement).
    pub downtime_at_source_s: f64,
    /// Part of the downtime the destination spent after the END record: digest check,
    /// vCPU state restore, start.
    pub dest_finish_s: f64,
    /// Codec stream bytes (header, frames).
    pub stream_bytes: u64,
    /// Bytes the source wrote to the network (stream, control messages and TLS), where the
    /// transport counts them; otherwise equal to `stream_bytes` plus control messages.
    pub wire_bytes: u64,
    /// Pages sent over all iterations.
    pub pages_sent: u64,
    /// Memory digest at the pause (XXH3-128, hex), which the destination matched.
    pub digest: String,
    /// Every iteration, the stop-and-copy last.
    pub rows: Vec<IterationRow>,
    /// The migration's id (hex), as the destination logs it.
    pub migration_id: String,
    /// How the source learned that the guest runs at the destination: "reply", or
    /// "status query" when the reply was lost.
    pub outcome_from: String,
}

impl IterationRow {
    /// What compressed its pages: "lz4", "zstd", "stored", "plain" (stored, and past the
    /// cache), or "mixed" when it changed.
    pub fn stage(&self) -> &'static str {
        match (self.lz4_pages, self.zstd_pages) {
            _ if self.pages_sent == 0 => "-",
            (0, 0) if self.plain_pages == self.pages_sent => "plain",
            (0, 0) if self.plain_pages == 0 => "stored",
            (n, 0) if n == self.pages_sent => "lz4",
            (0, n) if n == self.pages_sent => "zstd",
            _ => "mixed",
        }
    }
}

fn mib(b: u64) -> String {
    format!("{:.1}", b as f64 / (1u64 << 20) as f64)
}

impl MigrationReport {
    /// With "auto": the stage it started with, then each change, when and why.
    pub fn auto_steps(&self) -> Option<String> {
        let first = self.auto_windows.first()?;
        let mut steps = vec![first.stage.name()];
        let mut at = 0.0;
        for w in &self.auto_windows {
            at += w.seconds;
            if w.stage_next != w.stage {
                steps.push(format!(
                    "{} at {at:.1} s ({:.0} % waiting for the link)",
                    w.stage_next.name(),
                    w.waiting() * 100.0
                ));
            }
        }
        Some(steps.join(", "))
    }

    /// Human-readable table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "migrated {} ({} MiB, {} vCPU) with {} / codec {} / compression {} / encoder {} / \
             lanes {}",
            self.label,
            self.mem_bytes >> 20,
            self.vcpus,
            self.policy,
            self.codec,
            self.compression,
            self.encoder,
            self.lanes,
        );
        let _ = writeln!(
            s,
            "{:>9} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7}",
            "iteration", "sent", "dirtied", "remaining", "MiB", "seconds", "stage"
        );
        for r in &self.rows {
            let name = if r.iteration > self.iterations {
                "stop+copy".to_string()
            } else {
                r.iteration.to_string()
            };
            let _ = writeln!(
                s,
                "{:>9} {:>10} {:>10} {:>10} {:>10} {:>9.3} {:>7}{}",
                name,
                r.pages_sent,
                r.pages_dirtied,
                r.pages_remaining,
                mib(r.bytes),
                r.seconds,
                r.stage(),
                r.group.map(|g| format!("  group: {g}")).unwrap_or_default()
            );
        }
        if let Some(steps) = self.auto_steps() {
            let _ = writeln!(s, "auto            {steps}");
        }
        let _ = writeln!(s, "total time      {:>10.3} s", self.total_s);
        let _ = writeln!(
            s,
            "downtime        {:>10.1} ms  (pause to first instruction at the destination; {:.1} ms to the source's ack)",
            self.downtime_s * 1e3,
            self.downtime_at_source_s * 1e3
        );
        let _ = writeln!(
            s,
            "                 {:>9.1} ms of it at the destination after the last byte (digest check, restore, start)",
            self.dest_finish_s * 1e3
        );
        let _ = writeln!(
            s,
            "bytes on wire   {:>10} MiB  (codec stream {} MiB for {} MiB of pages sent)",
            mib(self.wire_bytes),
            mib(self.stream_bytes),
            mib(self.pages_sent * 4096)
        );
        let _ = writeln!(s, "iterations      {:>10}", self.iterations);
        let _ = writeln!(
            s,
            "migration id    {}  (outcome from the destination's {})",
            self.migration_id, self.outcome_from
        );
        let _ = writeln!(
            s,
            "memory digest   {} (verified at the destination)",
            self.digest
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::compress::{Stage, Window};

    #[test]
    fn table_and_json_name_every_measure() {
        let r = MigrationReport {
            label: "hot-set".into(),
            mem_bytes: 64 << 20,
            vcpus: 1,
            policy: "smart-stop".into(),
            codec: "on".into(),
            encoder: "firmware".into(),
            compression: "auto".into(),
            lanes: 1,
            lane_auto_windows: Vec::new(),
            auto_windows: vec![
                Window {
                    pages: 4096,
                    bytes: 7 << 20,
                    seconds: 1.0,
                    cpu_seconds: 0.1,
                    stage: Stage::Lz4,
                    stage_next: Stage::Zstd(1),
                    backlog_growth: None,
                },
                Window {
                    pages: 4096,
                    bytes: 7 << 20,
                    seconds: 1.0,
                    cpu_seconds: 0.2,
                    stage: Stage::Zstd(1),
                    stage_next: Stage::Zstd(1),
                    backlog_growth: Some(1 << 20),
                },
            ],
            iterations: 1,
            start_unix_us: 0,
            total_s: 1.5,
            downtime_s: 0.02,
            downtime_at_source_s: 0.03,
            dest_finish_s: 0.01,
            stream_bytes: 1 << 20,
            wire_bytes: 2 << 20,
            pages_sent: 100,
            digest: "ab".into(),
            rows: vec![IterationRow {
                iteration: 2,
                pages_sent: 5,
                pages_dirtied: 0,
                pages_remaining: 0,
                bytes: 10,
                seconds: 0.01,
                start_s: 1.0,
                cpu_s: 0.0,
                lz4_pages: 5,
                zstd_pages: 0,
                plain_pages: 0,
                group: None,
            }],
            migration_id: "00000000000000ab".into(),
            outcome_from: "reply".into(),
        };
        let t = r.table();
        for w in [
            "stop+copy",
            "total time",
            "downtime",
            "bytes on wire",
            "iterations",
            "encoder firmware",
            "compression auto",
            "migration id",
            "auto            lz4, zstd:1 at 1.0 s (90 % waiting for the link)",
            "    lz4",
        ] {
            assert!(t.contains(w), "{w} missing from\n{t}");
        }
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains("\"downtime_s\":0.02"));
        assert!(j.contains("\"stage_next\":\"zstd:1\""), "{j}");
    }
}
