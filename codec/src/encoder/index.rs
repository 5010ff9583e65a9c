//! The encoder's lossy lookup tables. The decoder needs neither: every hit is verified by
//! comparing bytes (content index) or by checking the page is still cached (address index),
//! so a stale or colliding entry only costs a missed match, never a wrong page.

/// Block hash -> (slot, block). Two-way set-associative: a new entry goes into the first
/// way and pushes the older one into the second, so the two most recent blocks of a bucket
/// stay findable.
pub struct ContentIndex<'a> {
    entries: &'a mut [u64],
    mask: u64,
}

impl<'a> ContentIndex<'a> {
    /// Builds an empty index over `entries` (a power-of-two length of at least 2).
    pub fn new(entries: &'a mut [u64]) -> Self {
        entries.fill(0);
        let mask = (entries.len() / 2).max(1) as u64 - 1;
        ContentIndex { entries, mask }
    }

    #[inline]
    fn bucket(&self, hash: u64) -> usize {
        ((hash & self.mask) * 2) as usize
    }

    /// The candidate locations recorded for `hash` (`slot * blocks_per_page + block`),
    /// newest first.
    #[inline]
    pub fn get(&self, hash: u64) -> [Option<u32>; 2] {
        let i = self.bucket(hash);
        let tag = (hash >> 32) as u32;
        let probe = |e: u64| ((e as u32) != 0 && (e >> 32) as u32 == tag).then(|| e as u32 - 1);
        [probe(self.entries[i]), probe(self.entries[i + 1])]
    }

    /// Records that the block with `hash` is at `loc`.
    #[inline]
    pub fn put(&mut self, hash: u64, loc: u32) {
        let i = self.bucket(hash);
        let entry = (hash >> 32 << 32) | u64::from(loc + 1);
        if self.entries[i] != entry {
            self.entries[i + 1] = self.entries[i];
            self.entries[i] = entry;
        }
    }
}

/// Page frame number -> `seq` of the latest cached version of that page. Direct-mapped by
/// the low bits of the pfn, which keeps a contiguous guest RAM free of collisions.
pub struct AddressIndex<'a> {
    entries: &'a mut [u64],
    mask: u64,
}

impl<'a> AddressIndex<'a> {
    /// Builds an empty index over `entries` (two words per entry, a power-of-two count).
    pub fn new(entries: &'a mut [u64]) -> Self {
        entries.fill(0);
        let mask = (entries.len() / 2) as u64 - 1;
        AddressIndex { entries, mask }
    }

    /// The `seq` recorded for `pfn`, if any.
    #[inline]
    pub fn get(&self, pfn: u64) -> Option<u64> {
        let i = ((pfn & self.mask) * 2) as usize;
        (self.entries[i + 1] != 0 && self.entries[i] == pfn).then(|| self.entries[i + 1] - 1)
    }

    /// Records `seq` as the latest version of `pfn`.
    #[inline]
    pub fn put(&mut self, pfn: u64, seq: u64) {
        let i = ((pfn & self.mask) * 2) as usize;
        self.entries[i] = pfn;
        self.entries[i + 1] = seq + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_index_keeps_two_ways_and_checks_tag() {
        let mut buf = [0u64; 8];
        let mut idx = ContentIndex::new(&mut buf);
        let (a, b, c) = (0x1234_0000_0003u64, 0x9999_0000_0003, 0x7777_0000_0003);
        assert_eq!(idx.get(a), [None, None]);
        idx.put(a, 0);
        assert_eq!(idx.get(a), [Some(0), None]);
        // same bucket, different tag: a miss, then both kept
        assert_eq!(idx.get(b), [None, None]);
        idx.put(b, 41);
        assert_eq!(idx.get(b), [Some(41), None]);
        assert_eq!(idx.get(a), [None, Some(0)]);
        // a third one pushes the oldest out
        idx.put(c, 5);
        assert_eq!(idx.get(a), [None, None]);
        assert_eq!(idx.get(b), [None, Some(41)]);
    }

    #[test]
    fn address_index_keys_by_pfn() {
        let mut buf = [0u64; 8];
        let mut idx = AddressIndex::new(&mut buf);
        assert_eq!(idx.get(0), None);
        idx.put(0, 0);
        idx.put(5, 7);
        assert_eq!(idx.get(0), Some(0));
        assert_eq!(idx.get(5), Some(7));
        assert_eq!(idx.get(1), None); // 5 and 1 share a bucket
        idx.put(1, 9);
        assert_eq!(idx.get(5), None);
        assert_eq!(idx.get(1), Some(9));
    }
}
