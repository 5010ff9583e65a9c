//! A listener that runs one job per authenticated connection, one job at a time, and hands
//! each job's outcome to whoever waits for it: the destination ends of the QEMU tunnel and
//! of the disk tunnel. A connection that comes while a job runs is refused; a failed job is
//! reported and the listener goes on, so a second attempt can follow.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use super::listen::{self, ListenOptions, Server, Service};
use super::Link;

/// What the listener does with a connection.
pub trait Job: Send + Sync + 'static {
    /// What a finished job reports.
    type Report: Send + 'static;
    /// Runs one job on `link` (its waits are still the handshake deadline).
    fn run(&self, link: &mut Box<dyn Link>, peer: SocketAddr) -> Result<Self::Report>;
    /// A connection came while another job ran: tells it (on `link`) if the protocol has a
    /// way to, and returns why, for the log.
    fn busy(&self, link: &mut Box<dyn Link>) -> &'static str;
    /// The log line of a finished job.
    fn describe(&self, peer: SocketAddr, r: &Result<Self::Report>) -> String;
}

/// The listener, serving in the background.
pub struct OneAtATime<R> {
    server: Server,
    results: Mutex<mpsc::Receiver<Result<R>>>,
}

impl<R: Send + 'static> OneAtATime<R> {
    /// Serves `job` on `listener` (mutual TLS when `tls` is given, each handshake within
    /// `handshake`), logging through `log`.
    pub fn start<J: Job<Report = R>>(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        handshake: Duration,
        log: Arc<dyn Fn(&str) + Send + Sync>,
        job: J,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let desk = Desk {
            busy: AtomicBool::new(false),
            results: Mutex::new(tx),
            log,
            job,
        };
        let opts = ListenOptions {
            handshake_timeout: handshake,
            ..ListenOptions::default()
        };
        let server = listen::serve(listener, tls, opts, Arc::new(desk))?;
        Ok(OneAtATime {
            server,
            results: Mutex::new(rx),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The next job's outcome, waiting at most `wait` (`None`: nothing came).
    pub fn next(&self, wait: Duration) -> Option<Result<R>> {
        let rx = self.results.lock().unwrap_or_else(|p| p.into_inner());
        rx.recv_timeout(wait).ok()
    }

    /// Stops listening.
    pub fn stop(self) {
        self.server.stop();
    }
}

/// The service behind the listener.
struct Desk<J: Job> {
    busy: AtomicBool,
    results: Mutex<mpsc::Sender<Result<J::Report>>>,
    log: Arc<dyn Fn(&str) + Send + Sync>,
    job: J,
}

impl<J: Job> Service for Desk<J> {
    fn serve(&self, mut link: Box<dyn Link>, peer: SocketAddr) {
        if self.busy.swap(true, Ordering::SeqCst) {
            let why = self.job.busy(&mut link);
            (self.log)(&format!("refused {peer}: {why}"));
            return;
        }
        let r = self.job.run(&mut link, peer);
        self.busy.store(false, Ordering::SeqCst);
        (self.log)(&self.job.describe(peer, &r));
        let tx = self.results.lock().unwrap_or_else(|p| p.into_inner());
        // `ignore`: no one waits for the outcome any more; the log has it.
        let _ = tx.send(r);
    }

    fn refused(&self, peer: Option<SocketAddr>, why: &str) {
        match peer {
            Some(p) => (self.log)(&format!("refused {p}: {why}")),
            None => (self.log)(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    /// Reads one byte, answers it, and reports it; refuses with `b'X'` while busy.
    struct Echo;

    impl Job for Echo {
        type Report = u8;
        fn run(&self, link: &mut Box<dyn Link>, _peer: SocketAddr) -> Result<u8> {
            let mut b = [0u8; 1];
            link.read_exact(&mut b)?;
            link.write_all(&b)?;
            anyhow::ensure!(b[0] != b'!', "told to fail");
            Ok(b[0])
        }
        fn busy(&self, link: &mut Box<dyn Link>) -> &'static str {
            let _ = link.write_all(b"X");
            "busy"
        }
        fn describe(&self, _peer: SocketAddr, r: &Result<u8>) -> String {
            format!("done: {}", r.is_ok())
        }
    }

    #[test]
    fn one_job_at_a_time_a_failure_reported_and_the_next_one_served() {
        let (log_tx, log_rx) = mpsc::channel::<String>();
        let log_tx = Mutex::new(log_tx);
        let s = OneAtATime::start(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            None,
            Duration::from_secs(5),
            Arc::new(move |l: &str| {
                let _ = log_tx.lock().unwrap().send(l.to_string());
            }),
            Echo,
        )
        .unwrap();
        // the first connection holds the desk until it sends its byte
        let mut first = TcpStream::connect(s.addr()).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let mut second = TcpStream::connect(s.addr()).unwrap();
        let mut b = [0u8; 1];
        second.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"X", "refused while the first runs");
        assert!(log_rx
            .recv_timeout(Duration::from_secs(5))
            .unwrap()
            .contains("refused"));
        first.write_all(b"a").unwrap();
        assert_eq!(s.next(Duration::from_secs(5)).unwrap().unwrap(), b'a');
        // a failed job is reported, and the listener goes on
        TcpStream::connect(s.addr())
            .unwrap()
            .write_all(b"!")
            .unwrap();
        assert!(s.next(Duration::from_secs(5)).unwrap().is_err());
        TcpStream::connect(s.addr())
            .unwrap()
            .write_all(b"c")
            .unwrap();
        assert_eq!(s.next(Duration::from_secs(5)).unwrap().unwrap(), b'c');
        assert!(s.next(Duration::from_millis(100)).is_none());
        s.stop();
    }
}
