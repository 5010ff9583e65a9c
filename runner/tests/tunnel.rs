//! `pagewire tunnel` with real QEMUs: the small Linux guest (Debian kernel, busybox
//! initramfs, TCG) migrates from a source QEMU through the tunnel's source end, a TLS link
//! and the destination end into a destination QEMU started paused; both machines' RAM must
//! be identical (`pmemsave`), and once resumed the guest goes on counting its heartbeats
//! from where it stopped and passes its own checks of the files it wrote before. The fault
//! case cuts the link mid-migration: the source guest runs on, the destination QEMU fails
//! its incoming migration and exits, and a second attempt through the same destination end
//! completes; so does a new attempt after either tunnel end was killed outright. The churn
//! guest, which dirties more than the link carries, migrates only because Smart Stop decides
//! when to stop it.
//!
//! Where QEMU or the Debian packages cannot be had, each test prints `SKIPPED: <reason>` on
//! stderr and passes.

mod guest;

use std::io::{self, Write};
use std::net::TcpListener;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use pagewire::policy::PolicyKind;
use pagewire::Config;
use pagewire_runner::machine::{
    compare_machines, migrate, wait_incoming, wait_listening, wait_migration, Machine,
    MigrationPair, Start, MEM_MIB,
};
use pagewire_runner::migrate::{Codec, Deadlines};
use pagewire_runner::net::relay::ShapedRelay;
use pagewire_runner::net::{tls, Shape, Wire};
use pagewire_runner::qemu_stop::StopEnd;
use pagewire_runner::trace::qmp::{Qmp, QmpAddr};
use pagewire_runner::tunnel::switchover::{NO_BANDWIDTH_CAP, TUNNEL_FLOOR_MS};
use pagewire_runner::tunnel::{
    accept_and_tunnel_out, DestEndConfig, LinkCompression, QemuEndpoint, SourceEndConfig,
    SourceReport, Switchover, TunnelDest,
};
use serde_json::json;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(90);

/// One QEMU pair at a time: TCG guests on two cores slow each other down.
static ONE_PAIR: Mutex<()> = Mutex::new(());

/// The test's two ends: a destination end in this process, and the settings of a source end.
struct Ends {
    dest: TunnelDest,
    source: SourceEndConfig,
    _keys: tempfile::TempDir,
}

fn ends(incoming: &Path, shape: Shape, link_compression: LinkCompression) -> Ends {
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
        wire: Wire::new(shape),
        tls: Some(tls::client_config(keys.path()).unwrap()),
        config: Config {
            cache_pages: 8192,
            ..Config::DEFAULT
        },
        codec: Codec::On,
        link_compression,
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
    thread::spawn(move || accept_and_tunnel_out(&listener, &cfg, || {}, &mut |_, _| {}))
}

/// Asks the source QEMU to migrate into the source end at `sock`, with no bandwidth cap
/// of its own (the link is the limit).
fn migrate_into(q: &mut Qmp, sock: &Path) {
    q.execute(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": NO_BANDWIDTH_CAP })),
    )
    .unwrap();
    migrate(q, &format!("unix:{}", sock.display())).unwrap();
}

/// Waits until `m`'s QEMU listens for its incoming migration.
fn listening(m: &mut Machine) {
    let mut q = m.qmp().unwrap();
    wait_listening(&mut q, Duration::from_secs(30)).unwrap();
}

/// A booted source whose guest has passed two of its checks.
fn ready(source: &mut Machine) {
    source.wait_ready(BOOT_TIMEOUT).unwrap();
    source
        .console()
        .wait_for("two passed checks", BOOT_TIMEOUT, |s| {
            (s.checks_ok.len() >= 2).then_some(())
        })
        .unwrap();
}

/// The destination's guest counts on from the source's last heartbeat and passes its
/// checks, with no failure on either side.
fn runs_on(source: &Machine, destination: &Machine, after: Instant) {
    let last = source.console().last_heartbeat().unwrap().round;
    let beats = destination
        .console()
        .wait_heartbeats_after(after, 4, BOOT_TIMEOUT)
        .unwrap();
    // a heartbeat line cut by the switchover is finished at the destination, unread
    assert!(
        beats[0].round == last + 1 || beats[0].round == last + 2,
        "destination counts {:?} after the source's {last}",
        beats.iter().map(|b| b.round).collect::<Vec<_>>()
    );
    let checked = destination.console().checks_ok();
    assert!(
        checked.iter().any(|b| b.round > last),
        "no check passed at the destination"
    );
    for m in [source, destination] {
        let f = m.console().failures();
        assert!(f.is_empty(), "{f:?}");
    }
}

/// `qemu-system-x86_64 --version`'s version number.
fn qemu_version() -> Option<String> {
    let out = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let at = text.find("version ")? + "version ".len();
    text[at..].split_whitespace().next().map(str::to_owned)
}

/// QEMU before 8 under TCG loses pages of busy guests with every migration method, its own
/// direct migration included (measured in docs/TUNNEL.md; QEMU 10 did not).
fn qemu_loses_pages_itself() -> bool {
    qemu_version()
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
        .is_some_and(|major| major < 8)
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
fn a_real_guest_migrates_through_the_tunnel_with_identical_memory() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let Some(g) = guest_or_skip("migration") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (src_sock, dst_sock) = (tmp.path().join("src.sock"), tmp.path().join("dst.sock"));
    let incoming = format!("unix:{}", dst_sock.display());
    let mut pair = MigrationPair::launch(&g, tmp.path(), &incoming, true).unwrap();
    ready(&mut pair.source);
    listening(&mut pair.destination);
    let ends = ends(
        &dst_sock,
        Shape::parse("400mbit", "5ms").unwrap(),
        LinkCompression::ZstdAuto,
    );
    let carrying = source_end(&src_sock, ends.source.clone());

    let mut sq = pair.source.qmp().unwrap();
    let mut dq = pair.destination.qmp().unwrap();
    // Smart Stop decides the switchover over QEMU's second QMP socket, as `tunnel source
    // --qmp` does
    let second = QmpAddr::Unix(pair.source.second_qmp_path().to_path_buf());
    let mut cq = Qmp::connect(&second, Duration::from_secs(10)).unwrap();
    // a floor other than the default, which must reach QEMU (30 and 100 ms both kept QEMU
    // 7.2's pages whole, docs/TUNNEL.md)
    let floor_ms = 2 * TUNNEL_FLOOR_MS;
    let mut stop = Switchover::Policy {
        kind: PolicyKind::SmartStop,
        floor_ms,
    }
    .prepare(&mut cq, Some(second))
    .unwrap()
    .expect("a controller");
    migrate_into(&mut sq, &src_sock);
    let deciding = thread::spawn(move || stop.run(&mut cq, |_| ControlFlow::Continue(())));
    let outcome = wait_migration(&mut sq, MIGRATION_TIMEOUT).unwrap();
    assert!(outcome.completed(), "source migration: {}", outcome.info);
    let timeline = deciding
        .join()
        .unwrap()
        .expect("the controller saw it through");
    assert_eq!(timeline.end, StopEnd::Completed);
    assert_eq!(timeline.floor_ms, floor_ms);
    // on this fast link the passes may end between two of its polls; QEMU's limit is back
    let limit = sq.execute("query-migrate-parameters", None).unwrap()["downtime-limit"].clone();
    assert_eq!(limit, timeline.user_downtime_limit_ms, "{timeline:?}");
    let report = carrying.join().unwrap().expect("the source end");
    let dest_report = ends
        .dest
        .next(Duration::from_secs(30))
        .expect("the destination end reports")
        .expect("the destination end handed the stream to QEMU");
    assert_eq!(wait_incoming(&mut dq, MIGRATION_TIMEOUT).unwrap(), "paused");

    let same = compare_machines(&mut sq, &mut dq, &tmp.path().join("dumps")).unwrap();
    assert_eq!(same.bytes, MEM_MIB << 20);
    assert!(
        same.equal(),
        "{} pages differ, the first at {:#x}",
        same.differing_pages,
        same.first_difference.unwrap_or(0)
    );
    let resumed = Instant::now();
    dq.execute("cont", None).unwrap();
    runs_on(&pair.source, &pair.destination, resumed);

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
        "tunnel: {} B of QEMU stream as {} B on the link ({:.1} %) in {:.2} s; {} raw + {} \
         zero pages; {} MiB of RAM identical; QEMU: total {:?} ms, downtime {:?} ms",
        c.qemu_bytes,
        report.wire_bytes,
        100.0 * report.wire_bytes as f64 / c.qemu_bytes as f64,
        report.total_s,
        c.raw_pages,
        c.zero_pages,
        same.bytes >> 20,
        outcome.total_ms,
        outcome.downtime_ms
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
    let incoming = format!("unix:{}", dst_sock.display());
    let mut pair = MigrationPair::launch(&g, tmp.path(), &incoming, false).unwrap();
    ready(&mut pair.source);
    listening(&mut pair.destination);
    // slow enough that the cut comes mid-stream
    let mut ends = ends(
        &dst_sock,
        Shape::parse("40mbit", "5ms").unwrap(),
        LinkCompression::None,
    );
    // an unshaped relay on the link, to cut it
    let relay = ShapedRelay::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        ends.dest.addr(),
        Wire::new(Shape::default()),
    )
    .unwrap();
    ends.source.to = relay.addr().to_string();
    let carrying = source_end(&src_sock, ends.source.clone());
    let mut sq = pair.source.qmp().unwrap();
    migrate_into(&mut sq, &src_sock);
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    while relay.forwarded() < 1 << 20 {
        assert!(Instant::now() < deadline, "nothing crossed the link");
        thread::sleep(Duration::from_millis(10));
    }
    relay.cut();
    let cut_at = Instant::now();
    let outcome = wait_migration(&mut sq, MIGRATION_TIMEOUT).unwrap();
    assert_eq!(outcome.status, "failed", "after the cut: {}", outcome.info);
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
        if let Some(s) = pair.destination.exited() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the destination QEMU still waits"
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "the destination QEMU exited {status}");
    // the source guest runs on and passes its checks
    assert_eq!(
        sq.execute("query-status", None).unwrap()["status"],
        "running"
    );
    pair.source
        .console()
        .wait_heartbeats_after(cut_at, 2, BOOT_TIMEOUT)
        .unwrap();
    assert!(pair.source.console().failures().is_empty());

    // a second attempt, straight to the same destination end and a new destination QEMU
    let mut second = Machine::launch(
        &g,
        &tmp.path().join("second"),
        &Start::Incoming {
            uri: incoming,
            paused: false,
        },
    )
    .unwrap();
    listening(&mut second);
    ends.source.to = ends.dest.addr().to_string();
    let carrying = source_end(&src_sock, ends.source.clone());
    migrate_into(&mut sq, &src_sock);
    let outcome = wait_migration(&mut sq, MIGRATION_TIMEOUT).unwrap();
    assert!(outcome.completed(), "second attempt: {}", outcome.info);
    carrying.join().unwrap().expect("the second attempt");
    ends.dest
        .next(Duration::from_secs(30))
        .expect("a report")
        .expect("delivered");
    let done = Instant::now();
    runs_on(&pair.source, &second, done);
}

/// A `pagewire tunnel source` or `dest` process, its stderr lines collected as they come.
struct EndProcess {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl EndProcess {
    fn spawn(args: &[&str]) -> EndProcess {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pagewire"))
            .arg("tunnel")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start a tunnel end");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (err, kept) = (child.stderr.take().unwrap(), lines.clone());
        thread::spawn(move || {
            use std::io::BufRead;
            for line in io::BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("  {line}");
                kept.lock().unwrap().push(line);
            }
        });
        EndProcess { child, lines }
    }

    /// The rest of the first stderr line that starts with `prefix`.
    fn wait_line(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_owned));
            if let Some(rest) = found {
                return rest;
            }
            assert!(Instant::now() < deadline, "no line '{prefix}'");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: the end gets no chance to say goodbye to anyone.
    fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for EndProcess {
    /// An end still running when the test ends (a destination end keeps listening, and a
    /// failed assertion leaves both) goes with it.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `pagewire tunnel dest` on a port of its choosing, into the QEMU at `sock`; the
/// process and the address it listens on.
fn dest_process(sock: &Path, keys: &Path) -> (EndProcess, String) {
    let (qemu, keys) = (
        format!("unix:{}", sock.display()),
        keys.display().to_string(),
    );
    let dest = EndProcess::spawn(&[
        "dest",
        "--listen",
        "127.0.0.1:0",
        "--qemu",
        &qemu,
        "--keys",
        &keys,
        "--keep-listening",
    ]);
    let addr = dest.wait_line("tunnel dest: listening on ");
    (dest, addr)
}

/// Starts `pagewire tunnel source` for QEMU's migration to `sock`, to the destination end
/// at `to` over 40 Mbit/s (a few seconds for the test guest), once it waits for QEMU.
fn source_process(sock: &Path, to: &str, keys: &Path) -> EndProcess {
    let (qemu, keys) = (
        format!("unix:{}", sock.display()),
        keys.display().to_string(),
    );
    let source = EndProcess::spawn(&[
        "source", "--qemu", &qemu, "--to", to, "--keys", &keys, "--rate", "40mbit",
    ]);
    source.wait_line("tunnel source: waiting for QEMU");
    source
}

/// Waits until the source QEMU has written `bytes` of its migration stream and the
/// destination QEMU is loading one: the middle of a migration, with both QEMUs in it.
fn mid_migration(source: &mut Qmp, destination: &mut Machine, bytes: u64) {
    let mut dq = destination.qmp().unwrap();
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    loop {
        let info = source.execute("query-migrate", None).unwrap();
        assert!(
            matches!(info["status"].as_str(), Some("setup" | "active")),
            "{info}"
        );
        let sent = info["ram"]["transferred"].as_u64().unwrap_or(0);
        if sent >= bytes && dq.execute("query-migrate", None).unwrap()["status"] == "active" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "QEMU sent {sent} bytes, the destination loads nothing"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// After a tunnel end died mid-migration: the source QEMU's migration failed and its guest
/// runs on and passes its checks, and the destination QEMU gave up and exited with an error.
fn source_runs_on_and_destination_gave_up(
    sq: &mut Qmp,
    source: &Machine,
    destination: &mut Machine,
    what: &str,
) {
    let died = Instant::now();
    let outcome = wait_migration(sq, MIGRATION_TIMEOUT).unwrap();
    assert_eq!(outcome.status, "failed", "{what}: {}", outcome.info);
    assert_eq!(
        sq.execute("query-status", None).unwrap()["status"],
        "running",
        "{what}"
    );
    source
        .console()
        .wait_heartbeats_after(died, 2, BOOT_TIMEOUT)
        .unwrap();
    assert!(source.console().failures().is_empty(), "{what}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = destination.exited() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the destination QEMU still waits"
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !status.success(),
        "{what}: destination QEMU exited {status}"
    );
}

/// Either tunnel end killed outright (SIGKILL) in the middle of a migration: the source
/// QEMU's migration fails and its guest runs on, the destination QEMU gives up, and a new
/// attempt completes: into the same destination end after the source end died, through a
/// new one after the destination end died.
#[test]
fn a_killed_tunnel_end_leaves_the_source_running_and_a_new_attempt_completes() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let Some(g) = guest_or_skip("killed end") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    tls::keygen(&keys).unwrap();
    let dst_sock = tmp.path().join("dst.sock");
    let incoming = format!("unix:{}", dst_sock.display());
    let mut pair = MigrationPair::launch(&g, tmp.path(), &incoming, false).unwrap();
    ready(&mut pair.source);
    listening(&mut pair.destination);
    let mut sq = pair.source.qmp().unwrap();
    let new_destination = |name: &str| {
        let mut m = Machine::launch(
            &g,
            &tmp.path().join(name),
            &Start::Incoming {
                uri: incoming.clone(),
                paused: false,
            },
        )
        .unwrap();
        listening(&mut m);
        m
    };

    // the source end dies once QEMU has written 2 MiB and the destination QEMU loads them
    let (mut dest, to) = dest_process(&dst_sock, &keys);
    let sock = tmp.path().join("src1.sock");
    let mut source = source_process(&sock, &to, &keys);
    migrate_into(&mut sq, &sock);
    mid_migration(&mut sq, &mut pair.destination, 2 << 20);
    source.kill();
    source_runs_on_and_destination_gave_up(
        &mut sq,
        &pair.source,
        &mut pair.destination,
        "source end killed",
    );

    // the destination end, still listening, dies in the next attempt
    let mut second = new_destination("second");
    let sock = tmp.path().join("src2.sock");
    let mut source = source_process(&sock, &to, &keys);
    migrate_into(&mut sq, &sock);
    mid_migration(&mut sq, &mut second, 2 << 20);
    dest.kill();
    source_runs_on_and_destination_gave_up(
        &mut sq,
        &pair.source,
        &mut second,
        "destination end killed",
    );
    let ended = source.child.wait().unwrap();
    assert!(!ended.success(), "the source end after its link died");

    // a new destination end and QEMU: the third attempt completes
    let third = new_destination("third");
    let (_dest, to) = dest_process(&dst_sock, &keys);
    let sock = tmp.path().join("src3.sock");
    let mut source = source_process(&sock, &to, &keys);
    migrate_into(&mut sq, &sock);
    let outcome = wait_migration(&mut sq, MIGRATION_TIMEOUT).unwrap();
    assert!(outcome.completed(), "third attempt: {}", outcome.info);
    assert!(source.child.wait().unwrap().success());
    runs_on(&pair.source, &third, Instant::now());
}

#[test]
fn qemu_runs_the_source_end_itself_with_exec() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    let Some(g) = guest_or_skip("exec") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dst_sock = tmp.path().join("dst.sock");
    let incoming = format!("unix:{}", dst_sock.display());
    let mut pair = MigrationPair::launch(&g, tmp.path(), &incoming, false).unwrap();
    ready(&mut pair.source);
    listening(&mut pair.destination);
    let ends = ends(
        &dst_sock,
        Shape::default(),
        LinkCompression::Zstd { level: 1 },
    );
    // QEMU's stdout is the guest's console here: the source end's output goes to files
    let (out, err) = (
        tmp.path().join("source.json"),
        tmp.path().join("source.err"),
    );
    let exec = format!(
        "exec:{} tunnel source --qemu stdio --to {} --keys {} --json > {} 2> {}",
        env!("CARGO_BIN_EXE_pagewire"),
        ends.dest.addr(),
        ends._keys.path().display(),
        out.display(),
        err.display()
    );
    let mut sq = pair.source.qmp().unwrap();
    sq.execute("migrate", Some(json!({ "uri": exec }))).unwrap();
    let outcome = wait_migration(&mut sq, MIGRATION_TIMEOUT).unwrap();
    assert!(outcome.completed(), "source migration: {}", outcome.info);
    ends.dest
        .next(Duration::from_secs(30))
        .expect("a report")
        .expect("delivered");
    let done = Instant::now();
    runs_on(&pair.source, &pair.destination, done);
    // QEMU waits for its exec: child only so long: give it time to write its report
    let deadline = Instant::now() + Duration::from_secs(30);
    let report = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "no report from the source end; its stderr: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        report["tunnel"]["carried"]["raw_pages"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(
        report["tunnel"]["reply"]["ok"].as_bool().unwrap(),
        "{report}"
    );
}

/// Runs `pagewire tunnel demo --json` through the tunnel alone with `args`, and checks that
/// its one run was verified: the JSON and that run.
fn tunnel_demo(args: &[&str]) -> (serde_json::Value, serde_json::Value) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pagewire"))
        .args(["tunnel", "demo", "--json", "--methods", "pagewire-tunnel"])
        .args(args)
        .arg("--guest-cache")
        .arg(guest::target_dir().join("test-guest"))
        .output()
        .expect("run pagewire tunnel demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let runs = j["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{j}");
    let r = runs[0].clone();
    assert_eq!(r["method"], "pagewire-tunnel");
    if qemu_loses_pages_itself() && r["guest_ok"] == true && r["differing_pages"].as_u64() > Some(0)
    {
        // The migration completed, so the tunnel's end-to-end digest matched: the
        // destination QEMU got exactly the pages the source QEMU sent. The rest is QEMU
        // 7's own dirty tracking under TCG (docs/TUNNEL.md, "Pages lost by QEMU 7.2");
        // CI checks this test again under QEMU 10, where it must verify.
        assert_eq!(j["verified"], false, "{j}");
        let _ = writeln!(
            io::stderr(),
            "NOTE: tunnel demo {}: QEMU {} left {} pages stale by itself (the tunnel's digest \
             matched; the guest ran on and passed its checks)",
            r["workload"],
            qemu_version().unwrap_or_default(),
            r["differing_pages"]
        );
    } else {
        assert!(out.status.success(), "tunnel demo failed: {stderr}\n{j}");
        assert_eq!(j["verified"], true, "{j}");
        assert_eq!(r["verified"], true);
        assert_eq!(r["differing_pages"], 0);
    }
    (j, r)
}

/// `pagewire tunnel demo --json`, the command a user runs, on the test guest through the
/// tunnel alone: its JSON says the run was verified, with every field the issue names.
#[test]
fn the_demo_command_verifies_a_tunnel_run_and_prints_json() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    if guest_or_skip("demo").is_none() {
        return;
    }
    let (_, r) = tunnel_demo(&[
        "--rate",
        "400mbit",
        "--delay",
        "5ms",
        "--timeout",
        "90",
        "--floor-ms",
        "60",
    ]);
    assert_eq!(r["workload"], "heartbeat");
    assert!(r["total_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["downtime_ms"].as_u64().is_some(), "{r}");
    // Smart Stop drove it, holding QEMU's limit at the floor asked for
    assert_eq!(r["decided_by"], "smart-stop", "{r}");
    assert_eq!(r["switchover"]["floor_ms"], 60, "{r}");
    assert!(r["guest_pause_ms"].as_f64().unwrap() > 0.0, "{r}");
    // both QEMUs stamped the pause: the source's stop before the destination's arrival,
    // within the migration
    let stop_to_arrival = r["stop_to_arrival_ms"]
        .as_f64()
        .expect("stop_to_arrival_ms");
    assert!(
        stop_to_arrival > 0.0 && stop_to_arrival < r["total_s"].as_f64().unwrap() * 1e3,
        "{r}"
    );
    // and the tunnel ends' moments split it in three parts that add up to it
    let parts = &r["pause_parts"];
    let sum: f64 = ["source_qemu_ms", "tunnel_ms", "destination_qemu_ms"]
        .iter()
        .map(|k| parts[k].as_f64().unwrap_or_else(|| panic!("{k}: {r}")))
        .sum();
    assert!((sum - stop_to_arrival).abs() < 1.0, "{r}");
    // the codec and zstd carry fewer bytes than QEMU wrote
    let wire = r["wire_bytes"].as_u64().unwrap();
    assert!(
        wire > 0 && wire < r["qemu_ram_bytes"].as_u64().unwrap(),
        "{r}"
    );
}

/// The churn guest rewrites random bytes faster than 100 Mbit/s carries them, compressed or
/// not: its passes stop shrinking, so QEMU never stops it by itself at the floor, and the
/// migration ends only because Smart Stop decides to stop and copy.
#[test]
fn smart_stop_ends_the_migration_of_a_guest_that_never_converges() {
    let _one = ONE_PAIR.lock().unwrap_or_else(|e| e.into_inner());
    if guest_or_skip("churn").is_none() {
        return;
    }
    let (_, r) = tunnel_demo(&["--workload", "churn", "--timeout", "120"]);
    assert_eq!(r["workload"], "churn");
    let sw = &r["switchover"];
    assert_eq!(r["decided_by"], "smart-stop", "{r}");
    assert_eq!(sw["end"]["kind"], "completed", "{sw}");
    let stopped_after = sw["stop_after_pass"]
        .as_u64()
        .unwrap_or_else(|| panic!("the policy never decided: {sw}"));
    let passes = sw["passes"].as_array().expect("passes");
    let last = passes.last().expect("a pass");
    assert_eq!(last["decision"], "stop-and-copy", "{sw}");
    assert_eq!(last["report"]["iteration"], stopped_after, "{sw}");
    // after the first pass the guest dirtied about as much as the passes sent: they did not
    // shrink, the shape Smart Stop stops on. Taken over the passes together: the guest
    // dirties a 4 MiB file at a time, so a short pass on a slow host may see one round
    // where the pass before saw two (0.40 of its pages seen once); a guest that converged
    // would dirty almost nothing in some pass
    let (mut sent, mut dirtied) = (0.0, 0.0);
    for p in &passes[1..] {
        let s = p["report"]["pages_sent"].as_f64().unwrap();
        let d = p["report"]["pages_dirtied"].as_f64().unwrap();
        assert!(d > 0.25 * s, "pass shrank: {p}");
        (sent, dirtied) = (sent + s, dirtied + d);
    }
    assert!(dirtied > 0.7 * sent, "passes shrank: {sw}");
}
