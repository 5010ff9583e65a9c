//! A QEMU that pagewire starts itself (`pagewire trace capture --launch -- qemu-system-x86_64 ...`),
//! with a QMP socket in a private temporary folder, stopped when the capture ends.
//!
//! QEMU's standard input is closed: with `-nographic` it would otherwise put the terminal
//! into raw mode and read the user's keys. Its output goes where pagewire's goes, so give it
//! `-serial file:...` (or `-serial none`) and `-display none`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::qmp::{Qmp, QmpAddr};

/// How long QEMU may take to open its QMP socket.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running QEMU child; killed (if still running) when dropped.
#[derive(Debug)]
pub struct LaunchedQemu {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    command: Vec<String>,
}

impl LaunchedQemu {
    /// Starts `command` (program and arguments) with `-qmp unix:SOCKET,server=on,wait=off`
    /// appended.
    pub fn spawn(command: &[String]) -> Result<Self> {
        let Some(program) = command.first() else {
            bail!("--launch needs a QEMU command after `--`, e.g. -- qemu-system-x86_64 -accel tcg ...");
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("pagewire-qemu-{}-{nanos:09}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let socket = dir.join("qmp.sock");
        let mut full: Vec<String> = command.to_vec();
        full.push("-qmp".into());
        full.push(format!("unix:{},server=on,wait=off", socket.display()));
        let child = Command::new(program)
            .args(&full[1..])
            .stdin(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                // `ignore`: best-effort cleanup of an empty folder.
                let _ = fs::remove_dir_all(&dir);
                return Err(e).with_context(|| format!("cannot start {program}"));
            }
        };
        Ok(LaunchedQemu {
            child,
            dir,
            socket,
            command: full,
        })
    }

    /// The command line QEMU was started with (including the added `-qmp`).
    pub fn command(&self) -> &[String] {
        &self.command
    }

    /// Connects to QEMU's QMP socket once it is up, or fails if QEMU exits first or
    /// [`STARTUP_TIMEOUT`] passes.
    pub fn connect(&mut self, timeout: Duration) -> Result<Qmp> {
        let child = &mut self.child;
        connect_when_up(&self.socket, timeout, STARTUP_TIMEOUT, || {
            let status = child.try_wait().ok()??;
            Some(format!(
                "QEMU exited ({status}) before its QMP socket came up; see its messages above"
            ))
        })
    }

    /// Asks QEMU to quit over `qmp` and waits up to `timeout` for it to exit; kills it if it
    /// does not.
    pub fn quit(mut self, qmp: Option<&mut Qmp>, timeout: Duration) {
        if let Some(q) = qmp {
            // `ignore`: QEMU may close the socket before it replies, and is killed below if
            // it does not exit.
            let _ = q.execute("quit", None);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // Drop kills it.
    }
}

impl Drop for LaunchedQemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // `ignore`: it may exit on its own in between.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Connects to the QMP socket at `path` of a QEMU that is starting, with `reply_timeout` for
/// each reply: retries every 50 ms until the socket answers, `startup` passes, or `exited`
/// returns the error to report because QEMU is gone.
pub fn connect_when_up(
    path: &Path,
    reply_timeout: Duration,
    startup: Duration,
    mut exited: impl FnMut() -> Option<String>,
) -> Result<Qmp> {
    let addr = QmpAddr::Unix(path.to_path_buf());
    let deadline = Instant::now() + startup;
    loop {
        if let Some(error) = exited() {
            bail!("{error}");
        }
        if path.exists() {
            if let Ok(q) = Qmp::connect(&addr, reply_timeout) {
                return Ok(q);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "QEMU did not open its QMP socket {} within {} s",
                path.display(),
                startup.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}
