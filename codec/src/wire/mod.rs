//! The wire layer: every byte of a pagewire stream is read and written here, and only here
//! (`docs/FORMAT.md` is the spec). The encoder and decoder above it decide *what* to send
//! and how to rebuild it; they never spell a byte offset.
//!
//! Headers are checked views over a buffer, as smoltcp does it: `new_checked` validates
//! once, so no accessor can panic afterwards (an accessor of an unchecked view that is too
//! short reads zeros instead), and each header's byte offsets are written once, in its
//! `field` module, for the writer and the parser alike.
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`header`] | the 32-byte stream header that carries the [`Config`](crate::Config) |
//! | [`frame`] | frame header, body and CRC trailer |
//! | [`record`] | the records of a frame body: typed tags and block kinds, parsing and writing |
//! | [`varint`] | LEB128 varints and the zigzag map |
//! | [`delta`] | XOR/RLE deltas (encode, bound, check, apply) |

pub mod delta;
pub mod frame;
pub mod header;
pub mod record;
pub mod varint;

/// Where a fixed-width field sits in a header: its byte range.
pub type Field = core::ops::Range<usize>;

/// The little-endian `u32` at `field` of `buf`; 0 if `buf` ends before it (a checked view's
/// buffer never does).
#[inline]
fn read_u32(buf: &[u8], field: Field) -> u32 {
    match buf.get(field).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
        Some(b) => u32::from_le_bytes(b),
        None => 0,
    }
}

/// Writes `value` little-endian at `field` of `buf`; nothing if `buf` ends before it (the
/// writers size their buffers to the header first).
#[inline]
fn write_u32(buf: &mut [u8], field: Field, value: u32) {
    if let Some(b) = buf.get_mut(field) {
        if b.len() == 4 {
            b.copy_from_slice(&value.to_le_bytes());
        }
    }
}

/// The byte at `at` of `buf`; 0 if `buf` ends before it.
#[inline]
fn read_u8(buf: &[u8], at: usize) -> u8 {
    buf.get(at).copied().unwrap_or(0)
}

/// Writes the byte at `at` of `buf`; nothing if `buf` ends before it.
#[inline]
fn write_u8(buf: &mut [u8], at: usize, value: u8) {
    if let Some(b) = buf.get_mut(at) {
        *b = value;
    }
}
