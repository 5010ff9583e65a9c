//! The records of a frame body: their typed tags and block kinds, the parser (every check a
//! record needs happens here, so the decoder's validation pass and its apply pass see
//! exactly the same verdicts) and the writer the encoder fills a body with.

use super::delta;
use super::varint;
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

/// What a record parser needs to know about the stream so far; advanced record by record.
#[derive(Clone, Copy)]
pub struct ParseState {
    pub page_size: usize,
    pub blocks_per_page: usize,
    pub capacity: u64,
    /// Pages inserted into the cache before the record being parsed.
    pub inserted: u64,
    /// The pfn a record's zigzag delta is relative to (0 at the start of every frame).
    pub next_pfn: u64,
}

/// One parsed record, borrowing its payload from the frame body.
#[derive(Debug)]
pub enum Record<'b> {
    Zero {
        pfn: u64,
    },
    Dup {
        pfn: u64,
        age: u64,
    },
    Raw {
        pfn: u64,
        bytes: &'b [u8],
    },
    Delta {
        pfn: u64,
        age: u64,
        rle: &'b [u8],
        /// PATCH: the result replaces the base in its slot; DELTA: it fills a new slot.
        in_place: bool,
    },
    Blocks {
        pfn: u64,
        kinds: [BlockKind; MAX_BLOCKS_PER_PAGE],
        base_age: Option<u64>,
        payload: &'b [u8],
    },
    IterationEnd {
        iteration: u64,
    },
    Blob {
        tag: u32,
        data: &'b [u8],
    },
    End {
        page_records: u64,
    },
}

/// One block of a BLOCKS record.
pub enum BlockItem<'b> {
    Zero,
    Ref { age: u64, block: usize },
    Literal(&'b [u8]),
    Delta(&'b [u8]),
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

fn take<'b>(body: &'b [u8], pos: &mut usize, len: usize) -> Result<&'b [u8]> {
    let end = pos.checked_add(len).ok_or(Error::LengthOutOfRange)?;
    let s = body.get(*pos..end).ok_or(Error::Truncated)?;
    *pos = end;
    Ok(s)
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

fn age(body: &[u8], pos: &mut usize, st: &ParseState) -> Result<u64> {
    let age = varint::get(body, pos)?;
    slot_for_age(st.inserted, st.capacity, age)?;
    Ok(age)
}

/// Reads a block's item from a BLOCKS payload at `*pos`, checking it fully.
pub fn block_item<'b>(
    payload: &'b [u8],
    pos: &mut usize,
    kind: BlockKind,
    st: &ParseState,
) -> Result<BlockItem<'b>> {
    let bs = st.page_size / st.blocks_per_page;
    Ok(match kind {
        BlockKind::Zero => BlockItem::Zero,
        BlockKind::Ref => {
            let r = varint::get(payload, pos)?;
            let (age, block) = block_ref_target(r, st.blocks_per_page as u64);
            slot_for_age(st.inserted, st.capacity, age)?;
            BlockItem::Ref { age, block }
        }
        BlockKind::Literal => BlockItem::Literal(take(payload, pos, bs)?),
        BlockKind::Delta => {
            let n = delta::check(&payload[*pos..], bs)?;
            BlockItem::Delta(take(payload, pos, n)?)
        }
    })
}

/// Parses the record at `*pos`, checks it against `st` and advances both.
pub fn parse<'b>(body: &'b [u8], pos: &mut usize, st: &mut ParseState) -> Result<Record<'b>> {
    let tag = RecordTag::try_from(*body.get(*pos).ok_or(Error::Truncated)?)?;
    *pos += 1;
    let pfn = if tag.is_page() {
        let code = varint::get(body, pos)?;
        let pfn = st.next_pfn.wrapping_add(varint::unzigzag(code) as u64);
        st.next_pfn = pfn.wrapping_add(1);
        pfn
    } else {
        0
    };
    let rec = match tag {
        RecordTag::Zero => Record::Zero { pfn },
        RecordTag::Dup => Record::Dup {
            pfn,
            age: age(body, pos, st)?,
        },
        RecordTag::Raw => Record::Raw {
            pfn,
            bytes: take(body, pos, st.page_size)?,
        },
        RecordTag::Delta | RecordTag::Patch => {
            let age = age(body, pos, st)?;
            let n = delta::check(&body[*pos..], st.page_size)?;
            Record::Delta {
                pfn,
                age,
                rle: take(body, pos, n)?,
                in_place: tag == RecordTag::Patch,
            }
        }
        RecordTag::Blocks => parse_blocks(body, pos, st, pfn)?,
        RecordTag::IterationEnd => Record::IterationEnd {
            iteration: varint::get(body, pos)?,
        },
        RecordTag::Blob => {
            let blob_tag = varint::get_max(body, pos, u64::from(u32::MAX))? as u32;
            let len = varint::get_max(body, pos, body.len() as u64)? as usize;
            Record::Blob {
                tag: blob_tag,
                data: take(body, pos, len)?,
            }
        }
        RecordTag::End => Record::End {
            page_records: varint::get(body, pos)?,
        },
    };
    if matches!(
        rec,
        Record::Raw { .. }
            | Record::Delta {
                in_place: false,
                ..
            }
            | Record::Blocks { .. }
    ) {
        st.inserted += 1;
    }
    Ok(rec)
}

/// The rest of a BLOCKS record after its pfn: kinds, the base age when a block is a delta,
/// then every block's item, each checked.
fn parse_blocks<'b>(
    body: &'b [u8],
    pos: &mut usize,
    st: &ParseState,
    pfn: u64,
) -> Result<Record<'b>> {
    let bpp = st.blocks_per_page;
    let kinds = unpack_kinds(body.get(*pos..).unwrap_or(&[]), bpp)?;
    *pos += kinds_len(bpp);
    let base_age = if kinds[..bpp].contains(&BlockKind::Delta) {
        Some(age(body, pos, st)?)
    } else {
        None
    };
    let start = *pos;
    for &k in &kinds[..bpp] {
        block_item(body, pos, k, st)?;
    }
    Ok(Record::Blocks {
        pfn,
        kinds,
        base_age,
        payload: &body[start..*pos],
    })
}

/// A frame body being filled with records, front to back. The writer checks nothing: the
/// encoder keeps room for the worst case of each record before it starts one (a page and
/// `RECORD_OVERHEAD`, or a small record), which is what makes the indexing here safe.
pub struct BodyWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> BodyWriter<'a> {
    /// An empty body over `buf` (its capacity).
    pub fn new(buf: &'a mut [u8]) -> Self {
        BodyWriter { buf, len: 0 }
    }

    /// Bytes written so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first record.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes still free.
    #[inline]
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// The records written so far.
    #[inline]
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Empties the body for the next frame.
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Opens a page record: its tag and the pfn's zigzag code. Returns where the record
    /// starts, so the caller can count its bytes.
    #[inline]
    pub fn page(&mut self, tag: RecordTag, pfn_code: u64) -> usize {
        let start = self.len;
        self.buf[start] = tag as u8;
        self.len += 1;
        self.varint(pfn_code);
        start
    }

    /// A record of a tag and one varint: ITERATION_END or END.
    pub fn counter(&mut self, tag: RecordTag, value: u64) {
        self.buf[self.len] = tag as u8;
        self.len += 1;
        self.varint(value);
    }

    /// A BLOB record.
    pub fn blob(&mut self, blob_tag: u32, data: &[u8]) {
        self.counter(RecordTag::Blob, u64::from(blob_tag));
        self.varint(data.len() as u64);
        self.bytes(data);
    }

    /// Appends a varint.
    #[inline]
    pub fn varint(&mut self, value: u64) {
        varint::put(self.buf, &mut self.len, value);
    }

    /// Appends bytes as they are.
    #[inline]
    pub fn bytes(&mut self, data: &[u8]) {
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    /// Appends the packed kinds of a BLOCKS record.
    pub fn kinds(&mut self, kinds: &[BlockKind]) {
        for four in kinds.chunks(KINDS_PER_BYTE) {
            self.buf[self.len] = pack_kinds(four);
            self.len += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(inserted: u64) -> ParseState {
        ParseState {
            page_size: 4096,
            blocks_per_page: 4,
            capacity: 2,
            inserted,
            next_pfn: 0,
        }
    }

    #[test]
    fn pfns_are_relative_within_a_frame() {
        // ZERO pfn 10, ZERO pfn 11, ZERO pfn 5 (zigzag(-7) = 13)
        let body = [0x01, 20, 0x01, 0, 0x01, 13];
        let mut s = st(0);
        let mut pos = 0;
        let mut pfns = [0u64; 3];
        for p in &mut pfns {
            match parse(&body, &mut pos, &mut s) {
                Ok(Record::Zero { pfn }) => *p = pfn,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pfns, [10, 11, 5]);
        assert_eq!(pos, body.len());
    }

    #[test]
    fn inserting_records_advance_the_cache_counter() {
        let mut body = [1u8; 4101];
        body[..2].copy_from_slice(&[0x03, 0x00]);
        body[4098..].copy_from_slice(&[0x02, 0x00, 0x01]); // DUP age 1: valid after the RAW
        let mut s = st(0);
        let mut pos = 0;
        assert!(matches!(
            parse(&body, &mut pos, &mut s),
            Ok(Record::Raw { pfn: 0, .. })
        ));
        assert_eq!(s.inserted, 1);
        assert!(matches!(
            parse(&body, &mut pos, &mut s),
            Ok(Record::Dup { pfn: 1, age: 1 })
        ));
        assert_eq!(s.inserted, 1);
    }

    #[test]
    fn blocks_kinds_and_base() {
        // kinds: block0 literal... use zero, zero, zero, delta -> 0b11_00_00_00, base age 1,
        // delta "00 01" (unchanged)
        let body = [0x05, 0x00, 0xc0, 0x01, 0x00, 0x01];
        let mut pos = 0;
        match parse(&body, &mut pos, &mut st(1)) {
            Ok(Record::Blocks {
                kinds,
                base_age,
                payload,
                ..
            }) => {
                assert_eq!(
                    &kinds[..4],
                    &[
                        BlockKind::Zero,
                        BlockKind::Zero,
                        BlockKind::Zero,
                        BlockKind::Delta
                    ]
                );
                assert_eq!(base_age, Some(1));
                assert_eq!(payload, &[0x00, 0x01]);
            }
            other => panic!("{other:?}"),
        }
        // the same with no page cached: the base is an empty slot
        assert_eq!(
            parse(&body, &mut 0, &mut st(0)).err(),
            Some(Error::EmptySlot)
        );
        // unused kind bits set with 2 blocks per page
        let mut two = st(1);
        two.blocks_per_page = 2;
        assert!(matches!(
            parse(&[0x05, 0x00, 0x10], &mut 0, &mut two),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn tags_and_kinds_round_trip_their_bytes() {
        for byte in 0..=255u8 {
            if let Ok(tag) = RecordTag::try_from(byte) {
                assert_eq!(tag as u8, byte);
                assert_eq!(tag.is_page(), byte <= 0x06);
            }
        }
        let tags = (0..=255u8).filter(|&b| RecordTag::try_from(b).is_ok());
        assert_eq!(tags.count(), 9);
        assert_eq!(
            RecordTag::try_from(0x07),
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
    fn the_writer_writes_what_the_parser_reads() {
        let mut buf = [0u8; 64];
        let mut w = BodyWriter::new(&mut buf);
        assert!(w.is_empty());
        assert_eq!(w.page(RecordTag::Zero, varint::zigzag(3)), 0);
        w.page(RecordTag::Dup, 0);
        w.varint(1);
        w.blob(7, b"abc");
        w.counter(RecordTag::End, 2);
        assert_eq!(w.room(), 64 - w.len());
        let body = w.written().to_vec();
        let mut s = st(1);
        let mut pos = 0;
        assert!(matches!(
            parse(&body, &mut pos, &mut s),
            Ok(Record::Zero { pfn: 3 })
        ));
        assert!(matches!(
            parse(&body, &mut pos, &mut s),
            Ok(Record::Dup { pfn: 4, age: 1 })
        ));
        assert!(matches!(
            parse(&body, &mut pos, &mut s),
            Ok(Record::Blob {
                tag: 7,
                data: b"abc"
            })
        ));
        assert!(matches!(
            parse(&body, &mut pos, &mut s),
            Ok(Record::End { page_records: 2 })
        ));
        assert_eq!(pos, body.len());
        w.clear();
        assert!(w.is_empty());
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
