//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use pagewire_runner::vmm::{kvm_available, GuestSpec, GuestWorkload, Vm};

pub const MIB: usize = 1 << 20;
pub const WAIT: Duration = Duration::from_secs(30);

/// True when KVM works here; otherwise prints `SKIPPED:` and the reason.
pub fn kvm_or_skip() -> bool {
    match kvm_available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

/// A booted, running guest that has done a few rounds.
pub fn running_vm(mib: usize, vcpus: usize, w: GuestWorkload, seed: u64) -> Vm {
    let mut vm = Vm::new(mib * MIB, vcpus).unwrap();
    vm.boot(&GuestSpec::new(w, seed)).unwrap();
    vm.start().unwrap();
    vm.wait_for(WAIT, "the guest to boot", |m| {
        m.vcpus
            .iter()
            .all(|v| v.heartbeats.load(Ordering::SeqCst) >= 5)
    })
    .unwrap();
    vm
}

/// The round counters of a paused VM's vCPUs.
pub fn rounds(vm: &Vm) -> Vec<u64> {
    (0..vm.vcpu_count())
        .map(|i| vm.guest_counter(i, pagewire_runner::vmm::program::off::ROUND))
        .collect()
}

/// Checks that an arrived VM carries on from where the source stopped and passes its own
/// self-check.
pub fn check_arrived(vm: &Vm, source_rounds: &[u64]) {
    vm.wait_for(WAIT, "heartbeats at the destination", |m| {
        m.vcpus
            .iter()
            .all(|v| v.heartbeats.load(Ordering::SeqCst) >= 3)
    })
    .unwrap();
    for (i, v) in vm.monitor().vcpus.iter().enumerate() {
        let hb = v.last_heartbeat.load(Ordering::SeqCst);
        assert!(
            hb > source_rounds[i] & 0xffff_ffff,
            "vCPU {i}: heartbeat {hb} does not continue from round {}",
            source_rounds[i]
        );
        assert!(
            !v.booted.load(Ordering::SeqCst),
            "vCPU {i} started over instead of carrying on"
        );
    }
    assert!(
        vm.self_check(WAIT).unwrap(),
        "the migrated guest's self-check failed"
    );
}

/// Builds the offload firmware (once per test binary); `None` after printing `SKIPPED:`
/// and the reason where it does not build.
pub fn firmware() -> Option<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-example");
        let out = Command::new(env!("CARGO"))
            .current_dir(&dir)
            .args(["build", "--release", "-p", "pagewire-fw-linux"])
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .map_err(|e| format!("cannot run cargo to build the firmware: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the firmware does not build here: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join(" | ")
            ));
        }
        Ok(dir.join("target/release/pagewire-fw"))
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            println!("SKIPPED: {why}");
            None
        }
    }
}

/// Checks that a migration with automatic compression switched LZ4 exactly as its rule says
/// on the iterations it measured (the rule itself is unit-tested in `migrate::compress`).
pub fn assert_follows_auto(report: &pagewire_runner::migrate::MigrationReport) {
    let mut auto = pagewire_runner::migrate::AutoLz4::default();
    let rows = &report.rows;
    let seen: Vec<_> = rows
        .iter()
        .map(|r| {
            format!(
                "{}:{:.2}/{:.2}s:{}",
                r.pages_sent, r.encoder_s, r.seconds, r.lz4
            )
        })
        .collect();
    eprintln!("pages:encoder/iteration seconds:LZ4 per iteration: {seen:?}");
    for (k, r) in rows.iter().enumerate() {
        assert_eq!(
            r.lz4,
            auto.on(),
            "iteration {} ran with LZ4 {}, the rule says {}: {rows:?}",
            r.iteration,
            r.lz4,
            auto.on()
        );
        if k + 1 < rows.len() {
            auto.next(r.pages_sent, r.seconds, r.encoder_s);
        }
    }
}
