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
