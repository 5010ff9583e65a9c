//! QEMU's live migration stream, parsed and written again: the first building block of
//! `pagewire tunnel` (issue 18), which carries an unmodified QEMU's migration through
//! pagewire's codec. [`Parser`] turns the bytes of a precopy stream, fed as they arrive,
//! into [`Event`]s (the header, the RAM block list, pages, section boundaries, QEMU 10's
//! SWITCHOVER_START command, and the device state as opaque bytes); [`Emitter`] writes a
//! stream the destination QEMU accepts from those events. Anything else (multifd,
//! postcopy, block migration, compression, an unknown section, flag, command or block) is a
//! named [`StreamError`] that says what to do.
//!
//! Depends on `std` and the codec's XBZRLE decoder only, so the fuzz target compiles these
//! files as they are. The format: `format.rs` and `docs/TUNNEL.md`.

mod emitter;
mod error;
mod event;
pub mod format;
mod parser;

pub use emitter::Emitter;
pub use error::{FeedError, StreamError};
pub use event::{
    join_device_state, Event, OwnedEvent, OwnedPageData, PageData, RamBlock, RamSection,
    StreamHeader,
};
pub use parser::{Parser, DEFAULT_PAGE_SIZE, MAX_BLOCKS};

#[cfg(test)]
pub(crate) mod tests;
