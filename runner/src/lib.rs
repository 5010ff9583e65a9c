//! pagewire's std side. For now: `pagewire replay`, which streams a series of guest memory
//! snapshots through the codec's encoder and decoder in one process, verifies that the
//! destination ends up with exactly the source's memory after every pass, and reports bytes
//! on the wire and codec speed.
//!
//! * [`manifest`]: the snapshot series folder (`manifest.json` + raw snapshots);
//! * [`synthetic`]: a deterministic synthetic workload, for machines without traces;
//! * [`settings`]: command-line codec settings to [`pagewire::Config`];
//! * [`replay`]: the replay and its verification;
//! * [`replay::report`]: the measurements, as a table and as JSON;
//! * [`trace`]: `pagewire trace capture`, snapshot series of a real
//!   QEMU guest through QMP.
//! * [`encoders`]: the stream encoders, in process or the offload
//!   firmware in its own process over shared memory.

mod buffer;
pub mod encoders;
pub mod live;
pub mod migrate;
pub mod net;
pub mod replay;
pub mod series;
pub mod settings;
pub mod simulate;
pub mod trace;
pub mod units;
pub mod vmm;
pub mod workload;

pub use replay::{replay, replay_with, ReplayProgress, VerifyError};
pub use replay::{Counts, PassReport, ReplayReport};
pub use series::{Manifest, SnapshotDir, SnapshotSource, SyntheticParams, SyntheticSeries};
pub use settings::CodecSettings;
pub use workload::Workload;
