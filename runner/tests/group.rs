//! Synchronized Arrival across processes' worth of machinery: a coordinator over TCP and
//! two senders of different sizes (64 and 256 MiB). Without the group the small VM reaches
//! its stop-and-copy far earlier than the large one; with the group their final iterations
//! start within one iteration of each other. Skipped (with the reason) where /dev/kvm
//! cannot be used.

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pagewire_runner::live::{receive_one, send_vm, ReceiveConfig, SendConfig};
use pagewire_runner::migrate::{DestOptions, Gate, MigrationReport, NoProgress, SourceOptions};
use pagewire_runner::net::coord::{self, GroupGate};
use pagewire_runner::net::Shape;
use pagewire_runner::Workload;

/// Seconds (Unix) at which the stop-and-copy started, and the length of the last
/// pre-copy iteration (from its start to the stop-and-copy's start: sending, the
/// acknowledgement and the group's answer).
fn final_start(r: &MigrationReport) -> (f64, f64) {
    let last = r.rows.last().unwrap();
    let before = &r.rows[r.rows.len() - 2];
    (
        r.start_unix_us as f64 / 1e6 + last.start_s,
        last.start_s - before.start_s,
    )
}

/// Migrates both VMs at once; with `coordinator`, as one group.
fn migrate_pair(coordinator: Option<&str>, group: &str) -> Vec<MigrationReport> {
    let specs = [
        (64, Workload::HotSet, "small"),
        (256, Workload::Database, "large"),
    ];
    let vms: Vec<_> = specs
        .iter()
        .map(|&(mib, w, _)| running_vm(mib, 1, w, 21))
        .collect();
    let mut handles = Vec::new();
    for (mut vm, &(_, _, name)) in vms.into_iter().zip(&specs) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let rcfg = ReceiveConfig {
            tls: None,
            dest: DestOptions::default(),
            run_after: Duration::ZERO,
            ..ReceiveConfig::default()
        };
        let dest = std::thread::spawn(move || receive_one(&listener, &rcfg));
        let coord = coordinator.map(str::to_owned);
        let group = group.to_owned();
        handles.push(std::thread::spawn(move || {
            let mut gate = coord.map(|c| GroupGate::join(&c, None, WAIT, &group, name, 2).unwrap());
            let cfg = SendConfig {
                to: addr,
                shape: Shape::parse("400mbit", "2ms").unwrap(),
                source: Arc::new(SourceOptions {
                    label: name.into(),
                    ..SourceOptions::default()
                }),
                tls: None,
            };
            let r = send_vm(
                &mut vm,
                &cfg,
                gate.as_mut().map(|g| g as &mut dyn Gate),
                &mut NoProgress,
            )
            .unwrap();
            assert!(dest.join().unwrap().unwrap().self_check_ok);
            r
        }));
    }
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn group_members_finish_together_and_alone_they_do_not() {
    if !kvm_or_skip() {
        return;
    }
    let alone = migrate_pair(None, "");
    let (s0, _) = final_start(&alone[0]);
    let (l0, l_iter) = final_start(&alone[1]);
    eprintln!(
        "independent: small stops at {:.3}, large at {:.3}",
        0.0,
        l0 - s0
    );
    // the small VM is done long before the large one
    assert!(
        l0 - s0 > 0.5,
        "independent finals only {:.3} s apart",
        l0 - s0
    );

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let _coordinator = coord::serve(listener, coord::CoordinatorConfig::default()).unwrap();
    let together = migrate_pair(Some(&addr), "web-and-db");
    let (s1, s_iter) = final_start(&together[0]);
    let (l1, l_iter1) = final_start(&together[1]);
    let one_iteration = s_iter.max(l_iter1).max(0.005);
    eprintln!(
        "group: finals {:.3} s apart, one iteration is {:.3} s (alone: {:.3} s apart, large's last {:.3} s)",
        (l1 - s1).abs(),
        one_iteration,
        l0 - s0,
        l_iter
    );
    assert!(
        (l1 - s1).abs() <= one_iteration + 0.02,
        "group finals {:.3} s apart, more than one iteration ({:.3} s)",
        (l1 - s1).abs(),
        one_iteration
    );
    // the small one was held: it iterated more than alone and its rows say so
    assert!(together[0].iterations > alone[0].iterations);
    assert!(together[0].rows.iter().any(|r| r.group == Some("hold")));
    assert!((l0 - s0) > 3.0 * (l1 - s1).abs());
}
