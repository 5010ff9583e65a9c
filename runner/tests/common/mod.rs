//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::sync::atomic::Ordering;
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
