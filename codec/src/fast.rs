//! The codec's only unsafe code: hardware fast paths, each with a safe twin it must agree
//! with (unit and property tests here, the fuzz targets and Miri run both): the SSE4.2 CRC,
//! chosen at run time; the SSE2 difference mask (SSE2 is part of every x86_64 CPU) and its
//! AVX2 twin, chosen at run time for the XBZRLE encoder; and a prefetch hint, which changes
//! no result. The `safe` feature builds them out, leaving the crate free of `unsafe`.

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

/// Bit `i` set where `a[i] != b[i]`: SSE2 on x86_64 (part of its baseline, so no run-time
/// check), else [`crate::bytes::diff_mask64`].
#[inline]
pub fn diff_mask64(a: &[u8; 64], b: &[u8; 64]) -> u64 {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2", not(feature = "safe")))]
    {
        // SAFETY: SSE2 is enabled for this build (checked by the cfg above), the only
        // requirement of the intrinsics; the loads read 16 bytes at offsets 0, 16, 32 and 48
        // of two 64-byte arrays, in bounds, and `loadu` has no alignment requirement.
        unsafe { x86::diff_mask64_sse2(a, b) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2", not(feature = "safe"))))]
    {
        crate::bytes::diff_mask64(a, b)
    }
}

#[cfg(feature = "xbzrle")]
/// Work written once over 64-byte difference masks (bit `i` set where `a[i] != b[i]`), run
/// by [`with_widest_masks`] or [`with_baseline_masks`] with the mask function they pick.
pub trait WithMasks {
    type Output;
    /// Does the work with `mask`. Implementations should be `#[inline(always)]`: inlined
    /// into [`with_widest_masks`]'s AVX2 function, they are compiled for AVX2.
    fn run(self, mask: impl Fn(&[u8; 64], &[u8; 64]) -> u64) -> Self::Output;
}

#[cfg(feature = "xbzrle")]
/// Runs `work` with the widest difference masks this CPU has: AVX2 where CPUID says so
/// (asked once), else [`diff_mask64`]'s.
#[inline]
pub fn with_widest_masks<W: WithMasks>(work: W) -> W::Output {
    #[cfg(all(target_arch = "x86_64", not(feature = "safe")))]
    {
        if x86::has_avx2() {
            // SAFETY: the CPU has AVX2 and the OS saves its registers (checked at run time
            // just above), the only requirement of the target-feature function.
            return unsafe { x86::with_avx2_masks(work) };
        }
    }
    with_baseline_masks(work)
}

#[cfg(feature = "xbzrle")]
/// Runs `work` with [`diff_mask64`]: the masks every CPU of the target can make without a
/// run-time check (SSE2 on x86_64).
#[inline]
pub fn with_baseline_masks<W: WithMasks>(work: W) -> W::Output {
    work.run(diff_mask64)
}

/// Asks the CPU to start loading every cache line of `bytes`: a hint, with no effect on any
/// result, so that the loads of a page overlap each other and the work before its first use.
#[inline]
pub fn prefetch(bytes: &[u8]) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse", not(feature = "safe")))]
    for line in bytes.chunks(64) {
        // SAFETY: SSE is enabled for this build (the cfg above), the intrinsic's only
        // requirement; a prefetch never faults and changes nothing the program can see (the
        // address is inside `bytes` anyway).
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr() as *const i8
            )
        };
    }
    let _ = bytes;
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

    #[cfg(feature = "xbzrle")]
    /// 0: not asked yet, 1: no usable AVX2, 2: AVX2.
    static AVX2: AtomicU8 = AtomicU8::new(0);

    #[cfg(feature = "xbzrle")]
    #[inline]
    pub fn has_avx2() -> bool {
        match AVX2.load(Ordering::Relaxed) {
            2 => true,
            1 => false,
            _ => {
                let yes = detect_avx2();
                AVX2.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
                yes
            }
        }
    }

    #[cfg(feature = "xbzrle")]
    fn detect_avx2() -> bool {
        if cfg!(target_feature = "avx2") {
            return true;
        }
        if cfg!(miri) {
            // as for SSE4.2: Miri runs the AVX2 path when the build enables it
            return false;
        }
        use core::arch::x86_64::{__cpuid, __cpuid_count};
        // SAFETY: CPUID leaves 0 and 1 exist on every x86_64 CPU and have no side effects.
        // (Unsafe fns up to Rust 1.8x, our minimum, safe in newer releases: hence the allow.)
        #[allow(unused_unsafe)]
        let (max_leaf, leaf1) = unsafe { (__cpuid(0).eax, __cpuid(1)) };
        // AVX (ECX bit 28) and OSXSAVE (bit 27): the OS may have enabled the YMM registers
        let avx_and_xsave = (1 << 28) | (1 << 27);
        if max_leaf < 7 || leaf1.ecx & avx_and_xsave != avx_and_xsave {
            return false;
        }
        // SAFETY: OSXSAVE is set (checked above), so XGETBV exists and XCR0 can be read.
        let xcr0 = unsafe { xcr0() };
        // SAFETY: leaf 7 exists (max_leaf checked above); CPUID has no side effects.
        #[allow(unused_unsafe)]
        let leaf7 = unsafe { __cpuid_count(7, 0) };
        // the OS saves XMM and YMM state (XCR0 bits 1 and 2); AVX2 is EBX bit 5 of leaf 7
        xcr0 & 0b110 == 0b110 && leaf7.ebx & (1 << 5) != 0
    }

    #[cfg(feature = "xbzrle")]
    /// XCR0, the register of the state components the OS saves.
    ///
    /// # Safety
    /// The CPU must support XSAVE and the OS must have enabled it (CPUID.1:ECX.OSXSAVE).
    #[target_feature(enable = "xsave")]
    unsafe fn xcr0() -> u64 {
        core::arch::x86_64::_xgetbv(0)
    }

    #[cfg(feature = "xbzrle")]
    /// [`super::with_widest_masks`] on a CPU with AVX2: `work` inlined here, compiled for
    /// AVX2, with [`diff_mask64_avx2`] as its mask.
    ///
    /// # Safety
    /// The CPU must support AVX2 and the OS must save its registers.
    #[target_feature(enable = "avx2")]
    pub unsafe fn with_avx2_masks<W: super::WithMasks>(work: W) -> W::Output {
        work.run(|a, b| {
            // SAFETY: this closure runs only inside this AVX2 function, whose caller
            // guarantees AVX2. (Closures inherit their function's target features in newer
            // Rust releases, where the call is safe: hence the allow.)
            #[allow(unused_unsafe)]
            unsafe {
                diff_mask64_avx2(a, b)
            }
        })
    }

    #[cfg(feature = "xbzrle")]
    /// [`super::diff_mask64`] with two 32-byte compares.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn diff_mask64_avx2(a: &[u8; 64], b: &[u8; 64]) -> u64 {
        use core::arch::x86_64::{
            __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
        };
        let (pa, pb) = (a.as_ptr() as *const __m256i, b.as_ptr() as *const __m256i);
        // the loads read 32 bytes at offsets 0 and 32 of two 64-byte arrays, in bounds;
        // `loadu` has no alignment requirement
        let lo = _mm256_movemask_epi8(_mm256_cmpeq_epi8(
            _mm256_loadu_si256(pa),
            _mm256_loadu_si256(pb),
        ));
        let hi = _mm256_movemask_epi8(_mm256_cmpeq_epi8(
            _mm256_loadu_si256(pa.add(1)),
            _mm256_loadu_si256(pb.add(1)),
        ));
        !(u64::from(lo as u32) | u64::from(hi as u32) << 32)
    }

    /// See [`super::diff_mask64`].
    ///
    /// # Safety
    /// The CPU must support SSE2 (every x86_64 CPU does).
    #[cfg(target_feature = "sse2")]
    #[inline]
    pub unsafe fn diff_mask64_sse2(a: &[u8; 64], b: &[u8; 64]) -> u64 {
        use core::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8};
        let mut equal = 0u64;
        for i in 0..4 {
            let x = _mm_loadu_si128(a.as_ptr().add(16 * i) as *const __m128i);
            let y = _mm_loadu_si128(b.as_ptr().add(16 * i) as *const __m128i);
            let m = _mm_movemask_epi8(_mm_cmpeq_epi8(x, y)) as u32 as u64;
            equal |= m << (16 * i);
        }
        !equal
    }

    /// Bytes per lane of the three-lane CRC below: a page each, so the three lanes read
    /// three different 4 KiB pages. With 1 KiB lanes (one page for all three) decoding from
    /// memory ran 15 % slower, the hardware prefetcher apparently losing the streams.
    const LANE: usize = 4096;

    /// `SHIFT[i][b]`: the CRC register holding `b << 8i` after [`LANE`] zero bytes. The
    /// register is linear in its input, so four lookups move any register past a lane.
    static SHIFT: [[u32; 256]; 4] = super::shift_tables(LANE);

    #[inline]
    fn shift(crc: u64) -> u64 {
        let c = crc as u32;
        let t = &SHIFT;
        u64::from(
            t[0][(c & 0xff) as usize]
                ^ t[1][(c >> 8 & 0xff) as usize]
                ^ t[2][(c >> 16 & 0xff) as usize]
                ^ t[3][(c >> 24) as usize],
        )
    }

    #[inline(always)]
    fn word(w: &[u8]) -> u64 {
        u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])
    }

    /// CRC-32C (init and final XOR `!0`, reflected, as `crc::CRC_32_ISCSI`) with SSE4.2's
    /// `crc32` instruction, 8 bytes per step. The instruction takes three cycles but can
    /// start one per cycle, so 12 KiB at a time run as three independent lanes whose
    /// registers are then joined with [`shift`]; the rest runs as one lane.
    ///
    /// # Safety
    /// The CPU must support SSE4.2.
    #[target_feature(enable = "sse4.2")]
    pub unsafe fn crc32c_sse42(data: &[u8]) -> u32 {
        use core::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
        let mut crc = u64::from(!0u32);
        let mut triples = data.chunks_exact(3 * LANE);
        for t in &mut triples {
            let (a, rest) = t.split_at(LANE);
            let (b, c) = rest.split_at(LANE);
            let (mut ca, mut cb, mut cc) = (crc, 0u64, 0u64);
            for ((x, y), z) in a
                .chunks_exact(8)
                .zip(b.chunks_exact(8))
                .zip(c.chunks_exact(8))
            {
                ca = _mm_crc32_u64(ca, word(x));
                cb = _mm_crc32_u64(cb, word(y));
                cc = _mm_crc32_u64(cc, word(z));
            }
            crc = shift(shift(ca) ^ cb) ^ cc;
        }
        let mut words = triples.remainder().chunks_exact(8);
        for w in &mut words {
            crc = _mm_crc32_u64(crc, word(w));
        }
        let mut c = crc as u32;
        for &b in words.remainder() {
            c = _mm_crc32_u8(c, b);
        }
        !c
    }
}

/// The tables of [`x86::shift`]: for each byte position `i` and value `b`, the reflected
/// CRC-32C register `b << 8i` after `bytes` zero bytes, built at compile time from the
/// one-bit step by repeated squaring of its 32x32 bit matrix.
#[cfg(all(target_arch = "x86_64", not(feature = "safe")))]
const fn shift_tables(bytes: usize) -> [[u32; 256]; 4] {
    /// The image of `v` under the matrix with columns `m`.
    const fn apply(m: &[u32; 32], v: u32) -> u32 {
        let mut r = 0;
        let mut i = 0;
        while i < 32 {
            if v >> i & 1 == 1 {
                r ^= m[i];
            }
            i += 1;
        }
        r
    }
    /// The matrix `m` after `first` (each column of `first` mapped by `m`).
    const fn compose(m: &[u32; 32], first: &[u32; 32]) -> [u32; 32] {
        let mut out = [0u32; 32];
        let mut j = 0;
        while j < 32 {
            out[j] = apply(m, first[j]);
            j += 1;
        }
        out
    }
    const POLY: u32 = 0x82F6_3B78;
    // one zero bit: shift right, fold the polynomial in when a one drops out
    let mut step = [0u32; 32];
    step[0] = POLY;
    let mut i = 1;
    while i < 32 {
        step[i] = 1 << (i - 1);
        i += 1;
    }
    // `bytes * 8` zero bits: square for each bit of the count, multiply where it is set
    let mut acc = [0u32; 32];
    let mut i = 0;
    while i < 32 {
        acc[i] = 1 << i;
        i += 1;
    }
    let mut n = bytes * 8;
    while n > 0 {
        if n & 1 == 1 {
            acc = compose(&step, &acc);
        }
        step = compose(&step, &step);
        n >>= 1;
    }
    let mut tables = [[0u32; 256]; 4];
    let mut i = 0;
    while i < 4 {
        let mut b = 0;
        while b < 256 {
            tables[i][b] = apply(&acc, (b as u32) << (8 * i));
            b += 1;
        }
        i += 1;
    }
    tables
}

/// A value moved into caller storage. Besides the fast paths above, the one other use of
/// `unsafe`, and it buys stack rather than speed: the encoder's LZ4 hash tables live in its
/// storage, where lz4_flex's no-alloc build would keep one on the stack at every frame
/// (16 KiB, on a NIC core whose stack budget is 16 KiB). Dropped in place with its holder;
/// forgetting the holder only leaks the value, as forgetting any value does.
#[cfg(all(feature = "encoder", not(feature = "safe")))]
pub struct Placed<'a, T> {
    value: &'a mut T,
}

#[cfg(all(feature = "encoder", not(feature = "safe")))]
impl<T> Placed<'_, T> {
    /// Moves `make()` to the first address of `storage` aligned for `T`; `None` (and
    /// `make` not called) when it does not fit. The `safe` build has no twin: its encoder
    /// lets lz4_flex keep the table on the stack, with the same output.
    pub fn new(storage: &mut [u8], make: impl FnOnce() -> T) -> Option<Placed<'_, T>> {
        let pad = storage.as_ptr().align_offset(core::mem::align_of::<T>());
        let end = pad.checked_add(core::mem::size_of::<T>())?;
        let slot = storage.get_mut(pad..end)?.as_mut_ptr().cast::<T>();
        // SAFETY: `slot` is aligned for `T` (align_offset above) and has `size_of::<T>()`
        // bytes of `storage` behind it (the checked range), which we borrow exclusively for
        // the life of the result, so nothing else reads or writes them meanwhile. `write`
        // does not drop the bytes it overwrites (they are no `T`), and the reference handed
        // out points at the `T` it just wrote.
        let value = unsafe {
            slot.write(make());
            &mut *slot
        };
        Some(Placed { value })
    }

    /// The value.
    #[inline]
    pub fn get(&mut self) -> &mut T {
        self.value
    }
}

#[cfg(all(feature = "encoder", not(feature = "safe")))]
impl<T> Drop for Placed<'_, T> {
    fn drop(&mut self) {
        // SAFETY: `value` holds the `T` written by `new`, dropped nowhere else: this runs
        // once, and nothing reads `value` after it.
        unsafe { core::ptr::drop_in_place(self.value as *mut T) }
    }
}

#[cfg(all(test, feature = "encoder", not(feature = "safe")))]
mod placed_tests {
    use super::Placed;
    use core::cell::Cell;

    struct Counted<'c>([u64; 3], &'c Cell<u32>);
    impl Drop for Counted<'_> {
        fn drop(&mut self) {
            self.1.set(self.1.get() + 1);
        }
    }

    #[test]
    fn places_aligned_at_any_offset_and_drops_once() {
        let drops = Cell::new(0);
        let mut storage = [0u8; 64];
        for skew in 0..8 {
            let mut p = Placed::new(&mut storage[skew..], || Counted([7; 3], &drops)).unwrap();
            assert_eq!(p.get() as *mut Counted as usize % 8, 0);
            p.get().0[2] = 9;
            assert_eq!(p.get().0, [7, 7, 9]);
            drop(p);
            assert_eq!(drops.get(), skew as u32 + 1);
        }
        // too short once aligned: refused, and nothing is made
        let mut words = [0u64; 3];
        let bytes: &mut [u8] = bytemuck::bytes_of_mut(&mut words);
        assert!(Placed::new(&mut bytes[1..9], || -> u64 { unreachable!() }).is_none());
        let mut p = Placed::new(&mut bytes[1..], || 5u64).unwrap();
        assert_eq!(*p.get(), 5);
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

    #[test]
    fn diff_mask_agrees_with_the_portable_one() {
        let a: [u8; 64] = core::array::from_fn(|i| (i * 37) as u8);
        let mut rand = crate::test_rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..if cfg!(miri) { 100 } else { 2000 } {
            let seed = rand();
            let mut b = a;
            for (i, byte) in b.iter_mut().enumerate() {
                // about half the bytes differ, by one bit anywhere
                if seed.rotate_left(i as u32) & 1 == 1 {
                    *byte ^= 1 << ((seed >> (i % 50)) & 7);
                }
            }
            let want = crate::bytes::diff_mask64(&a, &b);
            assert_eq!(super::diff_mask64(&a, &b), want);
            assert_eq!(
                want.count_ones() as usize,
                a.iter().zip(&b).filter(|(x, y)| x != y).count()
            );
        }
        assert_eq!(super::diff_mask64(&a, &a), 0);
    }

    #[test]
    fn hardware_crc_agrees_with_the_table_across_its_lanes() {
        // lengths around one and several 12 KiB lane triples, at odd offsets
        let data: [u8; 40_000] =
            core::array::from_fn(|i| ((i as u32).wrapping_mul(2_246_822_519) >> 11) as u8);
        for (start, len) in [
            (0, 12288),
            (1, 12287),
            (3, 12289),
            (5, 24576 + 17),
            (7, 39990),
        ] {
            let d = &data[start..start + len];
            if let Some(c) = super::crc32c(d) {
                assert_eq!(c, CRC32C.checksum(d), "{start}+{len}");
            }
        }
    }

    #[cfg(feature = "xbzrle")]
    #[cfg(all(target_arch = "x86_64", not(feature = "safe")))]
    #[test]
    fn avx2_mask_agrees_with_the_portable_one() {
        if !super::x86::has_avx2() {
            return; // nothing to compare on this CPU
        }
        let mut rand = crate::test_rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..if cfg!(miri) { 50 } else { 2000 } {
            let a: [u8; 64] = core::array::from_fn(|_| rand() as u8);
            let (flips, bits) = (rand(), rand());
            let mut b = a;
            for (i, byte) in b.iter_mut().enumerate() {
                if flips >> i & 1 == 1 {
                    *byte ^= 1 << (bits >> (i % 61) & 7);
                }
            }
            // SAFETY: the CPU has AVX2 (checked at the top)
            let got = unsafe { super::x86::diff_mask64_avx2(&a, &b) };
            assert_eq!(got, crate::bytes::diff_mask64(&a, &b));
            assert_eq!(got, flips);
        }
    }

    #[cfg(all(target_arch = "x86_64", not(feature = "safe"), not(miri)))]
    #[test]
    fn avx2_is_chosen_exactly_where_the_cpu_has_it() {
        extern crate std;
        assert_eq!(
            super::x86::has_avx2(),
            std::is_x86_feature_detected!("avx2")
        );
    }

    #[cfg(all(target_arch = "x86_64", not(feature = "safe")))]
    #[test]
    fn this_machine_uses_the_hardware_crc() {
        // every x86_64 CPU of the last 15 years has SSE4.2; say so if this one does not
        assert!(super::crc32c(b"123456789").is_some(), "no SSE4.2 here");
    }
}
