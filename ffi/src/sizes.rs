//! What a caller allocates for a configuration: the exact sizes (`pagewire_config_sizes`),
//! and the compile-time bounds behind the header's `_BOUND` macros.
//!
//! The exact sizes are the codec's (`Config::encoder_storage_len` and its siblings) plus
//! what a handle adds (`encoder::storage_len`, `decoder::storage_len`). A decoder's size
//! depends on its mode: `pagewire_sizes.decoder_storage` is the cache-copy one (flags 0),
//! `pagewire_config_decoder_storage` gives either (a function of its own rather than a new
//! field, so that `pagewire_sizes` keeps its layout). The bounds are sums
//! of the constants in `defines` times configuration fields; the functions below are the
//! Rust spelling of the header's macros, which the C tests compare with them, and the tests
//! here prove bound >= exact from the smallest to the largest configuration.

use pagewire::{Config, DecodeMode};

use crate::config::pagewire_config;
use crate::defines::{
    PAGEWIRE_DECODER_BYTES_PER_CACHE_PAGE, PAGEWIRE_DECODER_IN_PLACE_PAGE_BUFFERS,
    PAGEWIRE_DECODER_PAGE_BUFFERS, PAGEWIRE_ENCODER_BYTES_PER_CACHED_BLOCK,
    PAGEWIRE_ENCODER_BYTES_PER_CACHE_PAGE, PAGEWIRE_ENCODER_FIXED_BYTES,
    PAGEWIRE_ENCODER_PAGE_BUFFERS, PAGEWIRE_LZ4_GROWTH_DIVISOR, PAGEWIRE_OUTPUT_FIXED_BYTES,
    PAGEWIRE_STATE_OVERHEAD,
};
use crate::guard::guard;
use crate::pagewire_result;
use crate::ptr::{arg, Out};
use crate::{decoder, encoder};

/// What a caller allocates for one configuration (from `pagewire_config_sizes`). Five
/// `size_t` (40 bytes on 64-bit targets).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct pagewire_sizes {
    /// Bytes of memory for `pagewire_encoder_init` (any alignment).
    pub encoder_storage: usize,
    /// Bytes of memory for `pagewire_decoder_open` with flags 0, a cache copy (any
    /// alignment). An in-place decoder needs far less: `pagewire_config_decoder_storage`.
    pub decoder_storage: usize,
    /// Smallest output buffer every encoder call accepts: the most one call writes.
    pub max_output: usize,
    /// Longest frame on the wire: a receive buffer of this size holds any frame.
    pub max_frame: usize,
    /// Largest blob `pagewire_encoder_append_blob` accepts.
    pub max_blob: usize,
}

/// Sizes for a valid codec configuration.
pub(crate) fn sizes_of(c: &Config) -> pagewire_sizes {
    pagewire_sizes {
        encoder_storage: encoder::storage_len(c),
        decoder_storage: decoder::storage_len(c, DecodeMode::CacheCopy),
        max_output: c.max_output_len(),
        max_frame: c.max_frame_len(),
        max_blob: c.max_blob_len(),
    }
}

/// `PAGEWIRE_ENCODER_STORAGE_BOUND`: at least `sizes_of(cfg).encoder_storage` for a valid
/// configuration with these fields.
pub const fn encoder_storage_bound(
    page_size: usize,
    blocks_per_page: usize,
    cache_pages: usize,
    frame_bytes: usize,
) -> usize {
    PAGEWIRE_STATE_OVERHEAD
        + PAGEWIRE_ENCODER_FIXED_BYTES
        + cache_pages * page_size
        + cache_pages * blocks_per_page * PAGEWIRE_ENCODER_BYTES_PER_CACHED_BLOCK
        + cache_pages * PAGEWIRE_ENCODER_BYTES_PER_CACHE_PAGE
        + frame_bytes
        + PAGEWIRE_ENCODER_PAGE_BUFFERS * page_size
}

/// `PAGEWIRE_DECODER_STORAGE_BOUND`: at least `sizes_of(cfg).decoder_storage`.
pub const fn decoder_storage_bound(
    page_size: usize,
    cache_pages: usize,
    frame_bytes: usize,
) -> usize {
    PAGEWIRE_STATE_OVERHEAD
        + cache_pages * page_size
        + cache_pages * PAGEWIRE_DECODER_BYTES_PER_CACHE_PAGE
        + frame_bytes
        + frame_bytes / 2
        + PAGEWIRE_DECODER_PAGE_BUFFERS * page_size
}

/// `PAGEWIRE_DECODER_IN_PLACE_STORAGE_BOUND`: at least what
/// `pagewire_config_decoder_storage` gives with `PAGEWIRE_DECODE_IN_PLACE`.
pub const fn decoder_in_place_storage_bound(
    page_size: usize,
    cache_pages: usize,
    frame_bytes: usize,
) -> usize {
    PAGEWIRE_STATE_OVERHEAD
        + cache_pages * PAGEWIRE_DECODER_BYTES_PER_CACHE_PAGE
        + frame_bytes
        + frame_bytes / 2
        + PAGEWIRE_DECODER_IN_PLACE_PAGE_BUFFERS * page_size
}

/// `PAGEWIRE_MAX_OUTPUT_BOUND`: at least `sizes_of(cfg).max_output` (and `.max_frame`).
pub const fn max_output_bound(frame_bytes: usize) -> usize {
    frame_bytes + frame_bytes / PAGEWIRE_LZ4_GROWTH_DIVISOR + PAGEWIRE_OUTPUT_FIXED_BYTES
}

const _: () = assert!(encoder::HANDLE_LEN <= PAGEWIRE_STATE_OVERHEAD);
const _: () = assert!(decoder::HANDLE_LEN <= PAGEWIRE_STATE_OVERHEAD);

/// Checks `*cfg` and writes the sizes of everything to allocate for it to `*out`.
/// Thread-safe.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_config_sizes(
    cfg: *const pagewire_config,
    out: *mut pagewire_sizes,
) -> pagewire_result {
    guard(|| {
        // SAFETY: `cfg` is NULL or readable, `out` NULL or writable (pointer rules).
        let (cfg, out) = unsafe { (arg(cfg, "cfg")?, Out::new(out, "out")?) };
        out.write(sizes_of(&cfg.to_codec()?));
        Ok(())
    })
}

/// Checks `*cfg` and `flags` (those of `pagewire_decoder_open`: 0 or
/// `PAGEWIRE_DECODE_IN_PLACE`) and writes to `*out` the bytes of memory
/// `pagewire_decoder_open` needs for that configuration and mode (any alignment). With
/// flags 0 it is `pagewire_sizes.decoder_storage`; in place, for the default configuration,
/// the codec's part is 364,552 bytes (against 67,473,416 with a cache copy). Thread-safe.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_config_decoder_storage(
    cfg: *const pagewire_config,
    flags: u32,
    out: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: `cfg` is NULL or readable, `out` NULL or writable (pointer rules).
        let (cfg, out) = unsafe { (arg(cfg, "cfg")?, Out::new(out, "out")?) };
        let mode = decoder::mode_of(flags)?;
        out.write(decoder::storage_len(&cfg.to_codec()?, mode));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagewire_result::*;
    use pagewire::{
        MAX_CACHE_PAGES, MAX_FRAME_BYTES, MAX_PAGE_SIZE, MIN_PAGE_SIZE, RECORD_OVERHEAD,
    };

    /// Valid configurations from the smallest to the largest, every page size and block
    /// count, caches and frames at their edges and in between (powers of two and not).
    fn sweep() -> Vec<Config> {
        let mut all = Vec::new();
        let mut page_size = MIN_PAGE_SIZE;
        while page_size <= MAX_PAGE_SIZE {
            for blocks_per_page in [1, 2, 4, 8] {
                for cache_pages in [1, 2, 3, 1000, 1024, 1025, 16384, 99_999, MAX_CACHE_PAGES] {
                    let smallest_frame = page_size + RECORD_OVERHEAD as u32;
                    for frame_bytes in [smallest_frame, 65536.max(smallest_frame), MAX_FRAME_BYTES]
                    {
                        let c = Config {
                            page_size,
                            blocks_per_page,
                            cache_pages,
                            frame_bytes,
                            delta_threshold: page_size / 2,
                            ..Config::DEFAULT
                        };
                        c.validate().unwrap();
                        all.push(c);
                    }
                }
            }
            page_size *= 2;
        }
        all
    }

    #[test]
    fn bounds_cover_the_exact_sizes_from_the_smallest_to_the_largest_configuration() {
        let configs = sweep();
        assert!(configs.len() > 400);
        for c in configs {
            let exact = sizes_of(&c);
            let (ps, bpp) = (c.page_size as usize, c.blocks_per_page as usize);
            let (cp, fb) = (c.cache_pages as usize, c.frame_bytes as usize);
            let enc = encoder_storage_bound(ps, bpp, cp, fb);
            let dec = decoder_storage_bound(ps, cp, fb);
            assert!(enc >= exact.encoder_storage, "{c:?}");
            assert!(dec >= exact.decoder_storage, "{c:?}");
            assert!(max_output_bound(fb) >= exact.max_output, "{c:?}");
            assert!(exact.max_output >= exact.max_frame, "{c:?}");
            // and not wastefully so: the indexes at most double, the rest is slack
            assert!(enc <= 2 * exact.encoder_storage + 4096, "{c:?}");
            assert!(dec <= exact.decoder_storage + 1024, "{c:?}");
            let in_place = decoder::storage_len(&c, DecodeMode::InPlace);
            let in_place_bound = decoder_in_place_storage_bound(ps, cp, fb);
            assert!(in_place_bound >= in_place, "{c:?}");
            assert!(in_place_bound <= in_place + 1024, "{c:?}");
            // in place keeps no cache copy and no staging page
            assert_eq!(in_place + cp * ps + ps, exact.decoder_storage, "{c:?}");
        }
    }

    #[test]
    fn decoder_storage_follows_the_mode_and_refuses_unknown_flags() {
        use crate::defines::PAGEWIRE_DECODE_IN_PLACE;
        let c = pagewire_config::from_codec(&Config::DEFAULT);
        let (mut in_place, mut copy, mut untouched) = (0usize, 0usize, 7usize);
        // SAFETY: valid pointers.
        unsafe {
            assert_eq!(
                pagewire_config_decoder_storage(&c, PAGEWIRE_DECODE_IN_PLACE, &mut in_place),
                PAGEWIRE_OK
            );
            assert_eq!(
                pagewire_config_decoder_storage(&c, 0, &mut copy),
                PAGEWIRE_OK
            );
            for flags in [2, 3, u32::MAX, 1 << 31] {
                assert_eq!(
                    pagewire_config_decoder_storage(&c, flags, &mut untouched),
                    PAGEWIRE_INVALID_ARGUMENT
                );
            }
            let bad = pagewire_config { lz4: 2, ..c };
            assert_eq!(
                pagewire_config_decoder_storage(&bad, 0, &mut untouched),
                PAGEWIRE_INVALID_CONFIG
            );
            assert_eq!(
                pagewire_config_decoder_storage(&c, 0, core::ptr::null_mut()),
                PAGEWIRE_NULL_ARGUMENT
            );
        }
        assert_eq!(untouched, 7);
        assert_eq!(copy, sizes_of(&Config::DEFAULT).decoder_storage);
        // the figures the header and docs/C-API.md give: the codec's part, plus the handle
        assert_eq!(in_place, decoder::HANDLE_LEN + 364_552);
        assert_eq!(copy, decoder::HANDLE_LEN + 4096 + 67_473_416);
        assert!(in_place < 400_000 && copy > 64 << 20);
    }

    #[test]
    fn sizes_need_a_valid_configuration_and_leave_the_output_alone_otherwise() {
        let c = pagewire_config::from_codec(&Config::DEFAULT);
        let mut sizes = pagewire_sizes {
            encoder_storage: 1,
            decoder_storage: 2,
            max_output: 3,
            max_frame: 4,
            max_blob: 5,
        };
        let before = sizes;
        let bad = [
            pagewire_config {
                page_size: 5000,
                ..c
            },
            pagewire_config { lz4: 2, ..c },
            pagewire_config {
                reserved: [0, 1],
                ..c
            },
        ];
        // SAFETY: valid pointers.
        unsafe {
            for bad in bad {
                assert_eq!(
                    pagewire_config_sizes(&bad, &mut sizes),
                    PAGEWIRE_INVALID_CONFIG
                );
                assert_eq!(sizes, before);
            }
            assert_eq!(pagewire_config_sizes(&c, &mut sizes), PAGEWIRE_OK);
            assert_eq!(sizes, sizes_of(&Config::DEFAULT));
            assert_eq!(
                pagewire_config_sizes(core::ptr::null(), &mut sizes),
                PAGEWIRE_NULL_ARGUMENT
            );
        }
    }
}
