//! The documented network-namespace recipe (`runner/scripts/netns-migrate.sh`): a live
//! migration between two namespaces over a veth pair shaped by the kernel (tc netem; on a
//! kernel without netem, tbf limits the rate and pagewire's shaper adds the delay). Skipped with the reason where `ip netns` is not allowed or /dev/kvm is unusable.

mod common;

use std::process::Command;

fn netns_or_skip() -> bool {
    let name = format!("pwprobe{}", std::process::id());
    let add = Command::new("ip").args(["netns", "add", &name]).output();
    match add {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            let tc = Command::new("tc").arg("-V").output();
            if tc.map(|o| o.status.success()).unwrap_or(false) {
                true
            } else {
                eprintln!("SKIPPED: tc (iproute2) is not installed");
                false
            }
        }
        Ok(o) => {
            eprintln!(
                "SKIPPED: `ip netns add` is not allowed here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            false
        }
        Err(e) => {
            eprintln!("SKIPPED: cannot run `ip` (apt-get install iproute2): {e}");
            false
        }
    }
}

#[test]
fn migration_between_namespaces_over_netem() {
    if !common::kvm_or_skip() || !netns_or_skip() {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/netns-migrate.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(["--json", "--warmup", "0.3"])
        .env("PAGEWIRE", env!("CARGO_BIN_EXE_pagewire"))
        .env("RATE", "200mbit")
        .env("DELAY", "10ms")
        .env("MEM_MIB", "64")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed:\n{stderr}");
    assert!(
        stderr.contains("qdisc netem") || stderr.contains("qdisc tbf"),
        "no kernel shaping reported:\n{stderr}"
    );
    assert!(stderr.contains("self-check OK"), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // the kernel's 10 ms delay is in every iteration's acknowledgement and in the downtime
    assert!(j["downtime_s"].as_f64().unwrap() >= 0.0095, "{j}");
    // the kernel's rate limit holds: no faster than 200 Mbit/s
    let (bytes, total) = (
        j["wire_bytes"].as_f64().unwrap(),
        j["total_s"].as_f64().unwrap(),
    );
    assert!(
        total >= bytes / 25e6 * 0.9,
        "{bytes} bytes in {total} s beat 200 Mbit/s"
    );
    let rows = j["rows"].as_array().unwrap();
    for r in &rows[..rows.len() - 1] {
        assert!(r["seconds"].as_f64().unwrap() >= 0.0095, "{r}");
    }
}
