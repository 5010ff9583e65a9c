//! `pagewire tunnel` with real QEMUs: the small Linux guest (Debian kernel, busybox
//! initramfs, TCG) migrates from a source QEMU through the tunnel's source end, a TLS link
//! and the destination end into a destination QEMU's `-incoming`, and goes on counting its
//! heartbeats there from where it stopped (its counter lives in guest memory). The fault
//! case cuts the link mid-migration: the source guest runs on, the destination QEMU fails
//! its incoming migration and exits, and a second attempt through the same destination end
//! completes.
//!
//! Where QEMU or the Debian packages cannot be had, each test prints `SKIPPED: <reason>` on
//! stderr and passes.

mod guest;

use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use guest::{Vm, HEARTBEAT};
use pagewire::Config;
use pagewire_runner::migrate::{Codec, Deadlines};
use pagewire_runner::net::relay::ShapedRelay;
use pagewire_runner::net::{tls, Shape, Wire};
use pagewire_runner::trace::qmp::{Qmp, QmpAddr};
use pagewire_runner::tunnel::{
    tunnel_out, DestEndConfig, QemuEndpoint, SourceEndConfig, SourceReport, TunnelDest,
};
use serde_json::json;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(90);

/// One QEMU pair at a time: TCG guests on two cores slow each other down.
static ONE_PAIR: Mutex<()> = Mutex::new(());

fn heartbeats(serial: &Path) -> Vec<u64> {
    fs::read_to_string(serial)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix(HEARTBEAT)?.trim().parse().ok())
        .collect()
}

/// Waits until `until` holds for `vm`'s heartbeats; panics with the log after `timeout`
/// or if QEMU exits.
fn wait_heartbeats(vm: &mut Vm, timeout: Duration, until: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let beats = heartbeats(&vm.serial);
        if until(&beats) {
            return beats;
        }
        let log = || fs::read_to_string(&vm.serial).unwrap_or_default();
        if let Some(status) = vm.child.try_wait().unwrap() {
            panic!("QEMU exited ({status}); serial log:\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "no expected heartbeat within {timeout:?}; serial log:\n{}",
            log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn qmp(vm: &mut Vm) -> Qmp {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(q) = Qmp::connect(&QmpAddr::Unix(vm.qmp.clone()), Duration::from_secs(10)) {
            return q;
        }
        if let Some(status) = vm.child.try_wait().unwrap() {
            panic!("QEMU exited ({status}) before its QMP socket came up");
        }
        assert!(
            Instant::now() < deadline,
            "no QMP socket at {}",
            vm.qmp.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `query-migrate` until the migration is over; its last answer.
fn wait_migration(q: &mut Qmp) -> serde_json::Value {
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let v = q.execute("query-migrate", None).unwrap();
        if matches!(
            v["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "migration still {v} after {MIGRATION_TIMEOUT:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A destination QEMU for the same guest, listening on `incoming`.
fn destination(g: &guest::Guest, dir: &Path, incoming: &Path) -> Vm {
    fs::create_dir_all(dir).unwrap();
    let qmp_sock = dir.join("qmp.sock");
    let serial = dir.join("serial.log");
    let child = Command::new(&g.qemu)
        .args(g.qemu_args(&serial))
        .arg("-incoming")
        .arg(format!("unix:{}", incoming.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_sock.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the destination qemu-system-x86_64");
    let mut vm = Vm {
        child,
        qmp: qmp_sock,
        serial,
    };
    // -incoming listens once QMP is up
    drop(qmp(&mut vm));
    vm
}

/// The test's two ends: a destination end in this process, and the settings of a source end.
struct Ends {
    dest: TunnelDest,
    source: SourceEndConfig,
    _keys: tempfile::TempDir,
}

fn ends(incoming: &Path, shape: Shape) -> Ends {
    let keys = tempfile::tempdir().unwrap();
    tls::keygen(keys.path()).unwrap();
    let deadlines = Deadlines {
        progress: Duration::from_secs(20),
        ..Deadlines::default()
    };
    let dest = TunnelDest::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        DestEndConfig {
            qemu: QemuEndpoint::Unix(incoming.to_path_buf()),
            tls: Some(tls::server_config(keys.path()).unwrap()),
            deadlines,
            max_cache: 1 << 30,
            log: Arc::new(|l| eprintln!("tunnel dest: {l}")),
        },
    )
    .unwrap();
    let source = SourceEndConfig {
        to: dest.addr().to_string(),
        shape,
        tls: Some(tls::client_config(keys.path()).unwrap()),
        config: Config {
            cache_pages: 8192,
            ..Config::DEFAULT
        },
        codec: Codec::On,
        label: "tunnel-test".into(),
        deadlines,
    };
    Ends {
        dest,
        source,
        _keys: keys,
    }
}

/// Starts the source end on `sock` in a thread; its report when QEMU's migration is over.
fn source_end(
    sock: &Path,
    cfg: SourceEndConfig,
) -> thread::JoinHandle<anyhow::Result<SourceReport>> {
    let listener = QemuEndpoint::Unix(sock.to_path_buf()).listen().unwrap();
    thread::spawn(move || {
        let mut conn = listener.accept(Duration::from_secs(30))?;
        tunnel_out(&mut *conn, &cfg, &mut |_, _| {})
    })
}

/// Asks the source QEMU to migrate into the source end at `sock`, with no bandwidth cap
/// of its own (the link is the limit).
fn migrate(q: &mut Qmp, sock: &Path) {
    q.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": 1u64 << 40 })),
    )
    .unwrap();
    q.execute(
        "migrate",
        Some(json!({ "uri": format!("unix:{}", sock.display()) })),
    )
    .unwrap();
}

fn booted(g: &guest::Guest, dir: &Path) -> Vm {
    fs::create_dir_all(dir).unwrap();
    let mut src = g.boot(dir);
    src.wait_ready(BOOT_TIMEOUT);
    wait_heartbeats(&mut src, BOOT_TIMEOUT, |b| b.len() >= 2);
    src
}

fn guest_or_skip(test: &str) -> Option<guest::Guest> {
    match guest::guest() {
        Ok(g) => Some(g),
        Err(why) => {
            let _ = writeln!(io::stderr(), "SKIPPED: tunnel {test}: {why}");
            None
        }
    }
}

#[test]
fn a_real_guest_migrates_through_the_tunnel_and_runs_on() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let Some(g) = guest_or_skip("migration") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src_sock, dst_sock) = (tmp.path().join("src.sock"), tmp.path().join("dst.sock"));
    let mut src = booted(&g, &tmp.path().join("source"));
    let mut dst = destination(&g, &tmp.path().join("dest"), &dst_sock);
    let ends = ends(&dst_sock, Shape::parse("400mbit", "5ms").unwrap());
    let carrying = source_end(&src_sock, ends.source.clone());

    let mut sq = qmp(&mut src);
    migrate(&mut sq, &src_sock);
    let info = wait_migration(&mut sq);
    assert_eq!(info["status"], "completed", "source migration: {info}");
    let last_source_beat = *heartbeats(&src.serial).last().unwrap();
    let report = carrying.join().unwrap().expect("the source end");
    let dest_report = ends
        .dest
        .next(Duration::from_secs(30))
        .expect("the destination end reports")
        .expect("the destination end handed the stream to QEMU");
    drop(sq);
    src.kill();

    // The destination runs the guest on from where it stopped.
    let mut dq = qmp(&mut dst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dq.execute("query-status", None).unwrap()["status"] != "running" {
        assert!(
            Instant::now() < deadline,
            "the destination guest does not run"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let beats = wait_heartbeats(&mut dst, BOOT_TIMEOUT, |b| {
        b.iter().any(|&n| n > last_source_beat + 1)
    });
    assert!(
        beats
            .iter()
            .all(|&n| n > last_source_beat.saturating_sub(1)),
        "the destination guest counted from {beats:?}, the source stopped at {last_source_beat}"
    );
    let c = &report.carried;
    assert!(
        c.raw_pages > 0 && c.zero_pages > 0 && c.device_bytes > 1000,
        "{c:?}"
    );
    assert_eq!(
        dest_report.delivered.pages,
        c.raw_pages + c.zero_pages + c.xbzrle_pages + c.fill_pages
    );
    assert!(
        report.wire_bytes < c.qemu_bytes,
        "{} B on the link for {} B of QEMU stream",
        report.wire_bytes,
        c.qemu_bytes
    );
    eprintln!(
        "tunnel: {} B of QEMU stream as {} B on the link ({:.1} %) in {:.2} s; {} raw + {} zero \
         pages; QEMU's own figures: {}",
        c.qemu_bytes,
        report.wire_bytes,
        100.0 * report.wire_bytes as f64 / c.qemu_bytes as f64,
        report.total_s,
        c.raw_pages,
        c.zero_pages,
        info["ram"]
    );
}

#[test]
fn a_cut_link_leaves_the_source_running_and_a_second_attempt_completes() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let Some(g) = guest_or_skip("fault") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src_sock, dst_sock) = (tmp.path().join("src.sock"), tmp.path().join("dst.sock"));
    let mut src = booted(&g, &tmp.path().join("source"));
    let mut dst = destination(&g, &tmp.path().join("dest1"), &dst_sock);
    // slow enough that the cut comes mid-stream
    let mut ends = ends(&dst_sock, Shape::parse("40mbit", "5ms").unwrap());
    // an unshaped relay on the link, to cut it
    let relay = ShapedRelay::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        ends.dest.addr(),
        Wire::new(Shape::default()),
    )
    .unwrap();
    ends.source.to = relay.addr().to_string();
    let carrying = source_end(&src_sock, ends.source.clone());
    let mut sq = qmp(&mut src);
    migrate(&mut sq, &src_sock);
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    while relay.forwarded() < 1 << 20 {
        assert!(Instant::now() < deadline, "nothing crossed the link");
        thread::sleep(Duration::from_millis(10));
    }
    relay.cut();
    let info = wait_migration(&mut sq);
    assert_eq!(info["status"], "failed", "after the cut: {info}");
    let e = carrying
        .join()
        .unwrap()
        .expect_err("the source end must fail");
    eprintln!("source end after the cut: {e:#}");
    assert!(ends
        .dest
        .next(Duration::from_secs(30))
        .expect("a report")
        .is_err());
    // the destination QEMU gave up its incoming migration and exited with an error
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = dst.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the destination QEMU still waits"
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "the destination QEMU exited {status}");
    // the source guest runs on
    let before = *heartbeats(&src.serial).last().unwrap();
    assert_eq!(
        sq.execute("query-status", None).unwrap()["status"],
        "running"
    );
    wait_heartbeats(&mut src, BOOT_TIMEOUT, |b| b.last() > Some(&(before + 1)));

    // a second attempt, straight to the same destination end and a new destination QEMU
    let mut dst = destination(&g, &tmp.path().join("dest2"), &dst_sock);
    ends.source.to = ends.dest.addr().to_string();
    let carrying = source_end(&src_sock, ends.source.clone());
    migrate(&mut sq, &src_sock);
    let info = wait_migration(&mut sq);
    assert_eq!(info["status"], "completed", "second attempt: {info}");
    carrying.join().unwrap().expect("the second attempt");
    ends.dest
        .next(Duration::from_secs(30))
        .expect("a report")
        .expect("delivered");
    let last = *heartbeats(&src.serial).last().unwrap();
    drop(sq);
    src.kill();
    wait_heartbeats(&mut dst, BOOT_TIMEOUT, |b| b.iter().any(|&n| n > last + 1));
}
