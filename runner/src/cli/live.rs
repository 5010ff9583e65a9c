//! `pagewire send`, `receive`, `demo`, `keygen` and `coordinator`: the live migration's
//! command line, over [`pagewire_runner::live`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use pagewire_runner::encoders::EncoderChoice;
use pagewire_runner::host_memory;
use pagewire_runner::live::{self, Demo, GroupMembership, GuestConfig, ReceiveConfig, SendConfig};
use pagewire_runner::migrate::{
    dest, parse_policy, Codec, Compression, DestOptions, MigrationReport, SourceOptions,
};
use pagewire_runner::net::coord;
use pagewire_runner::net::listen::ListenOptions;
use pagewire_runner::net::{tls, Shape};
use pagewire_runner::units::seconds;
use pagewire_runner::vmm::GuestSpec;
use pagewire_runner::{CodecSettings, Workload};

use super::deadlines::{deadline, DeadlineArgs};
use super::encoder::EncoderArgs;
use super::progress::Bar;

/// The longest `--warmup`: an hour of guest running before the migration starts.
const MAX_WARMUP: Duration = Duration::from_secs(3600);
/// The longest `receive --run`: a day of the arrived guest running before its self-check.
const MAX_RUN: Duration = Duration::from_secs(86_400);

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
    /// auto (LZ4 on the frames, off while the sending CPU is the bottleneck, on while the
    /// link is), lz4, none, plain (every page whole past the cache, a zero test its only
    /// encoding: for links faster than any encoding pays on), or zstd[:LEVEL] (zstd over
    /// the whole stream, level 3 unless given: fewest bytes, for slow links).
    #[arg(long, default_value = "auto")]
    compress: String,
    /// Codec cache in MiB (both ends; split among the lanes).
    #[arg(long, value_name = "N")]
    cache_mib: Option<u64>,
    /// Lanes: N encoders on N threads and N connections over the same link, page `pfn` on
    /// lane `pfn % N`, so each lane's cache and deltas stay its own (1 to 16).
    #[arg(long, value_name = "N", default_value_t = 1)]
    lanes: u32,
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
        Ok(GuestConfig {
            spec: GuestSpec::new(Workload::parse(&self.workload)?, self.seed),
            mem_mib: self.mem_mib,
            vcpus: self.vcpus,
            warmup: seconds(self.warmup, "--warmup", MAX_WARMUP)?,
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
            lanes: self.lanes,
        })
    }
}

/// The shape of the sending side.
#[derive(Args, Clone)]
pub struct ShapeArgs {
    /// Rate limit of the sending side, e.g. 100mbit, 1gbit, or off.
    #[arg(long, default_value = "off")]
    pub rate: String,
    /// Added one-way delay on the sending side (the added round-trip time), e.g. 20ms.
    #[arg(long, default_value = "0ms")]
    pub delay: String,
}

#[derive(Args)]
pub struct KeygenArgs {
    /// Folder for ca.pem, receiver.pem/.key and sender.pem/.key (created, mode 0700, if
    /// missing).
    dir: PathBuf,
    /// Replace a key set already in the folder: the certificates handed out from it stop
    /// working.
    #[arg(long)]
    force: bool,
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
    /// migration arrives, with the decoder cache its sender may ask for).
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

/// The smallest guest `send` boots, in MiB.
const MIN_GUEST_MIB: u64 = 16;

/// The largest guest the receiver accepts, in bytes: `--max-mem-mib` if this process can
/// hold that guest and the largest cache its sender may ask for
/// ([`dest::memory_needed`]), else an error; without it, the largest guest that fits.
fn max_guest_bytes(requested_mib: Option<u64>) -> Result<u64> {
    let room = host_memory::headroom();
    let fits = |mib: u64| {
        mib.checked_mul(1 << 20).is_some_and(|b| {
            dest::memory_needed(b).saturating_add(host_memory::RESERVE) <= room.bytes
        })
    };
    if room.bytes == u64::MAX {
        // nothing says what this host has: the old fixed default
        return Ok(requested_mib.unwrap_or(16 << 10).saturating_mul(1 << 20));
    }
    // the largest guest that fits: memory_needed grows with the guest
    let (mut lo, mut hi) = (0u64, room.bytes >> 20);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let largest = if fits(lo) { lo } else { 0 };
    match requested_mib {
        Some(mib) if !fits(mib) => bail!(
            "--max-mem-mib {mib}: a guest that large and the decoder cache its sender may ask \
             for need {}, but this process can have only {room}; lower --max-mem-mib (at most \
             {largest} fits), or leave it out for the largest that fits",
            host_memory::mib(dest::memory_needed(mib.saturating_mul(1 << 20)))
        ),
        Some(mib) => Ok(mib << 20),
        None if largest < MIN_GUEST_MIB => bail!(
            "this process can have only {room}: not enough for a {MIN_GUEST_MIB} MiB guest and \
             the {} decoder cache a sender may ask for",
            host_memory::mib(dest::largest_cache(MIN_GUEST_MIB << 20))
        ),
        None => Ok(largest << 20),
    }
}

/// The receiver's configuration, and the largest guest it accepts now. An explicit
/// `--max-mem-mib` is checked here, so that a value this host cannot hold is refused at
/// start; without one every migration is checked against the memory the host has when it
/// arrives (`migrate::dest`), since a receiver may listen for a long time.
fn receive_config(
    run: f64,
    max_mem_mib: Option<u64>,
    keys: &Path,
    deadlines: &DeadlineArgs,
) -> Result<(ReceiveConfig, u64)> {
    let run_after = seconds(run, "--run", MAX_RUN)?;
    let largest_now = max_guest_bytes(max_mem_mib)?;
    let cfg = ReceiveConfig {
        tls: Some(tls::server_config(keys)?),
        dest: DestOptions {
            max_mem_bytes: max_mem_mib.map(|m| m.saturating_mul(1 << 20)),
            deadlines: deadlines.deadlines()?,
            ..DestOptions::default()
        },
        run_after,
        ..ReceiveConfig::default()
    };
    Ok((cfg, largest_now))
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
    // every argument is checked before the keys are read or a guest is booted
    let guest = a.source.guest()?;
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
    let report = send(&cfg, &guest, a.json, group.as_ref())?;
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
            handshake_timeout: deadline("--handshake-timeout", a.handshake_timeout)?,
            ..ListenOptions::default()
        },
        idle: deadline("--idle-timeout", a.idle_timeout)?,
        ..coord::CoordinatorConfig::default()
    };
    eprintln!("coordinator listening on {}", listener.local_addr()?);
    coord::serve(listener, cfg)?.wait();
    Ok(())
}

/// `pagewire keygen`.
pub fn run_keygen(a: &KeygenArgs) -> Result<()> {
    if a.force {
        tls::keygen_replacing(&a.dir)?;
    } else {
        tls::keygen(&a.dir)?;
    }
    println!(
        "wrote {} into {}: give the receiver ca.pem, receiver.pem, receiver.key and the sender ca.pem, sender.pem, sender.key",
        tls::FILES.join(", "),
        a.dir.display()
    );
    Ok(())
}

/// `pagewire receive`.
pub fn run_receive(a: &ReceiveArgs) -> Result<()> {
    let (cfg, largest_now) = receive_config(a.run, a.max_mem_mib, &a.keys, &a.deadlines)?;
    let listener =
        TcpListener::bind(&a.listen).with_context(|| format!("listening on {}", a.listen))?;
    eprintln!(
        "listening on {}, accepting guests of up to {}{}",
        listener.local_addr()?,
        host_memory::mib(largest_now),
        if a.max_mem_mib.is_none() {
            " (what this host can hold now; --max-mem-mib to fix it)"
        } else {
            ""
        }
    );
    let r = live::receive_one(&listener, &cfg)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!(
            "received {} ({} MiB) in {} iterations, decoded {} ({} KiB of decoder storage); downtime {:.1} ms; guest ran {} rounds here; self-check {}",
            r.label,
            r.mem_bytes >> 20,
            r.iterations,
            r.decoder,
            r.decoder_storage_bytes.div_ceil(1024),
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
