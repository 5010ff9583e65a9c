//! Parsing the records of a frame body. Every check a record needs happens here, so the
//! decoder's validation pass and its apply pass see exactly the same verdicts.

use super::{block_ref_target, kinds_len, slot_for_age, unpack_kinds, BlockKind, RecordTag};
use crate::config::MAX_BLOCKS_PER_PAGE;
use crate::error::{Error, Result};
use crate::wire::delta;
use crate::wire::varint;

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
    /// RAW (`cached`: it fills a new cache slot) or PLAIN (it takes none).
    Raw {
        pfn: u64,
        bytes: &'b [u8],
        cached: bool,
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

fn take<'b>(body: &'b [u8], pos: &mut usize, len: usize) -> Result<&'b [u8]> {
    let end = pos.checked_add(len).ok_or(Error::LengthOutOfRange)?;
    let s = body.get(*pos..end).ok_or(Error::Truncated)?;
    *pos = end;
    Ok(s)
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

/// [`block_item`] for a payload that already passed it (the decoder's apply pass): a
/// delta block is not walked to find its end. Its slice runs to the end of the payload and
/// `*pos` stays at its start; applying it (`delta::apply`) returns its length, which the
/// caller adds to `*pos`.
#[inline]
pub fn block_item_validated<'b>(
    payload: &'b [u8],
    pos: &mut usize,
    kind: BlockKind,
    st: &ParseState,
) -> Result<BlockItem<'b>> {
    match kind {
        BlockKind::Delta => Ok(BlockItem::Delta(
            payload.get(*pos..).ok_or(Error::Truncated)?,
        )),
        _ => block_item(payload, pos, kind, st),
    }
}

/// Blocks up to and including the last reference among `kinds` (0 when none is): the
/// items a pass that looks only at references must walk.
pub fn blocks_to_last_ref(kinds: &[BlockKind]) -> usize {
    kinds
        .iter()
        .rposition(|&k| k == BlockKind::Ref)
        .map_or(0, |i| i + 1)
}

/// Parses the record at `*pos`, checks it against `st` and advances both.
pub fn parse<'b>(body: &'b [u8], pos: &mut usize, st: &mut ParseState) -> Result<Record<'b>> {
    parse_with(body, pos, st, true)
}

/// [`parse`] for a body that already passed it record by record (the decoder's apply
/// pass): a record that holds deltas is not walked here to find its end. A whole-page
/// delta's `rle`, and a BLOCKS record's `payload`, run to the end of the body, and `*pos`
/// stays at their start; applying the record tells its length, which the caller adds to
/// `*pos`.
pub fn parse_validated<'b>(
    body: &'b [u8],
    pos: &mut usize,
    st: &mut ParseState,
) -> Result<Record<'b>> {
    parse_with(body, pos, st, false)
}

#[inline(always)]
fn parse_with<'b>(
    body: &'b [u8],
    pos: &mut usize,
    st: &mut ParseState,
    walk_deltas: bool,
) -> Result<Record<'b>> {
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
        RecordTag::Raw | RecordTag::Plain => Record::Raw {
            pfn,
            bytes: take(body, pos, st.page_size)?,
            cached: tag == RecordTag::Raw,
        },
        RecordTag::Delta | RecordTag::Patch => {
            let age = age(body, pos, st)?;
            let rle = match walk_deltas {
                true => {
                    let n = delta::check(&body[*pos..], st.page_size)?;
                    take(body, pos, n)?
                }
                false => body.get(*pos..).ok_or(Error::Truncated)?,
            };
            Record::Delta {
                pfn,
                age,
                rle,
                in_place: tag == RecordTag::Patch,
            }
        }
        RecordTag::Blocks => parse_blocks(body, pos, st, pfn, walk_deltas)?,
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
        Record::Raw { cached: true, .. }
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
    walk_items: bool,
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
    if !walk_items {
        return Ok(Record::Blocks {
            pfn,
            kinds,
            base_age,
            payload: body.get(start..).ok_or(Error::Truncated)?,
        });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::record::BodyWriter;

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
}
