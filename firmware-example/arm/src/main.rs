//! The pagewire offload firmware on an Arm Cortex-M4 (built for `thumbv7em-none-eabihf`,
//! run under `qemu-system-arm -M mps2-an386`). It plays both ends of the offload protocol
//! on one core: the self-test submits the built-in page set through the rings, the device
//! encodes it with its 256 KiB cache, and the digest of the stream goes out over
//! semihosting, to be compared with the digest the host library computes.
//!
//! On any other target this builds a stub that says how to build the real image.

#![cfg_attr(target_arch = "arm", no_std, no_main)]

#[cfg(target_arch = "arm")]
mod firmware;
#[cfg(target_arch = "arm")]
mod stack;

#[cfg(not(target_arch = "arm"))]
fn main() {
    eprintln!(
        "pagewire-fw-arm is firmware: cargo build --release -p pagewire-fw-arm --target thumbv7em-none-eabihf"
    );
    std::process::exit(2);
}
