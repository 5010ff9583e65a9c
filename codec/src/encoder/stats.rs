//! Counters the encoder keeps, by record kind and in total.

/// Pages and record bytes of one record kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KindStats {
    pub pages: u64,
    /// Record bytes before frame compression.
    pub bytes: u64,
}

impl KindStats {
    #[inline]
    pub(crate) fn add(&mut self, bytes: usize) {
        self.pages += 1;
        self.bytes += bytes as u64;
    }
}

/// What the encoder has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct EncoderStats {
    pub zero: KindStats,
    pub dup: KindStats,
    /// Pages sent whole: RAW records, and PLAIN ones (which take no cache slot).
    pub raw: KindStats,
    /// Whole-page deltas (PATCH records, and DELTA records where the base is another
    /// page's slot).
    pub delta: KindStats,
    pub blocks: KindStats,
    /// Blocks inside BLOCKS records, by kind.
    pub block_zero: u64,
    pub block_ref: u64,
    pub block_literal: u64,
    pub block_delta: u64,
    /// Cache hits: whole-page duplicates plus block references.
    pub cache_hits: u64,
    /// Pages sent as a delta (whole-page or with at least one delta block).
    pub delta_uses: u64,
    /// Page bytes handed to the encoder.
    pub bytes_in: u64,
    /// Bytes of all frames and the stream header written.
    pub bytes_out: u64,
    pub frames: u64,
    pub frames_lz4: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub iterations: u64,
}

impl EncoderStats {
    /// Pages encoded.
    pub fn pages(&self) -> u64 {
        self.zero.pages + self.dup.pages + self.raw.pages + self.delta.pages + self.blocks.pages
    }
}
