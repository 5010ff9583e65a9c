//! The portable core of the pagewire offload firmware: everything that is the same on a
//! freestanding Linux process and on a Cortex-M core.
//!
//! * [`serve`]: the device loop over the offload rings (`pagewire::offload::Device`);
//! * [`pageset`]: a deterministic built-in page set, so a board without a host can show
//!   that it encodes exactly what the host library encodes;
//! * [`selftest`]: plays the host side for that page set through a region in the firmware's
//!   own memory and digests the stream.

#![no_std]
#![forbid(unsafe_code)]

pub mod pageset;
pub mod selftest;
pub mod serve;

pub use serve::{serve, Exit, Platform};
