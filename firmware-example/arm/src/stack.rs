//! Stack depth, measured by painting: fill the free RAM below the stack with a pattern at
//! start, and at the end find the lowest word that no longer holds it.

use core::ptr::addr_of;

const PATTERN: u32 = 0xA5C3_5A3C;
/// Bytes below the current stack pointer left alone while painting (the painter's frame).
const MARGIN: usize = 256;

extern "C" {
    /// End of the static data (cortex-m-rt's heap start; this image has no heap).
    static __sheap: u32;
    /// Top of the stack (end of RAM).
    static _stack_start: u32;
}

fn bottom() -> usize {
    // only the address of the linker symbol is taken, never its value
    (addr_of!(__sheap) as usize + 3) & !3
}

/// Paints the free RAM between the static data and the current stack pointer.
pub fn paint() {
    let sp = cortex_m::register::msp::read() as usize;
    let mut p = bottom();
    while p + MARGIN < sp {
        // SAFETY: [__sheap, sp - MARGIN) is RAM that holds no object: above every static,
        // below every stack frame live now, and no heap exists.
        unsafe { (p as *mut u32).write_volatile(PATTERN) };
        p += 4;
    }
}

/// The deepest the stack has been since [`paint`], in bytes.
pub fn max_used() -> usize {
    // only the address of the linker symbol is taken
    let top = addr_of!(_stack_start) as usize;
    let mut p = bottom();
    // SAFETY: every word from the bottom up to the stack top is RAM; reading is harmless.
    while p < top && unsafe { (p as *const u32).read_volatile() } == PATTERN {
        p += 4;
    }
    top - p
}
