//! `pagewire simulate`: pre-copy migrations over a modelled WAN link, every stop policy and
//! codec setting.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use pagewire::policy::MAX_WINDOW;
use pagewire_runner::simulate::{self, plot, timeline, LinkModel, SimOptions};
use pagewire_runner::units::{parse_bandwidth, parse_link_delay};
use pagewire_runner::{CodecSettings, SnapshotDir, SnapshotSource, Workload};

use super::progress::Bar;

#[derive(Args)]
pub struct SimulateArgs {
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

/// `pagewire simulate`.
pub fn run(a: &SimulateArgs) -> Result<()> {
    if !(1..=MAX_WINDOW).contains(&a.smart_window) {
        bail!("--smart-window must be 1 to {MAX_WINDOW}");
    }
    let window_bytes = a.window_mib * (1u64 << 20) as f64;
    if !(window_bytes.is_finite() && window_bytes > 0.0) {
        bail!("--window-mib must be a positive number");
    }
    let link = LinkModel {
        bytes_per_s: parse_bandwidth(&a.bandwidth)?,
        rtt_s: parse_link_delay(&a.rtt, "--rtt")?.as_secs_f64(),
        window_bytes,
    };
    let builtins: Vec<Workload> = if a.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        a.workloads
            .iter()
            .map(|n| Workload::parse(n))
            .collect::<Result<_>>()?
    };
    let mem_bytes = a
        .mem_mib
        .checked_mul(1 << 20)
        .and_then(|b| usize::try_from(b).ok())
        .context("--mem-mib is too large")?;
    // What will run, from the arguments and the series' manifest alone: checked against the
    // link and the host's memory before any memory is allocated.
    let series = a.dir.as_deref().map(SnapshotDir::open).transpose()?;
    let name = a.dir.as_deref().map(timeline::series_name);
    let page_size = series.as_ref().map_or(4096, |d| d.page_size());
    let settings = CodecSettings {
        cache_mib: a.cache_mib,
        ..CodecSettings::default()
    };
    let codec = settings.config(page_size)?;
    let dir = name.as_deref().zip(series.as_ref().map(|d| d.mem_bytes()));
    let (singles, pair) = simulate::plan(dir, &builtins, mem_bytes, !a.no_group);
    simulate::memory_budget(&singles, &pair, &codec).check(if a.dir.is_some() {
        "--cache-mib, use a series of less memory, or add --no-group"
    } else {
        "--mem-mib or --cache-mib, run fewer --workload, or add --no-group"
    })?;
    simulate::check_link(&link, &singles, &pair, page_size)?;

    let mut workloads = timeline::open(a.dir.as_deref(), &builtins, mem_bytes, a.seed)?;
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
    let bar = Bar::new(
        simulate::run_count(workloads.len(), group.len()) as u64,
        "runs",
    );
    let result = simulate::run_all(&mut workloads, &mut group, &opts, |what| bar.done(what));
    bar.finish();
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
