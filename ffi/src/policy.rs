//! The stop policies (Xen classic, Xen today, downtime limit, Smart Stop) in a fixed-size
//! struct the caller declares, and `pagewire_policy_decide`.

use core::ffi::c_char;

use pagewire::policy::{
    AnyPolicy, Decision, IterationReport, PolicyKind, PolicyParams, StopPolicy,
};

use crate::error::Res;
use crate::guard::{guard, guard_value};
use crate::pagewire_result;
use crate::place::{handle_ref, place_in, with_slot, Common, Slot};
use crate::ptr::{arg, Out};

/// What one pre-copy iteration did: the input of every stop policy. 56 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct pagewire_iteration_report {
    /// 1 for the first (full) pass, then 2, 3, ...
    pub iteration: u32,
    /// Set to 0.
    pub reserved: u32,
    /// Pages sent during this iteration.
    pub pages_sent: u64,
    /// Pages the guest dirtied while this iteration ran.
    pub pages_dirtied: u64,
    /// Dirty pages the next iteration (or the stop-and-copy) would have to send.
    pub pages_remaining: u64,
    /// Bytes this iteration put on the wire.
    pub bytes_sent: u64,
    /// How long this iteration took, in microseconds.
    pub elapsed_us: u64,
    /// Measured link bandwidth in bytes per second (0 if unknown).
    pub bandwidth_bytes_per_s: u64,
}

impl From<&pagewire_iteration_report> for IterationReport {
    fn from(r: &pagewire_iteration_report) -> Self {
        IterationReport {
            iteration: r.iteration,
            pages_sent: r.pages_sent,
            pages_dirtied: r.pages_dirtied,
            pages_remaining: r.pages_remaining,
            bytes_sent: r.bytes_sent,
            elapsed_us: r.elapsed_us,
            bandwidth_bytes_per_s: r.bandwidth_bytes_per_s,
        }
    }
}

/// A policy's answer (4 bytes).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pagewire_decision {
    /// Run another pre-copy iteration.
    PAGEWIRE_DECISION_CONTINUE = 0,
    /// Pause the guest and send what remains.
    PAGEWIRE_DECISION_STOP_AND_COPY = 1,
}

impl From<Decision> for pagewire_decision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Continue => pagewire_decision::PAGEWIRE_DECISION_CONTINUE,
            Decision::StopAndCopy => pagewire_decision::PAGEWIRE_DECISION_STOP_AND_COPY,
        }
    }
}

/// A stop policy. Declare one (on the stack, static, anywhere; 256 bytes, 8-aligned), set it
/// up with one of the `pagewire_policy_*` initialisers, then call `pagewire_policy_decide`
/// after every pre-copy iteration. Plain data: needs no release and may be copied by
/// assignment (the copy continues from the same history).
///
/// Thread-safety: not thread-safe; one migration loop owns it.
#[repr(C)]
pub struct pagewire_policy {
    pub opaque: [u64; 32],
}

#[repr(C)]
struct PolicyState {
    common: Common,
    rule: AnyPolicy,
}

// SAFETY: repr(C) with Common first; fits `pagewire_policy` (checked in `place_in`).
unsafe impl Slot for PolicyState {
    const MAGIC: u64 = u64::from_le_bytes(*b"pwPOLICY");
    const WRONG_RELEASE: [&'static str; 2] = ["", ""];
    fn common(&self) -> &Common {
        &self.common
    }
}

/// Puts a fresh policy of `kind` into `*p`, built by the codec from `params`.
///
/// # Safety
/// `p` is NULL or writable for a `pagewire_policy`.
unsafe fn start(p: *mut pagewire_policy, kind: PolicyKind, params: PolicyParams) -> Res {
    let state = PolicyState {
        common: Common::new(PolicyState::MAGIC, 0),
        rule: kind.build(&params),
    };
    // SAFETY: forwarded contract.
    unsafe { place_in(p, "policy", state) }
}

/// Xen's classic rule for a guest of `vm_pages` pages: stop after
/// `PAGEWIRE_XEN_CLASSIC_MAX_ITERATIONS` iterations, once
/// `PAGEWIRE_XEN_CLASSIC_MAX_SENT_FACTOR` times the guest's memory has been sent, or when
/// fewer than `PAGEWIRE_XEN_MIN_REMAINING_PAGES` pages remain.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_policy_xen_classic(
    policy: *mut pagewire_policy,
    vm_pages: u64,
) -> pagewire_result {
    let params = PolicyParams::new(vm_pages, 0);
    // SAFETY: pointer rules.
    guard(|| unsafe { start(policy, PolicyKind::XenClassic, params) })
}

/// Xen today: stop after `PAGEWIRE_XEN_TODAY_MAX_ITERATIONS` iterations or when fewer than
/// `PAGEWIRE_XEN_MIN_REMAINING_PAGES` pages remain.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_policy_xen_today(
    policy: *mut pagewire_policy,
) -> pagewire_result {
    let params = PolicyParams::new(0, 0);
    // SAFETY: pointer rules.
    guard(|| unsafe { start(policy, PolicyKind::XenToday, params) })
}

/// QEMU-style: stop once the remaining pages, at the wire bytes per page of the last
/// iteration (`page_size` before any page was sent), fit `limit_us` microseconds at the
/// reported bandwidth (`PAGEWIRE_DOWNTIME_LIMIT_DEFAULT_US` is the usual limit); at the
/// latest after `PAGEWIRE_DEFAULT_MAX_ITERATIONS` iterations.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_policy_downtime_limit(
    policy: *mut pagewire_policy,
    limit_us: u64,
    page_size: u64,
) -> pagewire_result {
    let params = PolicyParams {
        downtime_limit_us: limit_us,
        ..PolicyParams::new(0, page_size)
    };
    // SAFETY: pointer rules.
    guard(|| unsafe { start(policy, PolicyKind::DowntimeLimit, params) })
}

/// CloudNet's Smart Stop: once an iteration dirties at least as many pages as it sends,
/// stop at the first local minimum of the pages remaining over the last `window` iterations
/// (clamped to 1 .. `PAGEWIRE_SMART_STOP_MAX_WINDOW`;
/// `PAGEWIRE_SMART_STOP_DEFAULT_WINDOW` is the usual choice), or `window` iterations after
/// that crossover, or after `PAGEWIRE_DEFAULT_MAX_ITERATIONS` iterations.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_policy_smart_stop(
    policy: *mut pagewire_policy,
    window: u32,
) -> pagewire_result {
    let params = PolicyParams {
        smart_window: window as usize,
        ..PolicyParams::new(0, 0)
    };
    // SAFETY: pointer rules.
    guard(|| unsafe { start(policy, PolicyKind::SmartStop, params) })
}

/// Changes the policy's hard cap on iterations (`PAGEWIRE_DEFAULT_MAX_ITERATIONS` by
/// default, `PAGEWIRE_XEN_TODAY_MAX_ITERATIONS` for Xen today).
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_policy_set_max_iterations(
    policy: *mut pagewire_policy,
    max_iterations: u32,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules: an initialised policy used by this thread alone.
        unsafe {
            with_slot(policy.cast::<PolicyState>(), "policy", |s| {
                s.rule.set_max_iterations(max_iterations);
                Ok(())
            })
        }
    })
}

/// Feeds the report of the iteration just finished to the policy and writes its answer to
/// `*out`. Call once per iteration, in order.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_policy_decide(
    policy: *mut pagewire_policy,
    report: *const pagewire_iteration_report,
    out: *mut pagewire_decision,
) -> pagewire_result {
    guard(|| {
        // SAFETY: pointer rules.
        let (report, out) = unsafe { (arg(report, "report")?, Out::new(out, "out")?) };
        let r = IterationReport::from(report);
        // SAFETY: pointer rules: an initialised policy used by this thread alone.
        let d = unsafe {
            with_slot(policy.cast::<PolicyState>(), "policy", |s| {
                Ok(s.rule.decide(&r))
            })?
        };
        out.write(d.into());
        Ok(())
    })
}

/// The policy's short name (one of the `PAGEWIRE_POLICY_NAME_*` strings, such as
/// `PAGEWIRE_POLICY_NAME_SMART_STOP`), as a static string; "invalid" if `policy` is not an
/// initialised policy. Never NULL.
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_policy_name(policy: *const pagewire_policy) -> *const c_char {
    guard_value(c"invalid".as_ptr(), || {
        // SAFETY: pointer rules: NULL or a policy not changed meanwhile.
        let name = match unsafe { handle_ref::<PolicyState>(policy.cast(), "policy") } {
            Ok(s) => s.rule.kind().c_name(),
            Err(_) => c"invalid",
        };
        name.as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagewire_result::*;
    use core::ffi::CStr;
    use pagewire::policy::{DowntimeLimit, SmartStop, XenClassic, XenToday};

    /// A deterministic, varied sequence of reports (xorshift).
    fn reports(seed: u64, n: usize) -> Vec<pagewire_iteration_report> {
        let mut x = seed | 1;
        let mut next = move |m: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % m
        };
        (1..=n as u32)
            .map(|iteration| {
                let sent = 1 + next(5000);
                let dirtied = next(6000);
                pagewire_iteration_report {
                    iteration,
                    pages_sent: sent,
                    pages_dirtied: dirtied,
                    pages_remaining: dirtied,
                    bytes_sent: sent * (1 + next(4096)),
                    elapsed_us: next(1_000_000),
                    bandwidth_bytes_per_s: next(50_000_000),
                    ..Default::default()
                }
            })
            .collect()
    }

    /// Runs the C-side policy and the Rust one side by side until the first stop.
    fn same_answers(init: impl Fn(*mut pagewire_policy), mut rust: impl StopPolicy, seed: u64) {
        let mut p = pagewire_policy { opaque: [0; 32] };
        init(&mut p);
        for r in reports(seed, 40) {
            let mut d = pagewire_decision::PAGEWIRE_DECISION_CONTINUE;
            // SAFETY: valid pointers.
            let rc = unsafe { pagewire_policy_decide(&mut p, &r, &mut d) };
            assert_eq!(rc, PAGEWIRE_OK);
            let want = pagewire_decision::from(rust.decide(&IterationReport::from(&r)));
            assert_eq!(d, want, "seed {seed}, {r:?}");
            if want == pagewire_decision::PAGEWIRE_DECISION_STOP_AND_COPY {
                return;
            }
        }
    }

    #[test]
    fn every_policy_answers_as_in_rust() {
        // Each initialiser gets a pointer to a live pagewire_policy from `same_answers`.
        let classic = |p| {
            // SAFETY: `p` points to a live pagewire_policy.
            let r = unsafe { pagewire_policy_xen_classic(p, 20_000) };
            assert_eq!(r, PAGEWIRE_OK);
        };
        let today = |p| {
            // SAFETY: as above.
            let r = unsafe { pagewire_policy_xen_today(p) };
            assert_eq!(r, PAGEWIRE_OK);
        };
        let downtime = |p| {
            // SAFETY: as above.
            let r = unsafe { pagewire_policy_downtime_limit(p, 50_000, 4096) };
            assert_eq!(r, PAGEWIRE_OK);
        };
        for seed in 1..200u64 {
            same_answers(classic, XenClassic::new(20_000), seed);
            same_answers(today, XenToday::default(), seed);
            let mut dl = DowntimeLimit::new(4096);
            dl.limit_us = 50_000;
            same_answers(downtime, dl, seed);
            let window = (seed % 7) as u32;
            let smart = |p| {
                // SAFETY: as above.
                let r = unsafe { pagewire_policy_smart_stop(p, window) };
                assert_eq!(r, PAGEWIRE_OK);
            };
            same_answers(smart, SmartStop::new(window as usize), seed);
        }
    }

    #[test]
    fn names_caps_and_bad_handles() {
        let mut p = pagewire_policy { opaque: [0; 32] };
        // SAFETY: valid pointers, and NULL/uninitialised policies on purpose.
        unsafe {
            assert_eq!(CStr::from_ptr(pagewire_policy_name(&p)), c"invalid");
            let r = pagewire_iteration_report::default();
            let mut d = pagewire_decision::PAGEWIRE_DECISION_CONTINUE;
            assert_eq!(
                pagewire_policy_decide(&mut p, &r, &mut d),
                PAGEWIRE_INVALID_HANDLE
            );
            assert_eq!(
                pagewire_policy_smart_stop(core::ptr::null_mut(), 5),
                PAGEWIRE_NULL_ARGUMENT
            );
            assert_eq!(pagewire_policy_smart_stop(&mut p, 5), PAGEWIRE_OK);
            assert_eq!(CStr::from_ptr(pagewire_policy_name(&p)), c"smart-stop");
            assert_eq!(pagewire_policy_set_max_iterations(&mut p, 3), PAGEWIRE_OK);
            let far = pagewire_iteration_report {
                iteration: 3,
                pages_sent: 1000,
                pages_dirtied: 10,
                pages_remaining: 10,
                ..r
            };
            assert_eq!(pagewire_policy_decide(&mut p, &far, &mut d), PAGEWIRE_OK);
            assert_eq!(d, pagewire_decision::PAGEWIRE_DECISION_STOP_AND_COPY);
        }
    }
}
