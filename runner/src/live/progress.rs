//! A progress bar for a running migration (on stderr; hidden when stderr is not a terminal).

use indicatif::{ProgressBar, ProgressStyle};

use crate::migrate::{IterationRow, MigrationProgress};

/// One bar per iteration: pages of the iteration sent so far.
pub struct Bar {
    bar: ProgressBar,
    quiet: bool,
}

impl Bar {
    /// A bar; `quiet` hides it (for `--json`).
    pub fn new(quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} pages  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar { bar, quiet }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl MigrationProgress for Bar {
    fn iteration_started(&mut self, iteration: u32, pages: u64) {
        self.bar.set_length(pages);
        self.bar.set_position(0);
        self.bar.set_message(format!("iteration {iteration}"));
    }

    fn pages_sent(&mut self, n: u64) {
        self.bar.inc(n);
    }

    fn iteration_done(&mut self, row: &IterationRow) {
        if !self.quiet {
            self.bar.println(format!(
                "iteration {:>2}: sent {:>7} pages ({:>7.2} MiB) in {:>6.3} s, dirtied {:>7}, remaining {:>7}{}",
                row.iteration,
                row.pages_sent,
                row.bytes as f64 / (1u64 << 20) as f64,
                row.seconds,
                row.pages_dirtied,
                row.pages_remaining,
                row.group.map(|g| format!(", group: {g}")).unwrap_or_default()
            ));
        }
    }

    fn note(&mut self, what: &str) {
        self.bar.set_message(what.to_string());
    }
}
