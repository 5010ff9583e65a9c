//! # pagewire-stream-zstd
//!
//! zstd over a pagewire stream, after the codec's frames: on a slow link, zstd with its
//! window across frames sends fewer bytes than the codec's LZ4 per frame
//! (`docs/PERFORMANCE.md`: redis 13.3 % of the raw pages against 19.8 %), and the link, not
//! the CPU, sets the pace. The runner's `--compress zstd|auto` and the C API's `zstd`
//! feature both use it; the `no_std` codec keeps LZ4.
//!
//! ## Format
//!
//! The stream travels in chunks, each a little-endian `u32` and that many bytes, and ends
//! with a chunk of length 0. The top bit of the `u32` marks a *stored* chunk, stream bytes
//! as they are; the other chunks are zstd output, one zstd stream across them (a new zstd
//! frame where the level changes). A chunk is at most [`MAX_CHUNK`] bytes; an empty stored
//! chunk is damage. A destination reads exactly the chunks, never past the end chunk,
//! because whatever follows on the same link (the runner's session messages) is not part of
//! the compressed stream.
//!
//! ## Parts
//!
//! * [`ZstdOut`]: the source's side, writes chunks to any [`std::io::Write`]; the level
//!   (or stored chunks) may change between any two writes.
//! * [`Unchunker`]: the destination's side as a push state machine: link bytes in, stream
//!   bytes out, into buffers the caller owns (what a C caller drives).
//! * [`ZstdIn`]: the destination's side over a [`std::io::Read`] link, built on
//!   [`Unchunker`].

mod out;
mod read;
mod unchunk;

pub use out::ZstdOut;
pub use read::{Through, ZstdIn};
pub use unchunk::{Progress, Unchunker};

/// Bytes of zstd output sent as one chunk once they are ready.
const CHUNK: usize = 256 * 1024;

/// The largest chunk a destination accepts: zstd's output for one flush of the source's
/// writes, which are at most one codec output at a time, stays far below it.
pub const MAX_CHUNK: usize = 16 << 20;

/// The stream compression's name in the runner's hello.
pub const NAME: &str = "zstd";

/// The length word's flag for a stored chunk.
const STORED: u32 = 1 << 31;

/// A zstd level outside what [`check_level`] accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLevel(pub i32);

impl std::fmt::Display for BadLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "zstd level {} is outside {:?} (0 is not a level)",
            self.0,
            zstd::compression_level_range()
        )
    }
}

impl std::error::Error for BadLevel {}

/// The levels accepted: zstd's own range, without 0 (its "default" alias).
pub fn check_level(level: i32) -> Result<i32, BadLevel> {
    if zstd::compression_level_range().contains(&level) && level != 0 {
        Ok(level)
    } else {
        Err(BadLevel(level))
    }
}

/// Damage in the compressed stream, as an I/O error of kind `InvalidData`.
fn damaged(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Text-like bytes zstd shrinks severalfold, for the tests.
#[cfg(test)]
fn sample(n: usize) -> Vec<u8> {
    (0..n as u32)
        .map(|i| b"pagewire link zstd "[(i % 19) as usize] ^ ((i / 4099) % 5) as u8)
        .collect()
}
