//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

pub mod proxy;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use pagewire_runner::live::{ReceiveConfig, ReceiveEvent, Received, Receiver};
use pagewire_runner::net::listen::Stopper;
use pagewire_runner::vmm::{kvm_available, GuestSpec, Vm};
use pagewire_runner::Workload;

pub const MIB: usize = 1 << 20;
pub const WAIT: Duration = Duration::from_secs(30);

/// True when KVM works here; otherwise prints `SKIPPED:` and the reason.
pub fn kvm_or_skip() -> bool {
    match kvm_available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

/// A booted, running guest that has done a few rounds.
pub fn running_vm(mib: usize, vcpus: usize, w: Workload, seed: u64) -> Vm {
    let mut vm = Vm::new(mib * MIB, vcpus).unwrap();
    vm.boot(&GuestSpec::new(w, seed)).unwrap();
    vm.start().unwrap();
    vm.wait_for(WAIT, "the guest to boot", |m| {
        m.vcpus
            .iter()
            .all(|v| v.heartbeats.load(Ordering::SeqCst) >= 5)
    })
    .unwrap();
    vm
}

/// The round counters of a paused VM's vCPUs.
pub fn rounds(vm: &Vm) -> Vec<u64> {
    (0..vm.vcpu_count())
        .map(|i| vm.guest_counter(i, pagewire_runner::vmm::program::off::ROUND))
        .collect()
}

/// Checks that an arrived VM carries on from where the source stopped and passes its own
/// self-check.
pub fn check_arrived(vm: &Vm, source_rounds: &[u64]) {
    vm.wait_for(WAIT, "heartbeats at the destination", |m| {
        m.vcpus
            .iter()
            .all(|v| v.heartbeats.load(Ordering::SeqCst) >= 3)
    })
    .unwrap();
    for (i, v) in vm.monitor().vcpus.iter().enumerate() {
        let hb = v.last_heartbeat.load(Ordering::SeqCst);
        assert!(
            hb > source_rounds[i] & 0xffff_ffff,
            "vCPU {i}: heartbeat {hb} does not continue from round {}",
            source_rounds[i]
        );
        assert!(
            !v.booted.load(Ordering::SeqCst),
            "vCPU {i} started over instead of carrying on"
        );
    }
    assert!(
        vm.self_check(WAIT).unwrap(),
        "the migrated guest's self-check failed"
    );
}

/// Builds the offload firmware (once per test binary); `None` after printing `SKIPPED:`
/// and the reason where it does not build.
pub fn firmware() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-example");
        let out = Command::new(env!("CARGO"))
            .current_dir(&dir)
            .args(["build", "--release", "-p", "pagewire-fw-linux"])
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .map_err(|e| format!("cannot run cargo to build the firmware: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the firmware does not build here: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        Ok(dir.join("target/release/pagewire-fw"))
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            println!("SKIPPED: {why}");
            None
        }
    }
}

/// Checks that a migration with automatic compression switched LZ4 exactly as its rule says
/// on the windows it measured (the rule itself is unit-tested in `migrate::compress`), and
/// that the iterations' LZ4 page counts agree with the windows.
pub fn assert_follows_auto(report: &pagewire_runner::migrate::MigrationReport) {
    use pagewire_runner::migrate::Stage;
    let mut auto = pagewire_runner::migrate::AutoStage::default();
    let windows = &report.auto_windows;
    assert!(!windows.is_empty(), "no window was measured");
    let seen: Vec<_> = windows
        .iter()
        .map(|w| {
            format!(
                "{:.3}/{:.3}s:{}",
                w.cpu_seconds,
                w.seconds,
                w.stage_next.name()
            )
        })
        .collect();
    eprintln!("auto windows (CPU/wall seconds: stage next): {seen:?}");
    let mut counted = 0;
    for (k, w) in windows.iter().enumerate() {
        assert_eq!(w.stage, auto.stage(), "window {k}: {windows:?}");
        counted += w.pages;
        // a window closed early only at a check (every CHECK_PAGES of a window, or one of
        // the stream's first checks), and only where the rule closes one: to climb with
        // the sender mostly waiting, or to step down with its CPU busy past the buffers
        if w.pages < pagewire_runner::migrate::compress::WINDOW_PAGES {
            use pagewire_runner::migrate::compress::{Early, CHECK_PAGES, FIRST_CHECKS};
            assert!(
                w.pages % CHECK_PAGES == 0 || FIRST_CHECKS.contains(&counted),
                "window {k}: {windows:?}"
            );
            match auto.early(w.pages, w.seconds, w.waiting(), w.past_buffers()) {
                Early::No => panic!("window {k} closed early: {windows:?}"),
                Early::StepDown => {
                    assert_eq!(w.stage_next, auto.step_down_early(), "window {k}");
                    continue;
                }
                Early::Climb => {}
            }
        }
        assert_eq!(
            w.stage_next,
            auto.next(w.pages, w.seconds, w.cpu_seconds),
            "window {k}: {windows:?}"
        );
    }
    // pages sent with LZ4, with zstd, before the pause: at least the windows measured so
    let before_pause = &report.rows[..report.rows.len() - 1];
    let lz4_pages: u64 = before_pause.iter().map(|r| r.lz4_pages).sum();
    let zstd_pages: u64 = before_pause.iter().map(|r| r.zstd_pages).sum();
    let in_windows = |f: fn(Stage) -> bool| -> u64 {
        windows.iter().filter(|w| f(w.stage)).map(|w| w.pages).sum()
    };
    let lz4_windows = in_windows(|s| s == Stage::Lz4);
    let zstd_windows = in_windows(|s| matches!(s, Stage::Zstd(_)));
    assert!(lz4_pages >= lz4_windows, "{lz4_pages} < {lz4_windows}");
    assert!(zstd_pages >= zstd_windows, "{zstd_pages} < {zstd_windows}");
    let all_windows: u64 = windows.iter().map(|w| w.pages).sum();
    assert!(all_windows <= report.pages_sent);
}

/// The source VM still runs and its guest still passes its self-check (after a failed
/// migration).
pub fn source_alive(vm: &Vm) {
    assert!(vm.is_running(), "the source VM stopped");
    let hb = vm.monitor().heartbeats();
    vm.wait_for(WAIT, "source heartbeats", |m| m.heartbeats() > hb + 3)
        .unwrap();
    assert!(
        vm.self_check(WAIT).unwrap(),
        "the source guest's self-check failed"
    );
}

/// A link that keeps a copy of what the source sends.
pub struct Tee<L> {
    pub inner: L,
    pub sent: Vec<u8>,
}

impl<L: std::io::Write> std::io::Write for Tee<L> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.sent.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<L: std::io::Read> std::io::Read for Tee<L> {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(b)
    }
}

impl<L: pagewire_runner::net::Link> pagewire_runner::net::Link for Tee<L> {
    fn set_waits(&mut self, w: pagewire_runner::net::Waits) -> std::io::Result<()> {
        self.inner.set_waits(w)
    }
}

/// Runs `pagewire demo` on a small guest over a fast shaped link with `--json` and `extra`
/// arguments; returns the parsed JSON, failing the test (with its stderr) if demo fails.
pub fn demo_json(extra: &[&std::ffi::OsStr]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_pagewire"))
        .args([
            "demo",
            "--mem-mib",
            "64",
            "--rate",
            "1gbit",
            "--delay",
            "2ms",
            "--warmup",
            "0.3",
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A receiver listening in the background, whose events the test reads.
pub struct Listening {
    pub addr: String,
    pub events: mpsc::Receiver<ReceiveEvent>,
    pub stopper: Stopper,
    pub done: std::thread::JoinHandle<anyhow::Result<Received>>,
}

/// Starts a receiver on a loopback port with `cfg` (its events go to the test, and are
/// printed).
pub fn listen(cfg: ReceiveConfig) -> Listening {
    let (tx, events) = mpsc::channel();
    let cfg = ReceiveConfig {
        log: Arc::new(move |e: &ReceiveEvent| {
            eprintln!("receive: {e}");
            let _ = tx.send(e.clone());
        }),
        ..cfg
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let r = Receiver::start(listener, cfg).unwrap();
    let addr = r.addr().to_string();
    let stopper = r.stopper();
    let done = std::thread::spawn(move || r.wait());
    Listening {
        addr,
        events,
        stopper,
        done,
    }
}

impl Listening {
    /// The next event `pred` accepts, within `within`; fails the test with `what` if none
    /// comes.
    pub fn expect(
        &self,
        within: Duration,
        what: &str,
        pred: impl Fn(&ReceiveEvent) -> bool,
    ) -> ReceiveEvent {
        let until = Instant::now() + within;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(e) if pred(&e) => return e,
                Ok(_) => {}
                Err(_) => panic!("no event {what} within {within:?}"),
            }
        }
    }

    /// Waits for the receiver to finish by itself (a migration arrived and ran).
    pub fn finish(self) -> anyhow::Result<Received> {
        self.done.join().unwrap()
    }

    /// Stops the receiver and returns what it returned.
    pub fn stop(self) -> anyhow::Result<Received> {
        self.stopper.stop();
        self.done.join().unwrap()
    }
}

/// The reason of a `Refused` event, or `None`.
pub fn refused(e: &ReceiveEvent) -> Option<&str> {
    match e {
        ReceiveEvent::Refused { why, .. } => Some(why),
        _ => None,
    }
}

/// The reason of a `Failed` event, or `None`.
pub fn failed(e: &ReceiveEvent) -> Option<&str> {
    match e {
        ReceiveEvent::Failed { why, .. } => Some(why),
        _ => None,
    }
}

/// Asks the receiver at `addr` (over TLS with the sender keys of `keys`, or plain TCP)
/// whether migration `id` started there.
pub fn status_of(
    addr: &str,
    keys: Option<&Path>,
    id: u64,
) -> anyhow::Result<pagewire_runner::migrate::session::Status> {
    use pagewire_runner::migrate::session::{read_message, write_status_query, StatusQuery};
    use pagewire_runner::net::{tls, Link};
    let tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(WAIT))?;
    let mut link: Box<dyn Link> = match keys {
        Some(k) => Box::new(tls::connect(tcp, tls::client_config(k)?)?),
        None => Box::new(tcp),
    };
    write_status_query(&mut link, &StatusQuery { migration_id: id })?;
    read_message(&mut link)
}
