//! The offload firmware as the runner's encoder: byte-identical streams, crash and hang
//! detection, fallback. The firmware is built here (`cargo build --release` in
//! firmware-example/); where that is impossible the tests print SKIPPED and the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::firmware;

use pagewire::{Config, DecodeMode, EncoderStats};
use pagewire_runner::encoders::{
    EncoderChoice, FailureKind, FirmwareEncoder, FirmwareFailure, FirmwareOptions,
    InProcessEncoder, StreamEncoder,
};
use pagewire_runner::replay::{replay_with, ReplayProgress};
use pagewire_runner::PassReport;
use pagewire_runner::SnapshotSource;
use pagewire_runner::{SyntheticParams, SyntheticSeries};

/// A small cache (evictions happen) and small frames (many frames).
const CFG: Config = Config {
    cache_pages: 256,
    frame_bytes: 16384,
    ..Config::DEFAULT
};

/// 8 MiB of synthetic memory (2048 pages), 4 snapshots.
fn series(seed: u64) -> SyntheticSeries {
    series_of(8, seed)
}

fn series_of(mib: usize, seed: u64) -> SyntheticSeries {
    let params = SyntheticParams {
        mem_bytes: mib << 20,
        snapshots: 4,
        ..SyntheticParams::default()
    };
    SyntheticSeries::new(params, seed).unwrap()
}

/// Sends every pass of `s` (changed pages only after the first) through `enc`; returns the
/// stream, the encoder's counters and the pages sent.
fn encode_series(
    enc: &mut dyn StreamEncoder,
    s: &mut SyntheticSeries,
) -> anyhow::Result<(Vec<u8>, EncoderStats, u64)> {
    let ps = s.page_size();
    let mut prev = vec![0u8; s.mem_bytes()];
    let mut cur = vec![0u8; s.mem_bytes()];
    let mut wire = Vec::new();
    let mut sent = 0;
    for pass in 0..s.snapshots() {
        s.read(pass, &mut cur)?;
        for p in 0..cur.len() / ps {
            let page = &cur[p * ps..(p + 1) * ps];
            if pass == 0 || page != &prev[p * ps..(p + 1) * ps] {
                enc.encode_page(p as u64, page, &mut wire)?;
                sent += 1;
            }
        }
        enc.end_iteration(&mut wire)?;
        std::mem::swap(&mut prev, &mut cur);
    }
    enc.finish(&mut wire)?;
    Ok((wire, enc.stats(), sent))
}

fn failure(e: &anyhow::Error) -> &FirmwareFailure {
    e.downcast_ref::<FirmwareFailure>()
        .unwrap_or_else(|| panic!("not a firmware failure: {e:#}"))
}

fn alive(pid: u32) -> bool {
    // a zombie would still show in /proc; FirmwareEncoder reaps what it kills
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn firmware_stream_is_byte_identical_to_the_in_process_stream() {
    let Some(fw) = firmware() else { return };
    // a cache of half the memory: hits, deltas and evictions all happen
    let half = Config {
        cache_pages: 2048,
        ..CFG
    };
    for cfg in [half, Config { lz4: false, ..half }] {
        let mut inproc = InProcessEncoder::new(cfg).unwrap();
        let (want, want_stats, sent) = encode_series(&mut inproc, &mut series_of(16, 7)).unwrap();
        let mut firmware = FirmwareEncoder::start(cfg, &FirmwareOptions::new(fw.clone())).unwrap();
        let pid = firmware.pid().unwrap();
        let (got, got_stats, _) = encode_series(&mut firmware, &mut series_of(16, 7)).unwrap();
        assert!(sent > 4000, "only {sent} pages");
        assert_eq!(got.len(), want.len(), "stream lengths (lz4 {})", cfg.lz4);
        assert!(got == want, "the streams differ (lz4 {})", cfg.lz4);
        assert_eq!(got_stats, want_stats);
        assert!(want_stats.cache_hits > 0 && want_stats.delta_uses > 0);
        assert!(!alive(pid), "the firmware exits after FINISH");
    }
}

#[derive(Default)]
struct Record(Vec<(usize, String)>);

impl ReplayProgress for Record {
    fn fell_back(&mut self, pass: usize, why: &str) {
        self.0.push((pass, why.to_string()));
    }
    fn pass_done(&mut self, _row: &PassReport) {}
}

#[test]
fn replay_through_the_firmware_verifies_and_matches_in_process() {
    let Some(fw) = firmware() else { return };
    let inproc = replay_with(
        &mut series(3),
        CFG,
        DecodeMode::InPlace,
        &EncoderChoice::InProcess,
        false,
        &mut (),
    )
    .unwrap();
    let opts = FirmwareOptions::new(fw);
    let offload = replay_with(
        &mut series(3),
        CFG,
        DecodeMode::InPlace,
        &EncoderChoice::Firmware(opts),
        false,
        &mut (),
    )
    .unwrap();
    assert!(offload.verified);
    assert_eq!(
        offload.total.counts.wire_bytes,
        inproc.total.counts.wire_bytes
    );
    assert_eq!(offload.total.counts.pages, inproc.total.counts.pages);
    let rows = |r: &pagewire_runner::ReplayReport| {
        r.passes
            .iter()
            .map(|p| (p.counts.pages, p.counts.wire_bytes))
            .collect::<Vec<_>>()
    };
    assert_eq!(rows(&offload), rows(&inproc));
}

#[test]
fn a_crash_is_detected_and_named() {
    let Some(fw) = firmware() else { return };
    let mut opts = FirmwareOptions::new(fw);
    opts.extra_args = vec!["--crash-after".into(), "700".into()];
    let mut enc = FirmwareEncoder::start(CFG, &opts).unwrap();
    let pid = enc.pid().unwrap();
    let t = Instant::now();
    let e = encode_series(&mut enc, &mut series(1)).unwrap_err();
    let f = failure(&e);
    assert_eq!(f.kind, FailureKind::Crashed, "{e:#}");
    assert!(f.message.contains("SIGABRT"), "{}", f.message);
    assert!(
        f.message.contains("--crash-after 700"),
        "its stderr is reported: {}",
        f.message
    );
    assert!(t.elapsed() < Duration::from_secs(5), "noticed quickly");
    assert!(!alive(pid));
    // the encoder stays failed
    let e2 = enc.encode_page(0, &[0; 4096], &mut Vec::new()).unwrap_err();
    assert_eq!(failure(&e2).kind, FailureKind::Crashed);
}

#[test]
fn a_killed_firmware_is_detected() {
    let Some(fw) = firmware() else { return };
    let mut enc = FirmwareEncoder::start(CFG, &FirmwareOptions::new(fw)).unwrap();
    let pid = enc.pid().unwrap();
    let mut out = Vec::new();
    for pfn in 0..100u64 {
        enc.encode_page(pfn, &[pfn as u8; 4096], &mut out).unwrap();
    }
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let e = (0..100_000u64)
        .find_map(|pfn| enc.encode_page(pfn, &[1; 4096], &mut out).err())
        .expect("the dead firmware stops taking pages");
    let f = failure(&e);
    assert_eq!(f.kind, FailureKind::Crashed);
    assert!(f.message.contains("SIGKILL"), "{}", f.message);
}

#[test]
fn a_hang_is_caught_by_the_watchdog() {
    let Some(fw) = firmware() else { return };
    let mut opts = FirmwareOptions::new(fw);
    opts.extra_args = vec!["--hang-after".into(), "300".into()];
    opts.timeout = Duration::from_millis(300);
    let mut enc = FirmwareEncoder::start(CFG, &opts).unwrap();
    let pid = enc.pid().unwrap();
    let t = Instant::now();
    let e = encode_series(&mut enc, &mut series(1)).unwrap_err();
    let f = failure(&e);
    assert_eq!(f.kind, FailureKind::Hung, "{e:#}");
    assert!(
        f.message.contains("no completion for 300ms"),
        "{}",
        f.message
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(!alive(pid), "the hung firmware was killed and reaped");
}

#[test]
fn with_fallback_the_replay_finishes_in_process() {
    let Some(fw) = firmware() else { return };
    let inproc = replay_with(
        &mut series(5),
        CFG,
        DecodeMode::InPlace,
        &EncoderChoice::InProcess,
        false,
        &mut (),
    )
    .unwrap();
    // pass 0 is 2048 pages and one END_ITERATION: crash inside pass 1
    let mut opts = FirmwareOptions::new(fw);
    opts.extra_args = vec!["--crash-after".into(), "2100".into()];
    let choice = EncoderChoice::Firmware(opts);

    let e = replay_with(
        &mut series(5),
        CFG,
        DecodeMode::InPlace,
        &choice,
        false,
        &mut (),
    )
    .unwrap_err();
    assert_eq!(
        failure(&e).kind,
        FailureKind::Crashed,
        "without --fallback it fails"
    );

    let mut rec = Record::default();
    let r = replay_with(
        &mut series(5),
        CFG,
        DecodeMode::CacheCopy,
        &choice,
        true,
        &mut rec,
    )
    .unwrap();
    assert!(r.verified, "every page verified after the fallback");
    assert_eq!(rec.0.len(), 1);
    assert_eq!(rec.0[0].0, 1, "fell back in pass 1");
    assert!(rec.0[0].1.contains("crashed"), "{}", rec.0[0].1);
    assert_eq!(r.total.counts.pages, inproc.total.counts.pages);
    // pass 0 came from the firmware, unchanged
    assert_eq!(
        r.passes[0].counts.wire_bytes,
        inproc.passes[0].counts.wire_bytes
    );
}

#[test]
fn a_configuration_too_big_for_the_firmware_is_refused_at_start() {
    let Some(fw) = firmware() else { return };
    let cfg = Config {
        cache_pages: 1 << 17, // 512 MiB of cache: more than the firmware's static storage
        ..Config::DEFAULT
    };
    let e = FirmwareEncoder::start(cfg, &FirmwareOptions::new(fw))
        .err()
        .unwrap();
    let f = failure(&e);
    assert_eq!(f.kind, FailureKind::Start);
    assert!(f.message.contains("storage too small"), "{}", f.message);
}

#[test]
fn the_firmware_measures_its_stack() {
    let Some(fw) = firmware() else { return };
    // default frames (64 KiB): the largest LZ4 hash table on the stack
    let cfg = Config {
        cache_pages: 1024,
        ..Config::DEFAULT
    };
    let mut opts = FirmwareOptions::new(fw);
    opts.extra_args = vec!["--stack-report".into()];
    let mut enc = FirmwareEncoder::start(cfg, &opts).unwrap();
    encode_series(&mut enc, &mut series(2)).unwrap();
    let said = enc.firmware_output();
    let bytes: usize = said
        .split("stack_max_bytes=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no stack report in {said:?}"));
    println!("host firmware (x86_64 Linux), 64 KiB frames: stack_max_bytes={bytes}");
    assert!(bytes > 1024 && bytes < 200 << 10, "{bytes}");
}

#[test]
fn a_firmware_that_exits_at_start_is_a_start_failure() {
    let Some(fw) = firmware() else { return };
    let mut opts = FirmwareOptions::new(fw);
    opts.extra_args = vec!["--no-such-option".into()];
    let e = FirmwareEncoder::start(CFG, &opts).err().unwrap();
    let f = failure(&e);
    assert_eq!(f.kind, FailureKind::Start);
    assert!(
        f.message.contains("exited with status 2") && f.message.contains("--no-such-option"),
        "{}",
        f.message
    );
}

/// `pagewire replay` with the given extra arguments on 8 MiB of synthetic memory.
fn replay_cmd(extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pagewire"))
        .args([
            "replay",
            "--synthetic-mib",
            "8",
            "--snapshots",
            "3",
            "--cache-mib",
            "4",
        ])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn the_replay_command_encodes_with_the_firmware_and_falls_back() {
    let Some(fw) = firmware() else { return };
    let fw = fw.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let total = |name: &str, extra: &[&str]| {
        let json = dir.path().join(name);
        let mut args = vec!["--json", json.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = replay_cmd(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        assert!(stdout.contains("verified"), "{stdout}");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        (v["total"]["wire_bytes"].clone(), stderr)
    };
    let (inproc, _) = total("in.json", &[]);
    let (offload, _) = total("fw.json", &["--encoder", "firmware", "--firmware", fw]);
    assert!(inproc.as_u64().unwrap() > 0);
    assert_eq!(offload, inproc, "same wire bytes");

    let crash = [
        "--encoder",
        "firmware",
        "--firmware",
        fw,
        "--firmware-arg=--crash-after",
    ];
    let out = replay_cmd(&[&crash[..], &["--firmware-arg=2100"]].concat());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("crashed") && err.contains("SIGABRT"), "{err}");

    let args = [&crash[..], &["--firmware-arg=2100", "--fallback"]].concat();
    let (_, stderr) = total("fallback.json", &args);
    assert!(
        stderr.contains("falling back to the in-process encoder"),
        "{stderr}"
    );

    let out = replay_cmd(&["--fallback"]);
    assert!(!out.status.success(), "--fallback alone is refused");
}

#[test]
fn a_missing_binary_says_how_to_build_it() {
    let opts = FirmwareOptions::new(PathBuf::from("/nonexistent/pagewire-fw"));
    let e = FirmwareEncoder::start(CFG, &opts).err().unwrap();
    let f = failure(&e);
    assert_eq!(f.kind, FailureKind::Start);
    assert!(f.message.contains("cargo build --release"), "{}", f.message);
}
