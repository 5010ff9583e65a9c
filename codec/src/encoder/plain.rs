//! Plain pages in bulk, built where the caller wants the stream: zero pages as ZERO records,
//! every other page whole as a PLAIN record, in stored frames written straight into the
//! caller's buffer. Each page is read by the zero test and copied once; the frame's CRC is
//! taken over the buffer, where the frame still sits in the CPU cache. Page by page
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
    /// Nothing of a page is kept after its copy, so the two ends' state never depends on
    /// the bytes read: unlike the page-by-page path, this one would need no private copy of
    /// memory that changes meanwhile (a page changed between the zero test and the copy
    /// would go out as it was at one of them, under a CRC of what was copied). Through this
    /// `&[u8]` interface the pages must still not change during the call.
    pub fn encode_plain_pages(
        &mut self,
        pages: &[(u64, &[u8])],
        out: &mut [u8],
    ) -> Result<PlainBatch> {
        self.check_call(out)?;
        let ps = self.cfg.page_size as usize;
        if let Some((_, page)) = pages.iter().find(|(_, p)| p.len() != ps) {
            return Err(Error::WrongPageLength {
                expected: ps,
                got: page.len(),
            });
        }
        let mut written = self.take_header(out);
        written += self.flush(&mut out[written..]);
        let body_room = self.cfg.frame_bytes as usize;
        let frame_room = FRAME_HEADER_LEN + body_room + FRAME_TRAILER_LEN;
        let mut taken = 0;
        while taken < pages.len() && out.len() - written >= frame_room {
            let frame = &mut out[written..written + frame_room];
            let mut body = BodyWriter::new(&mut frame[FRAME_HEADER_LEN..][..body_room]);
            // the pfn codes of a frame count from 0, as the decoder's do
            let mut next_pfn = 0u64;
            for &(pfn, page) in &pages[taken..] {
                if body.room() < ps + RECORD_OVERHEAD {
                    break;
                }
                let code = zigzag(pfn.wrapping_sub(next_pfn) as i64);
                next_pfn = pfn.wrapping_add(1);
                let start = body.len();
                if is_zero(page) {
                    body.page(RecordTag::Zero, code);
                    self.stats.zero.add(body.len() - start);
                } else {
                    body.page(RecordTag::Plain, code);
                    body.bytes(page);
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
    use crate::encoder::Features;
    use crate::wire::header::HEADER_LEN;
    use crate::Config;

    const CFG: Config = Config {
        cache_pages: 8,
        frame_bytes: 16384,
        lz4: false,
        ..Config::DEFAULT
    };

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
