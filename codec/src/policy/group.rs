//! Synchronized Arrival: related VMs finish their migrations together.

use super::{crossed_over, Decision, IterationReport};

/// What the group tells one member after its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum GroupDecision {
    /// The member itself wants to iterate again.
    Continue = 0,
    /// The member is ready to stop but others are not: iterate again to stay warm.
    Hold = 1,
    /// Every member is ready (or this one was held too long): stop and copy now.
    StopAndCopy = 2,
}

impl GroupDecision {
    /// The plain decision for the member's migration loop.
    pub fn decision(self) -> Decision {
        match self {
            GroupDecision::StopAndCopy => Decision::StopAndCopy,
            _ => Decision::Continue,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Member {
    joined: bool,
    ready: bool,
    held: u32,
    stopped: bool,
}

/// A group of up to `N` members. Each member runs its own stop policy and reports every
/// iteration with that policy's decision. A member becomes *ready* when its policy says stop
/// or when it reaches the crossover (pages dirtied >= pages sent). No member stops until all
/// members still migrating are ready; then each gets `StopAndCopy` at its next report.
/// Every member's own policy has an iteration ceiling, so every member becomes ready in the
/// end; `max_hold` only guards against a member that stops reporting without `leave`: a
/// member held for that many iterations is released regardless.
#[derive(Debug, Clone)]
pub struct SynchronizedArrival<const N: usize> {
    members: [Member; N],
    released: bool,
    /// Iterations a ready member may be held before it is let go.
    pub max_hold: u32,
}

impl<const N: usize> Default for SynchronizedArrival<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SynchronizedArrival<N> {
    /// An empty group; members are held at most 1000 iterations (a small VM's iterations can
    /// be very short while a large one converges).
    pub const fn new() -> Self {
        SynchronizedArrival {
            members: [Member {
                joined: false,
                ready: false,
                held: 0,
                stopped: false,
            }; N],
            released: false,
            max_hold: 1000,
        }
    }

    /// Adds a member; returns its id, or `None` when the group is full.
    pub fn join(&mut self) -> Option<usize> {
        let id = self.members.iter().position(|m| !m.joined)?;
        self.members[id] = Member {
            joined: true,
            ..Member::default()
        };
        self.released = false;
        Some(id)
    }

    /// Removes a member that failed or gave up, so it holds nobody back.
    pub fn leave(&mut self, member: usize) {
        if let Some(m) = self.members.get_mut(member) {
            m.stopped = true;
        }
    }

    /// Members that joined.
    pub fn len(&self) -> usize {
        self.members.iter().filter(|m| m.joined).count()
    }

    /// True when nobody joined.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once every active member is ready.
    pub fn all_ready(&self) -> bool {
        self.released
            || self
                .members
                .iter()
                .filter(|m| m.joined && !m.stopped)
                .all(|m| m.ready)
    }

    /// Member `member` finished an iteration; `own` is its policy's decision. Unknown member
    /// ids are told to stop, so a bad id can never keep a migration running forever.
    pub fn report(&mut self, member: usize, own: Decision, r: &IterationReport) -> GroupDecision {
        let Some(m) = self
            .members
            .get_mut(member)
            .filter(|m| m.joined && !m.stopped)
        else {
            return GroupDecision::StopAndCopy;
        };
        if own == Decision::StopAndCopy || crossed_over(r) {
            m.ready = true;
        }
        if !m.ready {
            return GroupDecision::Continue;
        }
        let held_out = m.held >= self.max_hold;
        if self.all_ready() || held_out {
            self.released = true;
            let m = &mut self.members[member];
            m.stopped = true;
            return GroupDecision::StopAndCopy;
        }
        self.members[member].held += 1;
        GroupDecision::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(iteration: u32, sent: u64, dirtied: u64) -> IterationReport {
        IterationReport {
            iteration,
            pages_sent: sent,
            pages_dirtied: dirtied,
            pages_remaining: dirtied,
            ..Default::default()
        }
    }

    #[test]
    fn small_member_waits_for_the_large_one() {
        let mut g = SynchronizedArrival::<4>::new();
        let small = g.join().unwrap();
        let large = g.join().unwrap();
        // the small VM is ready at once; the large one is still converging
        assert_eq!(
            g.report(small, Decision::StopAndCopy, &rep(2, 100, 10)),
            GroupDecision::Hold
        );
        assert_eq!(
            g.report(large, Decision::Continue, &rep(2, 10000, 3000)),
            GroupDecision::Continue
        );
        assert_eq!(
            g.report(small, Decision::StopAndCopy, &rep(3, 10, 10)),
            GroupDecision::Hold
        );
        // the large one crosses over: it stops, and so does the small one at its next report
        assert_eq!(
            g.report(large, Decision::Continue, &rep(3, 3000, 3100)),
            GroupDecision::StopAndCopy
        );
        assert_eq!(
            g.report(small, Decision::Continue, &rep(4, 10, 5)),
            GroupDecision::StopAndCopy
        );
    }

    #[test]
    fn held_members_are_released_at_the_ceiling_and_leavers_hold_nobody() {
        let mut g = SynchronizedArrival::<2>::new();
        g.max_hold = 3;
        let a = g.join().unwrap();
        let b = g.join().unwrap();
        let mut it = 2;
        while g.report(a, Decision::StopAndCopy, &rep(it, 10, 1)) == GroupDecision::Hold {
            it += 1;
        }
        assert_eq!(it, 5); // held three times
        let mut g = SynchronizedArrival::<2>::new();
        let a = g.join().unwrap();
        let b2 = g.join().unwrap();
        g.leave(b2);
        assert_eq!(
            g.report(a, Decision::StopAndCopy, &rep(2, 10, 1)),
            GroupDecision::StopAndCopy
        );
        // unknown or departed ids are told to stop
        assert_eq!(
            g.report(7, Decision::Continue, &rep(2, 10, 1)),
            GroupDecision::StopAndCopy
        );
        assert_eq!(
            g.report(b2, Decision::Continue, &rep(2, 10, 1)),
            GroupDecision::StopAndCopy
        );
        let _ = b;
        assert!(SynchronizedArrival::<1>::new().join().is_some());
        let mut full = SynchronizedArrival::<1>::new();
        full.join();
        assert_eq!(full.join(), None);
    }
}
