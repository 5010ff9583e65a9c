//! A tiny real Linux guest for the capture and migration-stream tests: Debian's kernel and
//! a busybox initramfs whose /init fills tmpfs with recognizable, changing text and prints a
//! numbered heartbeat after each round.
//!
//! QEMU, the kernel and busybox come from Debian's packages (installed or downloaded with
//! apt when missing). The extracted kernel and busybox are cached under
//! `target/test-guest/`, so only the first run downloads anything. Anything that cannot be
//! had on this machine is a skip reason, not a failure; a guest that does not boot is a
//! failure.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Printed on the serial console once /init has started the workload.
pub const READY: &str = "PAGEWIRE-GUEST-READY";
/// Each workload round writes 1 MiB of `pagewire-workload-<round>` lines into tmpfs.
pub const WORKLOAD_TEXT: &str = "pagewire-workload-";
/// Then prints `PAGEWIRE-HEARTBEAT <round>` on the serial console: the round counter lives
/// in guest memory, so a migrated guest goes on counting where the source stopped.
pub const HEARTBEAT: &str = "PAGEWIRE-HEARTBEAT ";
/// Guest RAM.
pub const MEM_MIB: u64 = 128;

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
mkdir -p /dev/shm
mount -t tmpfs -o size=32m shm /dev/shm
echo PAGEWIRE-GUEST-READY
i=0
while :; do
  i=$((i+1))
  yes "pagewire-workload-$i" | head -c 1048576 > /dev/shm/w$((i % 8))
  echo "PAGEWIRE-HEARTBEAT $i"
done
"#;

/// The built guest.
#[derive(Debug, Clone)]
pub struct Guest {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// The guest, built once per test process; `Err` is the reason to skip.
pub fn guest() -> Result<Guest, String> {
    static GUEST: OnceLock<Result<Guest, String>> = OnceLock::new();
    GUEST.get_or_init(build).clone()
}

fn build() -> Result<Guest, String> {
    let qemu = match find_in_path("qemu-system-x86_64") {
        Some(q) => q,
        None => {
            install_qemu()?;
            find_in_path("qemu-system-x86_64")
                .ok_or("apt-get installed qemu-system-x86, but qemu-system-x86_64 is not on PATH")?
        }
    };
    let cache = target_dir().join("test-guest");
    fs::create_dir_all(&cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    let kernel = cache.join("vmlinuz");
    let busybox = cache.join("busybox");
    if !kernel.is_file() || !busybox.is_file() {
        fetch_kernel_and_busybox(&cache)?;
    }
    let initramfs = cache.join("initramfs.cpio");
    let bb = fs::read(&busybox).map_err(|e| format!("cannot read {}: {e}", busybox.display()))?;
    let tmp = cache.join(format!("initramfs.cpio.{}", std::process::id()));
    fs::write(&tmp, initramfs_cpio(&bb)).expect("write the initramfs");
    fs::rename(&tmp, &initramfs).expect("rename the initramfs");
    Ok(Guest {
        qemu,
        kernel,
        initramfs,
    })
}

/// `target/` of this build (the test binary's sibling `pagewire` lives in target/<profile>/).
pub fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_pagewire"));
    bin.parent()
        .and_then(Path::parent)
        .expect("the pagewire binary lives in target/<profile>/")
        .to_path_buf()
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
}

fn install_qemu() -> Result<(), String> {
    if find_in_path("apt-get").is_none() {
        return Err("qemu-system-x86_64 is not installed and there is no apt-get".into());
    }
    apt(&["update", "-qq"], None, Duration::from_secs(180))
        .map_err(|e| format!("qemu-system-x86_64 is not installed and {e}"))?;
    apt(
        &["install", "-y", "-qq", "qemu-system-x86"],
        None,
        Duration::from_secs(400),
    )
    .map_err(|e| format!("qemu-system-x86_64 is not installed and {e}"))
}

/// Downloads the kernel package that `linux-image-amd64` depends on and `busybox-static`,
/// and extracts `vmlinuz` and `busybox` into `cache`.
fn fetch_kernel_and_busybox(cache: &Path) -> Result<(), String> {
    for tool in ["apt-get", "apt-cache", "dpkg-deb", "tar"] {
        if find_in_path(tool).is_none() {
            return Err(format!(
                "building the test guest needs {tool} (Debian), not found on PATH"
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
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let result = (|| {
        apt(
            &["download", &kernel_pkg, "busybox-static"],
            Some(&work),
            Duration::from_secs(300),
        )?;
        let deb = |prefix: &str| -> Result<PathBuf, String> {
            fs::read_dir(&work)
                .map_err(|e| e.to_string())?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    let n = p.file_name().unwrap().to_string_lossy();
                    n.starts_with(prefix) && n.ends_with(".deb")
                })
                .ok_or(format!("apt-get download left no {prefix}*.deb"))
        };
        let kdeb = deb(&format!("{kernel_pkg}_"))?;
        let bdeb = deb("busybox-static_")?;
        extract(&kdeb, "./boot/vmlinuz-*", &work)?;
        extract(&bdeb, "./bin/busybox", &work)?;
        let vmlinuz = fs::read_dir(work.join("boot"))
            .map_err(|e| format!("{} has no boot/: {e}", kdeb.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("vmlinuz-")
            })
            .ok_or(format!("{} holds no boot/vmlinuz-*", kdeb.display()))?;
        // busybox first: the kernel's presence marks a complete cache.
        fs::rename(work.join("bin/busybox"), cache.join("busybox")).map_err(|e| e.to_string())?;
        fs::rename(&vmlinuz, cache.join("vmlinuz")).map_err(|e| e.to_string())?;
        fs::write(cache.join("kernel-package.txt"), format!("{kernel_pkg}\n"))
            .map_err(|e| e.to_string())
    })();
    let _ = fs::remove_dir_all(&work);
    result.map_err(|e| format!("cannot get the test guest's kernel and busybox from Debian: {e}"))
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
fn extract(deb: &Path, pattern: &str, into: &Path) -> Result<(), String> {
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

fn apt(args: &[&str], cwd: Option<&Path>, timeout: Duration) -> Result<(), String> {
    let mut cmd = Command::new("apt-get");
    cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    run(&mut cmd, timeout)
        .map(|_| ())
        .map_err(|e| format!("'apt-get {}' failed: {e}", args.join(" ")))
}

/// Runs `cmd` to completion within `timeout` (killed after it); `Err` unless it exits 0.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let out = run_bounded(cmd, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        Err(format!(
            "{} ({})",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
        ))
    }
}

/// Runs `cmd` within `timeout` and returns its output whatever its exit status; `Err` if it
/// cannot start or runs too long (then it is killed).
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let drain = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{:?} did not finish within {} s and was killed",
                cmd.get_program(),
                timeout.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    })
}

/// A newc cpio archive: /init, /bin/busybox, the mount points and /dev/console.
pub fn initramfs_cpio(busybox: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 1;
    let mut entry = |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        ino += 1;
        out.extend_from_slice(b"070701");
        for f in fields {
            write!(out, "{f:08X}").unwrap();
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        entry(dir, 0o040755, (0, 0), b"");
    }
    entry("dev/console", 0o020600, (5, 1), b"");
    entry("bin/busybox", 0o100755, (0, 0), busybox);
    entry("init", 0o100755, (0, 0), INIT.as_bytes());
    entry("TRAILER!!!", 0, (0, 0), b"");
    out
}

/// A booted guest; killed when dropped, so no test leaves a QEMU behind.
pub struct Vm {
    pub child: Child,
    pub qmp: PathBuf,
    pub serial: PathBuf,
}

impl Guest {
    /// The QEMU arguments (after the program) that boot this guest, minus `-qmp`.
    pub fn qemu_args(&self, serial: &Path) -> Vec<String> {
        let mut a: Vec<String> = [
            "-accel",
            "tcg",
            "-m",
            "128",
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
        a.push("-serial".into());
        a.push(format!("file:{}", serial.display()));
        a
    }

    /// Boots the guest with its QMP socket and serial log in `dir`.
    pub fn boot(&self, dir: &Path) -> Vm {
        let qmp = dir.join("qmp.sock");
        let serial = dir.join("serial.log");
        let child = Command::new(&self.qemu)
            .args(self.qemu_args(&serial))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdin(Stdio::null())
            .spawn()
            .expect("start qemu-system-x86_64");
        Vm { child, qmp, serial }
    }
}

impl Vm {
    /// Waits until the serial log shows [`READY`]; panics with the log if QEMU exits or
    /// `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let log = fs::read_to_string(&self.serial).unwrap_or_default();
            if log.contains(READY) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("QEMU exited ({status}) before the guest was ready; serial log:\n{log}");
            }
            if Instant::now() >= deadline {
                panic!(
                    "the guest did not print {READY} within {} s; serial log:\n{log}",
                    timeout.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills QEMU now (as if it crashed).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.kill();
    }
}
