//! What a failure says to a person: `pagewire_result_name` (a result's identifier) and
//! `pagewire_last_error_message` (the detail of the latest failure, formatted into a caller
//! buffer without allocating).

use core::ffi::c_char;
use core::fmt::{self, Write};

use crate::error::{last, set_last, Detail, Res};
use crate::guard::{guard, guard_value};
use crate::pagewire_result;
use crate::ptr::{bytes_mut, Out};

/// The C identifier of result `r` (for example `"PAGEWIRE_CRC_MISMATCH"`), as a static
/// NUL-terminated string; `"PAGEWIRE_UNKNOWN_RESULT"` for a number that is not a result.
/// Never NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn pagewire_result_name(r: u32) -> *const c_char {
    guard_value(c"PAGEWIRE_PANIC".as_ptr(), || {
        pagewire_result::from_u32(r)
            .map_or(c"PAGEWIRE_UNKNOWN_RESULT", pagewire_result::name)
            .as_ptr()
    })
}

impl fmt::Display for Detail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Detail::Codec(e) => write!(f, "{e}"),
            Detail::Null(arg) => write!(f, "argument `{arg}` is NULL"),
            Detail::Text(t) => f.write_str(t),
        }
    }
}

/// Writes as much as fits (keeping room for the NUL) and counts everything.
struct Truncating<'a> {
    buf: &'a mut [u8],
    used: usize,
    total: usize,
}

impl Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(1).saturating_sub(self.used);
        let n = room.min(s.len());
        self.buf[self.used..self.used + n].copy_from_slice(&s.as_bytes()[..n]);
        self.used += n;
        self.total += s.len();
        Ok(())
    }
}

/// Formats `detail` into `buf` (NUL-terminated, truncated like snprintf); returns the full
/// length without the NUL.
pub(crate) fn format_into(detail: Option<Detail>, buf: &mut [u8]) -> usize {
    let mut w = Truncating {
        buf,
        used: 0,
        total: 0,
    };
    if let Some(d) = detail {
        // Truncating never fails, and Display of Detail only fails if the writer does.
        let _ = write!(w, "{d}");
    }
    let used = w.used;
    if let Some(nul) = w.buf.get_mut(used) {
        *nul = 0;
    }
    w.total
}

/// Describes the latest call on this thread that did not return `PAGEWIRE_OK` (for example
/// "frame 7 arrived where frame 5 was expected (lost, replayed or reordered)"); an empty
/// string if there was none. Like `snprintf`: writes at most `buf_len` bytes including the
/// terminating NUL (nothing if `buf_len` is 0) and stores the full length, without the NUL,
/// in `*message_len` if that is not NULL. This call does not change the last error.
/// Thread-safe (the record is per thread).
///
/// # Safety
/// The pointer rules at the top of this header.
#[no_mangle]
pub unsafe extern "C" fn pagewire_last_error_message(
    buf: *mut c_char,
    buf_len: usize,
    message_len: *mut usize,
) -> pagewire_result {
    let detail = last();
    let r = guard(|| -> Res {
        // SAFETY: the caller passes `buf_len` writable bytes at `buf` and a NULL or valid
        // `message_len` (pointer rules).
        let (buf, len_out) = unsafe {
            (
                bytes_mut(buf.cast::<u8>(), buf_len, "buf")?,
                Out::optional(message_len, "message_len")?,
            )
        };
        let total = format_into(detail, buf);
        if let Some(o) = len_out {
            o.write(total);
        }
        Ok(())
    });
    // Asking must not replace what is being asked about.
    if let Some(d) = detail {
        set_last(d);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::ffi::CStr;

    #[test]
    fn every_result_is_named_in_c() {
        for &r in pagewire_result::all() {
            // SAFETY: pagewire_result_name returns a static NUL-terminated string.
            let c = unsafe { CStr::from_ptr(pagewire_result_name(r as u32)) };
            assert_eq!(c, r.name());
            assert_eq!(c.to_str().unwrap(), format!("{r:?}"));
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(pagewire_result_name(12345)) };
        assert_eq!(unknown, c"PAGEWIRE_UNKNOWN_RESULT");
    }

    #[test]
    fn truncates_like_snprintf() {
        let d = Some(Detail::Null("cfg"));
        let mut big = [0xffu8; 64];
        let n = format_into(d, &mut big);
        assert_eq!(&big[..n], b"argument `cfg` is NULL");
        assert_eq!(big[n], 0);
        let mut small = [0xffu8; 5];
        assert_eq!(format_into(d, &mut small), n);
        assert_eq!(&small, b"argu\0");
        assert_eq!(format_into(d, &mut []), n);
        let mut one = [0xffu8; 1];
        format_into(None, &mut one);
        assert_eq!(one, [0]);
    }
}
