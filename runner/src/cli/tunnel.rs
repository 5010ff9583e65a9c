//! `pagewire tunnel source` and `pagewire tunnel dest`: the two ends of the tunnel that
//! carries an unmodified QEMU's live migration, over [`pagewire_runner::tunnel`].

use std::net::TcpListener;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pagewire_runner::machine::{GuestImage, Workload};
use pagewire_runner::migrate::Codec;
use pagewire_runner::net::{tls, Shape, Wire};
use pagewire_runner::qemu_stop::{StopEnd, StopTimeline};
use pagewire_runner::trace::qmp::{Qmp, QmpAddr};
use pagewire_runner::tunnel::demo::{
    comparison_chart, run_method, DemoConfig, Method, RunResult, TunnelCodec, WorkloadRuns,
};
use pagewire_runner::tunnel::{
    self, DestEndConfig, LinkCompression, QemuEndpoint, SourceEndConfig, Switchover, TunnelDest,
    DEFAULT_ZSTD_LEVEL, TUNNEL_FLOOR_MS,
};
use pagewire_runner::CodecSettings;

use super::deadlines::{deadline, DeadlineArgs};
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
    /// Boot a real Linux guest in a source QEMU and migrate it through both tunnel ends over
    /// a shaped link into a destination QEMU, verify it there; `--compare` also runs QEMU's
    /// own migration (direct, XBZRLE, multifd + zstd) on the same guest and link.
    Demo(DemoArgs),
}

#[derive(Args)]
struct DemoArgs {
    /// Rate limit of the link, e.g. 100mbit, 1gbit, or off.
    #[arg(long, default_value = "100mbit")]
    rate: String,
    /// Added one-way delay, e.g. 20ms.
    #[arg(long, default_value = "20ms")]
    delay: String,
    /// Also run QEMU's own migration (direct, XBZRLE, multifd + zstd) on the same guest
    /// and link, and compare.
    #[arg(long)]
    compare: bool,
    /// Run only these methods, comma-separated (qemu-direct, qemu-xbzrle,
    /// qemu-multifd-zstd, pagewire-tunnel): for repeating a comparison where QEMU's direct
    /// migration takes minutes.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        conflicts_with = "compare"
    )]
    methods: Vec<String>,
    #[command(flatten)]
    codec: CodecArgs,
    /// Folder for the guest's kernel and initramfs (downloaded from Debian once).
    #[arg(long, value_name = "DIR")]
    guest_cache: Option<PathBuf>,
    /// What the guest runs: heartbeat (busybox, 128 MiB), idle (128 MiB), redis
    /// (redis-server under redis-benchmark, 256 MiB), compile (gcc, 512 MiB) or churn
    /// (random bytes faster than 100 Mbit/s carries, 128 MiB); several, comma-separated, run
    /// one after the other and share the table, JSON and plot.
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        default_value = "heartbeat"
    )]
    workload: Vec<Workload>,
    /// Keep each run's QEMU logs, serial consoles and sockets in this folder (default: a
    /// temporary folder, removed at the end).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Longest a migration may take, seconds.
    #[arg(long, value_name = "S", default_value_t = 600.0)]
    timeout: f64,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Who decides when the tunnel run's QEMU stops the guest: a stop policy (smart-stop,
    /// xen-classic, xen-today, downtime-limit) over QMP, or qemu (its own downtime limit).
    #[arg(long, default_value = "smart-stop")]
    policy: String,
    /// QEMU's downtime limit while the policy waits to decide, ms: QEMU stops the guest by
    /// itself once the rest fits in it at its own rate estimate (docs/TUNNEL.md, *In the
    /// tunnel*).
    #[arg(long, value_name = "MS", default_value_t = TUNNEL_FLOOR_MS)]
    floor_ms: u64,
    /// Write the comparison as an SVG plot to this file.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Migrate a guest with its root disk (docs/STORAGE.md): QEMU's mirror job and
    /// migration, the pagewire tunnels without and with the codec, and the way back into
    /// the disk the guest left; `--methods` picks among qemu-mirror+multifd-zstd,
    /// pagewire-no-codec, pagewire, pagewire-way-back.
    #[arg(long, conflicts_with_all = ["compare", "plot"])]
    disk: bool,
    /// With --disk: the root disk's size, MiB.
    #[arg(long, value_name = "MIB", default_value_t = 1024, requires = "disk")]
    disk_mib: u64,
    /// With --disk: whose Debian packages fill the disk (heartbeat: busybox only).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "compile",
        requires = "disk"
    )]
    disk_content: Workload,
}

#[derive(Args)]
struct SourceArgs {
    /// Where the source QEMU migrates to: unix:/path or tcp:host:port (give QEMU the same
    /// URI: `migrate unix:/path`), or stdio when QEMU runs this end itself
    /// (`migrate "exec:pagewire tunnel source --qemu stdio ..."`).
    #[arg(long, value_name = "URI")]
    qemu: String,
    /// The source QEMU's QMP socket (unix:/path or tcp:host:port; one QEMU serves no other
    /// client on it): with it a stop policy decides the switchover (--policy).
    #[arg(long, value_name = "ADDR")]
    qmp: Option<String>,
    /// Who decides when QEMU stops the guest, with --qmp: a stop policy (smart-stop,
    /// xen-classic, xen-today, downtime-limit) or qemu (its own downtime limit).
    #[arg(long, default_value = "smart-stop", requires = "qmp")]
    policy: String,
    /// QEMU's downtime limit while the policy waits to decide, ms, with --qmp: QEMU stops
    /// the guest by itself once the rest fits in it at its own rate estimate
    /// (docs/TUNNEL.md, *In the tunnel*).
    #[arg(long, value_name = "MS", default_value_t = TUNNEL_FLOOR_MS, requires = "qmp")]
    floor_ms: u64,
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
    #[command(flatten)]
    deadlines: DeadlineArgs,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// How a tunnel encodes (the memory tunnel's, and the disk tunnel's source end).
#[derive(Args)]
pub(super) struct CodecArgs {
    /// Codec: on (zero pages, CBR, deltas; LZ4 unless zstd is on) or off (zero pages only).
    #[arg(long, default_value = "on")]
    codec: String,
    /// Codec cache in MiB (both ends; a disk's is its own, beside any memory migration's).
    #[arg(long, value_name = "N")]
    cache_mib: Option<u64>,
    /// Compression of the whole stream on the link: zstd or none.
    #[arg(long, default_value = "zstd")]
    link_compress: String,
    /// zstd's level: auto (chosen as the migration runs, from whether zstd waits for the
    /// link or the codec for zstd), or a fixed level (-7..=22 but 0; QEMU's multifd uses 1).
    #[arg(long, value_name = "N", default_value = DEFAULT_ZSTD_LEVEL, allow_hyphen_values = true)]
    zstd_level: String,
}

impl CodecArgs {
    pub(super) fn codec(&self) -> Result<TunnelCodec> {
        Ok(TunnelCodec {
            codec: Codec::parse(&self.codec)?,
            config: CodecSettings {
                cache_mib: self.cache_mib,
                ..CodecSettings::default()
            }
            .config(4096)?,
            link: LinkCompression::parse(&self.link_compress, &self.zstd_level)?,
        })
    }
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
        TunnelEnd::Demo(d) => run_demo(d),
    }
}

fn run_source(a: &SourceArgs) -> Result<()> {
    let qemu = QemuEndpoint::parse(&a.qemu)?;
    let deadlines = a.deadlines.deadlines()?;
    let codec = a.codec.codec()?;
    let cfg = SourceEndConfig {
        to: a.to.clone(),
        wire: Wire::new(Shape::parse(&a.shape.rate, &a.shape.delay)?),
        tls: Some(tls::client_config(&a.keys)?),
        config: codec.config,
        codec: codec.codec,
        link_compression: codec.link,
        label: "qemu".into(),
        deadlines,
    };
    let switchover = Switchover::parse(&a.policy, a.floor_ms)?;
    // the policy takes over before QEMU's migration starts
    let mut controller = match &a.qmp {
        Some(addr) => {
            let addr = QmpAddr::parse(addr);
            let mut q = Qmp::connect(&addr, deadlines.handshake)
                .with_context(|| format!("connecting to QEMU's QMP at {addr}"))?;
            switchover
                .prepare(&mut q, Some(addr))?
                .map(|stop| (q, stop))
        }
        None => None,
    };
    let listener = qemu.listen()?;
    let from = match qemu {
        QemuEndpoint::Stdio => "reading QEMU's migration on stdin (exec:)".to_string(),
        _ => format!("waiting for QEMU's `migrate {}`", qemu.uri()),
    };
    eprintln!(
        "tunnel source: {from}; carrying it to {} ({})",
        cfg.to,
        cfg.wire.shape().describe()
    );
    let bar = spinner(a.json);
    let mut deciding = None;
    // QEMU may take its time to start migrating; once it does, a stall of the progress
    // deadline fails the migration. The policy takes over once QEMU has connected.
    let start_policy = || {
        deciding = controller.take().map(|(mut q, mut stop)| {
            std::thread::spawn(move || stop.run(&mut q, |_| ControlFlow::Continue(())))
        });
    };
    let r = tunnel::accept_and_tunnel_out(&listener, &cfg, start_policy, &mut |c, wire| {
        bar.set_message(format!(
            "{:.1} MB of QEMU stream, {:.1} MB on the link, {} pages",
            c.qemu_bytes as f64 / 1e6,
            wire as f64 / 1e6,
            c.raw_pages + c.zero_pages + c.xbzrle_pages + c.fill_pages
        ));
    });
    bar.finish_and_clear();
    // QEMU's migration is over (its stream ended) or failed: so is the controller's part
    let timeline = deciding.map(|t| match t.join() {
        Ok(Ok(t)) => Some(t),
        Ok(Err(e)) => {
            eprintln!("tunnel source: the stop policy stepped back: {e}");
            Some(e.timeline)
        }
        Err(_) => None,
    });
    let r = r?;
    if a.json {
        let j = serde_json::json!({ "tunnel": r, "switchover": timeline.flatten() });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        if let Some(Some(sw)) = &timeline {
            println!(
                "tunnel source: {} drove the switchover: {}",
                sw.policy,
                describe_switchover(sw)
            );
        }
        if let Some(z) = r.link_stage.describe() {
            println!("tunnel source: {z}");
        }
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

fn run_demo(a: &DemoArgs) -> Result<()> {
    let shape = Shape::parse(&a.rate, &a.delay)?;
    let codec = a.codec.codec()?;
    let switchover = Switchover::parse(&a.policy, a.floor_ms)?;
    let timeout = deadline("--timeout", a.timeout)?;
    if a.disk {
        let guest_cache = match &a.guest_cache {
            Some(d) => d.clone(),
            None => default_guest_cache()?,
        };
        return super::disk_demo::run(&super::disk_demo::DiskDemoArgs {
            shape,
            codec,
            timeout,
            guest_cache,
            work_dir: a.work_dir.clone(),
            methods: a.methods.clone(),
            disk_mib: a.disk_mib,
            content: a.disk_content,
            json: a.json,
        });
    }
    let methods: Vec<Method> = if a.compare {
        Method::ALL.to_vec()
    } else if !a.methods.is_empty() {
        a.methods
            .iter()
            .map(|name| {
                Method::ALL
                    .into_iter()
                    .find(|m| m.name() == name)
                    .with_context(|| format!("no method {name:?}: see --help"))
            })
            .collect::<Result<_>>()?
    } else {
        vec![Method::PagewireTunnel]
    };
    let guest_cache = match &a.guest_cache {
        Some(d) => d.clone(),
        None => default_guest_cache()?,
    };
    let tmp;
    let work_dir = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let quiet = a.json;
    let mut by_workload: Vec<(Workload, Vec<RunResult>)> = Vec::new();
    for &workload in &a.workload {
        let image = GuestImage::build_workload(&guest_cache, workload)
            .map_err(|e| anyhow::anyhow!("cannot build the {} guest: {}", workload.name(), e.0))?;
        let cfg = DemoConfig {
            image,
            shape,
            codec,
            switchover,
            work_dir: work_dir.join(workload.name()),
            timeout,
        };
        let mut runs = Vec::new();
        for &m in &methods {
            let r = run_method(m, &cfg, &mut |line| {
                if !quiet {
                    eprintln!("tunnel demo: {}: {line}", workload.name());
                }
            });
            if !quiet {
                eprintln!("tunnel demo: {}: {}", workload.name(), summary(&r));
            }
            runs.push(r);
        }
        by_workload.push((workload, runs));
    }
    if let Some(p) = &a.plot {
        let groups: Vec<WorkloadRuns> = by_workload
            .iter()
            .map(|(w, runs)| WorkloadRuns {
                workload: w.name(),
                runs,
            })
            .collect();
        comparison_chart(
            &format!("QEMU live migration, {}", shape.describe()),
            &groups,
        )
        .write_svg(p)?;
    }
    let runs: Vec<&RunResult> = by_workload.iter().flat_map(|(_, runs)| runs).collect();
    let verified = runs.iter().all(|r| r.verified);
    if a.json {
        let j = serde_json::json!({
            "link": { "rate_bytes_per_s": shape.rate, "delay_ms": shape.delay.as_millis() as u64 },
            "verified": verified,
            "runs": runs,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        println!("link {}", shape.describe());
        for (w, runs) in &by_workload {
            print!("\nworkload {}\n{}", w.name(), table(runs));
        }
    }
    if !verified {
        bail!("not every run was verified at the destination");
    }
    Ok(())
}

/// `$XDG_CACHE_HOME/pagewire/guest`, else `~/.cache/pagewire/guest`.
fn default_guest_cache() -> Result<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set: pass --guest-cache")?;
    Ok(base.join("pagewire").join("guest"))
}

fn summary(r: &RunResult) -> String {
    match &r.error {
        Some(e) => format!("{}: FAILED: {e}", r.method),
        None => format!(
            "{}: {:.2} s to the destination, {:.1} MB on the link, verified {}",
            r.method,
            r.total_s,
            r.wire_bytes as f64 / 1e6,
            r.verified
        ),
    }
}

/// One workload's runs as a table, with the tunnel measured against the best of QEMU's own.
fn table(runs: &[RunResult]) -> String {
    let mut t = format!(
        "{:<20} {:>8} {:>12} {:>15} {:>9} {:>9} {:>10} {:>10} {:>10} {:>9}\n",
        "method",
        "total s",
        "downtime ms",
        "guest pause ms",
        "stop->in",
        "wire MB",
        "CPU src s",
        "CPU dst s",
        "RAM equal",
        "verified"
    );
    for r in runs {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        t += &format!(
            "{:<20} {:>8.2} {:>12} {:>15} {:>9} {:>9.1} {:>10.2} {:>10.2} {:>10} {:>9}\n",
            r.method,
            r.total_s,
            opt(r.downtime_ms.map(|d| d as f64)),
            opt(r.guest_pause_ms),
            opt(r.stop_to_arrival_ms),
            r.wire_bytes as f64 / 1e6,
            r.cpu_source_s,
            r.cpu_destination_s,
            match r.differing_pages {
                Some(0) => "yes".to_string(),
                Some(n) => format!("NO ({n} pp)"),
                None => "-".to_string(),
            },
            if r.verified { "yes" } else { "NO" }
        );
        if let Some(e) = &r.error {
            t += &format!("  {}: {e}\n", r.method);
        }
        if let Some(sw) = &r.switchover {
            t += &format!(
                "  {}: {} drove the switchover: {}\n",
                r.method,
                sw.policy,
                describe_switchover(sw)
            );
        }
        if let Some(z) = r.link_stage.as_ref().and_then(|l| l.describe()) {
            t += &format!("  {}: {z}\n", r.method);
        }
        if let Some(p) = &r.pause_parts {
            t += &format!(
                "  {}: stop->in = {:.0} ms until the source end had QEMU's last byte + {:.0} ms \
                 until the destination QEMU had it + {:.0} ms for it to finish\n",
                r.method, p.source_qemu_ms, p.tunnel_ms, p.destination_qemu_ms
            );
        }
    }
    let tunnel = runs
        .iter()
        .find(|r| r.method == Method::PagewireTunnel.name());
    let qemu = runs
        .iter()
        .filter(|r| r.method != Method::PagewireTunnel.name() && r.verified);
    if let (Some(tun), Some(best_time), Some(best_bytes)) = (
        tunnel.filter(|t| t.verified),
        qemu.clone().min_by(|a, b| a.total_s.total_cmp(&b.total_s)),
        qemu.min_by_key(|r| r.wire_bytes),
    ) {
        t += &format!(
            "tunnel vs QEMU's best: total time {:.2} s vs {:.2} s ({}), wire {:.1} MB vs {:.1} MB ({})\n",
            tun.total_s,
            best_time.total_s,
            best_time.method,
            tun.wire_bytes as f64 / 1e6,
            best_bytes.wire_bytes as f64 / 1e6,
            best_bytes.method
        );
    }
    t
}

/// What the stop policy did, in a few words.
fn describe_switchover(sw: &StopTimeline) -> String {
    match (sw.stop_after_pass, &sw.end) {
        (Some(p), _) => format!("stop after pass {p} of QEMU's"),
        (None, StopEnd::Completed) => format!(
            "QEMU stopped on its own once the rest fit in the {} ms floor, the policy having \
             said continue to {} pass{}",
            sw.floor_ms,
            sw.passes.len(),
            if sw.passes.len() == 1 { "" } else { "es" }
        ),
        (None, end) => format!("no decision ({end:?})"),
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
