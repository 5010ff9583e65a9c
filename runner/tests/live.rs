//! End-to-end live migrations of real KVM guests between a sender and a receiver over TCP
//! loopback, shaped on the sending side: every workload arrives, its memory digest matches
//! (checked by the receiver before it resumes), it carries on and passes its own
//! self-check. Skipped (with the reason) where /dev/kvm cannot be used.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pagewire_runner::live::{receive_one, send_vm, ReceiveConfig, Received, SendConfig};
use pagewire_runner::migrate::compress::Window;
use pagewire_runner::migrate::{
    DestOptions, MigrationProgress, MigrationReport, SourceOptions, Stage,
};
use pagewire_runner::net::Shape;
use pagewire_runner::Workload;

/// Every change of stage the progress output heard.
#[derive(Default)]
struct HeardStages(Vec<Window>);

impl MigrationProgress for HeardStages {
    fn stage_changed(&mut self, w: &Window) {
        self.0.push(*w);
    }
}

fn migrate_over_tcp(w: Workload, mib: usize, shape: Shape) -> (MigrationReport, Received) {
    migrate_on_lanes(w, mib, shape, 1)
}

fn migrate_on_lanes(
    w: Workload,
    mib: usize,
    shape: Shape,
    lanes: u32,
) -> (MigrationReport, Received) {
    let mut vm = running_vm(mib, 1, w, 11);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let rcfg = ReceiveConfig {
        tls: None,
        dest: DestOptions::default(),
        run_after: Duration::from_millis(300),
        ..ReceiveConfig::default()
    };
    let dest = std::thread::spawn(move || receive_one(&listener, &rcfg));
    let cfg = SendConfig {
        to: addr.to_string(),
        shape,
        source: Arc::new(SourceOptions {
            label: w.name().into(),
            lanes,
            ..SourceOptions::default()
        }),
        tls: None,
    };
    let mut heard = HeardStages::default();
    let report = send_vm(&mut vm, &cfg, None, &mut heard).unwrap();
    // the progress output hears each of `auto`'s changes as it happens
    let changes: Vec<Window> = report
        .auto_windows
        .iter()
        .filter(|w| w.stage_next != w.stage)
        .copied()
        .collect();
    assert_eq!(heard.0, changes);
    let received = dest.join().unwrap().unwrap();
    assert!(
        !vm.is_running(),
        "the source must stay paused after a migration"
    );
    assert!(received.self_check_ok, "{}: self-check failed", w.name());
    assert!(received.heartbeats > 0);
    assert_eq!(received.reply.stream_bytes, report.stream_bytes);
    // the shaper counted at least the stream on the socket, unless zstd compressed it
    let zstd_pages: u64 = report.rows.iter().map(|r| r.zstd_pages).sum();
    if zstd_pages == 0 {
        assert!(report.wire_bytes >= report.stream_bytes);
    } else {
        assert!(report.wire_bytes < report.stream_bytes);
    }
    (report, received)
}

#[test]
fn automatic_compression_climbs_to_zstd_on_a_slow_link() {
    if !kvm_or_skip() {
        return;
    }
    let slow = Shape::parse("100mbit", "2ms").unwrap();
    let (r, _) = migrate_over_tcp(Workload::HotSet, 64, slow);
    assert_eq!(r.compression, "auto");
    // the sender waits for the link most of the time: from LZ4 one step up per window to
    // zstd 3, never down
    assert!(r.rows[0].cpu_s < 0.5 * r.rows[0].seconds, "{:?}", r.rows);
    let w = &r.auto_windows;
    assert!(w.len() >= 3, "{w:?}");
    assert_eq!(w[0].stage, Stage::Lz4, "{w:?}");
    assert_eq!(w[0].stage_next, Stage::Zstd(1), "{w:?}");
    assert!(w[2..].iter().all(|w| w.stage == Stage::Zstd(3)), "{w:?}");
    let zstd: u64 = r.rows.iter().map(|row| row.zstd_pages).sum();
    assert!(zstd * 2 > r.pages_sent, "{:?}", r.rows);
    assert!(
        r.table().contains("auto            lz4, zstd:1 at"),
        "{}",
        r.table()
    );
    assert_follows_auto(&r);
}

#[test]
fn two_lanes_carry_a_migration_on_two_connections() {
    if !kvm_or_skip() {
        return;
    }
    let fast = Shape::parse("1gbit", "2ms").unwrap();
    for w in [Workload::HotSet, Workload::Database] {
        let (r, received) = migrate_on_lanes(w, 64, fast, 2);
        assert_eq!(r.lanes, 2);
        assert!(r.table().contains("lanes 2"), "{}", r.table());
        // every page went out once in the first iteration, on one lane or the other
        assert_eq!(r.rows[0].pages_sent, 64 << 8);
        // lane 1 measured its own windows (a window is 4096 pages; it had 8192)
        assert_eq!(r.lane_auto_windows.len(), 1);
        assert!(!r.lane_auto_windows[0].is_empty());
        assert_eq!(received.decoder, "in place");
    }
}

#[test]
fn every_workload_migrates_over_shaped_tcp() {
    if !kvm_or_skip() {
        return;
    }
    let fast = Shape::parse("1gbit", "2ms").unwrap();
    for w in Workload::ALL {
        let (r, _) = migrate_over_tcp(w, 64, fast);
        assert!(r.iterations >= 1 && r.downtime_s > 0.0, "{}", w.name());
    }
}

#[test]
fn shaping_limits_rate_and_adds_delay() {
    if !kvm_or_skip() {
        return;
    }
    // 100 Mbit/s and 20 ms: the stream cannot arrive faster than the rate allows, and
    // every iteration waits at least one delay for its acknowledgement
    let shape = Shape::parse("100mbit", "20ms").unwrap();
    let (r, _) = migrate_over_tcp(Workload::Idle, 64, shape);
    let min_s = r.wire_bytes as f64 / 12.5e6;
    assert!(
        r.total_s >= min_s * 0.95,
        "{} bytes in {:.3} s beat 100 Mbit/s",
        r.wire_bytes,
        r.total_s
    );
    for row in &r.rows[..r.rows.len() - 1] {
        assert!(
            row.seconds >= 0.019,
            "iteration {} took {:.4} s",
            row.iteration,
            row.seconds
        );
    }
    assert!(
        r.downtime_s >= 0.019,
        "downtime {:.4} s is below the delay",
        r.downtime_s
    );
}

#[test]
fn demo_command_migrates_and_prints_json() {
    if !kvm_or_skip() {
        return;
    }
    let j = demo_json(&[]);
    assert_eq!(j["destination"]["self_check_ok"], true);
    assert_eq!(j["source"]["mem_bytes"], 64 << 20);
    for key in ["total_s", "downtime_s", "wire_bytes", "iterations"] {
        assert!(j["source"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    let rows = j["source"]["rows"].as_array().unwrap();
    assert!(rows[0]["pages_sent"].as_u64().unwrap() == 16384);
    for key in ["pages_sent", "pages_dirtied", "pages_remaining"] {
        assert!(rows[0].get(key).is_some(), "{key}");
    }
}
