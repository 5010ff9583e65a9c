//! Snapshot series: guest memory as a sequence of full snapshots, the input of `replay`
//! and `simulate`. A series comes from a folder on disk ([`manifest`]: `manifest.json` and
//! raw snapshot files, as `pagewire trace capture` writes them and the real traces expand
//! to) or from the deterministic generator ([`synthetic`]), and is read through one trait,
//! [`SnapshotSource`].

pub mod manifest;
pub mod synthetic;

use anyhow::Result;

pub use manifest::{Manifest, SnapshotDir, MANIFEST_FILE};
pub use synthetic::{SplitMix64, SyntheticParams, SyntheticSeries};

/// A series of memory snapshots to replay, read in order, at most two held at once.
pub trait SnapshotSource {
    /// One line saying what the series is.
    fn describe(&self) -> String;
    /// Page size in bytes.
    fn page_size(&self) -> usize;
    /// Bytes of memory per snapshot.
    fn mem_bytes(&self) -> usize;
    /// Snapshots in the series.
    fn snapshots(&self) -> usize;
    /// Time between snapshots, if known.
    fn interval_ms(&self) -> Option<u64> {
        None
    }
    /// Writes snapshot `i` into `buf` (`mem_bytes` long). Called for i = 0, 1, 2, ... in order.
    fn read(&mut self, i: usize, buf: &mut [u8]) -> Result<()>;
}
