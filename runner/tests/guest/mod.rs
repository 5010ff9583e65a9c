//! The small real Linux guest of `pagewire_runner::machine` for the QEMU tests, built once
//! per test process into `target/test-guest/` (so only the first run downloads anything).
//! Anything that cannot be had on this machine is a skip reason, not a failure; a guest
//! that does not boot is a failure.

#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use pagewire_runner::machine::process::run_bounded;
pub use pagewire_runner::machine::{
    GuestImage as Guest, Machine as Vm, Start, HEARTBEAT, MEM_MIB, READY, WORKLOAD_TEXT,
};

/// The guest, built once per test process; `Err` is the reason to skip.
pub fn guest() -> Result<Guest, String> {
    static GUEST: OnceLock<Result<Guest, String>> = OnceLock::new();
    GUEST
        .get_or_init(|| Guest::build(&target_dir().join("test-guest")).map_err(|e| e.0))
        .clone()
}

/// `target/` of this build (the test binary's sibling `pagewire` lives in target/<profile>/).
pub fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_pagewire"));
    bin.parent()
        .and_then(Path::parent)
        .expect("the pagewire binary lives in target/<profile>/")
        .to_path_buf()
}

/// Boots the guest with its QMP socket and serial log in `dir`.
pub fn boot(g: &Guest, dir: &Path) -> Vm {
    Vm::launch(g, dir, &Start::Boot).expect("start qemu-system-x86_64")
}
