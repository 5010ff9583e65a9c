//! Writing the record chosen for a page, and the cache insertion and retirement rules that
//! follow each kind of record, exactly as the decoder will apply them (`docs/FORMAT.md`,
//! "cache rule" and "owners and retirement").

use super::blocks::BlockPlan;
use super::{Base, Encoder};
use crate::wire::record::{BlockKind, RecordTag};

impl Encoder<'_> {
    /// A ZERO record. Zero pages take no cache slot; the page's own slot retires.
    pub(super) fn write_zero(&mut self, pfn: u64, pfn_code: u64) {
        let start = self.body.page(RecordTag::Zero, pfn_code);
        self.stats.zero.add(self.body.len() - start);
        self.owners.retire(pfn);
    }

    /// A DUP record of the cached page of age `age`, which is now `pfn`'s latest version.
    /// The page's own slot retires unless it is that very slot.
    pub(super) fn write_dup(&mut self, pfn: u64, pfn_code: u64, age: u64) {
        let start = self.body.page(RecordTag::Dup, pfn_code);
        self.body.varint(age);
        self.stats.dup.add(self.body.len() - start);
        self.stats.cache_hits += 1;
        let slot = self.cache.slot_for_age(age).ok();
        if slot.is_some() && self.owners.slot_of(pfn) != slot {
            self.owners.retire(pfn);
        }
        self.address.put(pfn, self.cache.inserted() - age);
    }

    /// The page delta in `scratch[..n]` against `base`: a PATCH when the base is the page's
    /// own slot, else a DELTA that fills a new slot (a PATCH would change another page's
    /// slot, and so the memory an in-place decoder reads it from).
    ///
    /// A PATCH changes the cached page where it is, as the decoder's copy will once it
    /// applies the delta: no slot is taken, so a page that keeps changing does not push
    /// others out.
    pub(super) fn write_delta(
        &mut self,
        pfn: u64,
        pfn_code: u64,
        base: Base,
        n: usize,
        page: &[u8],
    ) {
        let tag = if base.owned {
            RecordTag::Patch
        } else {
            RecordTag::Delta
        };
        let start = self.body.page(tag, pfn_code);
        self.body.varint(base.age);
        self.body.bytes(&self.scratch[..n]);
        self.stats.delta.add(self.body.len() - start);
        self.stats.delta_uses += 1;
        if base.owned {
            self.cache.page_mut(base.slot).copy_from_slice(page);
        } else {
            self.take_head(pfn, page);
        }
    }

    /// The page enters the cache at the head as `pfn`'s live slot (its old slot retires,
    /// the page in the head slot is evicted); returns the slot.
    fn take_head(&mut self, pfn: u64, page: &[u8]) -> usize {
        let slot = self.cache.head_slot();
        let filled = self.cache.ring().head_filled();
        self.owners.insert(slot, filled, pfn);
        self.cache.page_mut(slot).copy_from_slice(page);
        let seq = self.cache.advance();
        self.address.put(pfn, seq);
        self.frame_inserts += 1;
        slot
    }

    /// A PLAIN record: the page whole, into no cache slot; the page's own slot retires.
    pub(super) fn write_plain(&mut self, pfn: u64, pfn_code: u64, page: &[u8]) {
        let start = self.body.page(RecordTag::Plain, pfn_code);
        self.body.bytes(page);
        self.stats.raw.add(self.body.len() - start);
        self.owners.retire(pfn);
    }

    /// A RAW record (the page then enters the cache: [`Encoder::insert`]).
    pub(super) fn write_raw(&mut self, pfn_code: u64, page: &[u8]) {
        let start = self.body.page(RecordTag::Raw, pfn_code);
        self.body.bytes(page);
        self.stats.raw.add(self.body.len() - start);
    }

    /// A BLOCKS record of `plan` (with the base's age when a block is a delta, whose bytes
    /// are in the second scratch page); the page then enters the cache: [`Encoder::insert`].
    pub(super) fn write_blocks(
        &mut self,
        pfn_code: u64,
        page: &[u8],
        plan: &BlockPlan,
        base_age: Option<u64>,
    ) {
        let bpp = self.cfg.blocks_per_page as usize;
        let bs = self.cfg.block_size();
        let ps = page.len();
        let start = self.body.page(RecordTag::Blocks, pfn_code);
        self.body.kinds(&plan.kinds[..bpp]);
        if let Some(age) = base_age {
            self.body.varint(age);
        }
        for b in 0..bpp {
            match plan.kinds[b] {
                BlockKind::Zero => self.stats.block_zero += 1,
                BlockKind::Ref => {
                    self.body.varint(plan.refs[b]);
                    self.stats.block_ref += 1;
                    self.stats.cache_hits += 1;
                }
                BlockKind::Delta => {
                    let src = ps + b * bs;
                    self.body.bytes(&self.scratch[src..src + plan.delta_len[b]]);
                    self.stats.block_delta += 1;
                }
                BlockKind::Literal => {
                    self.body.bytes(&page[b * bs..(b + 1) * bs]);
                    self.stats.block_literal += 1;
                }
            }
        }
        self.stats.blocks.add(self.body.len() - start);
        self.stats.delta_uses += u64::from(base_age.is_some());
    }

    /// The cache insertion rule for RAW and BLOCKS pages: they enter the cache at the head
    /// (PATCH pages change their base in place, DELTA pages enter in `write_delta`); the
    /// page's non-zero blocks enter the content index under their hashes.
    pub(super) fn insert(&mut self, pfn: u64, page: &[u8], plan: &BlockPlan) {
        let bpp = self.cfg.blocks_per_page as usize;
        let slot = self.take_head(pfn, page);
        for b in 0..bpp {
            if plan.kinds[b] != BlockKind::Zero {
                self.content.put(plan.hashes[b], (slot * bpp + b) as u32);
            }
        }
    }
}
