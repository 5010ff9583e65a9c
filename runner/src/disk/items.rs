//! What a disk tunnel's link carries besides whole 4 KiB blocks (which go through the codec
//! as pages, block `offset / 4096` as page number): the hello and the destination end's
//! answer with the export's size before the stream, blobs inside it for what is not a
//! whole aligned block, and the destination end's acknowledgements coming back. Messages
//! are `migrate::session`'s length-prefixed JSON.

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// The unit the codec sees: a 4 KiB block is a page.
pub const BLOCK: u64 = 4096;

/// Blob: bytes at an offset that are not whole aligned blocks (8-byte offset, then data).
pub const TAG_WRITE: u32 = 0x4400;
/// Blob: a range that reads as zeros (offset, length).
pub const TAG_ZEROES: u32 = 0x4401;
/// Blob: a range no longer needed (offset, length); the destination writes zeros there,
/// so that both images stay equal byte for byte.
pub const TAG_TRIM: u32 = 0x4402;
/// Blob: everything before it is to be written (and flushed, if asked) at the destination,
/// then acknowledged with its sequence number (8-byte sequence, 1 byte: flush).
pub const TAG_SYNC: u32 = 0x4403;

/// Blob: a block the destination already holds: target block, base block (where the
/// content is in the destination's export now), and the content's strong hash, checked
/// before it is used.
pub const TAG_BASE: u32 = 0x4404;

/// Seed of the strong hash of a base reference: an XXH3-128 independent of the index's
/// XXH3-64, so that a block whose index hash collides is caught, not copied.
const STRONG_SEED: u64 = 0x7061_6765_7769_7265;

/// A block's index hash (what the base index holds).
pub fn index_hash(block: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(block)
}

/// A block's strong hash (what a base reference carries).
pub fn strong_hash(block: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128_with_seed(block, STRONG_SEED)
}

/// A base reference blob's data.
pub fn base_ref(target: u64, base: u64, strong: u128) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&target.to_le_bytes());
    b[8..16].copy_from_slice(&base.to_le_bytes());
    b[16..].copy_from_slice(&strong.to_le_bytes());
    b
}

/// Parses a base reference blob's data: target block, base block, strong hash.
pub fn parse_base_ref(data: &[u8]) -> Result<(u64, u64, u128)> {
    ensure!(data.len() == 32, "a base reference of {} bytes", data.len());
    Ok((
        u64::from_le_bytes(data[..8].try_into()?),
        u64::from_le_bytes(data[8..16].try_into()?),
        u128::from_le_bytes(data[16..].try_into()?),
    ))
}

/// Largest piece of written bytes in one [`TAG_WRITE`] blob (a blob is at most a page).
pub const WRITE_PIECE: usize = 4096 - 8;

/// What the source end says first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskHello {
    /// Free text for logs.
    pub label: String,
    /// The stream after the hello is compressed with zstd (streaming, flushed at every
    /// sync point); the codec's LZ4 is then off.
    #[serde(default)]
    pub zstd: bool,
}

/// The destination end's answer to the hello, once its export is open: the size the source
/// end's export then has (the mirror job checks it against the source disk), or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskReady {
    pub disk_bytes: u64,
    pub error: Option<String>,
    /// Blocks of the base index that follow (0: none): the destination's export holds an
    /// older copy, or an image that shares content (`docs/STORAGE.md`, *Incremental*).
    #[serde(default)]
    pub base_blocks: u64,
}

/// The destination end's answer to a [`TAG_SYNC`]: everything before it is written (and
/// flushed, if asked), or why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskAck {
    pub seq: u64,
    pub error: Option<String>,
}

/// A range blob's data: offset and length.
pub fn range(offset: u64, len: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&offset.to_le_bytes());
    b[8..].copy_from_slice(&len.to_le_bytes());
    b
}

/// Parses a range blob's data.
pub fn parse_range(data: &[u8]) -> Result<(u64, u64)> {
    ensure!(data.len() == 16, "a range blob of {} bytes", data.len());
    Ok((
        u64::from_le_bytes(data[..8].try_into()?),
        u64::from_le_bytes(data[8..].try_into()?),
    ))
}

/// A sync blob's data.
pub fn sync(seq: u64, flush: bool) -> [u8; 9] {
    let mut b = [0u8; 9];
    b[..8].copy_from_slice(&seq.to_le_bytes());
    b[8] = u8::from(flush);
    b
}

/// Parses a sync blob's data: the sequence and whether to flush.
pub fn parse_sync(data: &[u8]) -> Result<(u64, bool)> {
    ensure!(data.len() == 9, "a sync blob of {} bytes", data.len());
    let flush = match data[8] {
        0 => false,
        1 => true,
        f => bail!("a sync blob with flush byte {f}"),
    };
    Ok((u64::from_le_bytes(data[..8].try_into()?), flush))
}

/// A write blob's data split: the offset and the bytes.
pub fn parse_write(data: &[u8]) -> Result<(u64, &[u8])> {
    ensure!(data.len() > 8, "a write blob of {} bytes", data.len());
    Ok((u64::from_le_bytes(data[..8].try_into()?), &data[8..]))
}
