//! # pagewire
//!
//! An allocation-free `no_std` codec for the memory of a live-migrating virtual machine.
//! Per page it sends one of: a zero-page tag, a reference to an identical page in a FIFO
//! cache both ends keep in lockstep, an XOR/RLE delta against the previous version of the
//! same page (when it is small enough), or the smaller of a per-block mix (zero blocks,
//! references to cached blocks, literal blocks, XOR/RLE block deltas) and the raw page. Records are grouped into frames, each with a
//! CRC-32C and, where it saves bytes, an LZ4-compressed body.
//!
//! The caller owns all memory: [`Encoder::new`] and [`Decoder::new`] take a `&mut [u8]` of
//! [`Config::encoder_storage_len`] / [`Config::decoder_storage_len_for`] bytes (both
//! `const fn`), and every output goes to a caller buffer of [`Config::max_output_len`]
//! bytes. The decoder writes pages into a [`Destination`] (guest memory): in place
//! ([`DecodeMode::InPlace`]: 16 bytes per cache slot, references read from that memory) or
//! through a copy of the cache ([`DecodeMode::CacheCopy`]).
//!
//! ```
//! use pagewire::{Config, DecodeMode, Decoder, Encoder, MemoryImage};
//!
//! let cfg = Config { cache_pages: 64, ..Config::DEFAULT };
//! let mut enc_mem = vec![0u8; cfg.encoder_storage_len()];
//! let mut dec_mem = vec![0u8; cfg.decoder_storage_len_for(DecodeMode::InPlace)];
//! let mut out = vec![0u8; cfg.max_output_len()];
//! let mut wire = Vec::new();
//!
//! let mut enc = Encoder::new(cfg, &mut enc_mem).unwrap();
//! let page = [7u8; 4096];
//! for pfn in 0..10 {
//!     let n = enc.encode_page(pfn, &page, &mut out).unwrap();
//!     wire.extend_from_slice(&out[..n]);
//! }
//! let n = enc.finish(&mut out).unwrap();
//! wire.extend_from_slice(&out[..n]);
//!
//! let mut guest = vec![0u8; 10 * 4096];
//! let (mut dec, used) = Decoder::from_header(&wire, DecodeMode::InPlace, &mut dec_mem).unwrap();
//! dec.decode(&wire[used..], &mut MemoryImage::new(&mut guest, 4096)).unwrap();
//! dec.check_complete().unwrap();
//! assert!(guest.iter().all(|&b| b == 7));
//! ```
//!
//! The wire format is specified byte by byte in `docs/FORMAT.md`.

#![no_std]
// `unsafe` lives in `fast` alone (hardware fast paths, each with a safe twin); the `safe`
// feature builds it out and forbids `unsafe` everywhere.
#![cfg_attr(feature = "safe", forbid(unsafe_code))]
#![cfg_attr(not(feature = "safe"), deny(unsafe_code))]

// Shared by everything below: word-wise compares, storage carving, the hardware fast paths.
#[cfg_attr(not(feature = "encoder"), allow(dead_code))]
mod bytes;
#[cfg_attr(not(feature = "encoder"), allow(dead_code))]
mod fast;
#[cfg(any(feature = "encoder", feature = "decoder", feature = "xbzrle"))]
mod storage;

// The page codec: the wire format, its configuration, the cache both ends keep, each end.
#[cfg(any(feature = "encoder", feature = "decoder"))]
#[cfg_attr(not(all(feature = "encoder", feature = "decoder")), allow(dead_code))]
mod cache;
mod config;
#[cfg(feature = "decoder")]
mod decoder;
#[cfg(feature = "encoder")]
mod encoder;
mod error;
#[cfg(any(feature = "encoder", feature = "decoder"))]
#[cfg_attr(not(all(feature = "encoder", feature = "decoder")), allow(dead_code))]
mod owners;
pub mod wire;

// Beside the page codec, each behind its feature.
#[cfg(feature = "offload")]
pub mod offload;
#[cfg(feature = "policy")]
pub mod policy;
#[cfg(feature = "xbzrle")]
pub mod xbzrle;

/// True when every byte is zero (the encoder's zero-page test).
pub use bytes::is_zero;
pub use config::{
    Config, DecodeMode, FRAME_INSERT_DIVISOR, LZ4_TABLES_STORAGE_MAX, MAX_BLOCKS_PER_PAGE,
    MAX_CACHE_PAGES, MAX_FRAME_BYTES, MAX_PAGE_SIZE, MIN_PAGE_SIZE, RECORD_OVERHEAD,
};
#[cfg(feature = "decoder")]
pub use decoder::{page_pair_in, Decoder, DecoderStats, Destination, MemoryImage};
#[cfg(feature = "encoder")]
pub use encoder::{block_hash, CopyPages, Encoder, EncoderStats, Features, KindStats, PlainBatch};
pub use error::{Error, Result};
pub use wire::frame::FRAME_HEADER_LEN;
pub use wire::header::{FORMAT_VERSION, HEADER_LEN, MAGIC};

/// CRC-32C (Castagnoli), the checksum of stream headers and frames, in software.
///
/// Slice-by-16 tables (16 KiB of read-only data): the bytewise table ran at about 430 MB/s
/// here and capped the whole codec; slice-by-16 runs at about 2.2 GB/s. Where the CPU has a
/// CRC instruction, [`crc32c`] uses that instead.
pub const CRC32C: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of `data`: SSE4.2's instruction on x86_64 CPUs that have it (about 4x the
/// table here), the table elsewhere and in the `safe` build.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    match fast::crc32c(data) {
        Some(c) => c,
        None => CRC32C.checksum(data),
    }
}

/// A xorshift64 generator for the unit tests' random inputs.
#[cfg(test)]
pub(crate) fn test_rng(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        // the check value named in docs/FORMAT.md
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
    }
}
