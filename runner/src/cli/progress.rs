//! One progress bar for every command: replay passes, captured snapshots, simulation runs
//! and the pages of a migration's iterations. On stderr; hidden when stderr is not a
//! terminal, or when the command prints JSON.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use pagewire_runner::migrate::compress::Window;
use pagewire_runner::migrate::{IterationRow, MigrationProgress};
use pagewire_runner::trace::capture::CaptureProgress;
use pagewire_runner::{PassReport, ReplayProgress};

/// A bar counting `unit`s ("passes", "snapshots", "runs", "pages").
pub struct Bar {
    bar: ProgressBar,
    quiet: bool,
}

impl Bar {
    /// A bar of `len` units.
    pub fn new(len: u64, unit: &str) -> Self {
        Self::with(ProgressBar::new(len), unit, false)
    }

    /// A bar for a migration's pages; `quiet` hides it (for `--json`).
    pub fn pages(quiet: bool) -> Self {
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        Self::with(bar, "pages", quiet)
    }

    fn with(bar: ProgressBar, unit: &str, quiet: bool) -> Self {
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} [{{elapsed_precise}}] {{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Bar { bar, quiet }
    }

    /// One more unit is done: `what` it was.
    pub fn done(&self, what: &str) {
        self.bar.inc(1);
        self.bar.set_message(what.to_owned());
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl ReplayProgress for Bar {
    fn pass_started(&mut self, pass: usize, passes: usize, pages: usize) {
        self.bar.set_length(passes as u64);
        self.bar.set_message(format!("pass {pass}: {pages} pages"));
    }

    fn pass_done(&mut self, _row: &PassReport) {
        self.bar.inc(1);
    }
}

impl CaptureProgress for Bar {
    fn started(&mut self, count: usize, mem_bytes: u64) {
        self.bar.set_length(count as u64);
        self.bar
            .set_message(format!("{} MiB per snapshot", mem_bytes >> 20));
    }

    fn saving(&mut self, i: usize) {
        self.bar.set_message(format!("saving snapshot {i}"));
    }

    fn saved(&mut self, i: usize, pause: Duration) {
        self.bar.inc(1);
        self.bar.set_message(format!(
            "snapshot {i}: VM paused {:.0} ms",
            pause.as_secs_f64() * 1e3
        ));
    }
}

/// One bar per iteration: pages of the iteration sent so far.
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
                "iteration {:>2}: sent {:>7} pages ({:>7.2} MiB, {}) in {:>6.3} s, dirtied {:>7}, remaining {:>7}{}",
                row.iteration,
                row.pages_sent,
                row.bytes as f64 / (1u64 << 20) as f64,
                row.stage(),
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

    fn stage_changed(&mut self, w: &Window) {
        if !self.quiet {
            let on_its_way = match w.backlog_growth {
                Some(g) => format!(
                    "; of its {} KiB out, {} KiB more wait for the link",
                    w.bytes >> 10,
                    g.max(0) >> 10
                ),
                None => String::new(),
            };
            self.bar.println(format!(
                "compress auto: {} -> {} ({:.0} % of the last {} pages waiting for the link{on_its_way})",
                w.stage.name(),
                w.stage_next.name(),
                w.waiting() * 100.0,
                w.pages
            ));
        }
    }
}
