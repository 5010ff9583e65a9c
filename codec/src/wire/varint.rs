//! LEB128 varints (postcard-style) and zigzag mapping, bounds-checked both ways.

use crate::error::{Error, Result};

/// Longest LEB128 encoding of a `u64`.
pub const MAX_VARINT_LEN: usize = 10;

/// Bytes needed to encode `v`.
#[inline]
pub const fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Appends `v` to `out` at `*pos`. The caller guarantees room for `varint_len(v)` bytes.
#[inline]
pub fn put(out: &mut [u8], pos: &mut usize, mut v: u64) {
    while v >= 0x80 {
        out[*pos] = (v as u8) | 0x80;
        *pos += 1;
        v >>= 7;
    }
    out[*pos] = v as u8;
    *pos += 1;
}

/// Reads a varint from `buf` at `*pos`, rejecting truncation and values over 64 bits.
/// Varints of one or two bytes (the lengths and skips of a delta, record lengths) take the
/// inlined fast path.
#[inline(always)]
pub fn get(buf: &[u8], pos: &mut usize) -> Result<u64> {
    if let Some(&b0) = buf.get(*pos) {
        if b0 < 0x80 {
            *pos += 1;
            return Ok(u64::from(b0));
        }
        if let Some(&b1) = buf.get(*pos + 1) {
            if b1 < 0x80 {
                *pos += 2;
                return Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7);
            }
        }
    }
    get_long(buf, pos)
}

/// [`get`] for varints of more than two bytes, and the errors.
#[inline(never)]
fn get_long(buf: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v: u64 = 0;
    for i in 0..MAX_VARINT_LEN {
        let b = *buf.get(*pos).ok_or(Error::Truncated)?;
        *pos += 1;
        if i == MAX_VARINT_LEN - 1 && b > 1 {
            return Err(Error::VarintOverflow);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(Error::VarintOverflow)
}

/// Reads a varint that must be at most `max`.
#[inline]
pub fn get_max(buf: &[u8], pos: &mut usize, max: u64) -> Result<u64> {
    let v = get(buf, pos)?;
    if v > max {
        return Err(Error::LengthOutOfRange);
    }
    Ok(v)
}

/// Maps a signed difference onto small unsigned values (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...).
#[inline]
pub const fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub const fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = [0u8; MAX_VARINT_LEN];
            let mut pos = 0;
            put(&mut buf, &mut pos, v);
            assert_eq!(pos, varint_len(v));
            let mut rpos = 0;
            assert_eq!(get(&buf, &mut rpos), Ok(v));
            assert_eq!(rpos, pos);
        }
    }

    #[test]
    fn rejects_overflow_and_truncation() {
        let eleven = [0xffu8; 11];
        assert_eq!(get(&eleven, &mut 0), Err(Error::VarintOverflow));
        let mut ten = [0xffu8; 10];
        ten[9] = 0x02; // bit 64 set
        assert_eq!(get(&ten, &mut 0), Err(Error::VarintOverflow));
        assert_eq!(get(&[0x80, 0x80], &mut 0), Err(Error::Truncated));
        assert_eq!(get(&[], &mut 0), Err(Error::Truncated));
        assert_eq!(get_max(&[0x05], &mut 0, 4), Err(Error::LengthOutOfRange));
    }

    #[test]
    fn zigzag_is_bijective_on_edges() {
        for v in [0i64, -1, 1, i64::MIN, i64::MAX, -12345, 987654] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(0), 0);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }
}
