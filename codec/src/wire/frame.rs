//! Frames: a 20-byte header, the body (records, stored or LZ4-compressed) and a CRC-32C
//! over header and body.

use super::{read_u32, read_u8, write_u32, write_u8};
use crate::crc32c;
use crate::error::{Error, Result};

/// Where each field of the frame header sits: written once, for the parser and the writer.
pub mod field {
    use crate::wire::Field;

    /// Frame type: [`FRAME_TYPE_RECORDS`](super::FRAME_TYPE_RECORDS).
    pub const TYPE: usize = 0;
    /// Flags: [`FLAG_LZ4`](super::FLAG_LZ4).
    pub const FLAGS: usize = 1;
    /// Two reserved bytes, zero.
    pub const RESERVED: Field = 2..4;
    pub const STREAM_ID: Field = 4..8;
    pub const SEQ: Field = 8..12;
    /// Bytes of the body as sent.
    pub const WIRE_LEN: Field = 12..16;
    /// Bytes of the body after decompression.
    pub const RAW_LEN: Field = 16..20;
    /// The body follows the header.
    pub const BODY: usize = RAW_LEN.end;
}

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: usize = field::BODY;
/// Bytes of the CRC trailer.
pub const FRAME_TRAILER_LEN: usize = 4;
/// The only frame type of format version 2.
pub const FRAME_TYPE_RECORDS: u8 = 1;
/// Flag: the body is one LZ4 block.
pub const FLAG_LZ4: u8 = 1;

/// A frame at the front of a buffer: a view that reads and writes its fields in place.
#[derive(Debug, Clone)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// A view without checks: fields past the end of `buffer` read as zero.
    pub const fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// A view of the frame that starts `buffer`, which must hold at least its header (what a
    /// reader needs to learn the frame's length); `Truncated` otherwise.
    pub fn new_checked(buffer: T) -> Result<Self> {
        if buffer.as_ref().len() < FRAME_HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Frame { buffer })
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The frame type byte.
    pub fn frame_type(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::TYPE)
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::FLAGS)
    }

    /// True when a reserved bit is set: flags other than LZ4, or the reserved bytes.
    pub fn reserved_set(&self) -> bool {
        let b = self.buffer.as_ref();
        self.flags() & !FLAG_LZ4 != 0 || field::RESERVED.into_iter().any(|at| read_u8(b, at) != 0)
    }

    pub fn stream_id(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::STREAM_ID)
    }

    pub fn seq(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::SEQ)
    }

    pub fn wire_len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::WIRE_LEN)
    }

    pub fn raw_len(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::RAW_LEN)
    }

    /// The body as sent (stored or LZ4), `wire_len` bytes after the header; empty while the
    /// buffer does not hold it whole.
    pub fn body(&self) -> &[u8] {
        body_of(self.buffer.as_ref())
    }

    /// Checks the CRC trailer, the last four bytes of the buffer, which must be exactly the
    /// frame.
    pub fn check_crc(&self) -> Result<()> {
        let frame = self.buffer.as_ref();
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
}

impl<'b> Frame<&'b [u8]> {
    /// The body (see [`Frame::body`]), borrowed for as long as the buffer.
    pub fn into_body(self) -> &'b [u8] {
        body_of(self.buffer)
    }
}

/// The `wire_len` bytes after the header of the frame that starts `buf`; empty while `buf`
/// does not hold them.
fn body_of(buf: &[u8]) -> &[u8] {
    let end = FRAME_HEADER_LEN.saturating_add(read_u32(buf, field::WIRE_LEN) as usize);
    buf.get(FRAME_HEADER_LEN..end).unwrap_or(&[])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_frame_type(&mut self, value: u8) {
        write_u8(self.buffer.as_mut(), field::TYPE, value);
    }

    pub fn set_flags(&mut self, value: u8) {
        write_u8(self.buffer.as_mut(), field::FLAGS, value);
    }

    /// Zeroes the reserved bytes.
    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        for at in field::RESERVED {
            write_u8(b, at, 0);
        }
    }

    pub fn set_stream_id(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::STREAM_ID, value);
    }

    pub fn set_seq(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::SEQ, value);
    }

    pub fn set_wire_len(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::WIRE_LEN, value);
    }

    pub fn set_raw_len(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::RAW_LEN, value);
    }

    /// Everything after the header, where the writer puts the body.
    pub fn body_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(FRAME_HEADER_LEN..)
            .unwrap_or(&mut [])
    }

    /// Writes the CRC trailer after the header and `wire_len` bytes of body; returns the
    /// frame's length (0, writing nothing, if the buffer cannot hold the trailer).
    pub fn fill_crc(&mut self) -> usize {
        let end = FRAME_HEADER_LEN + self.wire_len() as usize;
        let buf = self.buffer.as_mut();
        match buf.get(..end).map(crc32c) {
            Some(crc) if end + FRAME_TRAILER_LEN <= buf.len() => {
                write_u32(buf, end..end + FRAME_TRAILER_LEN, crc);
                end + FRAME_TRAILER_LEN
            }
            _ => 0,
        }
    }
}

/// The fields of a frame header, as the encoder means them and the decoder checks them.
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

    /// Parses the header at the front of `buf` and checks its fields against the largest
    /// body `frame_bytes` allows. Needs only the first `FRAME_HEADER_LEN` bytes, so a
    /// reader can learn the frame length.
    pub fn parse(buf: &[u8], frame_bytes: u32) -> Result<FrameHeader> {
        FrameHeader::from_frame(&Frame::new_checked(buf)?, frame_bytes)
    }

    /// The header of a checked frame, its fields checked against the largest body
    /// `frame_bytes` allows.
    pub fn from_frame<T: AsRef<[u8]>>(frame: &Frame<T>, frame_bytes: u32) -> Result<FrameHeader> {
        if frame.frame_type() != FRAME_TYPE_RECORDS {
            return Err(Error::Malformed("unknown frame type"));
        }
        if frame.reserved_set() {
            return Err(Error::Malformed("reserved frame header bits set"));
        }
        let fh = FrameHeader {
            lz4: frame.flags() & FLAG_LZ4 != 0,
            stream_id: frame.stream_id(),
            seq: frame.seq(),
            wire_len: frame.wire_len(),
            raw_len: frame.raw_len(),
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

    /// Writes the header's fields into `frame`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, frame: &mut Frame<T>) {
        frame.set_frame_type(FRAME_TYPE_RECORDS);
        frame.set_flags(if self.lz4 { FLAG_LZ4 } else { 0 });
        frame.clear_reserved();
        frame.set_stream_id(self.stream_id);
        frame.set_seq(self.seq);
        frame.set_wire_len(self.wire_len);
        frame.set_raw_len(self.raw_len);
    }

    /// Writes the header into `out[..FRAME_HEADER_LEN]` (the fields that fit, if `out` is
    /// shorter).
    pub fn write(&self, out: &mut [u8]) {
        self.emit(&mut Frame::new_unchecked(out));
    }
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
        let check = |f: &[u8]| Frame::new_unchecked(f).check_crc();
        assert_eq!(check(&f), Ok(()));
        f[0] ^= 1;
        assert_eq!(check(&f), Err(Error::CrcMismatch));
        assert_eq!(check(&f[..2]), Err(Error::Truncated));
    }

    #[test]
    fn the_view_writes_what_it_reads() {
        let mut b = [0xffu8; FRAME_HEADER_LEN + 3 + FRAME_TRAILER_LEN];
        let mut f = Frame::new_checked(&mut b[..]).unwrap();
        FrameHeader {
            wire_len: 3,
            raw_len: 3,
            lz4: false,
            ..header()
        }
        .emit(&mut f);
        f.body_mut()[..3].copy_from_slice(&[7, 8, 9]);
        assert_eq!(f.fill_crc(), b.len());
        let f = Frame::new_checked(&b[..]).unwrap();
        assert_eq!((f.stream_id(), f.seq(), f.body()), (9, 3, &[7u8, 8, 9][..]));
        assert!(!f.reserved_set());
        assert_eq!(f.check_crc(), Ok(()));
        // a view of a short buffer reads zeros and writes nothing, never panics
        let short = Frame::new_unchecked(&b[..6]);
        assert_eq!((short.seq(), short.body()), (0, &[][..]));
        assert_eq!(Frame::new_checked(&b[..19]).err(), Some(Error::Truncated));
        let mut tiny = [0u8; 9];
        let mut t = Frame::new_unchecked(&mut tiny[..]);
        header().emit(&mut t);
        assert_eq!(t.fill_crc(), 0);
        assert_eq!(tiny, [1, 1, 0, 0, 9, 0, 0, 0, 0]);
    }
}
