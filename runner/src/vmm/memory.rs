//! Guest memory: one anonymous mapping the VM sees as physical memory from address 0.
//!
//! The guest writes it concurrently while the source reads pages for pre-copy, so reads go
//! through [`GuestMemory::read_page`] (a raw copy that may see a torn page; the dirty log
//! reports such a page again) instead of handing out `&[u8]` views of live memory.

use std::ptr::NonNull;
use std::sync::Mutex;
use std::thread::JoinHandle;

use anyhow::{bail, Result};

/// Guest page size: KVM's dirty log tracks 4 KiB pages on x86-64.
pub const PAGE_SIZE: usize = 4096;

/// Anonymous, private, lazily backed memory of a fixed size.
pub struct GuestMemory {
    ptr: NonNull<u8>,
    len: usize,
    /// The thread of [`GuestMemory::prefault_read_in_background`], joined before unmapping.
    prefault: Mutex<Option<JoinHandle<()>>>,
}

// SAFETY: the mapping is plain memory owned by this value; every access goes through raw
// copies whose races with the guest are by design (see the module docs).
unsafe impl Send for GuestMemory {}
// SAFETY: as above; shared references only perform raw copies.
unsafe impl Sync for GuestMemory {}

impl GuestMemory {
    /// Maps `len` bytes (a non-zero multiple of 2 MiB, for the guest's 2 MiB page mappings),
    /// zero-filled and backed only when touched.
    pub fn new(len: usize) -> Result<Self> {
        if len == 0 || len % (2 << 20) != 0 {
            bail!("guest memory size {len} must be a non-zero multiple of 2 MiB");
        }
        // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            bail!(
                "mmap of {} MiB of guest memory failed: {}",
                len >> 20,
                std::io::Error::last_os_error()
            );
        }
        let ptr = NonNull::new(p.cast::<u8>()).expect("mmap returned null");
        Ok(GuestMemory {
            ptr,
            len,
            prefault: Mutex::new(None),
        })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: guest memory is never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Pages of [`PAGE_SIZE`].
    pub fn pages(&self) -> usize {
        self.len / PAGE_SIZE
    }

    /// Host address of the mapping, for `KVM_SET_USER_MEMORY_REGION`.
    pub fn host_addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    fn check(&self, addr: u64, len: usize) {
        let end = (addr as usize).checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.len),
            "guest access {addr:#x}+{len} outside {} bytes of memory",
            self.len
        );
    }

    /// Maps every not-yet-touched page to the kernel's shared zero page without allocating
    /// memory (`MADV_POPULATE_READ`), so a later full read (the digest, on the downtime
    /// path) takes no page faults. Best effort: older kernels lack it.
    pub fn prefault_read(&self) {
        populate_read(self.ptr.as_ptr() as usize, self.len);
    }

    /// [`GuestMemory::prefault_read`] on a thread of its own that runs only on a core left
    /// idle (`SCHED_IDLE`), highest addresses first, so that the caller goes on at once and
    /// loses no CPU to it. A destination that prefaulted 1 GiB before reading the stream
    /// kept the source waiting 28 ms at its start, which `auto` took for a slow link
    /// (`docs/PERFORMANCE.md`, *The destination's start*); a pass that finds pages not
    /// mapped yet only takes the faults the prefault would have taken. The stream fills
    /// memory from address 0 up. Dropping the memory waits for the thread.
    pub fn prefault_read_in_background(&self) {
        let (addr, len) = (self.ptr.as_ptr() as usize, self.len);
        let spawned = std::thread::Builder::new()
            .name("prefault".into())
            .spawn(move || {
                lowest_priority();
                let mut end = len;
                while end > 0 {
                    let start = end.saturating_sub(PREFAULT_PIECE);
                    populate_read(addr + start, end - start);
                    end = start;
                }
            });
        match spawned {
            Ok(h) => {
                if let Some(earlier) = self.prefault_slot().replace(h) {
                    let _ = earlier.join();
                }
            }
            Err(_) => self.prefault_read(),
        }
    }

    /// Waits for the prefault thread, if any.
    #[cfg(test)]
    fn wait_prefault(&self) {
        if let Some(h) = self.prefault_slot().take() {
            h.join().unwrap();
        }
    }

    /// The prefault thread's handle (a panic elsewhere cannot leave it inconsistent).
    fn prefault_slot(&self) -> std::sync::MutexGuard<'_, Option<JoinHandle<()>>> {
        self.prefault.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies guest bytes at `addr` into `out`.
    pub fn read(&self, addr: u64, out: &mut [u8]) {
        self.check(addr, out.len());
        // SAFETY: the range is inside the mapping (checked above) and `out` is a distinct
        // host buffer; a concurrent guest write can only make the copy stale or torn.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(addr as usize),
                out.as_mut_ptr(),
                out.len(),
            );
        }
    }

    /// Copies page `pfn` into `out` (`PAGE_SIZE` bytes).
    pub fn read_page(&self, pfn: u64, out: &mut [u8]) {
        self.read(pfn * PAGE_SIZE as u64, &mut out[..PAGE_SIZE]);
    }

    /// Writes `data` at guest address `addr` (the VMM lays out the guest and the
    /// destination fills memory while no vCPU runs; a write the dirty log does not see).
    pub fn write(&self, addr: u64, data: &[u8]) {
        self.check(addr, data.len());
        // SAFETY: in range (checked above); `data` cannot overlap the mapping because the
        // mapping is never handed out as a slice.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.ptr.as_ptr().add(addr as usize),
                data.len(),
            );
        }
    }

    /// All of memory as one slice, for a decoder that builds pages in place.
    ///
    /// # Safety
    /// No vCPU of a VM this memory is mapped into may run while the slice lives: the
    /// guest's writes would race with it. (`&mut self` already keeps every other Rust
    /// access out.)
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` bytes, lives as long as `self`, and is reached only
        // through this slice while it lives (the caller keeps the vCPUs out).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Reads a little-endian u64 at `addr`.
    pub fn read_u64(&self, addr: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(addr, &mut b);
        u64::from_le_bytes(b)
    }

    /// Writes a little-endian u64 at `addr`.
    pub fn write_u64(&self, addr: u64, v: u64) {
        self.write(addr, &v.to_le_bytes());
    }

    /// A 128-bit digest (XXH3) of all of memory, for checking that the destination holds
    /// exactly what the source had at the pause. Only meaningful while no vCPU runs; it is
    /// on the downtime path, so it hashes the mapping in place (no copy), on two threads.
    pub fn digest(&self) -> u128 {
        let half = (self.len / 2) & !(PAGE_SIZE - 1);
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| self.hash_range(0, half));
            let b = self.hash_range(half, self.len);
            (a.join().expect("digest thread"), b)
        });
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&a.to_le_bytes());
        h.update(&b.to_le_bytes());
        h.update(&(self.len as u64).to_le_bytes());
        h.digest128()
    }

    fn hash_range(&self, from: usize, to: usize) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let mut at = from;
        while at < to {
            let n = (4 << 20).min(to - at);
            // SAFETY: `at..at + n` is inside the mapping. Callers only digest memory no vCPU
            // is writing (a concurrent write could only change the digest, not break memory
            // safety of this read-only view, which lives only for this call).
            let chunk = unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(at), n) };
            h.update(chunk);
            at += n;
        }
        h.digest128()
    }
}

/// Bytes the background prefault maps per `madvise` call (2 ms of work here).
const PREFAULT_PIECE: usize = 64 << 20;

/// `MADV_POPULATE_READ` on `len` bytes at `addr`, inside a live mapping; false where the
/// kernel lacks it (before Linux 5.14). Best effort.
fn populate_read(addr: usize, len: usize) -> bool {
    // SAFETY: advice on a range of a mapping that outlives the call (the background thread
    // is joined before the mapping goes); MADV_POPULATE_READ does not change its contents.
    unsafe { libc::madvise(addr as *mut libc::c_void, len, libc::MADV_POPULATE_READ) == 0 }
}

/// Puts the calling thread in `SCHED_IDLE`: it runs only where no other thread wants the
/// core. Best effort.
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_IDLE.
    unsafe {
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        if let Some(h) = self.prefault_slot().take() {
            let _ = h.join();
        }
        // SAFETY: unmaps exactly the mapping created in `new`; no reference into it outlives
        // `self` (the VM that registered it is dropped first by its owner).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_writes_and_digests() {
        let m = GuestMemory::new(2 << 20).unwrap();
        assert_eq!(m.pages(), 512);
        let d0 = m.digest();
        m.write_u64(4096 + 8, 0xdead_beef);
        assert_eq!(m.read_u64(4096 + 8), 0xdead_beef);
        let mut page = vec![0u8; PAGE_SIZE];
        m.read_page(1, &mut page);
        assert_eq!(&page[8..12], &0xdead_beefu32.to_le_bytes());
        assert_ne!(m.digest(), d0);
        assert!(GuestMemory::new(4096).is_err());
    }

    /// Pages of `m` mapped now (`mincore`: the shared zero page counts).
    fn mapped_pages(m: &GuestMemory) -> usize {
        let mut v = vec![0u8; m.pages()];
        // SAFETY: `v` holds one byte per page of the mapping, as mincore writes.
        let rc = unsafe { libc::mincore(m.ptr.as_ptr().cast(), m.len, v.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        v.iter().filter(|&&b| b & 1 == 1).count()
    }

    #[test]
    fn a_background_prefault_maps_every_page_and_changes_no_byte() {
        // two pieces and a bit, written at both ends and at a piece's edge around it
        let m = GuestMemory::new(PREFAULT_PIECE * 2 + (2 << 20)).unwrap();
        let last = (m.len() - 8) as u64;
        m.write_u64(8, 1);
        m.prefault_read_in_background();
        m.write_u64(last, 2);
        m.write_u64(PREFAULT_PIECE as u64, 3);
        // a second call takes the first one's place, and waits for it
        m.prefault_read_in_background();
        m.wait_prefault();
        assert_eq!(
            (
                m.read_u64(8),
                m.read_u64(last),
                m.read_u64(PREFAULT_PIECE as u64)
            ),
            (1, 2, 3)
        );
        let mut page = vec![1u8; PAGE_SIZE];
        for pfn in [2, m.pages() as u64 / 2, m.pages() as u64 - 2] {
            m.read_page(pfn, &mut page);
            assert!(page.iter().all(|&b| b == 0), "page {pfn}");
        }
        if populate_read(m.ptr.as_ptr() as usize, PAGE_SIZE) {
            assert_eq!(mapped_pages(&m), m.pages());
        } else {
            eprintln!("SKIPPED: residency check: this kernel lacks MADV_POPULATE_READ");
        }
        // dropped with a thread still running: the drop waits for it
        let n = GuestMemory::new(PREFAULT_PIECE).unwrap();
        n.prefault_read_in_background();
        drop(n);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn out_of_range_access_panics() {
        let m = GuestMemory::new(2 << 20).unwrap();
        m.write_u64((2 << 20) - 4, 1);
    }
}
