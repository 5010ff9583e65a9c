//! The switchover controller against a real QEMU: direct migrations of the small Linux
//! guest (Debian kernel, busybox initramfs, TCG) from a source QEMU to a destination
//! started with `-incoming unix:...`, capped at 8 MiB/s so that the guest (which dirties
//! about 10 MB a second) needs many passes and never converges at the 1 ms floor: every
//! stop comes from the controller or from the limit it restored.
//!
//! * a policy that stops after pass 4, and Smart Stop: QEMU must stop right after the
//!   controller's decision (two more bitmap syncs: the one the raise triggers and the
//!   stop-and-copy's) and the destination guest go on counting its heartbeats;
//! * the controller's QMP connection cut mid-migration: it reconnects, restores the user's
//!   downtime limit, and QEMU's own rule ends the migration.
//!
//! Skipped (with the reason) where QEMU or the guest cannot be had.

mod guest;

use std::io::{self, Read, Write};
use std::ops::ControlFlow;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pagewire::policy::{AnyPolicy, Decision, PolicyKind, PolicyParams};
use pagewire_runner::machine::MigrationPair;
use pagewire_runner::qemu_stop::{
    QemuStop, StopEnd, StopOptions, StopTimeline, QEMU_DEFAULT_MAX_BANDWIDTH,
};
use pagewire_runner::trace::qmp::{Qmp, QmpAddr};
use serde_json::json;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Slow enough for several passes of about a second each.
const BANDWIDTH: u64 = 8 << 20;

/// One QEMU pair at a time: the machines have two cores.
static ONE_PAIR: Mutex<()> = Mutex::new(());

/// Xen today's rule with its iteration cap at `passes`: stops after exactly that pass (the
/// guest never leaves fewer than 50 dirty pages).
fn stop_after(passes: u32) -> AnyPolicy {
    let mut p = PolicyKind::XenToday.build(&PolicyParams::new(32768, 4096));
    p.set_max_iterations(passes);
    p
}

struct Pair {
    machines: MigrationPair,
    sq: Qmp,
    migration: String,
    last_boot_beat: u64,
}

/// Boots the source until its workload runs, and a destination waiting on a unix socket.
fn pair(g: &guest::Guest, dir: &Path) -> Pair {
    let socket = dir.join("migration.sock");
    let migration = format!("unix:{}", socket.display());
    let mut machines = MigrationPair::launch(g, dir, &migration, false).unwrap();
    machines.source.wait_ready(BOOT_TIMEOUT).unwrap();
    let beats = machines
        .source
        .console()
        .wait_for("two heartbeats", BOOT_TIMEOUT, |s| {
            (s.heartbeats.len() >= 2).then(|| s.heartbeats.clone())
        })
        .unwrap();
    let sq = machines.source.qmp().unwrap();
    Pair {
        machines,
        sq,
        migration,
        last_boot_beat: beats.last().unwrap().round,
    }
}

/// The destination must run the migrated guest on: no new boot, and heartbeats that go on
/// from where the source stopped, one after the other.
fn check_destination(p: &mut Pair) {
    let last_source_beat = p.machines.source.console().last_heartbeat().unwrap().round;
    assert!(
        last_source_beat > p.last_boot_beat,
        "the source guest ran during pre-copy"
    );
    let dst = &mut p.machines.destination;
    let mut dq = dst.qmp().unwrap();
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    let status = loop {
        let s = dq.execute("query-status", None).unwrap();
        if s["status"] != "inmigrate" {
            break s;
        }
        assert!(Instant::now() < deadline, "destination still in migration");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status["status"], "running", "destination: {status}");
    let beats: Vec<u64> = dst
        .console()
        .wait_for("three heartbeats", Duration::from_secs(30), |s| {
            (s.heartbeats.len() >= 3).then(|| s.heartbeats.iter().map(|b| b.round).collect())
        })
        .unwrap();
    let log = dst.console().text();
    assert!(
        !log.contains(guest::READY),
        "the destination guest booted again:\n{log}"
    );
    assert!(
        beats[0] + 1 >= last_source_beat && beats[0] <= last_source_beat + 3,
        "destination counts {beats:?} after the source's {last_source_beat}"
    );
    assert!(beats.windows(2).all(|w| w[1] == w[0] + 1), "{beats:?}");
}

fn downtime_limit(q: &mut Qmp) -> u64 {
    q.execute("query-migrate-parameters", None).unwrap()["downtime-limit"]
        .as_u64()
        .unwrap()
}

/// Migrates the guest under `policy` at [`BANDWIDTH`] and checks what holds for every
/// policy: one record per pass, continue until the one stop, QEMU stopped right after it
/// (the raise's sync and the stop-and-copy's, no pass of its own), the user's limit back,
/// the destination guest counting on. Returns the timeline; `None` when skipped.
fn migrate_under(policy: AnyPolicy) -> Option<StopTimeline> {
    let g = match guest::guest() {
        Ok(g) => g,
        Err(why) => {
            let _ = writeln!(io::stderr(), "SKIPPED: qemu_stop: {why}");
            return None;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut p = pair(&g, tmp.path());
    let params = p.sq.execute("query-migrate-parameters", None).unwrap();
    assert_eq!(params["max-bandwidth"], QEMU_DEFAULT_MAX_BANDWIDTH);
    let user_limit = downtime_limit(&mut p.sq);

    let opts = StopOptions {
        max_bandwidth: Some(BANDWIDTH),
        ..StopOptions::default()
    };
    let mut stop = QemuStop::new(policy, opts);
    stop.prepare(&mut p.sq).unwrap();
    assert_eq!(downtime_limit(&mut p.sq), 1, "the floor is in place");
    p.sq.execute("migrate", Some(json!({ "uri": p.migration })))
        .unwrap();
    let started = Instant::now();
    let mut polls = 0;
    let timeline = stop
        .run(&mut p.sq, |_| {
            polls += 1;
            assert!(started.elapsed() < MIGRATION_TIMEOUT, "migration too slow");
            ControlFlow::Continue(())
        })
        .unwrap();
    eprintln!(
        "qemu_stop: {}",
        serde_json::to_string_pretty(&timeline).unwrap()
    );
    assert_eq!(timeline.end, StopEnd::Completed);
    let numbers: Vec<u32> = timeline.passes.iter().map(|r| r.report.iteration).collect();
    let expected: Vec<u32> = (1..=numbers.len() as u32).collect();
    assert_eq!(numbers, expected, "one record per pass");
    let (last, before) = timeline.passes.split_last().unwrap();
    assert!(before.iter().all(|r| r.decision == Decision::Continue));
    assert_eq!(last.decision, Decision::StopAndCopy);
    assert_eq!(timeline.stop_after_pass, Some(last.report.iteration));
    // Pass k ended with sync k + 1; the raise makes QEMU sync once more and stop, and its
    // stop-and-copy syncs a last time: QEMU ran no pass of its own after the decision.
    let at_stop = timeline.dirty_sync_count_at_stop.unwrap();
    assert_eq!(at_stop, u64::from(last.report.iteration) + 1);
    assert_eq!(timeline.final_dirty_sync_count, at_stop + 2, "{timeline:?}");
    assert!(
        timeline.total_time_ms < last.seen_at_ms + 2000,
        "QEMU took {} ms to stop after the decision",
        timeline.total_time_ms - last.seen_at_ms
    );
    // The first pass sends every page once; later ones what the guest dirtied.
    let first = &timeline.passes[0].report;
    assert!(first.pages_sent >= 32768, "{first:?}");
    for r in &timeline.passes[1..] {
        assert!(
            r.report.pages_sent > 256 && r.report.pages_sent < 16384,
            "{r:?}"
        );
        assert!(r.report.bandwidth_bytes_per_s > BANDWIDTH / 2, "{r:?}");
        assert!(r.report.bandwidth_bytes_per_s < BANDWIDTH * 2, "{r:?}");
    }
    assert!(polls > 10);
    // The stop-and-copy sent what the last pass found dirty (millions of bytes here).
    assert!(
        timeline.qemu_downtime_bytes.unwrap() > 1 << 20,
        "{timeline:?}"
    );
    // QEMU's parameters are as they were found.
    assert_eq!(downtime_limit(&mut p.sq), user_limit);
    p.sq.close();
    p.machines.source.kill();
    check_destination(&mut p);
    Some(timeline)
}

#[test]
fn qemu_stops_right_after_the_policy_decides() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let Some(t) = migrate_under(stop_after(4)) else {
        return;
    };
    assert_eq!(t.policy, "xen-today");
    assert_eq!(t.stop_after_pass, Some(4));
    assert_eq!(t.final_dirty_sync_count, 7);
}

#[test]
fn smart_stop_decides_a_real_qemu_migration() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    // A lower ceiling than the default 30 keeps the test short if the crossover is late.
    let mut policy = PolicyKind::SmartStop.build(&PolicyParams::new(32768, 4096));
    policy.set_max_iterations(12);
    let Some(t) = migrate_under(policy) else {
        return;
    };
    assert_eq!(t.policy, "smart-stop");
    let stop = t.stop_after_pass.unwrap();
    // Smart Stop never stops before the crossover, which needs a pass after the first.
    assert!((2..=12).contains(&stop), "{stop}");
    eprintln!("qemu_stop: smart-stop stopped after pass {stop}");
}

/// A unix socket relay between the controller and QEMU's QMP socket that the test can cut.
struct Relay {
    path: std::path::PathBuf,
    sockets: Arc<Mutex<Vec<UnixStream>>>,
}

impl Relay {
    fn start(dir: &Path, qemu: &Path) -> Relay {
        let path = dir.join("relay.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::clone(&sockets);
        let qemu = qemu.to_path_buf();
        thread::spawn(move || {
            let (client, _) = listener.accept().unwrap();
            let server = UnixStream::connect(&qemu).unwrap();
            held.lock()
                .unwrap()
                .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
            let pump = |mut from: UnixStream, mut to: UnixStream| {
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = from.read(&mut buf) {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(std::net::Shutdown::Both);
                })
            };
            pump(client.try_clone().unwrap(), server.try_clone().unwrap());
            pump(server, client);
        });
        Relay { path, sockets }
    }

    /// Cuts both sides, as a lost connection would.
    fn cut(&self) {
        for s in self.sockets.lock().unwrap().iter() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn a_lost_qmp_connection_hands_the_switchover_back_to_qemu() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let g = match guest::guest() {
        Ok(g) => g,
        Err(why) => {
            let _ = writeln!(io::stderr(), "SKIPPED: qemu_stop: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut p = pair(&g, tmp.path());
    // The test's own connection goes; the controller talks to QEMU through the relay.
    p.sq.close();
    let relay = Relay::start(tmp.path(), p.machines.source.qmp_path());
    let mut q = Qmp::connect(&QmpAddr::Unix(relay.path.clone()), Duration::from_secs(10)).unwrap();
    // 2 s at 8 MiB/s is 16 MiB: enough for QEMU to finish on its own once it may.
    let user_limit = 2000;
    let opts = StopOptions {
        max_bandwidth: Some(BANDWIDTH),
        user_downtime_limit_ms: Some(user_limit),
        reconnect: Some(QmpAddr::Unix(p.machines.source.qmp_path().to_path_buf())),
        ..StopOptions::default()
    };
    let mut stop = QemuStop::new(stop_after(10), opts);
    stop.prepare(&mut q).unwrap();
    q.execute("migrate", Some(json!({ "uri": p.migration })))
        .unwrap();
    let err = stop
        .run(&mut q, |progress| {
            if progress.pass.is_some_and(|r| r.report.iteration == 2) {
                relay.cut();
            }
            ControlFlow::Continue(())
        })
        .unwrap_err();
    eprintln!("qemu_stop: {err}");
    assert!(err.restored, "{err}");
    assert!(err.cause.is_connection_lost(), "{err}");
    assert!(
        matches!(err.timeline.end, StopEnd::HandedToQemu { .. }),
        "{:?}",
        err.timeline.end
    );
    assert_eq!(err.timeline.passes.len(), 2);
    assert_eq!(err.timeline.stop_after_pass, None);
    // `q` is now the controller's new direct connection: the user's limit is in place and
    // QEMU's own rule ends the migration.
    assert_eq!(downtime_limit(&mut q), user_limit);
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    let info = loop {
        let info = q.execute("query-migrate", None).unwrap();
        if matches!(
            info["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            break info;
        }
        assert!(Instant::now() < deadline, "still migrating: {info}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(info["status"], "completed", "{info}");
    eprintln!(
        "qemu_stop: after the cut QEMU finished by itself: dirty-sync-count {}, downtime {} ms",
        info["ram"]["dirty-sync-count"], info["downtime"]
    );
    q.close();
    p.machines.source.kill();
    check_destination(&mut p);
}
