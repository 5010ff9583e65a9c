//! Faults mid-migration: the link drops, the destination process dies, the link turns into
//! a black hole (after 10 MB of pre-copy, or at the pause), the destination is frozen at
//! the pause, the sender is stopped mid pre-copy. Nothing waits for ever: the source VM
//! keeps running (its guest still passes its self-check) and its pause stays within the
//! switchover deadline, `send` fails with a clear error naming the deadline, and the
//! destination never starts the half-migrated VM and listens on. Skipped (with the reason)
//! where /dev/kvm cannot be used.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::proxy::{proxy, Faults};
use common::*;
use pagewire_runner::live::{send_vm, ReceiveConfig, ReceiveEvent, SendConfig};
use pagewire_runner::migrate::session::Status;
use pagewire_runner::migrate::{
    Deadlines, DestOptions, MigrationProgress, NoProgress, SourceOptions,
};
use pagewire_runner::net::{tls, Shape};
use pagewire_runner::Workload;

/// Forwards a connection and cuts both directions after `limit` bytes from the client.
fn cutting_proxy(to: String, limit: usize) -> String {
    cutting_proxy_at(to, 0, limit)
}

/// Forwards connections; cuts the `nth` (from 0) after `limit` bytes from the client.
fn cutting_proxy_at(to: String, nth: usize, limit: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for (i, conn) in l.incoming().enumerate() {
            let Ok(client) = conn else { return };
            let to = to.clone();
            let limit = if i == nth { limit } else { usize::MAX };
            std::thread::spawn(move || forward_until(client, to, limit));
        }
    });
    addr
}

fn forward_until(mut client: TcpStream, to: String, limit: usize) {
    {
        let mut server = TcpStream::connect(to).unwrap();
        let mut c2 = client.try_clone().unwrap();
        let mut s2 = server.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut s2, &mut c2);
        });
        let mut left = limit;
        let mut buf = vec![0u8; 16384];
        while left > 0 {
            let n = match client.read(&mut buf[..left.min(16384)]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
            left -= n;
        }
        let _ = client.shutdown(std::net::Shutdown::Both);
        let _ = server.shutdown(std::net::Shutdown::Both);
    }
}

#[test]
fn link_drop_mid_migration_leaves_the_source_running_and_the_destination_empty() {
    if !kvm_or_skip() {
        return;
    }
    let dest = listen(ReceiveConfig {
        run_after: Duration::ZERO,
        ..ReceiveConfig::default()
    });
    let proxy = cutting_proxy(dest.addr.clone(), 4 << 20);
    let mut vm = running_vm(64, 1, Workload::HotSet, 4);
    let cfg = SendConfig {
        to: proxy,
        shape: Shape::parse("1gbit", "1ms").unwrap(),
        source: Arc::new(SourceOptions::default()),
        tls: None,
    };
    let e = format!(
        "{:#}",
        send_vm(&mut vm, &cfg, None, &mut NoProgress).unwrap_err()
    );
    assert!(
        e.contains("sending") || e.contains("acknowledgement") || e.contains("reply"),
        "unclear error: {e}"
    );
    // the destination saw the stream end early and built nothing that runs
    let ev = dest.expect(WAIT, "of the failed migration", |e| failed(e).is_some());
    let d = failed(&ev).unwrap();
    assert!(d.contains("ended"), "{d}");
    assert!(dest.stop().is_err(), "no migration arrived");
    source_alive(&vm);
}

#[test]
fn a_lane_cut_mid_migration_leaves_the_source_running_and_the_destination_empty() {
    if !kvm_or_skip() {
        return;
    }
    let dest = listen(ReceiveConfig {
        run_after: Duration::ZERO,
        ..ReceiveConfig::default()
    });
    // connection 0 is lane 0 (the session's); connection 1 is lane 1
    let proxy = cutting_proxy_at(dest.addr.clone(), 1, 4 << 20);
    let mut vm = running_vm(64, 1, Workload::HotSet, 4);
    let cfg = SendConfig {
        to: proxy,
        shape: Shape::parse("1gbit", "1ms").unwrap(),
        source: Arc::new(SourceOptions {
            lanes: 2,
            ..SourceOptions::default()
        }),
        tls: None,
    };
    let e = format!(
        "{:#}",
        send_vm(&mut vm, &cfg, None, &mut NoProgress).unwrap_err()
    );
    assert!(e.contains("lane 1"), "the error must name the lane: {e}");
    let ev = dest.expect(WAIT, "of the failed migration", |e| failed(e).is_some());
    let d = failed(&ev).unwrap();
    assert!(d.contains("lane"), "{d}");
    assert!(dest.stop().is_err(), "no migration arrived");
    source_alive(&vm);
}

/// Kills process `.0` with SIGKILL when the first pages have gone out.
struct KillOnFirstPages(Option<u32>);

impl MigrationProgress for KillOnFirstPages {
    fn pages_sent(&mut self, _n: u64) {
        if let Some(pid) = self.0.take() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

#[test]
fn destination_process_death_leaves_the_source_running() {
    if !kvm_or_skip() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    tls::keygen(keys.path()).unwrap();
    // a free port for the child receiver
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pagewire"))
        .args(["receive", "--listen", &addr, "--keys"])
        .arg(keys.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait for "listening on ...", then keep reading what it says
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "receiver said {line:?}");
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            eprintln!("receiver: {l}");
        }
    });
    // kill the receiver once the migration is under way: when the sender has sent its
    // first pages (a fixed delay raced the guest's boot and the connection under load)
    let mut killer = KillOnFirstPages(Some(child.id()));
    let mut vm = running_vm(64, 1, Workload::HotSet, 5);
    let cfg = SendConfig {
        to: addr,
        shape: Shape::parse("100mbit", "5ms").unwrap(),
        source: Arc::new(SourceOptions::default()),
        tls: Some(tls::client_config(keys.path()).unwrap()),
    };
    let t = std::time::Instant::now();
    let e = format!(
        "{:#}",
        send_vm(&mut vm, &cfg, None, &mut killer).unwrap_err()
    );
    assert!(killer.0.is_none(), "the receiver was never killed");
    let _ = child.wait();
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "send hung after the peer died"
    );
    eprintln!("send error: {e}");
    assert!(
        !e.contains("connecting"),
        "the receiver was not up yet: {e}"
    );
    source_alive(&vm);
}

/// Short deadlines: what these tests trip (a healthy run's longest wait is about 0.1 s
/// for progress and a few ms for the switchover).
fn short_deadlines() -> Deadlines {
    Deadlines {
        handshake: Duration::from_secs(2),
        progress: Duration::from_secs(2),
        switchover: Duration::from_secs(1),
        status_attempts: 2,
    }
}

fn short_receiver(tls: Option<&std::path::Path>) -> Listening {
    listen(ReceiveConfig {
        tls: tls.map(|k| tls::server_config(k).unwrap()),
        dest: DestOptions {
            deadlines: short_deadlines(),
            ..DestOptions::default()
        },
        run_after: Duration::ZERO,
        ..ReceiveConfig::default()
    })
}

fn plain_send_cfg(to: &str) -> SendConfig {
    SendConfig {
        to: to.into(),
        shape: Shape::default(),
        source: Arc::new(SourceOptions {
            deadlines: short_deadlines(),
            ..SourceOptions::default()
        }),
        tls: None,
    }
}

/// Notes when the source pauses (and sets `flag`, or stops process `stop_pid`, then).
struct AtThePause {
    at: Option<Instant>,
    flag: Arc<AtomicBool>,
    stop_pid: Option<u32>,
}

impl MigrationProgress for AtThePause {
    fn note(&mut self, what: &str) {
        if what == "stop-and-copy" && self.at.is_none() {
            if let Some(pid) = self.stop_pid {
                signal("-STOP", pid);
            }
            self.flag.store(true, Ordering::SeqCst);
            self.at = Some(Instant::now());
        }
    }
}

fn signal(sig: &str, pid: u32) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

#[test]
fn a_black_hole_after_10_mb_of_precopy_fails_within_the_progress_deadline() {
    if !kvm_or_skip() {
        return;
    }
    let dest = short_receiver(None);
    let p = proxy(
        dest.addr.clone(),
        Faults {
            black_hole_after: Some(10_000_000),
            ..Faults::default()
        },
    );
    // 64 MiB: its first pass is about 23 MB of stream
    let mut vm = running_vm(64, 1, Workload::HotSet, 41);
    let e = format!(
        "{:#}",
        send_vm(&mut vm, &plain_send_cfg(&p.addr), None, &mut NoProgress).unwrap_err()
    );
    let gave_up = p
        .when("black hole")
        .expect("the black hole never opened")
        .elapsed();
    assert!(e.starts_with("the progress deadline expired"), "{e}");
    // the deadline (2 s) after the rest of the iteration went into the hole
    assert!(gave_up < Duration::from_secs(8), "{gave_up:?}");
    source_alive(&vm);
    // the destination gave up too and dropped its partial VM
    let ev = dest.expect(WAIT, "of the stalled migration", |e| failed(e).is_some());
    assert!(failed(&ev).unwrap().contains("progress deadline"), "{ev}");
    assert!(dest.stop().is_err());
}

#[test]
fn a_black_hole_at_the_pause_resumes_the_source_within_the_switchover_deadline() {
    if !kvm_or_skip() {
        return;
    }
    let dest = short_receiver(None);
    let flag = Arc::new(AtomicBool::new(false));
    let p = proxy(
        dest.addr.clone(),
        Faults {
            black_hole_when: Some(flag.clone()),
            ..Faults::default()
        },
    );
    let mut vm = running_vm(16, 1, Workload::HotSet, 42);
    let mut pause = AtThePause {
        at: None,
        flag,
        stop_pid: None,
    };
    let e = format!(
        "{:#}",
        send_vm(&mut vm, &plain_send_cfg(&p.addr), None, &mut pause).unwrap_err()
    );
    // the pause is bounded: the switchover margin (1 s) and the last pages' few ms
    let paused = pause.at.expect("never paused").elapsed();
    assert!(
        paused < Duration::from_millis(2500),
        "paused for {paused:?}"
    );
    assert!(e.starts_with("the switchover deadline expired"), "{e}");
    assert!(e.contains("did not say ready"), "{e}");
    source_alive(&vm);
    let ev = dest.expect(WAIT, "of the stalled migration", |e| failed(e).is_some());
    assert!(failed(&ev).is_some(), "{ev}");
    assert!(dest.stop().is_err(), "the destination started a copy");
}

/// Runs `pagewire receive` with TLS and short deadlines; returns it and its stderr lines
/// as they come.
fn receive_process(
    keys: &std::path::Path,
) -> (std::process::Child, String, mpsc::Receiver<String>) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pagewire"))
        .args(["receive", "--listen", &addr, "--run", "0.2"])
        .args(["--switchover-timeout", "1", "--progress-timeout", "5"])
        .arg("--keys")
        .arg(keys)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "receiver said {line:?}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            eprintln!("receiver: {l}");
            let _ = tx.send(l);
        }
    });
    (child, addr, rx)
}

#[test]
fn a_destination_frozen_at_the_pause_never_starts_and_the_source_resumes_in_time() {
    if !kvm_or_skip() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    tls::keygen(keys.path()).unwrap();
    let (mut child, addr, lines) = receive_process(keys.path());
    let mut vm = running_vm(16, 1, Workload::HotSet, 43);
    let cfg = SendConfig {
        tls: Some(tls::client_config(keys.path()).unwrap()),
        ..plain_send_cfg(&addr)
    };
    // SIGSTOP the receiver as the source pauses
    let mut pause = AtThePause {
        at: None,
        flag: Arc::new(AtomicBool::new(false)),
        stop_pid: Some(child.id()),
    };
    let e = format!(
        "{:#}",
        send_vm(&mut vm, &cfg, None, &mut pause).unwrap_err()
    );
    let paused = pause.at.expect("never paused").elapsed();
    assert!(
        paused < Duration::from_millis(2500),
        "paused for {paused:?}"
    );
    assert!(e.contains("did not say ready"), "{e}");
    source_alive(&vm);
    // thawed, the destination finds the source gone on (its abort, no commit, or the
    // link closed) and never starts its copy
    signal("-CONT", child.id());
    let until = Instant::now() + WAIT;
    let verdict = loop {
        let l = lines
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .expect("the receiver said nothing about the migration");
        if l.contains("started") || l.contains("failed") {
            break l;
        }
    };
    assert!(
        verdict.contains("failed, nothing of it runs here"),
        "{verdict}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_sender_stopped_mid_precopy_is_dropped_by_the_receiver_which_listens_on() {
    if !kvm_or_skip() {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    tls::keygen(keys.path()).unwrap();
    let dest = short_receiver(Some(keys.path()));
    // 16 MiB at 20 Mbit/s: about 3 s of pre-copy
    let mut send = Command::new(env!("CARGO_BIN_EXE_pagewire"))
        .args([
            "send",
            "--to",
            &dest.addr,
            "--mem-mib",
            "16",
            "--warmup",
            "0.2",
        ])
        .args(["--rate", "20mbit", "--json", "--keys"])
        .arg(keys.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    dest.expect(WAIT, "of the arriving migration", |e| {
        matches!(e, ReceiveEvent::Arriving { .. })
    });
    std::thread::sleep(Duration::from_millis(300));
    signal("-STOP", send.id());
    let stopped = Instant::now();
    let ev = dest.expect(WAIT, "of the stalled migration", |e| failed(e).is_some());
    let took = stopped.elapsed();
    let _ = send.kill();
    let _ = send.wait();
    assert!(failed(&ev).unwrap().contains("progress deadline"), "{ev}");
    // the progress deadline (2 s) after what was in flight drained
    assert!(took < Duration::from_secs(8), "{took:?}");
    // still listening: a status query is answered
    let id = match &ev {
        ReceiveEvent::Failed { migration_id, .. } => *migration_id,
        _ => unreachable!(),
    };
    let status = status_of(&dest.addr, Some(keys.path()), id).unwrap();
    assert!(matches!(status, Status::Aborted(_)), "{status:?}");
    assert!(dest.stop().is_err(), "nothing arrived");
}
