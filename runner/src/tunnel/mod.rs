//! `pagewire tunnel`: carries an unmodified QEMU's live migration through pagewire. The
//! source end sits in the source QEMU's migration connection, parses its stream
//! ([`crate::qemu`]), sends every page through the codec and the rest as blobs over the
//! shaped, authenticated link; the destination end decodes and writes a valid QEMU stream
//! into the destination QEMU's `-incoming`. `docs/TUNNEL.md` has the whole design.
//!
//! * [`items`]: what is not a page, as blobs; [`pfns`]: QEMU's pages as codec page numbers;
//! * [`source`] and [`dest`]: the two data paths over any byte streams; [`tail`]: did
//!   QEMU's stream end where a stream ends;
//! * zstd over the whole stream on the link: [`crate::migrate::link_stage`], shared with
//!   the disk tunnel;
//! * [`session`]: the hello and the destination end's reply;
//! * [`endpoint`]: where an end meets its QEMU (`unix:`, `tcp:`);
//! * [`source_end`] and [`dest_end`]: the two ends over the network;
//! * [`switchover`]: a pagewire stop policy, or QEMU's own rule, decides the switchover;
//! * [`demo`]: `pagewire tunnel demo`, real QEMUs side by side.

pub mod demo;
pub mod dest;
pub mod dest_end;
pub mod digest;
pub mod endpoint;
pub mod items;
pub mod pfns;
pub mod session;
pub mod source;
pub mod source_end;
pub mod switchover;
pub mod tail;

pub use crate::migrate::link_stage::{LinkCompression, StageReport, DEFAULT_ZSTD_LEVEL};
pub use dest::{carry_in, Delivered};
pub use dest_end::{DestEndConfig, DestReport, TunnelDest};
pub use endpoint::{QemuEndpoint, QemuListener, QemuStream};
pub use source::{carry_out, Carried};
pub use source_end::{accept_and_tunnel_out, SourceEndConfig, SourceReport};
pub use switchover::{Switchover, TUNNEL_FLOOR_MS};

#[cfg(test)]
mod tests;
