//! The panic boundary: every `extern "C"` body runs inside one of these, so a panic becomes
//! `PAGEWIRE_PANIC` (or a fallback value) instead of unwinding into C.

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{set_last, Detail, Fail, Res};
use crate::pagewire_result;

/// Runs `f`; a failure is recorded for `pagewire_last_error_message` and its code returned.
pub(crate) fn guard(f: impl FnOnce() -> Res) -> pagewire_result {
    // AssertUnwindSafe: after a panic nothing `f` touched is used again unless it is a
    // handle, and handles are marked poisoned by `place::with_slot`.
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| Err(panicked()));
    match r {
        Ok(()) => pagewire_result::PAGEWIRE_OK,
        Err(fail) => {
            set_last(fail.detail);
            fail.code
        }
    }
}

/// Runs an infallible `f`, answering `fallback` if it panics.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_last(Detail::Text("a Rust panic was caught at the C boundary"));
        fallback
    })
}

/// The failure a caught panic turns into.
pub(crate) fn panicked() -> Fail {
    Fail::new(
        pagewire_result::PAGEWIRE_PANIC,
        "a Rust panic was caught at the C boundary (a bug in pagewire: please report it)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::last;

    #[test]
    fn panics_become_results_and_are_recorded() {
        assert_eq!(guard(|| Ok(())), pagewire_result::PAGEWIRE_OK);
        assert_eq!(guard(|| panic!("boom")), pagewire_result::PAGEWIRE_PANIC);
        assert_eq!(last(), Some(panicked().detail));
        assert_eq!(guard_value(7, || -> i32 { panic!("boom") }), 7);
        let f = Fail::null("cfg");
        assert_eq!(guard(|| Err(f)), pagewire_result::PAGEWIRE_NULL_ARGUMENT);
        assert_eq!(last(), Some(Detail::Null("cfg")));
    }
}
