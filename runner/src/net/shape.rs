//! WAN shaping on the sending side, for runs over loopback: a rate limit and an added
//! one-way delay, applied to everything written to a TCP stream (so TLS records and control
//! messages count too). Reads pass through untouched.
//!
//! Writes go into a queue with their arrival time; a pump thread releases each chunk
//! `delay` after it arrived, no faster than `rate`, like a link with that bandwidth and
//! latency. The queue holds at most one bandwidth-delay product plus 1 MiB (about what
//! socket buffers hold), so a fast writer is held back as it would be by a slow link. A
//! sender that wants little waiting behind the link (the tunnel: what waits there when
//! QEMU stops the guest lengthens the pause) asks for less with
//! [`Wire::with_unsent_limit`], which also sets `TCP_NOTSENT_LOWAT` on the real socket: the
//! same bound, kept by the kernel, on a real WAN link.
//!
//! Streams may share one link ([`Wire`]): QEMU's multifd channels then share its rate.
//!
//! Every wait (the writer for room in the queue, the pump for the socket, the reader) ends
//! within the stream's [`Waits`] ([`Link::set_waits`]): a peer that stops reading fails the
//! writer instead of holding it for ever.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::deadline::{Link, TimedTcp, Waits};
use crate::units::{parse_bandwidth, parse_link_delay};

/// A link shape: bandwidth and added delay. The default shapes nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Shape {
    /// Bytes per second, or `None` for no limit.
    pub rate: Option<f64>,
    /// Added one-way delay (on the sending side only, so it is also the added round-trip
    /// time).
    pub delay: Duration,
}

impl Shape {
    /// Parses `--rate` (e.g. `100mbit`, `off`) and `--delay` (e.g. `20ms`).
    pub fn parse(rate: &str, delay: &str) -> Result<Self> {
        let rate = match rate {
            "off" | "none" | "0" => None,
            r => Some(parse_bandwidth(r)?),
        };
        Ok(Shape {
            rate,
            delay: parse_link_delay(delay, "--delay")?,
        })
    }

    /// True when it changes nothing.
    pub fn is_none(&self) -> bool {
        self.rate.is_none() && self.delay.is_zero()
    }

    /// For reports: "100 Mbit/s, 20 ms".
    pub fn describe(&self) -> String {
        let rate = self.rate.map_or("unlimited".to_string(), |r| {
            format!("{:.0} Mbit/s", r * 8.0 / 1e6)
        });
        format!("{rate}, +{} ms", self.delay.as_millis())
    }

    /// What the queue holds: what is on its way (one bandwidth-delay product; with a delay
    /// but no rate, a TCP window of [`UNRATED_IN_FLIGHT`]) and `unsent` bytes waiting for
    /// the link.
    fn queue_cap(&self, unsent: usize) -> usize {
        let on_its_way = match self.rate {
            Some(r) => (r * self.delay.as_secs_f64()).min(256e6) as usize,
            None if !self.delay.is_zero() => UNRATED_IN_FLIGHT,
            None => 0,
        };
        on_its_way + unsent
    }
}

#[derive(Default)]
struct Queue {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    closed: bool,
    error: Option<(io::ErrorKind, String)>,
}

struct Shared {
    q: Mutex<Queue>,
    cv: Condvar,
}

/// One link that several streams share (QEMU's multifd channels, say): its rate is shared
/// between them, as on a real link, while each stream keeps its own queue and delay.
#[derive(Debug, Clone)]
pub struct Wire {
    /// When the link is next free to carry a byte.
    free_at: Arc<Mutex<Instant>>,
    shape: Shape,
    /// Bytes a stream dialled on it may hold waiting for the link, beyond what is on its
    /// way.
    unsent: usize,
}

/// What waits for the link by default: about what socket buffers hold.
pub const DEFAULT_UNSENT: usize = 1 << 20;

/// What a sender that adapts to its link lets wait in the socket (`TCP_NOTSENT_LOWAT`; the
/// migration's links and the tunnel's). Whatever waits there when the guest stops delays
/// its last pages by that much link time (1 MiB, a socket buffer's worth, is 84 ms at
/// 100 Mbit/s), and a sender that measures whether it waits for the link (`--compress
/// auto`) sees it only once the buffer is full. 256 KiB still keeps 21 ms of a 100 Mbit/s
/// link fed while the sender makes its next piece.
pub const SMALL_UNSENT: usize = 256 << 10;

/// What a link with a delay but no rate limit keeps on its way: Linux's largest TCP receive
/// window by default (`net.ipv4.tcp_rmem`, 6 MiB), which bounds a real unlimited link's
/// bytes in flight. Counting nothing there, as for a link without delay, held such a link
/// to the unsent limit per delay (1 MiB per 20 ms: 52 MB/s).
pub const UNRATED_IN_FLIGHT: usize = 6 << 20;

impl Wire {
    /// A link of `shape`.
    pub fn new(shape: Shape) -> Self {
        Wire {
            free_at: Arc::new(Mutex::new(Instant::now())),
            shape,
            unsent: DEFAULT_UNSENT,
        }
    }

    /// The same link, for a stream that holds at most `bytes` waiting for it (and sets
    /// `TCP_NOTSENT_LOWAT` to them on its socket).
    pub fn with_unsent_limit(mut self, bytes: usize) -> Self {
        self.unsent = bytes;
        self
    }

    /// Its shape.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Books `bytes` that are ready to go at `ready`; returns when the link starts carrying
    /// them: once it is free and they are there. The slot does not depend on when the
    /// pump thread asks, so a pump the scheduler wakes late catches up (as a NIC drains a
    /// socket buffer while the sending program is descheduled) instead of losing link time.
    fn book(&self, bytes: usize, ready: Instant) -> Option<Instant> {
        let rate = self.shape.rate?;
        let mut free = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*free).max(ready);
        *free = start + Duration::from_secs_f64(bytes as f64 / rate);
        Some(start)
    }

    /// The far end held a write back until `until`: the link could not carry anything
    /// meanwhile, so that time is no credit for later pieces.
    fn stalled(&self, until: Instant) {
        let mut free = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        *free = (*free).max(until);
    }
}

/// A TCP stream whose writes go through the shape.
pub struct ShapedStream {
    read: TimedTcp,
    shared: Arc<Shared>,
    cap: usize,
    wire_bytes: Arc<AtomicU64>,
    pump: Option<JoinHandle<()>>,
    /// The waits, as last set (the socket's handles hold them too).
    waits: Waits,
}

impl ShapedStream {
    /// Wraps `stream`; `wire_bytes` counts what reaches the socket.
    pub fn new(stream: TcpStream, shape: Shape, wire_bytes: Arc<AtomicU64>) -> io::Result<Self> {
        Self::on_wire(stream, Wire::new(shape), wire_bytes)
    }

    /// Wraps `stream` as one of the streams sharing `wire`.
    pub fn on_wire(stream: TcpStream, wire: Wire, wire_bytes: Arc<AtomicU64>) -> io::Result<Self> {
        let shape = wire.shape;
        let unsent = wire.unsent;
        stream.set_nodelay(true)?;
        if unsent != DEFAULT_UNSENT {
            set_notsent_lowat(&stream, unsent)?;
        }
        let read = TimedTcp::new(stream, Waits::NONE);
        let write = read.clone_handle();
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            cv: Condvar::new(),
        });
        let s = shared.clone();
        let counter = wire_bytes.clone();
        let pump = std::thread::Builder::new()
            .name("shaper".into())
            .spawn(move || pump(write, &wire, &s, &counter))?;
        Ok(ShapedStream {
            read,
            shared,
            cap: shape.queue_cap(unsent),
            wire_bytes,
            pump: Some(pump),
            waits: Waits::NONE,
        })
    }

    /// Bytes written to the socket so far.
    pub fn wire_bytes(&self) -> u64 {
        self.wire_bytes.load(Ordering::Relaxed)
    }

    /// The underlying stream (for shutting it down).
    pub fn tcp(&self) -> &TcpStream {
        self.read.tcp()
    }
}

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Queue> {
    s.q.lock().unwrap_or_else(|p| p.into_inner())
}

fn pump(mut out: TimedTcp, wire: &Wire, s: &Shared, wire_bytes: &AtomicU64) {
    const PIECE: usize = 16 * 1024;
    loop {
        let (arrived, chunk) = {
            let mut q = lock(s);
            loop {
                if let Some(c) = q.chunks.pop_front() {
                    break c;
                }
                if q.closed {
                    return;
                }
                q = s.cv.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let ready = arrived + wire.shape.delay;
        sleep_until(ready);
        for piece in chunk.chunks(PIECE) {
            let slot = wire.book(piece.len(), ready);
            if let Some(at) = slot {
                sleep_until(at);
            }
            let began = Instant::now();
            let written = out.write_all(piece);
            let done = Instant::now();
            if slot.is_some() && done - began > STALL {
                // the socket was full: the reader's doing, not the link's
                wire.stalled(done);
            }
            if let Err(e) = written {
                let mut q = lock(s);
                q.error = Some((e.kind(), e.to_string()));
                q.chunks.clear();
                q.bytes = 0;
                s.cv.notify_all();
                return;
            }
            wire_bytes.fetch_add(piece.len() as u64, Ordering::Relaxed);
        }
        let mut q = lock(s);
        q.bytes -= chunk.len();
        s.cv.notify_all();
    }
}

/// Lets the kernel hold at most `bytes` of `stream`'s data not yet sent (`TCP_NOTSENT_LOWAT`;
/// what is in flight does not count): a writer then waits in its own queue, not behind
/// megabytes in the socket buffer.
fn set_notsent_lowat(stream: &TcpStream, bytes: usize) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads one c_int from the valid `value` for the socket `stream`
    // owns, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How long a socket write may block before it counts as the far end holding the link
/// back (longer than a scheduler's hiccup, shorter than a stalled reader's).
const STALL: Duration = Duration::from_millis(5);

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

impl Write for ShapedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = buf.len().min(64 * 1024);
        let mut q = lock(&self.shared);
        loop {
            if let Some((kind, msg)) = &q.error {
                return Err(io::Error::new(*kind, msg.clone()));
            }
            if q.bytes < self.cap {
                break;
            }
            // the pump's socket writes are bounded too; this bounds a pump that sleeps
            q = match self.waits.timeout()? {
                Some(t) => {
                    let (q, r) = self
                        .shared
                        .cv
                        .wait_timeout(q, t)
                        .unwrap_or_else(|p| p.into_inner());
                    if r.timed_out() && q.bytes >= self.cap && q.error.is_none() {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the link took no byte within the time allowed",
                        ));
                    }
                    q
                }
                None => self.shared.cv.wait(q).unwrap_or_else(|p| p.into_inner()),
            };
        }
        q.chunks.push_back((Instant::now(), buf[..n].to_vec()));
        q.bytes += n;
        self.shared.cv.notify_all();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &lock(&self.shared).error {
            Some((kind, msg)) => Err(io::Error::new(*kind, msg.clone())),
            None => Ok(()),
        }
    }
}

impl Read for ShapedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.read(buf)
    }
}

impl Link for ShapedStream {
    fn set_waits(&mut self, waits: Waits) -> io::Result<()> {
        self.waits = waits;
        self.read.set_waits(waits);
        Ok(())
    }

    /// What waits in the shaper's queue (for the modelled link) and in the socket's.
    fn backlog(&self) -> Option<u64> {
        let queued = lock(&self.shared).bytes as u64;
        Some(queued + super::deadline::send_queue(self.read.tcp())?)
    }
}

impl Drop for ShapedStream {
    /// Lets the pump send what is queued (within the waits), then stops it.
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        self.shared.cv.notify_all();
        if let Some(p) = self.pump.take() {
            let _ = p.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair(shape: Shape) -> (ShapedStream, TcpStream, Arc<AtomicU64>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let n = Arc::new(AtomicU64::new(0));
        (ShapedStream::new(c, shape, n.clone()).unwrap(), s, n)
    }

    #[test]
    fn parses_shapes() {
        let s = Shape::parse("100mbit", "20ms").unwrap();
        assert_eq!(s.rate, Some(12.5e6));
        assert_eq!(s.delay, Duration::from_millis(20));
        assert!(Shape::parse("off", "0ms").unwrap().is_none());
        assert!(Shape::parse("fast", "1ms").is_err());
    }

    #[test]
    fn a_late_pump_catches_up_but_a_stalled_reader_earns_no_credit() {
        // 1 MB/s: 1,000 bytes take 1 ms of link
        let wire = Wire::new(Shape {
            rate: Some(1e6),
            delay: Duration::ZERO,
        });
        let ms = Duration::from_millis;
        let t0 = Instant::now() + ms(1000);
        *wire.free_at.lock().unwrap() = t0;
        // pieces that were ready at t0 get back-to-back slots however late they are asked
        // for (the pump sleeping past its slot loses no link time)
        assert_eq!(wire.book(1000, t0), Some(t0));
        assert_eq!(wire.book(1000, t0), Some(t0 + ms(1)));
        assert_eq!(wire.book(2000, t0), Some(t0 + ms(2)));
        // a piece not ready before the link is free starts when it is ready
        assert_eq!(wire.book(1000, t0 + ms(10)), Some(t0 + ms(10)));
        // a write the reader held until t0 + 50 ms: later pieces start from there
        wire.stalled(t0 + ms(50));
        assert_eq!(wire.book(1000, t0 + ms(12)), Some(t0 + ms(50)));
        // a stall that ended before the link was free again changes nothing
        wire.stalled(t0 + ms(20));
        assert_eq!(wire.book(1000, t0), Some(t0 + ms(51)));
        // no rate, no booking
        assert_eq!(Wire::new(Shape::default()).book(1000, t0), None);
    }

    #[test]
    fn an_unsent_limit_bounds_the_queue_and_the_socket() {
        let shape = Shape {
            rate: Some(12.5e6),
            delay: Duration::from_millis(20),
        };
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let probe = c.try_clone().unwrap();
        let counted = Arc::new(AtomicU64::new(0));
        let s = ShapedStream::on_wire(
            c,
            Wire::new(shape).with_unsent_limit(256 << 10),
            counted.clone(),
        )
        .unwrap();
        // one bandwidth-delay product (250 kB) on its way, 256 KiB waiting
        assert_eq!(s.cap, 250_000 + (256 << 10));
        let (mut value, mut len) = (
            0 as libc::c_int,
            size_of::<libc::c_int>() as libc::socklen_t,
        );
        use std::os::fd::AsRawFd;
        // SAFETY: getsockopt writes at most `len` bytes into the valid `value`.
        let rc = unsafe {
            libc::getsockopt(
                probe.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!((rc, value), (0, 256 << 10));
        // without a limit: a socket buffer's worth, and the socket as it was
        let (d, _, _) = pair(shape);
        assert_eq!(d.cap, 250_000 + DEFAULT_UNSENT);
        // a delay without a rate: a TCP window on its way; neither: only what waits
        let delay_only = Shape {
            rate: None,
            delay: Duration::from_millis(20),
        };
        assert_eq!(delay_only.queue_cap(1000), UNRATED_IN_FLIGHT + 1000);
        assert_eq!(Shape::default().queue_cap(1000), 1000);
    }

    #[test]
    fn the_backlog_counts_what_the_shaped_link_has_not_carried() {
        // 1 MB/s: 200 KB written at once take 0.2 s to cross
        let (mut tx, mut rx, _) = pair(Shape {
            rate: Some(1e6),
            delay: Duration::from_millis(50),
        });
        assert_eq!(tx.backlog(), Some(0));
        tx.write_all(&vec![5u8; 200_000]).unwrap();
        let waiting = tx.backlog().unwrap();
        assert!(waiting >= 150_000, "{waiting}");
        let mut buf = vec![0u8; 200_000];
        rx.read_exact(&mut buf).unwrap();
        let by = Instant::now() + Duration::from_secs(10);
        while tx.backlog() != Some(0) && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(tx.backlog(), Some(0));
    }

    #[test]
    fn rate_and_delay_hold_data_back() {
        // 2 MB at 40 Mbit/s (5 MB/s) takes about 0.4 s; the first byte arrives after 50 ms
        let shape = Shape {
            rate: Some(5e6),
            delay: Duration::from_millis(50),
        };
        let (mut tx, mut rx, counted) = pair(shape);
        let data = vec![7u8; 2_000_000];
        let t0 = Instant::now();
        let writer = std::thread::spawn(move || {
            tx.write_all(&data).unwrap();
            drop(tx); // drains the queue
        });
        let mut first = [0u8; 1];
        rx.read_exact(&mut first).unwrap();
        let first_at = t0.elapsed();
        let mut rest = Vec::new();
        rx.read_to_end(&mut rest).unwrap();
        let all_at = t0.elapsed();
        writer.join().unwrap();
        assert_eq!(rest.len() + 1, 2_000_000);
        assert_eq!(counted.load(Ordering::Relaxed), 2_000_000);
        assert!(first_at >= Duration::from_millis(45), "{first_at:?}");
        assert!(all_at >= Duration::from_millis(380), "{all_at:?}");
        assert!(all_at < Duration::from_millis(1500), "{all_at:?}");
    }

    #[test]
    fn a_peer_that_stops_reading_fails_the_writer_within_its_waits() {
        let (mut tx, _rx, _) = pair(Shape::default());
        tx.set_waits(Waits::idle(Duration::from_millis(300)))
            .unwrap();
        let chunk = vec![1u8; 64 * 1024];
        let t0 = Instant::now();
        let e = loop {
            if let Err(e) = tx.write_all(&chunk) {
                break e;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "writes never blocked"
            );
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        let t1 = Instant::now();
        drop(tx); // the pump gives up within the waits too
        assert!(t1.elapsed() < Duration::from_secs(5), "{:?}", t1.elapsed());
    }

    #[test]
    fn a_dead_peer_turns_into_a_write_error() {
        let (mut tx, rx, _) = pair(Shape::default());
        drop(rx);
        let chunk = vec![1u8; 64 * 1024];
        let mut failed = false;
        for _ in 0..2000 {
            if tx.write_all(&chunk).and_then(|()| tx.flush()).is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(failed, "writes to a closed peer kept succeeding");
    }
}
