//! The receiving side: accept one migration (mutual TLS first), let the arrived guest run
//! and check itself.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::migrate::{self, migrate_in, Deadline, DestOptions};
use crate::net::{tls, Link, TimedTcp, Waits};
use crate::vmm::Vmm;

/// How to receive.
#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    /// Mutual TLS (`None`: plain TCP, for tests of the link itself).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Limits on the incoming VM.
    pub dest: DestOptions,
    /// How long the arrived VM runs before its self-check and the end of `receive`.
    pub run_after: Duration,
}

/// What the destination saw.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// Who sent it (the source's label).
    pub label: String,
    /// Guest memory.
    pub mem_bytes: u64,
    /// The reply sent to the source (downtime etc.).
    pub reply: migrate::session::Reply,
    /// Pre-copy iterations in the stream.
    pub iterations: u64,
    /// Heartbeats heard from the guest at the destination.
    pub heartbeats: u64,
    /// The guest's own check of its memory after running at the destination.
    pub self_check_ok: bool,
}

/// Accepts one migration on `listener`, runs the VM for `run_after`, lets the guest check
/// itself, and returns what happened. The VM is paused at the end.
pub fn receive_one(listener: &TcpListener, cfg: &ReceiveConfig) -> Result<Received> {
    let (tcp, _peer) = listener.accept().context("accepting a connection")?;
    tcp.set_nodelay(true)?;
    let d = &cfg.dest.deadlines;
    let tcp = TimedTcp::new(tcp, Waits::until(Instant::now() + d.handshake));
    // The handshake (and so the peer's certificate) comes before anything else: an
    // unauthenticated peer never gets to create a VM.
    let mut link: Box<dyn Link> = match &cfg.tls {
        Some(t) => {
            Box::new(tls::accept(tcp, t.clone()).map_err(|e| d.explain(Deadline::Handshake, e))?)
        }
        None => Box::new(tcp),
    };
    let arrived = migrate_in(&mut link, &Vmm, &cfg.dest)?;
    drop(link);
    let mut vm = arrived.vm;
    let t = Instant::now();
    vm.wait_for(
        Duration::from_secs(30),
        "heartbeats at the destination",
        |m| {
            m.vcpus
                .iter()
                .all(|v| v.heartbeats.load(Ordering::SeqCst) >= 1)
        },
    )?;
    if let Some(rest) = cfg.run_after.checked_sub(t.elapsed()) {
        std::thread::sleep(rest);
    }
    let ok = vm.self_check(Duration::from_secs(60))?;
    let heartbeats = vm.monitor().heartbeats();
    vm.pause()?;
    Ok(Received {
        label: arrived.hello.label,
        mem_bytes: arrived.hello.mem_bytes,
        reply: arrived.reply,
        iterations: arrived.iterations,
        heartbeats,
        self_check_ok: ok,
    })
}
