//! C arguments to Rust references: every pointer is checked for NULL and alignment before it
//! is used, and outputs are written through [`Out`] only once a call has succeeded.
//!
//! The functions are `unsafe` because a non-NULL pointer is trusted to be valid, which is the
//! caller's side of the contract stated at the top of `pagewire.h`: pointers point to memory
//! of the stated length, valid for the whole call, not written by anyone else meanwhile, and
//! buffers of one call do not overlap. Bytes that C hands in are taken as initialised.

use core::ptr::NonNull;

use crate::error::{Fail, Res};
use crate::pagewire_result::PAGEWIRE_INVALID_ARGUMENT;

fn misaligned() -> Fail {
    Fail::new(
        PAGEWIRE_INVALID_ARGUMENT,
        "a pointer argument is not aligned for its type",
    )
}

fn too_long() -> Fail {
    Fail::new(PAGEWIRE_INVALID_ARGUMENT, "a length exceeds SSIZE_MAX")
}

/// A shared reference to a required input.
///
/// # Safety
/// `p` is NULL or valid for reads of a `T` for `'a`, and nobody writes it meanwhile.
pub(crate) unsafe fn arg<'a, T>(p: *const T, name: &'static str) -> Res<&'a T> {
    if p.is_null() {
        return Err(Fail::null(name));
    }
    if !p.is_aligned() {
        return Err(misaligned());
    }
    // SAFETY: non-NULL and aligned (checked above); valid for 'a by this function's contract.
    Ok(unsafe { &*p })
}

/// `len` bytes at `p`; NULL is accepted when `len` is 0.
///
/// # Safety
/// `p` is NULL or valid for reads of `len` bytes for `'a`, and nobody writes them meanwhile.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, name: &'static str) -> Res<&'a [u8]> {
    // SAFETY: forwarded contract; u8 has alignment 1.
    unsafe { items(p, len, name) }
}

/// `len` writable bytes at `p`; NULL is accepted when `len` is 0.
///
/// # Safety
/// `p` is NULL or valid for reads and writes of `len` bytes for `'a`, and nobody else
/// accesses them meanwhile.
pub(crate) unsafe fn bytes_mut<'a>(
    p: *mut u8,
    len: usize,
    name: &'static str,
) -> Res<&'a mut [u8]> {
    if len == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Fail::null(name));
    }
    if len > isize::MAX as usize {
        return Err(too_long());
    }
    // SAFETY: non-NULL, u8 needs no alignment, len <= isize::MAX (checked above); valid and
    // unaliased for 'a by this function's contract.
    Ok(unsafe { core::slice::from_raw_parts_mut(p, len) })
}

/// `n` items at `p`; NULL is accepted when `n` is 0.
///
/// # Safety
/// `p` is NULL or valid for reads of `n` items of `T` for `'a`, and nobody writes them
/// meanwhile.
pub(crate) unsafe fn items<'a, T>(p: *const T, n: usize, name: &'static str) -> Res<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Fail::null(name));
    }
    if !p.is_aligned() {
        return Err(misaligned());
    }
    if n.checked_mul(size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(too_long());
    }
    // SAFETY: non-NULL, aligned, total size <= isize::MAX (checked above); valid for 'a by
    // this function's contract.
    Ok(unsafe { core::slice::from_raw_parts(p, n) })
}

/// An output argument, checked when the call starts and written when it has succeeded.
pub(crate) struct Out<T> {
    p: NonNull<T>,
}

impl<T> Out<T> {
    /// A required output.
    ///
    /// # Safety
    /// `p` is NULL or valid for writes of a `T` until the end of the current C call.
    pub(crate) unsafe fn new(p: *mut T, name: &'static str) -> Res<Out<T>> {
        let p = NonNull::new(p).ok_or_else(|| Fail::null(name))?;
        if !p.as_ptr().is_aligned() {
            return Err(misaligned());
        }
        Ok(Out { p })
    }

    /// An output the caller may leave out with NULL.
    ///
    /// # Safety
    /// As for [`Out::new`].
    pub(crate) unsafe fn optional(p: *mut T, name: &'static str) -> Res<Option<Out<T>>> {
        if p.is_null() {
            return Ok(None);
        }
        // SAFETY: forwarded contract.
        unsafe { Out::new(p, name) }.map(Some)
    }

    /// Stores the result. Does not read or drop what was there (C memory may be
    /// uninitialised).
    pub(crate) fn write(self, v: T) {
        // SAFETY: `new` checked non-NULL and alignment, and its caller promised validity for
        // writes until the end of the C call, which has not returned yet (an `Out` never
        // leaves the call).
        unsafe { self.p.as_ptr().write(v) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagewire_result::PAGEWIRE_NULL_ARGUMENT;

    #[test]
    fn null_and_misaligned_pointers_are_refused() {
        // SAFETY: only NULL, dangling-but-unused (len 0) and valid pointers are passed.
        unsafe {
            assert_eq!(
                arg::<u64>(core::ptr::null(), "x").err().unwrap().code,
                PAGEWIRE_NULL_ARGUMENT
            );
            let words = [0u64; 2];
            let odd = words.as_ptr().cast::<u8>().add(1).cast::<u64>();
            assert_eq!(arg(odd, "x").err().unwrap().code, PAGEWIRE_INVALID_ARGUMENT);
            assert_eq!(bytes(core::ptr::null(), 0, "b").unwrap(), &[] as &[u8]);
            assert_eq!(
                bytes(core::ptr::null(), 1, "b").err().unwrap().code,
                PAGEWIRE_NULL_ARGUMENT
            );
            let mut v = 0u32;
            assert!(Out::<u32>::optional(core::ptr::null_mut(), "o")
                .unwrap()
                .is_none());
            Out::new(&mut v, "o").unwrap().write(9);
            assert_eq!(v, 9);
        }
    }
}
