//! The built guest: which QEMU, which kernel, which initramfs (busybox, the workload's
//! packages, its `/init`), and the command line that boots them (TCG, the workload's
//! memory, serial console only).

use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::debian::{fetch_kernel_and_busybox, find_or_install_qemu};
use super::initramfs::write_initramfs;
use super::packages::unpack_closure;
use super::workload::Workload;

/// Guest RAM in MiB of the default `heartbeat` workload: small, so that two QEMUs and two
/// `pmemsave` files fit anywhere. Other workloads have their own
/// ([`Workload::mem_mib`]).
pub const MEM_MIB: u64 = 128;

/// The QEMU block node of a guest's root disk: what a mirror job copies and an NBD
/// export serves.
pub const ROOT_NODE: &str = "root";

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
    /// busybox, the workload's packages and its `/init`.
    pub initramfs: PathBuf,
    /// What the guest runs.
    pub workload: Workload,
    /// Guest RAM, MiB.
    pub mem_mib: u64,
    /// The guest's root disk (a raw image, node `root` on a virtio disk), when it boots
    /// from one ([`super::disk_guest`]); else it lives in its initramfs.
    pub root_disk: Option<PathBuf>,
}

impl GuestImage {
    /// The default `heartbeat` guest: [`GuestImage::build_workload`] with
    /// [`Workload::Heartbeat`].
    pub fn build(cache: &Path) -> Result<GuestImage, Unavailable> {
        GuestImage::build_workload(cache, Workload::Heartbeat)
    }

    /// Finds (or installs with apt-get) QEMU, downloads the kernel and busybox into `cache`
    /// unless they are there already, unpacks the workload's Debian packages into
    /// `cache/<workload>-root/` unless they are there already, and writes the initramfs
    /// there (every time: so it always holds this build's workload). `cache` is created if
    /// missing; processes may build into the same cache at once.
    pub fn build_workload(cache: &Path, workload: Workload) -> Result<GuestImage, Unavailable> {
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
        let tree = if workload.packages().is_empty() {
            None
        } else {
            let root = cache.join(format!("{workload}-root"));
            unpack_closure(workload.packages(), &root)
                .map_err(|e| Unavailable(format!("the {workload} workload: {e}")))?;
            Some(root)
        };
        let initramfs = match workload {
            Workload::Heartbeat => cache.join("initramfs.cpio"),
            w => cache.join(format!("initramfs-{w}.cpio")),
        };
        let tmp = cache.join(format!("initramfs.cpio.{}", std::process::id()));
        let written = File::create(&tmp).and_then(|f| {
            let mut out = BufWriter::new(f);
            write_initramfs(&mut out, &bb, workload.init_script(), tree.as_deref())?;
            out.flush()
        });
        written
            .and_then(|()| fs::rename(&tmp, &initramfs))
            .map_err(|e| Unavailable(format!("cannot write {}: {e}", initramfs.display())))?;
        Ok(GuestImage {
            qemu,
            kernel,
            initramfs,
            workload,
            mem_mib: workload.mem_mib(),
            root_disk: None,
        })
    }

    /// The QEMU arguments (after the program) that boot this guest, without a serial
    /// console, `-qmp` or `-incoming`.
    pub fn base_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-accel",
            "tcg",
            "-m",
            &self.mem_mib.to_string(),
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
        if let Some(disk) = &self.root_disk {
            a.push("-blockdev".into());
            a.push(format!(
                "driver=file,filename={},node-name=root-file",
                disk.display()
            ));
            a.push("-blockdev".into());
            a.push(format!("driver=raw,file=root-file,node-name={ROOT_NODE}"));
            a.push("-device".into());
            a.push(format!("virtio-blk-pci,drive={ROOT_NODE},id=root-disk"));
        }
        a
    }

    /// The same guest on another copy of its root disk (the destination of a migration
    /// has its own).
    pub fn on_disk(&self, disk: &Path) -> GuestImage {
        GuestImage {
            root_disk: Some(disk.to_path_buf()),
            ..self.clone()
        }
    }

    /// [`GuestImage::base_args`] with the serial console written to the file `serial`.
    pub fn qemu_args(&self, serial: &Path) -> Vec<String> {
        let mut a = self.base_args();
        a.push("-serial".into());
        a.push(format!("file:{}", serial.display()));
        a
    }
}
