//! Version macros and the runtime version, so a program can tell the header it was built
//! with from the library it runs with.

use core::ffi::{c_char, CStr};

use crate::guard::guard_value;

/// Major version of this library (from Cargo.toml; a test keeps them equal).
pub const PAGEWIRE_VERSION_MAJOR: u32 = 0;
/// Minor version of this library.
pub const PAGEWIRE_VERSION_MINOR: u32 = 1;
/// Patch version of this library.
pub const PAGEWIRE_VERSION_PATCH: u32 = 0;
/// `(major << 16) | (minor << 8) | patch`, for `#if` comparisons.
pub const PAGEWIRE_VERSION_NUMBER: u32 = 0x00_01_00;
/// The version as a string (the header's `PAGEWIRE_VERSION` macro comes from the trailer in
/// cbindgen.toml, which cbindgen cannot generate; tests/header.rs checks it).
pub const PAGEWIRE_VERSION: &str = "0.1.0";
/// The ABI version: the number in the shared library's SONAME (`libpagewire.so.0`). It
/// changes whenever a change could break a program built against an older header.
pub const PAGEWIRE_ABI_VERSION: u32 = 0;

/// The crate version as a C string, from Cargo.toml.
const VERSION_C: &CStr =
    match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
        Ok(v) => v,
        Err(_) => panic!("the crate version contains a NUL byte"),
    };

/// The library's version ("0.1.0") as a static string. Thread-safe.
#[no_mangle]
pub extern "C" fn pagewire_version() -> *const c_char {
    guard_value(c"?".as_ptr(), || VERSION_C.as_ptr())
}

/// The library's `PAGEWIRE_VERSION_NUMBER`. Thread-safe.
#[no_mangle]
pub extern "C" fn pagewire_version_number() -> u32 {
    guard_value(0, || PAGEWIRE_VERSION_NUMBER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_agree_with_cargo() {
        let num = |s: &str| s.parse::<u32>().unwrap();
        assert_eq!(PAGEWIRE_VERSION_MAJOR, num(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(PAGEWIRE_VERSION_MINOR, num(env!("CARGO_PKG_VERSION_MINOR")));
        assert_eq!(PAGEWIRE_VERSION_PATCH, num(env!("CARGO_PKG_VERSION_PATCH")));
        assert_eq!(PAGEWIRE_VERSION, env!("CARGO_PKG_VERSION"));
        assert_eq!(
            PAGEWIRE_VERSION_NUMBER,
            (PAGEWIRE_VERSION_MAJOR << 16) | (PAGEWIRE_VERSION_MINOR << 8) | PAGEWIRE_VERSION_PATCH
        );
        // SAFETY: a static NUL-terminated string.
        let rt = unsafe { core::ffi::CStr::from_ptr(pagewire_version()) };
        assert_eq!(rt.to_str().unwrap(), PAGEWIRE_VERSION);
        assert_eq!(pagewire_version_number(), PAGEWIRE_VERSION_NUMBER);
    }
}
