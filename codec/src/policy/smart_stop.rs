//! CloudNet's Smart Stop.

use heapless::HistoryBuf;

use super::{crossed_over, Decision, IterationReport, StopPolicy, DEFAULT_CEILING};

/// Largest supported window.
pub const MAX_WINDOW: usize = 16;

/// Smart Stop: iterate while iterating pays off. Once an iteration dirties at least as many
/// pages as it sends (the crossover), stop at the first iteration whose pages-to-send is
/// below every value of the `window` iterations before it (a local minimum), or after
/// `window` iterations past the crossover without one, or at the hard ceiling.
#[derive(Debug, Clone)]
pub struct SmartStop {
    /// Iterations looked back on for the local minimum (1 to 16).
    pub window: usize,
    /// Hard ceiling on iterations.
    pub ceiling: u32,
    crossed: bool,
    since_crossover: usize,
    history: HistoryBuf<u64, MAX_WINDOW>,
}

impl Default for SmartStop {
    /// A window of 2: in the simulator's sweep (`docs/SIMULATOR.md`) every workload had the
    /// same downtime for windows 1 to 12 while each extra window iteration cost time and
    /// bytes; 2 still ignores a single noisy iteration.
    fn default() -> Self {
        SmartStop::new(DEFAULT_WINDOW)
    }
}

/// The default window (see `Default`).
pub const DEFAULT_WINDOW: usize = 2;

impl SmartStop {
    /// Smart Stop with the given window (clamped to 1..=16) and a ceiling of 30 iterations.
    pub fn new(window: usize) -> Self {
        SmartStop {
            window: window.clamp(1, MAX_WINDOW),
            ceiling: DEFAULT_CEILING,
            crossed: false,
            since_crossover: 0,
            history: HistoryBuf::new(),
        }
    }

    /// True once the crossover has been seen.
    pub fn crossed(&self) -> bool {
        self.crossed
    }

    /// Is `remaining` below each of the last `window` values?
    fn is_window_minimum(&self, remaining: u64) -> bool {
        let n = self.history.len();
        let skip = n.saturating_sub(self.window);
        self.history
            .oldest_ordered()
            .skip(skip)
            .all(|&v| remaining < v)
    }
}

impl StopPolicy for SmartStop {
    fn decide(&mut self, r: &IterationReport) -> Decision {
        let minimum = self.is_window_minimum(r.pages_remaining);
        self.history.write(r.pages_remaining);
        if r.iteration >= self.ceiling {
            return Decision::StopAndCopy;
        }
        if !self.crossed && crossed_over(r) {
            self.crossed = true;
        }
        if !self.crossed {
            return Decision::Continue;
        }
        self.since_crossover += 1;
        if minimum || self.since_crossover > self.window {
            Decision::StopAndCopy
        } else {
            Decision::Continue
        }
    }

    fn name(&self) -> &'static str {
        "smart-stop"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &mut SmartStop, seq: &[(u64, u64, u64)]) -> Option<u32> {
        for (i, &(sent, dirtied, remaining)) in seq.iter().enumerate() {
            let r = IterationReport {
                iteration: i as u32 + 1,
                pages_sent: sent,
                pages_dirtied: dirtied,
                pages_remaining: remaining,
                ..Default::default()
            };
            if p.decide(&r) == Decision::StopAndCopy {
                return Some(r.iteration);
            }
        }
        None
    }

    #[test]
    fn keeps_going_while_iterations_shrink_the_rest() {
        // dirtying well below sending: converging, no crossover
        let seq = [
            (1000, 300, 300),
            (300, 100, 100),
            (100, 40, 40),
            (40, 20, 20),
        ];
        assert_eq!(run(&mut SmartStop::new(3), &seq), None);
    }

    #[test]
    fn stops_at_a_local_minimum_after_the_crossover() {
        // crossover at iteration 3 (dirtied 200 >= sent 150); remaining 210 is not below
        // 150 (iteration 2), then 140 at iteration 5 is below the window [150, 210, 180]
        let seq = [
            (1000, 150, 150),
            (150, 150, 150),
            (150, 210, 210),
            (210, 180, 180),
            (180, 140, 140),
            (140, 200, 200),
        ];
        assert_eq!(run(&mut SmartStop::new(3), &seq), Some(5));
    }

    #[test]
    fn stops_within_a_window_of_the_crossover_without_a_new_minimum() {
        // after the crossover the rest only grows
        let seq: [(u64, u64, u64); 20] =
            core::array::from_fn(|i| (100 + i as u64, 101 + i as u64, 101 + i as u64));
        let stop = run(&mut SmartStop::new(4), &seq).unwrap();
        assert!(stop <= 2 + 5, "stopped at {stop}");
    }

    #[test]
    fn non_converging_workload_hits_the_ceiling() {
        // dirtying always below sending, rest never shrinking to a minimum: only the
        // ceiling ends it
        let seq = [(1000u64, 999u64, 999u64); 40];
        assert_eq!(run(&mut SmartStop::new(5), &seq), Some(DEFAULT_CEILING));
    }
}
