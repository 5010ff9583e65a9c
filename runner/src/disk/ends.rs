//! The disk tunnel's two ends over the network (`pagewire disk source` / `disk dest`):
//! the link is the one `send` and `pagewire tunnel` use (TCP, shaping on the sending side,
//! mutual TLS on the keys of `pagewire keygen`, every wait bounded).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pagewire::Config;
use serde::Serialize;

use super::dest::{carry_in, DiskDelivered};
use super::items::{DiskHello, DiskReady};
use super::source::{DiskCarried, DiskOut, Phase};
use crate::encoders::InProcessEncoder;
use crate::migrate::link_stage::LinkCompression;
use crate::migrate::session;
use crate::migrate::{Codec, Deadline, Deadlines};
use crate::nbd::{serve_tcp, Client};
use crate::net::one_at_a_time::{Job, OneAtATime};
use crate::net::{dial_on, Link, Waits, Wire};

/// An NBD export by address: `nbd://HOST:PORT/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdAddr {
    pub host_port: String,
    pub name: String,
}

impl NbdAddr {
    /// Parses `nbd://HOST:PORT/NAME` (QEMU's own notation for an NBD export).
    pub fn parse(s: &str) -> Result<Self> {
        let rest = s
            .strip_prefix("nbd://")
            .ok_or_else(|| anyhow!("{s:?}: an NBD export is nbd://HOST:PORT/NAME"))?;
        let (host_port, name) = rest
            .split_once('/')
            .ok_or_else(|| anyhow!("{s:?}: an NBD export is nbd://HOST:PORT/NAME"))?;
        if !host_port.contains(':') || name.is_empty() {
            bail!("{s:?}: an NBD export is nbd://HOST:PORT/NAME");
        }
        Ok(NbdAddr {
            host_port: host_port.into(),
            name: name.into(),
        })
    }

    /// Connects and opens the export, within `timeout` for each step.
    pub fn open(&self, timeout: Duration) -> Result<Client<TcpStream>> {
        let s = crate::net::connect_by(&self.host_port, Instant::now() + timeout)
            .with_context(|| format!("connecting to the NBD export {}", self.host_port))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        // a request's header and payload are two writes: Nagle would hold the second
        s.set_nodelay(true)?;
        Client::connect(s, &self.name)
            .with_context(|| format!("opening export {:?} at {}", self.name, self.host_port))
    }
}

/// How the source end reaches the destination end.
#[derive(Clone)]
pub struct DiskSourceConfig {
    /// The destination end, `host:port`.
    pub to: String,
    /// The link's sending side: its shape, shared with other streams on the same link
    /// (the memory tunnel's, say) when they hold clones of one [`Wire`].
    pub wire: Wire,
    /// Mutual TLS (`None`: plain TCP, for tests of the link itself).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Codec configuration (its cache is the disk's own; pages are 4 KiB blocks).
    pub config: Config,
    /// Codec on, or zero blocks only (every other block goes as it is).
    pub codec: Codec,
    /// zstd over the whole stream (the codec's LZ4 then off), at a level or `auto`; or
    /// none: the codec's own frames.
    pub compression: LinkCompression,
    /// Free text for logs.
    pub label: String,
    /// How long to wait for the link, the destination end and the mirror job.
    pub deadlines: Deadlines,
    /// Bytes written in the asynchronous phase before the end waits for the destination.
    pub window: u64,
}

/// What one disk copy did at the source end.
#[derive(Debug, Clone, Serialize)]
pub struct DiskSourceReport {
    /// The writes and what became of them.
    pub carried: DiskCarried,
    /// Bytes that left on the link (after TLS).
    pub wire_bytes: u64,
    /// Seconds from the mirror job's connection to the end of the stream.
    pub total_s: f64,
}

/// Opens the link to the destination end (which opens its export and says its size), then
/// serves that size to one NBD client on `nbd` (the source QEMU's mirror job) until it
/// disconnects, its writes going through the codec. `ready` runs once the export is
/// served, with its size. `phase` switches writes to synchronous.
pub fn disk_source(
    nbd: &TcpListener,
    cfg: &DiskSourceConfig,
    phase: Phase,
    ready: impl FnOnce(u64),
) -> Result<DiskSourceReport> {
    let d = &cfg.deadlines;
    let wire = Arc::new(AtomicU64::new(0));
    let mut link = dial_on(
        &cfg.to,
        cfg.wire.clone(),
        cfg.tls.clone(),
        Instant::now() + d.handshake,
        wire.clone(),
    )
    .map_err(|e| d.explain(Deadline::Handshake, e))
    .with_context(|| format!("connecting to the disk tunnel's destination end {}", cfg.to))?;
    link.set_waits(Waits::idle(d.progress))?;
    let (config, features) = cfg.codec.stages().apply(Config {
        page_size: 4096,
        lz4: cfg.config.lz4 && cfg.compression.wants_codec_lz4(),
        ..cfg.config
    });
    let enc = Box::new(InProcessEncoder::with_features(config, features)?);
    let mut out = DiskOut::start(
        &mut link,
        &cfg.label,
        enc,
        phase,
        cfg.window,
        cfg.compression,
    )?;
    ready(out.size_bytes());
    let (mut conn, _) = nbd
        .accept()
        .context("waiting for the mirror job's NBD connection")?;
    conn.set_nodelay(true)?;
    let start = Instant::now();
    // a heartbeat well within the destination end's wait while the mirror job is quiet
    let served = serve_tcp(&mut conn, "disk", &mut out, d.progress / 3, d.progress);
    if let Some(why) = out.failure() {
        bail!("the disk tunnel's link failed: {why}");
    }
    served.context("serving the mirror job")?;
    let carried = out.finish()?;
    Ok(DiskSourceReport {
        carried,
        wire_bytes: wire.load(Ordering::Relaxed),
        total_s: start.elapsed().as_secs_f64(),
    })
}

/// How the destination end serves.
#[derive(Clone)]
pub struct DiskDestConfig {
    /// The destination QEMU's NBD export the writes go to.
    pub export: NbdAddr,
    /// Mutual TLS (`None`: plain TCP, for tests of the link itself).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long to wait for the source end and the export.
    pub deadlines: Deadlines,
    /// The export holds an older copy of the disk (or an image that shares content): send
    /// the source end an index of its blocks, so that it refers to blocks the export
    /// already holds instead of sending them.
    pub base: bool,
    /// Where the end's log lines go.
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

/// One disk copy through the destination end.
#[derive(Debug, Clone, Serialize)]
pub struct DiskDestReport {
    /// Who sent it.
    pub peer: String,
    /// What went into the export.
    pub delivered: DiskDelivered,
    /// Seconds from the hello to the end of the stream.
    pub total_s: f64,
}

/// A destination end listening in the background: one disk copy at a time; a failed one
/// is reported and the end listens on, so a second attempt can follow.
pub struct DiskDest(OneAtATime<DiskDestReport>);

impl DiskDest {
    /// Starts serving on `listener`.
    pub fn start(listener: TcpListener, cfg: DiskDestConfig) -> Result<Self> {
        let (tls, handshake, log) = (cfg.tls.clone(), cfg.deadlines.handshake, cfg.log.clone());
        Ok(DiskDest(OneAtATime::start(
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

    /// The next copy's outcome, within `timeout`.
    pub fn next(&self, timeout: Duration) -> Result<DiskDestReport> {
        self.0
            .next(timeout)
            .ok_or_else(|| anyhow!("no disk copy ended within {timeout:?}"))?
    }

    /// Stops listening.
    pub fn stop(self) {
        self.0.stop();
    }
}

/// One disk copy per connection.
struct Desk {
    cfg: DiskDestConfig,
}

impl Job for Desk {
    type Report = DiskDestReport;

    fn run(&self, link: &mut Box<dyn Link>, peer: SocketAddr) -> Result<DiskDestReport> {
        let d = &self.cfg.deadlines;
        let start = Instant::now();
        link.set_waits(Waits::idle(d.progress))?;
        let mut client = match self.cfg.export.open(d.handshake) {
            Ok(c) => c,
            Err(e) => {
                // the source end learns why before the link closes
                let _ = session::read_message::<DiskHello, _>(&mut *link);
                let _ = session::write_message(
                    &mut *link,
                    &DiskReady {
                        disk_bytes: 0,
                        error: Some(format!("{e:#}")),
                        base_blocks: 0,
                    },
                );
                return Err(e);
            }
        };
        let delivered = carry_in(&mut **link, &mut client, self.cfg.base)?;
        client.disconnect()?;
        Ok(DiskDestReport {
            peer: peer.to_string(),
            delivered,
            total_s: start.elapsed().as_secs_f64(),
        })
    }

    fn busy(&self, _link: &mut Box<dyn Link>) -> &'static str {
        "a disk copy is under way"
    }

    fn describe(&self, peer: SocketAddr, r: &Result<DiskDestReport>) -> String {
        match r {
            Ok(rep) => format!(
                "disk copy from {peer} done: {} blocks, {} zeroed bytes in {:.1} s",
                rep.delivered.block_bytes / 4096,
                rep.delivered.zeroed_bytes,
                rep.total_s
            ),
            Err(e) => format!("disk copy from {peer} failed: {e:#}"),
        }
    }
}
