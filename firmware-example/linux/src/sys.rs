//! Raw x86_64 Linux system calls: the only way this process talks to the kernel.

use core::arch::asm;

pub const O_RDWR: usize = 2;
pub const PROT_READ_WRITE: usize = 1 | 2;
pub const MAP_SHARED: usize = 1;
pub const SEEK_END: usize = 2;
pub const SIGABRT: usize = 6;

const SYS_WRITE: usize = 1;
const SYS_OPEN: usize = 2;
const SYS_CLOSE: usize = 3;
const SYS_LSEEK: usize = 8;
const SYS_MMAP: usize = 9;
const SYS_SCHED_YIELD: usize = 24;
const SYS_NANOSLEEP: usize = 35;
const SYS_GETPID: usize = 39;
const SYS_KILL: usize = 62;
const SYS_GETPPID: usize = 110;
const SYS_EXIT_GROUP: usize = 231;

/// A system call with up to six arguments; returns the kernel's value (negative errno on
/// failure).
#[inline]
fn syscall6(nr: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the `syscall` instruction with the kernel's register convention; it clobbers
    // only rcx and r11 (declared) and touches memory only through the pointers the callers
    // pass, which point to live buffers of the stated lengths.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Writes `buf` to file descriptor `fd`.
pub fn write(fd: usize, buf: &[u8]) -> isize {
    syscall6(SYS_WRITE, [fd, buf.as_ptr() as usize, buf.len(), 0, 0, 0])
}

/// Opens the NUL-terminated `path`.
pub fn open(path: &[u8], flags: usize) -> isize {
    if path.last() != Some(&0) {
        return -22; // EINVAL
    }
    syscall6(SYS_OPEN, [path.as_ptr() as usize, flags, 0, 0, 0, 0])
}

/// Closes `fd`.
pub fn close(fd: usize) -> isize {
    syscall6(SYS_CLOSE, [fd, 0, 0, 0, 0, 0])
}

/// Size of the file behind `fd` (seeks to its end).
pub fn file_len(fd: usize) -> isize {
    syscall6(SYS_LSEEK, [fd, 0, SEEK_END, 0, 0, 0])
}

/// Maps `len` bytes of `fd` shared and read-write; returns the address or a negative errno.
pub fn mmap_shared(fd: usize, len: usize) -> isize {
    syscall6(SYS_MMAP, [0, len, PROT_READ_WRITE, MAP_SHARED, fd, 0])
}

/// Gives the core to another thread.
pub fn sched_yield() {
    syscall6(SYS_SCHED_YIELD, [0; 6]);
}

/// Sleeps `ns` nanoseconds (below one second).
pub fn sleep_ns(ns: u64) {
    let ts: [u64; 2] = [0, ns.min(999_999_999)];
    syscall6(SYS_NANOSLEEP, [ts.as_ptr() as usize, 0, 0, 0, 0, 0]);
}

/// The parent's process id (1, or a subreaper's, once the parent is gone).
pub fn getppid() -> isize {
    syscall6(SYS_GETPPID, [0; 6])
}

/// Ends the process with `code`.
pub fn exit(code: i32) -> ! {
    syscall6(SYS_EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]);
    loop {
        core::hint::spin_loop();
    }
}

/// Kills this process with SIGABRT, as `abort()` would: the host sees a crash.
pub fn abort() -> ! {
    let pid = syscall6(SYS_GETPID, [0; 6]);
    syscall6(SYS_KILL, [pid as usize, SIGABRT, 0, 0, 0, 0]);
    exit(134)
}

/// `core::fmt` output to a file descriptor.
pub struct Fd(pub usize);

impl core::fmt::Write for Fd {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            let n = write(self.0, b);
            if n <= 0 {
                return Err(core::fmt::Error);
            }
            b = &b[n as usize..];
        }
        Ok(())
    }
}
