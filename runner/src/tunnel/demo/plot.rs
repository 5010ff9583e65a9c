//! The comparison as one SVG a person reads at a glance: a panel per measure (time to the
//! destination, the pause the guest saw, QEMU's downtime, bytes on the link, CPU at each
//! side, pages that differed at the destination), grouped by workload, one colour per
//! method, values above the bars. A migration that did not complete shows as "n/a"; one
//! that completed but was not verified keeps its measures, and its differing pages (or the
//! guest's missing pause) say what went wrong.

use super::method::Method;
use super::run::RunResult;
use crate::plot::{BarChart, Group, Unit};

/// One workload's runs.
pub struct WorkloadRuns<'r> {
    pub workload: &'r str,
    pub runs: &'r [RunResult],
}

/// The chart of `results` under `title` (the link).
pub fn comparison_chart(title: &str, results: &[WorkloadRuns<'_>]) -> BarChart {
    let methods: Vec<&str> = Method::ALL.iter().map(|m| m.name()).collect();
    let panel = |value: &dyn Fn(&RunResult) -> Option<f64>| -> Vec<Group> {
        results
            .iter()
            .map(|w| {
                let values = methods
                    .iter()
                    .map(|m| {
                        w.runs
                            .iter()
                            .find(|r| r.method == *m && r.total_s > 0.0)
                            .and_then(value)
                    })
                    .collect();
                Group::new(w.workload, values)
            })
            .collect()
    };
    BarChart::new(title, methods.iter().copied())
        .panel(
            "time to the destination",
            Unit::Seconds,
            panel(&|r| Some(r.total_s)),
        )
        .panel(
            "pause, source's stop to destination's arrival (QEMU's events)",
            Unit::Seconds,
            panel(&|r| r.stop_to_arrival_ms.map(|ms| ms / 1e3)),
        )
        .panel(
            "pause the guest saw in its ticks",
            Unit::Seconds,
            panel(&|r| r.guest_pause_ms.map(|ms| ms / 1e3)),
        )
        .panel(
            "QEMU's downtime figure",
            Unit::Seconds,
            panel(&|r| r.downtime_ms.map(|ms| ms as f64 / 1e3)),
        )
        .panel(
            "bytes on the link",
            Unit::Bytes,
            panel(&|r| Some(r.wire_bytes as f64)),
        )
        .panel(
            "CPU, source side",
            Unit::Seconds,
            panel(&|r| Some(r.cpu_source_s)),
        )
        .panel(
            "CPU, destination side",
            Unit::Seconds,
            panel(&|r| Some(r.cpu_destination_s)),
        )
        .panel(
            "RAM pages differing at the destination (0: verified equal)",
            Unit::Count,
            panel(&|r| r.differing_pages.map(|n| n as f64)),
        )
        .columns(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_method_and_value_is_drawn_and_a_failed_run_is_not() {
        let run = |m: Method, s: f64| RunResult {
            method: m.name().into(),
            total_s: s,
            guest_pause_ms: Some(400.0),
            downtime_ms: Some(300),
            wire_bytes: 24_000_000,
            cpu_source_s: 1.5,
            cpu_destination_s: 0.2,
            verified: true,
            ..RunResult::default()
        };
        let mut runs: Vec<RunResult> = Method::ALL.iter().map(|&m| run(m, 6.5)).collect();
        runs[1].error = Some("the migration had not ended".into());
        runs[1].total_s = 0.0;
        runs[2].differing_pages = Some(0);
        runs[3].differing_pages = Some(17);
        runs[3].total_s = 2.25;
        let mut redis = runs.clone();
        redis[0].total_s = 31.5;
        let svg = comparison_chart(
            "100 Mbit/s",
            &[
                WorkloadRuns {
                    workload: "heartbeat",
                    runs: &runs,
                },
                WorkloadRuns {
                    workload: "redis",
                    runs: &redis,
                },
            ],
        )
        .to_svg()
        .unwrap();
        for m in Method::ALL {
            assert!(svg.contains(m.name()), "{} not in the legend", m.name());
        }
        let labels: Vec<&str> = svg
            .split("<text")
            .filter_map(|t| t.split_once('>')?.1.split('<').next())
            .map(str::trim)
            .collect();
        for label in [
            "2.25 s", "6.50 s", "31.5 s", "22.9 MiB", "400 ms", "1.50 s", "0", "17",
        ] {
            assert!(labels.contains(&label), "{label} not among {labels:?}");
        }
        assert!(svg.contains("n/a"), "the failed run");
        assert!(svg.contains("heartbeat") && svg.contains("redis"));
    }
}
