//! Word-wise byte comparisons used on the per-page hot path.
//!
//! Written with safe 8-byte chunks that the compiler turns into wide loads.

/// Index of the first byte at or after `from` where `a` and `b` differ, or the common length.
#[inline]
pub fn mismatch(a: &[u8], b: &[u8], from: usize) -> usize {
    let n = a.len().min(b.len());
    let mut i = from.min(n);
    // bytewise up to the next 8-byte boundary of the slice
    while i < n && i % 8 != 0 {
        if a[i] != b[i] {
            return i;
        }
        i += 1;
    }
    // 32 bytes per step: four word XORs folded together, no calls
    while i + 32 <= n {
        let w = |o: usize| {
            let x = u64::from_le_bytes(a[o..o + 8].try_into().unwrap_or([0; 8]));
            let y = u64::from_le_bytes(b[o..o + 8].try_into().unwrap_or([0; 8]));
            x ^ y
        };
        if (w(i) | w(i + 8) | w(i + 16) | w(i + 24)) != 0 {
            break;
        }
        i += 32;
    }
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let d = x ^ y;
        if d != 0 {
            return i + (d.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n {
        if a[i] != b[i] {
            return i;
        }
        i += 1;
    }
    n
}

/// Bit `i` set where `a[i] != b[i]`, a word at a time: the portable twin of the SSE2 mask
/// in `fast`, which falls back to this one on other targets and in the `safe` build.
#[cfg_attr(
    all(target_arch = "x86_64", target_feature = "sse2", not(feature = "safe")),
    allow(dead_code)
)]
// kept out of line: inlined into each of its four callers it cost the Arm firmware 1.3 KB
#[inline(never)]
pub fn diff_mask64(a: &[u8; 64], b: &[u8; 64]) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let mut mask = 0u64;
    for w in 0..8 {
        let word = |s: &[u8; 64]| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&s[8 * w..8 * w + 8]);
            u64::from_le_bytes(v)
        };
        let x = word(a) ^ word(b);
        if x == 0 {
            continue;
        }
        // the top bit of each byte of `t` says whether that byte of `x` is non-zero
        let t = ((x & LOW7).wrapping_add(LOW7) | x) & !LOW7;
        // gather the eight top bits into one byte, lowest byte first
        let bits = ((t >> 7).wrapping_mul(0x0102_0408_1020_4080)) >> 56;
        mask |= bits << (8 * w);
    }
    mask
}

/// True when every byte is zero.
#[inline]
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(64);
    for c in &mut chunks {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            acc |= u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// XORs `src` into `dst` (same length), a word at a time. From 8 bytes on, the last word
/// overlaps the one before rather than leaving a byte-by-byte tail: it is computed from the
/// bytes as they were before any store, so the overlapping bytes are written the same value
/// twice, not XORed twice. With the runs of deltas longer than 8 bytes applied this way
/// rather than 4 bytes and then byte by byte, idle's later passes decoded 13 % faster
/// (`docs/PERFORMANCE.md`, *A faster run walk*).
#[inline(always)]
pub fn xor_into(dst: &mut [u8], src: &[u8]) {
    let n = dst.len();
    assert_eq!(src.len(), n, "xor_into: lengths differ");
    if n < 8 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d ^= *s;
        }
        return;
    }
    let tail = word(dst, n - 8) ^ word(src, n - 8);
    let mut i = 0;
    while i + 8 < n {
        let d = word(dst, i) ^ word(src, i);
        dst[i..i + 8].copy_from_slice(&d.to_le_bytes());
        i += 8;
    }
    dst[n - 8..].copy_from_slice(&tail.to_le_bytes());
}

/// The little-endian word at `s[i..i + 8]`.
#[inline(always)]
fn word(s: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&s[i..i + 8]);
    u64::from_le_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xor_into_matches_xor_byte_by_byte_at_every_length() {
        let src: [u8; 100] = core::array::from_fn(|i| (i * 37 + 11) as u8);
        let base: [u8; 100] = core::array::from_fn(|i| (i * 101 + 3) as u8);
        for n in 0..=100 {
            for at in [0, 1, 7] {
                let end = (at + n).min(100);
                let mut dst = base;
                xor_into(&mut dst[at..end], &src[..end - at]);
                for i in 0..100 {
                    let want = if (at..end).contains(&i) {
                        base[i] ^ src[i - at]
                    } else {
                        base[i]
                    };
                    assert_eq!(dst[i], want, "length {n} at {at}, byte {i}");
                }
            }
        }
    }

    #[test]
    fn mismatch_finds_every_position() {
        let a = [7u8; 100];
        for p in 0..100 {
            let mut b = a;
            b[p] ^= 0x10;
            assert_eq!(mismatch(&a, &b, 0), p);
            assert_eq!(mismatch(&a, &b, p), p);
            assert_eq!(mismatch(&a, &b, p + 1), 100);
        }
        assert_eq!(mismatch(&a, &a, 0), 100);
        assert_eq!(mismatch(&a, &a, 500), 100);
    }

    #[test]
    fn diff_mask_marks_exactly_the_differing_bytes() {
        let a = [0x80u8; 64];
        for p in 0..64 {
            for flip in [0x01u8, 0x80, 0xff, 0x7f] {
                let mut b = a;
                b[p] ^= flip;
                assert_eq!(diff_mask64(&a, &b), 1 << p, "byte {p} ^ {flip:#x}");
                b[(p + 9) % 64] ^= 0x40;
                assert_eq!(diff_mask64(&a, &b), 1 << p | 1 << ((p + 9) % 64));
            }
        }
        assert_eq!(diff_mask64(&a, &[0; 64]), !0);
        assert_eq!(diff_mask64(&a, &a), 0);
    }

    #[test]
    fn zero_test() {
        let mut z = [0u8; 4096];
        assert!(is_zero(&z));
        for p in [0, 63, 64, 4095] {
            z[p] = 1;
            assert!(!is_zero(&z));
            z[p] = 0;
        }
        assert!(is_zero(&[]));
        assert!(!is_zero(&[0, 0, 3]));
    }
}
