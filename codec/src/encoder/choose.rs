//! The record for one page, step by step: zero page, the page delta against the page's
//! previous version (a duplicate, or a PATCH or DELTA when small enough), the per-block plan
//! (with a duplicate found by content), block deltas, then the smallest of the page delta,
//! BLOCKS and RAW. Only live slots are ever named (format version 3's retirement rule).

use super::blocks::BlockPlan;
use super::{Base, Encoder, Features};
use crate::bytes::is_zero;
use crate::wire::delta::{self, Bounds, Merge};
use crate::wire::varint::{varint_len, zigzag};

/// Where the page delta step left a page that still needs a record.
struct Pending {
    /// A page delta within the threshold, in the first scratch page, when the encoder
    /// weighs it against the block layout (`exhaustive`).
    page_delta: Option<usize>,
    /// Lower bounds on the page's and each block's delta against the base.
    bounds: Bounds,
}

impl Encoder<'_> {
    /// Chooses the smallest record for the page, writes it into the body and updates the
    /// cache and indexes exactly as the decoder will.
    pub(super) fn write_page_record(&mut self, pfn: u64, page: &[u8]) {
        let pfn_code = zigzag(pfn.wrapping_sub(self.next_pfn) as i64);
        self.next_pfn = pfn.wrapping_add(1);
        if is_zero(page) {
            return self.write_zero(pfn, pfn_code);
        }
        if self.features == Features::NONE {
            // nothing will refer to a cached copy: the page goes whole, past the cache
            return self.write_plain(pfn, pfn_code, page);
        }
        let base = self.base_of(pfn);
        let pending = match base {
            Some(base) => match self.try_page_delta(pfn, pfn_code, page, base) {
                Some(pending) => Some(pending),
                None => return,
            },
            None => None,
        };
        let mut plan = self.plan_blocks(page);
        if let Some(age) = self.duplicate_of(page, &plan, base) {
            return self.write_dup(pfn, pfn_code, age);
        }
        if let (Some(base), Some(p)) = (base, &pending) {
            self.plan_block_deltas(page, base, &p.bounds, &mut plan);
        }
        let page_delta = pending.and_then(|p| p.page_delta);
        self.write_smallest(pfn, pfn_code, page, base, page_delta, &plan);
    }

    /// The latest cached version of `pfn`, the base for deltas, when deltas are on: the
    /// live slot the page owns, else the live slot the address index remembers for it (a
    /// page it duplicated).
    fn base_of(&self, pfn: u64) -> Option<Base> {
        if !self.features.delta {
            return None;
        }
        let owned = self.owners.slot_of(pfn);
        let slot = match owned {
            Some(slot) => slot,
            None => {
                let seq = self.address.get(pfn)?;
                let slot = self.cache.slot_for_age(self.cache.age_of_seq(seq)?).ok()?;
                if !self.owners.is_live(slot) {
                    return None;
                }
                slot
            }
        };
        let age = self.cache.age_of_slot(slot)?;
        Some(Base {
            age,
            slot,
            owned: owned.is_some(),
        })
    }

    /// The page delta comes first. Empty: the page is unchanged, a duplicate. Within the
    /// delta threshold: sent at once (a PATCH, or a DELTA where the base is another page's
    /// slot), without content lookups, block deltas or
    /// hashing (weighing it against a block layout sends almost the same bytes for much more
    /// work; `docs/PERFORMANCE.md`). In both cases the record is written and `None` comes
    /// back. Otherwise (or with `exhaustive`, where a delta within the threshold stays a
    /// candidate) what the next steps need.
    fn try_page_delta(
        &mut self,
        pfn: u64,
        pfn_code: u64,
        page: &[u8],
        base: Base,
    ) -> Option<Pending> {
        let bs = self.cfg.block_size();
        let ps = page.len();
        let base_page = self.cache.page(base.slot);
        crate::fast::prefetch(base_page);
        let threshold = self.cfg.delta_threshold as usize;
        // room for the empty delta even under a threshold below it
        let limit = threshold.max(delta::EMPTY_LEN);
        // Lower bounds on the page's and each block's delta, from one cheap pass over
        // difference masks: a page that looks rewritten gets them first, so that a page
        // delta that cannot fit is never written out run by run; any other page gets them
        // only if its delta fails, for the block deltas.
        let mut bounds = None;
        if delta::looks_rewritten(page, base_page) {
            bounds = Some(delta::bounds(page, base_page, bs));
        }
        let fits = bounds.is_none_or(|b| b.whole <= limit);
        let page_delta = if fits {
            delta::encode(
                page,
                base_page,
                &mut self.scratch[..ps],
                limit,
                Merge::for_frames(self.lz4),
            )
        } else {
            None
        };
        let page_delta = match page_delta {
            Some(delta::EMPTY_LEN) => {
                self.write_dup(pfn, pfn_code, base.age);
                return None;
            }
            Some(n) if n <= threshold && self.exhaustive => Some(n),
            Some(n) if n <= threshold && n + varint_len(base.age) <= ps => {
                self.write_delta(pfn, pfn_code, base, n, page);
                return None;
            }
            _ => None,
        };
        let bounds = match bounds {
            Some(b) => b,
            None => delta::bounds(page, self.cache.page(base.slot), bs),
        };
        Some(Pending { page_delta, bounds })
    }

    /// Writes the smallest of the candidates: the page delta (when one was kept),
    /// the BLOCKS record of `plan`, or the RAW page.
    fn write_smallest(
        &mut self,
        pfn: u64,
        pfn_code: u64,
        page: &[u8],
        base: Option<Base>,
        page_delta: Option<usize>,
        plan: &BlockPlan,
    ) {
        let bpp = self.cfg.blocks_per_page as usize;
        let head = 1 + varint_len(pfn_code);
        let base_age = base.map_or(0, |b| b.age);
        let blocks_len = plan.record_len(head, bpp, self.cfg.block_size(), base_age);
        let raw_len = head + page.len();
        if let (Some(n), Some(base)) = (page_delta, base) {
            let delta_len = head + varint_len(base_age) + n;
            if delta_len <= blocks_len && delta_len <= raw_len {
                return self.write_delta(pfn, pfn_code, base, n, page);
            }
        }
        if blocks_len < raw_len {
            let base_age = plan.any_delta(bpp).then_some(base_age);
            self.write_blocks(pfn_code, page, plan, base_age);
        } else {
            self.write_raw(pfn_code, page);
        }
        self.insert(pfn, page, plan);
    }
}
