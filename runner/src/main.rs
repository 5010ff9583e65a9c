//! The `pagewire` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pagewire_runner::replay::{replay, Progress, SnapshotSource};
use pagewire_runner::report::PassReport;
use pagewire_runner::{CodecSettings, SnapshotDir, SyntheticParams, SyntheticSeries};

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
    /// Replay a snapshot series through the encoder and decoder, verify every page, and
    /// report wire bytes and codec speed per pass.
    Replay(ReplayArgs),
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
}

/// Draws a progress bar over the passes on stderr (hidden when stderr is not a terminal).
struct Bar(ProgressBar);

impl Progress for Bar {
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
                        dir.join(pagewire_runner::manifest::MANIFEST_FILE).display(),
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
    let result = replay(source.as_mut(), cfg, &mut progress);
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
        Command::Replay(a) => run_replay(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
