//! Synchronized Arrival for C: a group of up to `PAGEWIRE_GROUP_CAPACITY` migrations that
//! finish together, safe to share between the migration threads of its members.

use std::sync::{Mutex, PoisonError};

use pagewire::policy::{Decision, GroupDecision, IterationReport, SynchronizedArrival};

use crate::defines::PAGEWIRE_GROUP_CAPACITY;
use crate::error::{Fail, Res};
use crate::guard::guard;
use crate::pagewire_result::{self, PAGEWIRE_GROUP_FULL, PAGEWIRE_INVALID_ARGUMENT};
use crate::place::{handle_ref, place_in, release, Common, Release, Slot};
use crate::policy::pagewire_iteration_report;
use crate::ptr::{arg, Out};

/// What the group tells one member after its report (4 bytes).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pagewire_group_decision {
    /// The member's own policy wants another iteration.
    PAGEWIRE_GROUP_CONTINUE = 0,
    /// The member is ready but others are not: iterate again to stay warm.
    PAGEWIRE_GROUP_HOLD = 1,
    /// Every member is ready (or this one was held too long): stop and copy now.
    PAGEWIRE_GROUP_STOP_AND_COPY = 2,
}

impl From<GroupDecision> for pagewire_group_decision {
    fn from(d: GroupDecision) -> Self {
        match d {
            GroupDecision::Continue => pagewire_group_decision::PAGEWIRE_GROUP_CONTINUE,
            GroupDecision::Hold => pagewire_group_decision::PAGEWIRE_GROUP_HOLD,
            GroupDecision::StopAndCopy => pagewire_group_decision::PAGEWIRE_GROUP_STOP_AND_COPY,
        }
    }
}

/// A Synchronized Arrival group: related guests (a web tier and its database) that migrate
/// together. Each member runs its own stop policy and reports every iteration here with
/// that policy's decision; no member stops until every member still migrating is ready (its
/// policy said stop, or it dirtied at least as many pages as it sent), and a member held
/// `max_hold` iterations is let go, so the group always ends. Declare one (512 bytes,
/// 8-aligned), `pagewire_group_init` it, `pagewire_group_deinit` it when every member is done.
///
/// Thread-safety: `join`, `leave`, `report`, `all_ready` and `len` are thread-safe (an
/// internal lock), so members' migration threads share one group. `init` and `deinit` are
/// not. Do not copy an initialised group.
#[repr(C)]
pub struct pagewire_group {
    pub opaque: [u64; 64],
}

#[repr(C)]
struct GroupState {
    common: Common,
    members: Mutex<SynchronizedArrival<PAGEWIRE_GROUP_CAPACITY>>,
}

// SAFETY: repr(C) with Common first; fits `pagewire_group` (checked in `place_in`).
unsafe impl Slot for GroupState {
    const MAGIC: u64 = u64::from_le_bytes(*b"pwGROUP_");
    const WRONG_RELEASE: [&'static str; 2] = ["", ""];
    fn common(&self) -> &Common {
        &self.common
    }
}

/// Runs `f` with the group locked.
///
/// # Safety
/// `g` is NULL or an initialised group not being initialised or released meanwhile.
unsafe fn locked<R>(
    g: *const pagewire_group,
    f: impl FnOnce(&mut SynchronizedArrival<PAGEWIRE_GROUP_CAPACITY>) -> Res<R>,
) -> Res<R> {
    // SAFETY: forwarded contract; only shared references are made, the lock does the rest.
    let s = unsafe { handle_ref::<GroupState>(g.cast(), "group")? };
    // A panic while locked cannot leave the group half-updated in a way that matters more
    // than stopping everyone would; carry on with the data.
    let mut members = s.members.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut members)
}

/// Sets up an empty group in `*group`; a ready member is held at most `max_hold` iterations
/// (`PAGEWIRE_GROUP_DEFAULT_MAX_HOLD` is the usual choice).
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_group_init(
    group: *mut pagewire_group,
    max_hold: u32,
) -> pagewire_result {
    guard(|| {
        let mut members = SynchronizedArrival::new();
        members.max_hold = max_hold;
        let state = GroupState {
            common: Common::new(GroupState::MAGIC, 0),
            members: Mutex::new(members),
        };
        // SAFETY: pointer rules: `group` writable.
        unsafe { place_in(group, "group", state) }
    })
}

/// Releases a group's lock; the memory is the caller's again.
///
/// # Safety
/// The pointer rules at the top of this header; no other thread uses the group meanwhile.
#[no_mangle]
pub unsafe extern "C" fn pagewire_group_deinit(group: *mut pagewire_group) -> pagewire_result {
    // SAFETY: pointer rules; no concurrent use by contract.
    guard(|| unsafe { release(group.cast::<GroupState>(), "group", Release::Deinit) })
}

/// Adds a member and writes its id (0 to `PAGEWIRE_GROUP_CAPACITY` - 1) to `*member`;
/// `PAGEWIRE_GROUP_FULL` when `PAGEWIRE_GROUP_CAPACITY` members have joined.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_group_join(
    group: *mut pagewire_group,
    member: *mut u32,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let out = unsafe { Out::new(member, "member")? };
        // SAFETY: pointer rules.
        let id = unsafe { locked(group, |m| Ok(m.join())) }?.ok_or_else(|| {
            Fail::new(
                PAGEWIRE_GROUP_FULL,
                "the group is full (PAGEWIRE_GROUP_CAPACITY members)",
            )
        })?;
        out.write(id as u32);
        Ok(())
    })
}

/// Removes a member that failed or gave up, so that it holds nobody back.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_group_leave(
    group: *mut pagewire_group,
    member: u32,
) -> pagewire_result {
    // SAFETY: pointer rules.
    guard(|| unsafe {
        locked(group, |m| {
            m.leave(member as usize);
            Ok(())
        })
    })
}

/// Member `member` finished an iteration described by `*report`; `own_decision` is what its
/// own stop policy said (a `pagewire_decision`). Writes what the member must do to `*out`.
/// An unknown or departed member is told to stop, so a bad id never keeps a migration
/// running.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_group_report(
    group: *mut pagewire_group,
    member: u32,
    own_decision: u32,
    report: *const pagewire_iteration_report,
    out: *mut pagewire_group_decision,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (report, out) = unsafe { (arg(report, "report")?, Out::new(out, "out")?) };
        let own = match own_decision {
            0 => Decision::Continue,
            1 => Decision::StopAndCopy,
            _ => {
                return Err(Fail::new(
                    PAGEWIRE_INVALID_ARGUMENT,
                    "own_decision is not a pagewire_decision",
                ))
            }
        };
        let r = IterationReport::from(report);
        // SAFETY: pointer rules.
        let d = unsafe { locked(group, |m| Ok(m.report(member as usize, own, &r))) }?;
        out.write(d.into());
        Ok(())
    })
}

/// Writes whether every member still migrating is ready to `*out`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_group_all_ready(
    group: *const pagewire_group,
    out: *mut bool,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let out = unsafe { Out::new(out, "out")? };
        // SAFETY: pointer rules.
        out.write(unsafe { locked(group, |m| Ok(m.all_ready())) }?);
        Ok(())
    })
}

/// Writes the number of members that joined to `*out`.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_group_len(
    group: *const pagewire_group,
    out: *mut usize,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let out = unsafe { Out::new(out, "out")? };
        // SAFETY: pointer rules.
        out.write(unsafe { locked(group, |m| Ok(m.len())) }?);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagewire_result::*;
    use pagewire_group_decision::*;

    fn rep(iteration: u32, sent: u64, dirtied: u64) -> pagewire_iteration_report {
        pagewire_iteration_report {
            iteration,
            pages_sent: sent,
            pages_dirtied: dirtied,
            pages_remaining: dirtied,
            ..Default::default()
        }
    }

    #[test]
    fn the_small_member_waits_for_the_large_one_as_in_rust() {
        let mut g = pagewire_group { opaque: [0; 64] };
        let g = &raw mut g;
        // SAFETY: valid pointers to a live group.
        unsafe {
            assert_eq!(pagewire_group_init(g, 30), PAGEWIRE_OK);
            let (mut small, mut large) = (99, 99);
            assert_eq!(pagewire_group_join(g, &mut small), PAGEWIRE_OK);
            assert_eq!(pagewire_group_join(g, &mut large), PAGEWIRE_OK);
            let mut d = PAGEWIRE_GROUP_CONTINUE;
            let mut step = |m: u32, own: u32, r: pagewire_iteration_report| {
                assert_eq!(pagewire_group_report(g, m, own, &r, &mut d), PAGEWIRE_OK);
                d
            };
            assert_eq!(step(small, 1, rep(2, 100, 10)), PAGEWIRE_GROUP_HOLD);
            assert_eq!(step(large, 0, rep(2, 10000, 3000)), PAGEWIRE_GROUP_CONTINUE);
            assert_eq!(step(small, 1, rep(3, 10, 10)), PAGEWIRE_GROUP_HOLD);
            assert_eq!(
                step(large, 0, rep(3, 3000, 3100)),
                PAGEWIRE_GROUP_STOP_AND_COPY
            );
            assert_eq!(step(small, 0, rep(4, 10, 5)), PAGEWIRE_GROUP_STOP_AND_COPY);
            assert_eq!(step(77, 0, rep(4, 10, 5)), PAGEWIRE_GROUP_STOP_AND_COPY);
            assert_eq!(
                pagewire_group_report(g, small, 7, &rep(4, 1, 1), &mut d),
                PAGEWIRE_INVALID_ARGUMENT
            );
            let mut n = 0;
            assert_eq!(pagewire_group_len(g, &mut n), PAGEWIRE_OK);
            assert_eq!(n, 2);
            for _ in 2..PAGEWIRE_GROUP_CAPACITY {
                assert_eq!(pagewire_group_join(g, &mut small), PAGEWIRE_OK);
            }
            let before = small;
            assert_eq!(pagewire_group_join(g, &mut small), PAGEWIRE_GROUP_FULL);
            assert_eq!(small, before);
            assert_eq!(pagewire_group_deinit(g), PAGEWIRE_OK);
            assert_eq!(pagewire_group_join(g, &mut small), PAGEWIRE_INVALID_HANDLE);
        }
    }
}
