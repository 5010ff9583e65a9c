//! States (encoder, decoder) placed in memory the caller owns: an aligned slot at the front
//! holds the Rust object, the rest of the memory is the storage it borrows. Also the checks
//! that turn a handle back into the object, allocation for callers who want it, and release.
//!
//! A handle is the slot's address for objects in caller memory, and an entry of
//! [`handle_table`](crate::handle_table) for objects the library allocated, so that a handle
//! used after its release is refused without reading freed memory.

use std::alloc::{alloc, dealloc, Layout};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::error::{Fail, Res};
use crate::guard::panicked;
use crate::handle_table::{self, Lookup};
use crate::pagewire_result::{PAGEWIRE_INVALID_HANDLE, PAGEWIRE_OUT_OF_MEMORY, PAGEWIRE_PANIC};

/// Alignment of `_new` allocations; every slot needs at most this, so its slot sits at the
/// very start of the allocation.
pub(crate) const ALLOC_ALIGN: usize = 16;

/// The fields every slot starts with (`#[repr(C)]`, first field of every slot), so a handle
/// can be checked before it is trusted.
#[repr(C)]
pub(crate) struct Common {
    /// `Slot::MAGIC` while alive, 0 once released (cleared before the memory is freed).
    magic: u64,
    /// Bytes allocated by `_new` (0 for caller memory).
    allocated: usize,
    /// Set when a panic was caught inside a call on this object.
    poisoned: AtomicBool,
}

impl Common {
    pub fn new(magic: u64, allocated: usize) -> Common {
        Common {
            magic,
            allocated,
            poisoned: AtomicBool::new(false),
        }
    }
}

/// A state that lives in caller memory behind a handle.
///
/// # Safety
/// Implementors are `#[repr(C)]` with a [`Common`] as their first field, and need at most
/// [`ALLOC_ALIGN`] alignment.
pub(crate) unsafe trait Slot: Sized {
    /// Distinguishes live objects of this kind from anything else.
    const MAGIC: u64;
    /// What `_deinit` says to a `_new` object, and `_free` to an `_init` one.
    const WRONG_RELEASE: [&'static str; 2];
    fn common(&self) -> &Common;
}

/// Bytes a slot for `S` takes in front of the state's storage, for any alignment of the
/// caller's memory.
pub(crate) const fn overhead<S>() -> usize {
    size_of::<S>() + align_of::<S>() - 1
}

/// Where a state goes: an aligned slot inside the caller's memory.
pub(crate) struct Place<S>(NonNull<S>);

impl<S: Slot> Place<S> {
    /// Moves the state into its slot; returns the handle: the slot itself in caller memory,
    /// a [`handle_table`] entry for an allocated object (the slot itself if the table is
    /// full: such a handle is checked by its marker alone, as caller memory is).
    ///
    /// Not `*mut S` in general: only the checks below turn a handle into the object.
    pub fn fill(self, state: S) -> *mut S {
        let allocated = state.common().allocated != 0;
        // SAFETY: the slot is aligned for S, inside the caller's block and disjoint from the
        // storage `state` borrows (`carve`); it may hold garbage, which `write` ignores.
        unsafe { self.0.as_ptr().write(state) };
        if allocated {
            if let Some(h) = handle_table::register(S::MAGIC, self.0.cast()) {
                return h.as_ptr().cast();
            }
        }
        self.0.as_ptr()
    }
}

/// Moves `state` into a fixed-size public C struct `T` (a policy or group) that the caller
/// declared; `T` is checked to be large and aligned enough at compile time.
///
/// # Safety
/// `p` is NULL or valid for writes of a `T` until the call returns; its old content is
/// overwritten without being dropped.
pub(crate) unsafe fn place_in<S: Slot, T>(p: *mut T, name: &'static str, state: S) -> Res {
    const {
        assert!(size_of::<S>() <= size_of::<T>());
        assert!(align_of::<S>() <= align_of::<T>());
    }
    let p = NonNull::new(p).ok_or_else(|| Fail::null(name))?;
    if !p.as_ptr().is_aligned() {
        return Err(Fail::new(
            crate::pagewire_result::PAGEWIRE_INVALID_ARGUMENT,
            "a pointer argument is not aligned for its type",
        ));
    }
    // SAFETY: non-NULL, aligned for T and so for S (checked at compile time), writable for
    // size_of::<T>() >= size_of::<S>() bytes by contract.
    unsafe { p.cast::<S>().write(state) };
    Ok(())
}

/// Caller memory split into an aligned slot and the storage behind it.
pub(crate) struct Carved<S> {
    pub place: Place<S>,
    /// The storage the state borrows. `'static` stands for "until the caller releases the
    /// handle", which the caller promises (pointer rules in `pagewire.h`).
    pub rest: &'static mut [u8],
}

/// Splits `len` bytes at `mem` into an aligned slot for `S` and the rest; `None` if not even
/// the slot fits.
///
/// # Safety
/// `mem` is valid for reads and writes of `len` bytes, used by nothing else, until the
/// object built in it is released.
pub(crate) unsafe fn carve<S>(mem: NonNull<u8>, len: usize) -> Option<Carved<S>> {
    if len > isize::MAX as usize {
        return None;
    }
    let pad = (mem.as_ptr() as usize).wrapping_neg() & (align_of::<S>() - 1);
    let head = pad.checked_add(size_of::<S>())?;
    let rest_len = len.checked_sub(head)?;
    // SAFETY: head <= len, so both the slot and the rest start inside the caller's block.
    let (slot, rest) = unsafe { (mem.add(pad).cast::<S>(), mem.add(head)) };
    // SAFETY: the rest is `rest_len` bytes inside the block, disjoint from the slot, valid and
    // unaliased until release by this function's contract.
    let rest = unsafe { std::slice::from_raw_parts_mut(rest.as_ptr(), rest_len) };
    Some(Carved {
        place: Place(slot),
        rest,
    })
}

/// `len` bytes from the Rust allocator for a `_new` handle.
pub(crate) fn allocate(len: usize) -> Res<NonNull<u8>> {
    let layout = Layout::from_size_align(len.max(1), ALLOC_ALIGN)
        .map_err(|_| Fail::new(PAGEWIRE_OUT_OF_MEMORY, "allocation size overflows"))?;
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { alloc(layout) };
    NonNull::new(p).ok_or_else(|| Fail::new(PAGEWIRE_OUT_OF_MEMORY, "out of memory"))
}

/// Gives back a block from [`allocate`].
///
/// # Safety
/// `p` came from `allocate(len)` and nothing uses it any more.
pub(crate) unsafe fn deallocate(p: NonNull<u8>, len: usize) {
    // SAFETY: the same layout `allocate` succeeded with.
    unsafe {
        dealloc(
            p.as_ptr(),
            Layout::from_size_align_unchecked(len.max(1), ALLOC_ALIGN),
        )
    }
}

fn invalid_handle() -> Fail {
    Fail::new(
        PAGEWIRE_INVALID_HANDLE,
        "not a live pagewire object of this kind (never initialised, already released, or another kind of object)",
    )
}

fn poisoned() -> Fail {
    Fail::new(
        PAGEWIRE_PANIC,
        "this object is unusable: an earlier call on it panicked",
    )
}

/// The slot behind handle `p`, if it is a live object of this kind, and whether the handle
/// is a table entry. A table handle is checked in the table alone, so a released one is
/// refused without touching the memory that was freed; any other handle is checked by the
/// magic at its address.
///
/// # Safety
/// `p` is NULL, a handle this library returned from `_new` (live or released), or a handle
/// into caller memory that is still valid.
unsafe fn resolve<S: Slot>(p: *const S, name: &'static str) -> Res<(NonNull<S>, bool)> {
    let p = NonNull::new(p.cast_mut()).ok_or_else(|| Fail::null(name))?;
    let (slot, in_table) = match handle_table::lookup(p.as_ptr().cast(), S::MAGIC) {
        Lookup::Live(slot) => (slot.cast::<S>(), true),
        Lookup::Dead => return Err(invalid_handle()),
        Lookup::Outside => (p, false),
    };
    if !slot.as_ptr().is_aligned() {
        return Err(invalid_handle());
    }
    // SAFETY: non-NULL, aligned, and valid for at least the `Common` every slot starts with:
    // a live table entry's slot is a live allocation; any other handle by contract. `magic`
    // is its first field (repr(C)), a u64 any bytes are valid for.
    let magic = unsafe { slot.cast::<u64>().read() };
    if magic != S::MAGIC {
        return Err(invalid_handle());
    }
    Ok((slot, in_table))
}

/// Checks handle `p` (see [`resolve`]) and returns its slot.
///
/// # Safety
/// As for [`resolve`].
unsafe fn check<S: Slot>(p: *const S, name: &'static str) -> Res<NonNull<S>> {
    // SAFETY: forwarded contract.
    unsafe { resolve(p, name) }.map(|(slot, _)| slot)
}

/// Shared access to the object behind `p`, for the getters.
///
/// # Safety
/// `p` is as for [`resolve`], and no call
/// changes the object meanwhile.
pub(crate) unsafe fn handle_ref<'a, S: Slot>(p: *const S, name: &'static str) -> Res<&'a S> {
    // SAFETY: forwarded contract.
    let p = unsafe { check(p, name)? };
    // SAFETY: the magic says `Place::fill` wrote a live `S` here; no writer meanwhile by
    // contract.
    let s = unsafe { p.as_ref() };
    if s.common().poisoned.load(Relaxed) {
        return Err(poisoned());
    }
    Ok(s)
}

/// Runs `f` on the object behind `p` behind its own panic boundary: a panic marks the object
/// poisoned, and every later call on it fails with `PAGEWIRE_PANIC`.
///
/// # Safety
/// `p` is as for [`resolve`], and no other
/// call uses the object meanwhile.
pub(crate) unsafe fn with_slot<S: Slot, R>(
    p: *mut S,
    name: &'static str,
    f: impl FnOnce(&mut S) -> Res<R>,
) -> Res<R> {
    // SAFETY: forwarded contract.
    let mut p = unsafe { check(p, name)? };
    // SAFETY: a live `S` (magic checked), used by this call alone (contract).
    let s = unsafe { p.as_mut() };
    if s.common().poisoned.load(Relaxed) {
        return Err(poisoned());
    }
    match catch_unwind(AssertUnwindSafe(|| f(s))) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: the closure, and with it the exclusive borrow, is gone; the object is
            // still the live one checked above.
            unsafe { p.as_ref() }.common().poisoned.store(true, Relaxed);
            Err(panicked())
        }
    }
}

/// Which release function the caller used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// `_deinit`: objects in caller memory only.
    Deinit,
    /// `_free`: objects from `_new` only.
    Free,
    /// The one release of an object whose constructor may allocate or not (the decoder's
    /// `_close`): either kind, since the handle knows which it is.
    Either,
}

/// Releases the object behind `p`. For objects with a `_deinit`/`_free` pair the wrong one
/// is refused, so that memory is neither leaked nor freed twice.
///
/// # Safety
/// As for [`with_slot`]; after success the handle must not be used again.
pub(crate) unsafe fn release<S: Slot>(p: *mut S, name: &'static str, how: Release) -> Res {
    // SAFETY: forwarded contract.
    let (slot, in_table) = unsafe { resolve(p, name)? };
    // SAFETY: a live `S` (magic checked).
    let bytes = unsafe { slot.as_ref() }.common().allocated;
    let wrong = match how {
        Release::Deinit => bytes != 0,
        Release::Free => bytes == 0,
        Release::Either => false,
    };
    if wrong {
        return Err(Fail::new(
            PAGEWIRE_INVALID_HANDLE,
            S::WRONG_RELEASE[usize::from(how == Release::Free)],
        ));
    }
    // The handle dies first: emptying its entry is what refuses a second release or a later
    // call, and only one of two releases racing each other gets past it.
    if in_table && !handle_table::unregister(p.cast(), S::MAGIC) {
        return Err(invalid_handle());
    }
    // Clear the marker before anything is freed, so that a handle to the slot itself (caller
    // memory, still mapped) is refused from now on.
    // SAFETY: the slot is live (checked) and its magic a plain u64 at offset 0; the state
    // is dropped exactly once, here, and the handle is dead from now on by contract.
    unsafe {
        slot.cast::<u64>().write(0);
        std::ptr::drop_in_place(slot.as_ptr());
    }
    if bytes != 0 {
        // SAFETY: `_new` allocated `bytes` with `allocate` and its slot sits at the start
        // (ALLOC_ALIGN); the state in it was just dropped.
        unsafe { deallocate(slot.cast::<u8>(), bytes) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    struct Dummy {
        common: Common,
        value: u32,
    }

    // SAFETY: repr(C) with Common first, alignment 8.
    unsafe impl Slot for Dummy {
        const MAGIC: u64 = 0x1234;
        const WRONG_RELEASE: [&'static str; 2] = ["use deinit", "use free"];
        fn common(&self) -> &Common {
            &self.common
        }
    }

    #[test]
    fn slots_are_aligned_from_any_offset_and_poisoned_by_panics() {
        let mut mem = vec![0u8; 256];
        for skew in 0..16 {
            // SAFETY: `mem` outlives every use below and nothing else touches it.
            unsafe {
                let base = NonNull::new(mem.as_mut_ptr().add(skew)).unwrap();
                let c = carve::<Dummy>(base, 200).unwrap();
                assert!(c.rest.len() + overhead::<Dummy>() >= 200);
                let rest_start = c.rest.as_ptr() as usize;
                let h = c.place.fill(Dummy {
                    common: Common::new(Dummy::MAGIC, 0),
                    value: 5,
                });
                assert!(h.is_aligned());
                assert!(h as usize + size_of::<Dummy>() <= rest_start);
                assert_eq!(with_slot(h, "h", |d| Ok(d.value)).unwrap(), 5);
                let r: Res<()> = with_slot(h, "h", |_| panic!("boom"));
                assert_eq!(r.unwrap_err().code, PAGEWIRE_PANIC);
                let r = with_slot(h, "h", |d| Ok(d.value));
                assert_eq!(r.unwrap_err().code, PAGEWIRE_PANIC);
                assert_eq!(handle_ref(h, "h").err().unwrap().code, PAGEWIRE_PANIC);
                assert_eq!(
                    release(h, "h", Release::Free).unwrap_err().code,
                    PAGEWIRE_INVALID_HANDLE
                );
                release(h, "h", Release::Deinit).unwrap();
                assert_eq!(
                    with_slot(h, "h", |d| Ok(d.value)).unwrap_err().code,
                    PAGEWIRE_INVALID_HANDLE
                );
            }
        }
        let base = NonNull::new(mem.as_mut_ptr()).unwrap();
        // SAFETY: as above.
        assert!(unsafe { carve::<Dummy>(base, 4) }.is_none());
    }

    #[test]
    fn allocated_handles_are_refused_after_release_without_reading_freed_memory() {
        let len = 64;
        let mem = allocate(len).unwrap();
        // SAFETY: a fresh allocation of `len` bytes; every handle use below is checked, and
        // after the release only the table is read (a read of the freed block would be
        // reported by Miri or ASan).
        unsafe {
            let c = carve::<Dummy>(mem, len).unwrap();
            let h = c.place.fill(Dummy {
                common: Common::new(Dummy::MAGIC, len),
                value: 9,
            });
            assert_ne!(
                h.cast::<u8>(),
                mem.as_ptr(),
                "a table handle, not the allocation"
            );
            assert_eq!(with_slot(h, "h", |d| Ok(d.value)).unwrap(), 9);
            assert_eq!(
                release(h, "h", Release::Deinit).unwrap_err().code,
                PAGEWIRE_INVALID_HANDLE
            );
            release(h, "h", Release::Free).unwrap();
            for how in [Release::Free, Release::Either, Release::Deinit] {
                assert_eq!(
                    release(h, "h", how).unwrap_err().code,
                    PAGEWIRE_INVALID_HANDLE
                );
            }
            assert_eq!(
                with_slot(h, "h", |d| Ok(d.value)).unwrap_err().code,
                PAGEWIRE_INVALID_HANDLE
            );
            assert!(handle_ref(h.cast_const(), "h").is_err());
        }
    }
}
