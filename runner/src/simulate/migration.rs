//! One simulated pre-copy migration: iterations while the guest runs, then stop-and-copy.
//!
//! Time advances by the bytes each page puts on the wire over the link's throughput; every
//! iteration ends with one round trip (the iteration marker is acknowledged before the dirty
//! log is read), and so does the stop-and-copy (the destination confirms before the VM
//! resumes there). Encoding time is not modelled: the codec runs at hundreds of MB/s, the
//! links modelled here at 125 MB/s or less.

use anyhow::{bail, Result};
use pagewire::policy::{Decision, IterationReport};

use super::guest::Guest;
use super::limits::MAX_SIMULATED_S;
use super::link::LinkModel;
use super::sender::Sender;

/// What one iteration did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SimIteration {
    /// 1 for the first full pass; the stop-and-copy is the last row.
    pub iteration: u32,
    /// Pages sent.
    pub sent: u64,
    /// Pages the guest dirtied meanwhile (0 during the stop-and-copy: the guest is paused).
    pub dirtied: u64,
    /// Pages left to send afterwards.
    pub remaining: u64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// Simulated time when it started.
    pub start_s: f64,
}

/// The outcome of one migration.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunResult {
    /// Pre-copy iterations before the stop-and-copy (the first full pass counts).
    pub iterations: u32,
    /// Seconds from start to the VM running at the destination.
    pub total_s: f64,
    /// Seconds the VM was paused.
    pub downtime_s: f64,
    /// Bytes on the wire.
    pub bytes: u64,
    /// When the stop-and-copy started.
    pub final_start_s: f64,
    /// Every iteration, the stop-and-copy last.
    pub rows: Vec<SimIteration>,
}

/// A migration in progress, advanced one iteration at a time (so several can share a
/// clock-ordered schedule).
pub struct Migration<'a, 'w> {
    guest: Guest<'w>,
    sender: Sender<'a>,
    link: LinkModel,
    now: f64,
    to_send: Vec<u64>,
    rows: Vec<SimIteration>,
    bytes: u64,
}

impl<'a, 'w> Migration<'a, 'w> {
    /// Starts at time 0 with every page to send.
    pub fn new(guest: Guest<'w>, sender: Sender<'a>, link: LinkModel) -> Self {
        let to_send = (0..guest.pages() as u64).collect();
        Migration {
            guest,
            sender,
            link,
            now: 0.0,
            to_send,
            rows: Vec::new(),
            bytes: 0,
        }
    }

    /// The simulated time.
    pub fn now(&self) -> f64 {
        self.now
    }

    /// Guest memory in pages.
    pub fn pages(&self) -> usize {
        self.guest.pages()
    }

    fn wire_time(&self, bytes: u64) -> f64 {
        bytes as f64 / self.link.throughput()
    }

    /// Fails once the simulated clock has passed [`MAX_SIMULATED_S`]: the guest is stepped
    /// through every simulated second, so a clock without bound is a run without end.
    fn check_clock(&self) -> Result<()> {
        if self.now > MAX_SIMULATED_S {
            bail!(
                "a simulated migration passed {} hours of simulated time without finishing \
                 (the simulator's limit): the link is too slow for this guest; raise \
                 --bandwidth or --window-mib, or lower --rtt or --mem-mib",
                MAX_SIMULATED_S / 3600.0
            );
        }
        Ok(())
    }

    /// Sends the pending pages while the guest keeps running; returns what a stop policy is
    /// fed.
    pub fn iterate(&mut self) -> Result<IterationReport> {
        let start = self.now;
        let mut bytes = 0;
        let pages = std::mem::take(&mut self.to_send);
        for &pfn in &pages {
            self.check_clock()?;
            self.guest.run_until(self.now)?;
            let b = self.sender.page(pfn, self.guest.page(pfn))?;
            bytes += b;
            self.now += self.wire_time(b);
        }
        let b = self.sender.end_iteration()?;
        bytes += b;
        self.now += self.wire_time(b) + self.link.rtt_s;
        self.check_clock()?;
        self.guest.run_until(self.now)?;
        self.to_send = self.guest.take_dirty();
        self.bytes += bytes;
        let dirtied = self.to_send.len() as u64;
        let iteration = self.rows.len() as u32 + 1;
        self.rows.push(SimIteration {
            iteration,
            sent: pages.len() as u64,
            dirtied,
            remaining: dirtied,
            bytes,
            seconds: self.now - start,
            start_s: start,
        });
        Ok(IterationReport {
            iteration,
            pages_sent: pages.len() as u64,
            pages_dirtied: dirtied,
            pages_remaining: dirtied,
            bytes_sent: bytes,
            elapsed_us: ((self.now - start) * 1e6) as u64,
            bandwidth_bytes_per_s: self.link.throughput() as u64,
        })
    }

    /// Pauses the guest, sends what is left and ends the stream.
    pub fn stop_and_copy(mut self) -> Result<RunResult> {
        let pause = self.now;
        let pages = std::mem::take(&mut self.to_send);
        let mut bytes = 0;
        for &pfn in &pages {
            let b = self.sender.page(pfn, self.guest.page(pfn))?;
            bytes += b;
        }
        bytes += self.sender.finish()?;
        self.now += self.wire_time(bytes) + self.link.rtt_s;
        self.bytes += bytes;
        let iterations = self.rows.len() as u32;
        self.rows.push(SimIteration {
            iteration: iterations + 1,
            sent: pages.len() as u64,
            dirtied: 0,
            remaining: 0,
            bytes,
            seconds: self.now - pause,
            start_s: pause,
        });
        Ok(RunResult {
            iterations,
            total_s: self.now,
            downtime_s: self.now - pause,
            bytes: self.bytes,
            final_start_s: pause,
            rows: self.rows,
        })
    }

    /// Runs to the end under one stop policy.
    pub fn run(mut self, policy: &mut dyn pagewire::policy::StopPolicy) -> Result<RunResult> {
        loop {
            let report = self.iterate()?;
            if policy.decide(&report) == Decision::StopAndCopy {
                return self.stop_and_copy();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulate::sender::CodecMode;
    use crate::simulate::timeline::Timeline;
    use pagewire::policy::StopPolicy;

    /// 16 pages, every one rewritten every simulated second.
    struct Busy {
        image: Vec<u8>,
        round: u8,
    }

    impl Timeline for Busy {
        fn name(&self) -> &str {
            "busy"
        }
        fn page_size(&self) -> usize {
            4096
        }
        fn mem_bytes(&self) -> usize {
            self.image.len()
        }
        fn interval_s(&self, _k: usize) -> f64 {
            1.0
        }
        fn reset(&mut self) -> Result<()> {
            self.image.fill(0);
            Ok(())
        }
        fn image(&self) -> &[u8] {
            &self.image
        }
        fn step(&mut self) -> Result<Vec<u64>> {
            self.round = self.round.wrapping_add(1);
            self.image.fill(self.round);
            Ok((0..16).collect())
        }
    }

    /// A policy that never stops (the codec's all have a ceiling; a broken one might not).
    struct Never;

    impl StopPolicy for Never {
        fn decide(&mut self, _r: &IterationReport) -> Decision {
            Decision::Continue
        }
        fn name(&self) -> &'static str {
            "never"
        }
    }

    #[test]
    fn the_simulated_clock_is_bounded() {
        let mut t = Busy {
            image: vec![0; 16 * 4096],
            round: 0,
        };
        // an iteration of 16 raw pages takes about an hour
        let link = LinkModel {
            bytes_per_s: 16.0 * 4104.0 / 3600.0,
            rtt_s: 0.0,
            window_bytes: 1e9,
        };
        let cfg = pagewire::Config::DEFAULT;
        let sender = Sender::new(CodecMode::None, cfg, &mut []).unwrap();
        let m = Migration::new(Guest::start(&mut t).unwrap(), sender, link);
        let e = m.run(&mut Never).unwrap_err().to_string();
        assert!(e.contains("passed 6 hours of simulated time"), "{e}");
    }
}
