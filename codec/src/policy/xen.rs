//! Xen's stop rules, classic and today's.

use super::{Decision, IterationReport, StopPolicy};

/// Xen's classic rule: stop after 30 iterations, once 3x the VM's memory has been sent, or
/// when fewer than 50 pages remain.
#[derive(Debug, Clone)]
pub struct XenClassic {
    vm_pages: u64,
    pages_sent: u64,
    /// Iteration cap (30).
    pub max_iterations: u32,
    /// Stop once this many times the VM's memory has been sent (3).
    pub max_sent_factor: u64,
    /// Stop when fewer pages than this remain (50).
    pub min_remaining: u64,
}

impl XenClassic {
    /// The classic rule for a VM of `vm_pages` pages.
    pub const fn new(vm_pages: u64) -> Self {
        XenClassic {
            vm_pages,
            pages_sent: 0,
            max_iterations: 30,
            max_sent_factor: 3,
            min_remaining: 50,
        }
    }
}

impl StopPolicy for XenClassic {
    fn decide(&mut self, r: &IterationReport) -> Decision {
        self.pages_sent = self.pages_sent.saturating_add(r.pages_sent);
        let budget = self.vm_pages.saturating_mul(self.max_sent_factor);
        if r.iteration >= self.max_iterations
            || self.pages_sent >= budget
            || r.pages_remaining < self.min_remaining
        {
            Decision::StopAndCopy
        } else {
            Decision::Continue
        }
    }

    fn name(&self) -> &'static str {
        "xen-classic"
    }
}

/// Xen today: stop when fewer than 50 pages are dirty or after 5 iterations.
#[derive(Debug, Clone)]
pub struct XenToday {
    /// Iteration cap (5).
    pub max_iterations: u32,
    /// Stop when fewer pages than this remain (50).
    pub min_remaining: u64,
}

impl Default for XenToday {
    fn default() -> Self {
        XenToday {
            max_iterations: 5,
            min_remaining: 50,
        }
    }
}

impl StopPolicy for XenToday {
    fn decide(&mut self, r: &IterationReport) -> Decision {
        if r.iteration >= self.max_iterations || r.pages_remaining < self.min_remaining {
            Decision::StopAndCopy
        } else {
            Decision::Continue
        }
    }

    fn name(&self) -> &'static str {
        "xen-today"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(iteration: u32, sent: u64, remaining: u64) -> IterationReport {
        IterationReport {
            iteration,
            pages_sent: sent,
            pages_dirtied: remaining,
            pages_remaining: remaining,
            ..Default::default()
        }
    }

    #[test]
    fn classic_stops_on_each_rule() {
        // few pages left
        let mut p = XenClassic::new(1000);
        assert_eq!(p.decide(&rep(1, 1000, 400)), Decision::Continue);
        assert_eq!(p.decide(&rep(2, 400, 49)), Decision::StopAndCopy);
        // 3x memory sent: a non-converging workload that dirties everything
        let mut p = XenClassic::new(1000);
        let mut it = 1;
        while p.decide(&rep(it, 1000, 1000)) == Decision::Continue {
            it += 1;
        }
        assert_eq!(it, 3);
        // 30 iterations
        let mut p = XenClassic::new(1_000_000);
        let mut it = 1;
        while p.decide(&rep(it, 100, 100)) == Decision::Continue {
            it += 1;
        }
        assert_eq!(it, 30);
    }

    #[test]
    fn today_stops_at_five_or_few_pages() {
        let mut p = XenToday::default();
        let mut it = 1;
        while p.decide(&rep(it, 5000, 5000)) == Decision::Continue {
            it += 1;
        }
        assert_eq!(it, 5);
        assert_eq!(
            XenToday::default().decide(&rep(2, 500, 10)),
            Decision::StopAndCopy
        );
    }
}
