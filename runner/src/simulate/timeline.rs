//! What the simulated guest does to its memory over time: a [`Timeline`].
//!
//! A timeline is a sequence of snapshots: snapshot 0 at time 0 and snapshot k+1 one
//! interval after snapshot k. The pages that differ between two snapshots are taken as
//! written uniformly over that interval, each at its own time (in an order shuffled by a
//! hash of the pfn, so no address range is favoured). A written page takes its content from
//! the later snapshot at its write time; every other page keeps the content of the latest
//! snapshot at or before the current time.

use std::path::Path;

use anyhow::{bail, Result};

use crate::host_memory::Budget;
use crate::series::{synthetic, SnapshotDir, SnapshotSource, SyntheticParams, SyntheticSeries};
use crate::workload::Workload;

/// A guest's memory over simulated time: snapshots that can be replayed from the start as
/// often as needed, and the pages written between them.
pub trait Timeline {
    /// A short name for reports.
    fn name(&self) -> &str;
    /// Page size in bytes.
    fn page_size(&self) -> usize;
    /// Guest memory in bytes.
    fn mem_bytes(&self) -> usize;
    /// Length in seconds of interval `k` (from snapshot k to snapshot k+1).
    fn interval_s(&self, k: usize) -> f64;
    /// Goes back to snapshot 0.
    fn reset(&mut self) -> Result<()>;
    /// The latest snapshot stepped to.
    fn image(&self) -> &[u8];
    /// Steps to the next snapshot and returns the pfns written in the interval, ascending.
    /// Runs forever: a finite series repeats its steps (see [`SnapshotTimeline`]).
    fn step(&mut self) -> Result<Vec<u64>>;
}

/// The synthetic generator's parameters for a built-in workload (per one-second interval
/// unless `interval_s` says otherwise).
fn params(workload: Workload, mem_bytes: usize) -> SyntheticParams {
    let base = SyntheticParams {
        mem_bytes,
        snapshots: usize::MAX,
        ..SyntheticParams::default()
    };
    match workload {
        Workload::HotSet => SyntheticParams {
            hot_fraction: 0.03,
            hot_rewrite_probability: 0.95,
            warm_fraction: 0.03,
            warm_edit_probability: 0.3,
            free_fraction: 0.001,
            fill_fraction: 0.001,
            ..base
        },
        Workload::Database => SyntheticParams {
            hot_fraction: 0.002,
            hot_rewrite_probability: 0.9,
            warm_fraction: 0.6,
            warm_edit_probability: 0.12,
            free_fraction: 0.0005,
            fill_fraction: 0.001,
            ..base
        },
        Workload::Compile => SyntheticParams {
            hot_fraction: 0.02,
            hot_rewrite_probability: 0.8,
            warm_fraction: 0.08,
            warm_edit_probability: 0.4,
            free_fraction: 0.004,
            fill_fraction: 0.006,
            ..base
        },
        Workload::Idle => SyntheticParams {
            hot_fraction: 0.0005,
            hot_rewrite_probability: 0.9,
            warm_fraction: 0.01,
            warm_edit_probability: 0.1,
            free_fraction: 0.0001,
            fill_fraction: 0.0001,
            ..base
        },
    }
}

/// A built-in workload, as the synthetic generator writes it.
pub struct SyntheticTimeline {
    kind: Workload,
    params: SyntheticParams,
    seed: u64,
    series: SyntheticSeries,
}

impl SyntheticTimeline {
    /// `kind` over `mem_bytes` of memory, deterministic for a seed.
    pub fn new(kind: Workload, mem_bytes: usize, seed: u64) -> Result<Self> {
        let params = params(kind, mem_bytes);
        let series = SyntheticSeries::new(params.clone(), seed)?;
        Ok(SyntheticTimeline {
            kind,
            params,
            seed,
            series,
        })
    }
}

impl Timeline for SyntheticTimeline {
    fn name(&self) -> &str {
        self.kind.name()
    }

    fn page_size(&self) -> usize {
        self.params.page_size
    }

    fn mem_bytes(&self) -> usize {
        self.params.mem_bytes
    }

    fn interval_s(&self, k: usize) -> f64 {
        match self.kind {
            // busy for 3 s (a step every 0.5 s), then quiet for 6 s (a step every 2 s)
            Workload::Compile => {
                if k % 9 < 6 {
                    0.5
                } else {
                    2.0
                }
            }
            _ => 1.0,
        }
    }

    fn reset(&mut self) -> Result<()> {
        self.series = SyntheticSeries::new(self.params.clone(), self.seed)?;
        Ok(())
    }

    fn image(&self) -> &[u8] {
        self.series.image()
    }

    fn step(&mut self) -> Result<Vec<u64>> {
        Ok(self.series.step().to_vec())
    }
}

/// A snapshot series from disk (`pagewire replay`'s folder format, e.g. the real traces).
/// Past its last snapshot it starts over at snapshot 1: each page written in a repeated
/// interval gets that interval's content again, so the guest keeps writing at the traced
/// rate with traced contents.
pub struct SnapshotTimeline {
    name: String,
    dir: SnapshotDir,
    image: Vec<u8>,
    next: Vec<u8>,
    index: usize,
}

impl SnapshotTimeline {
    /// Opens a snapshot series folder.
    pub fn open(path: &Path) -> Result<Self> {
        let dir = SnapshotDir::open(path)?;
        if dir.manifest().snapshots.len() < 2 {
            bail!(
                "{}: a workload needs at least two snapshots",
                path.display()
            );
        }
        let name = series_name(path);
        let bytes = dir.manifest().mem_bytes as usize;
        let mut w = SnapshotTimeline {
            name,
            dir,
            image: vec![0; bytes],
            next: vec![0; bytes],
            index: 0,
        };
        w.reset()?;
        Ok(w)
    }
}

impl Timeline for SnapshotTimeline {
    fn name(&self) -> &str {
        &self.name
    }

    fn page_size(&self) -> usize {
        self.dir.manifest().page_size as usize
    }

    fn mem_bytes(&self) -> usize {
        self.image.len()
    }

    fn interval_s(&self, _k: usize) -> f64 {
        self.dir.manifest().interval_ms as f64 / 1000.0
    }

    fn reset(&mut self) -> Result<()> {
        self.dir.read(0, &mut self.image)?;
        self.index = 0;
        Ok(())
    }

    fn image(&self) -> &[u8] {
        &self.image
    }

    fn step(&mut self) -> Result<Vec<u64>> {
        let n = self.dir.manifest().snapshots.len();
        self.index = if self.index + 1 < n {
            self.index + 1
        } else {
            1
        };
        self.dir.read(self.index, &mut self.next)?;
        let ps = self.page_size();
        let changed = self
            .image
            .chunks_exact(ps)
            .zip(self.next.chunks_exact(ps))
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(pfn, _)| pfn as u64)
            .collect();
        std::mem::swap(&mut self.image, &mut self.next);
        Ok(changed)
    }
}

/// The memory a timeline holds: a built-in workload's synthetic series (`Some(kind)`), or a
/// snapshot series' two images (`None`), for `mem_bytes` of guest memory.
pub fn memory_budget(kind: Option<Workload>, mem_bytes: usize, name: &str) -> Budget {
    match kind {
        Some(k) => {
            let mut b = Budget::new();
            for (what, bytes) in synthetic::memory_budget(&params(k, mem_bytes)).items() {
                b.add(format!("{what} of {name}"), *bytes);
            }
            b
        }
        None => {
            let mut b = Budget::new();
            b.add_len(
                format!("the two snapshots of {name}"),
                mem_bytes.saturating_mul(2),
            );
            b
        }
    }
}

/// Memory of the group's web tier for a database tier of `big` bytes (see [`group`]).
pub fn web_tier_bytes(big: usize) -> usize {
    let page = 1usize << 20;
    (big / 2 / page).max(1) * page
}

/// A snapshot series' name in reports: its folder's name.
pub fn series_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(|| "trace".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// Timelines of the named built-in workloads, or of the snapshot series at `dir`.
pub fn open(
    dir: Option<&Path>,
    names: &[Workload],
    mem_bytes: usize,
    seed: u64,
) -> Result<Vec<Box<dyn Timeline>>> {
    match dir {
        Some(d) => Ok(vec![Box::new(SnapshotTimeline::open(d)?)]),
        None => names
            .iter()
            .map(
                |&b| Ok(Box::new(SyntheticTimeline::new(b, mem_bytes, seed)?) as Box<dyn Timeline>),
            )
            .collect(),
    }
}

/// The Synchronized Arrival group: a web tier half the size of the database tier it serves.
/// The database tier is the snapshot series at `dir`, or the built-in database as large as
/// the first of `timelines` (`mem_bytes` when there is none).
pub fn group(
    dir: Option<&Path>,
    timelines: &[Box<dyn Timeline>],
    mem_bytes: usize,
    seed: u64,
) -> Result<Vec<Box<dyn Timeline>>> {
    let big = timelines.first().map_or(mem_bytes, |w| w.mem_bytes());
    let web: Box<dyn Timeline> = Box::new(SyntheticTimeline::new(
        Workload::HotSet,
        web_tier_bytes(big),
        seed + 1,
    )?);
    let db: Box<dyn Timeline> = match dir {
        Some(d) => Box::new(SnapshotTimeline::open(d)?),
        None => Box::new(SyntheticTimeline::new(Workload::Database, big, seed)?),
    };
    Ok(vec![web, db])
}
