//! The FIFO page cache both ends keep in lockstep, over caller-provided storage.
//!
//! Pages are numbered by insertion order (`seq`, from 0). Page `seq` lives in slot
//! `seq % capacity` until `capacity` later insertions overwrite it. The wire names a cached
//! page by its *age*: 1 is the page inserted last, `capacity` the oldest still cached.

use crate::error::Result;
use crate::wire::record::slot_for_age;

/// The FIFO order of the slots alone: how many pages were inserted, where each lives. The
/// in-place decoder keeps only this (the pages themselves are in destination memory).
#[derive(Clone, Copy)]
pub struct Ring {
    capacity: u64,
    inserted: u64,
}

impl Ring {
    /// An empty ring of `capacity` slots (at least 1).
    pub fn new(capacity: u64) -> Self {
        Ring {
            capacity: capacity.max(1),
            inserted: 0,
        }
    }

    /// Number of pages inserted since the start of the stream.
    #[inline]
    pub fn inserted(&self) -> u64 {
        self.inserted
    }

    /// Capacity in pages.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Slot the next insertion overwrites.
    #[inline]
    pub fn head_slot(&self) -> usize {
        (self.inserted % self.capacity) as usize
    }

    /// True when the next insertion overwrites a page (every slot has been filled).
    #[inline]
    pub fn head_filled(&self) -> bool {
        self.inserted >= self.capacity
    }

    /// The slot of the page with this age.
    #[inline]
    pub fn slot_for_age(&self, age: u64) -> Result<usize> {
        slot_for_age(self.inserted, self.capacity, age)
    }

    /// Age of the page now in `slot`, or `None` if the slot was never filled.
    #[inline]
    pub fn age_of_slot(&self, slot: usize) -> Option<u64> {
        let slot = slot as u64;
        if slot >= self.capacity || slot >= self.inserted {
            return None;
        }
        let head = self.inserted % self.capacity;
        Some((head + self.capacity - 1 - slot) % self.capacity + 1)
    }

    /// Age of the page inserted as number `seq`, if it is still cached.
    #[inline]
    pub fn age_of_seq(&self, seq: u64) -> Option<u64> {
        if seq >= self.inserted || self.inserted - seq > self.capacity {
            return None;
        }
        Some(self.inserted - seq)
    }

    /// Marks the head slot as filled; returns the `seq` it was given.
    #[inline]
    pub fn advance(&mut self) -> u64 {
        self.inserted += 1;
        self.inserted - 1
    }
}

/// A FIFO ring of page slots.
pub struct PageCache<'a> {
    slots: &'a mut [u8],
    page_size: usize,
    ring: Ring,
}

impl<'a> PageCache<'a> {
    /// Builds an empty cache over `slots`, which holds exactly `capacity` pages.
    pub fn new(slots: &'a mut [u8], page_size: usize) -> Self {
        let capacity = (slots.len() / page_size) as u64;
        PageCache {
            slots,
            page_size,
            ring: Ring::new(capacity),
        }
    }

    /// The FIFO order of the slots.
    #[inline]
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Number of pages inserted since the start of the stream.
    #[inline]
    pub fn inserted(&self) -> u64 {
        self.ring.inserted()
    }

    /// Slot the next insertion overwrites.
    #[inline]
    pub fn head_slot(&self) -> usize {
        self.ring.head_slot()
    }

    /// The slot of the page with this age.
    #[inline]
    pub fn slot_for_age(&self, age: u64) -> Result<usize> {
        self.ring.slot_for_age(age)
    }

    /// Age of the page now in `slot`, or `None` if the slot was never filled.
    #[inline]
    pub fn age_of_slot(&self, slot: usize) -> Option<u64> {
        self.ring.age_of_slot(slot)
    }

    /// Age of the page inserted as number `seq`, if it is still cached.
    #[inline]
    pub fn age_of_seq(&self, seq: u64) -> Option<u64> {
        self.ring.age_of_seq(seq)
    }

    /// The bytes of `slot`.
    #[inline]
    pub fn page(&self, slot: usize) -> &[u8] {
        let at = slot * self.page_size;
        &self.slots[at..at + self.page_size]
    }

    /// The bytes of `slot`, writable.
    #[inline]
    pub fn page_mut(&mut self, slot: usize) -> &mut [u8] {
        let at = slot * self.page_size;
        &mut self.slots[at..at + self.page_size]
    }

    /// Copies `len` bytes at `src_off` of slot `src` to `dst_off` of slot `dst`.
    #[inline]
    pub fn copy_between(
        &mut self,
        src: usize,
        src_off: usize,
        dst: usize,
        dst_off: usize,
        len: usize,
    ) {
        let s = src * self.page_size + src_off;
        let d = dst * self.page_size + dst_off;
        self.slots.copy_within(s..s + len, d);
    }

    /// Marks the head slot as filled; returns the `seq` it was given.
    #[inline]
    pub fn advance(&mut self) -> u64 {
        self.ring.advance()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn ages_and_slots() {
        let mut buf = [0u8; 3 * 4096];
        let mut c = PageCache::new(&mut buf, 4096);
        assert_eq!(c.ring().capacity(), 3);
        assert_eq!(c.slot_for_age(1), Err(Error::EmptySlot));
        assert_eq!(c.age_of_slot(0), None);
        for _ in 0..5 {
            c.advance();
        }
        // seqs 2,3,4 live in slots 2,0,1
        assert_eq!(c.slot_for_age(1), Ok(1));
        assert_eq!(c.slot_for_age(2), Ok(0));
        assert_eq!(c.slot_for_age(3), Ok(2));
        assert_eq!(c.slot_for_age(4), Err(Error::EvictedSlot));
        assert_eq!(c.slot_for_age(6), Err(Error::EmptySlot));
        assert_eq!(c.slot_for_age(0), Err(Error::EmptySlot));
        for slot in 0..3 {
            let age = c.age_of_slot(slot).unwrap();
            assert_eq!(c.slot_for_age(age), Ok(slot));
        }
        assert_eq!(c.age_of_seq(4), Some(1));
        assert_eq!(c.age_of_seq(1), None);
        assert_eq!(c.head_slot(), 2);
    }
}
