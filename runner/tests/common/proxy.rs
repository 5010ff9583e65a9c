//! A fault-injecting TCP proxy between a sender and a receiver that speak plain TCP (the
//! engine's `tls: None` mode), so it sees the session: the codec stream as bytes, the
//! destination's messages (acknowledgements, ready, reply), the source's messages after the
//! stream (commit, abort, done), and status queries on connections of their own. It can
//! black-hole the link after so many bytes or from a moment the test picks, swallow the
//! commit or the destination's reply, and refuse or black-hole status queries.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pagewire_runner::migrate::session::{DestMessage, SourceMessage, MAGIC, STATUS_MAGIC};

/// What happens to status queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFault {
    /// They pass.
    Pass,
    /// Their connections are closed at once.
    Refuse,
    /// They are accepted and never answered.
    BlackHole,
}

/// The faults to inject; the default passes everything.
#[derive(Debug, Clone)]
pub struct Faults {
    /// After this many bytes from the source, nothing passes either way (the connections
    /// stay open: a black hole).
    pub black_hole_after: Option<u64>,
    /// From the moment this is set, nothing passes either way.
    pub black_hole_when: Option<Arc<AtomicBool>>,
    /// The source's commit (and everything after it) is swallowed.
    pub drop_commit: bool,
    /// The destination's reply after the commit (and everything after it) is swallowed.
    pub drop_reply: bool,
    /// Status queries.
    pub status: StatusFault,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            black_hole_after: None,
            black_hole_when: None,
            drop_commit: false,
            drop_reply: false,
            status: StatusFault::Pass,
        }
    }
}

/// A running proxy: where to connect, and what it saw.
pub struct Proxy {
    pub addr: String,
    /// What it did, in order and when ("commit swallowed", "status query refused", ...).
    pub log: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Proxy {
    /// True when the log has an entry containing `what`.
    pub fn saw(&self, what: &str) -> bool {
        self.when(what).is_some()
    }

    /// When the first entry containing `what` was logged.
    pub fn when(&self, what: &str) -> Option<Instant> {
        let log = self.log.lock().unwrap();
        log.iter().find(|(_, l)| l.contains(what)).map(|(t, _)| *t)
    }
}

/// Starts a proxy to `to` with `faults`.
pub fn proxy(to: String, faults: Faults) -> Proxy {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    std::thread::spawn(move || {
        for client in l.incoming() {
            let Ok(client) = client else { return };
            let (to, faults, log) = (to.clone(), faults.clone(), log2.clone());
            std::thread::spawn(move || connection(client, &to, &faults, &log));
        }
    });
    Proxy { addr, log }
}

type Log = Mutex<Vec<(Instant, String)>>;

fn note(log: &Log, what: String) {
    eprintln!("proxy: {what}");
    log.lock().unwrap().push((Instant::now(), what));
}

/// One connection: a migration or a status query, told apart by its magic.
fn connection(mut client: TcpStream, to: &str, faults: &Faults, log: &Arc<Log>) {
    let mut magic = [0u8; 4];
    if client.read_exact(&mut magic).is_err() {
        return;
    }
    if &magic == STATUS_MAGIC {
        match faults.status {
            StatusFault::Refuse => {
                note(log, "status query refused".into());
                return;
            }
            StatusFault::BlackHole => {
                note(log, "status query black-holed".into());
                let _ = std::io::copy(&mut client, &mut std::io::sink());
                return;
            }
            StatusFault::Pass => note(log, "status query passed".into()),
        }
    }
    let Ok(mut server) = TcpStream::connect(to) else {
        return;
    };
    if server.write_all(&magic).is_err() {
        return;
    }
    let state = Arc::new(State {
        from_source: AtomicU64::new(4),
        ready: AtomicBool::new(false),
        holed: AtomicBool::new(false),
    });
    let migration = &magic == MAGIC;
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (st, f, lg) = (state.clone(), faults.clone(), log.clone());
    let back = std::thread::spawn(move || dest_to_source(s2, c2, migration, &st, &f, &lg));
    source_to_dest(client, server, migration, &state, faults, log);
    let _ = back.join();
}

struct State {
    from_source: AtomicU64,
    /// The destination's ready has gone to the source: the source's bytes are messages now.
    ready: AtomicBool,
    /// Nothing passes any more.
    holed: AtomicBool,
}

impl State {
    fn holed(&self, f: &Faults) -> bool {
        if let Some(flag) = &f.black_hole_when {
            if flag.load(Ordering::SeqCst) {
                self.holed.store(true, Ordering::SeqCst);
            }
        }
        self.holed.load(Ordering::SeqCst)
    }
}

/// Length-prefixed messages out of a byte stream.
#[derive(Default)]
struct Messages(Vec<u8>);

impl Messages {
    fn push(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    /// The next whole message (prefix and body), if there is one.
    fn next(&mut self) -> Option<Vec<u8>> {
        if self.0.len() < 4 {
            return None;
        }
        let len = u32::from_le_bytes(self.0[..4].try_into().unwrap()) as usize;
        if self.0.len() < 4 + len {
            return None;
        }
        Some(self.0.drain(..4 + len).collect())
    }
}

fn source_to_dest(
    mut client: TcpStream,
    mut server: TcpStream,
    migration: bool,
    st: &State,
    f: &Faults,
    log: &Log,
) {
    let mut buf = vec![0u8; 16384];
    let mut msgs = Messages::default();
    loop {
        let n = match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let seen = st.from_source.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        if let Some(limit) = f.black_hole_after {
            if seen >= limit && !st.holed.swap(true, Ordering::SeqCst) {
                note(
                    log,
                    format!("black hole after {seen} bytes from the source"),
                );
            }
        }
        if st.holed(f) {
            continue; // accepted, never forwarded
        }
        if !(migration && st.ready.load(Ordering::SeqCst)) {
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
            continue;
        }
        msgs.push(&buf[..n]);
        while let Some(m) = msgs.next() {
            let msg: Option<SourceMessage> = serde_json::from_slice(&m[4..]).ok();
            if f.drop_commit && msg == Some(SourceMessage::Commit) {
                note(log, "commit swallowed".into());
                st.holed.store(true, Ordering::SeqCst);
                break;
            }
            note(log, format!("source says {msg:?}"));
            if server.write_all(&m).is_err() {
                return;
            }
        }
    }
    if !st.holed.load(Ordering::SeqCst) {
        let _ = server.shutdown(Shutdown::Write);
    } else {
        // a black hole keeps the connection open until the source gives up
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dest_to_source(
    mut server: TcpStream,
    mut client: TcpStream,
    migration: bool,
    st: &State,
    f: &Faults,
    log: &Log,
) {
    let mut buf = vec![0u8; 16384];
    let mut msgs = Messages::default();
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if st.holed(f) {
            continue;
        }
        if !migration {
            if client.write_all(&buf[..n]).is_err() {
                break;
            }
            continue;
        }
        msgs.push(&buf[..n]);
        while let Some(m) = msgs.next() {
            let msg: Option<DestMessage> = serde_json::from_slice(&m[4..]).ok();
            match &msg {
                Some(DestMessage::Ready) => {
                    note(log, "destination says ready".into());
                    st.ready.store(true, Ordering::SeqCst);
                }
                Some(DestMessage::Reply(r)) if st.ready.load(Ordering::SeqCst) => {
                    if f.drop_reply {
                        note(log, format!("reply swallowed (ok: {})", r.ok));
                        st.holed.store(true, Ordering::SeqCst);
                        break;
                    }
                    note(log, format!("destination replies (ok: {})", r.ok));
                }
                _ => {}
            }
            if client.write_all(&m).is_err() {
                return;
            }
        }
    }
    if !st.holed.load(Ordering::SeqCst) {
        let _ = client.shutdown(Shutdown::Write);
    }
}
