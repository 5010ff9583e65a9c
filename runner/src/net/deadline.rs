//! Bounded waits: no read or write on a link may block for ever. [`Waits`] says how long
//! one may block (an idle limit: no byte moved for that long) and by when every one must
//! end (an absolute deadline, which also cuts a peer that trickles one byte a second);
//! [`TimedTcp`] applies them to a TCP socket before every system call, so the bound holds
//! under TLS and the shaper too. An expired wait is an [`io::ErrorKind::TimedOut`] error;
//! the layer that set the waits names the deadline ([`is_timeout`] finds it in a chain).

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long waits on a link may last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Waits {
    /// Longest single wait with no byte moving (`None`: no limit).
    pub idle: Option<Duration>,
    /// Every wait ends by then (`None`: no deadline).
    pub until: Option<Instant>,
}

impl Waits {
    /// No bound at all.
    pub const NONE: Waits = Waits {
        idle: None,
        until: None,
    };

    /// No single wait longer than `idle`.
    pub fn idle(idle: Duration) -> Self {
        Waits {
            idle: Some(idle),
            until: None,
        }
    }

    /// Every wait over by `until`.
    pub fn until(until: Instant) -> Self {
        Waits {
            idle: None,
            until: Some(until),
        }
    }

    /// The timeout for a wait starting now: `Ok(None)` for none, an error once the deadline
    /// has passed.
    pub fn timeout(&self) -> io::Result<Option<Duration>> {
        let mut t = self.idle;
        if let Some(until) = self.until {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the deadline for this step has passed",
                ));
            }
            t = Some(t.map_or(left, |i| i.min(left)));
        }
        // a zero timeout means "none" to the socket: wait at least a microsecond
        Ok(t.map(|t| t.max(Duration::from_micros(1))))
    }
}

/// True when `e` (or anything it wraps) is an expired wait.
pub fn is_timeout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|e| is_timeout_kind(e.kind()))
    })
}

/// An expired socket timeout shows as `WouldBlock` (EAGAIN) or `TimedOut`.
pub fn is_timeout_kind(kind: io::ErrorKind) -> bool {
    matches!(kind, io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The waits of a socket and its clones, and the timeouts last set on it.
#[derive(Default)]
struct Shared {
    waits: Waits,
    read_armed: Option<Option<Duration>>,
    write_armed: Option<Option<Duration>>,
}

/// A TCP stream whose every read and write ends within its [`Waits`]. Clones (for a reader
/// and a writer thread) share the waits.
pub struct TimedTcp {
    tcp: Arc<TcpStream>,
    shared: Arc<Mutex<Shared>>,
}

impl TimedTcp {
    /// Wraps `tcp` with `waits`.
    pub fn new(tcp: TcpStream, waits: Waits) -> Self {
        Self::shared(Arc::new(tcp), waits)
    }

    /// Wraps a stream also held elsewhere (a listener keeps one to cut a stalled handshake).
    pub fn shared(tcp: Arc<TcpStream>, waits: Waits) -> Self {
        TimedTcp {
            tcp,
            shared: Arc::new(Mutex::new(Shared {
                waits,
                ..Shared::default()
            })),
        }
    }

    /// Another handle on the same socket with the same waits.
    pub fn clone_handle(&self) -> Self {
        TimedTcp {
            tcp: self.tcp.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Replaces the waits (for this handle and its clones).
    pub fn set_waits(&self, waits: Waits) {
        self.lock().waits = waits;
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the socket's timeout for the next read (`write` false) or write.
    fn arm(&self, write: bool) -> io::Result<()> {
        let mut s = self.lock();
        let t = s.waits.timeout()?;
        let armed = if write {
            &mut s.write_armed
        } else {
            &mut s.read_armed
        };
        // with a deadline the timeout shrinks on every call; without one it stays
        if *armed != Some(t) || s.waits.until.is_some() {
            if write {
                self.tcp.set_write_timeout(t)?;
                s.write_armed = Some(t);
            } else {
                self.tcp.set_read_timeout(t)?;
                s.read_armed = Some(t);
            }
        }
        Ok(())
    }
}

/// A socket timeout as the error every layer above passes on.
fn timed_out(e: io::Error) -> io::Error {
    if is_timeout_kind(e.kind()) {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "no byte moved within the time allowed",
        )
    } else {
        e
    }
}

impl Read for TimedTcp {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.arm(false)?;
        (&*self.tcp).read(buf).map_err(timed_out)
    }
}

impl Write for TimedTcp {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.arm(true)?;
        (&*self.tcp).write(buf).map_err(timed_out)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sets a plain socket's timeouts from `waits` once (a deadline becomes the time left now).
fn set_socket_waits(
    waits: Waits,
    set_read: impl FnOnce(Option<Duration>) -> io::Result<()>,
    set_write: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let t = waits.timeout()?;
    set_read(t)?;
    set_write(t)
}

/// A bidirectional byte stream a migration runs over, whose waits can be bounded.
pub trait Link: Read + Write + Send {
    /// Bounds every read and write from now on by `waits`.
    fn set_waits(&mut self, waits: Waits) -> io::Result<()>;

    /// Bytes written and not yet taken by the far end, as far as this side can tell (the
    /// kernel's send queue, a shaper's queue): what the link still has to carry. `None`
    /// where it cannot be told. `auto` reads it to tell a link that keeps pace with the
    /// sender from buffers that take its first bytes.
    fn backlog(&self) -> Option<u64> {
        None
    }
}

/// The bytes in `fd`'s send queue not yet acknowledged by the peer (`TIOCOUTQ`: unsent and
/// in flight), or `None` if the socket does not say.
pub fn send_queue(fd: &impl std::os::fd::AsRawFd) -> Option<u64> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one c_int into the valid, exclusively borrowed `n`; `fd` is an
    // open socket for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    (rc == 0).then(|| u64::try_from(n).unwrap_or(0))
}

impl Link for TimedTcp {
    fn set_waits(&mut self, waits: Waits) -> io::Result<()> {
        TimedTcp::set_waits(self, waits);
        Ok(())
    }

    fn backlog(&self) -> Option<u64> {
        send_queue(self.tcp())
    }
}

/// Connects to `addr` (any of its addresses), giving up at `by`.
pub fn connect_by(addr: &str, by: Instant) -> anyhow::Result<TcpStream> {
    let mut last = None;
    for a in addr
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("resolving {addr}: {e}"))?
    {
        let left = by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => anyhow::Error::new(e),
        None => anyhow::anyhow!("{addr} has no address to connect to in time"),
    })
}

/// A plain TCP stream takes the bound once: a deadline becomes the time left when it is
/// set (use [`TimedTcp`] to hold a deadline exactly).
impl Link for TcpStream {
    fn set_waits(&mut self, waits: Waits) -> io::Result<()> {
        set_socket_waits(
            waits,
            |t| self.set_read_timeout(t),
            |t| self.set_write_timeout(t),
        )
    }

    fn backlog(&self) -> Option<u64> {
        send_queue(self)
    }
}

/// As for [`TcpStream`].
impl Link for UnixStream {
    fn set_waits(&mut self, waits: Waits) -> io::Result<()> {
        set_socket_waits(
            waits,
            |t| self.set_read_timeout(t),
            |t| self.set_write_timeout(t),
        )
    }

    fn backlog(&self) -> Option<u64> {
        send_queue(self)
    }
}

impl<L: Link + ?Sized> Link for Box<L> {
    fn set_waits(&mut self, waits: Waits) -> io::Result<()> {
        (**self).set_waits(waits)
    }

    fn backlog(&self) -> Option<u64> {
        (**self).backlog()
    }
}

impl<L: Link + ?Sized> Link for &mut L {
    fn set_waits(&mut self, waits: Waits) -> io::Result<()> {
        (**self).set_waits(waits)
    }

    fn backlog(&self) -> Option<u64> {
        (**self).backlog()
    }
}

/// TLS writes its records through to the socket before a write returns, so the socket's
/// backlog is the stream's.
impl<S: Link> Link for rustls::StreamOwned<rustls::ServerConnection, S> {
    fn set_waits(&mut self, waits: Waits) -> io::Result<()> {
        self.sock.set_waits(waits)
    }

    fn backlog(&self) -> Option<u64> {
        self.sock.backlog()
    }
}

/// As for the server's side.
impl<S: Link> Link for rustls::StreamOwned<rustls::ClientConnection, S> {
    fn set_waits(&mut self, waits: Waits) -> io::Result<()> {
        self.sock.set_waits(waits)
    }

    fn backlog(&self) -> Option<u64> {
        self.sock.backlog()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (c, l.accept().unwrap().0)
    }

    #[test]
    fn a_socket_tells_its_backlog_until_the_peer_takes_it() {
        let (mut a, mut b) = pair();
        assert_eq!(Link::backlog(&a), Some(0));
        // the peer does not read: once its receive buffer is full, what is written waits
        // in the sender's queue
        a.set_nonblocking(true).unwrap();
        let chunk = vec![3u8; 64 * 1024];
        let mut written = 0u64;
        loop {
            match a.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let waiting = Link::backlog(&a).unwrap();
        assert!(waiting > 0 && waiting <= written, "{waiting} of {written}");
        // the peer reads everything: nothing is left to carry
        let mut got = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        let by = Instant::now() + Duration::from_secs(10);
        while got < written && Instant::now() < by {
            got += b.read(&mut buf).unwrap() as u64;
        }
        assert_eq!(got, written);
        while Link::backlog(&a) != Some(0) && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(Link::backlog(&a), Some(0));
        // the same through a box
        let boxed: Box<dyn Link> = Box::new(a);
        assert_eq!(boxed.backlog(), Some(0));
    }

    #[test]
    fn an_idle_peer_times_out_and_a_deadline_cuts_a_trickle() {
        let (a, mut b) = pair();
        let mut t = TimedTcp::new(a, Waits::idle(Duration::from_millis(100)));
        let t0 = Instant::now();
        let e = t.read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(
            t0.elapsed() >= Duration::from_millis(90),
            "{:?}",
            t0.elapsed()
        );
        assert!(is_timeout(&anyhow::Error::new(e).context("reading")));

        // one byte every 50 ms never trips a 100 ms idle limit, but the deadline ends it
        let mut reader = t.clone_handle();
        t.set_waits(Waits {
            idle: Some(Duration::from_millis(100)),
            until: Some(Instant::now() + Duration::from_millis(400)),
        });
        let trickle = std::thread::spawn(move || {
            for _ in 0..40 {
                if b.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let t0 = Instant::now();
        let mut got = 0;
        let e = loop {
            match reader.read(&mut [0u8; 8]) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let took = t0.elapsed();
        assert!(got >= 3, "{got} bytes before the deadline");
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        drop(reader);
        drop(t);
        trickle.join().unwrap();
    }

    #[test]
    fn a_peer_that_reads_nothing_times_a_writer_out() {
        let (a, _b) = pair();
        let mut t = TimedTcp::new(a, Waits::idle(Duration::from_millis(200)));
        let chunk = vec![0u8; 1 << 20];
        let t0 = Instant::now();
        let e = loop {
            if let Err(e) = t.write_all(&chunk) {
                break e;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "writes never blocked"
            );
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_passed_deadline_fails_at_once() {
        let w = Waits::until(Instant::now());
        assert_eq!(w.timeout().unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(Waits::NONE.timeout().unwrap(), None);
        let w = Waits {
            idle: Some(Duration::from_secs(30)),
            until: Some(Instant::now() + Duration::from_secs(2)),
        };
        assert!(w.timeout().unwrap().unwrap() <= Duration::from_secs(2));
    }
}
