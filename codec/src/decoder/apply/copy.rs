//! Cache copy: each page is rebuilt in the decoder's own cache (or scratch), then copied to
//! the destination.

use super::writable;
use crate::cache::PageCache;
use crate::config::MAX_BLOCKS_PER_PAGE;
use crate::decoder::Destination;
use crate::error::Result;
use crate::owners::Owners;
use crate::wire::delta;
use crate::wire::record::{
    block_item, block_item_validated, blocks_to_last_ref, BlockItem, BlockKind, ParseState, Record,
};

/// Rebuilds the page of a page record (parsed from state `st` by `parse_validated`) and
/// writes it to `dest`; returns its pfn and the length of what `parse_validated` left unparsed
/// (a whole-page delta, a BLOCKS payload; 0 for other records).
pub(super) fn apply_page<D: Destination>(
    cache: &mut PageCache<'_>,
    owners: &mut Owners<'_, true>,
    scratch: &mut [u8],
    record: Record<'_>,
    st: &ParseState,
    dest: &mut D,
) -> Result<(u64, usize)> {
    let ps = st.page_size;
    let mut unparsed = 0;
    let (pfn, slot) = match record {
        Record::Zero { pfn } => {
            dest.zero_page(pfn, ps)?;
            return Ok((pfn, 0));
        }
        Record::Dup { pfn, age } => (pfn, cache.slot_for_age(age)?),
        Record::Raw {
            pfn,
            bytes,
            cached: false,
        } => {
            writable(dest, pfn, ps)?.copy_from_slice(bytes);
            return Ok((pfn, 0));
        }
        Record::Raw {
            pfn,
            bytes,
            cached: true,
        } => {
            let head = cache.head_slot();
            cache.page_mut(head).copy_from_slice(bytes);
            (pfn, insert(cache, owners, pfn))
        }
        Record::Delta {
            pfn,
            age,
            rle,
            in_place: true,
        } => {
            let slot = cache.slot_for_age(age)?;
            unparsed = delta::apply(rle, cache.page_mut(slot))?;
            (pfn, slot)
        }
        Record::Delta {
            pfn,
            age,
            rle,
            in_place: false,
        } => {
            let base = cache.slot_for_age(age)?;
            let head = cache.head_slot();
            if base != head {
                cache.copy_between(base, 0, head, 0, ps);
            }
            unparsed = delta::apply(rle, cache.page_mut(head))?;
            (pfn, insert(cache, owners, pfn))
        }
        Record::Blocks {
            pfn,
            kinds,
            base_age,
            payload,
        } => {
            unparsed = build_blocks(cache, scratch, st, &kinds, base_age, payload)?;
            (pfn, insert(cache, owners, pfn))
        }
        Record::IterationEnd { .. } | Record::Blob { .. } | Record::End { .. } => {
            return Ok((0, 0))
        }
    };
    writable(dest, pfn, ps)?.copy_from_slice(cache.page(slot));
    Ok((pfn, unparsed))
}

/// The head slot, now `pfn`'s: its owner stored, the ring advanced.
fn insert(cache: &mut PageCache<'_>, owners: &mut Owners<'_, true>, pfn: u64) -> usize {
    let head = cache.head_slot();
    owners.store_owner(head, pfn);
    cache.advance();
    head
}

/// Rebuilds a BLOCKS page into the head slot; returns the length of its payload (which runs
/// to the end of the body: `parse_validated`). When the record refers to the page it is
/// about to evict, the page is built in `scratch` first.
fn build_blocks(
    cache: &mut PageCache<'_>,
    scratch: &mut [u8],
    st: &ParseState,
    kinds: &[BlockKind; MAX_BLOCKS_PER_PAGE],
    base_age: Option<u64>,
    payload: &[u8],
) -> Result<usize> {
    let bpp = st.blocks_per_page;
    let bs = st.page_size / bpp;
    let head = cache.head_slot();
    let base = match base_age {
        Some(age) => Some(cache.slot_for_age(age)?),
        None => None,
    };
    // Does any source slot equal the slot being overwritten?
    let mut conflict = base == Some(head);
    let mut pos = 0;
    for &k in &kinds[..blocks_to_last_ref(&kinds[..bpp])] {
        if let BlockItem::Ref { age, .. } = block_item(payload, &mut pos, k, st)? {
            conflict |= cache.slot_for_age(age)? == head;
        }
    }
    let mut pos = 0;
    for (b, &k) in kinds[..bpp].iter().enumerate() {
        let at = b * bs;
        let item = block_item_validated(payload, &mut pos, k, st)?;
        let (src, src_block) = match item {
            BlockItem::Ref { age, block } => (Some(cache.slot_for_age(age)?), block),
            BlockItem::Delta(_) => (base, b),
            _ => (None, 0),
        };
        if let Some(src) = src {
            if conflict {
                scratch[at..at + bs]
                    .copy_from_slice(&cache.page(src)[src_block * bs..(src_block + 1) * bs]);
            } else {
                cache.copy_between(src, src_block * bs, head, at, bs);
            }
        }
        let dst = if conflict {
            &mut scratch[at..at + bs]
        } else {
            &mut cache.page_mut(head)[at..at + bs]
        };
        match item {
            BlockItem::Zero => dst.fill(0),
            BlockItem::Literal(bytes) => dst.copy_from_slice(bytes),
            BlockItem::Delta(rle) => {
                pos += delta::apply(rle, dst)?;
            }
            BlockItem::Ref { .. } => {}
        }
    }
    if conflict {
        cache.page_mut(head).copy_from_slice(scratch);
    }
    Ok(pos)
}
