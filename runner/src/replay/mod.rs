//! Replay: a snapshot series played through one encoder and one decoder in the same
//! process, every page that arrives verified. Snapshot 0 is the first migration pass
//! (every page), each later snapshot a pass over the pages that differ from the one before;
//! after every pass the destination image must equal the snapshot. It measures what the
//! codec alone does to real memory (bytes by record kind, codec speed), with no guest, link
//! or policy in the way: [`replay_with`] runs it ([`run`]), [`receiver`] is the decoding end,
//! [`verify`] the checks, [`report`] the table and JSON.

pub mod receiver;
pub mod report;
pub mod run;
pub mod verify;

pub use report::{ConfigReport, Counts, PassReport, ReplayReport};
pub use run::{memory_budget, replay, replay_with, ReplayProgress};
pub use verify::VerifyError;
