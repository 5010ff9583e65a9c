//! Plain pages in bulk, built where the caller wants the stream: zero pages as ZERO records,
//! every other page whole as a PLAIN record, in stored frames written straight into the
//! caller's buffer. Each page is read by the zero test and copied once (or, for memory that
//! changes meanwhile, copied once and the copy zero-tested); the frame's CRC is taken over
//! the buffer, where the frame still sits in the CPU cache. Page by page
//! ([`Encoder::encode_page`]) the same records cost two copies: into the frame body in the
//! encoder's storage, and the sealed frame out of it (`docs/PERFORMANCE.md`, *A raw path in
//! the caller's buffer*).

use super::Encoder;
use crate::bytes::is_zero;
use crate::config::RECORD_OVERHEAD;
use crate::error::{Error, Result};
use crate::wire::frame::{FRAME_HEADER_LEN, FRAME_TRAILER_LEN};
use crate::wire::record::{BodyWriter, RecordTag};
use crate::wire::varint::zigzag;

/// What one [`Encoder::encode_plain_pages`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainBatch {
    /// Pages taken from the front of the slice.
    pub pages: usize,
    /// Bytes of finished stream written to the front of `out`.
    pub written: usize,
}

/// Pages of a bulk plain batch that the encoder may not borrow, such as guest memory that
/// running vCPUs write ([`Encoder::encode_plain_pages_copied`]). Each page is read once, by
/// [`CopyPages::copy_page`], straight into its record.
pub trait CopyPages {
    /// Pages in the batch.
    fn count(&self) -> usize;
    /// The pfn of page `i`.
    fn pfn(&self, i: usize) -> u64;
    /// Copies page `i` into `dst` (a page's length).
    fn copy_page(&mut self, i: usize, dst: &mut [u8]);
}

/// Where [`Encoder::plain_frames`] gets its pages and how it writes each one's record.
trait PlainSource {
    fn count(&self) -> usize;
    fn pfn(&self, i: usize) -> u64;
    /// Writes page `i`'s record (its pfn's code `code`) into `body`; true for a ZERO record.
    fn put(&mut self, i: usize, code: u64, body: &mut BodyWriter) -> bool;
}

/// Borrowed pages: the zero test first, then the copy of a page that is not zero.
struct Borrowed<'a, 'p>(&'a [(u64, &'p [u8])]);

impl PlainSource for Borrowed<'_, '_> {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn pfn(&self, i: usize) -> u64 {
        self.0[i].0
    }
    #[inline]
    fn put(&mut self, i: usize, code: u64, body: &mut BodyWriter) -> bool {
        let page = self.0[i].1;
        if is_zero(page) {
            body.page(RecordTag::Zero, code);
            true
        } else {
            body.page(RecordTag::Plain, code);
            body.bytes(page);
            false
        }
    }
}

/// Pages the caller copies: the copy first, into the record, then the zero test of the copy.
struct Copied<'a> {
    pages: &'a mut dyn CopyPages,
    page_size: usize,
}

impl PlainSource for Copied<'_> {
    fn count(&self) -> usize {
        self.pages.count()
    }
    fn pfn(&self, i: usize) -> u64 {
        self.pages.pfn(i)
    }
    fn put(&mut self, i: usize, code: u64, body: &mut BodyWriter) -> bool {
        let start = body.len();
        body.page(RecordTag::Plain, code);
        let copy = body.fill(self.page_size);
        self.pages.copy_page(i, copy);
        if is_zero(copy) {
            body.truncate(start);
            body.page(RecordTag::Zero, code);
            true
        } else {
            false
        }
    }
}

impl Encoder<'_> {
    /// Encodes pages from the front of `pages` (pfn, content) as plain pages, whatever the
    /// [`Features`](super::Features): a ZERO record for a zero page, else the page whole as
    /// a PLAIN record, which takes no cache slot (the page's own slot retires, as it does
    /// for a PLAIN record from [`Encoder::encode_page`]). The frames are built and sealed in
    /// `out`, stored (no LZ4), with the frame boundaries the page-by-page path would have;
    /// as many pages as whole frames fit in `out`.
    ///
    /// Records earlier calls left in the frame being filled go out first, in their own
    /// frame, and the batch's last frame is sealed at its end: the encoder has no frame open
    /// after the call. `out` must hold `Config::max_output_len()` bytes; every further
    /// `Config::max_frame_len()` holds another frame. A call may take no page (when the
    /// frame it had to flush filled `out`); the next one then takes some.
    ///
    /// Each page is zero-tested, then copied if it is not zero. Through `&[u8]` the pages
    /// must not change during the call; for memory that does, see
    /// [`Encoder::encode_plain_pages_copied`].
    pub fn encode_plain_pages(
        &mut self,
        pages: &[(u64, &[u8])],
        out: &mut [u8],
    ) -> Result<PlainBatch> {
        let ps = self.cfg.page_size as usize;
        if let Some((_, page)) = pages.iter().find(|(_, p)| p.len() != ps) {
            return Err(Error::WrongPageLength {
                expected: ps,
                got: page.len(),
            });
        }
        self.plain_frames(&mut Borrowed(pages), out)
    }

    /// As [`Encoder::encode_plain_pages`], for pages the caller copies into the frames
    /// itself: each page is copied once, straight into its PLAIN record, and the copy is
    /// zero-tested (a zero page's record then becomes a ZERO record). The copy is the only
    /// read of the page and nothing of it is kept, so a page that changes meanwhile goes out
    /// as copied, under a CRC of what was copied, and the two ends' state cannot part: the
    /// bulk path for live guest memory (the C API's `pagewire_encoder_encode_plain_pages`).
    /// The same records and frames as [`Encoder::encode_plain_pages`]; a zero page costs a
    /// copy more.
    pub fn encode_plain_pages_copied(
        &mut self,
        pages: &mut dyn CopyPages,
        out: &mut [u8],
    ) -> Result<PlainBatch> {
        let page_size = self.cfg.page_size as usize;
        self.plain_frames(&mut Copied { pages, page_size }, out)
    }

    /// The frames of a bulk plain batch from `src`, built and sealed in `out`.
    fn plain_frames(&mut self, src: &mut impl PlainSource, out: &mut [u8]) -> Result<PlainBatch> {
        self.check_call(out)?;
        let ps = self.cfg.page_size as usize;
        let mut written = self.take_header(out);
        written += self.flush(&mut out[written..]);
        let body_room = self.cfg.frame_bytes as usize;
        let frame_room = FRAME_HEADER_LEN + body_room + FRAME_TRAILER_LEN;
        let count = src.count();
        let mut taken = 0;
        while taken < count && out.len() - written >= frame_room {
            let frame = &mut out[written..written + frame_room];
            let mut body = BodyWriter::new(&mut frame[FRAME_HEADER_LEN..][..body_room]);
            // the pfn codes of a frame count from 0, as the decoder's do
            let mut next_pfn = 0u64;
            while taken < count && body.room() >= ps + RECORD_OVERHEAD {
                let pfn = src.pfn(taken);
                let code = zigzag(pfn.wrapping_sub(next_pfn) as i64);
                next_pfn = pfn.wrapping_add(1);
                let start = body.len();
                if src.put(taken, code, &mut body) {
                    self.stats.zero.add(body.len() - start);
                } else {
                    self.stats.raw.add(body.len() - start);
                }
                self.owners.retire(pfn);
                taken += 1;
            }
            let body_len = body.len();
            written += self.seal(frame, body_len, body_len, false);
        }
        self.stats.bytes_in += (taken * ps) as u64;
        Ok(PlainBatch {
            pages: taken,
            written,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::tests::CFG;
    use crate::encoder::Features;
    use crate::wire::header::HEADER_LEN;

    /// Pages 0..n: every third zero, the rest distinct.
    fn page(k: usize) -> [u8; 4096] {
        if k % 3 == 0 {
            return [0; 4096];
        }
        core::array::from_fn(|i| (i * 7 + k * 13) as u8 | 1)
    }

    #[test]
    fn frames_are_byte_for_byte_those_of_the_page_by_page_plain_path() {
        let pages: [[u8; 4096]; 12] = core::array::from_fn(page);
        let batch: [(u64, &[u8]); 12] = core::array::from_fn(|k| (k as u64 * 5, &pages[k][..]));
        let mut one = [0u8; CFG.encoder_storage_len()];
        let mut two = [0u8; CFG.encoder_storage_len()];
        let mut by_page = Encoder::new(CFG, &mut one).unwrap();
        by_page.set_features(Features::NONE);
        let mut bulk = Encoder::new(CFG, &mut two).unwrap();
        // three frames' room: the batch takes every page in one call
        let mut out = [0u8; HEADER_LEN + 3 * (16384 + 64)];
        let mut expected = [0u8; 3 * (16384 + 64) + HEADER_LEN];
        let mut n = 0;
        for &(pfn, p) in &batch {
            let mut o = [0u8; CFG.max_output_len()];
            let w = by_page.encode_page(pfn, p, &mut o).unwrap();
            expected[n..n + w].copy_from_slice(&o[..w]);
            n += w;
        }
        let b = bulk.encode_plain_pages(&batch, &mut out).unwrap();
        assert_eq!(b.pages, 12);
        // the page-by-page encoder still holds its last frame open: every frame it sealed
        // is the same, and the batch's last frame holds the same records as that open one
        assert!(n > HEADER_LEN && b.written > n, "{n} {b:?}");
        assert_eq!(&out[..n], &expected[..n]);
        assert_eq!(by_page.stats().frames + 1, bulk.stats().frames);
        let (s, t) = (by_page.stats(), bulk.stats());
        assert_eq!((s.zero, s.raw, s.bytes_in), (t.zero, t.raw, t.bytes_in));
        assert_eq!(t.bytes_out, b.written as u64);
    }

    /// Pages 0..12 (every third zero) at pfns 0, 5, 10, ..., copied by the caller. `copies`
    /// counts the reads; `zero_from` makes every copy from that read on come out zero, as
    /// memory a vCPU clears meanwhile would.
    struct Memory {
        pages: [[u8; 4096]; 12],
        copies: usize,
        zero_from: usize,
    }

    impl CopyPages for Memory {
        fn count(&self) -> usize {
            self.pages.len()
        }
        fn pfn(&self, i: usize) -> u64 {
            i as u64 * 5
        }
        fn copy_page(&mut self, i: usize, dst: &mut [u8]) {
            if self.copies >= self.zero_from {
                dst.fill(0);
            } else {
                dst.copy_from_slice(&self.pages[i]);
            }
            self.copies += 1;
        }
    }

    #[test]
    fn copied_pages_make_the_frames_of_borrowed_ones_reading_each_page_once() {
        let pages: [[u8; 4096]; 12] = core::array::from_fn(page);
        let batch: [(u64, &[u8]); 12] = core::array::from_fn(|k| (k as u64 * 5, &pages[k][..]));
        let mut one = [0u8; CFG.encoder_storage_len()];
        let mut two = [0u8; CFG.encoder_storage_len()];
        let mut borrowed = Encoder::new(CFG, &mut one).unwrap();
        let mut copied = Encoder::new(CFG, &mut two).unwrap();
        let mut a = [0u8; HEADER_LEN + 3 * (16384 + 64)];
        let mut b = [0u8; HEADER_LEN + 3 * (16384 + 64)];
        let x = borrowed.encode_plain_pages(&batch, &mut a).unwrap();
        let mut mem = Memory {
            pages,
            copies: 0,
            zero_from: usize::MAX,
        };
        let y = copied.encode_plain_pages_copied(&mut mem, &mut b).unwrap();
        assert_eq!((x, &a[..x.written]), (y, &b[..y.written]));
        assert_eq!(mem.copies, 12);
        let (s, t) = (borrowed.stats(), copied.stats());
        assert_eq!((s.zero, s.raw, s.bytes_in), (t.zero, t.raw, t.bytes_in));
    }

    #[test]
    fn a_copied_page_goes_out_as_the_copy_found_it() {
        // the memory is cleared after the sixth copy: the last six go out as ZERO records,
        // whatever the pages held before
        let mut two = [0u8; CFG.encoder_storage_len()];
        let mut enc = Encoder::new(CFG, &mut two).unwrap();
        let mut mem = Memory {
            pages: core::array::from_fn(page),
            copies: 0,
            zero_from: 6,
        };
        let mut out = [0u8; HEADER_LEN + 3 * (16384 + 64)];
        let b = enc.encode_plain_pages_copied(&mut mem, &mut out).unwrap();
        assert_eq!((b.pages, mem.copies), (12, 12));
        // pages 0 and 3 of the first six are zero, then all six more
        assert_eq!(enc.stats().zero.pages, 2 + 6);
        assert_eq!(enc.stats().raw.pages, 4);
        let mut dmem = [0u8; CFG.decoder_storage_len()];
        let mut dec = crate::Decoder::new(CFG, crate::DecodeMode::CacheCopy, &mut dmem).unwrap();
        let mut image = [0x77u8; 60 * 4096];
        let used = dec
            .decode(
                &out[HEADER_LEN..b.written],
                &mut crate::MemoryImage::new(&mut image, 4096),
            )
            .unwrap();
        assert_eq!(used, b.written - HEADER_LEN);
        for k in 0..12 {
            let got = &image[k * 5 * 4096..][..4096];
            if k < 6 {
                assert_eq!(got, &mem.pages[k][..], "page {k}");
            } else {
                assert!(got.iter().all(|&x| x == 0), "page {k}");
            }
        }
    }

    #[test]
    fn a_page_of_the_wrong_length_is_refused_before_anything_is_written() {
        let mut mem = [0u8; CFG.encoder_storage_len()];
        let mut out = [0u8; CFG.max_output_len()];
        let mut enc = Encoder::new(CFG, &mut mem).unwrap();
        let (good, short) = ([1u8; 4096], [1u8; 4095]);
        let batch: [(u64, &[u8]); 2] = [(0, &good), (1, &short)];
        assert_eq!(
            enc.encode_plain_pages(&batch, &mut out),
            Err(Error::WrongPageLength {
                expected: 4096,
                got: 4095
            })
        );
        assert_eq!(enc.stats().bytes_out, 0);
        assert_eq!(enc.stats().pages(), 0);
    }
}
