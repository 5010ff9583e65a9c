//! Links the firmware binary without the C runtime: our own `_start`, no libc, no libgcc,
//! static and not position-independent (nothing would apply relocations at start-up).
//! Only the binary gets these flags; build scripts and proc macros link normally.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-linux-gnu" || target == "x86_64-unknown-linux-musl" {
        for arg in ["-nostartfiles", "-nostdlib", "-static", "-no-pie"] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
}
