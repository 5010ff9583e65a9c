//! The `pagewire` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pagewire_runner::replay::{replay_with, ReplayProgress};
use pagewire_runner::PassReport;
use pagewire_runner::SnapshotSource;
use pagewire_runner::{CodecSettings, SnapshotDir, SyntheticParams, SyntheticSeries};

mod cli;
mod live_cli;
mod trace_cli;

#[derive(Parser)]
#[command(
    name = "pagewire",
    version,
    about = "pagewire: live VM migration page codec tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Live-migrate a real KVM guest between two processes over loopback, with a WAN shape
    /// (100 Mbit/s, +20 ms by default): both ends in one command.
    Demo(live_cli::DemoArgs),
    /// Boot a KVM guest and live-migrate it to a `pagewire receive` at --to.
    Send(live_cli::SendArgs),
    /// Wait for one live migration on --listen, resume the VM, let it check itself.
    Receive(live_cli::ReceiveArgs),
    /// Make the pre-shared CA and certificates for mutual TLS between send and receive.
    Keygen(live_cli::KeygenArgs),
    /// Coordinate Synchronized Arrival for `send --group` members on --listen.
    Coordinator(live_cli::CoordinatorArgs),
    /// Replay a snapshot series through the encoder and decoder, verify every page, and
    /// report wire bytes and codec speed per pass.
    Replay(ReplayArgs),
    /// Simulate pre-copy migrations over a WAN link for every stop policy and codec
    /// setting, on a snapshot series or the built-in workloads; print a table, write SVG
    /// plots (and JSON).
    Simulate(SimulateArgs),
    /// Record real memory traces (`trace capture`: snapshots of a QEMU guest through QMP).
    Trace(trace_cli::TraceArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// Snapshot series folder (manifest.json + raw snapshots). Without it, a built-in
    /// synthetic workload is replayed.
    dir: Option<PathBuf>,

    /// Page size in bytes; must match the series (default: the series' page size).
    #[arg(long)]
    page_size: Option<u64>,
    /// Cache capacity in MiB (both ends) [default: 64].
    #[arg(long, value_name = "N")]
    cache_mib: Option<u64>,
    /// Blocks per page for content-based redundancy elimination: 1, 2, 4 or 8 [default: 4].
    #[arg(long, value_name = "N")]
    blocks: Option<u64>,
    /// Largest whole-page delta worth sending, in bytes [default: 2048].
    #[arg(long, value_name = "BYTES")]
    delta_threshold: Option<u64>,
    /// Largest uncompressed frame body in KiB [default: 64].
    #[arg(long, value_name = "N")]
    frame_kib: Option<u64>,
    /// Do not LZ4-compress frames.
    #[arg(long)]
    no_lz4: bool,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Synthetic workload: memory size in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    synthetic_mib: u64,
    /// Synthetic workload: number of snapshots.
    #[arg(long, value_name = "N", default_value_t = 8)]
    snapshots: usize,
    /// Synthetic workload: random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    #[command(flatten)]
    encoder: cli::encoder::EncoderArgs,
}

#[derive(Args)]
struct SimulateArgs {
    /// Snapshot series folder (manifest.json + raw snapshots, e.g. an expanded real trace).
    /// Without it, the built-in workloads run.
    dir: Option<PathBuf>,
    /// Built-in workloads to run (hot-set, database, compile, idle) [default: all four].
    #[arg(long = "workload", value_name = "NAME", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Memory of each built-in workload's VM, in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 128)]
    mem_mib: u64,
    /// Seed of the built-in workloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Link bandwidth, e.g. 100mbit, 1gbit, 12.5MB/s.
    #[arg(long, default_value = "100mbit")]
    bandwidth: String,
    /// Round-trip time, e.g. 20ms.
    #[arg(long, default_value = "20ms")]
    rtt: String,
    /// TCP window in MiB: throughput is at most window / RTT.
    #[arg(long, value_name = "MIB", default_value_t = 4.0)]
    window_mib: f64,
    /// Codec cache capacity in MiB (both ends).
    #[arg(long, value_name = "N")]
    cache_mib: Option<u64>,
    /// Smart Stop's window, in iterations (1 to 16).
    #[arg(long, value_name = "N", default_value_t = pagewire::policy::DEFAULT_WINDOW)]
    smart_window: usize,
    /// The downtime-limit policy's limit in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    downtime_ms: u64,
    /// Skip the Synchronized Arrival group run.
    #[arg(long)]
    no_group: bool,
    /// Folder for the SVG plots.
    #[arg(long, value_name = "DIR", default_value = "simulate-out")]
    out: PathBuf,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn run_simulate(a: &SimulateArgs) -> Result<()> {
    use pagewire_runner::simulate::{self, plot, timeline, LinkModel, SimOptions};
    use pagewire_runner::units::{parse_bandwidth, parse_duration};
    use pagewire_runner::Workload;
    if a.window_mib.is_nan() || a.window_mib <= 0.0 {
        bail!("--window-mib must be positive");
    }
    let link = LinkModel {
        bytes_per_s: parse_bandwidth(&a.bandwidth)?,
        rtt_s: parse_duration(&a.rtt)?,
        window_bytes: a.window_mib * (1u64 << 20) as f64,
    };
    let builtins: Vec<Workload> = if a.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        a.workloads
            .iter()
            .map(|n| Workload::parse(n))
            .collect::<Result<_>>()?
    };
    let mem_bytes =
        usize::try_from(a.mem_mib.saturating_mul(1 << 20)).context("--mem-mib is too large")?;
    let mut workloads = timeline::open(a.dir.as_deref(), &builtins, mem_bytes, a.seed)?;
    let page_size = workloads.first().map_or(4096, |w| w.page_size());
    let settings = CodecSettings {
        cache_mib: a.cache_mib,
        ..CodecSettings::default()
    };
    let codec = settings.config(page_size)?;
    let mut group = if a.no_group {
        Vec::new()
    } else {
        timeline::group(a.dir.as_deref(), &workloads, mem_bytes, a.seed)?
    };
    let opts = SimOptions {
        link,
        codec,
        smart_window: a.smart_window,
        downtime_limit_ms: a.downtime_ms,
    };
    let bar = ProgressBar::new(simulate::run_count(workloads.len(), group.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} runs  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = simulate::run_all(&mut workloads, &mut group, &opts, |what| {
        bar.inc(1);
        bar.set_message(what.to_owned());
    });
    bar.finish_and_clear();
    let report = result?;
    print!("{}", report.table());
    let files = plot::write_all(&report, &a.out)?;
    println!(
        "\nplots: {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(path) = &a.json {
        report.write_json(path)?;
    }
    Ok(())
}

/// Draws a progress bar over the passes on stderr (hidden when stderr is not a terminal).
struct Bar(ProgressBar);

impl ReplayProgress for Bar {
    fn pass_started(&mut self, pass: usize, passes: usize, pages: usize) {
        self.0.set_length(passes as u64);
        self.0.set_message(format!("pass {pass}: {pages} pages"));
    }

    fn pass_done(&mut self, _row: &PassReport) {
        self.0.inc(1);
    }
}

fn run_replay(a: &ReplayArgs) -> Result<()> {
    let settings = CodecSettings {
        cache_mib: a.cache_mib,
        blocks: a.blocks,
        delta_threshold: a.delta_threshold,
        frame_kib: a.frame_kib,
        no_lz4: a.no_lz4,
    };
    let mut source: Box<dyn SnapshotSource> = match &a.dir {
        Some(dir) => {
            let d = SnapshotDir::open(dir)?;
            if let Some(ps) = a.page_size {
                if ps != d.manifest().page_size {
                    bail!(
                        "--page-size {ps} does not match the series: {} says page_size {}",
                        dir.join(pagewire_runner::series::MANIFEST_FILE).display(),
                        d.manifest().page_size
                    );
                }
            }
            Box::new(d)
        }
        None => {
            let mem_bytes = a
                .synthetic_mib
                .checked_mul(1 << 20)
                .and_then(|b| usize::try_from(b).ok())
                .context("--synthetic-mib is too large")?;
            let page_size = match a.page_size {
                Some(ps) => usize::try_from(ps).context("--page-size is too large")?,
                None => SyntheticParams::default().page_size,
            };
            let params = SyntheticParams {
                mem_bytes,
                page_size,
                snapshots: a.snapshots,
                ..SyntheticParams::default()
            };
            // The codec's page size rules first, so its message names the problem.
            settings.config(page_size)?;
            Box::new(SyntheticSeries::new(params, a.seed)?)
        }
    };
    let cfg = settings.config(source.page_size())?;

    let bar = ProgressBar::new(source.snapshots() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} passes  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut progress = Bar(bar);
    let choice = a.encoder.choice()?;
    let result = replay_with(
        source.as_mut(),
        cfg,
        &choice,
        a.encoder.fallback,
        &mut progress,
    );
    progress.0.finish_and_clear();
    let report = result?;

    print!("{}", report.table());
    if let Some(path) = &a.json {
        report.write_json(path)?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.command {
        Command::Demo(a) => live_cli::run_demo(a),
        Command::Send(a) => live_cli::run_send(a),
        Command::Receive(a) => live_cli::run_receive(a),
        Command::Keygen(a) => live_cli::run_keygen(a),
        Command::Coordinator(a) => live_cli::run_coordinator(a),
        Command::Replay(a) => run_replay(a),
        Command::Simulate(a) => run_simulate(a),
        Command::Trace(a) => trace_cli::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
