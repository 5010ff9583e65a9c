//! XOR/RLE deltas: the runs where a page (or block) differs from a base, as XOR bytes.
//!
//! Grammar (see `docs/FORMAT.md`): a delta is a sequence of runs, each
//! `skip:varint code:varint xor[len]` with `code = len * 2 + last`. `skip` counts unchanged
//! bytes before the run. Every run has `len >= 1`, except the single run `00 01` of an empty
//! delta. The last run has `last = 1`; bytes after it are unchanged.

use crate::bytes::mismatch;
use crate::error::{Error, Result};
use crate::varint;

/// Two runs closer than this many unchanged bytes are merged: a run header costs at least
/// two bytes, so shorter gaps are cheaper sent as XOR zeros.
const MERGE_GAP: usize = 3;

/// Length of the empty delta (`new` equals `base`).
pub const EMPTY_LEN: usize = 2;

/// Encodes the delta of `new` against `base` (same length) into `out`.
/// Returns its length, or `None` when it would exceed `limit` bytes (or `out`).
pub fn encode(new: &[u8], base: &[u8], out: &mut [u8], limit: usize) -> Option<usize> {
    let n = new.len().min(base.len());
    let limit = limit.min(out.len());
    let mut o = 0usize;
    let mut done = 0usize; // end of the previous run
    let mut pending: Option<(usize, usize)> = None; // (start, end) of a run not yet written
    let mut i = mismatch(new, base, 0);
    while i < n {
        let start = i;
        let mut end = extend(new, base, i + 1, n);
        let next = loop {
            let next = mismatch(new, base, end);
            if next >= n || next - end >= MERGE_GAP {
                break next;
            }
            end = extend(new, base, next + 1, n);
        };
        if let Some((s, e)) = pending.take() {
            o = write_run(new, base, out, limit, o, s - done, s, e, false)?;
            done = e;
        }
        pending = Some((start, end));
        i = next;
    }
    match pending {
        Some((s, e)) => write_run(new, base, out, limit, o, s - done, s, e, true),
        None => {
            if limit < 2 {
                return None;
            }
            out[0] = 0;
            out[1] = 1;
            Some(2)
        }
    }
}

/// End of the run of differing bytes that continues at `from`: the first equal byte, found
/// a word at a time (an equal byte is a zero byte of the XOR).
#[inline]
fn extend(new: &[u8], base: &[u8], mut from: usize, n: usize) -> usize {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while from + 8 <= n {
        let a = u64::from_le_bytes(new[from..from + 8].try_into().unwrap_or([0; 8]));
        let b = u64::from_le_bytes(base[from..from + 8].try_into().unwrap_or([0; 8]));
        let x = a ^ b;
        // the lowest set bit marks the first zero byte exactly (later ones may be false)
        let zero = x.wrapping_sub(LOW) & !x & HIGH;
        if zero != 0 {
            return from + (zero.trailing_zeros() / 8) as usize;
        }
        from += 8;
    }
    while from < n && new[from] != base[from] {
        from += 1;
    }
    from
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn write_run(
    new: &[u8],
    base: &[u8],
    out: &mut [u8],
    limit: usize,
    mut o: usize,
    skip: usize,
    start: usize,
    end: usize,
    last: bool,
) -> Option<usize> {
    let len = end - start;
    let code = (len as u64) * 2 + u64::from(last);
    let need = varint::varint_len(skip as u64) + varint::varint_len(code) + len;
    if o + need > limit {
        return None;
    }
    varint::put(out, &mut o, skip as u64);
    varint::put(out, &mut o, code);
    for ((d, a), b) in out[o..o + len]
        .iter_mut()
        .zip(&new[start..end])
        .zip(&base[start..end])
    {
        *d = a ^ b;
    }
    Some(o + len)
}

/// Checks the delta at the start of `rle` against a target of `len` bytes without applying
/// it. Returns the bytes it occupies.
pub fn check(rle: &[u8], len: usize) -> Result<usize> {
    walk(rle, len, |_, _| {})
}

/// XORs the delta at the start of `rle` into `dst`. Returns the bytes it occupies.
/// On error `dst` may be partly modified; callers check first.
pub fn apply(rle: &[u8], dst: &mut [u8]) -> Result<usize> {
    let len = dst.len();
    walk(rle, len, |at, xor| {
        crate::bytes::xor_into(&mut dst[at..at + xor.len()], xor)
    })
}

#[inline]
fn walk(rle: &[u8], len: usize, mut f: impl FnMut(usize, &[u8])) -> Result<usize> {
    let mut p = 0usize;
    let mut at = 0usize;
    let mut first = true;
    loop {
        let skip = varint::get(rle, &mut p)?;
        let code = varint::get(rle, &mut p)?;
        let run = (code >> 1) as usize;
        let last = code & 1 == 1;
        if run == 0 {
            // only the empty delta `00 01` has an empty run
            if first && last && skip == 0 {
                return Ok(p);
            }
            return Err(Error::BadDelta);
        }
        let start = at.checked_add(usize::try_from(skip).map_err(|_| Error::BadDelta)?);
        let end = start.and_then(|s| s.checked_add(run));
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if e <= len && code >> 1 <= len as u64 => (s, e),
            _ => return Err(Error::BadDelta),
        };
        let bytes = rle.get(p..p + run).ok_or(Error::Truncated)?;
        f(start, bytes);
        p += run;
        at = end;
        if last {
            return Ok(p);
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(new: &[u8], base: &[u8]) -> usize {
        let mut out = [0u8; 10000];
        let n = encode(new, base, &mut out, 10000).unwrap();
        assert_eq!(check(&out[..n], new.len()), Ok(n));
        let mut dst = base.to_vec();
        assert_eq!(apply(&out[..n], &mut dst), Ok(n));
        assert_eq!(dst, new);
        n
    }

    #[test]
    fn unchanged_is_two_bytes() {
        let b = [5u8; 1024];
        assert_eq!(round_trip(&b, &b), 2);
    }

    #[test]
    fn edits_round_trip() {
        let base: [u8; 4096] = core::array::from_fn(|i| (i * 7 % 251) as u8);
        let mut new = base;
        for p in [0, 1, 2, 10, 13, 100, 2000, 2001, 4095] {
            new[p] ^= 0x5a;
        }
        round_trip(&new, &base);
        let mut all = base;
        all.iter_mut().for_each(|b| *b = !*b);
        round_trip(&all, &base);
        let mut first = base;
        first[0] ^= 1;
        assert!(round_trip(&first, &base) <= 4);
        let mut last = base;
        last[4095] ^= 1;
        assert!(round_trip(&last, &base) <= 5);
    }

    #[test]
    fn extend_stops_at_the_first_equal_byte() {
        let base = [0u8; 40];
        for len in 0..40 {
            for from in 0..=len {
                let mut new = [0u8; 40];
                new[..len].iter_mut().for_each(|b| *b = 0x80);
                // the first equal byte is `len` (or the end)
                assert_eq!(extend(&new, &base, from, 40), len.max(from).min(40));
                assert_eq!(extend(&new, &base, from, len), len);
            }
        }
        // bytes that differ by one bit in every position, and a borrow-prone pattern
        let new: [u8; 16] = core::array::from_fn(|i| if i == 11 { 0 } else { 1 << (i % 8) });
        assert_eq!(extend(&new, &[0; 16], 0, 16), 11);
        let new = [1, 0, 1, 1, 1, 1, 1, 1, 1, 1u8];
        assert_eq!(extend(&new, &[0; 10], 0, 10), 1);
        assert_eq!(extend(&new, &[0; 10], 2, 10), 10);
    }

    #[test]
    fn limit_is_respected() {
        let base = [0u8; 4096];
        let new = [1u8; 4096];
        let mut out = [0u8; 8192];
        assert_eq!(encode(&new, &base, &mut out, 100), None);
    }

    #[test]
    fn malformed_deltas_are_rejected() {
        // run past the end
        assert_eq!(check(&[0x00, 0x0b, 1, 2, 3, 4, 5], 4), Err(Error::BadDelta));
        // skip past the end
        assert_eq!(check(&[0x05, 0x03, 1], 4), Err(Error::BadDelta));
        // empty run in the middle
        assert_eq!(check(&[0x00, 0x02, 9, 0x00, 0x00], 4), Err(Error::BadDelta));
        // empty non-final run
        assert_eq!(check(&[0x00, 0x00], 4), Err(Error::BadDelta));
        // truncated bytes
        assert_eq!(check(&[0x00, 0x07, 1, 2], 8), Err(Error::Truncated));
        // truncated header
        assert_eq!(check(&[0x00], 8), Err(Error::Truncated));
        // huge skip varint
        assert_eq!(
            check(
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x03, 1],
                8
            ),
            Err(Error::BadDelta)
        );
    }
}
