//! `pagewire trace ...`: the trace tools (for now `capture`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use pagewire_runner::trace::capture::{capture, CaptureOptions};
use pagewire_runner::trace::launch::LaunchedQemu;
use pagewire_runner::trace::qmp::{self, Qmp, QmpAddr};

use super::progress::Bar;

#[derive(Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    command: TraceCommand,
}

#[derive(Subcommand)]
enum TraceCommand {
    /// Capture a snapshot series from a running QEMU guest through QMP: stop, pmemsave of
    /// guest RAM, cont, every --interval-ms of running time. Writes a folder that
    /// `pagewire replay` reads.
    Capture(CaptureArgs),
}

#[derive(Args)]
struct CaptureArgs {
    /// QEMU's QMP socket: a path (QEMU started with -qmp unix:PATH,server=on,wait=off),
    /// or tcp:HOST:PORT.
    #[arg(long, value_name = "PATH", required_unless_present = "launch")]
    qmp: Option<String>,
    /// Output folder (created; must be empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Guest running time between snapshots, in milliseconds.
    #[arg(long, value_name = "MS")]
    interval_ms: u64,
    /// Number of snapshots.
    #[arg(long, value_name = "N")]
    count: usize,
    /// Bytes of guest physical memory to save from address 0 [default: QEMU's base memory].
    #[arg(long, value_name = "B")]
    mem_bytes: Option<u64>,
    /// What runs in the guest (recorded in the manifest).
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Short workload name (recorded in the manifest, shown by replay).
    #[arg(long, value_name = "NAME")]
    workload: Option<String>,
    /// Guest running time before the first snapshot, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    warmup_ms: u64,
    /// Seconds to wait for each QMP reply (pmemsave gets longer, by memory size).
    #[arg(long, value_name = "S", default_value_t = qmp::DEFAULT_TIMEOUT.as_secs())]
    qmp_timeout_s: u64,
    /// Start QEMU from the command after `--` (a QMP socket is added), and quit it at the end.
    #[arg(long, conflicts_with = "qmp")]
    launch: bool,
    /// With --launch: the QEMU command line.
    #[arg(last = true, value_name = "QEMU_COMMAND", requires = "launch")]
    qemu: Vec<String>,
}

/// `pagewire trace ...`.
pub fn run(a: &TraceArgs) -> Result<()> {
    match &a.command {
        TraceCommand::Capture(c) => run_capture(c),
    }
}

fn run_capture(a: &CaptureArgs) -> Result<()> {
    let timeout = Duration::from_secs(a.qmp_timeout_s.max(1));
    let mut opts = CaptureOptions {
        out: a.out.clone(),
        interval: Duration::from_millis(a.interval_ms),
        count: a.count,
        mem_bytes: a.mem_bytes,
        warmup: Duration::from_millis(a.warmup_ms),
        workload: a.workload.clone(),
        description: a.description.clone(),
        qemu_command: None,
    };
    if a.launch {
        if a.qemu.is_empty() {
            bail!("--launch needs the QEMU command after `--`");
        }
        let mut qemu = LaunchedQemu::spawn(&a.qemu)?;
        opts.qemu_command = Some(qemu.command().to_vec());
        let mut q = qemu.connect(timeout)?;
        let r = capture_with_bar(&mut q, &opts);
        qemu.quit(Some(&mut q), Duration::from_secs(10));
        r
    } else {
        let addr = QmpAddr::parse(a.qmp.as_deref().unwrap_or_default());
        let mut q = Qmp::connect(&addr, timeout)?;
        capture_with_bar(&mut q, &opts)
    }
}

fn capture_with_bar(q: &mut Qmp, opts: &CaptureOptions) -> Result<()> {
    let mut progress = Bar::new(opts.count as u64, "snapshots");
    let result = capture(q, opts, &mut progress);
    progress.finish();
    let r = result?;
    let max_pause = r.pauses.iter().max().copied().unwrap_or_default();
    println!(
        "captured {} snapshots of {} MiB from {} into {} (VM paused at most {:.0} ms per \
         snapshot)",
        r.pauses.len(),
        r.mem_bytes >> 20,
        r.qemu_version,
        r.dir.display(),
        max_pause.as_secs_f64() * 1e3
    );
    Ok(())
}
