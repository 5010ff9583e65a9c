//! Where a decoder puts what it decodes: destination memory, page by page, and the events
//! of the stream (iteration ends, blobs, its end).

use crate::error::{Error, Result};

/// Destination memory and the stream's events.
///
/// The decoder writes each page of the stream into [`Destination::page_mut`] of its pfn. In
/// [`DecodeMode::InPlace`](crate::DecodeMode::InPlace) it also reads back pages it wrote
/// before ([`Destination::page`], [`Destination::page_pair`]): those are the pages its
/// cache refers to, so the memory must hold what the decoder last wrote there (a VMM's
/// guest memory does: the guest does not run until the migration ends). In
/// [`DecodeMode::CacheCopy`](crate::DecodeMode::CacheCopy) only `page_mut` is used, and a
/// destination without memory of its own (a relay, a callback) may hand out one staging
/// page and forward it in [`Destination::page_done`].
pub trait Destination {
    /// The `page_size` bytes of page `pfn`, to write. A pfn outside the destination's
    /// memory is [`Error::PfnOutOfRange`] (final for the stream, like every decoder error;
    /// the pages before it in its frame were written).
    fn page_mut(&mut self, pfn: u64) -> Result<&mut [u8]>;

    /// In place: page `pfn` as the decoder last wrote it, to read.
    fn page(&self, pfn: u64) -> Result<&[u8]> {
        Err(Error::PageUnreadable { pfn })
    }

    /// In place: page `from` to read and page `to` to write, at once (`from != to`): how
    /// a page is built out of another without a copy through scratch memory.
    fn page_pair(&mut self, from: u64, to: u64) -> Result<(&[u8], &mut [u8])> {
        let _ = to;
        Err(Error::PageUnreadable { pfn: from })
    }

    /// Page `pfn` becomes all zeros. By default it is written like any page; a destination
    /// may keep a page that already reads as zeros untouched (memory never written then
    /// stays unbacked). Errors as [`Destination::page_mut`].
    fn zero_page(&mut self, pfn: u64, page_size: usize) -> Result<()> {
        writable(self, pfn, page_size)?.fill(0);
        Ok(())
    }

    /// Page `pfn` is complete: every byte the record for it writes has been written.
    fn page_done(&mut self, _pfn: u64) {}

    /// Every page of iteration `iteration` has been written.
    fn iteration_end(&mut self, _iteration: u64) {}

    /// An opaque blob the source appended.
    fn blob(&mut self, _tag: u32, _data: &[u8]) {}

    /// The end-of-stream record arrived; the migration stream is complete.
    fn end_of_stream(&mut self) {}
}

/// Checks a page handed out by a destination for its length.
pub(crate) fn one_page(page: &[u8], page_size: usize) -> Result<()> {
    if page.len() != page_size {
        return Err(Error::WrongPageLength {
            expected: page_size,
            got: page.len(),
        });
    }
    Ok(())
}

/// Page `pfn` of `dest`, to write, checked to be one page long.
pub(crate) fn writable<D: Destination + ?Sized>(
    dest: &mut D,
    pfn: u64,
    page_size: usize,
) -> Result<&mut [u8]> {
    let page = dest.page_mut(pfn)?;
    one_page(page, page_size)?;
    Ok(page)
}

/// Guest memory as one flat buffer: page `pfn` at `pfn * page_size`. A destination for
/// either mode, for tests, tools and anything whose memory is one piece.
pub struct MemoryImage<'m> {
    mem: &'m mut [u8],
    page_size: usize,
}

impl<'m> MemoryImage<'m> {
    /// The pages of `mem` (its length a multiple of `page_size`; a tail is never used).
    pub fn new(mem: &'m mut [u8], page_size: usize) -> Self {
        MemoryImage {
            mem,
            page_size: page_size.max(1),
        }
    }

    /// The whole memory.
    pub fn memory(&self) -> &[u8] {
        self.mem
    }

    fn range(&self, pfn: u64) -> Result<core::ops::Range<usize>> {
        let pages = (self.mem.len() / self.page_size) as u64;
        if pfn >= pages {
            return Err(Error::PfnOutOfRange { pfn });
        }
        let at = pfn as usize * self.page_size;
        Ok(at..at + self.page_size)
    }
}

impl Destination for MemoryImage<'_> {
    fn page_mut(&mut self, pfn: u64) -> Result<&mut [u8]> {
        let r = self.range(pfn)?;
        Ok(&mut self.mem[r])
    }

    fn page(&self, pfn: u64) -> Result<&[u8]> {
        Ok(&self.mem[self.range(pfn)?])
    }

    fn page_pair(&mut self, from: u64, to: u64) -> Result<(&[u8], &mut [u8])> {
        page_pair_in(self.mem, self.page_size, from, to)
    }
}

/// Page `from` to read and page `to` to write of flat memory `mem` (page `pfn` at
/// `pfn * page_size`): [`Destination::page_pair`] for any destination whose memory is one
/// piece. A page past the end is [`Error::PfnOutOfRange`], `from == to`
/// [`Error::PageUnreadable`].
pub fn page_pair_in(
    mem: &mut [u8],
    page_size: usize,
    from: u64,
    to: u64,
) -> Result<(&[u8], &mut [u8])> {
    let ps = page_size.max(1);
    let pages = (mem.len() / ps) as u64;
    for pfn in [from, to] {
        if pfn >= pages {
            return Err(Error::PfnOutOfRange { pfn });
        }
    }
    if from == to {
        return Err(Error::PageUnreadable { pfn: from });
    }
    let (src, dst) = (from as usize * ps, to as usize * ps);
    Ok(if src < dst {
        let (a, b) = mem.split_at_mut(dst);
        (&a[src..src + ps], &mut b[..ps])
    } else {
        let (a, b) = mem.split_at_mut(src);
        (&b[..ps], &mut a[dst..dst + ps])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_image_hands_out_pages_in_range_only() {
        let mut mem = [0u8; 3 * 4096];
        let mut m = MemoryImage::new(&mut mem, 4096);
        m.page_mut(2).unwrap().fill(7);
        let (src, dst) = m.page_pair(2, 0).unwrap();
        dst.copy_from_slice(src);
        let (src, dst) = m.page_pair(0, 1).unwrap();
        assert_eq!(src[0], 7);
        dst[0] = 1;
        assert_eq!(m.page(1).unwrap()[..2], [1, 0]);
        assert_eq!(m.page_mut(3).err(), Some(Error::PfnOutOfRange { pfn: 3 }));
        assert_eq!(
            m.page_pair(1, u64::MAX).err(),
            Some(Error::PfnOutOfRange { pfn: u64::MAX })
        );
        assert!(m.page_pair(1, 1).is_err());
        assert!(m.memory()[..4096].iter().all(|&b| b == 7));
    }
}
