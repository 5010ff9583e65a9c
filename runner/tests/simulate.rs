//! The migration simulator: its guest model, the pre-copy loop's accounting, the codec and
//! policy comparison, the group run, and the command line.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use pagewire::policy::{Decision, IterationReport, PolicyKind, StopPolicy};
use pagewire::Config;
use pagewire_runner::simulate::guest::Guest;
use pagewire_runner::simulate::{
    run_group, run_one, CodecMode, LinkModel, Migration, Sender, SimOptions, SyntheticTimeline,
    Timeline,
};
use pagewire_runner::Workload;

/// 16 pages; every interval of 1 s rewrites pages 0..4 with a new fill byte.
struct Toy {
    image: Vec<u8>,
    step: u8,
}

impl Toy {
    fn new() -> Self {
        Toy {
            image: vec![0; 16 * 4096],
            step: 0,
        }
    }
}

impl Timeline for Toy {
    fn name(&self) -> &str {
        "toy"
    }
    fn page_size(&self) -> usize {
        4096
    }
    fn mem_bytes(&self) -> usize {
        self.image.len()
    }
    fn interval_s(&self, _k: usize) -> f64 {
        1.0
    }
    fn reset(&mut self) -> Result<()> {
        *self = Toy::new();
        Ok(())
    }
    fn image(&self) -> &[u8] {
        &self.image
    }
    fn step(&mut self) -> Result<Vec<u64>> {
        self.step += 1;
        self.image[..4 * 4096].fill(self.step);
        Ok(vec![0, 1, 2, 3])
    }
}

fn link() -> LinkModel {
    LinkModel {
        bytes_per_s: 1e6,
        rtt_s: 0.01,
        window_bytes: 1e9,
    }
}

#[test]
fn guest_writes_spread_over_the_interval_and_dirty_log_clears() {
    let mut toy = Toy::new();
    let mut g = Guest::start(&mut toy).unwrap();
    assert_eq!(g.pages(), 16);
    g.run_until(0.1).unwrap(); // first write lands at 1/8 s
    assert!(g.take_dirty().is_empty());
    assert_eq!(g.page(0)[0], 0);
    g.run_until(0.999).unwrap();
    assert_eq!(g.take_dirty(), vec![0, 1, 2, 3]);
    assert!(
        (0..4).all(|p| g.page(p)[0] == 1),
        "all writes of interval 0 applied"
    );
    assert!(g.take_dirty().is_empty(), "the log clears");
    g.run_until(2.5).unwrap();
    assert_eq!(g.take_dirty(), vec![0, 1, 2, 3]);
    assert_eq!(g.page(4)[0], 0, "untouched pages keep their content");
}

/// Stops after a fixed number of iterations, recording what it was told.
struct After(u32, Vec<IterationReport>);

impl StopPolicy for After {
    fn decide(&mut self, r: &IterationReport) -> Decision {
        self.1.push(*r);
        if r.iteration >= self.0 {
            Decision::StopAndCopy
        } else {
            Decision::Continue
        }
    }
    fn name(&self) -> &'static str {
        "after"
    }
}

#[test]
fn migration_time_and_downtime_follow_the_bytes() {
    let mut toy = Toy::new();
    let guest = Guest::start(&mut toy).unwrap();
    let sender = Sender::new(CodecMode::None, Config::DEFAULT, &mut []).unwrap();
    let mut policy = After(2, Vec::new());
    let r = Migration::new(guest, sender, link())
        .run(&mut policy)
        .unwrap();
    let page = 4096.0 + 8.0;
    // iteration 1: all 16 pages, then one round trip
    let t1 = 16.0 * page / 1e6 + 0.01;
    assert!((r.rows[0].seconds - t1).abs() < 1e-9);
    assert_eq!(policy.1[0].pages_sent, 16);
    assert_eq!(policy.1[0].pages_dirtied, 0, "no write before 1/8 s");
    assert_eq!(r.iterations, 2);
    assert_eq!(r.rows.len(), 3);
    let last = r.rows.last().unwrap();
    assert!((r.downtime_s - (last.sent as f64 * page / 1e6 + 0.01)).abs() < 1e-9);
    assert!((r.total_s - r.rows.iter().map(|i| i.seconds).sum::<f64>()).abs() < 1e-9);
    assert_eq!(r.bytes, r.rows.iter().map(|i| i.bytes).sum::<u64>());
    assert_eq!(
        r.bytes as f64,
        (16 + r.rows[1].sent + last.sent) as f64 * page
    );
}

fn small_opts() -> SimOptions {
    SimOptions {
        link: LinkModel {
            bytes_per_s: 2e6,
            rtt_s: 0.02,
            window_bytes: 4.0 * 1048576.0,
        },
        codec: Config {
            cache_pages: 2048,
            ..Config::DEFAULT
        },
        smart_window: 5,
        downtime_limit_ms: 300,
    }
}

#[test]
fn the_codec_cuts_bytes_and_time_under_every_policy() {
    let mut w = SyntheticTimeline::new(Workload::Compile, 8 << 20, 3).unwrap();
    let opts = small_opts();
    for policy in PolicyKind::ALL {
        let none = run_one(&mut w, policy, CodecMode::None, &opts).unwrap();
        let all = run_one(&mut w, policy, CodecMode::All, &opts).unwrap();
        assert!(
            all.bytes * 2 < none.bytes,
            "{policy:?}: {} vs {}",
            all.bytes,
            none.bytes
        );
        assert!(all.total_s < none.total_s, "{policy:?}");
        assert!(all.iterations <= 30 && none.iterations <= 30);
        // the same run twice gives the same answer (the workload restarts from its seed)
        assert_eq!(run_one(&mut w, policy, CodecMode::All, &opts).unwrap(), all);
    }
}

#[test]
fn synchronized_arrival_brings_the_stop_and_copies_together() {
    let opts = small_opts();
    let mut members: Vec<Box<dyn Timeline>> = vec![
        Box::new(SyntheticTimeline::new(Workload::Idle, 2 << 20, 1).unwrap()),
        Box::new(SyntheticTimeline::new(Workload::Database, 16 << 20, 2).unwrap()),
    ];
    let alone = run_group(&mut members, CodecMode::All, &opts, false).unwrap();
    let together = run_group(&mut members, CodecMode::All, &opts, true).unwrap();
    assert!(
        alone.final_start_spread_s > 1.0,
        "alone: {}",
        alone.final_start_spread_s
    );
    // within one iteration of the member that finished last
    let big = &together.members[1].result;
    let last_iteration = big.rows[big.rows.len() - 2].seconds;
    assert!(
        together.final_start_spread_s <= last_iteration,
        "together: spread {} > one iteration {}",
        together.final_start_spread_s,
        last_iteration
    );
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pagewire"))
}

#[test]
fn cli_writes_table_plots_and_json() {
    let out = tempfile::tempdir().unwrap();
    let json = out.path().join("sim.json");
    let o = bin()
        .args([
            "simulate",
            "--workload",
            "idle,hot-set",
            "--mem-mib",
            "4",
            "--bandwidth",
            "20mbit",
            "--rtt",
            "5ms",
        ])
        .arg("--out")
        .arg(out.path())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("workload hot-set")
            && stdout.contains("smart-stop + all vs xen-classic + none")
    );
    assert!(stdout.contains("synchronized arrival"));
    for f in [
        "remaining-idle.svg",
        "combinations-idle.svg",
        "remaining-hot-set.svg",
    ] {
        let svg = std::fs::read_to_string(out.path().join(f)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("smart-stop"), "{f}");
    }
    // The combinations' legend names every codec setting.
    let svg = std::fs::read_to_string(out.path().join("combinations-hot-set.svg")).unwrap();
    for codec in ["none", "xbzrle (qemu)", "cbr only", "all"] {
        assert!(
            svg.contains(&format!("\n{codec}\n</text>")),
            "legend: {codec}"
        );
    }
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 2 * 4 * 4);
    assert_eq!(v["groups"].as_array().unwrap().len(), 2);
}

#[test]
fn cli_rejects_bad_links_and_workloads() {
    for (args, want) in [
        (vec!["--bandwidth", "fast"], "bandwidth"),
        (vec!["--rtt", "3 fortnights"], "duration"),
        (vec!["--workload", "bitcoin"], "unknown workload"),
    ] {
        let o = bin().arg("simulate").args(&args).output().unwrap();
        assert!(!o.status.success());
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(want), "{args:?}: {e}");
    }
}

fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces")
}

#[test]
fn real_trace_simulates() {
    let trace = traces_dir().join("idle-128m");
    let have_zstd = Command::new("zstd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !trace.join("manifest.json").is_file() || !have_zstd {
        println!(
            "SKIPPED: simulation on a real trace: needs {} and the zstd command",
            trace.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("python3")
        .arg(traces_dir().join("expand.py"))
        .arg(&trace)
        .arg(dir.path())
        .args(["--last", "2"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut w = pagewire_runner::simulate::SnapshotTimeline::open(dir.path()).unwrap();
    let opts = SimOptions {
        link: LinkModel {
            bytes_per_s: 12.5e6,
            rtt_s: 0.02,
            window_bytes: 4.0 * 1048576.0,
        },
        ..small_opts()
    };
    let none = run_one(&mut w, PolicyKind::SmartStop, CodecMode::None, &opts).unwrap();
    let all = run_one(&mut w, PolicyKind::SmartStop, CodecMode::All, &opts).unwrap();
    assert_eq!(none.rows[0].sent, 32768);
    assert!(
        all.bytes < none.bytes / 2,
        "{} vs {}",
        all.bytes,
        none.bytes
    );
}

#[test]
fn the_xbzrle_row_sends_what_qemu_sends() {
    let cfg = Config {
        cache_pages: 16,
        ..Config::DEFAULT
    };
    let mut storage =
        vec![0u8; pagewire_runner::simulate::sender::storage_len(CodecMode::Xbzrle, cfg)];
    let mut s = Sender::new(CodecMode::Xbzrle, cfg, &mut storage).unwrap();
    let mut page = vec![7u8; 4096];
    // first pass: QEMU sends every non-zero page raw and caches nothing
    assert_eq!(s.page(3, &page).unwrap(), 8 + 4096);
    assert_eq!(s.page(4, &[0; 4096]).unwrap(), 8 + 1, "a zero page");
    assert_eq!(s.end_iteration().unwrap(), 0);
    // second pass: a miss, sent raw and cached
    page[100] = 1;
    assert_eq!(s.page(3, &page).unwrap(), 8 + 4096);
    s.end_iteration().unwrap();
    // third pass: a hit, one changed byte as an XBZRLE delta (flag, length, 3 bytes)
    page[100] = 2;
    assert_eq!(s.page(3, &page).unwrap(), 8 + 1 + 2 + 3);
    // unchanged since it was cached: nothing
    assert_eq!(s.page(3, &page).unwrap(), 0);
    assert_eq!(s.finish().unwrap(), 0);
}
