//! A frame's checks before any of its body is read (header, length, CRC, stream, order),
//! and its body, decompressed where it was sent LZ4.

use super::Decoder;
use crate::error::{Error, Result};
use crate::wire::frame::{Frame, FrameHeader};

impl Decoder<'_> {
    /// Checks `frame` (exactly one frame) in the order `docs/FORMAT.md` gives: header
    /// fields, length, CRC, stream id, sequence number.
    pub(super) fn check_frame(&self, frame: &[u8]) -> Result<FrameHeader> {
        let view = Frame::new_checked(frame)?;
        let fh = FrameHeader::from_frame(&view, self.cfg.frame_bytes)?;
        let len = fh.frame_len();
        if frame.len() < len {
            return Err(Error::Truncated);
        }
        if frame.len() > len {
            return Err(Error::LengthOutOfRange);
        }
        view.check_crc()?;
        if fh.stream_id != self.cfg.stream_id {
            return Err(Error::WrongStream);
        }
        if fh.seq != self.expected_seq {
            return Err(Error::FrameOutOfOrder {
                expected: self.expected_seq,
                got: fh.seq,
            });
        }
        Ok(fh)
    }
}

/// The records of a checked frame: its body as stored, or decompressed into `buf`, which
/// must then come to exactly `raw_len` bytes. `lz4_allowed` is the stream header's flag.
pub(super) fn body<'b>(
    frame: &'b [u8],
    fh: &FrameHeader,
    lz4_allowed: bool,
    buf: &'b mut [u8],
) -> Result<&'b [u8]> {
    let wire = Frame::new_unchecked(frame).into_body();
    if !fh.lz4 {
        return Ok(wire);
    }
    if !lz4_allowed {
        return Err(Error::Malformed(
            "LZ4 frame in a stream whose header disables LZ4",
        ));
    }
    let raw_len = fh.raw_len as usize;
    let out = buf.get_mut(..raw_len).ok_or(Error::LengthOutOfRange)?;
    match lz4_flex::block::decompress_into(wire, out) {
        Ok(n) if n == raw_len => Ok(out),
        _ => Err(Error::BadCompression),
    }
}
