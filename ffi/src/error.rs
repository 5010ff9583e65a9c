//! The one result enum of the C API, its names, and the detail of the last failure.
//!
//! The enum is written once: strum derives the list of every result (`VariantArray`) and
//! each one's C name (`IntoStaticStr` with a NUL suffix, so the names are C strings without
//! a table of their own), and cbindgen writes the enum into the header.

use core::cell::Cell;
use core::ffi::CStr;

use pagewire::Error;
use strum::{IntoStaticStr, VariantArray};

/// What every fallible function returns. The numbers are stable: new results get new
/// numbers, existing ones never change. 1-24 mirror the codec's errors; 100 and up belong to
/// the C API itself. `pagewire_result_name` names each one;
/// `pagewire_last_error_message` gives the details of the latest failure on the thread.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, VariantArray, IntoStaticStr)]
#[strum(const_into_str, suffix = "\0")]
pub enum pagewire_result {
    /// Success.
    PAGEWIRE_OK = 0,
    /// A configuration field is out of range; the last error message names the field.
    PAGEWIRE_INVALID_CONFIG = 1,
    /// The storage handed in is smaller than `pagewire_config_sizes` says.
    PAGEWIRE_INSUFFICIENT_STORAGE = 2,
    /// The output buffer is smaller than `pagewire_sizes.max_output`.
    PAGEWIRE_OUTPUT_TOO_SMALL = 3,
    /// A blob is larger than `pagewire_sizes.max_blob`.
    PAGEWIRE_BLOB_TOO_LARGE = 4,
    /// A page is not `page_size` bytes long.
    PAGEWIRE_WRONG_PAGE_LENGTH = 5,
    /// The encoder was used after `finish`, or the decoder after a failure or the end.
    PAGEWIRE_FINISHED = 6,
    /// Not a pagewire stream.
    PAGEWIRE_BAD_MAGIC = 7,
    /// The stream uses a format version this library does not speak.
    PAGEWIRE_UNSUPPORTED_VERSION = 8,
    /// A stream header or frame failed its CRC-32C: corrupted in transit.
    PAGEWIRE_CRC_MISMATCH = 9,
    /// The input ends inside a header or frame, or before the end of the stream.
    PAGEWIRE_TRUNCATED = 10,
    /// A frame of another stream (other stream id).
    PAGEWIRE_WRONG_STREAM = 11,
    /// A frame was lost, replayed or reordered.
    PAGEWIRE_FRAME_OUT_OF_ORDER = 12,
    /// Unknown tag or reserved field set.
    PAGEWIRE_MALFORMED = 13,
    /// A length field is out of range.
    PAGEWIRE_LENGTH_OUT_OF_RANGE = 14,
    /// A varint overflows its field.
    PAGEWIRE_VARINT_OVERFLOW = 15,
    /// Reference to a cache slot never filled.
    PAGEWIRE_EMPTY_SLOT = 16,
    /// Reference to a cache slot already evicted.
    PAGEWIRE_EVICTED_SLOT = 17,
    /// Malformed XOR/RLE delta.
    PAGEWIRE_BAD_DELTA = 18,
    /// An LZ4 frame body does not decompress to its declared length.
    PAGEWIRE_BAD_COMPRESSION = 19,
    /// Iteration markers are not consecutive.
    PAGEWIRE_ITERATION_OUT_OF_ORDER = 20,
    /// Data after the end of the stream.
    PAGEWIRE_TRAILING_DATA = 21,
    /// Reference to a cache slot its owner page has retired (format version 3).
    PAGEWIRE_RETIRED_SLOT = 22,
    /// A PATCH of a cache slot another page owns.
    PAGEWIRE_FOREIGN_PATCH = 23,
    /// An in-place decoder could not read a page back from its destination.
    PAGEWIRE_PAGE_UNREADABLE = 24,
    /// A codec error newer than this C API (its message still says what happened).
    PAGEWIRE_OTHER_CODEC_ERROR = 99,
    /// A required pointer argument is NULL.
    PAGEWIRE_NULL_ARGUMENT = 100,
    /// A caller buffer other than storage or encoder output (the header buffer of
    /// `pagewire_config_header`) is too small.
    PAGEWIRE_BUFFER_TOO_SMALL = 101,
    /// A Rust panic was caught at the boundary; the object involved is unusable from now on.
    PAGEWIRE_PANIC = 102,
    /// The handle is not a live object of the expected kind (never initialised, released,
    /// misaligned, or released with the wrong function).
    PAGEWIRE_INVALID_HANDLE = 103,
    /// An argument is out of range (a misaligned pointer, an unknown enum value).
    PAGEWIRE_INVALID_ARGUMENT = 104,
    /// A decoded page has no place in the destination's RAM regions or page table.
    PAGEWIRE_PFN_OUT_OF_RANGE = 105,
    /// A sink callback returned non-zero; the decoder is failed from now on.
    PAGEWIRE_CALLBACK_FAILED = 106,
    /// An allocation failed (`pagewire_encoder_new`, `pagewire_decoder_open` without storage).
    PAGEWIRE_OUT_OF_MEMORY = 107,
    /// The Synchronized Arrival group has no free member slot.
    PAGEWIRE_GROUP_FULL = 108,
    /// The zstd-compressed stream is damaged: a chunk length out of range, or zstd data
    /// that does not decode (feature `zstd`).
    PAGEWIRE_BAD_ZSTD_STREAM = 109,
}

use pagewire_result::*;

impl pagewire_result {
    /// Every result, in the order of the enum.
    pub fn all() -> &'static [pagewire_result] {
        Self::VARIANTS
    }

    /// The result with number `n`, if there is one.
    pub fn from_u32(n: u32) -> Option<pagewire_result> {
        Self::VARIANTS.iter().copied().find(|r| *r as u32 == n)
    }

    /// The C identifier of the result, as a static C string.
    pub const fn name(self) -> &'static CStr {
        match CStr::from_bytes_with_nul(self.into_str().as_bytes()) {
            Ok(name) => name,
            // Ruled out at compile time (below): every name ends in its one NUL.
            Err(_) => c"PAGEWIRE_UNKNOWN_RESULT",
        }
    }
}

/// Every name strum writes is a C string (the identifier and the NUL suffix).
const _: () = {
    let all = <pagewire_result as VariantArray>::VARIANTS;
    let mut i = 0;
    while i < all.len() {
        assert!(CStr::from_bytes_with_nul(all[i].into_str().as_bytes()).is_ok());
        i += 1;
    }
};

impl From<Error> for pagewire_result {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidConfig(_) => PAGEWIRE_INVALID_CONFIG,
            Error::InsufficientStorage { .. } => PAGEWIRE_INSUFFICIENT_STORAGE,
            Error::OutputTooSmall { .. } => PAGEWIRE_OUTPUT_TOO_SMALL,
            Error::BlobTooLarge { .. } => PAGEWIRE_BLOB_TOO_LARGE,
            Error::WrongPageLength { .. } => PAGEWIRE_WRONG_PAGE_LENGTH,
            Error::Finished => PAGEWIRE_FINISHED,
            Error::BadMagic => PAGEWIRE_BAD_MAGIC,
            Error::UnsupportedVersion(_) => PAGEWIRE_UNSUPPORTED_VERSION,
            Error::CrcMismatch => PAGEWIRE_CRC_MISMATCH,
            Error::Truncated => PAGEWIRE_TRUNCATED,
            Error::WrongStream => PAGEWIRE_WRONG_STREAM,
            Error::FrameOutOfOrder { .. } => PAGEWIRE_FRAME_OUT_OF_ORDER,
            Error::Malformed(_) => PAGEWIRE_MALFORMED,
            Error::LengthOutOfRange => PAGEWIRE_LENGTH_OUT_OF_RANGE,
            Error::VarintOverflow => PAGEWIRE_VARINT_OVERFLOW,
            Error::EmptySlot => PAGEWIRE_EMPTY_SLOT,
            Error::EvictedSlot => PAGEWIRE_EVICTED_SLOT,
            Error::BadDelta => PAGEWIRE_BAD_DELTA,
            Error::BadCompression => PAGEWIRE_BAD_COMPRESSION,
            Error::IterationOutOfOrder { .. } => PAGEWIRE_ITERATION_OUT_OF_ORDER,
            Error::TrailingData => PAGEWIRE_TRAILING_DATA,
            Error::RetiredSlot => PAGEWIRE_RETIRED_SLOT,
            Error::ForeignPatch => PAGEWIRE_FOREIGN_PATCH,
            Error::PfnOutOfRange { .. } => PAGEWIRE_PFN_OUT_OF_RANGE,
            Error::PageUnreadable { .. } => PAGEWIRE_PAGE_UNREADABLE,
            // `Error` is non-exhaustive: a variant added to the codec later still gets a
            // stable number and its own message.
            _ => PAGEWIRE_OTHER_CODEC_ERROR,
        }
    }
}

/// Why a call failed, kept for `pagewire_last_error_message`. Plain data (`Copy`, static
/// strings only) so that recording it never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    Codec(Error),
    Null(&'static str),
    Text(&'static str),
}

/// A failed call: the result to return and what to say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fail {
    pub code: pagewire_result,
    pub detail: Detail,
}

impl Fail {
    pub fn new(code: pagewire_result, text: &'static str) -> Fail {
        Fail {
            code,
            detail: Detail::Text(text),
        }
    }

    pub fn null(arg: &'static str) -> Fail {
        Fail {
            code: PAGEWIRE_NULL_ARGUMENT,
            detail: Detail::Null(arg),
        }
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Fail {
        Fail {
            code: e.into(),
            detail: Detail::Codec(e),
        }
    }
}

/// Result of the internal functions behind the C entry points.
pub(crate) type Res<T = ()> = Result<T, Fail>;

thread_local! {
    static LAST: Cell<Option<Detail>> = const { Cell::new(None) };
}

/// Records the detail of a failure on this thread.
pub(crate) fn set_last(d: Detail) {
    // `try_with` fails only while the thread is being torn down: then nobody can ask.
    let _ = LAST.try_with(|c| c.set(Some(d)));
}

/// The detail of the latest failure on this thread.
pub(crate) fn last() -> Option<Detail> {
    LAST.try_with(Cell::get).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Every codec error variant known today, with its Debug name.
    fn codec_errors() -> Vec<Error> {
        vec![
            Error::InvalidConfig("x"),
            Error::InsufficientStorage {
                needed: 2,
                given: 1,
            },
            Error::OutputTooSmall {
                needed: 2,
                given: 1,
            },
            Error::BlobTooLarge { len: 2, max: 1 },
            Error::WrongPageLength {
                expected: 2,
                got: 1,
            },
            Error::Finished,
            Error::BadMagic,
            Error::UnsupportedVersion(9),
            Error::CrcMismatch,
            Error::Truncated,
            Error::WrongStream,
            Error::FrameOutOfOrder {
                expected: 1,
                got: 2,
            },
            Error::Malformed("x"),
            Error::LengthOutOfRange,
            Error::VarintOverflow,
            Error::EmptySlot,
            Error::EvictedSlot,
            Error::BadDelta,
            Error::BadCompression,
            Error::IterationOutOfOrder {
                expected: 1,
                got: 2,
            },
            Error::TrailingData,
            Error::RetiredSlot,
            Error::ForeignPatch,
            Error::PageUnreadable { pfn: 1 },
        ]
    }

    /// `CrcMismatch { .. }` -> `CRC_MISMATCH`
    fn screaming(debug: &str) -> String {
        let ident: String = debug.chars().take_while(|c| c.is_alphanumeric()).collect();
        let mut s = String::new();
        for (i, c) in ident.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_uppercase());
        }
        s
    }

    #[test]
    fn every_codec_error_has_its_own_result_named_after_it() {
        let mut seen = HashSet::new();
        for e in codec_errors() {
            let r = pagewire_result::from(e);
            assert_ne!(r, PAGEWIRE_OTHER_CODEC_ERROR, "{e:?} unmapped");
            assert!(seen.insert(r), "{e:?} shares {r:?}");
            let want = format!("PAGEWIRE_{}", screaming(&format!("{e:?}")));
            assert_eq!(r.name().to_str().unwrap(), want, "{e:?}");
            assert_eq!(r as u32, seen.len() as u32, "codec errors are numbered 1..");
        }
        // a destination's refusal has the C API's own number, which RAM regions and page
        // tables gave it before the codec named it
        assert_eq!(
            pagewire_result::from(Error::PfnOutOfRange { pfn: 1 }),
            PAGEWIRE_PFN_OUT_OF_RANGE
        );
    }

    #[test]
    fn names_are_distinct_and_numbers_round_trip() {
        let mut names = HashSet::new();
        for &r in pagewire_result::all() {
            assert_eq!(pagewire_result::from_u32(r as u32), Some(r));
            let n = r.name().to_str().unwrap();
            assert_eq!(n, format!("{r:?}"));
            assert!(names.insert(n));
        }
        assert_eq!(names.len(), 36);
        assert_eq!(pagewire_result::from_u32(25), None);
    }
}
