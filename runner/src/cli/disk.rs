//! `pagewire disk source` and `pagewire disk dest`: the two ends of the disk tunnel that
//! carries a QEMU mirror job's writes (storage migration) through the codec, over
//! [`pagewire_runner::disk`].

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use pagewire_runner::disk::{
    disk_source, switch_when_migrating, DiskDest, DiskDestConfig, DiskSourceConfig, NbdAddr, Phase,
    DEFAULT_WINDOW,
};
use pagewire_runner::net::{tls, Shape, Wire};
use pagewire_runner::trace::qmp::QmpAddr;

use super::deadlines::DeadlineArgs;
use super::live::ShapeArgs;
use super::tunnel::CodecArgs;

#[derive(Args)]
pub struct DiskArgs {
    #[command(subcommand)]
    end: DiskEnd,
}

#[derive(Subcommand)]
enum DiskEnd {
    /// The source end: an NBD export on --nbd-listen for the source QEMU's mirror job
    /// (`blockdev-mirror` to `nbd://ADDR/disk`), whose writes go to a `pagewire disk dest`
    /// at --to.
    Source(SourceArgs),
    /// The destination end: take disk copies on --listen and write them into the
    /// destination QEMU's NBD export at --export.
    Dest(DestArgs),
}

#[derive(Args)]
struct SourceArgs {
    /// Where the mirror job connects (host:port); the export's name is `disk`.
    #[arg(long, value_name = "ADDR")]
    nbd_listen: String,
    /// The source QEMU's QMP socket (unix:/path or tcp:host:port; a second `-qmp` that no
    /// one else uses): from the moment its memory migration starts, every write is
    /// acknowledged only once the destination wrote it (the synchronous phase). Without
    /// it writes stay asynchronous.
    #[arg(long, value_name = "ADDR")]
    qmp: Option<String>,
    /// The destination end, host:port.
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// Folder from `pagewire keygen` (ca.pem, sender.pem, sender.key).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    #[command(flatten)]
    shape: ShapeArgs,
    #[command(flatten)]
    codec: CodecArgs,
    /// MiB written in the asynchronous phase before the end waits for the destination to
    /// confirm (at most this much is lost with a failing link, and the mirror job then
    /// fails and can be run again).
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_WINDOW >> 20)]
    window_mib: u64,
    #[command(flatten)]
    deadlines: DeadlineArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DestArgs {
    /// Where the source end connects, host:port.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Folder from `pagewire keygen` (ca.pem, receiver.pem, receiver.key).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    /// The destination QEMU's NBD export: nbd://HOST:PORT/NAME (`nbd-server-start` and
    /// `block-export-add` there, or `qemu-nbd`).
    #[arg(long, value_name = "URI")]
    export: String,
    /// The export holds an older copy of the disk, or an image that shares content ("follow
    /// the sun"): send the source end an index of its blocks, so that blocks already here
    /// are referred to, not sent (each checked by a strong hash before it is used).
    #[arg(long)]
    base: bool,
    #[command(flatten)]
    deadlines: DeadlineArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &DiskArgs) -> Result<()> {
    match &a.end {
        DiskEnd::Source(s) => run_source(s),
        DiskEnd::Dest(d) => run_dest(d),
    }
}

fn run_source(a: &SourceArgs) -> Result<()> {
    if a.window_mib == 0 {
        bail!("--window-mib must be at least 1");
    }
    let codec = a.codec.codec()?;
    let cfg = DiskSourceConfig {
        to: a.to.clone(),
        wire: Wire::new(Shape::parse(&a.shape.rate, &a.shape.delay)?),
        tls: Some(tls::client_config(&a.keys)?),
        config: codec.config,
        codec: codec.codec,
        compression: codec.link,
        label: "disk".into(),
        deadlines: a.deadlines.deadlines()?,
        window: a.window_mib << 20,
    };
    let nbd = TcpListener::bind(&a.nbd_listen)
        .with_context(|| format!("listening for the mirror job on {}", a.nbd_listen))?;
    let addr = nbd.local_addr()?;
    let phase = Phase::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = match &a.qmp {
        Some(q) => Some(switch_when_migrating(
            QmpAddr::parse(q),
            phase.clone(),
            stop.clone(),
            |line| eprintln!("disk source: {line}"),
        )?),
        None => None,
    };
    let r = disk_source(&nbd, &cfg, phase, |size| {
        eprintln!(
            "disk source: serving nbd://{addr}/disk ({} MiB, the destination's size) for the mirror job",
            size >> 20
        );
    });
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = watch {
        // `ignore`: the watcher only logs; a panic in it changes nothing here.
        let _ = w.join();
    }
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let c = &r.carried;
        println!(
            "disk copy done in {:.2} s: {:.1} MiB written, {:.1} MiB zeroed, {:.1} MiB of stream, {:.1} MiB on the wire, {} sync points",
            r.total_s,
            c.written_bytes as f64 / 1048576.0,
            c.zeroed_bytes as f64 / 1048576.0,
            c.stream_bytes as f64 / 1048576.0,
            r.wire_bytes as f64 / 1048576.0,
            c.syncs
        );
    }
    Ok(())
}

fn run_dest(a: &DestArgs) -> Result<()> {
    let cfg = DiskDestConfig {
        export: NbdAddr::parse(&a.export)?,
        tls: Some(tls::server_config(&a.keys)?),
        deadlines: a.deadlines.deadlines()?,
        base: a.base,
        log: Arc::new(|line| eprintln!("disk dest: {line}")),
    };
    let listener =
        TcpListener::bind(&a.listen).with_context(|| format!("listening on {}", a.listen))?;
    let dest = DiskDest::start(listener, cfg)?;
    eprintln!("disk dest: listening on {}", dest.addr());
    // a failed copy is logged and the end listens on for the next attempt
    let r = loop {
        match dest.next(Duration::from_secs(365 * 86_400)) {
            Ok(r) => break r,
            Err(_) => continue,
        }
    };
    dest.stop();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(())
}
