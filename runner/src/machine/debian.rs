//! The guest's parts from Debian's packages: QEMU installed with apt-get when missing, the
//! kernel that `linux-image-amd64` depends on and `busybox-static` downloaded with
//! `apt-get download` and unpacked with dpkg-deb. Every failure is a reason in words.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::process::{find_in_path, run};

/// The QEMU binary the guest runs in.
pub const QEMU: &str = "qemu-system-x86_64";

/// `qemu-system-x86_64` from `$PATH`, installed with apt-get (package `qemu-system-x86`)
/// when missing.
pub fn find_or_install_qemu() -> Result<PathBuf, String> {
    if let Some(q) = find_in_path(QEMU) {
        return Ok(q);
    }
    if find_in_path("apt-get").is_none() {
        return Err(format!("{QEMU} is not installed and there is no apt-get"));
    }
    apt(&["update", "-qq"], None, Duration::from_secs(180))
        .map_err(|e| format!("{QEMU} is not installed and {e}"))?;
    apt(
        &["install", "-y", "-qq", "qemu-system-x86"],
        None,
        Duration::from_secs(400),
    )
    .map_err(|e| format!("{QEMU} is not installed and {e}"))?;
    find_in_path(QEMU)
        .ok_or_else(|| format!("apt-get installed qemu-system-x86, but {QEMU} is not on PATH"))
}

/// Downloads the kernel package that `linux-image-amd64` depends on and `busybox-static`,
/// and extracts `vmlinuz` and `busybox` into `cache` (busybox first: the kernel's presence
/// marks a complete cache).
pub fn fetch_kernel_and_busybox(cache: &Path) -> Result<(), String> {
    for tool in ["apt-get", "apt-cache", "dpkg-deb", "tar"] {
        if find_in_path(tool).is_none() {
            return Err(format!(
                "building the guest needs {tool} (Debian), not found on PATH"
            ));
        }
    }
    let kernel_pkg = match kernel_package() {
        Some(p) => p,
        None => {
            apt(&["update", "-qq"], None, Duration::from_secs(180))?;
            kernel_package().ok_or(
                "apt-cache depends linux-image-amd64 names no linux-image package even after \
                 apt-get update",
            )?
        }
    };
    let work = cache.join(format!("download.{}", std::process::id()));
    // `ignore`: a leftover from an earlier run may or may not exist.
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = download_into(&work, cache, &kernel_pkg);
    // `ignore`: best-effort cleanup of the download folder.
    let _ = fs::remove_dir_all(&work);
    result.map_err(|e| format!("cannot get the guest's kernel and busybox from Debian: {e}"))
}

fn download_into(work: &Path, cache: &Path, kernel_pkg: &str) -> Result<(), String> {
    apt(
        &["download", kernel_pkg, "busybox-static"],
        Some(work),
        Duration::from_secs(300),
    )?;
    let kdeb = file_in(work, &format!("{kernel_pkg}_"), ".deb")?;
    let bdeb = file_in(work, "busybox-static_", ".deb")?;
    extract(&kdeb, "./boot/vmlinuz-*", work)?;
    extract(&bdeb, "./bin/busybox", work)?;
    let vmlinuz = file_in(&work.join("boot"), "vmlinuz-", "")?;
    fs::rename(work.join("bin/busybox"), cache.join("busybox")).map_err(|e| e.to_string())?;
    fs::rename(&vmlinuz, cache.join("vmlinuz")).map_err(|e| e.to_string())?;
    fs::write(cache.join("kernel-package.txt"), format!("{kernel_pkg}\n"))
        .map_err(|e| e.to_string())
}

/// The file in `dir` whose name starts with `prefix` and ends with `suffix`.
fn file_in(dir: &Path, prefix: &str, suffix: &str) -> Result<PathBuf, String> {
    fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .ok_or(format!("{} holds no {prefix}*{suffix}", dir.display()))
}

/// The versioned kernel package `linux-image-amd64` depends on, e.g. linux-image-6.1.0-56-amd64.
fn kernel_package() -> Option<String> {
    let out = run(
        Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
        Duration::from_secs(60),
    )
    .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-") && !p.starts_with('<'))
        .map(str::to_string)
}

/// Extracts the members matching `pattern` from a .deb's data into `into`.
pub(super) fn extract(deb: &Path, pattern: &str, into: &Path) -> Result<(), String> {
    let script = "dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" --wildcards \"$3\"";
    run(
        Command::new("sh")
            .args(["-c", script, "sh"])
            .arg(deb)
            .arg(into)
            .arg(pattern),
        Duration::from_secs(120),
    )
    .map(|_| ())
    .map_err(|e| format!("cannot extract {pattern} from {}: {e}", deb.display()))
}

pub(super) fn apt(args: &[&str], cwd: Option<&Path>, timeout: Duration) -> Result<(), String> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    run(&mut cmd, timeout)
        .map(|_| ())
        .map_err(|e| format!("'apt-get {}' failed: {e}", args.join(" ")))
}

/// The kernel modules a guest needs to boot from an ext4 root on a virtio disk, relative to
/// `lib/modules/<version>/kernel/`, in the order they load: each after those it depends
/// on (Debian builds all of them as modules). `crc32c_generic` is no declared dependency
/// of ext4, but ext4 asks the crypto layer for crc32c at mount time, and the initramfs has
/// no modprobe to load it on demand.
pub const DISK_MODULES: [&str; 11] = [
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "drivers/block/virtio_blk.ko",
    "lib/crc16.ko",
    "fs/mbcache.ko",
    "fs/jbd2/jbd2.ko",
    "crypto/crc32c_generic.ko",
    "fs/ext4/ext4.ko",
];

/// Extracts [`DISK_MODULES`] of the kernel in `cache` (its package is named in
/// `kernel-package.txt`) into `cache/modules/`, unless they are there already; checks that
/// each loads after what it depends on.
pub fn fetch_disk_modules(cache: &Path) -> Result<PathBuf, String> {
    let dir = cache.join("modules");
    if dir.join(".complete").is_file() {
        return Ok(dir);
    }
    let pkg = fs::read_to_string(cache.join("kernel-package.txt"))
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("{} names no kernel package: {e}", cache.display()))?;
    let work = cache.join(format!("modules.{}", std::process::id()));
    // `ignore`: a leftover from an earlier run may or may not exist.
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = modules_into(&work, &pkg).and_then(|()| {
        // `ignore`: an older, incomplete folder may or may not be there.
        let _ = fs::remove_dir_all(&dir);
        fs::rename(work.join("out"), &dir).map_err(|e| e.to_string())
    });
    // `ignore`: best-effort cleanup of the download folder.
    let _ = fs::remove_dir_all(&work);
    result
        .map(|()| dir)
        .map_err(|e| format!("cannot get the disk modules of {pkg} from Debian: {e}"))
}

fn modules_into(work: &Path, pkg: &str) -> Result<(), String> {
    apt(&["download", pkg], Some(work), Duration::from_secs(300))?;
    let deb = file_in(work, &format!("{pkg}_"), ".deb")?;
    let out = work.join("out");
    fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let mut loaded = Vec::new();
    for m in DISK_MODULES {
        extract(&deb, &format!("./lib/modules/*/kernel/{m}"), work)?;
        let version = file_in(&work.join("lib/modules"), "", "")?;
        let from = version.join("kernel").join(m);
        let bytes = fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        let name = module_name(m);
        for dep in module_depends(&bytes) {
            if !loaded.contains(&dep) {
                return Err(format!(
                    "{name} depends on {dep}, which does not load before it"
                ));
            }
        }
        fs::write(out.join(format!("{name}.ko")), &bytes).map_err(|e| e.to_string())?;
        loaded.push(name);
    }
    fs::write(out.join(".complete"), loaded.join("\n")).map_err(|e| e.to_string())
}

/// `fs/ext4/ext4.ko` -> `ext4`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".ko").to_string()
}

/// The modules a `.ko` declares it depends on (its `.modinfo` holds `depends=a,b`).
pub fn module_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &ko[at + KEY.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_modules_dependencies_are_read_from_its_modinfo() {
        let ko = b"\x7fELF...\0license=GPL\0depends=jbd2,mbcache,crc16\0retpoline=Y\0";
        assert_eq!(module_depends(ko), ["jbd2", "mbcache", "crc16"]);
        assert!(module_depends(b"\0depends=\0name=x\0").is_empty());
        assert!(module_depends(b"no modinfo").is_empty());
        assert_eq!(module_name("fs/ext4/ext4.ko"), "ext4");
    }
}
