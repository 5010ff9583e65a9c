//! Never two live copies: the switchover loses a message at each of its loss points (the
//! commit, the destination's reply that the guest started, the status query) through a
//! fault-injecting proxy between send and receive (plain TCP, so the proxy sees the
//! session's messages). Each test asserts where each copy of the guest ends up: exactly one
//! runs, or none and the source says so in one clear line. Skipped (with the reason) where
//! /dev/kvm cannot be used.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::proxy::{proxy, Faults, StatusFault};
use common::*;
use pagewire_runner::live::{send_vm, ReceiveConfig, ReceiveEvent, SendConfig};
use pagewire_runner::migrate::{
    Deadlines, DestOptions, MigrationReport, NoProgress, OutcomeUnknown, SourceOptions,
};
use pagewire_runner::net::Shape;
use pagewire_runner::vmm::Vm;
use pagewire_runner::Workload;

/// Short deadlines for the switchover (what the tests trip), generous ones elsewhere.
fn deadlines() -> Deadlines {
    Deadlines {
        handshake: Duration::from_secs(2),
        progress: Duration::from_secs(10),
        switchover: Duration::from_secs(1),
        status_attempts: 2,
    }
}

fn receiver() -> Listening {
    listen(ReceiveConfig {
        dest: DestOptions {
            deadlines: deadlines(),
            ..DestOptions::default()
        },
        run_after: Duration::from_millis(200),
        ..ReceiveConfig::default()
    })
}

fn send(to: &str, vm: &mut Vm) -> anyhow::Result<MigrationReport> {
    let cfg = SendConfig {
        to: to.into(),
        shape: Shape::default(),
        source: Arc::new(SourceOptions {
            deadlines: deadlines(),
            ..SourceOptions::default()
        }),
        tls: None,
    };
    send_vm(vm, &cfg, None, &mut NoProgress)
}

/// The one clear line of a source that cannot tell.
fn assert_outcome_unknown(e: &anyhow::Error) {
    assert!(e.downcast_ref::<OutcomeUnknown>().is_some(), "{e:#}");
    let line = format!("{e:#}");
    assert!(!line.contains('\n'), "not one line: {line}");
    assert!(line.starts_with("OUTCOME UNKNOWN for migration"), "{line}");
    assert!(line.contains("stays paused"), "{line}");
    assert!(line.contains("check on the destination host"), "{line}");
}

/// The source's VM is paused and stays paused: it does not run beside another copy.
fn assert_stays_paused(vm: &Vm) {
    let hb = vm.monitor().heartbeats();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!vm.is_running(), "the source VM runs");
    assert_eq!(vm.monitor().heartbeats(), hb, "the source guest ran");
}

#[test]
fn a_lost_commit_never_starts_the_destination_and_the_source_resumes() {
    if !kvm_or_skip() {
        return;
    }
    let dest = receiver();
    let p = proxy(
        dest.addr.clone(),
        Faults {
            drop_commit: true,
            ..Faults::default()
        },
    );
    let mut vm = running_vm(16, 1, Workload::HotSet, 31);
    let e = format!("{:#}", send(&p.addr, &mut vm).unwrap_err());
    assert!(p.saw("commit swallowed"), "the fault was not injected");
    assert!(p.saw("status query passed"));
    assert!(e.contains("did not start the guest"), "{e}");
    // the destination dropped its copy unstarted...
    let ev = dest.expect(WAIT, "of the aborted migration", |e| {
        failed(e).is_some() || matches!(e, ReceiveEvent::Started { .. })
    });
    assert!(failed(&ev).is_some(), "the destination started: {ev}");
    assert!(
        dest.stop().is_err(),
        "a migration arrived at the destination"
    );
    // ...and the source's copy runs: exactly one
    source_alive(&vm);
}

#[test]
fn a_lost_reply_is_learned_by_a_status_query_and_the_source_stays_paused() {
    if !kvm_or_skip() {
        return;
    }
    let dest = receiver();
    let p = proxy(
        dest.addr.clone(),
        Faults {
            drop_reply: true,
            ..Faults::default()
        },
    );
    let mut vm = running_vm(16, 1, Workload::HotSet, 32);
    let t = Instant::now();
    let r = send(&p.addr, &mut vm).unwrap();
    assert!(
        p.saw("reply swallowed (ok: true)"),
        "the fault was not injected"
    );
    assert!(p.saw("status query passed"));
    assert_eq!(r.outcome_from, "status query");
    // the source learned it within its wait for the reply and one query
    assert!(r.downtime_at_source_s < 3.0, "{}", r.downtime_at_source_s);
    assert!(t.elapsed() < Duration::from_secs(15));
    // the destination's copy runs and checks itself; the source's stays paused
    assert_stays_paused(&vm);
    let got = dest.finish().unwrap();
    assert!(got.self_check_ok && got.heartbeats > 0);
    assert_eq!(got.migration_id, r.migration_id);
}

#[test]
fn a_lost_reply_and_lost_status_queries_leave_one_copy_and_one_clear_line() {
    if !kvm_or_skip() {
        return;
    }
    let dest = receiver();
    let p = proxy(
        dest.addr.clone(),
        Faults {
            drop_reply: true,
            status: StatusFault::Refuse,
            ..Faults::default()
        },
    );
    let mut vm = running_vm(16, 1, Workload::HotSet, 33);
    let e = send(&p.addr, &mut vm).unwrap_err();
    assert!(p.saw("reply swallowed (ok: true)") && p.saw("status query refused"));
    assert_outcome_unknown(&e);
    // the source cannot tell, so it does not run: the destination's copy is the one
    assert_stays_paused(&vm);
    let got = dest.stop().unwrap();
    assert!(got.self_check_ok);
}

#[test]
fn a_lost_commit_and_unanswered_status_queries_leave_no_copy_and_one_clear_line() {
    if !kvm_or_skip() {
        return;
    }
    let dest = receiver();
    let p = proxy(
        dest.addr.clone(),
        Faults {
            drop_commit: true,
            status: StatusFault::BlackHole,
            ..Faults::default()
        },
    );
    let mut vm = running_vm(16, 1, Workload::HotSet, 34);
    let t = Instant::now();
    let e = send(&p.addr, &mut vm).unwrap_err();
    assert!(p.saw("commit swallowed") && p.saw("status query black-holed"));
    assert_outcome_unknown(&e);
    // bounded: the wait for the reply and two queries, each within the deadline
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_stays_paused(&vm);
    // the destination never started its copy either: the line tells the operator to check
    let ev = dest.expect(WAIT, "of the aborted migration", |e| {
        failed(e).is_some() || matches!(e, ReceiveEvent::Started { .. })
    });
    assert!(failed(&ev).is_some(), "the destination started: {ev}");
    assert!(dest.stop().is_err());
}
