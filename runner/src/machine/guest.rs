//! The built guest: which QEMU, which kernel, which initramfs, and the command line that
//! boots them (TCG, 128 MiB, serial console only).

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use super::debian::{fetch_kernel_and_busybox, find_or_install_qemu};
use super::initramfs::initramfs_cpio;

/// Guest RAM in MiB: small, so that two QEMUs and two `pmemsave` files fit anywhere.
pub const MEM_MIB: u64 = 128;

/// Why the guest cannot be had on this machine (no QEMU and no apt-get, no network, ...):
/// a test prints it as a SKIPPED line, the command line as an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// A guest ready to boot.
#[derive(Debug, Clone)]
pub struct GuestImage {
    /// `qemu-system-x86_64`.
    pub qemu: PathBuf,
    /// Debian's kernel (`vmlinuz`).
    pub kernel: PathBuf,
    /// busybox and the self-checking workload ([`initramfs`](super::initramfs)).
    pub initramfs: PathBuf,
}

impl GuestImage {
    /// Finds (or installs with apt-get) QEMU, downloads the kernel and busybox into `cache`
    /// unless they are there already, and writes the initramfs there (every time: it is
    /// cheap, and so it always holds this build's workload). `cache` is created if missing;
    /// processes may build into the same cache at once.
    pub fn build(cache: &Path) -> Result<GuestImage, Unavailable> {
        let qemu = find_or_install_qemu().map_err(Unavailable)?;
        fs::create_dir_all(cache)
            .map_err(|e| Unavailable(format!("cannot create {}: {e}", cache.display())))?;
        let kernel = cache.join("vmlinuz");
        let busybox = cache.join("busybox");
        if !kernel.is_file() || !busybox.is_file() {
            fetch_kernel_and_busybox(cache).map_err(Unavailable)?;
        }
        let bb = fs::read(&busybox)
            .map_err(|e| Unavailable(format!("cannot read {}: {e}", busybox.display())))?;
        let initramfs = cache.join("initramfs.cpio");
        let tmp = cache.join(format!("initramfs.cpio.{}", std::process::id()));
        fs::write(&tmp, initramfs_cpio(&bb))
            .and_then(|()| fs::rename(&tmp, &initramfs))
            .map_err(|e| Unavailable(format!("cannot write {}: {e}", initramfs.display())))?;
        Ok(GuestImage {
            qemu,
            kernel,
            initramfs,
        })
    }

    /// The QEMU arguments (after the program) that boot this guest, without a serial
    /// console, `-qmp` or `-incoming`.
    pub fn base_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-accel",
            "tcg",
            "-m",
            &MEM_MIB.to_string(),
            "-nodefaults",
            "-no-user-config",
            "-no-reboot",
            "-display",
            "none",
            "-kernel",
        ]
        .map(String::from)
        .to_vec();
        a.push(self.kernel.display().to_string());
        a.push("-initrd".into());
        a.push(self.initramfs.display().to_string());
        a.push("-append".into());
        a.push("console=ttyS0 panic=-1 quiet".into());
        a
    }

    /// [`GuestImage::base_args`] with the serial console written to the file `serial`.
    pub fn qemu_args(&self, serial: &Path) -> Vec<String> {
        let mut a = self.base_args();
        a.push("-serial".into());
        a.push(format!("file:{}", serial.display()));
        a
    }
}
