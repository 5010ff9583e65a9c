//! Stack depth, measured by painting: before `main`, fill a window below the stack pointer
//! with a pattern; at exit, the lowest word that no longer holds it is the deepest the stack
//! went. (Linux grows the stack on demand, so the window is mapped as it is painted.)

/// Bytes below the entry stack pointer that are painted and checked.
pub const WINDOW: usize = 256 << 10;
/// Bytes right below the entry stack pointer left alone (the painter's own frame).
const MARGIN: usize = 1024;
const PATTERN: u64 = 0x5A3C_A5C3_5A3C_A5C3;

/// Paints `[sp - WINDOW, sp - MARGIN)`.
#[inline(never)]
pub fn paint(sp: usize) {
    let mut p = (sp - MARGIN) & !7;
    let bottom = sp - WINDOW;
    while p > bottom {
        p -= 8;
        // SAFETY: the window lies below every live stack frame (the painter's own frame is
        // within MARGIN of `sp`) and inside the stack's growth limit (8 MiB by default), so
        // it holds no object; writing grows the stack mapping downwards, page by page.
        unsafe { (p as *mut u64).write_volatile(PATTERN) };
    }
}

/// The deepest the stack went below `sp` since [`paint`], in bytes (the window if deeper).
pub fn max_used(sp: usize) -> usize {
    let mut p = (sp - WINDOW + 7) & !7;
    // SAFETY: the window was mapped and painted by `paint`; reading it is harmless.
    while p < sp - MARGIN && unsafe { (p as *const u64).read_volatile() } == PATTERN {
        p += 8;
    }
    sp - p
}
