//! The pagewire offload firmware as a freestanding x86_64 Linux process.
//!
//! `pagewire-fw REGION_FILE [--crash-after N] [--hang-after N] [--stack-report]`
//!
//! Maps REGION_FILE (set up by the host: `pagewire::offload::Host`) shared, attaches the
//! device end of the offload protocol to it and serves the rings until the stream is
//! finished (exit 0), the host says stop (exit 0), the region is broken (exit 2, message on
//! stderr) or the host process is gone (exit 3). No libc, no std, no allocator: the kernel
//! is reached through raw system calls, and every buffer is a static sized at compile time.
//!
//! `--crash-after N` aborts (SIGABRT) after the N-th descriptor and `--hang-after N` stops
//! serving (forever) after it: fault injection for the host's crash and hang detection.
//! `--stack-report` prints the deepest stack use (measured by painting) to stderr at exit.

#![no_std]
#![no_main]
#![no_builtins]

mod mem;
mod stack;
mod sys;

use core::fmt::Write;
use core::sync::atomic::AtomicU32;

use pagewire::offload::Device;
use pagewire::{Config, MAX_PAGE_SIZE};
use pagewire_fw_core::{serve, Exit, Platform};

/// Encoder storage: cache, indexes, frame body and scratch. 320 MiB covers a 256 MiB cache of
/// 4 KiB pages with the default frames; the host learns the limit from the attach error.
const STORAGE_LEN: usize = 320 << 20;
/// The device's copy of the page being encoded.
const PAGE_LEN: usize = MAX_PAGE_SIZE as usize;
/// The encoder's output buffer: frames up to 1 MiB.
const OUT_LEN: usize = Config {
    frame_bytes: 1 << 20,
    ..Config::DEFAULT
}
.max_output_len();

static mut STORAGE: [u8; STORAGE_LEN] = [0; STORAGE_LEN];
static mut PAGE: [u8; PAGE_LEN] = [0; PAGE_LEN];
static mut OUT: [u8; OUT_LEN] = [0; OUT_LEN];

core::arch::global_asm!(
    ".globl _start",
    ".type _start,@function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym start,
);

/// The process entry: the kernel left argc, argv[] and envp[] at the initial stack pointer.
extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: at `_start` the stack holds argc followed by argc pointers to NUL-terminated
    // strings (then NULL); `sp` is that stack pointer.
    let (argc, argv) = unsafe { (*sp, sp.add(1) as *const *const u8) };
    let mut args = [&[][..]; 6];
    for (i, a) in args.iter_mut().enumerate().take(argc) {
        // SAFETY: i < argc, so argv[i] is a valid NUL-terminated string that lives as long as
        // the process; the slice includes the NUL.
        *a = unsafe { c_str(*argv.add(i)) };
    }
    let args = &args[..argc.min(args.len())];
    let report = args.contains(&&b"--stack-report\0"[..]);
    if report {
        stack::paint(sp as usize);
    }
    let code = main(args);
    if report {
        let used = stack::max_used(sp as usize);
        let _ = writeln!(sys::Fd(2), "pagewire-fw: stack_max_bytes={used}");
    }
    sys::exit(code)
}

/// The bytes of a NUL-terminated string, NUL included.
///
/// # Safety
/// `p` points to a NUL-terminated string that is never freed.
unsafe fn c_str(p: *const u8) -> &'static [u8] {
    let mut n = 0;
    // SAFETY: the string is NUL-terminated, so every byte up to the NUL is readable.
    while unsafe { *p.add(n) } != 0 {
        n += 1;
    }
    // SAFETY: the n + 1 bytes just walked are readable and live forever.
    unsafe { core::slice::from_raw_parts(p, n + 1) }
}

/// Parses a decimal number (NUL-terminated).
fn number(arg: &[u8]) -> Option<u64> {
    let digits = arg.strip_suffix(&[0]).unwrap_or(arg);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })
}

fn err(msg: core::fmt::Arguments<'_>) -> i32 {
    let _ = writeln!(sys::Fd(2), "pagewire-fw: {msg}");
    2
}

fn main(args: &[&[u8]]) -> i32 {
    let mut path = None;
    let mut crash_after = None;
    let mut hang_after = None;
    let mut i = 1;
    while i < args.len() {
        match args[i] {
            b"--crash-after\0" | b"--hang-after\0" => {
                let Some(n) = args.get(i + 1).and_then(|a| number(a)) else {
                    return err(format_args!("{} needs a number", as_str(args[i])));
                };
                if args[i] == b"--crash-after\0" {
                    crash_after = Some(n);
                } else {
                    hang_after = Some(n);
                }
                i += 2;
            }
            b"--stack-report\0" => i += 1,
            a if path.is_none() && !a.starts_with(b"-") => {
                path = Some(a);
                i += 1;
            }
            a => return err(format_args!("unexpected argument {}", as_str(a))),
        }
    }
    let Some(path) = path else {
        return err(format_args!(
            "usage: pagewire-fw REGION_FILE [--crash-after N] [--hang-after N] [--stack-report]"
        ));
    };
    let words = match map_region(path) {
        Ok(w) => w,
        Err(e) => return err(format_args!("cannot map {}: errno {}", as_str(path), -e)),
    };
    // SAFETY: `start` runs once, on the only thread; these are the only references to the
    // three buffers for the life of the process.
    let (storage, page, out) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(STORAGE),
            &mut *core::ptr::addr_of_mut!(PAGE),
            &mut *core::ptr::addr_of_mut!(OUT),
        )
    };
    let mut dev = match Device::attach(words, storage, page, out) {
        Ok(d) => d,
        Err(e) => return err(format_args!("attach failed: {e}")),
    };
    let mut platform = Linux {
        parent: sys::getppid(),
        crash_after,
        hang_after,
    };
    match serve(&mut dev, &mut platform) {
        Exit::Finished | Exit::Stopped => 0,
        Exit::Abandoned => err(format_args!("the host process is gone; stopping")) + 1,
        Exit::Failed(e) => err(format_args!("stopped: {e}")),
    }
}

fn as_str(b: &[u8]) -> &str {
    core::str::from_utf8(b.strip_suffix(&[0]).unwrap_or(b)).unwrap_or("?")
}

/// Opens and maps the region file shared; the mapping lives until the process exits.
fn map_region(path: &[u8]) -> Result<&'static [AtomicU32], isize> {
    let fd = sys::open(path, sys::O_RDWR);
    if fd < 0 {
        return Err(fd);
    }
    let len = sys::file_len(fd as usize);
    if len < 0 {
        return Err(len);
    }
    let len = len as usize & !3;
    if len == 0 {
        return Err(-22);
    }
    let addr = sys::mmap_shared(fd as usize, len);
    sys::close(fd as usize);
    if addr < 0 {
        return Err(addr);
    }
    // SAFETY: the kernel mapped `len` bytes at `addr` (page-aligned, so 4-aligned) for the
    // rest of the process (never unmapped). AtomicU32 has u32's size and alignment, and every
    // access to the region from this process goes through these atomics; the host process
    // maps the same file and accesses it atomically too.
    Ok(unsafe { core::slice::from_raw_parts(addr as *const AtomicU32, len / 4) })
}

/// Waiting and fault injection on Linux.
struct Linux {
    parent: isize,
    crash_after: Option<u64>,
    hang_after: Option<u64>,
}

impl Platform for Linux {
    fn wait(&mut self, streak: u32) -> bool {
        match streak {
            0..64 => core::hint::spin_loop(),
            64..256 => sys::sched_yield(),
            _ => {
                // sleep a little, and notice when the host process is gone
                sys::sleep_ns(if streak < 4096 { 20_000 } else { 500_000 });
                if streak.is_multiple_of(64) && sys::getppid() != self.parent {
                    return false;
                }
            }
        }
        true
    }

    fn handled(&mut self, count: u64) {
        if self.crash_after == Some(count) {
            let _ = writeln!(sys::Fd(2), "pagewire-fw: --crash-after {count}: aborting");
            sys::abort();
        }
        if self.hang_after == Some(count) {
            let _ = writeln!(sys::Fd(2), "pagewire-fw: --hang-after {count}: hanging");
            loop {
                sys::sleep_ns(100_000_000);
                if sys::getppid() != self.parent {
                    sys::exit(3);
                }
            }
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(sys::Fd(2), "pagewire-fw: panic: {info}");
    sys::abort()
}
