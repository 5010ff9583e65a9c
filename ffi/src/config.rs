//! The stream configuration as a C struct, its validation, and the sizes of everything a
//! caller allocates for it.

use pagewire::{Config, Error};

use crate::decoder::DecoderSlot;
use crate::encoder::EncoderSlot;
use crate::error::{Fail, Res};
use crate::guard::guard;
use crate::pagewire_result::{self, PAGEWIRE_BUFFER_TOO_SMALL};
use crate::place::overhead;
use crate::ptr::{arg, bytes, bytes_mut, Out};

/// Bytes of the stream header that opens every stream.
pub const PAGEWIRE_HEADER_LEN: usize = 32;
/// Bytes of a frame header: what a reader needs to learn a frame's length.
pub const PAGEWIRE_FRAME_HEADER_LEN: usize = 20;
/// Wire format version this library writes and reads.
pub const PAGEWIRE_FORMAT_VERSION: u32 = 2;
/// Upper bound of the bytes an encoder or decoder handle adds to the codec's own storage
/// (the `_STORAGE_BOUND` macros use it).
pub const PAGEWIRE_STATE_OVERHEAD: usize = 512;

/// Everything both ends agree on; the encoder writes it into the stream header, so the
/// destination learns it from the stream (`pagewire_config_from_header`). Start from
/// `pagewire_config_default`, then change fields. 24 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct pagewire_config {
    /// Page size in bytes: a power of two from 4096 to 65536 (default 4096).
    pub page_size: u32,
    /// Pages in the FIFO cache both ends keep, 1 to 2^26 (default 16384 = 64 MiB).
    pub cache_pages: u32,
    /// Largest whole-page XOR/RLE delta worth sending, at most page_size (default 2048).
    pub delta_threshold: u32,
    /// Largest uncompressed frame body: page_size + 32 up to 16 MiB (default 65536).
    pub frame_bytes: u32,
    /// Identifies the stream; frames of another stream are rejected (default 0).
    pub stream_id: u32,
    /// Blocks per page for redundancy elimination: 1, 2, 4 or 8 (default 4).
    pub blocks_per_page: u8,
    /// 1: LZ4-compress frame bodies where that saves bytes; 0: never (default 1).
    pub lz4: u8,
    /// Must be 0.
    pub reserved: [u8; 2],
}

impl pagewire_config {
    /// The codec's configuration, every field checked.
    pub fn to_codec(&self) -> Result<Config, Error> {
        if self.reserved != [0, 0] {
            return Err(Error::InvalidConfig("reserved bytes must be 0"));
        }
        if self.lz4 > 1 {
            return Err(Error::InvalidConfig("lz4 must be 0 or 1"));
        }
        let c = Config {
            page_size: self.page_size,
            blocks_per_page: self.blocks_per_page,
            cache_pages: self.cache_pages,
            delta_threshold: self.delta_threshold,
            frame_bytes: self.frame_bytes,
            lz4: self.lz4 == 1,
            stream_id: self.stream_id,
        };
        c.validate()?;
        Ok(c)
    }

    /// The C struct for a codec configuration.
    pub fn from_codec(c: &Config) -> pagewire_config {
        pagewire_config {
            page_size: c.page_size,
            cache_pages: c.cache_pages,
            delta_threshold: c.delta_threshold,
            frame_bytes: c.frame_bytes,
            stream_id: c.stream_id,
            blocks_per_page: c.blocks_per_page,
            lz4: u8::from(c.lz4),
            reserved: [0; 2],
        }
    }
}

/// What a caller allocates for one configuration (from `pagewire_config_sizes`). Five
/// `size_t` (40 bytes on 64-bit targets).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct pagewire_sizes {
    /// Bytes of memory for `pagewire_encoder_init` (any alignment).
    pub encoder_storage: usize,
    /// Bytes of memory for `pagewire_decoder_init` (any alignment).
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
        // + one page: the handle's snapshot of the guest page being encoded
        encoder_storage: overhead::<EncoderSlot>() + c.page_size as usize + c.encoder_storage_len(),
        decoder_storage: overhead::<DecoderSlot>() + c.decoder_storage_len(),
        max_output: c.max_output_len(),
        max_frame: c.max_frame_len(),
        max_blob: c.max_blob_len(),
    }
}

const _: () = assert!(overhead::<EncoderSlot>() <= PAGEWIRE_STATE_OVERHEAD);
const _: () = assert!(overhead::<DecoderSlot>() <= PAGEWIRE_STATE_OVERHEAD);
const _: () = assert!(PAGEWIRE_HEADER_LEN == pagewire::HEADER_LEN);
const _: () = assert!(PAGEWIRE_FRAME_HEADER_LEN == pagewire::FRAME_HEADER_LEN);
const _: () = assert!(PAGEWIRE_FORMAT_VERSION == pagewire::FORMAT_VERSION as u32);

/// Writes the default configuration (4 KiB pages, 4 blocks per page, a 64 MiB cache, deltas
/// up to 2 KiB, 64 KiB frames, LZ4 on, stream id 0) to `*out`. Thread-safe.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_config_default(out: *mut pagewire_config) -> pagewire_result {
    guard(|| {
        // SAFETY: `out` is NULL or writable (pointer rules).
        let out = unsafe { Out::new(out, "out")? };
        out.write(pagewire_config::from_codec(&Config::DEFAULT));
        Ok(())
    })
}

/// Checks every field of `*cfg`: `PAGEWIRE_OK` or `PAGEWIRE_INVALID_CONFIG`, whose last error
/// message names the field. Thread-safe.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_config_validate(cfg: *const pagewire_config) -> pagewire_result {
    guard(|| {
        // SAFETY: `cfg` is NULL or readable (pointer rules).
        let cfg = unsafe { arg(cfg, "cfg")? };
        cfg.to_codec()?;
        Ok(())
    })
}

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

/// Parses the stream header at the front of `input` (at least `PAGEWIRE_HEADER_LEN` bytes)
/// into `*out`: how the destination learns the configuration, to size its decoder storage
/// before `pagewire_decoder_init`. Fails with `PAGEWIRE_TRUNCATED`, `PAGEWIRE_BAD_MAGIC`,
/// `PAGEWIRE_UNSUPPORTED_VERSION`, `PAGEWIRE_CRC_MISMATCH`, `PAGEWIRE_MALFORMED` or
/// `PAGEWIRE_INVALID_CONFIG`. Thread-safe.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_config_from_header(
    input: *const u8,
    input_len: usize,
    out: *mut pagewire_config,
) -> pagewire_result {
    guard(|| {
        // SAFETY: `input` has `input_len` readable bytes, `out` is NULL or writable.
        let (input, out) = unsafe { (bytes(input, input_len, "input")?, Out::new(out, "out")?) };
        out.write(pagewire_config::from_codec(&Config::from_header(input)?));
        Ok(())
    })
}

/// Writes the `PAGEWIRE_HEADER_LEN`-byte stream header for `*cfg` into `out` (the encoder
/// sends it by itself with its first output; this is for tools and tests);
/// `PAGEWIRE_BUFFER_TOO_SMALL` if `out_len` is less. Thread-safe.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_config_header(
    cfg: *const pagewire_config,
    out: *mut u8,
    out_len: usize,
) -> pagewire_result {
    guard(|| -> Res {
        // SAFETY: `cfg` is NULL or readable; `out` has `out_len` writable bytes.
        let (cfg, out) = unsafe { (arg(cfg, "cfg")?, bytes_mut(out, out_len, "out")?) };
        let header = cfg.to_codec()?.header_bytes();
        let Some(dst) = out.get_mut(..header.len()) else {
            return Err(Fail::new(
                PAGEWIRE_BUFFER_TOO_SMALL,
                "the header buffer needs PAGEWIRE_HEADER_LEN (32) bytes",
            ));
        };
        dst.copy_from_slice(&header);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagewire_result::*;

    fn default() -> pagewire_config {
        let mut c = core::mem::MaybeUninit::uninit();
        // SAFETY: a valid out pointer.
        let rc = unsafe { pagewire_config_default(c.as_mut_ptr()) };
        assert_eq!(rc, PAGEWIRE_OK);
        // SAFETY: written on success.
        unsafe { c.assume_init() }
    }

    #[test]
    fn default_matches_the_codec_and_round_trips_through_the_header() {
        let c = default();
        assert_eq!(c.to_codec().unwrap(), Config::DEFAULT);
        let mut h = [0u8; 40];
        let mut back = pagewire_config { page_size: 0, ..c };
        // SAFETY: valid pointers and lengths.
        unsafe {
            assert_eq!(pagewire_config_header(&c, h.as_mut_ptr(), 40), PAGEWIRE_OK);
            assert_eq!(
                pagewire_config_header(&c, h.as_mut_ptr(), 31),
                PAGEWIRE_BUFFER_TOO_SMALL
            );
            assert_eq!(
                pagewire_config_from_header(h.as_ptr(), 32, &mut back),
                PAGEWIRE_OK
            );
            assert_eq!(
                pagewire_config_from_header(h.as_ptr(), 31, &mut back),
                PAGEWIRE_TRUNCATED
            );
        }
        assert_eq!(back, c);
    }

    #[test]
    fn bad_fields_are_named_and_outputs_untouched() {
        for bad in [
            pagewire_config {
                page_size: 5000,
                ..default()
            },
            pagewire_config {
                lz4: 2,
                ..default()
            },
            pagewire_config {
                reserved: [0, 1],
                ..default()
            },
        ] {
            let mut sizes = pagewire_sizes {
                encoder_storage: 1,
                decoder_storage: 2,
                max_output: 3,
                max_frame: 4,
                max_blob: 5,
            };
            let before = sizes;
            // SAFETY: valid pointers.
            unsafe {
                assert_eq!(pagewire_config_validate(&bad), PAGEWIRE_INVALID_CONFIG);
                assert_eq!(
                    pagewire_config_sizes(&bad, &mut sizes),
                    PAGEWIRE_INVALID_CONFIG
                );
            }
            assert_eq!(sizes, before);
        }
        // SAFETY: NULL is what is being tested.
        unsafe {
            assert_eq!(
                pagewire_config_validate(core::ptr::null()),
                PAGEWIRE_NULL_ARGUMENT
            );
        }
    }
}
