//! `pagewire send`, `receive`, `demo`, `keygen` and `coordinator`: the live migration's
//! command line, over [`pagewire_runner::live`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use pagewire_runner::encoders::EncoderChoice;
use pagewire_runner::live::{self, Demo, GroupMembership, GuestConfig, ReceiveConfig, SendConfig};
use pagewire_runner::migrate::{
    parse_policy, Codec, Compression, DestOptions, MigrationReport, SourceOptions,
};
use pagewire_runner::net::coord;
use pagewire_runner::net::listen::ListenOptions;
use pagewire_runner::net::{tls, Shape};
use pagewire_runner::vmm::GuestSpec;
use pagewire_runner::{CodecSettings, Workload};

use super::deadlines::{seconds, DeadlineArgs};
use super::encoder::EncoderArgs;
use super::progress::Bar;

/// The guest and migration settings `send` and `demo` share.
#[derive(Args, Clone)]
pub struct SourceArgs {
    /// Guest workload: hot-set, database, compile or idle.
    #[arg(long, default_value = "hot-set")]
    workload: String,
    /// Guest memory in MiB (64 up to several GiB).
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    mem_mib: u64,
    /// vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: usize,
    /// Seed of the guest's memory image and writes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds the guest runs before the migration starts.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    warmup: f64,
    /// Stop policy: smart-stop, xen-classic, xen-today or downtime-limit.
    #[arg(long, default_value = "smart-stop")]
    policy: String,
    /// Codec: on (zero pages, CBR, deltas, LZ4) or off (zero pages only).
    #[arg(long, default_value = "on")]
    codec: String,
    /// LZ4 on the frames: auto (off while the sending CPU is the bottleneck, on while the link
    /// is), lz4 or none.
    #[arg(long, default_value = "auto")]
    compress: String,
    /// Codec cache in MiB (both ends).
    #[arg(long, value_name = "N")]
    cache_mib: Option<u64>,
    #[command(flatten)]
    encoder: EncoderArgs,
    #[command(flatten)]
    deadlines: DeadlineArgs,
}

impl SourceArgs {
    fn guest(&self) -> Result<GuestConfig> {
        if self.mem_mib < 16 || self.mem_mib % 2 != 0 {
            bail!("--mem-mib must be an even number of at least 16");
        }
        if !(self.warmup.is_finite() && self.warmup >= 0.0) {
            bail!("--warmup must be a non-negative number of seconds");
        }
        Ok(GuestConfig {
            spec: GuestSpec::new(Workload::parse(&self.workload)?, self.seed),
            mem_mib: self.mem_mib,
            vcpus: self.vcpus,
            warmup: Duration::from_secs_f64(self.warmup),
        })
    }

    fn encoder(&self) -> Result<EncoderChoice> {
        if self.encoder.fallback {
            // replay can start a new stream to a new decoder; a migration cannot
            bail!(
                "--fallback is for replay: a live migration whose firmware fails stops, leaves the \
                 source VM running, and can be started again without --encoder firmware"
            );
        }
        self.encoder.choice()
    }

    fn source(&self) -> Result<SourceOptions> {
        let config = CodecSettings {
            cache_mib: self.cache_mib,
            ..CodecSettings::default()
        }
        .config(4096)?;
        Ok(SourceOptions {
            config,
            codec: Codec::parse(&self.codec)?,
            policy: parse_policy(&self.policy)?,
            compression: Compression::parse(&self.compress)?,
            label: self.workload.clone(),
            encoder: self.encoder()?,
            deadlines: self.deadlines.deadlines()?,
        })
    }
}

/// The shape of the sending side.
#[derive(Args, Clone)]
pub struct ShapeArgs {
    /// Rate limit of the sending side, e.g. 100mbit, 1gbit, or off.
    #[arg(long, default_value = "off")]
    rate: String,
    /// Added one-way delay on the sending side (the added round-trip time), e.g. 20ms.
    #[arg(long, default_value = "0ms")]
    delay: String,
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Folder for ca.pem, receiver.pem/.key and sender.pem/.key.
    dir: PathBuf,
}

#[derive(Args)]
pub struct SendArgs {
    /// Destination address, host:port.
    #[arg(long, value_name = "ADDR")]
    to: String,
    /// Folder from `pagewire keygen` (ca.pem, sender.pem, sender.key).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Migrate as a member of this Synchronized Arrival group (needs --coordinator).
    #[arg(long, value_name = "NAME", requires = "coordinator")]
    group: Option<String>,
    /// Address of the `pagewire coordinator`.
    #[arg(long, value_name = "ADDR", requires = "group")]
    coordinator: Option<String>,
    /// Members of the group (every member must say the same).
    #[arg(long, value_name = "N", default_value_t = 2)]
    group_size: usize,
    /// Print the report as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CoordinatorArgs {
    /// Address to listen on, host:port.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Folder from `pagewire keygen` (ca.pem, receiver.pem, receiver.key): the
    /// coordinator holds the receiver's certificate and takes only the sender's.
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    /// Seconds a connection has to complete its TLS handshake and join.
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    handshake_timeout: f64,
    /// Seconds a member may stay silent (one pre-copy iteration) before it is dropped.
    #[arg(long, value_name = "S", default_value_t = 3600.0)]
    idle_timeout: f64,
}

#[derive(Args)]
pub struct ReceiveArgs {
    /// Address to listen on, host:port.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Folder from `pagewire keygen` (ca.pem, receiver.pem, receiver.key).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    /// Seconds the arrived VM runs before it checks itself and `receive` ends.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    run: f64,
    /// Largest guest memory accepted, in MiB (default: what this host can hold when the
    /// migration arrives: its available memory and its memory cgroup's room).
    #[arg(long, value_name = "MIB")]
    max_mem_mib: Option<u64>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    deadlines: DeadlineArgs,
}

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Rate limit of the link, e.g. 100mbit, 1gbit, or off.
    #[arg(long, default_value = "100mbit")]
    rate: String,
    /// Added one-way delay (the added round-trip time), e.g. 20ms.
    #[arg(long, default_value = "20ms")]
    delay: String,
    /// Print the result as JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

fn receive_config(
    run: f64,
    max_mem_mib: Option<u64>,
    keys: &Path,
    deadlines: &DeadlineArgs,
) -> Result<ReceiveConfig> {
    if !(run.is_finite() && run >= 0.0) {
        bail!("--run must be a non-negative number of seconds");
    }
    Ok(ReceiveConfig {
        tls: Some(tls::server_config(keys)?),
        dest: DestOptions {
            max_mem_bytes: max_mem_mib.map(|m| m.saturating_mul(1 << 20)),
            deadlines: deadlines.deadlines()?,
            ..DestOptions::default()
        },
        run_after: Duration::from_secs_f64(run),
        ..ReceiveConfig::default()
    })
}

/// Boots the guest and sends it, with a progress bar unless `json`.
fn send(
    cfg: &SendConfig,
    guest: &GuestConfig,
    json: bool,
    group: Option<&GroupMembership>,
) -> Result<MigrationReport> {
    let mut bar = Bar::pages(json);
    let r = live::boot_and_send(cfg, guest, group, &mut bar);
    bar.finish();
    r
}

/// `pagewire send`.
pub fn run_send(a: &SendArgs) -> Result<()> {
    let cfg = SendConfig {
        to: a.to.clone(),
        shape: Shape::parse(&a.shape.rate, &a.shape.delay)?,
        source: Arc::new(a.source.source()?),
        tls: Some(tls::client_config(&a.keys)?),
    };
    let group = match (&a.coordinator, &a.group) {
        (Some(c), Some(g)) => Some(GroupMembership {
            coordinator: c.clone(),
            group: g.clone(),
            members: a.group_size,
        }),
        _ => None,
    };
    let report = send(&cfg, &a.source.guest()?, a.json, group.as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// `pagewire coordinator`.
pub fn run_coordinator(a: &CoordinatorArgs) -> Result<()> {
    let listener =
        TcpListener::bind(&a.listen).with_context(|| format!("listening on {}", a.listen))?;
    let cfg = coord::CoordinatorConfig {
        tls: Some(tls::server_config(&a.keys)?),
        listen: ListenOptions {
            handshake_timeout: seconds("--handshake-timeout", a.handshake_timeout)?,
            ..ListenOptions::default()
        },
        idle: seconds("--idle-timeout", a.idle_timeout)?,
        ..coord::CoordinatorConfig::default()
    };
    eprintln!("coordinator listening on {}", listener.local_addr()?);
    coord::serve(listener, cfg)?.wait();
    Ok(())
}

/// `pagewire keygen`.
pub fn run_keygen(a: &KeygenArgs) -> Result<()> {
    tls::keygen(&a.dir)?;
    println!(
        "wrote {} into {}: give the receiver ca.pem, receiver.pem, receiver.key and the sender ca.pem, sender.pem, sender.key",
        tls::FILES.join(", "),
        a.dir.display()
    );
    Ok(())
}

/// `pagewire receive`.
pub fn run_receive(a: &ReceiveArgs) -> Result<()> {
    let cfg = receive_config(a.run, a.max_mem_mib, &a.keys, &a.deadlines)?;
    let listener =
        TcpListener::bind(&a.listen).with_context(|| format!("listening on {}", a.listen))?;
    eprintln!("listening on {}", listener.local_addr()?);
    let r = live::receive_one(&listener, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "received {} ({} MiB) in {} iterations; downtime {:.1} ms; guest ran {} rounds here; self-check {}",
            r.label,
            r.mem_bytes >> 20,
            r.iterations,
            r.reply.downtime_us as f64 / 1e3,
            r.heartbeats,
            if r.self_check_ok { "OK" } else { "FAILED" }
        );
    }
    if !r.self_check_ok {
        bail!("the migrated guest failed its self-check");
    }
    Ok(())
}

/// `pagewire demo`.
pub fn run_demo(a: &DemoArgs) -> Result<()> {
    let shape = Shape::parse(&a.rate, &a.delay)?;
    let guest = a.source.guest()?;
    let demo = Demo::start(shape, a.source.source()?)?;
    if !a.json {
        eprintln!(
            "pagewire demo: {} MiB {} guest, {} over loopback ({}, mutual TLS)",
            guest.mem_mib,
            a.source.workload,
            demo.addr(),
            shape.describe()
        );
    }
    let mut bar = Bar::pages(a.json);
    let sent = demo.send(&guest, &mut bar);
    bar.finish();
    let received = demo.received();
    let report = sent?;
    let received = received?;
    if a.json {
        let j = serde_json::json!({
            "link": { "rate_bytes_per_s": shape.rate, "delay_ms": shape.delay.as_millis() as u64 },
            "source": report,
            "destination": received,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        print!("{}", report.table());
        println!(
            "destination     guest ran {} rounds after arrival; self-check {}",
            received.heartbeats,
            if received.self_check_ok {
                "OK"
            } else {
                "FAILED"
            }
        );
    }
    if !received.self_check_ok {
        bail!("the migrated guest failed its self-check");
    }
    Ok(())
}
