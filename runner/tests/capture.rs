//! `pagewire trace capture` against a real QEMU guest (Debian kernel, busybox initramfs,
//! booted under TCG): a full capture that `pagewire replay` verifies, a capture cut short by
//! QEMU dying, and a capture that launches QEMU itself.
//!
//! Where QEMU or the Debian packages cannot be had, each test prints `SKIPPED: <reason>` on
//! stderr and passes.

mod guest;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use guest::{Guest, MEM_MIB, WORKLOAD_TEXT};
use pagewire_runner::SnapshotDir;

const MEM_BYTES: u64 = MEM_MIB << 20;
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// One guest at a time: two TCG guests on two cores would slow each other's boot.
static ONE_VM: Mutex<()> = Mutex::new(());

/// The guest, or `None` after printing why the test is skipped.
fn guest_or_skip(test: &str) -> Option<Guest> {
    match guest::guest() {
        Ok(g) => Some(g),
        Err(why) => {
            // Straight to stderr: the test harness would swallow println! of a passing test.
            let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {why}");
            None
        }
    }
}

fn pagewire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pagewire"))
}

/// The latest workload round found in a snapshot: the largest `<n>` of the
/// `pagewire-workload-<n>` lines that occur at least 1000 times (a round writes about 50,000
/// of them; a line cut at a page boundary and followed by unrelated digits in the physically
/// next page occurs once or twice).
fn last_round(image: &[u8]) -> Option<u64> {
    let pat = WORKLOAD_TEXT.as_bytes();
    let mut counts = std::collections::HashMap::<u64, usize>::new();
    let mut at = 0;
    while let Some(i) = image[at..].windows(pat.len()).position(|w| w == pat) {
        let digits = &image[at + i + pat.len()..];
        let n = digits
            .iter()
            .take(12)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if let Some(round) = std::str::from_utf8(&digits[..n])
            .ok()
            .and_then(|d| d.parse().ok())
        {
            *counts.entry(round).or_default() += 1;
        }
        at += i + pat.len();
    }
    counts
        .into_iter()
        .filter(|&(_, c)| c >= 1000)
        .map(|(round, _)| round)
        .max()
}

fn no_part_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".part") && !name.ends_with(".tmp"),
            "{name} left behind"
        );
    }
}

#[test]
fn captures_a_running_guest_and_replay_verifies_it() {
    let Some(g) = guest_or_skip("capture of a real QEMU guest") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let vm = guest::boot(&g, tmp.path());
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    let booted = t0.elapsed();

    let series = tmp.path().join("series");
    let out = guest::run_bounded(
        pagewire()
            .args(["trace", "capture", "--qmp"])
            .arg(vm.qmp_path())
            .arg("--out")
            .arg(&series)
            .args([
                "--interval-ms",
                "1000",
                "--count",
                "3",
                "--warmup-ms",
                "1000",
            ])
            .args(["--workload", "busybox-tmpfs"])
            .args(["--description", "busybox sh rewriting 1 MiB tmpfs files"]),
        Duration::from_secs(60),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "capture failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("captured 3 snapshots of 128 MiB"),
        "{stdout}"
    );
    no_part_files(&series);

    // The manifest is what replay reads, plus what the capture knew.
    let dir = SnapshotDir::open(&series).unwrap();
    let m = dir.manifest();
    assert_eq!(
        (m.page_size, m.mem_bytes, m.interval_ms),
        (4096, MEM_BYTES, 1000)
    );
    assert_eq!(
        m.snapshots,
        ["snap-000.raw", "snap-001.raw", "snap-002.raw"]
    );
    assert_eq!(m.workload.as_deref(), Some("busybox-tmpfs"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(series.join("manifest.json")).unwrap()).unwrap();
    assert!(json["qemu_version"].as_str().unwrap().starts_with("QEMU "));
    assert!(json["date"].as_str().unwrap().ends_with('Z'));
    assert_eq!(json["warmup_ms"], 1000);
    let pauses = json["pause_ms"].as_array().unwrap();
    assert_eq!(pauses.len(), 3);
    assert!(pauses.iter().all(|p| p.as_f64().unwrap() > 0.0));

    // Real guest memory, taken while the guest ran: every snapshot differs, and the
    // workload's round counter, found in guest RAM, went up between snapshots (round 0:
    // the first round had not written much yet; it runs about 10 rounds a second).
    let images: Vec<Vec<u8>> = (0..3)
        .map(|i| std::fs::read(dir.snapshot_path(i)).unwrap())
        .collect();
    for img in &images {
        assert_eq!(img.len() as u64, MEM_BYTES);
    }
    assert_ne!(images[0], images[1]);
    assert_ne!(images[1], images[2]);
    let rounds: Vec<u64> = images
        .iter()
        .map(|img| last_round(img).unwrap_or(0))
        .collect();
    assert!(
        rounds[0] < rounds[1] && rounds[1] < rounds[2],
        "workload rounds {rounds:?}"
    );
    let captured = t0.elapsed();

    let out = guest::run_bounded(
        pagewire().arg("replay").arg(&series),
        Duration::from_secs(120),
    )
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("verified: every page delivered matched"),
        "{stdout}"
    );
    eprintln!(
        "booted in {:.1} s, captured by {:.1} s, replayed by {:.1} s; workload rounds {rounds:?}",
        booted.as_secs_f64(),
        captured.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn qemu_dying_mid_capture_keeps_the_complete_snapshots() {
    let Some(g) = guest_or_skip("capture cut short by QEMU exiting") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let mut vm = guest::boot(&g, tmp.path());
    vm.wait_ready(BOOT_TIMEOUT).unwrap();

    let series = tmp.path().join("series");
    let mut capture = pagewire()
        .args(["trace", "capture", "--qmp"])
        .arg(vm.qmp_path())
        .arg("--out")
        .arg(&series)
        .args(["--interval-ms", "300", "--count", "100"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the first snapshot is listed, QEMU "crashes".
    let deadline = Instant::now() + Duration::from_secs(30);
    while !series.join("manifest.json").exists() {
        assert!(Instant::now() < deadline, "no snapshot within 30 s");
        assert!(capture.try_wait().unwrap().is_none(), "capture ended early");
        thread::sleep(Duration::from_millis(20));
    }
    vm.kill();

    let deadline = Instant::now() + Duration::from_secs(30);
    while capture.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = capture.kill();
            panic!("capture did not notice QEMU's exit within 30 s");
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = capture.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("QEMU closed the QMP connection"),
        "{stderr}"
    );
    assert!(stderr.contains("which was not kept"), "{stderr}");
    assert!(stderr.contains("lists only those"), "{stderr}");
    no_part_files(&series);
    let dir = SnapshotDir::open(&series).unwrap();
    let n = dir.manifest().snapshots.len();
    assert!((1..100).contains(&n), "{n} snapshots listed");
    assert!(
        stderr.contains(&format!("keeps the {n} complete snapshot(s)")),
        "{stderr}"
    );
    let raws = std::fs::read_dir(&series)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".raw")
        })
        .count();
    assert_eq!(raws, n, "snapshot files on disk vs listed");
}

#[test]
fn launch_starts_and_stops_qemu() {
    let Some(g) = guest_or_skip("capture with --launch") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let series = tmp.path().join("series");
    let serial = tmp.path().join("serial.log");
    let out = guest::run_bounded(
        pagewire()
            .args(["trace", "capture", "--launch", "--out"])
            .arg(&series)
            .args([
                "--interval-ms",
                "500",
                "--count",
                "2",
                "--warmup-ms",
                "1000",
            ])
            .arg("--")
            .arg(&g.qemu)
            .args(g.qemu_args(&serial)),
        Duration::from_secs(60),
    )
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "capture failed: {stderr}");

    // QEMU ran (it wrote its serial log), and no process with this test's paths is left.
    assert!(serial.exists(), "QEMU never ran");
    let ours = tmp.path().to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&ours),
            "QEMU (pid {:?}) still runs after the capture",
            e.file_name()
        );
    }

    let dir = SnapshotDir::open(&series).unwrap();
    assert_eq!(dir.manifest().snapshots.len(), 2);
    assert_eq!(dir.manifest().mem_bytes, MEM_BYTES);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(series.join("manifest.json")).unwrap()).unwrap();
    let cmd: Vec<&str> = json["qemu_command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(cmd.contains(&"-qmp") && cmd.contains(&"-kernel"), "{cmd:?}");
    let a = std::fs::read(dir.snapshot_path(0)).unwrap();
    let b = std::fs::read(dir.snapshot_path(1)).unwrap();
    assert_ne!(a, b, "the guest ran between the snapshots");
}
