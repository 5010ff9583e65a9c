//! The one error type of the codec.

use core::fmt;

/// Everything that can go wrong in the codec.
///
/// The encoder only ever fails with [`Error::OutputTooSmall`], [`Error::InvalidConfig`],
/// [`Error::InsufficientStorage`], [`Error::WrongPageLength`], [`Error::BlobTooLarge`] or
/// [`Error::Finished`]; every
/// other variant names a defect of an incoming stream. No variant is ever produced by a
/// panic path: the decoder turns every malformed input into one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is outside what this version supports; the message says which field.
    InvalidConfig(&'static str),
    /// The storage handed in is smaller than the configuration needs.
    InsufficientStorage { needed: usize, given: usize },
    /// The output buffer cannot hold the worst case; size it with `Config::max_output_len`.
    OutputTooSmall { needed: usize, given: usize },
    /// A blob larger than `Config::max_blob_len` was appended.
    BlobTooLarge { len: usize, max: usize },
    /// A page handed to the encoder is not `page_size` bytes long.
    WrongPageLength { expected: usize, got: usize },
    /// The encoder was used after `finish`, or the decoder after a failure or the end record.
    Finished,
    /// The stream does not start with the pagewire magic: not a pagewire stream.
    BadMagic,
    /// The stream was written by a format version this decoder does not speak.
    UnsupportedVersion(u8),
    /// Stream header or frame failed its CRC-32C: corrupted in transit; discard the migration.
    CrcMismatch,
    /// The input ends inside a header, frame or record, or the stream ends before its end record.
    Truncated,
    /// A frame of a different stream (other stream id) was fed to this decoder.
    WrongStream,
    /// A frame arrived out of order (lost, replayed or reordered).
    FrameOutOfOrder { expected: u32, got: u32 },
    /// An unknown frame or record tag, or a reserved field that is not zero.
    Malformed(&'static str),
    /// A length field is outside its allowed range.
    LengthOutOfRange,
    /// A varint is longer than 10 bytes or does not fit its field.
    VarintOverflow,
    /// A cache reference names a slot that was never filled.
    EmptySlot,
    /// A cache reference names a slot whose page was already evicted.
    EvictedSlot,
    /// A cache reference names a slot its owner page has retired (format version 3: the
    /// owner's memory has changed since, so the slot may no longer be referenced).
    RetiredSlot,
    /// A PATCH names a live slot that another page owns (a PATCH may only change the slot
    /// of its own page).
    ForeignPatch,
    /// The destination has no place for page `pfn` (outside the guest's memory).
    PfnOutOfRange { pfn: u64 },
    /// An in-place decoder could not read page `pfn` back from the destination (a
    /// destination that cannot be read decodes in `DecodeMode::CacheCopy`).
    PageUnreadable { pfn: u64 },
    /// An XOR/RLE delta is malformed: empty run, or a run past the end of the page or block.
    BadDelta,
    /// The LZ4-compressed frame body does not decompress to its declared length.
    BadCompression,
    /// Iteration markers are not consecutive.
    IterationOutOfOrder { expected: u64, got: u64 },
    /// Data follows the end-of-stream record.
    TrailingData,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Error::InsufficientStorage { needed, given } => write!(
                f,
                "storage too small: the configuration needs {needed} bytes, {given} were given (size it with Config::encoder_storage_len / decoder_storage_len)"
            ),
            Error::OutputTooSmall { needed, given } => write!(
                f,
                "output buffer too small: {needed} bytes needed, {given} given (size it with Config::max_output_len)"
            ),
            Error::BlobTooLarge { len, max } => {
                write!(f, "blob of {len} bytes exceeds the limit of {max} bytes (raise frame_bytes or split the blob)")
            }
            Error::WrongPageLength { expected, got } => {
                write!(f, "page of {got} bytes where the stream's page_size is {expected}")
            }
            Error::Finished => write!(f, "the stream is already finished or failed; start a new one"),
            Error::BadMagic => write!(f, "not a pagewire stream (bad magic)"),
            Error::UnsupportedVersion(v) => write!(
                f,
                "unsupported format version {v}: this release reads version {} only; run releases of the same format version at both ends",
                crate::FORMAT_VERSION
            ),
            Error::CrcMismatch => write!(f, "CRC-32C mismatch: the stream was corrupted in transit"),
            Error::Truncated => write!(f, "stream truncated: input ends inside a frame or before the end record"),
            Error::WrongStream => write!(f, "frame belongs to another stream (stream id differs)"),
            Error::FrameOutOfOrder { expected, got } => write!(
                f,
                "frame {got} arrived where frame {expected} was expected (lost, replayed or reordered)"
            ),
            Error::Malformed(what) => write!(f, "malformed stream: {what}"),
            Error::LengthOutOfRange => write!(f, "a length field is out of range"),
            Error::VarintOverflow => write!(f, "a varint overflows its field"),
            Error::EmptySlot => write!(f, "reference to a cache slot that was never filled"),
            Error::EvictedSlot => write!(f, "reference to a cache slot that was already evicted"),
            Error::RetiredSlot => write!(f, "reference to a cache slot its owner page has retired"),
            Error::ForeignPatch => write!(f, "PATCH of a cache slot that another page owns"),
            Error::PfnOutOfRange { pfn } => {
                write!(f, "the destination has no place for page {pfn} (outside guest memory)")
            }
            Error::PageUnreadable { pfn } => write!(
                f,
                "the destination cannot read page {pfn} back; decode in cache-copy mode"
            ),
            Error::BadDelta => write!(f, "malformed XOR/RLE delta (empty run or run past the end)"),
            Error::BadCompression => write!(f, "LZ4 frame body does not decompress to its declared length"),
            Error::IterationOutOfOrder { expected, got } => {
                write!(f, "iteration marker {got} where {expected} was expected")
            }
            Error::TrailingData => write!(f, "data after the end-of-stream record"),
        }
    }
}

impl core::error::Error for Error {}

/// Result alias used throughout the codec.
pub type Result<T> = core::result::Result<T, Error>;
