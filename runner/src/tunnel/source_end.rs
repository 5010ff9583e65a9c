//! `pagewire tunnel source`: takes one migration from the source QEMU and carries it to a
//! tunnel destination end over the shaped, authenticated link `send` uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use pagewire::Config;
use serde::Serialize;

use super::endpoint::{QemuListener, QemuStream};
use super::session::{write_hello, TunnelHello, TunnelReply};
use super::source::{carry_out, Carried};
use crate::encoders::InProcessEncoder;
use crate::migrate::compress::thread_cpu_time;
use crate::migrate::link_stage::{LinkCompression, StageReport};
use crate::migrate::session::{new_migration_id, read_message};
use crate::migrate::{Codec, Deadline, Deadlines};
use crate::net::{dial_on, Link, Waits, Wire, SMALL_UNSENT};

/// How the source end reaches the destination end, and how it encodes.
#[derive(Clone)]
pub struct SourceEndConfig {
    /// The destination end, `host:port`.
    pub to: String,
    /// The link's sending side: its shape, shared with other streams on the same link
    /// (a disk tunnel's, say) when they hold clones of one [`Wire`].
    pub wire: Wire,
    /// Mutual TLS (`None`: plain TCP, for tests of the link itself).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Base codec configuration (cache size etc.).
    pub config: Config,
    /// Codec on or off.
    pub codec: Codec,
    /// What compresses the codec's stream on the link.
    pub link_compression: LinkCompression,
    /// Free text for logs.
    pub label: String,
    /// How long to wait for the link and the destination end.
    pub deadlines: Deadlines,
}

/// What one tunnelled migration did at the source end.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// The attempt's id (hex).
    pub migration_id: String,
    /// QEMU's stream and what became of it.
    pub carried: Carried,
    /// Bytes that left on the link (after TLS).
    pub wire_bytes: u64,
    /// Seconds from QEMU's connection to the destination end's reply.
    pub total_s: f64,
    /// CPU seconds the source end used (parsing, encoding, zstd, TLS; not the shaper's
    /// pacing).
    pub cpu_s: f64,
    /// What the link's compression did (zstd's levels).
    pub link_stage: StageReport,
    /// The destination end's reply.
    pub reply: TunnelReply,
}

/// A link to the destination end, its hello sent, waiting for QEMU's stream.
pub struct OpenLink {
    link: Box<dyn Link>,
    hello: TunnelHello,
    /// Bytes that left on it.
    wire: Arc<AtomicU64>,
    opened: Instant,
    /// CPU seconds its handshake took.
    cpu_s: f64,
}

/// Connects to the destination end (TCP, TLS, shaping) and sends the hello.
pub fn open_link(cfg: &SourceEndConfig) -> Result<OpenLink> {
    let start = Instant::now();
    let cpu = thread_cpu_time();
    let d = &cfg.deadlines;
    let wire = Arc::new(AtomicU64::new(0));
    let mut link = dial_on(
        &cfg.to,
        cfg.wire.clone().with_unsent_limit(SMALL_UNSENT),
        cfg.tls.clone(),
        start + d.handshake,
        wire.clone(),
    )
    .map_err(|e| d.explain(Deadline::Handshake, e))
    .with_context(|| format!("connecting to the tunnel's destination end {}", cfg.to))?;
    let hello = TunnelHello {
        migration_id: new_migration_id()?,
        label: cfg.label.clone(),
        page_size: cfg.config.page_size,
        link_compression: cfg.link_compression.name().into(),
    };
    write_hello(&mut link, &hello).map_err(|e| d.explain(Deadline::Handshake, e))?;
    link.set_waits(Waits::idle(d.progress))?;
    Ok(OpenLink {
        link,
        hello,
        wire,
        opened: Instant::now(),
        cpu_s: (thread_cpu_time() - cpu).as_secs_f64(),
    })
}

/// Waits for QEMU's migration connection on `listener` while the link to the destination
/// end opens beside it, so that QEMU's first pages do not wait for the handshake (a TLS
/// handshake costs round trips: 20-25 ms at +20 ms, while QEMU fills its socket and
/// stops). An early link QEMU does not take within half the progress deadline is closed
/// (the destination end would give up on it as silent), and a link is opened once QEMU is
/// there, as it is when the early one failed (the destination end not up yet, say).
/// `connected` runs once QEMU has connected. Fails when the QEMU stream is refused, the
/// link fails, or the destination end could not hand the stream to its QEMU (its reason
/// included).
pub fn accept_and_tunnel_out(
    listener: &QemuListener,
    cfg: &SourceEndConfig,
    connected: impl FnOnce(),
    progress: &mut dyn FnMut(&Carried, u64),
) -> Result<SourceReport> {
    let stall = cfg.deadlines.progress;
    let (qemu, early) = std::thread::scope(|scope| {
        let (arrived, wait) = std::sync::mpsc::channel::<()>();
        let early = scope.spawn(move || {
            let open = open_link(cfg).ok()?;
            // also ends when the sender is gone: QEMU's accept failed
            let left = (stall / 2).saturating_sub(open.opened.elapsed());
            wait.recv_timeout(left).ok().map(|()| open)
        });
        let qemu = listener.accept(stall);
        if qemu.is_ok() {
            let _ = arrived.send(());
        }
        drop(arrived);
        (qemu, early.join())
    });
    let mut qemu = qemu?;
    let start = Instant::now();
    connected();
    let link = match early {
        Ok(Some(open)) => open,
        _ => open_link(cfg)?,
    };
    carry(link, start, &mut *qemu, cfg, progress)
}

/// The migration over an open link; `start` is when QEMU connected.
fn carry(
    open: OpenLink,
    start: Instant,
    qemu: &mut dyn QemuStream,
    cfg: &SourceEndConfig,
    progress: &mut dyn FnMut(&Carried, u64),
) -> Result<SourceReport> {
    let cpu = thread_cpu_time();
    let d = &cfg.deadlines;
    let OpenLink {
        mut link,
        hello,
        wire,
        cpu_s: handshake_cpu_s,
        ..
    } = open;
    let (config, features) = cfg.codec.stages().apply(Config {
        stream_id: hello.migration_id as u32,
        lz4: cfg.config.lz4 && cfg.link_compression.wants_codec_lz4(),
        ..cfg.config
    });
    let mut enc = InProcessEncoder::with_features(config, features)?;
    let carried = cfg.link_compression.write(&mut link, |out| {
        carry_out(qemu, out, &mut enc, config.page_size as usize, &mut |c| {
            progress(c, wire.load(Ordering::Relaxed))
        })
    });
    let (carried, link_stage) = match carried {
        Ok(c) => c,
        Err(e) => return Err(with_reason(&mut link, d, e)),
    };
    link.set_waits(Waits::until(Instant::now() + d.switchover))?;
    let reply: TunnelReply = read_message(&mut link)
        .map_err(|e| d.explain(Deadline::Switchover, e))
        .context("no answer from the tunnel's destination end")?;
    if !reply.ok {
        anyhow::bail!(
            "the tunnel's destination end failed: {}",
            reply.error.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(SourceReport {
        migration_id: format!("{:016x}", hello.migration_id),
        carried,
        wire_bytes: wire.load(Ordering::Relaxed),
        total_s: start.elapsed().as_secs_f64(),
        cpu_s: (thread_cpu_time() - cpu).as_secs_f64() + link_stage.cpu_s + handshake_cpu_s,
        link_stage,
        reply,
    })
}

/// `e`, with the destination end's reason when it sent one before the link failed.
fn with_reason(link: &mut Box<dyn Link>, d: &Deadlines, e: anyhow::Error) -> anyhow::Error {
    let _ = link.set_waits(Waits::until(Instant::now() + d.switchover.min(REASON_WAIT)));
    match read_message::<TunnelReply, _>(link) {
        Ok(TunnelReply {
            error: Some(why), ..
        }) => e.context(format!("the tunnel's destination end failed: {why}")),
        _ => e,
    }
}

/// How long a failed source end listens for the destination end's reason.
const REASON_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
