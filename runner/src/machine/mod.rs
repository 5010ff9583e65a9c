//! A real small Linux guest in QEMU, and a pair of QEMUs for its live migration: what
//! `pagewire tunnel demo` and the QEMU tests boot.
//!
//! * [`guest`]: the guest image (Debian's kernel, a busybox initramfs) and its QEMU command
//!   line (TCG, the workload's memory, serial console only), built into a cache folder the
//!   caller names;
//! * [`workload`]: what the guest runs, by name: `heartbeat` (the default), `idle`,
//!   `redis`, `compile`; [`packages`]: a workload's Debian packages and their
//!   dependencies, unpacked into the initramfs;
//! * [`debian`]: QEMU, the kernel and busybox from Debian's packages; [`process`]: helper
//!   programs run within a deadline;
//! * [`disk_guest`]: a guest that boots from an ext4 root disk and writes files to it
//!   (storage migration), and the host's checks of such a disk (`e2fsck`, its manifest);
//! * [`initramfs`]: the guest's `/init`, a workload that rewrites tmpfs files and checks the
//!   ones it wrote earlier, printing heartbeats and checks on the serial console;
//! * [`launch`]: one QEMU (booting, or waiting for an incoming migration, optionally
//!   paused), killed when dropped; a source and destination pair;
//! * [`console`]: the serial console read as it arrives: heartbeats, checks, failures, the
//!   pause the guest saw;
//! * [`migration`]: QEMU's own migration over QMP (start, wait, QEMU's figures);
//! * [`memory`]: both machines' RAM through `pmemsave`, compared page by page.

pub mod console;
pub mod debian;
pub mod disk_guest;
pub mod guest;
pub mod initramfs;
pub mod launch;
pub mod memory;
pub mod migration;
pub mod packages;
pub mod process;
pub mod workload;

pub use console::{guest_pause, Beat, CheckFailure, Console, Gap, WaitError};
pub use guest::{GuestImage, Unavailable, MEM_MIB, ROOT_NODE};
pub use initramfs::{CHECK, HEARTBEAT, READY, WORKLOAD_TEXT};
pub use launch::{Machine, MigrationPair, Start};
pub use memory::{compare_machines, Comparison};
pub use migration::{
    migrate, run_state, stop_and_arrival, stop_to_arrival, wait_incoming, wait_listening,
    wait_migration, MigrationOutcome,
};
pub use workload::Workload;
