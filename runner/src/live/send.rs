//! The sending side: boot our KVM guest, connect (shaped, over mutual TLS), migrate it,
//! optionally as a member of a Synchronized Arrival group.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pagewire::policy::{Decision, IterationReport};

use crate::migrate::{
    migrate_out, Deadline, Gate, MigrationProgress, MigrationReport, OutcomeUnknown, Redial,
    SourceGuest, SourceOptions,
};
use crate::net::coord::GroupGate;
use crate::net::{dial_on, Link, Shape, Wire, SMALL_UNSENT};
use crate::vmm::{GuestSpec, Vm};

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
    let counter = Arc::new(AtomicU64::new(0));
    // the migration's connections (its lanes) share one link, as on a real network
    let wire = Wire::new(cfg.shape).with_unsent_limit(SMALL_UNSENT);
    let mut link = open_link(cfg, &wire, counter.clone())?;
    let mut again = Again { cfg, wire, counter };
    let mut report = migrate_out(vm, &mut link, &cfg.source, gate, Some(&mut again), progress)?;
    drop(link);
    report.wire_bytes = again.counter.load(Ordering::Relaxed);
    Ok(report)
}

/// New connections to the same destination: the migration's lanes, and the status query
/// of a committed source.
struct Again<'c> {
    cfg: &'c SendConfig,
    wire: Wire,
    /// The migration's wire bytes, every lane's.
    counter: Arc<AtomicU64>,
}

impl Redial for Again<'_> {
    fn redial(&mut self) -> Result<Box<dyn Link>> {
        open_link(self.cfg, &self.wire, Arc::new(AtomicU64::new(0)))
    }

    fn open_lane(&mut self) -> Result<Box<dyn Link>> {
        open_link(self.cfg, &self.wire, self.counter.clone())
    }
}

/// Connects to `cfg.to` on `wire` and (unless turned off) over mutual TLS, all within the
/// handshake deadline.
fn open_link(cfg: &SendConfig, wire: &Wire, counter: Arc<AtomicU64>) -> Result<Box<dyn Link>> {
    let d = &cfg.source.deadlines;
    dial_on(
        &cfg.to,
        wire.clone(),
        cfg.tls.clone(),
        Instant::now() + d.handshake,
        counter,
    )
    .map_err(|e| d.explain(Deadline::Handshake, e))
    .with_context(|| format!("connecting to the destination {}", cfg.to))
}

/// A Synchronized Arrival membership for `send --group`.
#[derive(Debug, Clone)]
pub struct GroupMembership {
    /// Address of the `pagewire coordinator`.
    pub coordinator: String,
    /// The group's name.
    pub group: String,
    /// How many members it has.
    pub members: usize,
}

/// Boots `guest` and migrates it as [`send_vm`] does, joining `group` first if there is
/// one. On failure the error says whether the source VM still runs and passes its
/// self-check.
pub fn boot_and_send(
    cfg: &SendConfig,
    guest: &GuestConfig,
    group: Option<&GroupMembership>,
    progress: &mut dyn MigrationProgress,
) -> Result<MigrationReport> {
    let mut vm = boot_guest(guest)?;
    let mut gate = match group {
        Some(g) => Some(GroupGate::join(
            &g.coordinator,
            cfg.tls.clone(),
            cfg.source.deadlines.handshake,
            &g.group,
            &cfg.source.label,
            g.members,
        )?),
        None => None,
    };
    let r = send_vm(
        &mut vm,
        cfg,
        gate.as_mut().map(|g| g as &mut dyn Gate),
        progress,
    );
    r.map_err(|e| {
        if e.downcast_ref::<OutcomeUnknown>().is_some() {
            // paused on purpose: a self-check would wait for a guest that does not run
            return e;
        }
        let state = match vm.self_check(Duration::from_secs(30)) {
            Ok(true) => "the source VM keeps running and passed its self-check".to_string(),
            Ok(false) => "the source VM runs but FAILED its self-check".to_string(),
            Err(c) => format!("the source VM is in trouble: {c:#}"),
        };
        e.context(format!("migration failed; {state}"))
    })
}
