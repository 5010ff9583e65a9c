//! The disk tunnel's data path (issue 20, `docs/STORAGE.md`): a QEMU mirror job's writes,
//! taken by an NBD export at the source end, through the codec over the link, and written
//! into the destination's NBD export at the destination end.
//!
//! * [`items`]: the hello, the blobs for what is not a whole block, the acknowledgements;
//! * [`source`]: the export whose writes go to the link ([`DiskOut`]), and the phases of
//!   acknowledgement;
//! * [`dest`]: the stream into the destination's export ([`carry_in`]);
//! * [`ends`]: the two ends over the network (`pagewire disk source` / `disk dest`);
//! * [`migration_watch`]: the synchronous phase from the moment the source QEMU's memory
//!   migration starts (`disk source --qmp`).

pub mod dest;
pub mod ends;
pub mod items;
pub mod migration_watch;
pub mod source;

pub use dest::{carry_in, DiskDelivered};
pub use ends::{
    disk_source, DiskDest, DiskDestConfig, DiskDestReport, DiskSourceConfig, DiskSourceReport,
    NbdAddr,
};
pub use migration_watch::switch_when_migrating;
pub use source::{DiskCarried, DiskOut, Phase, DEFAULT_WINDOW};
