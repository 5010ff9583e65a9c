//! Sealing: the records of a finished body become one frame, LZ4-compressed where that
//! saves bytes, with its header and CRC; and the header and CRC of a frame built in place.

use super::Encoder;
use crate::wire::frame::{Frame, FrameHeader};

impl Encoder<'_> {
    /// Seals the current body into a frame at the front of `out`; returns its length.
    pub(super) fn flush(&mut self, out: &mut [u8]) -> usize {
        if self.body.is_empty() {
            return 0;
        }
        let body = self.body.written();
        let mut frame = Frame::new_unchecked(&mut *out);
        let mut wire_len = body.len();
        let mut lz4 = false;
        if self.lz4 {
            if let Some(n) = self.lz4_tables.compress(body, frame.body_mut()) {
                if n < body.len() {
                    wire_len = n;
                    lz4 = true;
                }
            }
        }
        if !lz4 {
            frame.body_mut()[..wire_len].copy_from_slice(body);
        }
        let raw_len = self.body.len();
        let total = self.seal(out, wire_len, raw_len, lz4);
        self.body.clear();
        self.frame_inserts = 0;
        self.next_pfn = 0;
        total
    }

    /// Seals the frame at the front of `out` whose body (`wire_len` bytes as sent, `raw_len`
    /// once decompressed) is already in place after the header: writes the header and the
    /// CRC, counts the frame and takes the next sequence number. Returns its length.
    pub(super) fn seal(
        &mut self,
        out: &mut [u8],
        wire_len: usize,
        raw_len: usize,
        lz4: bool,
    ) -> usize {
        let mut frame = Frame::new_unchecked(out);
        FrameHeader {
            lz4,
            stream_id: self.cfg.stream_id,
            seq: self.frame_seq,
            wire_len: wire_len as u32,
            raw_len: raw_len as u32,
        }
        .emit(&mut frame);
        let total = frame.fill_crc();
        self.stats.frames += 1;
        self.stats.frames_lz4 += u64::from(lz4);
        self.stats.bytes_out += total as u64;
        self.frame_seq = self.frame_seq.wrapping_add(1);
        total
    }
}
