//! Capture of a snapshot series from a running QEMU guest, through QMP.
//!
//! For each snapshot: `stop`, `pmemsave` of guest physical memory `[0, mem_bytes)` into a
//! `.part` file, `cont`, then let the guest run for the interval. The VM is paused only while
//! its memory is saved, so `interval_ms` is guest running time, as in the project's real
//! traces. A snapshot becomes `snap-NNN.raw` only once QEMU has written all of it, and
//! `manifest.json` is rewritten (atomically) after every snapshot, listing only complete
//! ones: whatever stops a capture, the folder is a valid series that `pagewire replay` reads.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use super::qmp::Qmp;
use crate::series::MANIFEST_FILE;

/// Page size of captured series (x86 guests).
pub const PAGE_SIZE: u64 = 4096;

/// What the manifest says about its interval, for a reader who did not capture it.
pub const INTERVAL_SEMANTICS: &str = "guest running time between snapshots: QMP stop; \
    pmemsave val=0 size=mem_bytes; cont; sleep interval; repeat (the VM is paused only while \
    saving)";

/// What to capture and how.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Output folder: created if missing, must be empty.
    pub out: PathBuf,
    /// Guest running time between snapshots.
    pub interval: Duration,
    /// Number of snapshots.
    pub count: usize,
    /// Bytes of guest physical memory to save, from address 0; `None` asks QEMU for its
    /// base memory size.
    pub mem_bytes: Option<u64>,
    /// Guest running time before the first snapshot (say, to let a workload warm up).
    pub warmup: Duration,
    /// Short name of the workload, for the manifest.
    pub workload: Option<String>,
    /// What ran in the guest, for the manifest.
    pub description: Option<String>,
    /// The QEMU command line, when pagewire started QEMU itself.
    pub qemu_command: Option<Vec<String>>,
}

/// Told how a capture advances (the command line draws a progress bar with it).
pub trait CaptureProgress {
    /// The capture starts: `count` snapshots of `mem_bytes` each.
    fn started(&mut self, _count: usize, _mem_bytes: u64) {}
    /// The VM is about to be paused for snapshot `i`.
    fn saving(&mut self, _i: usize) {}
    /// Snapshot `i` is complete; the VM was paused for `pause`.
    fn saved(&mut self, _i: usize, _pause: Duration) {}
}

impl CaptureProgress for () {}

/// A finished capture.
#[derive(Debug, Clone)]
pub struct CaptureReport {
    /// The series folder (absolute).
    pub dir: PathBuf,
    /// Bytes per snapshot.
    pub mem_bytes: u64,
    /// QEMU's version, as recorded in the manifest.
    pub qemu_version: String,
    /// How long the VM was paused for each snapshot.
    pub pauses: Vec<Duration>,
}

/// Captures `opts.count` snapshots from the QEMU behind `qmp` into `opts.out`.
///
/// If QEMU goes away or refuses a command mid-capture, the snapshot in progress is removed,
/// the manifest keeps listing the snapshots completed before it, and the error says so.
pub fn capture(
    qmp: &mut Qmp,
    opts: &CaptureOptions,
    progress: &mut dyn CaptureProgress,
) -> Result<CaptureReport> {
    if opts.count == 0 {
        bail!("--count must be at least 1");
    }
    let (qemu_version, mem_bytes) = check_guest(qmp, opts)?;
    let dir = prepare_dir(&opts.out)?;
    let mut series = Series::new(&dir, opts, mem_bytes, &qemu_version);

    progress.started(opts.count, mem_bytes);
    thread::sleep(opts.warmup);
    for i in 0..opts.count {
        if i > 0 {
            thread::sleep(opts.interval);
        }
        progress.saving(i);
        let name = format!("snap-{i:03}.raw");
        let pause = snapshot(qmp, &dir, &name, mem_bytes).map_err(|e| {
            let kept = match i {
                0 => "no snapshot was complete, so no manifest.json was written".to_string(),
                n => format!(
                    "{} keeps the {n} complete snapshot(s) before it, and its {MANIFEST_FILE} \
                     lists only those",
                    dir.display()
                ),
            };
            e.context(format!(
                "capture stopped while taking {name} (snapshot {} of {}), which was not kept; \
                 {kept}",
                i + 1,
                opts.count
            ))
        })?;
        series.names.push(name);
        series.pauses.push(pause);
        series.write()?;
        progress.saved(i, pause);
    }
    Ok(CaptureReport {
        dir,
        mem_bytes,
        qemu_version,
        pauses: series.pauses,
    })
}

/// Checks that the guest runs and how much memory to save; returns QEMU's version and
/// the bytes per snapshot.
fn check_guest(qmp: &mut Qmp, opts: &CaptureOptions) -> Result<(String, u64)> {
    let qemu_version = qemu_version(qmp)?;
    let status = qmp.execute("query-status", None)?;
    if status["running"] != Value::Bool(true) {
        bail!(
            "the VM is not running (QMP query-status: {}); a capture samples a running guest: \
             resume it first (QMP cont)",
            status["status"]
        );
    }
    let mem_bytes = match opts.mem_bytes {
        Some(b) => b,
        None => qmp.execute("query-memory-size-summary", None)?["base-memory"]
            .as_u64()
            .context("QEMU's query-memory-size-summary has no base-memory; pass --mem-bytes")?,
    };
    if mem_bytes == 0 || mem_bytes % PAGE_SIZE != 0 {
        bail!("mem_bytes {mem_bytes} is not a positive multiple of the page size {PAGE_SIZE}");
    }
    Ok((qemu_version, mem_bytes))
}

/// Takes one snapshot into `dir/name` and returns how long the VM was paused.
fn snapshot(qmp: &mut Qmp, dir: &Path, name: &str, mem_bytes: u64) -> Result<Duration> {
    let part = dir.join(format!("{name}.part"));
    let t0 = Instant::now();
    qmp.execute("stop", None)?;
    let saved = save(qmp, &part, mem_bytes);
    // Resume even when the save failed: a capture must not leave the guest paused.
    let resumed = qmp.execute("cont", None);
    let pause = t0.elapsed();
    let kept = saved.and_then(|()| {
        fs::rename(&part, dir.join(name))
            .with_context(|| format!("cannot rename {} to {name}", part.display()))
    });
    if let Err(e) = kept {
        // `ignore`: the file may never have been created.
        let _ = fs::remove_file(&part);
        return Err(match resumed {
            Err(r) if !r.is_connection_lost() => {
                e.context(format!("and the VM may still be paused ({r})"))
            }
            _ => e,
        });
    }
    resumed.map_err(|e| {
        let _ = fs::remove_file(dir.join(name));
        anyhow!(e).context("QEMU did not resume the VM after saving its memory")
    })?;
    Ok(pause)
}

/// `pmemsave` into `path` and check that the file holds all of it.
fn save(qmp: &mut Qmp, path: &Path, mem_bytes: u64) -> Result<()> {
    let filename = path
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", path.display()))?;
    qmp.execute_within(
        "pmemsave",
        Some(json!({ "val": 0, "size": mem_bytes, "filename": filename })),
        save_timeout(mem_bytes),
    )?;
    // QEMU replies once it has written and closed the file.
    let len = fs::metadata(path)
        .with_context(|| {
            format!(
                "QEMU reported pmemsave done, but {} is missing",
                path.display()
            )
        })?
        .len();
    if len != mem_bytes {
        bail!(
            "QEMU's pmemsave wrote {len} bytes to {}, not {mem_bytes} (disk full?)",
            path.display()
        );
    }
    Ok(())
}

/// How long a `pmemsave` may take: a minute, plus a second per 50 MB (a slow disk).
fn save_timeout(mem_bytes: u64) -> Duration {
    Duration::from_secs(60 + mem_bytes / 50_000_000)
}

/// "QEMU 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)" from `query-version`.
fn qemu_version(qmp: &mut Qmp) -> Result<String> {
    let v = qmp.execute("query-version", None)?;
    let q = &v["qemu"];
    let mut s = format!("QEMU {}.{}.{}", q["major"], q["minor"], q["micro"]);
    if let Some(p) = v["package"]
        .as_str()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        s.push_str(&format!(" ({p})"));
    }
    Ok(s)
}

/// Creates the output folder, or checks that it is empty, so a capture never mixes its
/// snapshots with another series. Returns its absolute path (QEMU writes there itself).
fn prepare_dir(out: &Path) -> Result<PathBuf> {
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let dir = fs::canonicalize(out).with_context(|| format!("cannot resolve {}", out.display()))?;
    if fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .next()
        .is_some()
    {
        bail!(
            "{} is not empty; capture into a new or empty folder",
            dir.display()
        );
    }
    Ok(dir)
}

/// The manifest as it grows.
struct Series {
    dir: PathBuf,
    head: Value,
    names: Vec<String>,
    pauses: Vec<Duration>,
}

impl Series {
    /// A series in `dir` with no snapshot yet: the manifest's fields that do not change.
    fn new(dir: &Path, opts: &CaptureOptions, mem_bytes: u64, qemu_version: &str) -> Self {
        let mut series = Series {
            dir: dir.to_path_buf(),
            head: json!({
                "page_size": PAGE_SIZE,
                "mem_bytes": mem_bytes,
                "interval_ms": u64::try_from(opts.interval.as_millis()).unwrap_or(u64::MAX),
                "interval_semantics": INTERVAL_SEMANTICS,
                "warmup_ms": u64::try_from(opts.warmup.as_millis()).unwrap_or(u64::MAX),
                "requested_count": opts.count,
                "date": utc_timestamp(SystemTime::now()),
                "qemu_version": qemu_version,
                "captured_with": concat!("pagewire ", env!("CARGO_PKG_VERSION"), " trace capture"),
            }),
            names: Vec::new(),
            pauses: Vec::new(),
        };
        for (key, val) in [
            ("workload", &opts.workload),
            ("description", &opts.description),
        ] {
            if let Some(v) = val {
                series.head[key] = json!(v);
            }
        }
        if let Some(cmd) = &opts.qemu_command {
            series.head["qemu_command"] = json!(cmd);
        }
        series
    }

    /// Writes `manifest.json` through a temporary file, so a reader never sees half of it.
    fn write(&self) -> Result<()> {
        let mut m = self.head.clone();
        m["snapshot_count"] = json!(self.names.len());
        m["snapshots"] = json!(self.names);
        m["pause_ms"] = json!(self
            .pauses
            .iter()
            .map(|p| (p.as_micros() as f64 / 100.0).round() / 10.0)
            .collect::<Vec<_>>());
        let path = self.dir.join(MANIFEST_FILE);
        let tmp = self.dir.join(format!("{MANIFEST_FILE}.tmp"));
        let mut text = serde_json::to_string_pretty(&m)?;
        text.push('\n');
        fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC), without a date crate.
fn utc_timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps() {
        let at = |s| utc_timestamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_795_327_672), "2026-11-22T06:07:52Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn refuses_a_folder_that_holds_files() {
        let t = tempfile::tempdir().unwrap();
        assert!(prepare_dir(&t.path().join("new")).is_ok());
        fs::write(t.path().join("x"), b"").unwrap();
        let e = prepare_dir(t.path()).unwrap_err().to_string();
        assert!(e.contains("is not empty"), "{e}");
    }
}
