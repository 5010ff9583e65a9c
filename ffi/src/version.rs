//! The runtime version, so a program can tell the header it was built with (the
//! `PAGEWIRE_VERSION*` macros, in `defines`) from the library it runs with.

use core::ffi::{c_char, CStr};

use crate::defines::PAGEWIRE_VERSION_NUMBER;
use crate::guard::guard_value;

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
    use crate::defines::{
        PAGEWIRE_VERSION, PAGEWIRE_VERSION_MAJOR, PAGEWIRE_VERSION_MINOR, PAGEWIRE_VERSION_PATCH,
    };

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
