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
    /// Encodes `pages` (pfn, content) as plain pages, a zero test and the page whole, in
    /// bulk where the encoder can (`Encoder::encode_plain_pages`: one copy of each page
    /// into its frame); as [`StreamEncoder::encode_page`] one by one where it cannot. For
    /// an encoder whose plain pages are on ([`StreamEncoder::set_plain`]).
    fn encode_plain_pages(&mut self, pages: &[(u64, &[u8])], out: &mut Vec<u8>) -> Result<()> {
        for &(pfn, page) in pages {
            self.encode_page(pfn, page, out)?;
        }
        Ok(())
    }
}
