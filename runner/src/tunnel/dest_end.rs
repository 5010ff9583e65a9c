//! `pagewire tunnel dest`: accepts tunnel sessions (mutual TLS first, every handshake under
//! a deadline) and hands each migration to the destination QEMU's `-incoming`. One
//! migration at a time; a failed one is reported (to the source end and in the results)
//! and the end listens on, so a second attempt can follow.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde::Serialize;

use super::dest::{carry_in, Delivered};
use super::endpoint::QemuEndpoint;
use super::session::{read_hello, TunnelReply};
use crate::migrate::compress::thread_cpu_time;
use crate::migrate::link_stage;
use crate::migrate::session::write_message;
use crate::migrate::{Deadline, Deadlines};
use crate::net::one_at_a_time::{Job, OneAtATime};
use crate::net::{Link, Waits};

/// How the destination end serves.
#[derive(Clone)]
pub struct DestEndConfig {
    /// The destination QEMU's `-incoming`.
    pub qemu: QemuEndpoint,
    /// Mutual TLS (`None`: plain TCP, for tests of the link itself).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long to wait for the source end and for QEMU.
    pub deadlines: Deadlines,
    /// Largest decoder cache a stream may ask for, in bytes.
    pub max_cache: u64,
    /// Where the end's log lines go.
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

/// One migration through the destination end.
#[derive(Debug, Clone, Serialize)]
pub struct DestReport {
    /// The attempt's id (hex).
    pub migration_id: String,
    /// The source end's label.
    pub label: String,
    /// Who sent it.
    pub peer: String,
    /// What went to QEMU.
    pub delivered: Delivered,
    /// Seconds from the hello to the end of QEMU's stream.
    pub total_s: f64,
    /// CPU seconds the destination end used (TLS, decoding, rebuilding QEMU's stream).
    pub cpu_s: f64,
}

/// A destination end listening in the background.
pub struct TunnelDest(OneAtATime<DestReport>);

impl TunnelDest {
    /// Starts serving on `listener`.
    pub fn start(listener: TcpListener, cfg: DestEndConfig) -> Result<Self> {
        let (tls, handshake, log) = (cfg.tls.clone(), cfg.deadlines.handshake, cfg.log.clone());
        Ok(TunnelDest(OneAtATime::start(
            listener,
            tls,
            handshake,
            log,
            Desk { cfg },
        )?))
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }

    /// The next migration's outcome, waiting at most `wait` (`None`: nothing came).
    pub fn next(&self, wait: Duration) -> Option<Result<DestReport>> {
        self.0.next(wait)
    }

    /// Stops listening.
    pub fn stop(self) {
        self.0.stop();
    }
}

/// One migration per connection.
struct Desk {
    cfg: DestEndConfig,
}

impl Job for Desk {
    type Report = DestReport;

    fn run(&self, link: &mut Box<dyn Link>, peer: SocketAddr) -> Result<DestReport> {
        let d = &self.cfg.deadlines;
        // still under the handshake deadline
        let hello = read_hello(link).map_err(|e| d.explain(Deadline::Handshake, e))?;
        (self.cfg.log)(&format!(
            "migration {:016x} ({}) from {peer}: carrying it to QEMU at {}",
            hello.migration_id,
            hello.label,
            self.cfg.qemu.uri()
        ));
        let start = Instant::now();
        let cpu = thread_cpu_time();
        link.set_waits(Waits::idle(d.progress))?;
        let qemu = &self.cfg.qemu;
        let mut connect = || -> Result<Box<dyn Write>> {
            Ok(Box::new(qemu.connect(d.progress)?) as Box<dyn Write>)
        };
        let result = link_stage::read(&hello.link_compression, link, |from| {
            carry_in(from, &mut connect, self.cfg.max_cache, &mut |_| {})
        })
        .map_err(|e| d.explain(Deadline::Progress, e));
        let _ = link.set_waits(Waits::until(Instant::now() + d.switchover));
        let _ = write_message(link, &TunnelReply::of(&result));
        let delivered = result?;
        Ok(DestReport {
            migration_id: format!("{:016x}", hello.migration_id),
            label: hello.label,
            peer: peer.to_string(),
            delivered,
            total_s: start.elapsed().as_secs_f64(),
            cpu_s: (thread_cpu_time() - cpu).as_secs_f64(),
        })
    }

    fn busy(&self, link: &mut Box<dyn Link>) -> &'static str {
        let reply = TunnelReply::of(&Err(anyhow!("another migration is in progress here")));
        // `ignore`: the peer is refused either way; the reply only tells it why.
        let _ = write_message(link, &reply);
        "a migration is in progress"
    }

    fn describe(&self, _peer: SocketAddr, r: &Result<DestReport>) -> String {
        match r {
            Ok(rep) => format!(
                "migration {} handed to QEMU: {} B of QEMU stream from {} B of pagewire stream",
                rep.migration_id, rep.delivered.qemu_bytes, rep.delivered.stream_bytes
            ),
            Err(e) => format!("migration failed, listening on: {e:#}"),
        }
    }
}
