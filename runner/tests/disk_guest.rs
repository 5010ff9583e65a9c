//! The disk guest (`machine::disk_guest`): Debian's kernel boots a small initramfs that
//! mounts an ext4 root disk and switches to it; the workload writes files to the disk and
//! reads them back from it; once QEMU is gone the disk checks clean (`e2fsck`) and every
//! file matches the md5 the guest recorded. Skipped (with the reason) where QEMU, the
//! kernel or e2fsprogs cannot be had.

mod guest;

use std::time::Duration;

use pagewire_runner::machine::disk_guest::{self, check_recorded_files, fsck};
use pagewire_runner::machine::{Machine, Start, Workload};

#[test]
fn the_guest_boots_from_its_root_disk_and_the_disk_checks_clean() {
    let cache = guest::target_dir().join("test-guest");
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("root.raw");
    let image = match disk_guest::build(&cache, Workload::Heartbeat, &disk, 64) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let mut vm = Machine::launch(&image, &work.path().join("vm"), &Start::Boot).unwrap();
    vm.wait_ready(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", vm.console().text()));
    vm.console()
        .wait_for("three passed checks", Duration::from_secs(120), |s| {
            (s.checks_ok.len() >= 3).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e:#}\n{}", vm.console().text()));
    assert!(
        vm.console().failures().is_empty(),
        "{}",
        vm.console().text()
    );
    vm.qmp().unwrap().execute("stop", None).unwrap();
    vm.kill();
    fsck(&disk).unwrap();
    // four reference files and at least the three slots written
    assert!(check_recorded_files(&disk).unwrap() >= 7);
}
