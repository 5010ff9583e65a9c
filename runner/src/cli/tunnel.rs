//! `pagewire tunnel source` and `pagewire tunnel dest`: the two ends of the tunnel that
//! carries an unmodified QEMU's live migration, over [`pagewire_runner::tunnel`].

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pagewire_runner::migrate::Codec;
use pagewire_runner::net::{tls, Shape};
use pagewire_runner::tunnel::{self, DestEndConfig, QemuEndpoint, SourceEndConfig, TunnelDest};
use pagewire_runner::CodecSettings;

use super::deadlines::DeadlineArgs;
use super::live::ShapeArgs;

#[derive(Args)]
pub struct TunnelArgs {
    #[command(subcommand)]
    end: TunnelEnd,
}

#[derive(Subcommand)]
enum TunnelEnd {
    /// The source end: take the source QEMU's migration (`migrate` to --qemu) and carry it
    /// to a `pagewire tunnel dest` at --to.
    Source(SourceArgs),
    /// The destination end: take migrations on --listen and hand each to the destination
    /// QEMU's `-incoming` at --qemu.
    Dest(DestArgs),
}

#[derive(Args)]
struct SourceArgs {
    /// Where the source QEMU migrates to: unix:/path or tcp:host:port (give QEMU the same
    /// URI: `migrate unix:/path`).
    #[arg(long, value_name = "URI")]
    qemu: String,
    /// The destination end, host:port.
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// Folder from `pagewire keygen` (ca.pem, sender.pem, sender.key).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Codec: on (zero pages, CBR, deltas, LZ4) or off (zero pages only).
    #[arg(long, default_value = "on")]
    codec: String,
    /// Codec cache in MiB (both ends).
    #[arg(long, value_name = "N")]
    cache_mib: Option<u64>,
    #[command(flatten)]
    deadlines: DeadlineArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DestArgs {
    /// Address to listen on for the source end, host:port.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// The destination QEMU's -incoming: unix:/path or tcp:host:port.
    #[arg(long, value_name = "URI")]
    qemu: String,
    /// Folder from `pagewire keygen` (ca.pem, receiver.pem, receiver.key).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    /// Largest decoder cache a source end may ask for, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    max_cache_mib: u64,
    /// Keep listening after a migration was handed to QEMU (else the end exits then; a
    /// failed attempt never ends it).
    #[arg(long)]
    keep_listening: bool,
    #[command(flatten)]
    deadlines: DeadlineArgs,
    /// Print each migration's report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `pagewire tunnel ...`.
pub fn run(a: &TunnelArgs) -> Result<()> {
    match &a.end {
        TunnelEnd::Source(s) => run_source(s),
        TunnelEnd::Dest(d) => run_dest(d),
    }
}

fn run_source(a: &SourceArgs) -> Result<()> {
    let qemu = QemuEndpoint::parse(&a.qemu)?;
    let deadlines = a.deadlines.deadlines()?;
    let config = CodecSettings {
        cache_mib: a.cache_mib,
        ..CodecSettings::default()
    }
    .config(4096)?;
    let cfg = SourceEndConfig {
        to: a.to.clone(),
        shape: Shape::parse(&a.shape.rate, &a.shape.delay)?,
        tls: Some(tls::client_config(&a.keys)?),
        config,
        codec: Codec::parse(&a.codec)?,
        label: "qemu".into(),
        deadlines,
    };
    let listener = qemu.listen()?;
    eprintln!(
        "tunnel source: waiting for QEMU's `migrate {}`; carrying it to {} ({})",
        qemu.uri(),
        cfg.to,
        cfg.shape.describe()
    );
    // QEMU may take its time to start migrating; once it does, a stall of the
    // progress deadline fails the migration
    let mut conn = listener.accept(deadlines.progress)?;
    let bar = spinner(a.json);
    let r = tunnel::tunnel_out(&mut *conn, &cfg, &mut |c, wire| {
        bar.set_message(format!(
            "{:.1} MB of QEMU stream, {:.1} MB on the link, {} pages",
            c.qemu_bytes as f64 / 1e6,
            wire as f64 / 1e6,
            c.raw_pages + c.zero_pages + c.xbzrle_pages + c.fill_pages
        ));
    });
    bar.finish_and_clear();
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "tunnel source: migration {} carried in {:.2} s: {} B of QEMU stream as {} B on the \
             link ({:.1} %); {} pages ({} zero, {} XBZRLE), {} B of device state",
            r.migration_id,
            r.total_s,
            r.carried.qemu_bytes,
            r.wire_bytes,
            100.0 * r.wire_bytes as f64 / r.carried.qemu_bytes.max(1) as f64,
            r.carried.raw_pages + r.carried.zero_pages + r.carried.xbzrle_pages,
            r.carried.zero_pages,
            r.carried.xbzrle_pages,
            r.carried.device_bytes
        );
    }
    Ok(())
}

fn run_dest(a: &DestArgs) -> Result<()> {
    let qemu = QemuEndpoint::parse(&a.qemu)?;
    if a.max_cache_mib == 0 {
        bail!("--max-cache-mib must be at least 1");
    }
    let cfg = DestEndConfig {
        qemu,
        tls: Some(tls::server_config(&a.keys)?),
        deadlines: a.deadlines.deadlines()?,
        max_cache: a.max_cache_mib.saturating_mul(1 << 20),
        log: Arc::new(|line| eprintln!("tunnel dest: {line}")),
    };
    let listener =
        TcpListener::bind(&a.listen).with_context(|| format!("listening on {}", a.listen))?;
    let end = TunnelDest::start(listener, cfg)?;
    eprintln!("tunnel dest: listening on {}", end.addr());
    loop {
        let Some(r) = end.next(Duration::from_secs(3600)) else {
            continue;
        };
        // failures are logged by the end itself; it listens on for the next attempt
        if let Ok(rep) = r {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&rep)?);
            }
            if !a.keep_listening {
                end.stop();
                return Ok(());
            }
        }
    }
}

/// A spinner with a message, on stderr; hidden for `--json`.
fn spinner(quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
