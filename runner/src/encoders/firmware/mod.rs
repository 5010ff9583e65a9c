//! The offload firmware as the runner's encoder: starts the firmware process
//! (`firmware-example`, binary `pagewire-fw`), shares a memory region with it through a
//! file both map, feeds it pages through the submission ring and collects the stream from
//! the completions (`pagewire::offload::Host` does the protocol). A watchdog turns a
//! firmware that stops making progress into [`FailureKind::Hung`], a firmware process that
//! dies into [`FailureKind::Crashed`].

use std::fmt;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pagewire::offload::layout::{flags, status};
use pagewire::offload::{DeviceState, Host, RegionParams};
use pagewire::{Config, EncoderStats, Features};

use super::stream::StreamEncoder;
use region::SharedRegion;

mod region;

/// Environment variable naming the firmware binary.
pub const FIRMWARE_ENV: &str = "PAGEWIRE_FIRMWARE";

/// Where `cargo build --release` in `firmware-example/` puts the firmware.
pub fn default_firmware_path() -> PathBuf {
    if let Some(p) = std::env::var_os(FIRMWARE_ENV) {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-example/target/release/pagewire-fw")
}

/// How to run the firmware.
#[derive(Debug, Clone)]
pub struct FirmwareOptions {
    /// The firmware binary.
    pub binary: PathBuf,
    /// Longest wait for the firmware to make progress before it counts as hung.
    pub timeout: Duration,
    /// Ring and area sizes of the shared region.
    pub params: RegionParams,
    /// Extra firmware arguments (its fault injection: `--crash-after N`, `--hang-after N`).
    pub extra_args: Vec<String>,
}

impl FirmwareOptions {
    /// The binary at `binary`, a 10 s watchdog, default ring sizes.
    pub fn new(binary: PathBuf) -> Self {
        FirmwareOptions {
            binary,
            timeout: Duration::from_secs(10),
            params: RegionParams::DEFAULT,
            extra_args: Vec::new(),
        }
    }
}

/// How the firmware failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The process could not be started or refused the region.
    Start,
    /// The process died (signal or exit status) before finishing the stream.
    Crashed,
    /// No progress within the watchdog timeout; the process was killed.
    Hung,
    /// The process broke the protocol, or reported the region broken.
    Protocol,
}

/// A firmware failure, inside the `anyhow::Error` the encoder calls return.
#[derive(Debug, Clone)]
pub struct FirmwareFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl fmt::Display for FirmwareFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FailureKind::Start => "the offload firmware did not start",
            FailureKind::Crashed => "the offload firmware crashed",
            FailureKind::Hung => "the offload firmware hung",
            FailureKind::Protocol => "the offload firmware broke the ring protocol",
        };
        write!(f, "{what}: {}", self.message)
    }
}

impl std::error::Error for FirmwareFailure {}

/// The firmware process as a [`StreamEncoder`].
pub struct FirmwareEncoder {
    /// Borrows `region`: declared before it, so it is dropped first.
    host: Host<'static>,
    region: SharedRegion,
    child: Option<Child>,
    page_size: usize,
    timeout: Duration,
    stats: EncoderStats,
    failed: Option<FirmwareFailure>,
    chunk: Vec<u8>,
    said: String,
    /// LZ4 as the region header set it, for the whole stream.
    lz4: bool,
}

impl FirmwareEncoder {
    /// Sets up the region for `cfg` (every feature on), starts the firmware on it and
    /// waits until it has attached.
    pub fn start(cfg: Config, opts: &FirmwareOptions) -> Result<Self> {
        Self::start_with(cfg, Features::ALL, opts)
    }

    /// As [`FirmwareEncoder::start`], with these encoder features.
    pub fn start_with(cfg: Config, features: Features, opts: &FirmwareOptions) -> Result<Self> {
        let header = opts
            .params
            .header(&cfg, features)
            .map_err(|e| anyhow::anyhow!("offload region: {e}"))?;
        let region = SharedRegion::create(header.region_len as usize)?;
        // SAFETY: the slice borrows the mapping owned by `region`, which moves into the
        // returned struct together with `host` and is dropped after it (field order), so
        // the borrow never outlives the mapping; the mapping's address does not change
        // when `region` moves.
        let words: &'static [AtomicU32] =
            unsafe { std::slice::from_raw_parts(region.words().as_ptr(), region.words().len()) };
        let host = Host::create(words, &header).map_err(|e| anyhow::anyhow!("{e}"))?;
        let path = region.path.clone().unwrap_or_default();
        let child = Command::new(&opts.binary)
            .arg(&path)
            .args(&opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| FirmwareFailure {
                kind: FailureKind::Start,
                message: format!(
                    "cannot run {}: {e} (build it with `cargo build --release` in firmware-example/, or point {FIRMWARE_ENV} or --firmware at it)",
                    opts.binary.display()
                ),
            })?;
        let mut fw = FirmwareEncoder {
            host,
            region,
            child: Some(child),
            page_size: cfg.page_size as usize,
            timeout: opts.timeout,
            stats: EncoderStats::default(),
            failed: None,
            chunk: Vec::new(),
            said: String::new(),
            lz4: cfg.lz4,
        };
        fw.wait_attached()?;
        fw.region.unlink();
        Ok(fw)
    }

    /// What the firmware wrote to stderr, once it has exited cleanly after `finish`.
    pub fn firmware_output(&self) -> &str {
        &self.said
    }

    /// The firmware process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn wait_attached(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut wait = Backoff::default();
        loop {
            match self.host.device_state() {
                (Some(DeviceState::Running), _) => return Ok(()),
                (Some(DeviceState::Init), _) => {}
                (state, code) => {
                    self.let_it_exit();
                    return Err(self.fail(
                        FailureKind::Start,
                        format!("device state {state:?}, error code {code}"),
                    ));
                }
            }
            self.check_alive(FailureKind::Start)?;
            if start.elapsed() > self.timeout {
                return Err(self.fail(
                    FailureKind::Hung,
                    format!("it did not attach within {:?}", self.timeout),
                ));
            }
            wait.wait();
        }
    }

    /// A firmware that reports a failure in the region then writes its reason to stderr and
    /// exits: wait for that (a second at most) before `fail` kills it, or the reason is cut
    /// off mid-line.
    fn let_it_exit(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Records a failure, stops the process and returns the error.
    fn fail(&mut self, kind: FailureKind, message: String) -> anyhow::Error {
        let mut message = message;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let err = child_stderr(&mut child);
            if !err.is_empty() {
                message = format!("{message}; it said: {err}");
            }
        }
        let f = FirmwareFailure { kind, message };
        self.failed = Some(f.clone());
        f.into()
    }

    /// Fails if the process has exited: as `kind` (Start while attaching, else Crashed).
    fn check_alive(&mut self, kind: FailureKind) -> Result<()> {
        let Some(child) = self.child.as_mut() else {
            return Err(self.dead());
        };
        if let Some(st) = child.try_wait().context("waiting for the firmware")? {
            return Err(self.fail(kind, describe(st)));
        }
        Ok(())
    }

    fn dead(&self) -> anyhow::Error {
        match &self.failed {
            Some(f) => f.clone().into(),
            None => FirmwareFailure {
                kind: FailureKind::Protocol,
                message: "the firmware is no longer running".into(),
            }
            .into(),
        }
    }

    /// Copies every published completion's bytes to `out`. Returns how many it took.
    fn collect(&mut self, out: &mut Vec<u8>) -> Result<usize> {
        let mut n = 0;
        loop {
            let c = match self.host.peek_completion() {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => return Err(self.fail(FailureKind::Protocol, e.to_string())),
            };
            if c.status != status::OK {
                return Err(self.fail(
                    FailureKind::Protocol,
                    format!(
                        "descriptor {} rejected with status {} (detail {})",
                        c.seq, c.status, c.detail
                    ),
                ));
            }
            self.chunk.resize(c.out_len as usize, 0);
            self.host.read_output(&c, &mut self.chunk);
            out.extend_from_slice(&self.chunk);
            self.host.release(&c);
            n += 1;
        }
        if self.host.outstanding() == 0 {
            // the device wrote the counters before the last completion: exact now
            self.stats = self.host.stats();
        }
        Ok(n)
    }

    /// Waits until the firmware publishes at least one more completion (or `until` holds),
    /// collecting output; the watchdog and the process status turn into errors.
    fn wait_progress(&mut self, out: &mut Vec<u8>, until: impl Fn(&Self) -> bool) -> Result<()> {
        let start = Instant::now();
        let mut wait = Backoff::default();
        loop {
            if self.collect(out)? > 0 || until(self) {
                return Ok(());
            }
            if let (Some(DeviceState::Failed), code) = self.host.device_state() {
                self.let_it_exit();
                return Err(self.fail(
                    FailureKind::Protocol,
                    format!("the device reported the region broken (code {code})"),
                ));
            }
            self.check_alive(FailureKind::Crashed)?;
            if start.elapsed() > self.timeout {
                let beat = self.host.heartbeat();
                return Err(self.fail(
                    FailureKind::Hung,
                    format!(
                        "no completion for {:?} with {} descriptors outstanding (heartbeat {beat}); killed it",
                        self.timeout,
                        self.host.outstanding()
                    ),
                ));
            }
            wait.wait();
        }
    }

    /// Submits with `submit` once there is room, collecting output meanwhile.
    fn submit(
        &mut self,
        out: &mut Vec<u8>,
        mut submit: impl FnMut(&mut Host<'static>) -> Result<bool, pagewire::offload::OffloadError>,
    ) -> Result<()> {
        if self.child.is_none() {
            return Err(self.dead());
        }
        loop {
            match submit(&mut self.host) {
                Ok(true) => return Ok(()),
                Ok(false) => self.wait_progress(out, |_| false)?,
                Err(e) => return Err(self.fail(FailureKind::Protocol, e.to_string())),
            }
        }
    }

    /// Submits `op` and waits until every completion is in.
    fn op_and_drain(&mut self, op: u32, out: &mut Vec<u8>) -> Result<()> {
        self.submit(out, |h| h.submit_op(op))?;
        while self.host.outstanding() > 0 {
            self.wait_progress(out, |s| s.host.outstanding() == 0)?;
        }
        Ok(())
    }
}

impl StreamEncoder for FirmwareEncoder {
    fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if page.len() != self.page_size {
            anyhow::bail!(
                "page of {} bytes where the stream's page_size is {}",
                page.len(),
                self.page_size
            );
        }
        self.submit(out, |h| h.submit_page(pfn, page))?;
        self.collect(out)?;
        Ok(())
    }

    fn append_blob(&mut self, tag: u32, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if data.len() > self.page_size {
            // the caller's mistake, not the firmware's: refuse before it reaches the ring
            anyhow::bail!(
                "blob of {} bytes: the offload ring carries at most a page ({}) per blob",
                data.len(),
                self.page_size
            );
        }
        self.submit(out, |h| h.submit_blob(tag, data))?;
        self.collect(out)?;
        Ok(())
    }

    fn end_iteration(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.op_and_drain(flags::END_ITERATION, out)
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.op_and_drain(flags::FINISH, out)?;
        // the firmware exits after FINISH: reap it, and make sure it ended cleanly
        let start = Instant::now();
        let mut wait = Backoff::default();
        while let Some(child) = self.child.as_mut() {
            if let Some(st) = child.try_wait().context("waiting for the firmware")? {
                // keep what it said (e.g. its --stack-report line)
                self.said = child_stderr(child);
                self.child = None;
                if !st.success() {
                    return Err(FirmwareFailure {
                        kind: FailureKind::Crashed,
                        message: format!("after the end of the stream: {}", describe(st)),
                    }
                    .into());
                }
                break;
            }
            if start.elapsed() > self.timeout {
                return Err(self.fail(
                    FailureKind::Hung,
                    "it did not exit after the end of the stream".into(),
                ));
            }
            wait.wait();
        }
        Ok(())
    }

    fn stats(&self) -> EncoderStats {
        self.stats
    }

    fn set_lz4(&mut self, _on: bool) -> bool {
        // the firmware reads the codec settings once, from the region header
        self.lz4
    }

    fn lz4(&self) -> bool {
        self.lz4
    }
}

impl Drop for FirmwareEncoder {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.host.request_stop();
            let deadline = Instant::now() + Duration::from_millis(200);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spin, then yield, then sleep: quick when the other side is quick, cheap when it is not.
#[derive(Default)]
struct Backoff(u32);

impl Backoff {
    fn wait(&mut self) {
        self.0 = self.0.saturating_add(1);
        match self.0 {
            0..64 => std::hint::spin_loop(),
            64..512 => std::thread::yield_now(),
            _ => std::thread::sleep(Duration::from_micros(50)),
        }
    }
}

/// "killed by signal 6 (SIGABRT)" or "exit status 2".
fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (_, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        (Some(code), None) => format!("exited with status {code}"),
        _ => st.to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGBUS => " (SIGBUS)",
        _ => "",
    }
}

/// What the firmware wrote to stderr (it writes little: one line on failure).
fn child_stderr(child: &mut Child) -> String {
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s.trim().replace('\n', "; ")
}
