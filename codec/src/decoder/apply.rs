//! The second pass over a frame: rebuilding each page of an already validated body in the
//! cache and handing it to the sink.

use super::Sink;
use crate::cache::PageCache;
use crate::config::MAX_BLOCKS_PER_PAGE;
use crate::error::{Error, Result};
use crate::wire::delta;
use crate::wire::record::{block_item, parse, BlockItem, BlockKind, ParseState, Record};

/// Where the decoder rebuilds pages: the cache, a page of scratch for a BLOCKS page that
/// refers to the slot it overwrites, and a zero page to hand out for ZERO records.
pub(super) struct Pages<'a> {
    pub cache: PageCache<'a>,
    pub scratch: &'a mut [u8],
    pub zero: &'a [u8],
}

impl Pages<'_> {
    /// Applies every record of `body`, parsed from `st` on, in order. Every check already
    /// passed (the first pass), so an error here means a bug; it is still returned, never
    /// panicked on.
    pub fn apply_body<S: Sink>(
        &mut self,
        body: &[u8],
        mut st: ParseState,
        sink: &mut S,
    ) -> Result<()> {
        let mut pos = 0;
        while pos < body.len() {
            let before = st;
            match parse(body, &mut pos, &mut st)? {
                Record::IterationEnd { iteration } => sink.iteration_end(iteration),
                Record::Blob { tag, data } => sink.blob(tag, data),
                Record::End { .. } => sink.end_of_stream(),
                page => self.apply_page(page, &before, sink)?,
            }
            if st.inserted != self.cache.inserted() {
                return Err(Error::Malformed("cache out of step"));
            }
        }
        Ok(())
    }

    /// Rebuilds the page of a page record (parsed from state `st`) and hands it out.
    fn apply_page<S: Sink>(
        &mut self,
        record: Record<'_>,
        st: &ParseState,
        sink: &mut S,
    ) -> Result<()> {
        let cache = &mut self.cache;
        match record {
            Record::Zero { pfn } => sink.page(pfn, self.zero),
            Record::Dup { pfn, age } => {
                let slot = cache.slot_for_age(age)?;
                sink.page(pfn, cache.page(slot));
            }
            Record::Raw { pfn, bytes } => {
                let head = cache.head_slot();
                cache.page_mut(head).copy_from_slice(bytes);
                cache.advance();
                sink.page(pfn, cache.page(head));
            }
            Record::Delta {
                pfn,
                age,
                rle,
                in_place: true,
            } => {
                let slot = cache.slot_for_age(age)?;
                delta::apply(rle, cache.page_mut(slot))?;
                sink.page(pfn, cache.page(slot));
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
                    cache.copy_between(base, 0, head, 0, st.page_size);
                }
                delta::apply(rle, cache.page_mut(head))?;
                cache.advance();
                sink.page(pfn, cache.page(head));
            }
            Record::Blocks {
                pfn,
                kinds,
                base_age,
                payload,
            } => {
                build_blocks(cache, self.scratch, st, &kinds, base_age, payload)?;
                let head = cache.head_slot();
                cache.advance();
                sink.page(pfn, cache.page(head));
            }
            Record::IterationEnd { .. } | Record::Blob { .. } | Record::End { .. } => {}
        }
        Ok(())
    }
}

/// Rebuilds a BLOCKS page into the head slot. When the record refers to the page it is
/// about to evict, the page is built in `scratch` first.
fn build_blocks(
    cache: &mut PageCache<'_>,
    scratch: &mut [u8],
    st: &ParseState,
    kinds: &[BlockKind; MAX_BLOCKS_PER_PAGE],
    base_age: Option<u64>,
    payload: &[u8],
) -> Result<()> {
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
    for &k in &kinds[..bpp] {
        if let BlockItem::Ref { age, .. } = block_item(payload, &mut pos, k, st)? {
            conflict |= cache.slot_for_age(age)? == head;
        }
    }
    let mut pos = 0;
    for (b, &k) in kinds[..bpp].iter().enumerate() {
        let at = b * bs;
        let item = block_item(payload, &mut pos, k, st)?;
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
                delta::apply(rle, dst)?;
            }
            BlockItem::Ref { .. } => {}
        }
    }
    if conflict {
        cache.page_mut(head).copy_from_slice(scratch);
    }
    Ok(())
}
