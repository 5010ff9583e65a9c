//! Puts memory.x where cortex-m-rt's link.x finds it, and links with link.x, for the Arm
//! target only (on the host this crate builds a stub).

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    if !std::env::var("TARGET")
        .unwrap_or_default()
        .starts_with("thumb")
    {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
}
