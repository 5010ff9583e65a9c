//! An accept loop no stranger can stop or starve, for `receive` and the coordinator. Every
//! connection gets its TLS handshake (and the service's first read) within a deadline, on
//! its own thread; at most `max_handshakes` run at once, and when more arrive the oldest is
//! cut, so idle or trickling connections cannot hold the door shut. Authenticated
//! connections run the service, at most `max_sessions` at once. A failed handshake is
//! reported and the loop goes on; running out of file descriptors (EMFILE) or memory pauses
//! accepting with a growing back-off instead of ending it.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use rustls::ServerConfig;

use super::deadline::{is_timeout, Link, TimedTcp, Waits};
use super::tls;

/// How many connections, and how long for a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// Handshakes at once; when one more arrives the oldest is cut.
    pub max_handshakes: usize,
    /// Authenticated connections at once; more are closed after their handshake.
    pub max_sessions: usize,
    /// A connection completes its handshake (and the service's first read) within this.
    pub handshake_timeout: Duration,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            max_handshakes: 16,
            max_sessions: 64,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What a server does with its connections.
pub trait Service: Send + Sync + 'static {
    /// An authenticated connection from `peer`, on its own thread. Its waits are still the
    /// handshake deadline: the service sets its own once it knows what the peer wants.
    fn serve(&self, link: Box<dyn Link>, peer: SocketAddr);
    /// A connection refused (`peer`, why) or the loop pausing (`None`, why): for the log.
    fn refused(&self, peer: Option<SocketAddr>, why: &str);
}

/// Ends a server's accept loop.
#[derive(Debug, Clone, Default)]
pub struct Stopper(Arc<AtomicBool>);

impl Stopper {
    /// Asks the loop to stop accepting (connections already accepted run on).
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once stop was asked.
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A running accept loop.
pub struct Server {
    addr: SocketAddr,
    stopper: Stopper,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops it.
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Waits until the loop ends (after a [`Stopper::stop`]).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Stops accepting and waits for the loop to end.
    pub fn stop(self) {
        self.stopper.stop();
        self.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stopper.stop();
    }
}

/// How often an idle loop looks for a connection or a stop.
const POLL: Duration = Duration::from_millis(5);
/// Longest pause when out of file descriptors or memory.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Starts accepting on `listener`: TLS first (unless `tls` is `None`), then `service`.
pub fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    opts: ListenOptions,
    service: Arc<dyn Service>,
) -> io::Result<Server> {
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let stopper = Stopper::default();
    let stop = stopper.clone();
    let thread = std::thread::Builder::new()
        .name("accept".into())
        .spawn(move || accept_loop(&listener, tls, opts, &service, &stop))?;
    Ok(Server {
        addr,
        stopper,
        thread: Some(thread),
    })
}

/// A handshake in progress, which a newer connection may cut.
struct Pending {
    id: u64,
    tcp: Arc<TcpStream>,
    cut: Arc<AtomicBool>,
}

/// The connections in flight.
#[derive(Default)]
struct Counts {
    pending: Mutex<VecDeque<Pending>>,
    sessions: AtomicUsize,
    threads: AtomicUsize,
    next_id: AtomicU64,
}

impl Counts {
    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Decrements a counter when dropped (also on a panic in the service).
struct Held<'a>(&'a AtomicUsize);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn accept_loop(
    listener: &TcpListener,
    tls: Option<Arc<ServerConfig>>,
    opts: ListenOptions,
    service: &Arc<dyn Service>,
    stop: &Stopper,
) {
    let counts = Arc::new(Counts::default());
    let mut backoff = Duration::ZERO;
    while !stop.stopped() {
        match listener.accept() {
            Ok((tcp, peer)) => {
                backoff = Duration::ZERO;
                admit(tcp, peer, &tls, opts, service, &counts);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) if out_of_resources(&e) => {
                if backoff.is_zero() {
                    service.refused(
                        None,
                        &format!("cannot accept ({e}); pausing and retrying, still serving"),
                    );
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_BACKOFF);
                std::thread::sleep(backoff);
            }
            // a connection that went away before it was accepted, a signal
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the host is short of something; try again later.
fn out_of_resources(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Starts the handshake of a new connection on its own thread, cutting the oldest pending
/// one when there are too many.
fn admit(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: &Option<Arc<ServerConfig>>,
    opts: ListenOptions,
    service: &Arc<dyn Service>,
    counts: &Arc<Counts>,
) {
    let max_threads = 2 * opts.max_handshakes + opts.max_sessions;
    if counts.threads.load(Ordering::SeqCst) >= max_threads {
        service.refused(Some(peer), "too many connections at once: closed");
        return;
    }
    if tcp.set_nonblocking(false).is_err() {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let tcp = Arc::new(tcp);
    let id = counts.next_id.fetch_add(1, Ordering::SeqCst);
    let cut = Arc::new(AtomicBool::new(false));
    {
        let mut pending = counts.pending();
        while pending.len() >= opts.max_handshakes.max(1) {
            if let Some(old) = pending.pop_front() {
                old.cut.store(true, Ordering::SeqCst);
                let _ = old.tcp.shutdown(std::net::Shutdown::Both);
            }
        }
        pending.push_back(Pending {
            id,
            tcp: tcp.clone(),
            cut: cut.clone(),
        });
    }
    counts.threads.fetch_add(1, Ordering::SeqCst);
    let (tls, service2, counts2) = (tls.clone(), service.clone(), counts.clone());
    let spawned = std::thread::Builder::new()
        .name("handshake".into())
        .spawn(move || {
            let _thread = Held(&counts2.threads);
            handshake_then_serve(tcp, peer, id, &cut, tls, opts, &*service2, &counts2);
        });
    if let Err(e) = spawned {
        counts.threads.fetch_sub(1, Ordering::SeqCst);
        counts.pending().retain(|p| p.id != id);
        service.refused(Some(peer), &format!("no thread for it ({e}): closed"));
    }
}

#[allow(clippy::too_many_arguments)]
fn handshake_then_serve(
    tcp: Arc<TcpStream>,
    peer: SocketAddr,
    id: u64,
    cut: &AtomicBool,
    tls: Option<Arc<ServerConfig>>,
    opts: ListenOptions,
    service: &dyn Service,
    counts: &Counts,
) {
    let started = Instant::now();
    let timed = TimedTcp::shared(tcp, Waits::until(started + opts.handshake_timeout));
    let link: Result<Box<dyn Link>> = match tls {
        Some(cfg) => tls::accept(timed, cfg).map(|s| Box::new(s) as Box<dyn Link>),
        None => Ok(Box::new(timed)),
    };
    counts.pending().retain(|p| p.id != id);
    // a connection cut while its handshake had not started yet (its thread ran late, or
    // there is no TLS) is closed like one cut mid-handshake
    let link = match link {
        Ok(_) if cut.load(Ordering::SeqCst) => Err(anyhow::anyhow!("cut before its handshake")),
        other => other,
    };
    let link = match link {
        Ok(l) => l,
        Err(e) => {
            let why = if cut.load(Ordering::SeqCst) {
                format!(
                    "cut: more than {} handshakes at once, this was the oldest",
                    opts.max_handshakes
                )
            } else if is_timeout(&e) {
                format!(
                    "no complete handshake within {} s (--handshake-timeout): {e:#}",
                    opts.handshake_timeout.as_secs_f64()
                )
            } else {
                format!("{e:#}")
            };
            service.refused(Some(peer), &why);
            return;
        }
    };
    if counts.sessions.fetch_add(1, Ordering::SeqCst) >= opts.max_sessions {
        counts.sessions.fetch_sub(1, Ordering::SeqCst);
        service.refused(Some(peer), "too many sessions at once: closed");
        return;
    }
    let _session = Held(&counts.sessions);
    service.serve(link, peer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::mpsc;

    /// Echoes one line's worth of bytes back, and reports refusals.
    struct Echo(Mutex<mpsc::Sender<String>>);

    impl Service for Echo {
        fn serve(&self, mut link: Box<dyn Link>, _peer: SocketAddr) {
            let mut b = [0u8; 4];
            if link.read_exact(&mut b).is_ok() {
                let _ = link.write_all(&b);
            }
        }
        fn refused(&self, _peer: Option<SocketAddr>, why: &str) {
            let _ = self.0.lock().unwrap().send(why.to_string());
        }
    }

    fn start(opts: ListenOptions) -> (Server, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = serve(l, None, opts, Arc::new(Echo(Mutex::new(tx)))).unwrap();
        (s, rx)
    }

    fn echo(addr: SocketAddr) -> std::io::Result<[u8; 4]> {
        let mut c = TcpStream::connect(addr)?;
        c.set_read_timeout(Some(Duration::from_secs(5)))?;
        c.write_all(b"ping")?;
        let mut b = [0u8; 4];
        c.read_exact(&mut b)?;
        Ok(b)
    }

    #[test]
    fn idle_connections_are_cut_at_the_deadline_and_the_next_one_is_served() {
        let opts = ListenOptions {
            max_handshakes: 4,
            max_sessions: 4,
            handshake_timeout: Duration::from_millis(300),
        };
        let (server, refusals) = start(opts);
        // without TLS an idle peer sits in the service's first read, under the same
        // deadline; past the session limit the rest are closed at once
        let idle: Vec<_> = (0..10)
            .map(|_| TcpStream::connect(server.addr()).unwrap())
            .collect();
        // which limit closes the surplus depends on how fast the handshake threads run
        // against the accept loop: over the session limit, or cut as the oldest pending
        let why = refusals.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            why.contains("too many sessions") || why.contains("cut: more than 4 handshakes"),
            "{why}"
        );
        std::thread::sleep(Duration::from_millis(600));
        assert_eq!(&echo(server.addr()).unwrap(), b"ping");
        drop(idle);
        server.stop();
    }

    #[test]
    fn more_handshakes_than_allowed_cut_the_oldest() {
        let (tx, rx) = mpsc::channel();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        // with TLS, a silent peer stays in its handshake until the deadline or a cut
        let keys = std::env::temp_dir().join(format!("pw-listen-{}", std::process::id()));
        tls::keygen(&keys).unwrap();
        let cfg = tls::server_config(&keys).unwrap();
        let opts = ListenOptions {
            max_handshakes: 3,
            max_sessions: 4,
            handshake_timeout: Duration::from_secs(30),
        };
        let server = serve(l, Some(cfg), opts, Arc::new(Echo(Mutex::new(tx)))).unwrap();
        let _idle: Vec<_> = (0..8)
            .map(|_| TcpStream::connect(server.addr()).unwrap())
            .collect();
        let mut cut = 0;
        while cut < 5 {
            let why = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert!(why.contains("handshakes at once"), "{why}");
            cut += 1;
        }
        server.stop();
        let _ = std::fs::remove_dir_all(&keys);
    }
}
