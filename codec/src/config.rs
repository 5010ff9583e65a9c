//! Stream configuration, its validation, the storage it needs, and its stream header (the
//! bytes themselves are [`StreamHeader`]'s, in the wire layer).

use crate::error::{Error, Result};
use crate::wire::frame::{FRAME_HEADER_LEN, FRAME_TRAILER_LEN};
use crate::wire::header::{self, StreamHeader, HEADER_LEN};

/// Smallest supported page size.
pub const MIN_PAGE_SIZE: u32 = 4096;
/// Largest supported page size.
pub const MAX_PAGE_SIZE: u32 = 65536;
/// Largest cache: 2^26 pages (256 GiB of 4 KiB pages).
pub const MAX_CACHE_PAGES: u32 = 1 << 26;
/// Largest frame body.
pub const MAX_FRAME_BYTES: u32 = 1 << 24;
/// Worst-case bytes a page record adds to a frame beyond the page itself.
pub const RECORD_OVERHEAD: usize = 32;
/// Most blocks a page is split into (`blocks_per_page` is 1, 2, 4 or this).
pub const MAX_BLOCKS_PER_PAGE: usize = 8;

/// Frame bodies shorter than this compress with lz4_flex's small hash table (16-bit
/// entries), longer ones with its large one: the choice `compress_into` makes.
pub(crate) const LZ4_SMALL_BODY_MAX: usize = u16::MAX as usize;
/// True where lz4_flex's small table hashes differently from its large one: on 64-bit
/// targets (the large one hashes 5 bytes there). Elsewhere both hash 4 bytes alike, and the
/// large table alone gives every body `compress_into`'s bytes.
pub(crate) const LZ4_SMALL_TABLE_DIFFERS: bool = cfg!(target_pointer_width = "64");
/// Bytes one lz4_flex hash table takes in encoder storage, with room to align it (16 KiB
/// and 64 B in the no-alloc build; a boxed table's handle where lz4_flex has `alloc`).
pub(crate) const LZ4_TABLE_SLOT: usize = core::mem::size_of::<lz4_flex::block::CompressTable>()
    + core::mem::align_of::<lz4_flex::block::CompressTable>();
/// Most encoder storage the LZ4 hash tables take, whatever the configuration: two tables of
/// 4096 32-bit entries, each with its variant tag (padded to the table's 64-byte alignment)
/// and room to align it. The C header's storage bound uses it.
pub const LZ4_TABLES_STORAGE_MAX: usize = 2 * (4096 * 4 + 2 * 64);
const _: () = assert!(2 * ((LZ4_TABLE_SLOT + 7) & !7) <= LZ4_TABLES_STORAGE_MAX);

/// How a [`Decoder`](crate::Decoder) keeps the pages its stream refers to. Both decode the
/// same streams into the same memory, or fail with the same error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DecodeMode {
    /// Pages are built directly in destination memory and references are read from it: the
    /// decoder keeps only the owner of each cache slot (16 bytes per slot). For a
    /// destination that holds the guest's memory (a VMM, the C API's RAM regions).
    InPlace = 0,
    /// The decoder keeps its own copy of the cache (`cache_pages * page_size` bytes) and
    /// copies each page out: for destinations without guest memory at hand (a relay, a
    /// firmware, a callback).
    CacheCopy = 1,
}

/// Every frame may insert at most `frame_bytes / FRAME_INSERT_DIVISOR` pages into the cache
/// (see [`Config::max_frame_inserts`]).
pub const FRAME_INSERT_DIVISOR: usize = 16;

/// Everything both ends must agree on. Carried in the stream header, so the decoder learns it
/// from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Page size in bytes: a power of two from 4096 to 65536.
    pub page_size: u32,
    /// Blocks per page for content-based redundancy elimination: 1, 2, 4 or 8.
    pub blocks_per_page: u8,
    /// Capacity of the FIFO page cache both ends keep, in pages (at least 1).
    pub cache_pages: u32,
    /// Largest XOR/RLE whole-page delta worth sending, in bytes; bigger deltas go out as
    /// blocks or raw. At most `page_size`.
    pub delta_threshold: u32,
    /// Largest uncompressed frame body in bytes; must hold one worst-case page record.
    pub frame_bytes: u32,
    /// Store frame bodies LZ4-compressed when that saves bytes.
    pub lz4: bool,
    /// Identifies the stream so that frames of another stream are rejected.
    pub stream_id: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self::DEFAULT
    }
}

const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

const fn next_pow2(n: usize) -> usize {
    if n <= 1 {
        1
    } else {
        n.next_power_of_two()
    }
}

impl Config {
    /// 4 KiB pages, 4 blocks of 1 KiB, a 64 MiB cache, deltas up to 2 KiB, 64 KiB frames, LZ4
    /// on. `docs/FORMAT.md` says how the defaults were measured.
    pub const DEFAULT: Config = Config {
        page_size: 4096,
        blocks_per_page: 4,
        cache_pages: 16384,
        delta_threshold: 2048,
        frame_bytes: 65536,
        lz4: true,
        stream_id: 0,
    };

    /// Checks every field; the message names the field that is out of range.
    pub const fn validate(&self) -> Result<()> {
        if self.page_size < MIN_PAGE_SIZE
            || self.page_size > MAX_PAGE_SIZE
            || !self.page_size.is_power_of_two()
        {
            return Err(Error::InvalidConfig(
                "page_size must be a power of two from 4096 to 65536",
            ));
        }
        let bpp = self.blocks_per_page;
        if !bpp.is_power_of_two() || bpp as usize > MAX_BLOCKS_PER_PAGE {
            return Err(Error::InvalidConfig("blocks_per_page must be 1, 2, 4 or 8"));
        }
        if self.cache_pages == 0 || self.cache_pages > MAX_CACHE_PAGES {
            return Err(Error::InvalidConfig("cache_pages must be from 1 to 2^26"));
        }
        if self.delta_threshold > self.page_size {
            return Err(Error::InvalidConfig(
                "delta_threshold must not exceed page_size",
            ));
        }
        if (self.frame_bytes as usize) < self.page_size as usize + RECORD_OVERHEAD
            || self.frame_bytes > MAX_FRAME_BYTES
        {
            return Err(Error::InvalidConfig(
                "frame_bytes must hold one page record (page_size + 32) and be at most 16 MiB",
            ));
        }
        // The cache must be addressable on this target (matters on 32-bit cores).
        if (self.cache_pages as usize)
            .checked_mul(self.page_size as usize)
            .is_none()
        {
            return Err(Error::InvalidConfig(
                "cache does not fit this target's address space",
            ));
        }
        Ok(())
    }

    /// Bytes per block.
    pub const fn block_size(&self) -> usize {
        self.page_size as usize / self.blocks_per_page as usize
    }

    /// Bytes of the page cache itself.
    pub const fn cache_len(&self) -> usize {
        self.cache_pages as usize * self.page_size as usize
    }

    /// Entries of the encoder's content index (block hash -> slot/block): twice the cached
    /// blocks, rounded up to a power of two, so the lossy table keeps most entries.
    pub const fn content_index_entries(&self) -> usize {
        next_pow2(self.cache_pages as usize * self.blocks_per_page as usize * 2)
    }

    /// Entries of the encoder's address index (pfn -> latest cached version).
    pub const fn address_index_entries(&self) -> usize {
        next_pow2(self.cache_pages as usize * 2)
    }

    /// Most pages one frame may insert into the cache (RAW, DELTA and BLOCKS records):
    /// `frame_bytes / 16`. A rule of the format (version 3): it bounds the owners a
    /// decoder's validation pass must hold apart until the frame is applied.
    pub const fn max_frame_inserts(&self) -> usize {
        self.frame_bytes as usize / FRAME_INSERT_DIVISOR
    }

    /// Bytes of the owner tables (`docs/FORMAT.md`, owners): an owner pfn per slot and a
    /// pfn map of two 4-byte entries per slot, 16 bytes per slot in all.
    pub const fn owner_tables_len(&self) -> usize {
        align8(self.cache_pages as usize * 8) + align8(self.cache_pages as usize * 2 * 4)
    }

    /// Largest opaque blob one `append_blob` call may carry.
    pub const fn max_blob_len(&self) -> usize {
        self.frame_bytes as usize - RECORD_OVERHEAD
    }

    /// Worst-case length of one frame on the wire (header, body stored or LZ4, CRC).
    pub const fn max_frame_len(&self) -> usize {
        FRAME_HEADER_LEN
            + lz4_flex::block::get_maximum_output_size(self.frame_bytes as usize)
            + FRAME_TRAILER_LEN
    }

    /// Smallest output buffer every encoder call accepts: a call writes at most the stream
    /// header (first call only) and one frame.
    pub const fn max_output_len(&self) -> usize {
        HEADER_LEN + self.max_frame_len()
    }

    /// Storage an [`Encoder`](crate::Encoder) needs for this configuration (includes slack
    /// for aligning the index tables, so any `&mut [u8]` of this length works).
    pub const fn encoder_storage_len(&self) -> usize {
        8 + align8(self.cache_len())
            + self.owner_tables_len()
            + self.content_index_entries() * 8
            + self.address_index_entries() * 16
            + align8(self.frame_bytes as usize)
            + align8(2 * self.page_size as usize)
            + align8(self.lz4_tables_len())
    }

    /// lz4_flex hash tables the encoder keeps room for in its storage: one, or two on a
    /// 64-bit target when a body can reach [`LZ4_SMALL_BODY_MAX`] (there the small and the
    /// large table hash differently). Counted with LZ4 off too, so that the sizes do not
    /// depend on it; such an encoder leaves the room unused.
    pub(crate) const fn lz4_tables(&self) -> usize {
        if LZ4_SMALL_TABLE_DIFFERS && self.frame_bytes as usize >= LZ4_SMALL_BODY_MAX {
            2
        } else {
            1
        }
    }

    /// Encoder storage for the LZ4 hash tables.
    const fn lz4_tables_len(&self) -> usize {
        self.lz4_tables() * LZ4_TABLE_SLOT
    }

    /// Storage a [`Decoder`](crate::Decoder) in [`DecodeMode::CacheCopy`] needs for this
    /// configuration: [`Config::decoder_storage_len_for`] of that mode.
    pub const fn decoder_storage_len(&self) -> usize {
        self.decoder_storage_len_for(DecodeMode::CacheCopy)
    }

    /// Storage a [`Decoder`](crate::Decoder) needs in `mode` (includes slack for alignment,
    /// so any `&mut [u8]` of this length works). Both modes hold the owner tables (16 bytes
    /// per slot), the owners a frame gives until it is applied (8 bytes per insertion a
    /// frame may make: `frame_bytes / 2`), a frame body for LZ4 and a page of scratch;
    /// cache copy adds the cache itself. For the default configuration: 364,552 bytes in
    /// place, 67,473,416 with a cache copy.
    pub const fn decoder_storage_len_for(&self, mode: DecodeMode) -> usize {
        let common = 8
            + self.owner_tables_len()
            + align8(self.max_frame_inserts() * 8)
            + align8(self.frame_bytes as usize)
            + align8(self.page_size as usize);
        match mode {
            DecodeMode::InPlace => common,
            DecodeMode::CacheCopy => common + align8(self.cache_len()),
        }
    }

    /// The 32-byte stream header for this configuration.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        self.emit(&mut StreamHeader::new_unchecked(&mut h[..]));
        h
    }

    /// Writes this configuration into a stream header, magic, version and CRC included.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, h: &mut StreamHeader<T>) {
        h.set_identity();
        h.set_flags(if self.lz4 { header::FLAG_LZ4 } else { 0 });
        h.set_blocks_per_page(self.blocks_per_page);
        h.set_page_size(self.page_size);
        h.set_cache_pages(self.cache_pages);
        h.set_frame_bytes(self.frame_bytes);
        h.set_delta_threshold(self.delta_threshold);
        h.set_stream_id(self.stream_id);
        h.fill_crc();
    }

    /// Parses and checks a stream header, in the order `docs/FORMAT.md` gives: magic,
    /// version, length, CRC, reserved bits, then the ranges.
    pub fn from_header(bytes: &[u8]) -> Result<Config> {
        let h = StreamHeader::new_checked(bytes)?;
        h.check_crc()?;
        if h.reserved_set() {
            return Err(Error::Malformed("reserved header bits set"));
        }
        let cfg = Config {
            page_size: h.page_size(),
            blocks_per_page: h.blocks_per_page(),
            cache_pages: h.cache_pages(),
            delta_threshold: h.delta_threshold(),
            frame_bytes: h.frame_bytes(),
            lz4: h.flags() & header::FLAG_LZ4 != 0,
            stream_id: h.stream_id(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_round_trips() {
        let c = Config {
            stream_id: 0xdead_beef,
            ..Config::DEFAULT
        };
        c.validate().unwrap();
        assert_eq!(Config::from_header(&c.header_bytes()), Ok(c));
    }

    #[test]
    fn rejects_each_bad_field() {
        let bad = [
            Config {
                page_size: 2048,
                ..Config::DEFAULT
            },
            Config {
                page_size: 6000,
                ..Config::DEFAULT
            },
            Config {
                page_size: 131072,
                ..Config::DEFAULT
            },
            Config {
                blocks_per_page: 3,
                ..Config::DEFAULT
            },
            Config {
                blocks_per_page: 16,
                ..Config::DEFAULT
            },
            Config {
                cache_pages: 0,
                ..Config::DEFAULT
            },
            Config {
                cache_pages: MAX_CACHE_PAGES + 1,
                ..Config::DEFAULT
            },
            Config {
                delta_threshold: 4097,
                ..Config::DEFAULT
            },
            Config {
                frame_bytes: 4096,
                ..Config::DEFAULT
            },
            Config {
                frame_bytes: MAX_FRAME_BYTES + 1,
                ..Config::DEFAULT
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig(_))),
                "{c:?}"
            );
        }
    }

    #[test]
    fn header_errors_are_named() {
        let h = Config::DEFAULT.header_bytes();
        assert_eq!(Config::from_header(&h[..3]), Err(Error::Truncated));
        assert_eq!(Config::from_header(&h[..31]), Err(Error::Truncated));
        let mut m = h;
        m[0] = b'X';
        assert_eq!(Config::from_header(&m), Err(Error::BadMagic));
        // version 1 (before PATCH), 2 (before retirement) and 4 (not yet written) are refused
        for version in [1, 2, 4] {
            let mut v = h;
            v[4] = version;
            assert_eq!(
                Config::from_header(&v),
                Err(Error::UnsupportedVersion(version))
            );
        }
        let mut c = h;
        c[9] ^= 1;
        assert_eq!(Config::from_header(&c), Err(Error::CrcMismatch));
    }

    #[test]
    fn storage_sizes_grow_with_cache() {
        let small = Config {
            cache_pages: 1,
            ..Config::DEFAULT
        };
        let big = Config {
            cache_pages: 1024,
            ..Config::DEFAULT
        };
        assert!(small.encoder_storage_len() < big.encoder_storage_len());
        assert!(big.decoder_storage_len() >= 1024 * 4096);
        assert!(Config::DEFAULT.max_output_len() > Config::DEFAULT.frame_bytes as usize);
    }

    #[test]
    fn in_place_storage_is_16_bytes_per_slot_plus_the_frame_buffers() {
        for cache_pages in [1u32, 3, 1000, 16384, 1 << 20] {
            let c = Config {
                cache_pages,
                ..Config::DEFAULT
            };
            let frame = c.frame_bytes as usize;
            let in_place = c.decoder_storage_len_for(DecodeMode::InPlace);
            let slack = 8 * 6;
            assert!(
                in_place <= 16 * cache_pages as usize + frame + frame / 2 + 4096 + slack,
                "{cache_pages}: {in_place}"
            );
            assert_eq!(
                c.decoder_storage_len_for(DecodeMode::CacheCopy),
                in_place + c.cache_len()
            );
        }
        // the figures docs/FORMAT.md and the doc comment give
        assert_eq!(
            Config::DEFAULT.decoder_storage_len_for(DecodeMode::InPlace),
            364_552
        );
        assert_eq!(Config::DEFAULT.decoder_storage_len(), 67_473_416);
    }
}
