//! `pagewire tunnel demo --disk`: a shared-nothing migration of a guest with its root disk
//! (docs/STORAGE.md). The source QEMU's mirror job copies the disk into the destination
//! QEMU's NBD export (straight through a shaped relay, or through the disk tunnel); once it
//! is ready the tunnel's writes turn synchronous and memory migrates (QEMU's own migration,
//! or the memory tunnel) on the same shaped link; when QEMU has switched over, the mirror
//! job is cancelled (a ready job then finishes its copy, no pivot) and the destination
//! resumes. Verified: both disk images equal byte for byte and both machines' RAM equal
//! before the destination runs, the guest counts on and its checks (every file read back
//! from the destination's disk) pass, and once QEMU is gone the disk checks clean and
//! holds every file as the guest recorded it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use super::method::Method;
use super::path::{MigrationPath, TunnelCodec};
use super::run::{guest_runs_on, migration_cpu, GUEST_WAIT};
use crate::disk::{
    disk_source, DiskDest, DiskDestConfig, DiskDestReport, DiskSourceConfig, DiskSourceReport,
    NbdAddr, Phase,
};
use crate::machine::disk_guest::{check_recorded_files, fsck};
use crate::machine::{
    compare_machines, guest_pause, migrate, wait_incoming, wait_migration, GuestImage, Machine,
    Start, ROOT_NODE,
};
use crate::migrate::{Codec, Deadlines};
use crate::net::relay::ShapedRelay;
use crate::net::{tls, Shape, Wire};
use crate::trace::qmp::Qmp;
use crate::tunnel::LinkCompression;

/// How the disk and memory travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DiskMethod {
    /// QEMU's mirror job straight to the destination's NBD export, memory by QEMU's own
    /// migration (multifd + zstd, its best on this link: docs/TUNNEL.md).
    Qemu,
    /// The disk through the pagewire tunnel, zero blocks only, no compression; memory as
    /// in [`DiskMethod::Pagewire`], so that the two rows differ in the disk's codec only.
    PagewireNoCodec,
    /// Disk and memory through the pagewire tunnels with the codec.
    Pagewire,
    /// The way back of a [`DiskMethod::Pagewire`] run into the disk it left, incremental.
    PagewireWayBack,
}

impl DiskMethod {
    pub fn name(self) -> &'static str {
        match self {
            DiskMethod::Qemu => "qemu-mirror+multifd-zstd",
            DiskMethod::PagewireNoCodec => "pagewire-no-codec",
            DiskMethod::Pagewire => "pagewire",
            DiskMethod::PagewireWayBack => "pagewire-way-back",
        }
    }

    /// How memory moves.
    fn memory(self) -> Method {
        match self {
            DiskMethod::Qemu => Method::QemuMultifdZstd,
            _ => Method::PagewireTunnel,
        }
    }
}

/// What every run of the disk demo shares.
#[derive(Debug, Clone)]
pub struct DiskDemoConfig {
    /// The disk guest; its `root_disk` is the pristine image every run starts from (copied).
    pub image: GuestImage,
    /// The one link disk and memory share.
    pub shape: Shape,
    /// How the memory tunnel encodes (the codec runs).
    pub codec: TunnelCodec,
    /// Where each run keeps its QEMUs, disks and logs.
    pub work_dir: PathBuf,
    /// Longest the disk copy, or the memory migration, may take.
    pub timeout: Duration,
    /// Checks the guest passes at the destination before it goes back (each round rewrites
    /// 128 KiB of its disk).
    pub rounds_before_way_back: usize,
}

/// One migration of the guest with its disk.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DiskRunResult {
    pub method: String,
    /// Size of the disk, bytes.
    pub disk_bytes: u64,
    /// 4 KiB blocks of the source disk that differed from the destination's when the copy
    /// started (all its non-zero blocks, into an empty disk), bytes.
    pub differing_bytes: u64,
    /// The source disk's blocks that were not zero when the copy started, bytes.
    pub used_bytes: u64,
    /// Those blocks, concatenated, compressed with zstd -3: what a compressed copy of the
    /// used blocks would send, the target for the codec.
    pub zstd_used_bytes: u64,
    /// From `blockdev-mirror` to the job's `ready`: the bulk copy, seconds.
    pub disk_phase_s: f64,
    /// From `blockdev-mirror` to the destination holding disk and memory, seconds.
    pub total_s: f64,
    /// QEMU's `downtime`, ms.
    pub downtime_ms: Option<u64>,
    /// The pause the guest saw in its 50 ms ticks (less the time the destination was held
    /// for the comparisons), ms.
    pub guest_pause_ms: Option<f64>,
    /// Bytes of the disk copy on the link.
    pub disk_wire_bytes: u64,
    /// Bytes of the memory migration on the link.
    pub memory_wire_bytes: u64,
    /// For the tunnel: what its source end made of the mirror job's writes.
    pub disk_source: Option<DiskSourceReport>,
    /// For the tunnel: what its destination end wrote.
    pub disk_destination: Option<DiskDestReport>,
    /// The destination's disk equalled the source's, byte for byte, at the switchover.
    pub disks_equal: bool,
    /// Pages of RAM that differed (0: identical).
    pub differing_pages: Option<u64>,
    /// The guest counted on at the destination and passed its checks there.
    pub guest_ok: bool,
    /// Once QEMU was gone: `e2fsck` found nothing, and this many files matched the md5s the
    /// guest recorded (0: not checked, the guest went on elsewhere).
    pub files_checked: usize,
    /// CPU seconds of the migration at the source (QEMU but its vCPUs, and the tunnel
    /// ends) and at the destination.
    pub cpu_source_s: f64,
    pub cpu_destination_s: f64,
    /// Everything above held.
    pub verified: bool,
    pub error: Option<String>,
}

/// The whole demo: each method from the same pristine disk, then the way back.
#[derive(Debug, Clone, Serialize)]
pub struct DiskDemo {
    pub runs: Vec<DiskRunResult>,
}

/// The mirror job's dirty-tracking unit, bytes, in every row. QEMU's default for a raw
/// disk is 64 KiB: every small write the guest makes during the copy (a journal block, an
/// inode) has the job copy 64 KiB again; at 4 KiB it copies the blocks that changed.
const MIRROR_GRANULARITY: u64 = 4096;

/// The QMP names of the demo's block objects.
const JOB: &str = "disk-copy";
const TARGET: &str = "disk-target";
const EXPORT: &str = "root-export";

/// Runs `methods` one after the other, each from a fresh copy of the pristine disk; the
/// way back follows the `pagewire` run (which it needs). Failures are in the results.
pub fn run_disk_demo(
    methods: &[DiskMethod],
    cfg: &DiskDemoConfig,
    log: &mut dyn FnMut(&str),
) -> Result<DiskDemo> {
    let pristine = cfg
        .image
        .root_disk
        .clone()
        .context("the disk demo's guest has no root disk")?;
    let mut runs = Vec::new();
    for &m in methods
        .iter()
        .filter(|&&m| m != DiskMethod::PagewireWayBack)
    {
        let back = m == DiskMethod::Pagewire && methods.contains(&DiskMethod::PagewireWayBack);
        let (there, back_run) = run_round_trip(m, back, cfg, &pristine, log);
        runs.push(there);
        runs.extend(back_run);
    }
    Ok(DiskDemo { runs })
}

/// One method from a fresh copy of the disk to an empty one, and (`back`) the way back.
fn run_round_trip(
    method: DiskMethod,
    back: bool,
    cfg: &DiskDemoConfig,
    pristine: &Path,
    log: &mut dyn FnMut(&str),
) -> (DiskRunResult, Option<DiskRunResult>) {
    let dir = cfg.work_dir.join(method.name());
    let mut there = DiskRunResult {
        method: method.name().into(),
        ..DiskRunResult::default()
    };
    let mut back_run = back.then(|| DiskRunResult {
        method: DiskMethod::PagewireWayBack.name().into(),
        ..DiskRunResult::default()
    });
    let outcome = (|| -> Result<()> {
        // `ignore`: an earlier run's folder may or may not be there.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let (a, b) = (dir.join("a.raw"), dir.join("b.raw"));
        copy_sparse(pristine, &a)?;
        File::create(&b)?.set_len(std::fs::metadata(pristine)?.len())?;
        log(&format!(
            "{}: booting the guest from its disk",
            method.name()
        ));
        let mut source = Machine::launch(&cfg.image.on_disk(&a), &dir.join("a"), &Start::Boot)?;
        source.wait_ready(GUEST_WAIT)?;
        wait_checks(&source, 2)?;
        let mut dest = leg(
            method,
            cfg,
            &mut source,
            &b,
            &dir.join("b"),
            false,
            &mut there,
            log,
        )?;
        source.kill();
        let Some(back_run) = back_run.as_mut() else {
            return finish(&mut dest, &b, &mut there);
        };
        let seen = dest.console().checks_ok().len();
        log(&format!(
            "{}: the guest runs on and rewrites its disk for {} rounds, then goes back",
            method.name(),
            cfg.rounds_before_way_back
        ));
        wait_checks(&dest, seen + cfg.rounds_before_way_back)?;
        there.verified = there.disks_equal && there.guest_ok;
        let mut home = leg(
            DiskMethod::PagewireWayBack,
            cfg,
            &mut dest,
            &a,
            &dir.join("a-again"),
            true,
            back_run,
            log,
        )?;
        dest.kill();
        finish(&mut home, &a, back_run)
    })();
    if let Err(e) = outcome {
        let r = back_run
            .as_mut()
            .filter(|_| there.verified)
            .unwrap_or(&mut there);
        r.error = Some(format!("{e:#}"));
        r.verified = false;
    }
    (there, back_run)
}

/// The guest has passed `n` checks.
fn wait_checks(m: &Machine, n: usize) -> Result<()> {
    m.console()
        .wait_for(&format!("{n} passed checks"), GUEST_WAIT, |s| {
            (s.checks_ok.len() >= n).then_some(())
        })?;
    Ok(())
}

/// The last destination: stopped and gone, its disk must check clean and hold every file
/// the guest recorded.
fn finish(m: &mut Machine, disk: &Path, r: &mut DiskRunResult) -> Result<()> {
    let mut q = m.qmp()?;
    // `ignore`: a QEMU that already stopped cannot be stopped again; it dies next anyway.
    let _ = q.execute("stop", None);
    drop(q);
    m.kill();
    fsck(disk).map_err(|e| anyhow!("{e}"))?;
    r.files_checked = check_recorded_files(disk).map_err(|e| anyhow!("{e}"))?;
    r.verified = r.disks_equal && r.guest_ok && r.differing_pages == Some(0);
    Ok(())
}

/// The disk's way to the destination: a shaped relay to its export, or the disk tunnel.
enum DiskPath {
    Relay(ShapedRelay),
    Tunnel {
        dest: DiskDest,
        source: JoinHandle<Result<DiskSourceReport>>,
        phase: Phase,
        nbd: SocketAddr,
    },
}

impl DiskPath {
    /// Where the source QEMU's mirror job connects.
    fn target(&self) -> SocketAddr {
        match self {
            DiskPath::Relay(r) => r.addr(),
            DiskPath::Tunnel { nbd, .. } => *nbd,
        }
    }

    /// The export's name there: the destination QEMU's, or the disk tunnel's one export.
    fn export(&self) -> &'static str {
        match self {
            DiskPath::Relay(_) => ROOT_NODE,
            DiskPath::Tunnel { .. } => "disk",
        }
    }
}

/// Migrates the guest running in `source` with its disk into a new QEMU on `disk`, in
/// `dir`; returns the destination, resumed and running on.
#[allow(clippy::too_many_arguments)]
fn leg(
    method: DiskMethod,
    cfg: &DiskDemoConfig,
    source: &mut Machine,
    disk: &Path,
    dir: &Path,
    base: bool,
    r: &mut DiskRunResult,
    log: &mut dyn FnMut(&str),
) -> Result<Machine> {
    let name = method.name();
    let src_disk = disk_of(source)?;
    r.disk_bytes = std::fs::metadata(disk)?.len();
    r.differing_bytes = differing_blocks(&src_disk, disk)? * 4096;
    (r.used_bytes, r.zstd_used_bytes) = used_and_zstd(&src_disk)?;
    let mut dest = Machine::launch(
        &cfg.image.on_disk(disk),
        dir,
        &Start::Incoming {
            uri: "defer".into(),
            paused: true,
        },
    )?;
    let mut sq = source.qmp()?;
    let mut dq = dest.qmp()?;
    let export = export_disk(&mut dq)?;
    let wire = Wire::new(cfg.shape);
    let keys = cfg.work_dir.join("keys");
    if !keys.join("ca.pem").exists() {
        tls::keygen(&keys)?;
    }
    let path = match method {
        DiskMethod::Qemu => DiskPath::Relay(ShapedRelay::start(
            TcpListener::bind("127.0.0.1:0")?,
            export,
            wire.clone(),
        )?),
        _ => tunnel_disk(method, cfg, &keys, export, base, wire.clone())?,
    };
    let cpu_before = (migration_cpu(source.pid())?, migration_cpu(dest.pid())?);
    log(&format!(
        "{name}: copying the disk ({} MiB, {} MiB of it to send) over {}",
        r.disk_bytes >> 20,
        r.differing_bytes >> 20,
        cfg.shape.describe()
    ));
    let started = Instant::now();
    sq.execute(
        "blockdev-add",
        Some(json!({
            "driver": "nbd", "node-name": TARGET, "export": path.export(),
            "server": { "type": "inet", "host": "127.0.0.1",
                        "port": path.target().port().to_string() },
        })),
    )
    .context("connecting the mirror job's target")?;
    sq.execute(
        "blockdev-mirror",
        Some(json!({
            "job-id": JOB, "device": ROOT_NODE, "target": TARGET, "sync": "full",
            "auto-dismiss": false, "granularity": MIRROR_GRANULARITY,
        })),
    )
    .context("starting the mirror job")?;
    wait_job(&mut sq, cfg.timeout, |job| job["ready"] == true, log)?;
    r.disk_phase_s = started.elapsed().as_secs_f64();
    if let DiskPath::Tunnel { phase, .. } = &path {
        phase.set_synchronous(true);
    }

    let memory = method.memory();
    log(&format!(
        "{name}: disk ready after {:.1} s; migrating memory ({})",
        r.disk_phase_s,
        memory.name()
    ));
    memory.set_up(&mut sq, &mut dq)?;
    let mem_path = match memory {
        Method::PagewireTunnel => MigrationPath::tunnel(dir, wire.clone(), cfg.codec, &mut dq)?,
        _ => MigrationPath::relay(wire.clone(), &mut dq)?,
    };
    migrate(&mut sq, mem_path.uri())?;
    let outcome = wait_migration(&mut sq, cfg.timeout)?;
    r.downtime_ms = outcome.downtime_ms;
    if !outcome.completed() {
        let why = match mem_path.finish() {
            Err(e) => format!("; {e:#}"),
            Ok(_) => String::new(),
        };
        bail!(
            "QEMU's migration {}: {}{why}",
            outcome.status,
            outcome.info["error-desc"]
                .as_str()
                .unwrap_or("no reason given")
        );
    }
    let state = wait_incoming(&mut dq, cfg.timeout)?;
    ensure!(state == "paused", "the destination is {state}, not paused");
    // the source is paused: the ready job copies what is left and ends, without a pivot
    sq.execute("block-job-cancel", Some(json!({ "device": JOB })))?;
    wait_job(
        &mut sq,
        cfg.timeout,
        |job| job["status"] == "concluded",
        log,
    )?;
    sq.execute("job-dismiss", Some(json!({ "id": JOB })))?;
    sq.execute("blockdev-del", Some(json!({ "node-name": TARGET })))?;
    match path {
        DiskPath::Relay(relay) => r.disk_wire_bytes = relay.forwarded(),
        DiskPath::Tunnel { dest, source, .. } => {
            let s = source
                .join()
                .map_err(|_| anyhow!("the disk tunnel's source end panicked"))?
                .context("the disk tunnel's source end")?;
            let d = dest
                .next(cfg.timeout)
                .context("the disk tunnel's destination end")?;
            dest.stop();
            r.disk_wire_bytes = s.wire_bytes;
            r.disk_source = Some(s);
            r.disk_destination = Some(d);
        }
    }
    dq.execute("block-export-del", Some(json!({ "id": EXPORT })))?;
    dq.execute("nbd-server-stop", None)?;
    let arrived = Instant::now();
    r.total_s = arrived.duration_since(started).as_secs_f64();
    let cpu_after = (migration_cpu(source.pid())?, migration_cpu(dest.pid())?);
    let (figures, _) = mem_path.finish()?;
    r.memory_wire_bytes = figures.wire_bytes;
    r.cpu_source_s = cpu_after.0 - cpu_before.0 + figures.source_cpu_s;
    r.cpu_destination_s = cpu_after.1 - cpu_before.1 + figures.destination_cpu_s;

    log(&format!(
        "{name}: comparing both disks and both machines' RAM"
    ));
    r.disks_equal = differing_blocks(&src_disk, disk)? == 0;
    let same = compare_machines(&mut sq, &mut dq, &dir.join("dumps"))?;
    r.differing_pages = Some(same.differing_pages);
    let resumed = Instant::now();
    dq.execute("cont", None)?;
    // a guest that crashed is reported after what differed, which may be why
    let trouble = guest_runs_on(source, &dest, resumed).unwrap_or_else(|e| Some(format!("{e:#}")));
    r.guest_ok = trouble.is_none();
    r.guest_pause_ms = guest_pause(&source.console().ticks(), &dest.console().ticks(), started)
        .map(|g| {
            g.length()
                .saturating_sub(resumed.duration_since(arrived))
                .as_secs_f64()
                * 1e3
        });
    let mut why = Vec::new();
    if !r.disks_equal {
        why.push("the destination's disk differs from the source's".to_string());
    }
    if !same.equal() {
        why.push(format!(
            "{} pages of RAM differ, the first at {:#x}",
            same.differing_pages,
            same.first_difference.unwrap_or(0)
        ));
    }
    why.extend(trouble);
    ensure!(why.is_empty(), "{}", why.join("; "));
    Ok(dest)
}

/// Starts the destination's NBD server on a free loopback port and exports its root disk
/// there, writable; returns the address.
fn export_disk(dq: &mut Qmp) -> Result<SocketAddr> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    dq.execute(
        "nbd-server-start",
        Some(json!({ "addr": { "type": "inet",
            "data": { "host": "127.0.0.1", "port": port.to_string() } } })),
    )
    .context("starting the destination's NBD server")?;
    dq.execute(
        "block-export-add",
        Some(json!({ "type": "nbd", "id": EXPORT, "node-name": ROOT_NODE,
                     "name": ROOT_NODE, "writable": true })),
    )
    .context("exporting the destination's disk")?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The two disk tunnel ends, the destination end writing into `export`.
fn tunnel_disk(
    method: DiskMethod,
    cfg: &DiskDemoConfig,
    keys: &Path,
    export: SocketAddr,
    base: bool,
    wire: Wire,
) -> Result<DiskPath> {
    let deadlines = Deadlines::default();
    let dest = DiskDest::start(
        TcpListener::bind("127.0.0.1:0")?,
        DiskDestConfig {
            export: NbdAddr {
                host_port: export.to_string(),
                name: ROOT_NODE.into(),
            },
            tls: Some(tls::server_config(keys)?),
            deadlines,
            base,
            log: Arc::new(|_| {}),
        },
    )?;
    let scfg = DiskSourceConfig {
        to: dest.addr().to_string(),
        wire,
        tls: Some(tls::client_config(keys)?),
        config: cfg.codec.config,
        codec: match method {
            DiskMethod::PagewireNoCodec => Codec::Off,
            _ => Codec::On,
        },
        compression: match method {
            DiskMethod::PagewireNoCodec => LinkCompression::None,
            _ => LinkCompression::ZstdAuto,
        },
        label: format!("disk demo {}", method.name()),
        deadlines,
        window: crate::disk::DEFAULT_WINDOW,
    };
    let nbd_l = TcpListener::bind("127.0.0.1:0")?;
    let nbd = nbd_l.local_addr()?;
    let phase = Phase::default();
    let (tx, rx) = mpsc::channel();
    let source = {
        let phase = phase.clone();
        thread::Builder::new()
            .name("disk-source".into())
            .spawn(move || {
                disk_source(&nbd_l, &scfg, phase, |size| {
                    // `ignore`: the demo stops waiting only when this thread has ended
                    let _ = tx.send(size);
                })
            })?
    };
    if rx.recv_timeout(deadlines.handshake * 2).is_err() {
        let why = match source.join() {
            Ok(Err(e)) => format!("{e:#}"),
            _ => "it did not answer".into(),
        };
        bail!("the disk tunnel's source end did not start: {why}");
    }
    Ok(DiskPath::Tunnel {
        dest,
        source,
        phase,
        nbd,
    })
}

/// Polls the mirror job until `done` holds for it; fails when it ends with an error
/// first. Says how far the copy is every 5 s.
fn wait_job(
    sq: &mut Qmp,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let start = Instant::now();
    let mut said = Instant::now();
    loop {
        let jobs = sq.execute("query-block-jobs", None)?;
        let job = jobs
            .as_array()
            .and_then(|a| a.iter().find(|j| j["device"] == JOB))
            .cloned()
            .context("the mirror job is gone")?;
        if let Some(e) = job["error"].as_str() {
            bail!("the mirror job failed: {e}");
        }
        if done(&job) {
            return Ok(());
        }
        if job["status"] == "concluded" {
            bail!("the mirror job ended early ({job})");
        }
        if start.elapsed() > timeout {
            bail!("the mirror job did not get there within {timeout:?}: {job}");
        }
        if said.elapsed() > Duration::from_secs(5) {
            said = Instant::now();
            log(&format!(
                "  disk copy: {} of {} MiB",
                job["offset"].as_u64().unwrap_or(0) >> 20,
                job["len"].as_u64().unwrap_or(0) >> 20
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The root disk a machine runs on.
fn disk_of(m: &Machine) -> Result<PathBuf> {
    m.args()
        .iter()
        .find_map(|a| {
            a.strip_prefix("driver=file,filename=")
                .and_then(|r| r.split(',').next())
        })
        .map(PathBuf::from)
        .context("the machine runs on no root disk")
}

/// Copies a disk image, keeping its holes (`cp --sparse=always`).
fn copy_sparse(from: &Path, to: &Path) -> Result<()> {
    let ok = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?
        .success();
    ensure!(ok, "cannot copy {} to {}", from.display(), to.display());
    Ok(())
}

/// Reads two files of the same size 1 MiB at a time, calling `each` with every pair of
/// 4 KiB blocks.
fn for_blocks(a: &Path, b: &Path, mut each: impl FnMut(&[u8], &[u8])) -> Result<()> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    ensure!(
        fa.metadata()?.len() == fb.metadata()?.len(),
        "{} and {} differ in size",
        a.display(),
        b.display()
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        ensure!(n == m, "short read");
        if n == 0 {
            return Ok(());
        }
        for (x, y) in ba[..n].chunks(4096).zip(bb[..n].chunks(4096)) {
            each(x, y);
        }
    }
}

/// 4 KiB blocks in which the two files differ.
fn differing_blocks(a: &Path, b: &Path) -> Result<u64> {
    let mut n = 0;
    for_blocks(a, b, |x, y| n += u64::from(x != y))?;
    Ok(n)
}

/// Bytes in the non-zero 4 KiB blocks of `disk`, and those blocks compressed with zstd -3.
fn used_and_zstd(disk: &Path) -> Result<(u64, u64)> {
    let mut used = 0u64;
    let mut z = zstd::stream::Encoder::new(CountingSink(0), 3)?;
    let mut f = File::open(disk)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(4096).filter(|b| b.iter().any(|&x| x != 0)) {
            used += block.len() as u64;
            z.write_all(block)?;
        }
    }
    Ok((used, z.finish()?.0))
}

struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_compared_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let mut x = vec![0u8; 5 * 4096];
        x[4096] = 1;
        x[3 * 4096 + 7] = 2;
        std::fs::write(&a, &x).unwrap();
        std::fs::write(&b, vec![0u8; 5 * 4096]).unwrap();
        assert_eq!(differing_blocks(&a, &b).unwrap(), 2);
        assert_eq!(differing_blocks(&a, &a).unwrap(), 0);
        let (used, z) = used_and_zstd(&a).unwrap();
        assert_eq!(used, 2 * 4096);
        assert!(z > 0 && z < used);
        std::fs::write(&b, [0u8; 10]).unwrap();
        assert!(differing_blocks(&a, &b).is_err());
    }
}
