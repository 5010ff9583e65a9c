//! The stream header: 32 bytes that open every stream and carry what both ends agree on
//! (a [`Config`](crate::Config), which reads and writes itself through this view), with a
//! CRC-32C of their own.

use super::{read_u32, read_u8, write_u32, write_u8};
use crate::crc32c;
use crate::error::{Error, Result};

/// Where each field of the stream header sits: written once, for the parser and the writer.
pub mod field {
    use crate::wire::Field;

    /// [`MAGIC`](super::MAGIC).
    pub const MAGIC: Field = 0..4;
    /// [`FORMAT_VERSION`](super::FORMAT_VERSION).
    pub const VERSION: usize = 4;
    /// Flags: [`FLAG_LZ4`](super::FLAG_LZ4).
    pub const FLAGS: usize = 5;
    pub const BLOCKS_PER_PAGE: usize = 6;
    /// One reserved byte, zero.
    pub const RESERVED: usize = 7;
    pub const PAGE_SIZE: Field = 8..12;
    pub const CACHE_PAGES: Field = 12..16;
    pub const FRAME_BYTES: Field = 16..20;
    pub const DELTA_THRESHOLD: Field = 20..24;
    pub const STREAM_ID: Field = 24..28;
    /// CRC-32C of every byte before it.
    pub const CRC: Field = 28..32;
}

/// Magic bytes that open every pagewire stream.
pub const MAGIC: [u8; 4] = *b"PGWR";
/// Wire format version written by this crate (see `docs/FORMAT.md`).
pub const FORMAT_VERSION: u8 = 3;
/// Length of the stream header in bytes.
pub const HEADER_LEN: usize = field::CRC.end;
/// Flag: frame bodies may be LZ4-compressed.
pub const FLAG_LZ4: u8 = 1;

/// A stream header at the front of a buffer: a view that reads and writes its fields in place.
#[derive(Debug, Clone)]
pub struct StreamHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> StreamHeader<T> {
    /// A view without checks: fields past the end of `buffer` read as zero.
    pub const fn new_unchecked(buffer: T) -> Self {
        StreamHeader { buffer }
    }

    /// A view of the header that starts `buffer`, checked in the order a reader meets the
    /// bytes: the magic (`BadMagic`), the version (`UnsupportedVersion`), then the length
    /// (`Truncated`), so that a short stream of another kind is named as such.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        match b.get(field::MAGIC) {
            None => return Err(Error::Truncated),
            Some(magic) if magic != MAGIC => return Err(Error::BadMagic),
            Some(_) => {}
        }
        match b.get(field::VERSION) {
            None => return Err(Error::Truncated),
            Some(&v) if v != FORMAT_VERSION => return Err(Error::UnsupportedVersion(v)),
            Some(_) => {}
        }
        if b.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(StreamHeader { buffer })
    }

    /// The buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::VERSION)
    }

    pub fn flags(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::FLAGS)
    }

    pub fn blocks_per_page(&self) -> u8 {
        read_u8(self.buffer.as_ref(), field::BLOCKS_PER_PAGE)
    }

    /// True when a reserved bit is set: flags other than LZ4, or the reserved byte.
    pub fn reserved_set(&self) -> bool {
        self.flags() & !FLAG_LZ4 != 0 || read_u8(self.buffer.as_ref(), field::RESERVED) != 0
    }

    pub fn page_size(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::PAGE_SIZE)
    }

    pub fn cache_pages(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::CACHE_PAGES)
    }

    pub fn frame_bytes(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::FRAME_BYTES)
    }

    pub fn delta_threshold(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::DELTA_THRESHOLD)
    }

    pub fn stream_id(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::STREAM_ID)
    }

    /// `CrcMismatch` unless the CRC field matches the bytes before it.
    pub fn check_crc(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        match b.get(..field::CRC.start) {
            Some(covered) if crc32c(covered) == read_u32(b, field::CRC) => Ok(()),
            _ => Err(Error::CrcMismatch),
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> StreamHeader<T> {
    /// Writes the magic and this crate's format version, and clears the reserved byte.
    pub fn set_identity(&mut self) {
        let b = self.buffer.as_mut();
        if let Some(magic) = b.get_mut(field::MAGIC) {
            magic.copy_from_slice(&MAGIC);
        }
        write_u8(b, field::VERSION, FORMAT_VERSION);
        write_u8(b, field::RESERVED, 0);
    }

    pub fn set_flags(&mut self, value: u8) {
        write_u8(self.buffer.as_mut(), field::FLAGS, value);
    }

    pub fn set_blocks_per_page(&mut self, value: u8) {
        write_u8(self.buffer.as_mut(), field::BLOCKS_PER_PAGE, value);
    }

    pub fn set_page_size(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::PAGE_SIZE, value);
    }

    pub fn set_cache_pages(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::CACHE_PAGES, value);
    }

    pub fn set_frame_bytes(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::FRAME_BYTES, value);
    }

    pub fn set_delta_threshold(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::DELTA_THRESHOLD, value);
    }

    pub fn set_stream_id(&mut self, value: u32) {
        write_u32(self.buffer.as_mut(), field::STREAM_ID, value);
    }

    /// Writes the CRC of every byte before it (nothing if the buffer is shorter than the
    /// header).
    pub fn fill_crc(&mut self) {
        let b = self.buffer.as_mut();
        if let Some(covered) = b.get(..field::CRC.start) {
            let crc = crc32c(covered);
            write_u32(b, field::CRC, crc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    #[test]
    fn the_view_reads_each_field_where_it_was_written() {
        let c = Config {
            stream_id: 0x0102_0304,
            lz4: false,
            ..Config::DEFAULT
        };
        let h = c.header_bytes();
        let v = StreamHeader::new_checked(&h[..]).unwrap();
        assert_eq!(
            (
                v.version(),
                v.flags(),
                v.blocks_per_page(),
                v.reserved_set()
            ),
            (FORMAT_VERSION, 0, 4, false)
        );
        assert_eq!((v.page_size(), v.cache_pages()), (4096, 16384));
        assert_eq!((v.frame_bytes(), v.delta_threshold()), (65536, 2048));
        assert_eq!(v.check_crc(), Ok(()));
        assert_eq!(&h[field::STREAM_ID], &[4, 3, 2, 1]);
        // a short stream of another kind is named as such; a short one of ours as truncated
        assert_eq!(
            StreamHeader::new_checked(&b"PNG\x0d\x0a"[..]).err(),
            Some(Error::BadMagic)
        );
        assert_eq!(
            StreamHeader::new_checked(&h[..5]).err(),
            Some(Error::Truncated)
        );
        // a reserved bit set behind a valid CRC is malformed
        for (at, bit) in [(field::RESERVED, 1), (field::FLAGS, 2)] {
            let mut r = h;
            r[at] |= bit;
            let mut view = StreamHeader::new_unchecked(&mut r[..]);
            view.fill_crc();
            assert!(view.reserved_set());
            assert!(matches!(Config::from_header(&r), Err(Error::Malformed(_))));
        }
        // the unchecked view of a short buffer reads zeros and writes nothing
        let mut tiny = [0u8; 6];
        let mut t = StreamHeader::new_unchecked(&mut tiny[..]);
        t.set_identity();
        t.set_page_size(4096);
        t.fill_crc();
        assert_eq!(t.page_size(), 0);
        assert_eq!(&tiny, b"PGWR\x03\x00");
    }
}
