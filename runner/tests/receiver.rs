//! A receiver no stranger can stop or starve: random bytes, a port scan, a TLS client
//! without a certificate, an idle connection and a ClientHello at one byte a second are each
//! refused (within the handshake deadline where they stall) while the receiver listens on,
//! and the real sender behind them migrates; the `receive` command does the same and exits
//! 0; a VM larger than the host can hold is refused before it is built. The migrations are
//! skipped (with the reason) where /dev/kvm cannot be used.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use pagewire_runner::live::{send_vm, ReceiveConfig, ReceiveEvent, SendConfig};
use pagewire_runner::migrate::session::{self, DestMessage, Hello, Status, StatusQuery};
use pagewire_runner::migrate::{Deadlines, DestOptions, NoProgress, SourceOptions};
use pagewire_runner::net::{tls, Shape};
use pagewire_runner::Workload;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The handshake deadline of these tests.
const HANDSHAKE: Duration = Duration::from_secs(1);

fn keys() -> std::path::PathBuf {
    let d = tempfile::tempdir().unwrap().keep();
    tls::keygen(&d).unwrap();
    d
}

fn tls_receiver(k: &std::path::Path) -> Listening {
    listen(ReceiveConfig {
        tls: Some(tls::server_config(k).unwrap()),
        dest: DestOptions {
            deadlines: Deadlines {
                handshake: HANDSHAKE,
                ..Deadlines::default()
            },
            ..DestOptions::default()
        },
        run_after: Duration::from_millis(200),
        ..ReceiveConfig::default()
    })
}

/// The refusal of the connection from `peer`, within `within`.
fn refusal_of(dest: &Listening, peer: SocketAddr, within: Duration) -> String {
    let e = dest.expect(
        within,
        &format!("refusing {peer}"),
        |e| matches!(e, ReceiveEvent::Refused { peer: Some(p), .. } if *p == peer),
    );
    refused(&e).unwrap().to_string()
}

/// A ClientHello as a TLS client without a certificate would send it.
fn client_hello() -> Vec<u8> {
    let cfg = no_certificate_client(&keys());
    let mut c =
        rustls::ClientConnection::new(cfg, ServerName::try_from(tls::RECEIVER_NAME).unwrap())
            .unwrap();
    let mut hello = Vec::new();
    c.write_tls(&mut hello).unwrap();
    assert!(hello.len() > 100, "{} bytes", hello.len());
    hello
}

/// A TLS client that trusts our CA but has no certificate of its own.
fn no_certificate_client(k: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(k.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

#[test]
fn strangers_neither_stop_nor_starve_the_receiver_and_the_real_sender_migrates() {
    let k = keys();
    let dest = tls_receiver(&k);
    let t0 = Instant::now();

    // 1000 random bytes
    let mut junk = TcpStream::connect(&dest.addr).unwrap();
    let bytes: Vec<u8> = (0..1000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = junk.write_all(&bytes);
    let why = refusal_of(&dest, junk.local_addr().unwrap(), 3 * HANDSHAKE);
    assert!(why.contains("handshake"), "{why}");

    // a port scan: connect and close, many times
    for _ in 0..20 {
        let s = TcpStream::connect(&dest.addr).unwrap();
        let peer = s.local_addr().unwrap();
        drop(s);
        refusal_of(&dest, peer, 3 * HANDSHAKE);
    }

    // a TLS client without a certificate
    let tcp = TcpStream::connect(&dest.addr).unwrap();
    let peer = tcp.local_addr().unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let r = tls::connect(tcp, no_certificate_client(&k)).and_then(|mut s| {
        session::write_status_query(&mut s, &StatusQuery { migration_id: 1 })?;
        session::read_message::<Status, _>(&mut s)
    });
    assert!(
        r.is_err(),
        "a client without a certificate was answered: {r:?}"
    );
    let why = refusal_of(&dest, peer, 3 * HANDSHAKE);
    assert!(why.contains("certificate"), "{why}");

    // an idle connection, and a ClientHello at one byte a second: both still open when
    // the real sender (its guest booted first) comes
    let vm = kvm_or_skip().then(|| running_vm(16, 1, Workload::HotSet, 3));
    let idle = TcpStream::connect(&dest.addr).unwrap();
    let idle_peer = idle.local_addr().unwrap();
    let mut slow = TcpStream::connect(&dest.addr).unwrap();
    let slow_peer = slow.local_addr().unwrap();
    let hello = client_hello();
    let trickle = std::thread::spawn(move || {
        for b in hello {
            if slow.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let stalled = Instant::now();

    // the real sender, while both stalled connections are still open
    let (addr, k2) = (dest.addr.clone(), k.clone());
    let sender = std::thread::spawn(move || {
        let Some(mut vm) = vm else {
            return;
        };
        let cfg = SendConfig {
            to: addr,
            shape: Shape::default(),
            source: Arc::new(SourceOptions::default()),
            tls: Some(tls::client_config(&k2).unwrap()),
        };
        let report = send_vm(&mut vm, &cfg, None, &mut NoProgress).unwrap();
        assert_eq!(report.outcome_from, "reply");
        assert!(!vm.is_running());
    });
    // both stalled connections are cut at the deadline, not held
    let mut cut = std::collections::HashMap::new();
    while cut.len() < 2 {
        let e = dest.expect(3 * HANDSHAKE, "cutting the stalled connections", |e| {
            matches!(e, ReceiveEvent::Refused { peer: Some(p), .. } if *p == idle_peer || *p == slow_peer)
        });
        if let ReceiveEvent::Refused { peer: Some(p), why } = e {
            cut.insert(p, why);
        }
    }
    let cut_after = stalled.elapsed();
    for why in cut.values() {
        assert!(why.contains("--handshake-timeout"), "{why}");
    }
    assert!(cut_after < 3 * HANDSHAKE, "cut after {cut_after:?}");
    sender.join().unwrap();
    drop(idle);
    trickle.join().unwrap();
    if kvm_or_skip() {
        let got = dest.finish().unwrap();
        assert!(got.self_check_ok);
    } else {
        assert!(dest.stop().is_err());
    }
    eprintln!("every attack refused in {:?}", t0.elapsed());
}

#[test]
fn a_vm_larger_than_the_host_can_hold_is_refused_before_it_is_built() {
    let dest = listen(ReceiveConfig::default());
    let room = pagewire_runner::host_memory::headroom().bytes;
    let mut s = TcpStream::connect(&dest.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let hello = Hello {
        stream_compression: None,
        lanes: 1,
        mem_bytes: room.saturating_mul(2) & !0xfff,
        vcpus: 1,
        page_size: 4096,
        label: "too big".into(),
        migration_id: 7,
    };
    session::write_hello(&mut s, &hello).unwrap();
    let t = Instant::now();
    let reply = match session::read_message(&mut s).unwrap() {
        DestMessage::Reply(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(!reply.ok);
    let error = reply.error.unwrap();
    assert!(error.contains("this host can hold"), "{error}");
    assert!(error.contains("--max-mem-mib"), "{error}");
    // refused at once: nothing was built and filled
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let e = dest.expect(WAIT, "of the refused migration", |e| failed(e).is_some());
    assert!(failed(&e).unwrap().contains("this host can hold"));
    assert!(dest.stop().is_err());
}

#[test]
fn the_receive_command_outlives_strangers_and_takes_the_real_migration() {
    if !kvm_or_skip() {
        return;
    }
    let k = keys();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut receive = Command::new(env!("CARGO_BIN_EXE_pagewire"))
        .args(["receive", "--listen", &addr, "--run", "0.2"])
        .args(["--handshake-timeout", "1", "--keys"])
        .arg(&k)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(receive.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "{line}");
    let log = std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .inspect(|l| eprintln!("receive: {l}"))
            .collect::<Vec<_>>()
    });
    // what ended `receive` before: random bytes and a port scan
    let mut junk = TcpStream::connect(&addr).unwrap();
    let _ = junk.write_all(&[0x5a; 1000]);
    let _ = junk.read(&mut [0u8; 16]);
    drop(TcpStream::connect(&addr).unwrap());
    let send = Command::new(env!("CARGO_BIN_EXE_pagewire"))
        .args([
            "send",
            "--to",
            &addr,
            "--mem-mib",
            "16",
            "--warmup",
            "0.2",
            "--json",
        ])
        .arg("--keys")
        .arg(&k)
        .output()
        .unwrap();
    assert!(
        send.status.success(),
        "send failed: {}",
        String::from_utf8_lossy(&send.stderr)
    );
    let status = receive.wait().unwrap();
    let lines = log.join().unwrap();
    let mut out = String::new();
    receive
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "receive failed: {lines:?}");
    assert!(out.contains("self-check OK"), "{out}");
    assert!(
        lines.iter().filter(|l| l.contains("refused")).count() >= 2,
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("started")), "{lines:?}");
}
