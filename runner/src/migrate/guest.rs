//! What the migration engine drives: the running guest at the source ([`SourceGuest`]) and
//! the guest being filled at the destination ([`DestGuest`], made by a [`GuestBuilder`]).
//! Memory moves page by page through the codec; everything else a guest has (vCPU
//! registers, device state) travels as opaque blobs that the guest saves and restores
//! itself. Our KVM VMM implements these traits (`vmm::Vm`, `vmm::Vmm`); a QEMU process or
//! a recorded series can implement them too.

use std::sync::Arc;

use anyhow::Result;

/// Reads pages of a running guest from any thread (a copy may be torn while the guest
/// runs; the dirty log reports such a page again).
pub trait PageRead: Send + Sync {
    /// Copies page `pfn` into `out` (one page).
    fn read_page(&self, pfn: u64, out: &mut [u8]) -> Result<()>;
}

/// A running guest the source side migrates.
pub trait SourceGuest {
    /// Guest memory in bytes: a multiple of the page size.
    fn mem_bytes(&self) -> u64;
    /// Page size in bytes: the unit of the dirty log and of the stream.
    fn page_size(&self) -> usize;
    /// Pages of memory.
    fn pages(&self) -> u64 {
        self.mem_bytes() / self.page_size() as u64
    }
    /// vCPUs: the destination builds as many, and takes one state blob per vCPU.
    fn vcpus(&self) -> u32;
    /// True while the guest runs.
    fn is_running(&self) -> bool;
    /// Copies page `pfn` into `out` (`page_size` bytes). While the guest runs the copy may
    /// be torn; the dirty log reports such a page again.
    fn read_page(&mut self, pfn: u64, out: &mut [u8]) -> Result<()>;
    /// Reads pages as [`SourceGuest::read_page`] does, from other threads (the lanes of a
    /// migration); `None` (the default) if the guest can be read from one thread only.
    fn page_reader(&self) -> Option<Arc<dyn PageRead>> {
        None
    }
    /// The pages written since the last call, ascending (the first call starts the log).
    fn take_dirty(&mut self) -> Result<Vec<u64>>;
    /// Stops the guest with a consistent state.
    fn pause(&mut self) -> Result<()>;
    /// Runs the paused guest again (a failed migration leaves the source running).
    fn resume(&mut self) -> Result<()>;
    /// The state that is not memory, while paused: one opaque blob per vCPU, in order, as
    /// the destination's [`DestGuest::restore_state`] takes them.
    fn save_state(&mut self) -> Result<Vec<Vec<u8>>>;
    /// A digest (XXH3-128) of all memory, while paused: the destination must reach the
    /// same before its copy may run.
    fn memory_digest(&mut self) -> Result<u128>;
}

/// Builds the destination's guest once the source has said what is coming.
pub trait GuestBuilder {
    /// The guest it builds.
    type Guest: DestGuest;
    /// The page size of the guests it builds (the source's must match).
    fn page_size(&self) -> usize;
    /// A guest of `mem_bytes` and `vcpus` that has not run; its memory reads as zeros.
    fn build(&self, mem_bytes: u64, vcpus: u32) -> Result<Self::Guest>;
}

/// A guest being filled at the destination; it runs only after [`DestGuest::start`],
/// which the engine calls only once everything has arrived and checks out.
pub trait DestGuest {
    /// Writes page `pfn` (`page_size` bytes, inside memory).
    fn write_page(&mut self, pfn: u64, data: &[u8]) -> Result<()>;
    /// The guest's memory as one flat buffer (page `pfn` at `pfn * page_size`), read and
    /// written only by the decoder until [`DestGuest::start`]: the engine then decodes in
    /// place and keeps no copy of the cache. `None` (the default) if the memory is not at
    /// hand as one piece: pages then go through [`DestGuest::write_page`], decoded through
    /// a cache copy.
    fn memory_mut(&mut self) -> Option<&mut [u8]> {
        None
    }
    /// Loads the blobs of the source's [`SourceGuest::save_state`], one per vCPU.
    fn restore_state(&mut self, blobs: &[Vec<u8>]) -> Result<()>;
    /// The digest of all memory, as [`SourceGuest::memory_digest`] computes it.
    fn memory_digest(&mut self) -> Result<u128>;
    /// Starts the guest.
    fn start(&mut self) -> Result<()>;
}
