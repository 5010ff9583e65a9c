//! What can go wrong between host and device: fatal region errors, rejected descriptors, and
//! the numeric codes both carry in shared memory.

use core::fmt;

use super::layout::status;

/// What the device reports in the `DEVICE_STATE` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum DeviceState {
    /// Not attached yet (the host zeroes the control block).
    Init = 0,
    /// Serving the rings.
    Running = 1,
    /// Published the FINISH completion and stopped.
    Finished = 2,
    /// Stopped on a fatal error; `DEVICE_ERROR` holds [`OffloadError::code`].
    Failed = 3,
    /// Stopped because the host wrote `HOST_CMD_STOP`.
    Stopped = 4,
}

impl DeviceState {
    /// The state a word names; `None` for a value no device writes.
    pub fn from_word(w: u32) -> Option<Self> {
        Some(match w {
            0 => DeviceState::Init,
            1 => DeviceState::Running,
            2 => DeviceState::Finished,
            3 => DeviceState::Failed,
            4 => DeviceState::Stopped,
            _ => return None,
        })
    }
}

/// A fatal problem with the region: the side that finds it stops using the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OffloadError {
    /// The region is shorter than its header says, or than the control block.
    RegionTooSmall { needed: usize, given: usize },
    /// The first word is not the offload magic: the host has not set the region up.
    BadMagic,
    /// The region was set up for another protocol version.
    UnsupportedVersion(u32),
    /// A header field is inconsistent; the message names it.
    BadLayout(&'static str),
    /// The codec configuration in the header is invalid or too big for this device's
    /// buffers.
    Codec(crate::Error),
    /// The other side moved an index further than the ring allows (a host or device bug).
    BadIndex(&'static str),
    /// The device published a completion that does not fit the protocol (host side check).
    BadCompletion(&'static str),
    /// The device stopped: failed (with its code), finished or stopped early.
    DeviceStopped { state: u32, code: u32 },
}

impl OffloadError {
    /// The number the device writes to `DEVICE_ERROR` (`docs/OFFLOAD.md`).
    pub fn code(&self) -> u32 {
        match self {
            OffloadError::RegionTooSmall { .. } => 1,
            OffloadError::BadMagic => 2,
            OffloadError::UnsupportedVersion(_) => 3,
            OffloadError::BadLayout(_) => 4,
            OffloadError::Codec(_) => 5,
            OffloadError::BadIndex(_) => 6,
            OffloadError::BadCompletion(_) => 7,
            OffloadError::DeviceStopped { .. } => 8,
        }
    }
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OffloadError::RegionTooSmall { needed, given } => write!(
                f,
                "shared region too small: {needed} bytes needed, {given} mapped"
            ),
            OffloadError::BadMagic => write!(
                f,
                "shared region has no offload header (bad magic): the host must set it up first"
            ),
            OffloadError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "offload protocol version {v} is not supported (this side speaks 1)"
                )
            }
            OffloadError::BadLayout(why) => write!(f, "bad region layout: {why}"),
            OffloadError::Codec(e) => write!(f, "codec configuration rejected: {e}"),
            OffloadError::BadIndex(which) => {
                write!(
                    f,
                    "ring index out of range ({which}): the other side is broken"
                )
            }
            OffloadError::BadCompletion(why) => write!(f, "device wrote a bad completion: {why}"),
            OffloadError::DeviceStopped { state, code } => {
                write!(f, "the device stopped (state {state}, error code {code})")
            }
        }
    }
}

impl core::error::Error for OffloadError {}

/// Why the device rejected one descriptor. The device answers it with a completion carrying
/// [`DescError::status`] and goes on with the next one: the stream is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DescError {
    /// No operation flag, several, or an unknown one.
    BadFlags(u32),
    /// The data range leaves the page area or is misaligned (the offset).
    BadRange(u32),
    /// Wrong page length or an oversized blob (the length).
    BadLength(u32),
    /// The entry's `seq` is not its ring position (the seq found).
    BadSeq(u32),
    /// A reserved or unused field is not zero.
    BadReserved,
    /// The encoder refused the call.
    Encoder(crate::Error),
}

impl DescError {
    /// The completion status code.
    pub fn status(&self) -> u32 {
        match self {
            DescError::BadFlags(_) => status::BAD_FLAGS,
            DescError::BadRange(_) => status::BAD_RANGE,
            DescError::BadLength(_) => status::BAD_LENGTH,
            DescError::BadSeq(_) => status::BAD_SEQ,
            DescError::BadReserved => status::BAD_RESERVED,
            DescError::Encoder(_) => status::ENCODER,
        }
    }

    /// The completion's `detail` word: the offending value.
    pub fn detail(&self) -> u32 {
        match *self {
            DescError::BadFlags(v)
            | DescError::BadRange(v)
            | DescError::BadLength(v)
            | DescError::BadSeq(v) => v,
            DescError::BadReserved | DescError::Encoder(_) => 0,
        }
    }
}

impl fmt::Display for DescError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DescError::BadFlags(v) => {
                write!(f, "descriptor flags {v:#x}: need exactly one operation")
            }
            DescError::BadRange(o) => {
                write!(
                    f,
                    "descriptor data at offset {o} leaves the page area or is misaligned"
                )
            }
            DescError::BadLength(n) => {
                write!(f, "descriptor data length {n} is wrong for its operation")
            }
            DescError::BadSeq(s) => write!(f, "descriptor seq {s} is not its ring position"),
            DescError::BadReserved => write!(f, "descriptor has a reserved or unused field set"),
            DescError::Encoder(e) => write!(f, "encoder refused the descriptor: {e}"),
        }
    }
}

impl core::error::Error for DescError {}
