//! One simulated pre-copy migration: iterations while the guest runs, then stop-and-copy.
//!
//! Time advances by the bytes each page puts on the wire over the link's throughput; every
//! iteration ends with one round trip (the iteration marker is acknowledged before the dirty
//! log is read), and so does the stop-and-copy (the destination confirms before the VM
//! resumes there). Encoding time is not modelled: the codec runs at hundreds of MB/s, the
//! links modelled here at 125 MB/s or less.

use anyhow::Result;
use pagewire::policy::{Decision, IterationReport};

use super::guest::Guest;
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

    /// Sends the pending pages while the guest keeps running; returns what a stop policy is
    /// fed.
    pub fn iterate(&mut self) -> Result<IterationReport> {
        let start = self.now;
        let mut bytes = 0;
        let pages = std::mem::take(&mut self.to_send);
        for &pfn in &pages {
            self.guest.run_until(self.now)?;
            let b = self.sender.page(pfn, self.guest.page(pfn))?;
            bytes += b;
            self.now += self.wire_time(b);
        }
        let b = self.sender.end_iteration()?;
        bytes += b;
        self.now += self.wire_time(b) + self.link.rtt_s;
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
