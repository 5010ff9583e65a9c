//! Mutual TLS between send and receive: a peer with the wrong certificate (another CA's, or
//! the receiver's own), a plain TCP client and a tampered byte are all refused before the
//! destination VM could run, the receiver listens on, and the source VM keeps running. Skipped (with the reason) where /dev/kvm cannot be used.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use pagewire_runner::live::{send_vm, ReceiveConfig, SendConfig};
use pagewire_runner::migrate::session::Status;
use pagewire_runner::migrate::{DestOptions, NoProgress, SourceOptions};
use pagewire_runner::net::{tls, Shape};
use pagewire_runner::Workload;

fn keys(name: &str) -> std::path::PathBuf {
    let d = tempfile::tempdir().unwrap().keep().join(name);
    tls::keygen(&d).unwrap();
    d
}

fn receiver(dir: &std::path::Path) -> (String, Listening) {
    let l = listen(ReceiveConfig {
        tls: Some(tls::server_config(dir).unwrap()),
        dest: DestOptions::default(),
        run_after: Duration::from_millis(100),
        ..ReceiveConfig::default()
    });
    (l.addr.clone(), l)
}

/// The reason the receiver gave for refusing a connection (it listens on).
fn refusal(dest: &Listening) -> String {
    let e = dest.expect(WAIT, "refusing the peer", |e| refused(e).is_some());
    refused(&e).unwrap().to_string()
}

fn send_cfg(to: String, dir: &std::path::Path) -> SendConfig {
    SendConfig {
        to,
        shape: Shape::default(),
        source: Arc::new(SourceOptions::default()),
        tls: Some(tls::client_config(dir).unwrap()),
    }
}

#[test]
fn matching_keys_migrate() {
    if !kvm_or_skip() {
        return;
    }
    let k = keys("k");
    let (addr, dest) = receiver(&k);
    let mut vm = running_vm(16, 1, Workload::HotSet, 1);
    let r = send_vm(&mut vm, &send_cfg(addr, &k), None, &mut NoProgress).unwrap();
    assert!(dest.finish().unwrap().self_check_ok);
    // TLS adds its records on top of the stream
    assert!(r.wire_bytes > r.stream_bytes);
}

#[test]
fn a_sender_with_another_ca_is_refused() {
    if !kvm_or_skip() {
        return;
    }
    let (addr, dest) = receiver(&keys("a"));
    let mut vm = running_vm(16, 1, Workload::Idle, 1);
    let e = send_vm(&mut vm, &send_cfg(addr, &keys("b")), None, &mut NoProgress).unwrap_err();
    assert!(format!("{e:#}").contains("handshake"), "{e:#}");
    let e = refusal(&dest);
    assert!(e.contains("handshake"), "{e}");
    assert!(dest.stop().is_err(), "nothing arrived");
    source_alive(&vm);
}

#[test]
fn plain_tcp_is_refused() {
    let (addr, dest) = receiver(&keys("p"));
    let mut s = TcpStream::connect(&addr).unwrap();
    // a would-be source that speaks the migration protocol without TLS
    let _ = s.write_all(b"PWM1\x10\x00\x00\x00{\"mem_bytes\":1}");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let e = refusal(&dest);
    assert!(e.contains("handshake"), "{e}");
    assert!(dest.stop().is_err(), "nothing arrived");
}

/// Forwards a TCP connection, flipping one byte of the client's data at `at`.
fn tampering_proxy(to: String, at: u64) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut client, _) = l.accept().unwrap();
        let mut server = TcpStream::connect(to).unwrap();
        let mut c2 = client.try_clone().unwrap();
        let mut s2 = server.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut s2, &mut c2);
            let _ = c2.shutdown(std::net::Shutdown::Both);
        });
        let mut seen = 0u64;
        let mut buf = vec![0u8; 16384];
        loop {
            let n = match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if seen <= at && at < seen + n as u64 {
                buf[(at - seen) as usize] ^= 0x40;
            }
            seen += n as u64;
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server.shutdown(std::net::Shutdown::Both);
    });
    addr
}

#[test]
fn a_tampered_byte_is_detected_and_the_source_keeps_running() {
    if !kvm_or_skip() {
        return;
    }
    let k = keys("t");
    let (addr, dest) = receiver(&k);
    let proxy = tampering_proxy(addr, 300_000);
    let mut vm = running_vm(16, 1, Workload::HotSet, 2);
    let e = send_vm(&mut vm, &send_cfg(proxy, &k), None, &mut NoProgress).unwrap_err();
    let ev = dest.expect(WAIT, "of the failed migration", |e| failed(e).is_some());
    let dest_err = failed(&ev).unwrap().to_string();
    assert!(dest.stop().is_err(), "nothing arrived");
    // rustls names the failed record authentication
    assert!(
        dest_err.contains("decrypt") || dest_err.contains("Decrypt") || dest_err.contains("MAC"),
        "{dest_err}"
    );
    assert!(!format!("{e:#}").is_empty());
    source_alive(&vm);
    assert_eq!(vm.monitor().vcpus[0].checks_bad.load(Ordering::SeqCst), 0);
}

/// A key folder whose "sender" is the receiver's certificate and key: what any destination
/// host of the same key set holds.
fn receiver_posing_as_sender(k: &std::path::Path) -> std::path::PathBuf {
    let d = tempfile::tempdir().unwrap().keep();
    std::fs::copy(k.join("ca.pem"), d.join("ca.pem")).unwrap();
    std::fs::copy(k.join("receiver.pem"), d.join("sender.pem")).unwrap();
    std::fs::copy(k.join("receiver.key"), d.join("sender.key")).unwrap();
    d
}

#[test]
fn a_receivers_own_certificate_is_refused_as_a_client_and_the_receiver_serves_on() {
    let k = keys("r");
    let (addr, dest) = receiver(&k);
    // the receiver's certificate is from the right CA, but it is not the sender's
    let got = status_of(&addr, Some(&receiver_posing_as_sender(&k)), 42);
    assert!(got.is_err(), "the receiver answered an impostor: {got:?}");
    let why = refusal(&dest);
    assert!(
        why.contains("not the sender's")
            || why.to_lowercase().contains("purpose")
            || why.contains("usage"),
        "{why}"
    );
    // the real sender's certificate is served: this receiver knows no migration 42
    assert_eq!(status_of(&addr, Some(&k), 42).unwrap(), Status::Unknown);
    assert!(dest.stop().is_err(), "nothing arrived");
}
