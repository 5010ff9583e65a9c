//! Simulation results as tables and JSON.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::migration::RunResult;
use super::sender::CodecMode;

/// One (workload, policy, codec) run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub policy: String,
    pub codec: CodecMode,
    #[serde(flatten)]
    pub result: RunResult,
}

/// One VM of a group run.
#[derive(Debug, Clone, Serialize)]
pub struct GroupMember {
    pub name: String,
    pub mem_bytes: usize,
    #[serde(flatten)]
    pub result: RunResult,
}

/// Several VMs migrated together over one link.
#[derive(Debug, Clone, Serialize)]
pub struct GroupRun {
    /// With Synchronized Arrival, or each member on its own Smart Stop.
    pub synchronized: bool,
    pub codec: CodecMode,
    pub members: Vec<GroupMember>,
    /// Seconds between the first and the last member's stop-and-copy start.
    pub final_start_spread_s: f64,
    /// Seconds until the last member runs at the destination.
    pub total_s: f64,
}

impl GroupRun {
    /// Summarises a finished group.
    pub fn new(synchronized: bool, codec: CodecMode, members: Vec<GroupMember>) -> Self {
        let starts = members.iter().map(|m| m.result.final_start_s);
        let first = starts.clone().fold(f64::INFINITY, f64::min);
        let last = starts.fold(f64::NEG_INFINITY, f64::max);
        let total_s = members.iter().map(|m| m.result.total_s).fold(0.0, f64::max);
        GroupRun {
            synchronized,
            codec,
            members,
            final_start_spread_s: (last - first).max(0.0),
            total_s,
        }
    }
}

/// Everything one `pagewire simulate` computed.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub bandwidth_bytes_per_s: f64,
    pub rtt_s: f64,
    pub rows: Vec<Row>,
    pub groups: Vec<GroupRun>,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn change(new: f64, old: f64) -> String {
    if old == 0.0 {
        return "n/a".into();
    }
    format!("{:+.0}%", (new / old - 1.0) * 100.0)
}

impl SimReport {
    /// Workload names in report order.
    pub fn workloads(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for r in &self.rows {
            if !names.contains(&r.workload) {
                names.push(r.workload.clone());
            }
        }
        names
    }

    /// The run of one combination.
    pub fn find(&self, workload: &str, policy: &str, codec: CodecMode) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.workload == workload && r.policy == policy && r.codec == codec)
    }

    /// The human-readable report.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "link: {:.1} Mbit/s, RTT {:.0} ms\n",
            self.bandwidth_bytes_per_s * 8.0 / 1e6,
            self.rtt_s * 1e3
        );
        for w in self.workloads() {
            let _ = writeln!(s, "workload {w}");
            let _ = writeln!(
                s,
                "  {:<15} {:<21} {:>10} {:>13} {:>10} {:>6}",
                "policy", "codec", "total s", "downtime ms", "wire MiB", "iters"
            );
            for r in self.rows.iter().filter(|r| r.workload == w) {
                let _ = writeln!(
                    s,
                    "  {:<15} {:<21} {:>10.2} {:>13.0} {:>10.1} {:>6}",
                    r.policy,
                    r.codec.name(),
                    r.result.total_s,
                    r.result.downtime_s * 1e3,
                    mib(r.result.bytes),
                    r.result.iterations
                );
            }
            if let (Some(base), Some(best)) = (
                self.find(&w, "xen-classic", CodecMode::None),
                self.find(&w, "smart-stop", CodecMode::All),
            ) {
                let _ = writeln!(
                    s,
                    "  smart-stop + all vs xen-classic + none: wire bytes {}, total time {}, downtime {}",
                    change(best.result.bytes as f64, base.result.bytes as f64),
                    change(best.result.total_s, base.result.total_s),
                    change(best.result.downtime_s, base.result.downtime_s)
                );
            }
            let _ = writeln!(s);
        }
        for g in &self.groups {
            let _ = writeln!(
                s,
                "group ({}), codec {}: last VM running after {:.2} s; stop-and-copy starts spread over {:.2} s",
                if g.synchronized { "synchronized arrival" } else { "independent smart-stop" },
                g.codec.name(),
                g.total_s,
                g.final_start_spread_s
            );
            for m in &g.members {
                let _ = writeln!(
                    s,
                    "  {:<12} {:>5} MiB: {:>3} iterations, stop-and-copy at {:>7.2} s, downtime {:>6.0} ms, {:>8.1} MiB",
                    m.name,
                    m.mem_bytes >> 20,
                    m.result.iterations,
                    m.result.final_start_s,
                    m.result.downtime_s * 1e3,
                    mib(m.result.bytes)
                );
            }
        }
        s
    }

    /// Writes the report as JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(f), self)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}
