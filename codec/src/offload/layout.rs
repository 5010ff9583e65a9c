//! The fixed layout of the shared region: header, control words, descriptors, completions.
//! Every number here is part of the protocol (`docs/OFFLOAD.md`); changing one is a new
//! [`OFFLOAD_VERSION`].

use bytemuck::{Pod, Zeroable};

use crate::config::Config;
use crate::encoder::Features;

/// `"PWOF"` read as a native little-endian `u32`: the first word of every region.
pub const OFFLOAD_MAGIC: u32 = u32::from_le_bytes(*b"PWOF");
/// Protocol version written by this crate.
pub const OFFLOAD_VERSION: u32 = 1;

/// Bytes before the first ring: header, control words, stats block.
pub const CONTROL_LEN: usize = 1024;
/// Byte offsets of the control words. Each index sits in its own 64-byte line, so the two
/// sides never write the same cache line.
pub mod ctrl {
    /// Submission tail: host writes (Release), device reads (Acquire).
    pub const SQ_TAIL: usize = 128;
    /// Submission head: device writes (Release) once a descriptor and its data are done with.
    pub const SQ_HEAD: usize = 192;
    /// Completion tail: device writes (Release) after filling the entry and the output bytes.
    pub const CQ_TAIL: usize = 256;
    /// Completion head: host writes (Release) once it has read an entry.
    pub const CQ_HEAD: usize = 320;
    /// Output bytes produced (free-running): device writes (Release), for inspection only.
    pub const OUT_TAIL: usize = 384;
    /// Output bytes released (free-running): host writes (Release) after copying them out.
    pub const OUT_HEAD: usize = 448;
    /// [`DeviceState`](super::super::DeviceState): device writes (Release).
    pub const DEVICE_STATE: usize = 512;
    /// Why the device failed ([`OffloadError::code`](super::super::OffloadError::code)), valid
    /// in state FAILED.
    pub const DEVICE_ERROR: usize = 516;
    /// Incremented by the device on every poll (Relaxed): shows it is alive.
    pub const HEARTBEAT: usize = 520;
    /// Host command ([`HOST_CMD_STOP`](super::HOST_CMD_STOP)): host writes (Release).
    pub const HOST_CMD: usize = 576;
    /// Encoder counters, [`STATS_WORDS`](super::STATS_WORDS) words, updated before every
    /// completion is published.
    pub const STATS: usize = 640;
}

/// Host command: stop serving and exit.
pub const HOST_CMD_STOP: u32 = 1;

/// Words of the stats block: 23 counters of `EncoderStats` as (low, high) word pairs.
pub const STATS_WORDS: usize = 46;

/// Descriptor flags: exactly one operation per descriptor.
pub mod flags {
    /// Encode the page at `data_offset` (`data_len` = page size) as page `pfn`.
    pub const PAGE: u32 = 1 << 0;
    /// End the current iteration (flushes the frame).
    pub const END_ITERATION: u32 = 1 << 1;
    /// Append the blob at `data_offset`, `data_len` bytes, tagged `blob_tag`.
    pub const BLOB: u32 = 1 << 2;
    /// Finish the stream; the device stops after publishing this completion.
    pub const FINISH: u32 = 1 << 3;
    /// Every defined operation bit.
    pub const ALL: u32 = PAGE | END_ITERATION | BLOB | FINISH;
}

/// Completion status codes ([`Completion::status`]).
pub mod status {
    /// Done.
    pub const OK: u32 = 0;
    /// No operation bit, several, or an unknown bit set.
    pub const BAD_FLAGS: u32 = 1;
    /// `data_offset`/`data_len` reach outside the page area or are not 4-byte aligned.
    pub const BAD_RANGE: u32 = 2;
    /// A page whose `data_len` is not the page size, or a blob too large for a frame.
    pub const BAD_LENGTH: u32 = 3;
    /// `seq` is not the descriptor's position in the ring (stale or misplaced entry).
    pub const BAD_SEQ: u32 = 4;
    /// A reserved field, or a field the operation does not use, is not zero.
    pub const BAD_RESERVED: u32 = 5;
    /// The encoder refused the call (should not happen with a validated descriptor).
    pub const ENCODER: u32 = 6;
}

/// Region header, written by the host before the device starts, read once by the device.
/// 128 bytes at offset 0; every field a native-endian (little-endian) `u32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct RegionHeader {
    /// [`OFFLOAD_MAGIC`].
    pub magic: u32,
    /// [`OFFLOAD_VERSION`].
    pub version: u32,
    /// Length of the whole region in bytes.
    pub region_len: u32,
    /// Byte offset of the submission ring.
    pub sq_offset: u32,
    /// Entries of the submission ring (power of two).
    pub sq_entries: u32,
    /// Byte offset of the completion ring.
    pub cq_offset: u32,
    /// Entries of the completion ring (power of two).
    pub cq_entries: u32,
    /// Byte offset and length of the page area (pages and blobs the host hands in).
    pub page_area_offset: u32,
    pub page_area_len: u32,
    /// Byte offset and length (power of two) of the output area (encoded stream bytes).
    pub out_area_offset: u32,
    pub out_area_len: u32,
    /// The codec [`Config`], field by field.
    pub page_size: u32,
    pub blocks_per_page: u32,
    pub cache_pages: u32,
    pub delta_threshold: u32,
    pub frame_bytes: u32,
    pub lz4: u32,
    pub stream_id: u32,
    /// Encoder [`Features`]: bit 0 CBR, bit 1 deltas.
    pub features: u32,
    /// Zero.
    pub reserved: [u32; 13],
}

/// Bytes of [`RegionHeader`].
pub const HEADER_BYTES: usize = core::mem::size_of::<RegionHeader>();

impl RegionHeader {
    /// The codec configuration the header carries (not yet validated).
    pub fn config(&self) -> Config {
        Config {
            page_size: self.page_size,
            blocks_per_page: self.blocks_per_page.min(255) as u8,
            cache_pages: self.cache_pages,
            delta_threshold: self.delta_threshold,
            frame_bytes: self.frame_bytes,
            lz4: self.lz4 != 0,
            stream_id: self.stream_id,
        }
    }

    /// The encoder features the header carries.
    pub fn features(&self) -> Features {
        Features {
            cbr: self.features & 1 != 0,
            delta: self.features & 2 != 0,
        }
    }

    /// Writes `cfg` and `features` into the header fields.
    pub fn set_codec(&mut self, cfg: &Config, features: Features) {
        self.page_size = cfg.page_size;
        self.blocks_per_page = u32::from(cfg.blocks_per_page);
        self.cache_pages = cfg.cache_pages;
        self.delta_threshold = cfg.delta_threshold;
        self.frame_bytes = cfg.frame_bytes;
        self.lz4 = u32::from(cfg.lz4);
        self.stream_id = cfg.stream_id;
        self.features = u32::from(features.cbr) | u32::from(features.delta) << 1;
    }
}

/// A submission descriptor: 32 bytes, written by the host into the submission ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct SubmitDesc {
    /// Page frame number (PAGE only, else 0).
    pub pfn: u64,
    /// Byte offset of the page or blob within the page area (4-byte aligned).
    pub data_offset: u32,
    /// Bytes of the page (the page size) or blob.
    pub data_len: u32,
    /// Exactly one of the [`flags`].
    pub flags: u32,
    /// Blob tag (BLOB only, else 0).
    pub blob_tag: u32,
    /// The descriptor's free-running position in the ring; the device checks it.
    pub seq: u32,
    /// Zero.
    pub reserved: u32,
}

/// A completion: 32 bytes, written by the device into the completion ring, one per
/// descriptor, in submission order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Completion {
    /// `seq` of the descriptor this answers (its ring position, even if the entry lied).
    pub seq: u32,
    /// One of the [`status`] codes.
    pub status: u32,
    /// Where this descriptor's stream bytes start in the output area (0 when none).
    pub out_offset: u32,
    /// How many stream bytes it produced (usually 0 for a page).
    pub out_len: u32,
    /// Free-running output position after these bytes: store it to `OUT_HEAD` once they
    /// are copied out.
    pub out_end: u32,
    /// The descriptor's flags as the device read them.
    pub flags: u32,
    /// For a rejected descriptor, the offending value (e.g. the bad `data_len`).
    pub detail: u32,
    /// Zero.
    pub reserved: u32,
}

/// Words per descriptor and per completion.
pub const ENTRY_WORDS: usize = 8;
/// Bytes per descriptor and per completion.
pub const ENTRY_BYTES: usize = ENTRY_WORDS * 4;
