//! Who owns each cache slot, and which slots are still live: the retirement rule of format
//! version 3 (`docs/FORMAT.md`, "owners and retirement"), kept the same way by both ends.
//!
//! Every slot has an owner page (the pfn whose record put it there). A pfn owns at most
//! one *live* slot; a record that changes its memory otherwise than through that slot
//! retires it. Two tables, 16 bytes per slot in all:
//!
//! * `owner`: per slot, its owner pfn (8 bytes);
//! * `map`: pfn -> its live slot, open addressing with linear probing over `2 * capacity`
//!   entries of 4 bytes (a slot number plus one, 0 when free; the key is read back from
//!   `owner`). At most
//!   `capacity` pfns own a live slot, so the load stays at or below one half.
//!
//! A slot is live when the map sends its owner back to it. A frame's validation sees the
//! owners the frame itself gives to slots through `pending` (a frame inserts at most
//! `Config::max_frame_inserts` pages), so that `owner` keeps, until the frame is applied,
//! the owners the in-place apply pass must read.

/// A free map entry; a used one holds its slot number plus one.
const EMPTY: u32 = 0;

/// The owner tables over caller storage. `PENDING`: a decoder's, whose validation pass
/// keeps a frame's new owners apart (the encoder stores them at once, and its code, which
/// a firmware carries, has no overlay to look through).
pub struct Owners<'a, const PENDING: bool> {
    owner: &'a mut [u64],
    map: &'a mut [u32],
    /// Owners given by the frame being validated, in insertion order (decoder only).
    pending: &'a mut [u64],
    pending_len: usize,
    /// Slot of the frame's first insertion.
    pending_first: usize,
}

/// Entries of the pfn map for `capacity` slots.
pub const fn map_entries(capacity: usize) -> usize {
    2 * capacity
}

impl<'a, const PENDING: bool> Owners<'a, PENDING> {
    /// Tables over `owner` (one entry per slot), `map` (`map_entries(slots)` entries) and
    /// `pending` (room for a frame's insertions; empty where nothing validates ahead).
    pub fn new(owner: &'a mut [u64], map: &'a mut [u32], pending: &'a mut [u64]) -> Self {
        map.fill(EMPTY);
        Owners {
            owner,
            map,
            pending,
            pending_len: 0,
            pending_first: 0,
        }
    }

    fn capacity(&self) -> usize {
        self.owner.len()
    }

    /// The owner of `slot` as the pass in progress sees it: the frame's own insertions
    /// first, then the stored table.
    pub fn owner_of(&self, slot: usize) -> u64 {
        if PENDING && self.pending_len > 0 {
            let cap = self.capacity();
            let k0 = if slot >= self.pending_first {
                slot - self.pending_first
            } else {
                slot + cap - self.pending_first
            };
            if k0 < self.pending_len {
                // the frame's last insertion into this slot (it wraps only past `cap`)
                let latest = if self.pending_len <= cap {
                    k0
                } else {
                    k0 + (self.pending_len - 1 - k0) / cap * cap
                };
                return self.pending[latest];
            }
        }
        self.owner[slot]
    }

    /// The owner stored for `slot`: what the apply pass reads (it stores each insertion's
    /// owner as it goes, so this is the owner at the record being applied).
    pub fn stored_owner(&self, slot: usize) -> u64 {
        self.owner[slot]
    }

    /// Stores the owner of a slot being filled by the apply pass (or by the encoder).
    pub fn store_owner(&mut self, slot: usize, pfn: u64) {
        self.owner[slot] = pfn;
    }

    fn home(&self, pfn: u64) -> usize {
        let h = (pfn.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32;
        ((u64::from(h) * self.map.len() as u64) >> 32) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.map.len() {
            0
        } else {
            i + 1
        }
    }

    /// The map entry holding `pfn`, if it owns a live slot.
    fn find(&self, pfn: u64) -> Option<usize> {
        let mut i = self.home(pfn);
        loop {
            let e = self.map[i];
            if e == EMPTY {
                return None;
            }
            if self.owner_of(e as usize - 1) == pfn {
                return Some(i);
            }
            i = self.next(i);
        }
    }

    /// The live slot `pfn` owns.
    pub fn slot_of(&self, pfn: u64) -> Option<usize> {
        self.find(pfn).map(|i| self.map[i] as usize - 1)
    }

    /// True when the filled `slot` is live: its owner still owns it.
    pub fn is_live(&self, slot: usize) -> bool {
        self.slot_of(self.owner_of(slot)) == Some(slot)
    }

    /// Retires the live slot of `pfn`, if it has one.
    pub fn retire(&mut self, pfn: u64) {
        if let Some(i) = self.find(pfn) {
            self.remove_at(i);
        }
    }

    /// Empties map entry `j`, shifting back the entries of its probe run behind it.
    fn remove_at(&mut self, mut j: usize) {
        let mut i = j;
        loop {
            i = self.next(i);
            let e = self.map[i];
            if e == EMPTY {
                break;
            }
            let k = self.home(self.owner_of(e as usize - 1));
            // the entry stays when its home lies cyclically in (j, i]
            let stays = if j < i {
                j < k && k <= i
            } else {
                j < k || k <= i
            };
            if !stays {
                self.map[j] = e;
                j = i;
            }
        }
        self.map[j] = EMPTY;
    }

    /// The insertion rule: `pfn`'s old slot is retired, the page now in `slot` (if
    /// `filled`) is evicted, and `slot` becomes `pfn`'s live slot. With `PENDING`, the new
    /// owner goes to the frame's pending list (validation); otherwise it is stored.
    /// Fails only when a frame inserts more pages than the pending list holds.
    pub fn insert(&mut self, slot: usize, filled: bool, pfn: u64) -> bool {
        if PENDING && self.pending_len == self.pending.len() {
            return false;
        }
        self.retire(pfn);
        if filled {
            let old = self.owner_of(slot);
            if let Some(i) = self.find(old) {
                if self.map[i] as usize == slot + 1 {
                    self.remove_at(i);
                }
            }
        }
        if PENDING {
            if self.pending_len == 0 {
                self.pending_first = slot;
            }
            self.pending[self.pending_len] = pfn;
            self.pending_len += 1;
        } else {
            self.owner[slot] = pfn;
        }
        let mut i = self.home(pfn);
        while self.map[i] != EMPTY {
            i = self.next(i);
        }
        self.map[i] = slot as u32 + 1;
        true
    }

    /// Forgets the pending owners once the frame's apply pass has stored them all.
    pub fn end_frame(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retirement_eviction_and_probe_runs() {
        let mut owner = [0u64; 4];
        let mut map = [0u32; map_entries(4)];
        let mut o = Owners::<false>::new(&mut owner, &mut map, &mut []);
        // pfns that share home buckets, to exercise the backward shift
        for (slot, pfn) in [10u64, 11, 12, 13].into_iter().enumerate() {
            assert!(o.insert(slot, false, pfn));
        }
        for slot in 0..4 {
            assert!(o.is_live(slot));
        }
        o.retire(11);
        assert!(!o.is_live(1));
        assert_eq!(o.slot_of(11), None);
        for (slot, pfn) in [(0, 10u64), (2, 12), (3, 13)] {
            assert_eq!(o.slot_of(pfn), Some(slot));
        }
        // slot 2 refilled by pfn 10: 10's old slot 0 retires, 12 is evicted
        assert!(o.insert(2, true, 10));
        assert_eq!(o.slot_of(10), Some(2));
        assert_eq!(o.slot_of(12), None);
        assert!(!o.is_live(0));
        assert!(o.is_live(3));
    }

    #[test]
    fn pending_owners_are_seen_before_they_are_stored() {
        let mut owner = [0u64; 2];
        let mut map = [0u32; map_entries(2)];
        let mut pending = [0u64; 3];
        let mut o = Owners::<true>::new(&mut owner, &mut map, &mut pending);
        // a first frame fills both slots, and its apply pass stores the owners
        assert!(o.insert(0, false, 5));
        assert!(o.insert(1, false, 6));
        o.store_owner(0, 5);
        o.store_owner(1, 6);
        o.end_frame();
        // a frame that wraps: slots 1, 0, 1 get pfns 7, 8, 9
        assert!(o.insert(1, true, 7));
        assert!(o.insert(0, true, 8));
        assert!(o.insert(1, true, 9));
        assert!(!o.insert(0, true, 1), "more than the pending room");
        assert_eq!(o.owner_of(1), 9);
        assert_eq!(o.owner_of(0), 8);
        assert_eq!(o.stored_owner(1), 6);
        assert_eq!(o.slot_of(9), Some(1));
        assert_eq!(o.slot_of(7), None);
        o.store_owner(1, 9);
        o.store_owner(0, 8);
        o.end_frame();
        assert_eq!(o.slot_of(9), Some(1));
        assert_eq!(o.owner_of(0), 8);
    }
}
