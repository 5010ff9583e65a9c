//! `pagewire tunnel demo`: real QEMUs, a real Linux guest, a shaped link. One run through
//! the pagewire tunnel, or (`--compare`) the same guest, workload and link for QEMU's own
//! migration (direct, XBZRLE, multifd + zstd) and the tunnel, each verified the same way.
//!
//! * [`method`]: the methods and their QEMU settings;
//! * [`path`]: the link between the QEMUs (a shaped relay, or the two tunnel ends);
//! * [`run`]: one run and its verification;
//! * [`disk`]: `--disk`, the guest migrated with its root disk (docs/STORAGE.md).

pub mod disk;
pub mod method;
pub mod path;
pub mod plot;
pub mod run;

pub use disk::{run_disk_demo, DiskDemo, DiskDemoConfig, DiskMethod, DiskRunResult};
pub use method::Method;
pub use path::TunnelCodec;
pub use plot::{comparison_chart, WorkloadRuns};
pub use run::{run_method, DemoConfig, RunResult};
