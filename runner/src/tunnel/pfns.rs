//! QEMU names a page by its RAM block and byte offset; the codec by one page number. The
//! blocks of the START section's list are laid end to end: block `i`'s pages follow those
//! of blocks `0..i`.

use anyhow::{ensure, Result};

use crate::qemu::RamBlock;

/// The page numbers of a block list.
#[derive(Debug, Clone, Default)]
pub struct PageNumbers {
    /// First page number of each block, then the total.
    starts: Vec<u64>,
    page_size: u64,
}

impl PageNumbers {
    /// Page numbers for `blocks` of pages of `page_size` bytes.
    pub fn new(blocks: &[RamBlock], page_size: usize) -> Result<Self> {
        let page_size = page_size as u64;
        ensure!(page_size > 0, "page size 0");
        let mut starts = Vec::with_capacity(blocks.len() + 1);
        let mut next = 0u64;
        for b in blocks {
            ensure!(
                b.length % page_size == 0,
                "RAM block {} is not a whole number of pages",
                b.name_lossy()
            );
            starts.push(next);
            next = next
                .checked_add(b.length / page_size)
                .ok_or_else(|| anyhow::anyhow!("RAM blocks add up to more than 2^64 pages"))?;
        }
        starts.push(next);
        Ok(PageNumbers { starts, page_size })
    }

    /// Pages in all blocks.
    pub fn pages(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    /// The page number of `offset` in `block`.
    pub fn pfn(&self, block: usize, offset: u64) -> Result<u64> {
        ensure!(block + 1 < self.starts.len(), "no RAM block {block}");
        ensure!(
            offset % self.page_size == 0,
            "offset {offset} inside a page"
        );
        let pfn = self.starts[block] + offset / self.page_size;
        ensure!(
            pfn < self.starts[block + 1],
            "offset {offset} past the end of RAM block {block}"
        );
        Ok(pfn)
    }

    /// The block and offset of page `pfn`.
    pub fn place(&self, pfn: u64) -> Result<(usize, u64)> {
        ensure!(
            pfn < self.pages(),
            "page {pfn} is beyond the {} pages of the RAM blocks",
            self.pages()
        );
        // the last start <= pfn; empty blocks share a start with the next, so take the last
        let block = self.starts.partition_point(|&s| s <= pfn) - 1;
        Ok((block, (pfn - self.starts[block]) * self.page_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(name: &str, length: u64) -> RamBlock {
        RamBlock {
            name: name.as_bytes().to_vec(),
            length,
        }
    }

    #[test]
    fn pages_map_both_ways_across_blocks() {
        let blocks = [
            block("pc.ram", 16 * 4096),
            block("/rom@etc/acpi/tables", 2 * 4096),
            block("pc.bios", 4 * 4096),
        ];
        let n = PageNumbers::new(&blocks, 4096).unwrap();
        assert_eq!(n.pages(), 22);
        for pfn in 0..22 {
            let (b, off) = n.place(pfn).unwrap();
            assert_eq!(n.pfn(b, off).unwrap(), pfn);
        }
        assert_eq!(n.place(16).unwrap(), (1, 0));
        assert_eq!(n.place(21).unwrap(), (2, 3 * 4096));
        assert!(n.place(22).is_err());
        assert!(n.pfn(1, 2 * 4096).is_err(), "past its block");
        assert!(n.pfn(3, 0).is_err(), "no such block");
        assert!(n.pfn(0, 100).is_err(), "inside a page");
        assert!(PageNumbers::new(&[block("x", 100)], 4096).is_err());
    }
}
