//! pagewire decides when an unmodified QEMU stops the guest (issue 18's switchover): QEMU
//! stops pre-copy on its own once the dirty bytes left fit its bandwidth times its
//! `downtime-limit`, and has no "switch over now" command. So [`QemuStop`] holds that
//! limit at a floor during pre-copy, watches the passes through `query-migrate`, gives a
//! pagewire stop policy one [`IterationReport`](pagewire::policy::IterationReport) per pass,
//! and raises the limit to QEMU's maximum when the policy says stop. Whatever goes wrong
//! restores the limit QEMU had, so QEMU's own rule is the safety net. Works for any QEMU
//! migration, direct or through `pagewire tunnel`. How exactly: `docs/TUNNEL.md`.
//!
//! * `sample`: one `query-migrate` reply, and passes found in successive replies (pure);
//! * `controller`: the QMP side: floor, raise, safety net;
//! * `timeline`: what it saw and decided, for reports.

mod controller;
mod sample;
mod timeline;

pub use controller::{
    Progress, QemuStop, StopError, StopOptions, DEFAULT_FLOOR_MS, DEFAULT_POLL_INTERVAL,
    QEMU_DEFAULT_DOWNTIME_LIMIT_MS, QEMU_DEFAULT_MAX_BANDWIDTH, QEMU_MAX_DOWNTIME_LIMIT_MS,
};
pub use sample::{PassTracker, RamSample};
pub use timeline::{PassRecord, StopEnd, StopTimeline};
