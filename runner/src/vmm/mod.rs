//! A small VMM on the rust-vmm crates: guest memory with KVM dirty logging, vCPUs that start
//! directly in 64-bit user mode (CPL 3, IOPL 3), a generated guest program that writes
//! memory like real programs do and checks its own state, and vCPU state save/restore.
//!
//! * [`asm`]: a tiny x86-64 assembler for the guest program;
//! * [`layout`]: guest physical layout, page tables, GDT/TSS, user-mode registers;
//! * [`memory`]: the guest memory mapping;
//! * [`program`]: the guest program and its port protocol;
//! * [`boot`]: what a fresh guest boots with: vCPU descriptors, the initial memory image;
//! * [`migration`]: the VM as the migration engine's guest, at either end;
//! * [`state`]: vCPU state as a blob for the migration stream;
//! * [`vcpu`]: vCPU threads, pacing, stopping with `immediate_exit` + a signal;
//! * [`vm`]: the VM itself.

pub mod asm;
pub mod boot;
pub mod layout;
pub mod memory;
pub mod migration;
pub mod program;
pub mod state;
pub mod vcpu;
pub mod vm;

pub use boot::GuestSpec;
pub use memory::{GuestMemory, PAGE_SIZE};
pub use migration::Vmm;
pub use state::VcpuState;
pub use vm::{kvm_available, Vm};
