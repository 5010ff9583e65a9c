//! Frame layout: a 20-byte header, the body (records, stored or LZ4-compressed) and a
//! CRC-32C over header and body.

use crate::crc32c;
use crate::error::{Error, Result};

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = 20;
/// Bytes of the CRC trailer.
pub const FRAME_TRAILER_LEN: usize = 4;
/// The only frame type of format version 1.
pub const FRAME_TYPE_RECORDS: u8 = 1;
/// Flag: the body is one LZ4 block.
pub const FLAG_LZ4: u8 = 1;

/// The fields of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub lz4: bool,
    pub stream_id: u32,
    pub seq: u32,
    pub wire_len: u32,
    pub raw_len: u32,
}

impl FrameHeader {
    /// Total frame length on the wire.
    pub fn frame_len(&self) -> usize {
        FRAME_HEADER_LEN + self.wire_len as usize + FRAME_TRAILER_LEN
    }

    /// Writes the header into `out[..FRAME_HEADER_LEN]`.
    pub fn write(&self, out: &mut [u8]) {
        out[0] = FRAME_TYPE_RECORDS;
        out[1] = if self.lz4 { FLAG_LZ4 } else { 0 };
        out[2] = 0;
        out[3] = 0;
        out[4..8].copy_from_slice(&self.stream_id.to_le_bytes());
        out[8..12].copy_from_slice(&self.seq.to_le_bytes());
        out[12..16].copy_from_slice(&self.wire_len.to_le_bytes());
        out[16..20].copy_from_slice(&self.raw_len.to_le_bytes());
    }

    /// Parses a header and checks its fields against the largest body `frame_bytes` allows.
    /// Needs only the first `FRAME_HEADER_LEN` bytes, so a reader can learn the frame length.
    pub fn parse(buf: &[u8], frame_bytes: u32) -> Result<FrameHeader> {
        let h = buf.get(..FRAME_HEADER_LEN).ok_or(Error::Truncated)?;
        if h[0] != FRAME_TYPE_RECORDS {
            return Err(Error::Malformed("unknown frame type"));
        }
        if h[1] & !FLAG_LZ4 != 0 || h[2] != 0 || h[3] != 0 {
            return Err(Error::Malformed("reserved frame header bits set"));
        }
        let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
        let fh = FrameHeader {
            lz4: h[1] & FLAG_LZ4 != 0,
            stream_id: u32_at(4),
            seq: u32_at(8),
            wire_len: u32_at(12),
            raw_len: u32_at(16),
        };
        let max_wire = lz4_flex::block::get_maximum_output_size(frame_bytes as usize);
        if fh.raw_len > frame_bytes
            || fh.wire_len as usize > max_wire
            || fh.raw_len == 0
            || (!fh.lz4 && fh.wire_len != fh.raw_len)
        {
            return Err(Error::LengthOutOfRange);
        }
        Ok(fh)
    }
}

/// Checks the CRC trailer of a complete frame.
pub fn check_crc(frame: &[u8]) -> Result<()> {
    let split = frame
        .len()
        .checked_sub(FRAME_TRAILER_LEN)
        .ok_or(Error::Truncated)?;
    let (data, crc) = frame.split_at(split);
    if crc32c(data).to_le_bytes() != crc {
        return Err(Error::CrcMismatch);
    }
    Ok(())
}

/// Record tags inside a frame body (see `docs/FORMAT.md`).
pub mod tag {
    /// An all-zero page: `pfn`.
    pub const ZERO: u8 = 0x01;
    /// A page equal to a cached page: `pfn age`.
    pub const DUP: u8 = 0x02;
    /// A page sent whole: `pfn bytes[page_size]`.
    pub const RAW: u8 = 0x03;
    /// XOR/RLE delta against a cached page: `pfn age delta`.
    pub const DELTA: u8 = 0x04;
    /// Per-block mix: `pfn kinds [age] blocks...`.
    pub const BLOCKS: u8 = 0x05;
    /// XOR/RLE delta against a cached page, whose slot then holds the result instead of a new
    /// slot taking it (format version 2): `pfn age delta`.
    pub const PATCH: u8 = 0x06;
    /// End of a pre-copy iteration: `iteration`.
    pub const ITERATION_END: u8 = 0x10;
    /// Opaque caller blob: `blob_tag len bytes[len]`.
    pub const BLOB: u8 = 0x11;
    /// End of stream: `page_records`.
    pub const END: u8 = 0x12;
}

/// Two-bit block kinds inside a BLOCKS record.
pub mod block_kind {
    /// All zero.
    pub const ZERO: u8 = 0;
    /// Equal to a block of a cached page: `ref`.
    pub const REF: u8 = 1;
    /// Sent whole.
    pub const LITERAL: u8 = 2;
    /// XOR/RLE delta against the same block of the record's base page.
    pub const DELTA: u8 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> FrameHeader {
        FrameHeader {
            lz4: true,
            stream_id: 9,
            seq: 3,
            wire_len: 100,
            raw_len: 300,
        }
    }

    #[test]
    fn header_round_trips() {
        let mut b = [0u8; FRAME_HEADER_LEN];
        header().write(&mut b);
        assert_eq!(FrameHeader::parse(&b, 65536), Ok(header()));
        assert_eq!(header().frame_len(), 124);
    }

    #[test]
    fn header_limits() {
        let mut b = [0u8; FRAME_HEADER_LEN];
        header().write(&mut b);
        assert_eq!(FrameHeader::parse(&b[..19], 65536), Err(Error::Truncated));
        assert_eq!(FrameHeader::parse(&b, 200), Err(Error::LengthOutOfRange)); // raw > frame_bytes
        let mut t = b;
        t[0] = 2;
        assert_eq!(
            FrameHeader::parse(&t, 65536),
            Err(Error::Malformed("unknown frame type"))
        );
        let mut r = b;
        r[2] = 1;
        assert!(matches!(
            FrameHeader::parse(&r, 65536),
            Err(Error::Malformed(_))
        ));
        let stored = FrameHeader {
            lz4: false,
            ..header()
        };
        stored.write(&mut b);
        assert_eq!(FrameHeader::parse(&b, 65536), Err(Error::LengthOutOfRange)); // wire != raw
        let empty = FrameHeader {
            lz4: false,
            wire_len: 0,
            raw_len: 0,
            ..header()
        };
        empty.write(&mut b);
        assert_eq!(FrameHeader::parse(&b, 65536), Err(Error::LengthOutOfRange));
    }

    #[test]
    fn crc_trailer() {
        let mut f = [1u8, 2, 3, 0, 0, 0, 0];
        let c = crate::crc32c(&f[..3]);
        f[3..].copy_from_slice(&c.to_le_bytes());
        assert_eq!(check_crc(&f), Ok(()));
        f[0] ^= 1;
        assert_eq!(check_crc(&f), Err(Error::CrcMismatch));
        assert_eq!(check_crc(&f[..2]), Err(Error::Truncated));
    }
}
