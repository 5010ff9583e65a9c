//! The trait every stream encoder implements, so that replay and the migration engine do
//! not care who encodes.

use anyhow::Result;
use pagewire::EncoderStats;

/// A stream encoder: every call appends the finished stream bytes it has to `out`.
pub trait StreamEncoder {
    /// Encodes one page.
    fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut Vec<u8>) -> Result<()>;
    /// Appends a blob (at most one page long: the offload ring carries a page at a time).
    fn append_blob(&mut self, tag: u32, data: &[u8], out: &mut Vec<u8>) -> Result<()>;
    /// Ends the iteration; all of it is in `out` afterwards.
    fn end_iteration(&mut self, out: &mut Vec<u8>) -> Result<()>;
    /// Ends the stream; all of it is in `out` afterwards.
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()>;
    /// Counters, exact after `end_iteration` and `finish`.
    fn stats(&self) -> EncoderStats;
    /// Switches LZ4 on the frames from the next one on (where the stream header allows
    /// it); returns whether it is on now. An encoder that cannot switch keeps its setting.
    fn set_lz4(&mut self, on: bool) -> bool;
    /// True while frames get LZ4.
    fn lz4(&self) -> bool;
    /// Sends the pages from the next one on whole, past the cache (PLAIN records: no
    /// content lookup, no deltas, no copy into the cache), or back as configured; returns
    /// whether it does now. An encoder that cannot switch keeps its setting.
    fn set_plain(&mut self, _on: bool) -> bool {
        false
    }
    /// Sends the pages `pfns` as plain pages, a zero test and the page whole: each page is
    /// read by `read` and the finished stream handed to `send` a piece at a time. Where the
    /// encoder can, `read` copies each page straight into its record, the only copy of it,
    /// and `send` gets the frames where they were built
    /// (`Encoder::encode_plain_pages_copied`); else each page is read into `page` (a page's
    /// length) and encoded as by [`StreamEncoder::encode_page`]. For an encoder whose plain
    /// pages are on ([`StreamEncoder::set_plain`]).
    fn send_plain_pages(
        &mut self,
        pfns: &[u64],
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
        page: &mut [u8],
        send: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut out = Vec::new();
        for &pfn in pfns {
            read(pfn, page)?;
            self.encode_page(pfn, page, &mut out)?;
            send(&out)?;
            out.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a page as its pfn and first byte; nothing else.
    struct PfnAndFirstByte;

    impl StreamEncoder for PfnAndFirstByte {
        fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut Vec<u8>) -> Result<()> {
            out.push(pfn as u8);
            out.push(page[0]);
            Ok(())
        }
        fn append_blob(&mut self, _: u32, _: &[u8], _: &mut Vec<u8>) -> Result<()> {
            Ok(())
        }
        fn end_iteration(&mut self, _: &mut Vec<u8>) -> Result<()> {
            Ok(())
        }
        fn finish(&mut self, _: &mut Vec<u8>) -> Result<()> {
            Ok(())
        }
        fn stats(&self) -> EncoderStats {
            EncoderStats::default()
        }
        fn set_lz4(&mut self, _: bool) -> bool {
            false
        }
        fn lz4(&self) -> bool {
            false
        }
    }

    #[test]
    fn without_a_bulk_path_plain_pages_go_one_by_one_each_read_once() {
        let mut reads = Vec::new();
        let mut sent = Vec::new();
        let mut page = [0u8; 8];
        PfnAndFirstByte
            .send_plain_pages(
                &[3, 1, 2],
                &mut |pfn, p| {
                    reads.push(pfn);
                    p.fill(pfn as u8 * 10);
                    Ok(())
                },
                &mut page,
                &mut |piece| {
                    sent.push(piece.to_vec());
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(reads, [3, 1, 2]);
        assert_eq!(sent, [vec![3, 30], vec![1, 10], vec![2, 20]]);
    }
}
