//! The comparison harness end to end on a small synthetic series: every codec's output must
//! decode back to the source pages (the harness fails otherwise), and the report must hold
//! what docs/PERFORMANCE.md reads from it.

use std::process::Command;

#[test]
fn compare_round_trips_every_codec_and_reports_the_targets() {
    let dir = std::env::temp_dir().join(format!("pagewire-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_compare"))
        // six passes: QEMU's XBZRLE sends the first pass raw and caches pages from the
        // second, so its deltas start with the third
        .args([
            "--synthetic-mib",
            "8",
            "--passes",
            "6",
            "--zero-mib",
            "16",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "compare failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // all eight targets are judged, the four LZ4 ones next to what LZ4 alone reaches
    let targets: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("] ") && l.trim_start().starts_with('['))
        .collect();
    assert_eq!(targets.len(), 8, "{stdout}");
    assert!(
        targets.iter().any(|l| l.contains("two lanes encode")),
        "{stdout}"
    );
    assert_eq!(
        targets.iter().filter(|l| l.contains("in place")).count(),
        3,
        "{stdout}"
    );
    assert_eq!(
        targets
            .iter()
            .filter(|l| l.contains("(LZ4 alone: "))
            .count(),
        4,
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["codec"] == name)
            .unwrap_or_else(|| panic!("no row {name}"))
    };
    let later_ratio = |name: &str| row(name)["later_passes"]["ratio_percent"].as_f64().unwrap();
    assert_eq!(later_ratio("memcpy (ceiling)"), 100.0);
    // XBZRLE keeps its cache across passes, as QEMU does: later passes send deltas, not
    // every page raw (the harness once rebuilt it every pass)
    assert!(later_ratio("xbzrle (QEMU-style)") < 60.0);
    // pagewire's later passes are smaller than XBZRLE's on the synthetic series
    assert!(later_ratio("pagewire all, no LZ4") < later_ratio("xbzrle (QEMU-style)"));
    // decoding in place sends the same stream as through a cache copy
    for setting in ["pagewire all + LZ4", "pagewire all, no LZ4"] {
        let in_place = format!("{setting}, in place");
        assert_eq!(
            row(setting)["all_passes"]["wire_bytes"],
            row(&in_place)["all_passes"]["wire_bytes"]
        );
    }
    for r in rows {
        for part in ["all_passes", "later_passes"] {
            let gb = r[part]["encode_gb_s"].as_f64().unwrap();
            assert!(gb > 0.0 && gb.is_finite(), "{}: {part} {gb}", r["codec"]);
        }
    }
    // `auto` on every link of the per-link table, with one lane and two, against the best
    // other row
    let by_link = report["auto_by_link"].as_array().unwrap();
    assert_eq!(by_link.len(), 8, "{by_link:?}");
    let lanes: Vec<u64> = by_link
        .iter()
        .map(|a| a["lanes"].as_u64().unwrap())
        .collect();
    assert_eq!(lanes, [1, 2, 1, 2, 1, 2, 1, 2]);
    for a in by_link {
        let other = a["best_other"].as_str().unwrap();
        assert!(rows.iter().any(|r| r["codec"] == other), "{a}");
        assert_ne!(other, "memcpy (ceiling)");
        for gb in [&a["auto_gb_s"], &a["best_other_gb_s"]] {
            let gb = gb.as_f64().unwrap();
            assert!(gb > 0.0 && gb.is_finite(), "{a}");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
