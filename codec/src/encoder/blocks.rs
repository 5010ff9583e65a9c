//! The per-block plan of a page: which blocks are zero, which equal a cached block (found
//! through the content index, confirmed byte by byte), which are sent as a delta against
//! the base page, and how long the BLOCKS record of that plan is.

use super::{block_hash, Base, Encoder};
use crate::bytes::is_zero;
use crate::config::{MAX_BLOCKS_PER_PAGE, MIN_PAGE_SIZE};
use crate::wire::delta::{self, Bounds, Merge};
use crate::wire::record::{block_ref, kinds_len, BlockKind};
use crate::wire::varint::varint_len;

/// The shortest block a validated configuration has.
const MIN_BLOCK_SIZE: usize = MIN_PAGE_SIZE as usize / MAX_BLOCKS_PER_PAGE;

/// The per-block plan of a BLOCKS record.
pub(super) struct BlockPlan {
    pub kinds: [BlockKind; MAX_BLOCKS_PER_PAGE],
    /// Block references of the `Ref` blocks.
    pub refs: [u64; MAX_BLOCKS_PER_PAGE],
    /// Content hashes of the non-zero blocks (for the content index once cached).
    pub hashes: [u64; MAX_BLOCKS_PER_PAGE],
    /// Delta lengths of the `Delta` blocks.
    pub delta_len: [usize; MAX_BLOCKS_PER_PAGE],
    /// Cached pages (slot, age) with a block equal to one of this page at the same offset:
    /// maybe whole duplicates, for the caller to compare.
    pub dup_candidates: [Option<(usize, u64)>; 2],
}

impl BlockPlan {
    /// True when a block is sent as a delta, so the record carries the base's age.
    pub fn any_delta(&self, bpp: usize) -> bool {
        self.kinds[..bpp].contains(&BlockKind::Delta)
    }

    /// Bytes of the BLOCKS record of this plan: `head` for its tag and pfn, the kinds, the
    /// base's age when a block is a delta, then each block's item.
    pub fn record_len(&self, head: usize, bpp: usize, bs: usize, base_age: u64) -> usize {
        let age_len = if self.any_delta(bpp) {
            varint_len(base_age)
        } else {
            0
        };
        let items: usize = (0..bpp)
            .map(|b| match self.kinds[b] {
                BlockKind::Zero => 0,
                BlockKind::Ref => varint_len(self.refs[b]),
                BlockKind::Delta => self.delta_len[b],
                BlockKind::Literal => bs,
            })
            .sum();
        head + kinds_len(bpp) + age_len + items
    }
}

impl Encoder<'_> {
    /// The plan before block deltas: zero blocks, then content lookups block by block (all
    /// hashes first, then all index probes, independent loads whose cache misses overlap,
    /// then the byte checks).
    #[inline]
    pub(super) fn plan_blocks(&self, page: &[u8]) -> BlockPlan {
        let bpp = self.cfg.blocks_per_page as usize;
        // A validated configuration's blocks are never shorter (4 KiB pages or more, at most
        // 8 blocks): saying so lets the compiler drop xxh3's paths for inputs of up to 240
        // bytes, which no block takes (about 1 KB of code on the Cortex-M4).
        let bs = self.cfg.block_size().max(MIN_BLOCK_SIZE);
        let mut plan = BlockPlan {
            kinds: [BlockKind::Literal; MAX_BLOCKS_PER_PAGE],
            refs: [0; MAX_BLOCKS_PER_PAGE],
            hashes: [0; MAX_BLOCKS_PER_PAGE],
            delta_len: [0; MAX_BLOCKS_PER_PAGE],
            dup_candidates: [None; 2],
        };
        // A page that is not zero failed the whole-page test at its first non-zero word; the
        // per-block zero test waits until the block layout is needed, here.
        for b in 0..bpp {
            if is_zero(&page[b * bs..(b + 1) * bs]) {
                plan.kinds[b] = BlockKind::Zero;
            }
        }
        for b in 0..bpp {
            if plan.kinds[b] != BlockKind::Zero {
                plan.hashes[b] = block_hash(&page[b * bs..(b + 1) * bs]);
            }
        }
        if self.features.cbr {
            self.find_cached_blocks(page, &mut plan);
        }
        plan
    }

    /// Marks the blocks that equal a cached block as references. A hit at the same block
    /// offset names a page that may be a whole duplicate: up to two are remembered.
    fn find_cached_blocks(&self, page: &[u8], plan: &mut BlockPlan) {
        let bpp = self.cfg.blocks_per_page as usize;
        let bs = self.cfg.block_size();
        let mut probes = [[None; 2]; MAX_BLOCKS_PER_PAGE];
        let blocks = plan.kinds.iter().zip(&plan.hashes).take(bpp);
        for (probe, (&kind, &hash)) in probes.iter_mut().zip(blocks) {
            if kind != BlockKind::Zero {
                *probe = self.content.get(hash);
            }
        }
        for b in 0..bpp {
            let block = &page[b * bs..(b + 1) * bs];
            for loc in probes[b].into_iter().flatten() {
                let (slot, cb) = ((loc as usize) / bpp, (loc as usize) % bpp);
                let Some(age) = self.cache.age_of_slot(slot) else {
                    continue;
                };
                if !self.owners.is_live(slot) {
                    continue;
                }
                if &self.cache.page(slot)[cb * bs..(cb + 1) * bs] == block {
                    plan.kinds[b] = BlockKind::Ref;
                    plan.refs[b] = block_ref(age, cb, bpp as u64);
                    let candidates = &mut plan.dup_candidates;
                    if cb == b && !candidates.contains(&Some((slot, age))) {
                        if let Some(free) = candidates.iter_mut().find(|c| c.is_none()) {
                            *free = Some((slot, age));
                        }
                    }
                    break;
                }
            }
        }
    }

    /// The age of a cached page, other than the base, that equals `page` whole.
    #[inline]
    pub(super) fn duplicate_of(
        &self,
        page: &[u8],
        plan: &BlockPlan,
        base: Option<Base>,
    ) -> Option<u64> {
        plan.dup_candidates
            .into_iter()
            .flatten()
            .find(|&(slot, _)| {
                Some(slot) != base.map(|b| b.slot)
                    && self.owners.is_live(slot)
                    && self.cache.page(slot) == page
            })
            .map(|(_, age)| age)
    }

    /// Deltas against the base, for each literal block whose bound leaves a chance of
    /// beating the block itself; written to the block's offset in the second scratch page.
    pub(super) fn plan_block_deltas(
        &mut self,
        page: &[u8],
        base: Base,
        bounds: &Bounds,
        plan: &mut BlockPlan,
    ) {
        let bpp = self.cfg.blocks_per_page as usize;
        let bs = self.cfg.block_size();
        let ps = page.len();
        let blocks = &mut self.scratch[ps..];
        let base_page = self.cache.page(base.slot);
        for b in 0..bpp {
            let hopeless = bounds.pieces[b] > bs - 1;
            if plan.kinds[b] != BlockKind::Literal || hopeless {
                continue;
            }
            let r = b * bs..(b + 1) * bs;
            if let Some(n) = delta::encode(
                &page[r.clone()],
                &base_page[r],
                &mut blocks[b * bs..],
                bs - 1,
                Merge::for_frames(self.lz4),
            ) {
                plan.kinds[b] = BlockKind::Delta;
                plan.delta_len[b] = n;
            }
        }
    }
}
