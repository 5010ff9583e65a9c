//! The SmartNIC/DPU offload protocol: a host and a device share one memory region; the host
//! submits pages through a submission ring, the device encodes them with its own
//! [`Encoder`](crate::Encoder) and cache, writes the stream bytes into an output area and
//! answers every descriptor through a completion ring. `docs/OFFLOAD.md` is the byte-level
//! spec; this module implements both ends of it.
//!
//! * [`layout`]: the `#[repr(C)]` header, descriptor and completion types and every offset;
//! * [`Region`]: the region as `&[AtomicU32]`, so no side needs `unsafe` to touch it;
//! * [`Device`]: the device end (firmware): validates every descriptor, never panics on what
//!   the host wrote;
//! * [`Host`]: the host end, which checks what the device wrote.
//!
//! **Memory ordering.** Each index has exactly one writer. A producer fills an entry (and
//! the bytes it points to) with Relaxed stores, then stores the index with Release; the
//! consumer loads the index with Acquire, then reads the entry. Consumers hand space back the
//! same way: the device stores `SQ_HEAD` with Release after it has copied a page out, the
//! host stores `OUT_HEAD` and `CQ_HEAD` with Release after it has copied the output out.
//! Indices are free-running `u32` counters; an entry's slot is `index % entries`.

mod device;
mod error;
mod geometry;
mod host;
pub mod layout;
mod shm;
mod stats;
#[cfg(all(test, feature = "decoder"))]
mod tests;

pub use device::{Device, Poll};
pub use error::{DescError, DeviceState, OffloadError};
pub use geometry::{Layout, RegionParams, MAX_ENTRIES};
pub use host::Host;
pub use layout::{Completion, RegionHeader, SubmitDesc};
pub use shm::Region;
