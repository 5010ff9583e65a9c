//! What a migration tells whoever shows its progress: every lane's sender and the
//! migration's own thread report here, so it sits below both.

use super::compress::Window;
use super::report::IterationRow;

/// Hears how a migration advances (for a progress bar).
pub trait MigrationProgress {
    /// Iteration `iteration` starts with `pages` to send.
    fn iteration_started(&mut self, _iteration: u32, _pages: u64) {}
    /// `n` more pages of the current iteration were sent.
    fn pages_sent(&mut self, _n: u64) {}
    /// An iteration (or the stop-and-copy) finished.
    fn iteration_done(&mut self, _row: &IterationRow) {}
    /// Something else is happening ("stop-and-copy", "waiting for the destination").
    fn note(&mut self, _what: &str) {}
    /// `--compress auto` changed its stage after the window `w`.
    fn stage_changed(&mut self, _w: &Window) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl MigrationProgress for NoProgress {}
