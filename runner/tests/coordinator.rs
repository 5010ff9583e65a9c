//! The Synchronized Arrival coordinator under attack: only the sender's certificate may
//! join (a plain TCP client, a client without a certificate and a receiver's certificate
//! are refused); an endless line is cut at the line limit; 2,000 idle connections neither
//! take a thread each nor keep a member out; running out of file descriptors pauses
//! accepting instead of ending the process. No KVM needed.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::WAIT;
use pagewire::policy::{Decision, IterationReport};
use pagewire_runner::net::coord::{self, CoordinatorConfig, GroupGate, MAX_LINE};
use pagewire_runner::net::listen::{ListenOptions, Server};
use pagewire_runner::net::tls;

fn keys() -> std::path::PathBuf {
    let d = tempfile::tempdir().unwrap().keep();
    tls::keygen(&d).unwrap();
    d
}

/// A coordinator and its address.
struct Running {
    addr: String,
    server: Server,
}

/// An in-process coordinator with TLS; its log lines go to the returned channel.
fn coordinator(k: &std::path::Path) -> (Running, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let cfg = CoordinatorConfig {
        tls: Some(tls::server_config(k).unwrap()),
        listen: ListenOptions {
            handshake_timeout: Duration::from_secs(1),
            ..ListenOptions::default()
        },
        log: Arc::new(move |l: &str| {
            eprintln!("coordinator: {l}");
            let _ = tx.send(l.to_string());
        }),
        ..CoordinatorConfig::default()
    };
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let server = coord::serve(l, cfg).unwrap();
    (Running { addr, server }, rx)
}

/// Joins a one-member group as the real sender and gets a decision.
fn member_is_served(addr: &str, k: &std::path::Path, group: &str) {
    let mut g = GroupGate::join(
        addr,
        Some(tls::client_config(k).unwrap()),
        Duration::from_secs(15),
        group,
        "real",
        1,
    )
    .unwrap();
    let r = IterationReport {
        iteration: 1,
        pages_sent: 10,
        pages_dirtied: 20,
        pages_remaining: 20,
        bytes_sent: 40960,
        elapsed_us: 1000,
        bandwidth_bytes_per_s: 1 << 20,
    };
    let (d, _) = g.decide(Decision::StopAndCopy, &r).unwrap();
    assert_eq!(d, Decision::StopAndCopy);
}

/// The next log line containing `what`, within `within`.
fn logged(rx: &mpsc::Receiver<String>, what: &str, within: Duration) -> String {
    let until = Instant::now() + within;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(what) => return l,
            Ok(_) => {}
            Err(_) => panic!("the coordinator never logged {what:?}"),
        }
    }
}

#[test]
fn only_the_senders_certificate_may_take_a_group() {
    let k = keys();
    let (c, log) = coordinator(&k);
    // plain TCP: what let anyone take a group name before
    let mut plain = TcpStream::connect(&c.addr).unwrap();
    plain
        .write_all(b"{\"join\":{\"group\":\"web\",\"name\":\"x\",\"members\":2}}\n")
        .unwrap();
    plain.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = String::new();
    let _ = plain.read_to_string(&mut answer);
    assert!(!answer.contains("joined"), "{answer}");
    logged(&log, "handshake", WAIT);
    // a receiver's certificate posing as a sender's
    let imp = tempfile::tempdir().unwrap().keep();
    std::fs::copy(k.join("ca.pem"), imp.join("ca.pem")).unwrap();
    std::fs::copy(k.join("receiver.pem"), imp.join("sender.pem")).unwrap();
    std::fs::copy(k.join("receiver.key"), imp.join("sender.key")).unwrap();
    let e = GroupGate::join(
        &c.addr,
        Some(tls::client_config(&imp).unwrap()),
        WAIT,
        "web",
        "x",
        2,
    );
    assert!(e.is_err(), "a receiver's certificate joined");
    // refused at the handshake: the receiver's certificate is for server authentication only
    logged(
        &log,
        "does not allow extended key usage for client authentication",
        WAIT,
    );
    // the group name is still free for the real members
    member_is_served(&c.addr, &k, "web");
    c.server.stop();
}

#[test]
fn an_endless_line_is_cut_at_the_limit_and_members_are_served_on() {
    let k = keys();
    let (c, log) = coordinator(&k);
    // an authenticated client that never ends its line
    let tcp = TcpStream::connect(&c.addr).unwrap();
    let mut s = tls::connect(tcp, tls::client_config(&k).unwrap()).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    let closed = loop {
        match s.write_all(&chunk).and_then(|()| s.flush()) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break true,
        }
        if sent > 256 << 20 {
            break false;
        }
    };
    assert!(closed, "the coordinator took 256 MiB of one line");
    let l = logged(&log, "longer than", WAIT);
    assert!(l.contains(&MAX_LINE.to_string()), "{l}");
    member_is_served(&c.addr, &k, "web");
    c.server.stop();
}

/// Soft limit of open files of this process.
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// Runs `pagewire coordinator` in a shell with `ulimit -n files` (0: as is) and a
/// handshake deadline of `handshake` seconds; returns it, its address and its stderr lines.
fn coordinator_process(
    k: &std::path::Path,
    files: usize,
    handshake: f64,
) -> (Child, String, mpsc::Receiver<String>) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let limit = if files > 0 {
        format!("ulimit -n {files}; ")
    } else {
        String::new()
    };
    let script = format!(
        "{limit}exec \"$0\" coordinator --listen {addr} --handshake-timeout {handshake} \
         --keys \"$1\""
    );
    let mut child = Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_pagewire")])
        .arg(k)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("listening"), "coordinator said {line:?}");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, addr, rx)
}

/// Threads of process `pid`.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn two_thousand_idle_connections_take_no_thread_each_and_keep_no_member_out() {
    let k = keys();
    let (mut child, addr, _log) = coordinator_process(&k, 0, 1.0);
    let n = 2000.min(open_files_limit().saturating_sub(200));
    if n < 2000 {
        eprintln!("NOTE: only {n} idle connections: this process may open no more files");
    }
    // paced by the hundred: the listen backlog (128) drops a faster burst's SYNs, and
    // the kernel retries them only a second later
    let idle: Vec<_> = (0..n)
        .map(|i| {
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(30));
            }
            TcpStream::connect(&addr).unwrap()
        })
        .collect();
    // all accepted by now, or waiting in the backlog: the process holds few threads
    std::thread::sleep(Duration::from_millis(300));
    let most = threads(child.id());
    member_is_served(&addr, &k, "web");
    let after = threads(child.id());
    drop(idle);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the coordinator exited"
    );
    let _ = child.kill();
    let _ = child.wait();
    // accept loop + 2 x 16 handshakes + 64 sessions at most (it was one per connection)
    let bound = 1 + 2 * 16 + 64 + 2;
    assert!(most.max(after) <= bound, "{most} / {after} threads");
}

#[test]
fn out_of_file_descriptors_it_pauses_and_serves_on() {
    let k = keys();
    // stdin, stdout, stderr, the listener and a few spare
    let (mut child, addr, log) = coordinator_process(&k, 10, 0.5);
    let idle: Vec<_> = (0..20)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let l = logged(&log, "cannot accept", WAIT);
    assert!(l.contains("Too many open files"), "{l}");
    // the idle ones are cut at the 0.5 s handshake deadline; the member gets in behind them
    member_is_served(&addr, &k, "web");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the coordinator exited"
    );
    drop(idle);
    let _ = child.kill();
    let _ = child.wait();
}
