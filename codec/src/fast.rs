//! The codec's only unsafe code: hardware fast paths, chosen at run time, each with a safe
//! twin it must agree with (unit and property tests here, the fuzz targets and Miri run
//! both). The `safe` feature builds them out, leaving the crate free of `unsafe`.

#![cfg_attr(not(feature = "safe"), allow(unsafe_code))]

/// CRC-32C of `data` with the CPU's CRC instruction where there is one, else `None`.
#[inline]
pub fn crc32c(data: &[u8]) -> Option<u32> {
    #[cfg(all(target_arch = "x86_64", not(feature = "safe")))]
    {
        if x86::has_sse42() {
            // SAFETY: the CPU has SSE4.2 (checked at run time just above), the only
            // requirement of the target-feature function.
            return Some(unsafe { x86::crc32c_sse42(data) });
        }
    }
    let _ = data;
    None
}

#[cfg(all(target_arch = "x86_64", not(feature = "safe")))]
mod x86 {
    use core::sync::atomic::{AtomicU8, Ordering};

    /// 0: not asked yet, 1: no SSE4.2, 2: SSE4.2.
    static SSE42: AtomicU8 = AtomicU8::new(0);

    #[inline]
    pub fn has_sse42() -> bool {
        match SSE42.load(Ordering::Relaxed) {
            2 => true,
            1 => false,
            _ => {
                let yes = detect();
                SSE42.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
        }
    }

    fn detect() -> bool {
        if cfg!(target_feature = "sse4.2") {
            return true;
        }
        if cfg!(miri) {
            // Miri cannot run CPUID; it runs the fast path when the build enables SSE4.2
            // (`-C target-feature=+sse4.2`, as CI's Miri step does)
            return false;
        }
        // SAFETY: CPUID leaf 1 exists on every x86_64 CPU and has no side effects; bit 20
        // of ECX reports SSE4.2. (`__cpuid` is an unsafe fn up to Rust 1.8x, our minimum,
        // and safe in newer releases: hence the allow.)
        #[allow(unused_unsafe)]
        let r = unsafe { core::arch::x86_64::__cpuid(1) };
        r.ecx & (1 << 20) != 0
    }

    /// CRC-32C (init and final XOR `!0`, reflected, as `crc::CRC_32_ISCSI`) with SSE4.2's
    /// `crc32` instruction, 8 bytes per step.
    ///
    /// # Safety
    /// The CPU must support SSE4.2.
    #[target_feature(enable = "sse4.2")]
    pub unsafe fn crc32c_sse42(data: &[u8]) -> u32 {
        use core::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
        let mut crc = u64::from(!0u32);
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
            crc = _mm_crc32_u64(crc, v);
        }
        let mut c = crc as u32;
        for &b in words.remainder() {
            c = _mm_crc32_u8(c, b);
        }
        !c
    }
}

#[cfg(test)]
mod tests {
    use crate::CRC32C;

    #[test]
    fn hardware_crc_agrees_with_the_table_on_every_length_and_offset() {
        let data: [u8; 300] =
            core::array::from_fn(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8);
        for start in 0..9 {
            for end in start..data.len() {
                if let Some(c) = super::crc32c(&data[start..end]) {
                    assert_eq!(c, CRC32C.checksum(&data[start..end]), "{start}..{end}");
                }
            }
        }
    }

    #[cfg(all(target_arch = "x86_64", not(feature = "safe")))]
    #[test]
    fn this_machine_uses_the_hardware_crc() {
        // every x86_64 CPU of the last 15 years has SSE4.2; say so if this one does not
        assert!(super::crc32c(b"123456789").is_some(), "no SSE4.2 here");
    }
}
