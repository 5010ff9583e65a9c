//! The simulated guest: its memory as time passes, and a dirty log like KVM's.

use anyhow::Result;

use super::timeline::Timeline;

/// A guest living through a [`Timeline`] on a simulated clock.
pub struct Guest<'w> {
    workload: &'w mut dyn Timeline,
    current: Vec<u8>,
    page_size: usize,
    interval: usize,
    interval_start: f64,
    /// Writes of the interval in progress, latest first (popped from the end).
    writes: Vec<(f64, u64)>,
    dirty: Vec<bool>,
    dirty_list: Vec<u64>,
}

/// Spreads a page's write over the interval in an order independent of its address.
fn shuffle_key(pfn: u64, interval: usize) -> u64 {
    let mut z = pfn ^ (interval as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl<'w> Guest<'w> {
    /// Starts the workload from snapshot 0 at time 0.
    pub fn start(workload: &'w mut dyn Timeline) -> Result<Self> {
        workload.reset()?;
        let current = workload.image().to_vec();
        let page_size = workload.page_size();
        let pages = current.len() / page_size;
        let mut g = Guest {
            workload,
            current,
            page_size,
            interval: 0,
            interval_start: 0.0,
            writes: Vec::new(),
            dirty: vec![false; pages],
            dirty_list: Vec::new(),
        };
        g.schedule()?;
        Ok(g)
    }

    /// Pages of guest memory.
    pub fn pages(&self) -> usize {
        self.dirty.len()
    }

    /// Page size in bytes.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// The content of `pfn` now.
    pub fn page(&self, pfn: u64) -> &[u8] {
        let at = pfn as usize * self.page_size;
        &self.current[at..at + self.page_size]
    }

    /// Plans the writes of the interval that starts now.
    fn schedule(&mut self) -> Result<()> {
        let changed = self.workload.step()?;
        let d = self.workload.interval_s(self.interval);
        let mut order: Vec<u64> = changed;
        order.sort_by_key(|&p| shuffle_key(p, self.interval));
        let n = order.len() as f64;
        self.writes = order
            .into_iter()
            .enumerate()
            .map(|(j, pfn)| (self.interval_start + (j as f64 + 0.5) / n * d, pfn))
            .collect();
        self.writes.reverse();
        Ok(())
    }

    /// Lets the guest run up to time `t`, applying its writes and logging dirty pages.
    pub fn run_until(&mut self, t: f64) -> Result<()> {
        loop {
            while let Some(&(when, pfn)) = self.writes.last() {
                if when > t {
                    return Ok(());
                }
                self.writes.pop();
                let at = pfn as usize * self.page_size;
                let ps = self.page_size;
                self.current[at..at + ps].copy_from_slice(&self.workload.image()[at..at + ps]);
                if !self.dirty[pfn as usize] {
                    self.dirty[pfn as usize] = true;
                    self.dirty_list.push(pfn);
                }
            }
            let end = self.interval_start + self.workload.interval_s(self.interval);
            if t < end {
                return Ok(());
            }
            self.interval_start = end;
            self.interval += 1;
            self.schedule()?;
        }
    }

    /// Returns the pages dirtied since the last call, ascending, and clears the log
    /// (like `KVM_GET_DIRTY_LOG`).
    pub fn take_dirty(&mut self) -> Vec<u64> {
        let mut list = std::mem::take(&mut self.dirty_list);
        for &p in &list {
            self.dirty[p as usize] = false;
        }
        list.sort_unstable();
        list
    }
}
