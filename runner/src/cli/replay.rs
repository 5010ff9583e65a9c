//! `pagewire replay`: a snapshot series (or the synthetic one) through the encoder and the
//! decoder.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use pagewire::DecodeMode;
use pagewire_runner::replay::{memory_budget, replay_with};
use pagewire_runner::series::{synthetic, MANIFEST_FILE};
use pagewire_runner::{
    CodecSettings, SnapshotDir, SnapshotSource, SyntheticParams, SyntheticSeries,
};

use super::encoder::EncoderArgs;
use super::progress::Bar;

#[derive(Args)]
pub struct ReplayArgs {
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
    /// How the decoder keeps the pages its stream refers to: `in-place` reads them from the
    /// destination image (a few bytes per cache slot), `cache-copy` keeps its own copy of
    /// the cache (as a relay or a firmware must).
    #[arg(long, value_enum, default_value_t = DecoderArg::InPlace)]
    decoder: DecoderArg,
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
    encoder: EncoderArgs,
}

/// `--decoder`: the codec's [`DecodeMode`].
#[derive(Clone, Copy, Debug, ValueEnum)]
enum DecoderArg {
    InPlace,
    CacheCopy,
}

impl DecoderArg {
    fn mode(self) -> DecodeMode {
        match self {
            DecoderArg::InPlace => DecodeMode::InPlace,
            DecoderArg::CacheCopy => DecodeMode::CacheCopy,
        }
    }
}

/// The most snapshots a synthetic series may have: each is a pass of the whole replay, and
/// 100,000 passes already take hours.
const MAX_SNAPSHOTS: usize = 100_000;

/// `pagewire replay`.
pub fn run(a: &ReplayArgs) -> Result<()> {
    let settings = CodecSettings {
        cache_mib: a.cache_mib,
        blocks: a.blocks,
        delta_threshold: a.delta_threshold,
        frame_kib: a.frame_kib,
        no_lz4: a.no_lz4,
    };
    let choice = a.encoder.choice()?;
    let mut source: Box<dyn SnapshotSource> = match &a.dir {
        Some(dir) => {
            let d = SnapshotDir::open(dir)?;
            if let Some(ps) = a.page_size {
                if ps != d.manifest().page_size {
                    bail!(
                        "--page-size {ps} does not match the series: {} says page_size {}",
                        dir.join(MANIFEST_FILE).display(),
                        d.manifest().page_size
                    );
                }
            }
            let cfg = settings.config(d.page_size())?;
            memory_budget(
                &cfg,
                a.decoder.mode(),
                d.mem_bytes(),
                d.snapshots(),
                &choice,
                a.encoder.fallback,
            )
            .check("--cache-mib, or replay a series of less memory")?;
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
            if !(1..=MAX_SNAPSHOTS).contains(&a.snapshots) {
                bail!("--snapshots must be 1 to {MAX_SNAPSHOTS}");
            }
            let params = SyntheticParams {
                mem_bytes,
                page_size,
                snapshots: a.snapshots,
                ..SyntheticParams::default()
            };
            // The codec's page size rules first, so its message names the problem.
            let cfg = settings.config(page_size)?;
            params.validate()?;
            let mut budget = synthetic::memory_budget(&params);
            budget.extend(memory_budget(
                &cfg,
                a.decoder.mode(),
                mem_bytes,
                a.snapshots,
                &choice,
                a.encoder.fallback,
            ));
            budget.check("--synthetic-mib or --cache-mib")?;
            Box::new(SyntheticSeries::new(params, a.seed)?)
        }
    };
    let cfg = settings.config(source.page_size())?;

    let mut progress = Bar::new(source.snapshots() as u64, "passes");
    let result = replay_with(
        source.as_mut(),
        cfg,
        a.decoder.mode(),
        &choice,
        a.encoder.fallback,
        &mut progress,
    );
    progress.finish();
    let report = result?;

    print!("{}", report.table());
    if let Some(path) = &a.json {
        report.write_json(path)?;
    }
    Ok(())
}
