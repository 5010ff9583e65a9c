//! Gives the shared library its versioned SONAME (`libpagewire.so.<ABI>`), so programs link
//! against the ABI version rather than a file name.

/// Must equal `PAGEWIRE_ABI_VERSION` in `src/defines.rs` (a test checks the SONAME).
const ABI_VERSION: u32 = 1;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libpagewire.so.{ABI_VERSION}");
    }
}
