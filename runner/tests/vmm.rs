//! The VMM on real KVM: the guest boots in user mode, heartbeats arrive, the dirty log sees
//! its writes, and its state moves into a second VM where it carries on and checks itself.
//! Skipped (with the reason) where /dev/kvm cannot be used.

use std::sync::atomic::Ordering;
use std::time::Duration;

use pagewire_runner::vmm::{kvm_available, layout, program::off, GuestSpec, Vm};
use pagewire_runner::Workload;

const MIB: usize = 1 << 20;
const WAIT: Duration = Duration::from_secs(20);

fn kvm_or_skip() -> bool {
    match kvm_available() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            false
        }
    }
}

fn booted_vm(mib: usize, vcpus: usize, w: Workload) -> Vm {
    let mut vm = Vm::new(mib * MIB, vcpus).unwrap();
    vm.boot(&GuestSpec::new(w, 7)).unwrap();
    vm.start().unwrap();
    vm.wait_for(WAIT, "boot", |m| {
        m.vcpus
            .iter()
            .all(|v| v.heartbeats.load(Ordering::SeqCst) >= 5)
    })
    .unwrap();
    vm
}

#[test]
fn guest_runs_in_user_mode_heartbeats_and_checks_itself() {
    if !kvm_or_skip() {
        return;
    }
    let mut vm = booted_vm(64, 2, Workload::HotSet);
    for v in &vm.monitor().vcpus {
        assert!(v.booted.load(Ordering::SeqCst));
    }
    assert!(
        vm.self_check(WAIT).unwrap(),
        "fresh guest fails its self-check"
    );
    // the guest really worked: operations done, rounds counted
    assert!(vm.guest_counter(0, off::OPS) > 0);
    let r0 = vm.guest_counter(1, off::ROUND);
    vm.wait_for(WAIT, "more rounds", |m| {
        m.vcpus[1].last_heartbeat.load(Ordering::SeqCst) > r0 + 3
    })
    .unwrap();
    vm.pause().unwrap();
    assert!(vm.monitor().error().is_none());
}

#[test]
fn dirty_log_reports_written_pages() {
    if !kvm_or_skip() {
        return;
    }
    let mut vm = booted_vm(64, 1, Workload::HotSet);
    vm.take_dirty().unwrap();
    let hb = vm.monitor().heartbeats();
    vm.wait_for(WAIT, "heartbeats", |m| m.heartbeats() >= hb + 20)
        .unwrap();
    vm.pause().unwrap();
    let dirty = vm.take_dirty().unwrap();
    // the state page (counters) and data pages were written
    assert!(dirty.contains(&(layout::state_page(0) / 4096)));
    let data: Vec<_> = dirty
        .iter()
        .filter(|&&p| p >= layout::DATA_BASE / 4096)
        .collect();
    assert!(data.len() >= 10, "only {} data pages dirty", data.len());
    // nothing runs now: the log stays empty
    assert!(vm.take_dirty().unwrap().is_empty());
}

/// Copies memory and vCPU state of a paused VM into a new one.
fn clone_into_new_vm(src: &Vm, mib: usize) -> Vm {
    let dst = Vm::new(mib * MIB, src.vcpu_count()).unwrap();
    let mut page = vec![0u8; 4096];
    for pfn in 0..src.memory().pages() as u64 {
        src.memory().read_page(pfn, &mut page);
        if page.iter().any(|&b| b != 0) {
            dst.memory().write(pfn * 4096, &page);
        }
    }
    dst.restore_state(&src.save_state().unwrap()).unwrap();
    dst
}

#[test]
fn state_moves_into_a_second_vm_and_the_guest_carries_on() {
    if !kvm_or_skip() {
        return;
    }
    let mut a = booted_vm(64, 2, Workload::Compile);
    a.pause().unwrap();
    let last: Vec<u64> = (0..2).map(|i| a.guest_counter(i, off::ROUND)).collect();
    let mut b = clone_into_new_vm(&a, 64);
    assert_eq!(b.memory().digest(), a.memory().digest());
    b.start().unwrap();
    b.wait_for(WAIT, "heartbeats in the new VM", |m| {
        m.vcpus
            .iter()
            .all(|v| v.heartbeats.load(Ordering::SeqCst) >= 3)
    })
    .unwrap();
    // the counters continue where they were, not from zero, and no first boot happened
    for (i, v) in b.monitor().vcpus.iter().enumerate() {
        assert!(v.last_heartbeat.load(Ordering::SeqCst) > last[i]);
        assert!(!v.booted.load(Ordering::SeqCst));
    }
    assert!(
        b.self_check(WAIT).unwrap(),
        "migrated guest fails its self-check"
    );
    b.pause().unwrap();
}

#[test]
fn self_check_catches_a_stale_page() {
    if !kvm_or_skip() {
        return;
    }
    let mut a = booted_vm(64, 1, Workload::HotSet);
    a.pause().unwrap();
    let b = clone_into_new_vm(&a, 64);
    // one data word differs from what the guest wrote
    let addr = layout::DATA_BASE + 4096 * 3 + 16;
    b.memory().write_u64(addr, b.memory().read_u64(addr) ^ 1);
    let mut b = b;
    b.start().unwrap();
    assert!(
        !b.self_check(WAIT).unwrap(),
        "a damaged page went unnoticed"
    );
    b.pause().unwrap();
}
