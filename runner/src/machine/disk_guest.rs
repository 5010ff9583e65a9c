//! A guest that boots from a root disk, for storage migration (docs/STORAGE.md): an ext4
//! raw image holding busybox, a workload's Debian packages (real content for the disk to
//! carry) and an `/init` that writes files to the disk and reads them back from it; and a
//! small initramfs that loads the virtio and ext4 modules of Debian's kernel, mounts the
//! disk and switches to it. Also the host's checks of such an image once its QEMU is
//! gone: `e2fsck`, and the files against the manifest the guest kept on the disk.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::debian::{
    apt, fetch_disk_modules, fetch_kernel_and_busybox, find_or_install_qemu, module_name,
    DISK_MODULES,
};
use super::guest::{GuestImage, Unavailable};
use super::initramfs::write_initramfs;
use super::packages::unpack_closure;
use super::process::{find_in_path, run, run_bounded};
use super::workload::Workload;

/// The files the disk workload ([`Workload::Disk`]) keeps on the disk: `/data/ref0..3`
/// (1 MiB each, written at boot, never changed), `/data/w0..15` (128 KiB, one rewritten
/// each round), and `/data/manifest` (the md5 of each, in `md5sum` format).
pub const MANIFEST: &str = "/data/manifest";

/// The initramfs's `/init`: the modules, the disk, then the disk's own `/init`.
fn boot_init() -> String {
    let modules: Vec<String> = DISK_MODULES.iter().map(|m| module_name(m)).collect();
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {}; do
  insmod /$m.ko || {{ echo "PAGEWIRE-CHECK FAIL 0 cannot load module $m"; exit 1; }}
done
n=0
while [ ! -b /dev/vda ]; do
  n=$((n+1))
  [ $n -gt 200 ] && {{ echo "PAGEWIRE-CHECK FAIL 0 no /dev/vda"; exit 1; }}
  sleep 0.05
done
mkdir -p /newroot
mount -t ext4 /dev/vda /newroot || {{ echo "PAGEWIRE-CHECK FAIL 0 cannot mount /dev/vda"; exit 1; }}
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /init
"#,
        modules.join(" ")
    )
}

/// Builds the disk guest into `cache` (QEMU, kernel, busybox and the disk modules as
/// [`GuestImage::build_workload`] gets them) and writes its root disk to `disk`: an ext4
/// filesystem of `size_mib` MiB holding busybox, the disk workload's `/init` and, unless `content` has
/// no packages, that workload's packages (unpacked into `cache/<content>-root/`, shared
/// with that workload's guest). The disk is written anew every time.
pub fn build(
    cache: &Path,
    content: Workload,
    disk: &Path,
    size_mib: u64,
) -> Result<GuestImage, Unavailable> {
    let fail = |e: String| Unavailable(e);
    let qemu = find_or_install_qemu().map_err(fail)?;
    let mkfs = find_or_install_e2fsprogs().map_err(fail)?;
    fs::create_dir_all(cache)
        .map_err(|e| fail(format!("cannot create {}: {e}", cache.display())))?;
    let kernel = cache.join("vmlinuz");
    let busybox = cache.join("busybox");
    if !kernel.is_file() || !busybox.is_file() {
        fetch_kernel_and_busybox(cache).map_err(fail)?;
    }
    let modules = fetch_disk_modules(cache).map_err(fail)?;
    let bb =
        fs::read(&busybox).map_err(|e| fail(format!("cannot read {}: {e}", busybox.display())))?;
    let initramfs = cache.join("initramfs-disk-boot.cpio");
    let tmp = cache.join(format!("initramfs-disk-boot.cpio.{}", std::process::id()));
    File::create(&tmp)
        .and_then(|f| {
            let mut out = BufWriter::new(f);
            write_initramfs(&mut out, &bb, &boot_init(), Some(&modules))?;
            out.flush()
        })
        .and_then(|()| fs::rename(&tmp, &initramfs))
        .map_err(|e| fail(format!("cannot write {}: {e}", initramfs.display())))?;
    let tree = if content.packages().is_empty() {
        None
    } else {
        let root = cache.join(format!("{content}-root"));
        unpack_closure(content.packages(), &root)
            .map_err(|e| fail(format!("the disk's {content} packages: {e}")))?;
        Some(root)
    };
    write_root_disk(&mkfs, cache, &bb, tree.as_deref(), disk, size_mib).map_err(fail)?;
    Ok(GuestImage {
        qemu,
        kernel,
        initramfs,
        workload: Workload::Disk,
        mem_mib: Workload::Disk.mem_mib(),
        root_disk: Some(disk.to_path_buf()),
    })
}

/// Stages the root tree (the packages hard-linked, not copied) and makes the filesystem
/// from it with `mkfs.ext4 -d`, its inode tables and journal written at once (lazy
/// initialisation would have the guest's kernel write them later, during a migration).
fn write_root_disk(
    mkfs: &Path,
    cache: &Path,
    busybox: &[u8],
    tree: Option<&Path>,
    disk: &Path,
    size_mib: u64,
) -> Result<(), String> {
    let stage = cache.join(format!("disk-stage.{}", std::process::id()));
    // `ignore`: a leftover from an earlier run may or may not exist.
    let _ = fs::remove_dir_all(&stage);
    let result = (|| {
        fs::create_dir_all(&stage).map_err(|e| e.to_string())?;
        if let Some(t) = tree {
            run(
                Command::new("cp").arg("-al").arg(t.join(".")).arg(&stage),
                Duration::from_secs(300),
            )?;
            // the package cache's marker is no part of the guest
            let _ = fs::remove_file(stage.join(".complete"));
        }
        for d in ["bin", "dev", "proc", "sys", "tmp", "data"] {
            fs::create_dir_all(stage.join(d)).map_err(|e| e.to_string())?;
        }
        write_executable(&stage.join("bin/busybox"), busybox)?;
        write_executable(&stage.join("init"), Workload::Disk.init_script().as_bytes())?;
        // `ignore`: an older image may or may not be there.
        let _ = fs::remove_file(disk);
        File::create(disk)
            .and_then(|f| f.set_len(size_mib << 20))
            .map_err(|e| format!("cannot create {}: {e}", disk.display()))?;
        run(
            Command::new(mkfs)
                .args(["-q", "-F", "-b", "4096", "-m", "0", "-L", "pagewire-root"])
                .args([
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0",
                ])
                .arg("-d")
                .arg(&stage)
                .arg(disk),
            Duration::from_secs(600),
        )
        .map(|_| ())
        .map_err(|e| format!("mkfs.ext4 of {}: {e}", disk.display()))
    })();
    // `ignore`: best-effort cleanup of the staging folder.
    let _ = fs::remove_dir_all(&stage);
    result
}

fn write_executable(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, bytes)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// `mkfs.ext4`, installed with apt-get (package `e2fsprogs`) when missing.
fn find_or_install_e2fsprogs() -> Result<PathBuf, String> {
    let find = || {
        find_in_path("mkfs.ext4").or_else(|| {
            let p = PathBuf::from("/usr/sbin/mkfs.ext4");
            p.is_file().then_some(p)
        })
    };
    if let Some(p) = find() {
        return Ok(p);
    }
    if find_in_path("apt-get").is_none() {
        return Err("mkfs.ext4 is not installed and there is no apt-get".into());
    }
    apt(
        &["install", "-y", "-qq", "e2fsprogs"],
        None,
        Duration::from_secs(300),
    )?;
    find().ok_or_else(|| "apt-get installed e2fsprogs, but mkfs.ext4 is not there".into())
}

/// `e2fsck` of a disk whose QEMU is gone, as after a power cut: the journal replayed
/// (`-E journal_only`, exit status 0 or 1: replaying changes it), then a full check that may change nothing (`-fn`), which must
/// find nothing to fix. `Err` says what it found.
pub fn fsck(disk: &Path) -> Result<(), String> {
    let e2fsck = sbin("e2fsck")?;
    let replay = run_bounded(
        Command::new(&e2fsck)
            .args(["-fy", "-E", "journal_only"])
            .arg(disk),
        Duration::from_secs(300),
    )?;
    // 1: the journal was replayed, which changes the filesystem
    if !matches!(replay.status.code(), Some(0 | 1)) {
        return Err(format!(
            "replaying the journal of {}: {} ({})",
            disk.display(),
            replay.status,
            String::from_utf8_lossy(&replay.stderr).trim()
        ));
    }
    let out = run_bounded(
        Command::new(&e2fsck).args(["-fn"]).arg(disk),
        Duration::from_secs(300),
    )?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().take(8).collect();
    Err(format!(
        "e2fsck -fn {} found errors ({}): {}",
        disk.display(),
        out.status,
        lines.join(" / ")
    ))
}

/// Reads the guest's manifest out of `disk` (with `debugfs`, no mount) and checks every
/// file it names against its md5; returns how many files matched. Run after [`fsck`],
/// whose journal replay puts the last files in place.
pub fn check_recorded_files(disk: &Path) -> Result<usize, String> {
    let manifest = debugfs_cat(disk, MANIFEST)?;
    let text = String::from_utf8_lossy(&manifest);
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (want, file) = line
            .split_once("  ")
            .ok_or_else(|| format!("{MANIFEST}: malformed line {line:?}"))?;
        let bytes = debugfs_cat(disk, file)?;
        let got = md5_hex(&bytes)?;
        if got != want {
            return Err(format!(
                "{file} on {}: md5 {got}, the guest wrote {want}",
                disk.display()
            ));
        }
        checked += 1;
    }
    if checked == 0 {
        return Err(format!("{MANIFEST} on {} names no file", disk.display()));
    }
    Ok(checked)
}

fn debugfs_cat(disk: &Path, file: &str) -> Result<Vec<u8>, String> {
    let out = run(
        Command::new(sbin("debugfs")?)
            .args(["-R", &format!("cat {file}")])
            .arg(disk),
        Duration::from_secs(60),
    )?;
    Ok(out.stdout)
}

fn md5_hex(bytes: &[u8]) -> Result<String, String> {
    let mut child = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start md5sum: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    writer
        .join()
        .map_err(|_| "md5sum's writer panicked".to_string())?
        .map_err(|e| format!("md5sum: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().unwrap_or("").to_string())
}

fn sbin(tool: &str) -> Result<PathBuf, String> {
    find_in_path(tool)
        .or_else(|| {
            let p = Path::new("/usr/sbin").join(tool);
            p.is_file().then_some(p)
        })
        .or_else(|| {
            let p = Path::new("/sbin").join(tool);
            p.is_file().then_some(p)
        })
        .ok_or_else(|| format!("{tool} (e2fsprogs) is not installed"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::initramfs::{CHECK, HEARTBEAT, READY};

    #[test]
    fn the_boot_script_loads_every_module_in_order_and_switches_to_the_disk() {
        let init = boot_init();
        let list = DISK_MODULES.map(module_name).join(" ");
        assert!(init.contains(&format!("for m in {list}; do")));
        assert!(init.contains("exec switch_root /newroot /init"));
    }

    #[test]
    fn the_disk_script_prints_the_markers_the_console_parses() {
        for marker in [READY, HEARTBEAT, CHECK, "PAGEWIRE-CHECK FAIL", MANIFEST] {
            assert!(Workload::Disk.init_script().contains(marker), "{marker}");
        }
    }
}
