//! Handles of the objects the library allocates (`pagewire_encoder_new`,
//! `pagewire_decoder_open` without storage).
//!
//! Such a handle is not the allocation's address but an entry of this table, which is
//! never freed. Releasing the object empties its entry before the memory goes back to the
//! allocator, so a second `_free`, or a call on a closed decoder, finds an empty entry and
//! is refused with `PAGEWIRE_INVALID_HANDLE`, having read only the table: reading the freed
//! allocation instead would be undefined behaviour (AddressSanitizer reports it; a large
//! allocation is unmapped and the read faults). Emptied entries are reused last-in-line
//! (all 4096 are used once before the first is reused, then in the order they were
//! emptied), so a stale handle is taken for another live object only after thousands of
//! allocations in between.
//!
//! Objects in caller memory keep handles that point into that memory: it stays valid after
//! release (the caller's promise), and release clears the object's marker there.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;

/// Allocated objects alive at once that get a table handle; beyond this, `_new` hands out
/// the allocation's address as before (see [`register`]).
pub(crate) const CAPACITY: usize = 4096;

/// One handle: which kind of object lives behind it (its slot's magic, 0 when empty) and
/// where.
#[repr(C, align(16))]
struct Entry {
    kind: AtomicU64,
    slot: AtomicPtr<u8>,
}

static TABLE: [Entry; CAPACITY] = [const {
    Entry {
        kind: AtomicU64::new(0),
        slot: AtomicPtr::new(std::ptr::null_mut()),
    }
}; CAPACITY];

/// Entries free for [`register`]: never used ones first, then emptied ones in the order they
/// were emptied.
struct FreeList {
    never_used: usize,
    emptied: VecDeque<usize>,
}

static FREE: Mutex<FreeList> = Mutex::new(FreeList {
    never_used: 0,
    emptied: VecDeque::new(),
});

fn free_list() -> std::sync::MutexGuard<'static, FreeList> {
    // nothing panics while holding the lock; a poisoned lock still holds a sound list
    FREE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Gives the object of `kind` at `slot` a table handle; `None` when every entry is taken
/// (the caller then uses `slot` itself as the handle).
pub(crate) fn register(kind: u64, slot: NonNull<u8>) -> Option<NonNull<u8>> {
    debug_assert_ne!(kind, 0);
    let index = {
        let mut free = free_list();
        if free.never_used < CAPACITY {
            free.never_used += 1;
            free.never_used - 1
        } else {
            free.emptied.pop_front()?
        }
    };
    let entry = &TABLE[index];
    entry.slot.store(slot.as_ptr(), Ordering::Relaxed);
    entry.kind.store(kind, Ordering::Release);
    Some(NonNull::from(entry).cast())
}

/// What a handle is, as far as the table knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Not a table handle: a pointer into caller memory (or anything else).
    Outside,
    /// A table handle of a live object of the kind asked for, at this slot.
    Live(NonNull<u8>),
    /// A table handle that is empty, holds another kind, or points between entries.
    Dead,
}

/// Where `p` leads for an object of `kind`. Reads the table only.
pub(crate) fn lookup(p: *const u8, kind: u64) -> Lookup {
    let Some(index) = index_of(p) else {
        return Lookup::Outside;
    };
    let Some(entry) = index.and_then(|i| TABLE.get(i)) else {
        return Lookup::Dead;
    };
    if entry.kind.load(Ordering::Acquire) != kind {
        return Lookup::Dead;
    }
    NonNull::new(entry.slot.load(Ordering::Relaxed)).map_or(Lookup::Dead, Lookup::Live)
}

/// `None` if `p` is outside the table; `Some(None)` if it is inside but not at an entry.
fn index_of(p: *const u8) -> Option<Option<usize>> {
    let offset = (p as usize).wrapping_sub(TABLE.as_ptr() as usize);
    if offset >= size_of_val(&TABLE) {
        return None;
    }
    let size = size_of::<Entry>();
    Some((offset % size == 0).then_some(offset / size))
}

/// Empties the entry of handle `p` if it holds an object of `kind`; false if it did not
/// (released meanwhile by another thread). Afterwards the handle is [`Lookup::Dead`].
pub(crate) fn unregister(p: *const u8, kind: u64) -> bool {
    let Some(Some(index)) = index_of(p) else {
        return false;
    };
    let entry = &TABLE[index];
    // one release wins, even when two threads release the same handle at once
    if entry
        .kind
        .compare_exchange(kind, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    entry.slot.store(std::ptr::null_mut(), Ordering::Relaxed);
    free_list().emptied.push_back(index);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_die_with_their_object_and_are_reused_last() {
        let mut a = 0u64;
        let slot = NonNull::from(&mut a).cast::<u8>();
        let h = register(7, slot).unwrap();
        assert_eq!(lookup(h.as_ptr(), 7), Lookup::Live(slot));
        assert_eq!(lookup(h.as_ptr(), 8), Lookup::Dead, "another kind");
        // SAFETY: only the address is computed, never dereferenced.
        let between = unsafe { h.as_ptr().add(1) };
        assert_eq!(lookup(between, 7), Lookup::Dead);
        assert_eq!(lookup(slot.as_ptr(), 7), Lookup::Outside);
        assert!(unregister(h.as_ptr(), 7));
        assert_eq!(lookup(h.as_ptr(), 7), Lookup::Dead);
        assert!(!unregister(h.as_ptr(), 7), "a second release loses");
        // the next handle is another entry
        let h2 = register(7, slot).unwrap();
        assert_ne!(h2, h);
        assert_eq!(lookup(h.as_ptr(), 7), Lookup::Dead);
        assert!(unregister(h2.as_ptr(), 7));
    }
}
