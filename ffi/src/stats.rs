//! Counters as C structs: copies of the codec's, with a layout of their own so that the ABI
//! does not move when the codec's structs do. The copies name every field of the codec's
//! structs, so a counter added there is a compile error here, not a silent omission.

use pagewire::{DecoderStats, EncoderStats, KindStats};

/// Pages and record bytes of one record kind. 16 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct pagewire_kind_stats {
    pub pages: u64,
    /// Record bytes before frame compression.
    pub bytes: u64,
}

/// What an encoder has done so far. 192 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct pagewire_encoder_stats {
    /// Pages sent as ZERO records.
    pub zero: pagewire_kind_stats,
    /// Pages sent as a reference to an identical cached page.
    pub dup: pagewire_kind_stats,
    /// Pages sent whole.
    pub raw: pagewire_kind_stats,
    /// Pages sent as an XOR/RLE delta against their previous version.
    pub delta: pagewire_kind_stats,
    /// Pages sent as a per-block mix.
    pub blocks: pagewire_kind_stats,
    /// Blocks inside block-mix records, by kind.
    pub block_zero: u64,
    pub block_ref: u64,
    pub block_literal: u64,
    pub block_delta: u64,
    /// Cache hits: whole-page duplicates plus block references.
    pub cache_hits: u64,
    /// Pages sent as a delta (whole page or at least one block).
    pub delta_uses: u64,
    /// Page bytes handed in.
    pub bytes_in: u64,
    /// Bytes written: stream header and frames.
    pub bytes_out: u64,
    pub frames: u64,
    /// Frames whose body went out LZ4-compressed.
    pub frames_lz4: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Iterations ended.
    pub iterations: u64,
    /// Pages encoded (the sum of the five kinds).
    pub pages: u64,
}

/// What a decoder has done so far. 40 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct pagewire_decoder_stats {
    /// Pages delivered.
    pub pages: u64,
    pub frames: u64,
    /// Bytes consumed: stream header and frames.
    pub bytes_in: u64,
    pub blobs: u64,
    pub iterations: u64,
}

impl From<KindStats> for pagewire_kind_stats {
    fn from(k: KindStats) -> Self {
        let KindStats { pages, bytes } = k;
        pagewire_kind_stats { pages, bytes }
    }
}

impl From<&EncoderStats> for pagewire_encoder_stats {
    fn from(s: &EncoderStats) -> Self {
        // Every field named (no `..`): a counter added to the codec fails to compile here
        // until the C struct decides about it.
        let EncoderStats {
            zero,
            dup,
            raw,
            delta,
            blocks,
            block_zero,
            block_ref,
            block_literal,
            block_delta,
            cache_hits,
            delta_uses,
            bytes_in,
            bytes_out,
            frames,
            frames_lz4,
            blobs,
            blob_bytes,
            iterations,
        } = *s;
        pagewire_encoder_stats {
            zero: zero.into(),
            dup: dup.into(),
            raw: raw.into(),
            delta: delta.into(),
            blocks: blocks.into(),
            block_zero,
            block_ref,
            block_literal,
            block_delta,
            cache_hits,
            delta_uses,
            bytes_in,
            bytes_out,
            frames,
            frames_lz4,
            blobs,
            blob_bytes,
            iterations,
            pages: s.pages(),
        }
    }
}

impl From<&DecoderStats> for pagewire_decoder_stats {
    fn from(s: &DecoderStats) -> Self {
        // as above: every field named
        let DecoderStats {
            pages,
            frames,
            bytes_in,
            blobs,
            iterations,
        } = *s;
        pagewire_decoder_stats {
            pages,
            frames,
            bytes_in,
            blobs,
            iterations,
        }
    }
}
