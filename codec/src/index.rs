//! The encoder's lossy lookup tables. The decoder needs neither: every hit is verified by
//! comparing bytes (content index) or by checking the page is still cached (address index),
//! so a stale or colliding entry only costs a missed match, never a wrong page.

/// Block hash -> (slot, block). Direct-mapped; a new entry replaces whatever was there.
pub struct ContentIndex<'a> {
    entries: &'a mut [u64],
    mask: u64,
}

impl<'a> ContentIndex<'a> {
    /// Builds an empty index over `entries` (a power-of-two length).
    pub fn new(entries: &'a mut [u64]) -> Self {
        entries.fill(0);
        let mask = entries.len() as u64 - 1;
        ContentIndex { entries, mask }
    }

    /// The candidate location recorded for `hash`: `slot * blocks_per_page + block`.
    #[inline]
    pub fn get(&self, hash: u64) -> Option<u32> {
        let e = self.entries[(hash & self.mask) as usize];
        let (tag, loc) = ((e >> 32) as u32, e as u32);
        (loc != 0 && tag == (hash >> 32) as u32).then(|| loc - 1)
    }

    /// Records that the block with `hash` is at `loc`.
    #[inline]
    pub fn put(&mut self, hash: u64, loc: u32) {
        self.entries[(hash & self.mask) as usize] = (hash >> 32 << 32) | u64::from(loc + 1);
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
    fn content_index_replaces_and_checks_tag() {
        let mut buf = [0u64; 8];
        let mut idx = ContentIndex::new(&mut buf);
        assert_eq!(idx.get(0x1234_0000_0003), None);
        idx.put(0x1234_0000_0003, 0);
        assert_eq!(idx.get(0x1234_0000_0003), Some(0));
        // same bucket, different tag: a miss, then a replacement
        assert_eq!(idx.get(0x9999_0000_0003), None);
        idx.put(0x9999_0000_0003, 41);
        assert_eq!(idx.get(0x9999_0000_0003), Some(41));
        assert_eq!(idx.get(0x1234_0000_0003), None);
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
