//! `pagewire send`, `receive` and `demo`: a real KVM guest migrated between processes over
//! TCP, shaped on the sending side.

pub mod progress;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pagewire::policy::{Decision, IterationReport};
use serde::Serialize;

use crate::migrate::{
    self, migrate_in, migrate_out, DestOptions, Gate, MigrationProgress, MigrationReport,
    SourceGuest, SourceOptions,
};
use crate::net::coord::GroupGate;
use crate::net::{tls, Link, Shape, ShapedStream};
use crate::vmm::{GuestSpec, Vm, Vmm};

/// The guest a `send` boots and migrates.
#[derive(Debug, Clone, Copy)]
pub struct GuestConfig {
    /// Workload and seed.
    pub spec: GuestSpec,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// vCPUs.
    pub vcpus: usize,
    /// How long the guest runs before the migration starts.
    pub warmup: Duration,
}

/// Boots the guest and lets it run for the warm-up time.
pub fn boot_guest(g: &GuestConfig) -> Result<Vm> {
    let bytes = usize::try_from(g.mem_mib.saturating_mul(1 << 20)).context("--mem-mib")?;
    let mut vm = Vm::new(bytes, g.vcpus)?;
    vm.boot(&g.spec)?;
    vm.start()?;
    vm.wait_for(Duration::from_secs(120), "the guest to boot", |m| {
        m.vcpus.iter().all(|v| v.booted.load(Ordering::SeqCst))
    })?;
    std::thread::sleep(g.warmup);
    if let Some(e) = vm.monitor().error() {
        anyhow::bail!("the guest failed: {e}");
    }
    Ok(vm)
}

/// A Synchronized Arrival group has its say through the coordinator.
impl Gate for GroupGate {
    fn decide(&mut self, own: Decision, r: &IterationReport) -> Result<(Decision, &'static str)> {
        GroupGate::decide(self, own, r)
    }
}

/// Where and how to send.
#[derive(Clone)]
pub struct SendConfig {
    /// Destination address (`host:port`).
    pub to: String,
    /// Shaping of the sending side.
    pub shape: Shape,
    /// Stop policy, codec, label.
    pub source: Arc<SourceOptions>,
    /// Mutual TLS (`None`: plain TCP, for tests of the link itself).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Connects to the destination and migrates `vm`. On error the source VM runs.
pub fn send_vm(
    vm: &mut dyn SourceGuest,
    cfg: &SendConfig,
    gate: Option<&mut dyn Gate>,
    progress: &mut dyn MigrationProgress,
) -> Result<MigrationReport> {
    let tcp = TcpStream::connect(&cfg.to)
        .with_context(|| format!("connecting to the destination {}", cfg.to))?;
    let counter = Arc::new(AtomicU64::new(0));
    let shaped = ShapedStream::new(tcp, cfg.shape, counter.clone())?;
    let mut link: Box<dyn Link> = match &cfg.tls {
        Some(t) => Box::new(tls::connect(shaped, t.clone())?),
        None => Box::new(shaped),
    };
    let mut report = migrate_out(vm, &mut link, &cfg.source, gate, progress)?;
    drop(link);
    report.wire_bytes = counter.load(Ordering::Relaxed);
    Ok(report)
}

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
    // The handshake (and so the peer's certificate) comes before anything else: an
    // unauthenticated peer never gets to create a VM.
    let mut link: Box<dyn Link> = match &cfg.tls {
        Some(t) => Box::new(tls::accept(tcp, t.clone())?),
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
