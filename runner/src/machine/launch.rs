//! One QEMU running the guest, and a source and destination pair for live migration.
//!
//! The serial console is QEMU's standard output (`-serial stdio`), read by a thread that
//! timestamps each line into a [`Console`] and copies it to `serial.log`; QEMU's own
//! messages go to `qemu.log`. QMP listens on two unix sockets, `qmp.sock` and `qmp-2.sock`
//! (QEMU serves one client per socket, so a second client such as the tunnel's source end
//! can drive the migration while the caller keeps its own). All are in a folder the caller
//! gives. QEMU is killed when its [`Machine`] is dropped, and also (Linux's parent-death
//! signal) if the thread that launched it exits, so neither a panic nor an interrupted run
//! leaves a QEMU behind: launch from a thread that outlives the machine.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::console::Console;
use super::guest::GuestImage;
use crate::trace::launch::connect_when_up;
use crate::trace::qmp::{Qmp, DEFAULT_TIMEOUT};

/// How long QEMU may take to open its QMP socket.
pub const QMP_STARTUP: Duration = Duration::from_secs(30);

/// How the machine starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Boots the guest.
    Boot,
    /// Waits for a migration on `uri` (`-incoming`: `unix:/path`, `tcp:127.0.0.1:port`,
    /// `exec:...`, `defer`); with `paused` (`-S`) it stays paused once the migration is in,
    /// until `cont`, so its memory can be compared first.
    Incoming { uri: String, paused: bool },
}

/// A QEMU running the guest; killed when dropped.
#[derive(Debug)]
pub struct Machine {
    child: Child,
    reader: Option<JoinHandle<()>>,
    console: Console,
    qmp_path: PathBuf,
    second_qmp_path: PathBuf,
    serial_path: PathBuf,
    log_path: PathBuf,
    args: Vec<String>,
}

impl Machine {
    /// Starts QEMU for `image` as `start` says, with its QMP socket (`qmp.sock`), serial log
    /// (`serial.log`) and QEMU's messages (`qemu.log`) in `dir` (created if missing).
    pub fn launch(image: &GuestImage, dir: &Path, start: &Start) -> Result<Machine> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let qmp_path = dir.join("qmp.sock");
        let second_qmp_path = dir.join("qmp-2.sock");
        let serial_path = dir.join("serial.log");
        let log_path = dir.join("qemu.log");
        let mut args = image.base_args();
        args.extend(["-serial".into(), "stdio".into()]);
        for socket in [&qmp_path, &second_qmp_path] {
            // `ignore`: a socket left by an earlier run may or may not exist.
            let _ = fs::remove_file(socket);
            args.push("-qmp".into());
            args.push(format!("unix:{},server=on,wait=off", socket.display()));
        }
        if let Start::Incoming { uri, paused } = start {
            if *paused {
                args.push("-S".into());
            }
            args.extend(["-incoming".into(), uri.clone()]);
        }
        let serial = File::create(&serial_path)
            .with_context(|| format!("cannot create {}", serial_path.display()))?;
        let log = File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = Command::new(&image.qemu);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        kill_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", image.qemu.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let console = Console::new();
        let reader = {
            let console = console.clone();
            thread::Builder::new()
                .name("qemu-serial".into())
                .spawn(move || follow(stdout, serial, &console))
                .context("cannot start the serial reader thread")?
        };
        Ok(Machine {
            child,
            reader: Some(reader),
            console,
            qmp_path,
            second_qmp_path,
            serial_path,
            log_path,
            args,
        })
    }

    /// The serial console, read as it arrives.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// QEMU's arguments (after the program).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The socket [`Machine::qmp`] connects to.
    pub fn qmp_path(&self) -> &Path {
        &self.qmp_path
    }

    /// A second QMP socket, for another client (e.g. `QmpAddr::Unix` for the tunnel).
    pub fn second_qmp_path(&self) -> &Path {
        &self.second_qmp_path
    }

    /// A copy of everything the guest printed.
    pub fn serial_path(&self) -> &Path {
        &self.serial_path
    }

    /// QEMU's own messages (standard error).
    pub fn qemu_log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connects to QMP once QEMU has opened the socket ([`QMP_STARTUP`] at most), with
    /// [`DEFAULT_TIMEOUT`] for each reply. QEMU serves one QMP client at a time.
    pub fn qmp(&mut self) -> Result<Qmp> {
        let path = self.qmp_path.clone();
        connect_when_up(&path, DEFAULT_TIMEOUT, QMP_STARTUP, || {
            let status = self.exited()?;
            Some(format!(
                "QEMU exited ({status}) before its QMP socket came up: {}",
                self.qemu_log().trim()
            ))
        })
    }

    /// Waits until the guest's workload has started.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        self.console.wait_ready(timeout).map(|_| ()).map_err(|e| {
            let qemu = self.qemu_log();
            anyhow::anyhow!(e).context(format!(
                "the guest did not start its workload; QEMU said: {}",
                qemu.trim()
            ))
        })
    }

    /// QEMU's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills QEMU now (as if it crashed) and waits for it and its console reader.
    pub fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // `ignore`: it may exit on its own in between.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            // `ignore`: the reader ends with QEMU's stdout; a panic in it changes nothing here.
            let _ = r.join();
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads QEMU's standard output until it closes, into `console` and `log`.
fn follow(mut from: impl Read, mut log: File, console: &Console) {
    let mut buf = [0u8; 4096];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                console.feed(&buf[..n], Instant::now());
                // `ignore`: the log is a copy for people; the console has the lines.
                let _ = log.write_all(&buf[..n]);
            }
        }
    }
    console.close();
}

/// Asks Linux to kill the child when the launching thread ends (`PR_SET_PDEATHSIG`), and
/// exits at once if the parent is already gone.
fn kill_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls: prctl, getppid, _exit.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// A source that boots the guest and a destination waiting for its migration, each in its
/// own subfolder (`source/`, `destination/`) of the caller's folder.
#[derive(Debug)]
pub struct MigrationPair {
    pub source: Machine,
    pub destination: Machine,
}

impl MigrationPair {
    /// Starts both; the destination listens on `incoming` (see [`Start::Incoming`]),
    /// paused once the migration is in if `destination_paused`.
    pub fn launch(
        image: &GuestImage,
        dir: &Path,
        incoming: &str,
        destination_paused: bool,
    ) -> Result<MigrationPair> {
        let source = Machine::launch(image, &dir.join("source"), &Start::Boot)?;
        let destination = Machine::launch(
            image,
            &dir.join("destination"),
            &Start::Incoming {
                uri: incoming.to_string(),
                paused: destination_paused,
            },
        )?;
        Ok(MigrationPair {
            source,
            destination,
        })
    }
}
