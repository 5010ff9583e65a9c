//! Stop-and-copy policies: fed once per pre-copy iteration with what happened, they answer
//! "iterate again" or "stop and copy now". Integer arithmetic only, no allocation.
//!
//! Every policy has a hard ceiling on iterations, so any sequence of reports ends.

mod downtime;
mod group;
mod kind;
mod smart_stop;
mod xen;

pub use downtime::DowntimeLimit;
pub use group::{GroupDecision, SynchronizedArrival};
pub use kind::{AnyPolicy, PolicyKind, PolicyParams};
pub use smart_stop::{SmartStop, DEFAULT_WINDOW, MAX_WINDOW};
pub use xen::{XenClassic, XenToday};

/// What one pre-copy iteration did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[repr(C)]
pub struct IterationReport {
    /// 1 for the first (full) pass, then 2, 3, ...
    pub iteration: u32,
    /// Pages sent during this iteration.
    pub pages_sent: u64,
    /// Pages the guest dirtied while this iteration ran.
    pub pages_dirtied: u64,
    /// Dirty pages the next iteration (or the stop-and-copy) would have to send.
    pub pages_remaining: u64,
    /// Bytes this iteration put on the wire.
    pub bytes_sent: u64,
    /// How long this iteration took, in microseconds.
    pub elapsed_us: u64,
    /// Measured link bandwidth in bytes per second (0 if unknown).
    pub bandwidth_bytes_per_s: u64,
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[repr(u32)]
pub enum Decision {
    /// Run another pre-copy iteration.
    Continue = 0,
    /// Pause the VM and send what remains.
    StopAndCopy = 1,
}

/// A stop-and-copy rule.
pub trait StopPolicy {
    /// Called after every pre-copy iteration.
    fn decide(&mut self, report: &IterationReport) -> Decision;
    /// Short name for reports.
    fn name(&self) -> &'static str;
}

/// Iterations after which every policy stops, whatever the reports say.
pub const DEFAULT_CEILING: u32 = 30;

/// True once an iteration's dirtying has caught up with its sending: from here on,
/// iterating no longer shrinks what is left to send (the CloudNet crossover).
#[inline]
pub fn crossed_over(r: &IterationReport) -> bool {
    r.iteration > 1 && r.pages_dirtied >= r.pages_sent
}
