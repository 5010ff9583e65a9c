//! The records of a frame body: their typed tags and block kinds and the rules both ends
//! share (how kinds are packed, how a block reference and an age name a cached page); the
//! parser is in `parse`, the writer the encoder fills a body with in `write`.

mod parse;
mod write;

pub use parse::{
    block_item, block_item_validated, blocks_to_last_ref, parse, parse_validated, BlockItem,
    ParseState, Record,
};
pub use write::BodyWriter;

use crate::config::MAX_BLOCKS_PER_PAGE;
use crate::error::{Error, Result};

/// The one-byte tag that opens every record (see `docs/FORMAT.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordTag {
    /// An all-zero page: `pfn`.
    Zero = 0x01,
    /// A page equal to a cached page: `pfn age`.
    Dup = 0x02,
    /// A page sent whole: `pfn bytes[page_size]`.
    Raw = 0x03,
    /// XOR/RLE delta against a cached page, filling a new slot: `pfn age delta`.
    Delta = 0x04,
    /// Per-block mix: `pfn kinds [age] blocks...`.
    Blocks = 0x05,
    /// XOR/RLE delta against a cached page, whose slot then holds the result instead of a
    /// new slot taking it (format version 2): `pfn age delta`.
    Patch = 0x06,
    /// A page sent whole that takes no cache slot (its own slot retires, as for ZERO):
    /// `pfn bytes[page_size]`. What an encoder sends when its CPU, not the link, is the
    /// bottleneck: no copy into its cache, no hashing.
    Plain = 0x07,
    /// End of a pre-copy iteration: `iteration`.
    IterationEnd = 0x10,
    /// Opaque caller blob: `blob_tag len bytes[len]`.
    Blob = 0x11,
    /// End of stream: `page_records`.
    End = 0x12,
}

impl RecordTag {
    /// Page records carry a pfn right after the tag.
    pub const fn is_page(self) -> bool {
        matches!(
            self,
            RecordTag::Zero
                | RecordTag::Dup
                | RecordTag::Raw
                | RecordTag::Delta
                | RecordTag::Blocks
                | RecordTag::Patch
                | RecordTag::Plain
        )
    }
}

impl TryFrom<u8> for RecordTag {
    type Error = Error;

    fn try_from(byte: u8) -> Result<RecordTag> {
        Ok(match byte {
            0x01 => RecordTag::Zero,
            0x02 => RecordTag::Dup,
            0x03 => RecordTag::Raw,
            0x04 => RecordTag::Delta,
            0x05 => RecordTag::Blocks,
            0x06 => RecordTag::Patch,
            0x07 => RecordTag::Plain,
            0x10 => RecordTag::IterationEnd,
            0x11 => RecordTag::Blob,
            0x12 => RecordTag::End,
            _ => return Err(Error::Malformed("unknown record tag")),
        })
    }
}

/// The two-bit kind of each block of a BLOCKS record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockKind {
    /// All zero.
    Zero = 0,
    /// Equal to a block of a cached page: `ref`.
    Ref = 1,
    /// Sent whole.
    Literal = 2,
    /// XOR/RLE delta against the same block of the record's base page.
    Delta = 3,
}

impl BlockKind {
    /// The kind in the low two bits of `bits` (every two-bit value is a kind).
    pub const fn from_bits(bits: u8) -> BlockKind {
        match bits & 3 {
            0 => BlockKind::Zero,
            1 => BlockKind::Ref,
            2 => BlockKind::Literal,
            _ => BlockKind::Delta,
        }
    }
}

impl TryFrom<u8> for BlockKind {
    type Error = Error;

    fn try_from(byte: u8) -> Result<BlockKind> {
        if byte > 3 {
            return Err(Error::Malformed("block kind out of range"));
        }
        Ok(BlockKind::from_bits(byte))
    }
}

/// Block kinds packed into one byte of a BLOCKS record.
const KINDS_PER_BYTE: usize = 4;

/// Bytes of packed kinds for `blocks` blocks.
pub const fn kinds_len(blocks: usize) -> usize {
    blocks.div_ceil(KINDS_PER_BYTE)
}

/// Most bytes of packed kinds a record has.
pub const MAX_KINDS_LEN: usize = kinds_len(MAX_BLOCKS_PER_PAGE);

/// The bit position of block `b`'s kind inside its byte `b / 4`.
const fn kind_shift(b: usize) -> usize {
    2 * (b % KINDS_PER_BYTE)
}

/// Up to four kinds packed into one byte, the first in the low two bits.
fn pack_kinds(kinds: &[BlockKind]) -> u8 {
    kinds
        .iter()
        .enumerate()
        .fold(0, |byte, (b, &kind)| byte | (kind as u8) << kind_shift(b))
}

/// The kinds of `blocks` blocks packed at the front of `bytes`; the unused high bits of a
/// record with fewer than four blocks must be clear.
fn unpack_kinds(bytes: &[u8], blocks: usize) -> Result<[BlockKind; MAX_BLOCKS_PER_PAGE]> {
    let mut kinds = [BlockKind::Zero; MAX_BLOCKS_PER_PAGE];
    for (b, k) in kinds.iter_mut().enumerate().take(blocks) {
        let byte = *bytes.get(b / KINDS_PER_BYTE).ok_or(Error::Truncated)?;
        *k = BlockKind::from_bits(byte >> kind_shift(b));
    }
    let last = bytes
        .get(kinds_len(blocks).wrapping_sub(1))
        .copied()
        .unwrap_or(0);
    if blocks < KINDS_PER_BYTE && last >> kind_shift(blocks) != 0 {
        return Err(Error::Malformed("unused block kind bits set"));
    }
    Ok(kinds)
}

/// The cache age of the page a block reference names (`ref / blocks_per_page + 1`), and
/// the block inside it.
pub const fn block_ref_target(r: u64, blocks_per_page: u64) -> (u64, usize) {
    (r / blocks_per_page + 1, (r % blocks_per_page) as usize)
}

/// The block reference for block `block` of the cached page of age `age` (at least 1).
pub const fn block_ref(age: u64, block: usize, blocks_per_page: u64) -> u64 {
    (age - 1) * blocks_per_page + block as u64
}

/// The cache rule's address of a page by age: the slot of the page `age` insertions back,
/// checked against a cache of `capacity` slots after `inserted` insertions (1 is the page
/// inserted last; `EmptySlot` for 0 or beyond the insertions, `EvictedSlot` beyond the
/// capacity). Both ends and the parser use it, so they agree on every reference.
#[inline]
pub fn slot_for_age(inserted: u64, capacity: u64, age: u64) -> Result<usize> {
    if age == 0 || age > inserted {
        return Err(Error::EmptySlot);
    }
    if age > capacity {
        return Err(Error::EvictedSlot);
    }
    Ok(((inserted - age) % capacity) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_kinds_round_trip_their_bytes() {
        for byte in 0..=255u8 {
            if let Ok(tag) = RecordTag::try_from(byte) {
                assert_eq!(tag as u8, byte);
                assert_eq!(tag.is_page(), byte <= 0x07);
            }
        }
        let tags = (0..=255u8).filter(|&b| RecordTag::try_from(b).is_ok());
        assert_eq!(tags.count(), 10);
        assert_eq!(RecordTag::try_from(0x07), Ok(RecordTag::Plain));
        assert_eq!(
            RecordTag::try_from(0x08),
            Err(Error::Malformed("unknown record tag"))
        );
        for byte in 0..4u8 {
            assert_eq!(BlockKind::try_from(byte).map(|k| k as u8), Ok(byte));
        }
        assert!(BlockKind::try_from(4).is_err());
    }

    #[test]
    fn kinds_pack_as_the_spec_says() {
        use BlockKind::*;
        let eight = [Zero, Ref, Literal, Delta, Delta, Literal, Ref, Zero];
        let mut buf = [0u8; MAX_KINDS_LEN];
        let mut w = BodyWriter::new(&mut buf);
        w.kinds(&eight);
        assert_eq!(w.len(), MAX_KINDS_LEN);
        assert_eq!(buf, [0b11_10_01_00, 0b00_01_10_11]);
        assert_eq!(unpack_kinds(&buf, 8), Ok(eight));
        assert_eq!(kinds_len(1), 1);
        assert_eq!(kinds_len(4), 1);
        assert_eq!(MAX_KINDS_LEN, 2);
        assert_eq!(unpack_kinds(&[0b10], 1).map(|k| k[0]), Ok(Literal));
        assert!(unpack_kinds(&[0b0110], 1).is_err());
        assert_eq!(unpack_kinds(&[0], 8), Err(Error::Truncated));
    }

    #[test]
    fn ages_name_slots_by_the_cache_rule() {
        // 5 insertions into 3 slots: seqs 2,3,4 live in slots 2,0,1
        assert_eq!(slot_for_age(5, 3, 1), Ok(1));
        assert_eq!(slot_for_age(5, 3, 3), Ok(2));
        assert_eq!(slot_for_age(5, 3, 4), Err(Error::EvictedSlot));
        assert_eq!(slot_for_age(5, 3, 6), Err(Error::EmptySlot));
        assert_eq!(slot_for_age(5, 3, 0), Err(Error::EmptySlot));
        assert_eq!(block_ref_target(block_ref(3, 2, 4), 4), (3, 2));
    }
}
