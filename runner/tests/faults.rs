//! Faults mid-migration: the link drops, or the destination process dies. The source VM
//! keeps running (its guest still passes its self-check), `send` fails with a clear error,
//! and the destination never starts the half-migrated VM. Skipped (with the reason) where
//! /dev/kvm cannot be used.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pagewire_runner::live::{send_vm, ReceiveConfig, SendConfig};
use pagewire_runner::migrate::{MigrationProgress, NoProgress, SourceOptions};
use pagewire_runner::net::{tls, Shape};
use pagewire_runner::Workload;

/// Forwards a connection and cuts both directions after `limit` bytes from the client.
fn cutting_proxy(to: String, limit: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut client, _) = l.accept().unwrap();
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
    });
    addr
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
