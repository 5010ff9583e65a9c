//! Writing records into a frame body, for the encoder.

use super::{pack_kinds, BlockKind, RecordTag, KINDS_PER_BYTE};
use crate::wire::varint;

/// A frame body being filled with records, front to back. The writer checks nothing: the
/// encoder keeps room for the worst case of each record before it starts one (a page and
/// `RECORD_OVERHEAD`, or a small record), so the indexing here never reaches past the end.
pub struct BodyWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> BodyWriter<'a> {
    /// An empty body over `buf` (its capacity).
    pub fn new(buf: &'a mut [u8]) -> Self {
        BodyWriter { buf, len: 0 }
    }

    /// Bytes written so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the first record.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes still free.
    #[inline]
    pub fn room(&self) -> usize {
        self.buf.len() - self.len
    }

    /// The records written so far.
    #[inline]
    pub fn written(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Empties the body for the next frame.
    #[inline]
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Opens a page record: its tag and the pfn's zigzag code. Returns where the record
    /// starts, so the caller can count its bytes.
    #[inline]
    pub fn page(&mut self, tag: RecordTag, pfn_code: u64) -> usize {
        let start = self.len;
        self.buf[start] = tag as u8;
        self.len += 1;
        self.varint(pfn_code);
        start
    }

    /// A record of a tag and one varint: ITERATION_END or END.
    pub fn counter(&mut self, tag: RecordTag, value: u64) {
        self.buf[self.len] = tag as u8;
        self.len += 1;
        self.varint(value);
    }

    /// A BLOB record.
    pub fn blob(&mut self, blob_tag: u32, data: &[u8]) {
        self.counter(RecordTag::Blob, u64::from(blob_tag));
        self.varint(data.len() as u64);
        self.bytes(data);
    }

    /// Appends a varint.
    #[inline]
    pub fn varint(&mut self, value: u64) {
        varint::put(self.buf, &mut self.len, value);
    }

    /// Appends bytes as they are.
    #[inline]
    pub fn bytes(&mut self, data: &[u8]) {
        self.buf[self.len..self.len + data.len()].copy_from_slice(data);
        self.len += data.len();
    }

    /// Appends `n` bytes for the caller to fill in place, and returns them.
    #[inline]
    pub fn fill(&mut self, n: usize) -> &mut [u8] {
        let at = self.len;
        self.len += n;
        &mut self.buf[at..at + n]
    }

    /// Drops everything written from `len` on: a record begun and given up.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Appends the packed kinds of a BLOCKS record.
    pub fn kinds(&mut self, kinds: &[BlockKind]) {
        for four in kinds.chunks(KINDS_PER_BYTE) {
            self.buf[self.len] = pack_kinds(four);
            self.len += 1;
        }
    }
}
