//! Shared by the criterion benchmarks and the comparison harness: page sets to measure on,
//! taken from a snapshot series (real traces) or the built-in synthetic workload.

use std::path::Path;

use anyhow::{bail, Result};
use pagewire_runner::migrate::lanes::lane_of;
use pagewire_runner::{SnapshotDir, SnapshotSource, SyntheticParams, SyntheticSeries};

pub mod auto;
pub mod codecs;

/// The pages a migration would send: pass 0 is every page of the first snapshot, each later
/// pass the pages that changed since the snapshot before.
pub struct PageSet {
    pub name: String,
    pub page_size: usize,
    pub mem_bytes: usize,
    /// `(pfn, offset into data)` per pass.
    pub passes: Vec<Vec<(u64, usize)>>,
    /// Page contents, back to back.
    pub data: Vec<u8>,
}

impl PageSet {
    /// Page bytes of entry `(pfn, offset)`.
    pub fn page(&self, offset: usize) -> &[u8] {
        &self.data[offset..offset + self.page_size]
    }

    /// The passes of lane `lane` of `lanes`: its pages only, split by the rule of
    /// `pagewire send --lanes` (`lane_of`).
    pub fn lane_passes(&self, lane: usize, lanes: usize) -> Vec<Vec<(u64, usize)>> {
        self.passes
            .iter()
            .map(|p| {
                p.iter()
                    .copied()
                    .filter(|&(pfn, _)| lane_of(pfn, lanes as u32) == lane)
                    .collect()
            })
            .collect()
    }

    /// Bytes that hold any codec's stream of one pass of this set: its memory and a
    /// quarter more.
    pub fn stream_room(&self) -> usize {
        self.mem_bytes + self.mem_bytes / 4
    }

    /// Pages in passes `range`.
    pub fn pages_in(&self, passes: std::ops::Range<usize>) -> usize {
        self.passes[passes].iter().map(Vec::len).sum()
    }

    /// Reads up to `max_passes` snapshots of `source`.
    pub fn from_source(
        name: String,
        source: &mut dyn SnapshotSource,
        max_passes: usize,
    ) -> Result<PageSet> {
        let ps = source.page_size();
        let mem = source.mem_bytes();
        let n = source.snapshots().min(max_passes);
        if n == 0 {
            bail!("{name}: no snapshots");
        }
        let mut prev = vec![0u8; mem];
        let mut cur = vec![0u8; mem];
        let mut set = PageSet {
            name,
            page_size: ps,
            mem_bytes: mem,
            passes: Vec::new(),
            data: Vec::new(),
        };
        for i in 0..n {
            source.read(i, &mut cur)?;
            let mut pass = Vec::new();
            for (pfn, page) in cur.chunks_exact(ps).enumerate() {
                if i == 0 || page != &prev[pfn * ps..(pfn + 1) * ps] {
                    pass.push((pfn as u64, set.data.len()));
                    set.data.extend_from_slice(page);
                }
            }
            set.passes.push(pass);
            std::mem::swap(&mut prev, &mut cur);
        }
        Ok(set)
    }

    /// The built-in synthetic series (`pagewire replay`'s default workload).
    pub fn synthetic(mem_mib: usize, passes: usize, seed: u64) -> Result<PageSet> {
        let params = SyntheticParams {
            mem_bytes: mem_mib << 20,
            snapshots: passes,
            ..SyntheticParams::default()
        };
        let mut s = SyntheticSeries::new(params, seed)?;
        PageSet::from_source(format!("synthetic {mem_mib} MiB"), &mut s, passes)
    }

    /// One pass of `pages` zero pages whose memory was written before (as guest memory the
    /// guest zeroed is): pages never written would all read the kernel's one shared zero
    /// page, from the CPU's cache.
    pub fn written_zeros(pages: usize, ps: usize) -> PageSet {
        let mut data = vec![0xa5u8; pages * ps];
        std::hint::black_box(&mut data);
        data.fill(0);
        PageSet {
            name: "zero pages".into(),
            page_size: ps,
            mem_bytes: pages * ps,
            passes: vec![(0..pages).map(|p| (p as u64, p * ps)).collect()],
            data: std::hint::black_box(data),
        }
    }

    /// A snapshot series folder.
    pub fn from_dir(dir: &Path, passes: usize) -> Result<PageSet> {
        let mut d = SnapshotDir::open(dir)?;
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        PageSet::from_source(name, &mut d, passes)
    }
}
