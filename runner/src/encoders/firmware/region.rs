//! The offload region: a file in /dev/shm that this process and the firmware process both
//! map.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use anyhow::{Context, Result};

/// A file both processes map: the offload region.
pub(super) struct SharedRegion {
    pub(super) path: Option<PathBuf>,
    _file: File,
    ptr: *mut libc::c_void,
    len: usize,
}

impl SharedRegion {
    /// Creates and maps a fresh zeroed file of `len` bytes, in /dev/shm when there is one.
    pub(super) fn create(len: usize) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = Path::new("/dev/shm");
        let dir = if dir.is_dir() {
            dir.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let path = dir.join(format!(
            "pagewire-offload-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating the shared region {}", path.display()))?;
        file.set_len(len as u64)
            .with_context(|| format!("sizing the shared region {}", path.display()))?;
        // SAFETY: maps `len` bytes of a file this process just created exclusively and sized
        // to `len`; the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            let _ = std::fs::remove_file(&path);
            return Err(e).context("mapping the shared region");
        }
        Ok(SharedRegion {
            path: Some(path),
            _file: file,
            ptr,
            len,
        })
    }

    pub(super) fn words(&self) -> &[AtomicU32] {
        // SAFETY: the mapping is `len` bytes, page-aligned, and lives until `drop`, which
        // cannot run while this borrow does. AtomicU32 has u32's size and alignment; this
        // process touches the region only through these atomics, and the firmware only
        // through its own.
        unsafe { std::slice::from_raw_parts(self.ptr as *const AtomicU32, self.len / 4) }
    }

    /// Removes the file; the mappings stay.
    pub(super) fn unlink(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        self.unlink();
        // SAFETY: unmaps exactly the mapping made in `create`; no borrow of it survives
        // (`FirmwareEncoder` drops its `Host` first).
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}
