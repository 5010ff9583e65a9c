//! A shaped TCP relay: what stands for the WAN between two QEMUs that migrate directly
//! (QEMU's own migration, compared with the tunnel on the same link). Every connection it
//! accepts is forwarded to one address, the forward direction through one shared [`Wire`]
//! (so QEMU's multifd channels share the link's rate, as on a real link), the way back
//! unshaped. It counts the bytes it forwards and can cut every connection, as a broken
//! link does.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::shape::{ShapedStream, Wire};

/// A running relay; stops accepting and cuts its connections when dropped.
pub struct ShapedRelay {
    addr: SocketAddr,
    forwarded: Arc<AtomicU64>,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    stopped: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
}

/// How often the accept loop looks for a stop.
const POLL: Duration = Duration::from_millis(20);

impl ShapedRelay {
    /// Relays every connection to `listener` to `to`, forward through `wire`.
    pub fn start(listener: TcpListener, to: SocketAddr, wire: Wire) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let forwarded = Arc::new(AtomicU64::new(0));
        let state = Arc::new(State::default());
        let (f, st) = (forwarded.clone(), state.clone());
        thread::Builder::new()
            .name("relay".into())
            .spawn(move || accept_loop(&listener, to, &wire, &f, &st))?;
        Ok(ShapedRelay {
            addr,
            forwarded,
            state,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes forwarded (onto the link) so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Cuts every connection now and refuses new ones.
    pub fn cut(&self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        for c in self
            .state
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for ShapedRelay {
    fn drop(&mut self) {
        self.cut();
    }
}

fn accept_loop(
    listener: &TcpListener,
    to: SocketAddr,
    wire: &Wire,
    forwarded: &Arc<AtomicU64>,
    state: &Arc<State>,
) {
    while !state.stopped.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((from, _)) => {
                if let Err(e) = relay(from, to, wire, forwarded, state) {
                    eprintln!("relay: a connection to {to} failed: {e}");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(_) => thread::sleep(POLL),
        }
    }
}

/// Starts the two directions of one connection.
fn relay(
    from: TcpStream,
    to: SocketAddr,
    wire: &Wire,
    forwarded: &Arc<AtomicU64>,
    state: &Arc<State>,
) -> io::Result<()> {
    from.set_nonblocking(false)?;
    let into = TcpStream::connect(to)?;
    {
        let mut conns = state.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.push(from.try_clone()?);
        conns.push(into.try_clone()?);
    }
    let back_from = into.try_clone()?;
    let back_into = from.try_clone()?;
    let into_end = into.try_clone()?;
    let shaped = ShapedStream::on_wire(into, wire.clone(), forwarded.clone())?;
    thread::Builder::new()
        .name("relay-fwd".into())
        .spawn(move || {
            let mut shaped = shaped;
            copy(&from, &mut shaped);
            drop(shaped);
            // the shaped stream is gone: what it queued went out first
            let _ = into_end.shutdown(Shutdown::Write);
        })?;
    thread::Builder::new()
        .name("relay-back".into())
        .spawn(move || {
            copy(&back_from, &mut &back_into);
            let _ = back_into.shutdown(Shutdown::Write);
        })?;
    Ok(())
}

/// Copies until either side ends or fails.
fn copy<W: Write>(mut from: &TcpStream, into: &mut W) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || into.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Shape;
    use std::time::Instant;

    #[test]
    fn connections_share_the_rate_and_a_cut_ends_them() {
        let sink = TcpListener::bind("127.0.0.1:0").unwrap();
        let sink_addr = sink.local_addr().unwrap();
        let got = Arc::new(AtomicU64::new(0));
        let g = got.clone();
        thread::spawn(move || {
            for c in sink.incoming() {
                let (mut c, g) = (c.unwrap(), g.clone());
                thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        g.fetch_add(n as u64, Ordering::SeqCst);
                    }
                });
            }
        });
        // 8 Mbit/s: two connections of 256 KiB each need at least 0.5 s together
        let wire = Wire::new(Shape::parse("8mbit", "0ms").unwrap());
        let relay =
            ShapedRelay::start(TcpListener::bind("127.0.0.1:0").unwrap(), sink_addr, wire).unwrap();
        let t = Instant::now();
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let addr = relay.addr();
                thread::spawn(move || {
                    let mut c = TcpStream::connect(addr).unwrap();
                    c.write_all(&vec![7u8; 256 << 10]).unwrap();
                    c
                })
            })
            .collect();
        let _conns: Vec<_> = senders.into_iter().map(|s| s.join().unwrap()).collect();
        while got.load(Ordering::SeqCst) < 512 << 10 {
            assert!(t.elapsed() < Duration::from_secs(20), "the relay stalled");
            thread::sleep(Duration::from_millis(10));
        }
        assert!(
            t.elapsed() >= Duration::from_millis(450),
            "512 KiB crossed an 8 Mbit/s link in {:?}",
            t.elapsed()
        );
        assert_eq!(relay.forwarded(), 512 << 10);
        relay.cut();
        let mut late = TcpStream::connect(relay.addr());
        if let Ok(c) = late.as_mut() {
            // accepted by the kernel's backlog at most; nothing is forwarded any more
            let _ = c.write_all(&[1; 100]);
        }
        thread::sleep(Duration::from_millis(100));
        assert_eq!(relay.forwarded(), 512 << 10);
    }
}
