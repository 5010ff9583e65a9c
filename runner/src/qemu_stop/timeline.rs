//! What the switchover controller saw and decided, for reports and `--json`.

use pagewire::policy::{Decision, IterationReport};
use serde::Serialize;

/// One completed pre-copy pass and the policy's answer to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassRecord {
    /// The report the policy was given (its `iteration` is the pass number).
    pub report: IterationReport,
    /// QEMU's `total-time` when the pass was seen to have ended, in milliseconds.
    pub seen_at_ms: u64,
    /// `ram.dirty-sync-count` when it was seen.
    pub dirty_sync_count: u64,
    /// `ram.remaining` when it was seen, in bytes.
    pub remaining_bytes: u64,
    /// `ram.dirty-pages-rate` when it was seen, in pages per second.
    pub dirty_pages_rate: u64,
    /// What the controller did.
    pub decision: Decision,
    /// Why, in a few words.
    pub reason: String,
}

/// How the controller's part ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum StopEnd {
    /// QEMU finished the migration (`completed`).
    Completed,
    /// QEMU's migration failed (`failed`), with QEMU's `error-desc` if it gave one.
    Failed { error: String },
    /// The migration was cancelled (`cancelled`).
    Cancelled,
    /// The controller stepped back and left the switchover to QEMU's own downtime limit
    /// (restored), while the migration went on.
    HandedToQemu { reason: String },
}

/// Everything the controller saw and decided during one migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StopTimeline {
    /// The stop policy's name.
    pub policy: String,
    /// The downtime limit held during pre-copy, in milliseconds.
    pub floor_ms: u64,
    /// The limit QEMU had before (restored as the safety net and at the end).
    pub user_downtime_limit_ms: u64,
    /// The bandwidth cap set, in bytes per second (`None`: QEMU's own left alone).
    pub max_bandwidth: Option<u64>,
    /// Every pass seen, in order.
    pub passes: Vec<PassRecord>,
    /// The pass after which the controller raised the limit to stop QEMU, if it did.
    pub stop_after_pass: Option<u32>,
    /// `ram.dirty-sync-count` when the raise was sent.
    pub dirty_sync_count_at_stop: Option<u64>,
    /// How it ended.
    pub end: StopEnd,
    /// `ram.dirty-sync-count` in the last reply (at completion: the stop pass included).
    pub final_dirty_sync_count: u64,
    /// QEMU's `total-time` in the last reply, in milliseconds.
    pub total_time_ms: u64,
    /// QEMU's own `downtime` figure once completed, in milliseconds.
    pub qemu_downtime_ms: Option<u64>,
    /// QEMU's `ram.downtime-bytes` once completed: what the stop-and-copy sent.
    pub qemu_downtime_bytes: Option<u64>,
}
