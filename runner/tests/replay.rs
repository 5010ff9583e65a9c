//! End-to-end tests of `pagewire replay`: the library on the synthetic series, on a snapshot
//! folder written here and on the real traces (when present), and the binary's errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pagewire::Config;
use pagewire_runner::{replay, SnapshotDir, SyntheticParams, SyntheticSeries};

const PAGE: usize = 4096;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pagewire"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run the pagewire binary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a manifest and the snapshot files `images` into `dir`.
fn write_series(dir: &Path, images: &[Vec<u8>]) {
    let names: Vec<String> = (0..images.len())
        .map(|i| format!("snap-{i:03}.raw"))
        .collect();
    for (name, img) in names.iter().zip(images) {
        std::fs::write(dir.join(name), img).unwrap();
    }
    let manifest = serde_json::json!({
        "workload": "test",
        "page_size": PAGE,
        "mem_bytes": images[0].len(),
        "interval_ms": 100,
        "snapshots": names,
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

/// Three snapshots of 32 pages: zero, text, repeated and random pages, then small edits, a
/// page zeroed, a page copied and a page rewritten.
fn tiny_series() -> Vec<Vec<u8>> {
    let pages = 32;
    let mut a = vec![0u8; pages * PAGE];
    let mut x = 0x1234_5678_9abc_def0u64;
    for p in 0..pages {
        let page = &mut a[p * PAGE..(p + 1) * PAGE];
        match p % 4 {
            0 => {}
            1 => page.copy_from_slice(&b"hello pagewire ".repeat(PAGE / 15 + 1)[..PAGE]),
            2 => {
                for b in page.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            _ => page.fill(p as u8),
        }
    }
    let mut b = a.clone();
    b[2 * PAGE + 17] ^= 0xff; // small edit of a random page
    b[3 * PAGE..4 * PAGE].fill(0); // freed
    let (src, dst) = (6 * PAGE, 8 * PAGE);
    b.copy_within(src..src + PAGE, dst); // copied
    let mut c = b.clone();
    for (i, byte) in c[10 * PAGE..11 * PAGE].iter_mut().enumerate() {
        *byte = (i * 7) as u8; // rewritten
    }
    c[31 * PAGE + 4095] = 1;
    vec![a, b, c]
}

#[test]
fn synthetic_series_verifies_and_compresses() {
    let mut s = SyntheticSeries::new(SyntheticParams::default(), 1).unwrap();
    let r = replay(&mut s, Config::DEFAULT, &mut ()).unwrap();
    assert!(r.verified);
    assert_eq!(r.passes.len(), 8);
    assert_eq!(r.passes[0].counts.pages, 16384);
    let t = &r.total.counts;
    assert!(t.pages > 16384);
    assert!(t.zero > 0 && t.dup > 0 && t.delta > 0 && t.blocks > 0 && t.raw > 0);
    let ratio = r.total.ratio_percent.unwrap();
    assert!(ratio < 100.0, "wire/raw {ratio}%");
    assert_eq!(
        r.passes.iter().map(|p| p.counts.wire_bytes).sum::<u64>(),
        t.wire_bytes
    );
}

#[test]
fn snapshot_folder_verifies() {
    let dir = tempfile::tempdir().unwrap();
    write_series(dir.path(), &tiny_series());
    let mut src = SnapshotDir::open(dir.path()).unwrap();
    let cfg = Config {
        cache_pages: 64,
        ..Config::DEFAULT
    };
    let r = replay(&mut src, cfg, &mut ()).unwrap();
    assert!(r.verified);
    let pages: Vec<u64> = r.passes.iter().map(|p| p.counts.pages).collect();
    assert_eq!(pages, [32, 3, 2]);
    assert_eq!(r.interval_ms, Some(100));
    assert!(r.total.counts.wire_bytes < r.total.counts.raw_bytes);
}

#[test]
fn cli_replays_a_folder_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    write_series(dir.path(), &tiny_series());
    let json = dir.path().join("report.json");
    let o = run(&[
        "replay",
        dir.path().to_str().unwrap(),
        "--cache-mib",
        "1",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("wire/raw") && table.contains("total"),
        "{table}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["verified"], true);
    assert_eq!(v["passes"].as_array().unwrap().len(), 3);
    assert_eq!(v["total"]["pages"], 37);
    assert_eq!(v["config"]["cache_pages"], 256);
}

#[test]
fn cli_synthetic_with_options() {
    let o = run(&[
        "replay",
        "--synthetic-mib",
        "4",
        "--snapshots",
        "3",
        "--no-lz4",
        "--blocks",
        "8",
        "--frame-kib",
        "32",
        "--delta-threshold",
        "1024",
        "--decoder",
        "cache-copy",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("8 blocks/page") && table.contains("LZ4 off"),
        "{table}"
    );
    assert!(table.contains("decoder: cache copy"), "{table}");

    let o = run(&["replay", "--synthetic-mib", "4", "--snapshots", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains("decoder: in place"),
        "in place by default: {table}"
    );
}

/// Runs the binary on `dir` and returns its stderr, asserting it failed.
fn fails(args: &[&str]) -> String {
    let o = run(args);
    assert!(!o.status.success(), "expected failure for {args:?}");
    assert_ne!(o.status.code(), Some(101), "panicked: {}", stderr(&o));
    stderr(&o)
}

#[test]
fn cli_rejects_bad_folders_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = d.to_str().unwrap();
    let good = tiny_series();

    // no manifest at all
    let e = fails(&["replay", ds]);
    assert!(e.contains("manifest.json"), "{e}");

    // not JSON
    std::fs::write(d.join("manifest.json"), "{ nope").unwrap();
    let e = fails(&["replay", ds]);
    assert!(e.contains("not a valid series manifest"), "{e}");

    // missing field
    std::fs::write(
        d.join("manifest.json"),
        r#"{"page_size":4096,"interval_ms":1,"snapshots":["a"]}"#,
    )
    .unwrap();
    let e = fails(&["replay", ds]);
    assert!(e.contains("missing field `mem_bytes`"), "{e}");

    // missing file
    write_series(d, &good);
    std::fs::remove_file(d.join("snap-001.raw")).unwrap();
    let e = fails(&["replay", ds]);
    assert!(e.contains("snapshot 1 (snap-001.raw) not found"), "{e}");

    // wrong size
    write_series(d, &good);
    std::fs::write(d.join("snap-002.raw"), vec![0u8; 5000]).unwrap();
    let e = fails(&["replay", ds]);
    assert!(e.contains("snap-002.raw) is 5000 bytes"), "{e}");

    // page size mismatch with --page-size
    write_series(d, &good);
    let e = fails(&["replay", ds, "--page-size", "8192"]);
    assert!(e.contains("--page-size 8192 does not match"), "{e}");

    // a page size the codec does not support
    let manifest = serde_json::json!({
        "page_size": 2048, "mem_bytes": good[0].len(), "interval_ms": 1,
        "snapshots": ["snap-000.raw"],
    });
    std::fs::write(d.join("manifest.json"), manifest.to_string()).unwrap();
    let e = fails(&["replay", ds]);
    assert!(e.contains("page_size must be a power of two"), "{e}");
}

#[test]
fn cli_bad_options_give_the_codec_message() {
    for (args, want) in [
        (
            &["--blocks", "3"][..],
            "blocks_per_page must be 1, 2, 4 or 8",
        ),
        (
            &["--blocks", "70000"][..],
            "blocks_per_page must be 1, 2, 4 or 8",
        ),
        (
            &["--cache-mib", "0"][..],
            "cache_pages must be from 1 to 2^26",
        ),
        (
            &["--frame-kib", "1"][..],
            "frame_bytes must hold one page record",
        ),
        (
            &["--delta-threshold", "5000"][..],
            "delta_threshold must not exceed page_size",
        ),
        (
            &["--page-size", "3000"][..],
            "page_size must be a power of two",
        ),
    ] {
        let mut all = vec!["replay", "--synthetic-mib", "1", "--snapshots", "2"];
        all.extend_from_slice(args);
        let e = fails(&all);
        assert!(
            e.contains("invalid configuration") && e.contains(want),
            "{args:?}: {e}"
        );
    }
}

fn traces_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces")
}

/// Why the real-trace test cannot run here, if it cannot.
fn trace_skip_reason(trace: &Path) -> Option<String> {
    if !trace.join("manifest.json").is_file() {
        return Some(format!("no trace at {}", trace.display()));
    }
    let zstd_cli = Command::new("zstd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let zstd_py = Command::new("python3")
        .args(["-c", "import zstandard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !zstd_cli && !zstd_py {
        return Some("neither the zstd CLI nor the python module zstandard is available".into());
    }
    None
}

#[test]
fn real_trace_verifies_and_compresses() {
    let trace = traces_dir().join("redis-fill-128m");
    if let Some(why) = trace_skip_reason(&trace) {
        println!("SKIPPED: real trace replay: {why}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = Command::new("python3")
        .arg(traces_dir().join("expand.py"))
        .arg(&trace)
        .arg(out.path())
        .args(["--last", "2"])
        .output()
        .expect("run python3 expand.py");
    assert!(
        o.status.success(),
        "expand.py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut src = SnapshotDir::open(out.path()).unwrap();
    assert_eq!(src.manifest().snapshots.len(), 3);
    let r = replay(&mut src, Config::DEFAULT, &mut ()).unwrap();
    assert!(r.verified);
    let t = &r.total.counts;
    assert!(
        t.wire_bytes < t.raw_bytes,
        "{} >= {}",
        t.wire_bytes,
        t.raw_bytes
    );
    assert!(r.passes[1].counts.pages > 0);
}
