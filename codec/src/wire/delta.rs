//! XOR/RLE deltas: the runs where a page (or block) differs from a base, as XOR bytes.
//!
//! Grammar (see `docs/FORMAT.md`): a delta is a sequence of runs, each
//! `skip:varint code:varint xor[len]` with `code = len * 2 + last`. `skip` counts unchanged
//! bytes before the run. Every run has `len >= 1`, except the single run `00 01` of an empty
//! delta. The last run has `last = 1`; bytes after it are unchanged.

use super::varint;
use crate::bytes::mismatch;
use crate::config::MAX_BLOCKS_PER_PAGE;
use crate::error::{Error, Result};
use crate::fast::diff_mask64;

/// Two runs closer than this many unchanged bytes are merged: a run header costs at least
/// two bytes, so shorter gaps are cheaper sent as XOR zeros. The fewest bytes.
pub const MERGE_GAP: usize = 3;

/// The gap when LZ4 compresses the frames afterwards: LZ4 absorbs the XOR zeros of a merged
/// gap, and fewer, longer runs are fewer run headers for LZ4 to keep and fewer runs for the
/// decoder to walk (`docs/PERFORMANCE.md`, *Merging runs under LZ4*).
pub const MERGE_GAP_LZ4: usize = 16;

/// Length of the empty delta (`new` equals `base`).
pub const EMPTY_LEN: usize = 2;

/// Which runs [`encode`] merges into one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Runs fewer than [`MERGE_GAP`] bytes apart: the fewest bytes.
    Tight,
    /// Runs fewer than [`MERGE_GAP_LZ4`] bytes apart: for frames LZ4 compresses afterwards.
    UnderLz4,
}

impl Merge {
    /// The rule for deltas that go into frames with LZ4 on them, or without.
    #[inline]
    pub fn for_frames(lz4: bool) -> Self {
        if lz4 {
            Merge::UnderLz4
        } else {
            Merge::Tight
        }
    }

    /// Runs fewer than this many bytes apart become one.
    #[inline]
    pub fn gap(self) -> usize {
        match self {
            Merge::Tight => MERGE_GAP,
            Merge::UnderLz4 => MERGE_GAP_LZ4,
        }
    }
}

/// Encodes the delta of `new` against `base` (same length) into `out`, its runs merged by
/// the `merge` rule. Returns its length, or `None` when it would exceed `limit` bytes (or
/// `out`).
pub fn encode(
    new: &[u8],
    base: &[u8],
    out: &mut [u8],
    limit: usize,
    merge: Merge,
) -> Option<usize> {
    let n = new.len().min(base.len());
    let (new, base) = (&new[..n], &base[..n]);
    let limit = limit.min(out.len());
    let mut o = 0usize;
    let mut done = 0usize; // end of the last run written
    let mut pending: Option<(usize, usize)> = None; // (start, end) of a run not yet written
                                                    // the mask walk merges the tight rule's gaps; a wider rule joins its runs here
    let gap = merge.gap();
    for_each_run(new, base, |start, end| {
        match pending {
            Some((s, e)) if start - e < gap => pending = Some((s, end)),
            Some((s, e)) => {
                o = write_run(new, base, out, limit, o, s - done, s, e, false)?;
                done = e;
                pending = Some((start, end));
            }
            None => pending = Some((start, end)),
        }
        Some(())
    })?;
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

/// Calls `f(start, end)` for each run of differing bytes, in order, after merging runs that
/// are fewer than [`MERGE_GAP`] bytes apart; stops early when `f` returns `None`.
///
/// Works on bit masks of 64 bytes at a time (bit `i` set where the bytes differ), so an
/// unchanged stretch costs one mask and a densely changed one is not walked byte by byte.
#[inline]
fn for_each_run(
    new: &[u8],
    base: &[u8],
    mut f: impl FnMut(usize, usize) -> Option<()>,
) -> Option<()> {
    let mut walk = MaskWalk::new(new, base);
    let mut in_run = false;
    let mut start = 0usize;
    // with no run open, an unchanged chunk has no gap to merge across: skip ahead
    while let Some(c) = walk.next_chunk(!in_run) {
        let filled = fill_gaps(c.prev, c.cur, c.next);
        let at = c.k * 64;
        let mut from = 0u32; // bits below `from` of this word are dealt with
        while from < 64 {
            let above = !0u64 << from;
            if in_run {
                let ends = !filled & above;
                if ends == 0 {
                    break;
                }
                let e = ends.trailing_zeros();
                f(start, at + e as usize)?;
                in_run = false;
                from = e;
            } else {
                let starts = filled & above;
                if starts == 0 {
                    break;
                }
                let s = starts.trailing_zeros();
                start = at + s as usize;
                in_run = true;
                from = s;
            }
        }
    }
    if in_run {
        f(start, new.len())?;
    }
    Some(())
}

/// One 64-byte chunk of a [`MaskWalk`]: its index and the difference masks of the chunks
/// before it, itself and after it (0 beyond either end, and before a chunk reached by a skip).
struct Chunk {
    k: usize,
    prev: u64,
    cur: u64,
    next: u64,
}

/// The difference masks of `new` against `base`, chunk by chunk, jumping over unchanged
/// stretches with the plain comparison (several times faster than masks) when asked to.
struct MaskWalk<'a> {
    new: &'a [u8],
    base: &'a [u8],
    chunks: usize,
    k: usize,
    prev: u64,
    /// the mask of chunk `k`, or 0 before the first chunk is read
    cur: u64,
}

impl<'a> MaskWalk<'a> {
    #[inline]
    fn new(new: &'a [u8], base: &'a [u8]) -> Self {
        MaskWalk {
            new,
            base,
            chunks: new.len().div_ceil(64),
            k: 0,
            prev: 0,
            cur: 0,
        }
    }

    /// The next chunk, or `None` at the end. With `may_skip`, an unchanged chunk is passed
    /// over together with every unchanged one after it: the walk goes on at the chunk of
    /// the next differing byte (with `prev` 0), or ends if there is none.
    #[inline(always)]
    fn next_chunk(&mut self, may_skip: bool) -> Option<Chunk> {
        if self.k >= self.chunks {
            return None;
        }
        if may_skip && self.cur == 0 {
            let i = mismatch(self.new, self.base, self.k * 64);
            if i >= self.new.len() {
                self.k = self.chunks;
                return None;
            }
            self.k = i / 64;
            self.prev = 0;
            self.cur = chunk_mask(self.new, self.base, self.k);
        }
        let next = if self.k + 1 < self.chunks {
            chunk_mask(self.new, self.base, self.k + 1)
        } else {
            0
        };
        let c = Chunk {
            k: self.k,
            prev: self.prev,
            cur: self.cur,
            next,
        };
        (self.prev, self.cur) = (self.cur, next);
        self.k += 1;
        Some(c)
    }
}

/// Lower bounds on delta lengths, found from difference masks alone (no run is written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// At most the length of the delta of the whole range (0 when nothing differs).
    pub whole: usize,
    /// At most the length of each piece's own delta (0 for an unchanged piece).
    pub pieces: [usize; MAX_BLOCKS_PER_PAGE],
}

/// Bounds the delta of `new` against `base` and of each of its pieces of `piece` bytes (a
/// multiple of 64; at most `MAX_BLOCKS_PER_PAGE` pieces are bounded): every byte of a merged run is sent,
/// and every run has a header of at least two bytes. One cheap pass that tells which
/// deltas cannot fit a limit before any is written. Bounds for [`Merge::Tight`], and so for
/// every rule: merging across a gap of three or more bytes never makes a delta shorter.
pub fn bounds(new: &[u8], base: &[u8], piece: usize) -> Bounds {
    let n = new.len().min(base.len());
    let (new, base) = (&new[..n], &base[..n]);
    let per_piece = (piece / 64).max(1);
    let mut b = Bounds {
        whole: 0,
        pieces: [0; MAX_BLOCKS_PER_PAGE],
    };
    // the last bit of the previous chunk's filled mask, page-wide and within the piece
    let (mut carry, mut piece_carry) = (0u64, 0u64);
    let mut walk = MaskWalk::new(new, base);
    // an unchanged chunk adds nothing and no run continues across it: skip ahead
    while let Some(c) = walk.next_chunk(true) {
        if c.prev == 0 {
            // after a skip; otherwise the carries are 0 already (an unchanged chunk fills
            // no bit)
            (carry, piece_carry) = (0, 0);
        }
        let k = c.k;
        let first = k % per_piece == 0;
        let last = (k + 1) % per_piece == 0;
        let filled = fill_gaps(c.prev, c.cur, c.next);
        let starts = filled & !(filled << 1 | carry);
        b.whole += (filled.count_ones() + 2 * starts.count_ones()) as usize;
        let own = fill_gaps(
            if first { 0 } else { c.prev },
            c.cur,
            if last { 0 } else { c.next },
        );
        let own_starts = own & !(own << 1 | if first { 0 } else { piece_carry });
        if let Some(p) = b.pieces.get_mut(k / per_piece) {
            *p += (own.count_ones() + 2 * own_starts.count_ones()) as usize;
        }
        carry = filled >> 63;
        piece_carry = own >> 63;
    }
    b
}

/// True when the first 64 bytes of `new` and `base` differ in at least eight places: a cheap
/// sign of a page rewritten throughout, whose delta is better bounded before it is written.
#[inline]
pub fn looks_rewritten(new: &[u8], base: &[u8]) -> bool {
    match (new.first_chunk::<64>(), base.first_chunk::<64>()) {
        (Some(a), Some(b)) => diff_mask64(a, b).count_ones() >= 8,
        _ => false,
    }
}

/// The differing-bytes mask of the `k`-th 64-byte chunk (bits past the end are clear).
#[inline]
fn chunk_mask(new: &[u8], base: &[u8], k: usize) -> u64 {
    let at = k * 64;
    let end = (at + 64).min(new.len());
    let (a, b) = (&new[at..end], &base[at..end]);
    if let (Ok(a), Ok(b)) = (<&[u8; 64]>::try_from(a), <&[u8; 64]>::try_from(b)) {
        return diff_mask64(a, b);
    }
    a.iter()
        .zip(b)
        .enumerate()
        .fold(0, |m, (i, (x, y))| m | u64::from(x != y) << i)
}

/// `cur` with every gap of one or two clear bits between set bits filled (`prev` and
/// `next` are the neighbouring words, bit 0 first): the [`MERGE_GAP`] rule on a mask.
#[inline]
fn fill_gaps(prev: u64, cur: u64, next: u64) -> u64 {
    const _: () = assert!(MERGE_GAP == 3, "fill_gaps fills gaps of one and two bytes");
    let left1 = cur << 1 | prev >> 63; // bit i: byte i - 1 differs
    let left2 = cur << 2 | prev >> 62;
    let right1 = cur >> 1 | next << 63; // bit i: byte i + 1 differs
    let right2 = cur >> 2 | next << 62;
    cur | (left1 & right1) | (left1 & right2) | (left2 & right1)
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
    if skip < 0x80 && code < 0x80 {
        // the common short run: two one-byte varints
        if o + 2 + len > limit {
            return None;
        }
        out[o] = skip as u8;
        out[o + 1] = code as u8;
        o += 2;
    } else {
        let need = varint::varint_len(skip as u64) + varint::varint_len(code) + len;
        if o + need > limit {
            return None;
        }
        varint::put(out, &mut o, skip as u64);
        varint::put(out, &mut o, code);
    }
    xor_run(&new[start..], &base[start..], &mut out[o..], len);
    Some(o + len)
}

/// `out[..len] = new[..len] ^ base[..len]`, eight bytes at a time. Where the slices reach
/// past `len`, the last word is written whole: the bytes after `len` in `out` are scratch
/// the next run overwrites (callers keep only the delta's length).
#[inline]
fn xor_run(new: &[u8], base: &[u8], out: &mut [u8], len: usize) {
    let word = |s: &[u8], i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_le_bytes(w)
    };
    let room = new.len().min(base.len()).min(out.len());
    let mut i = 0;
    while i < len && i + 8 <= room {
        let x = word(new, i) ^ word(base, i);
        out[i..i + 8].copy_from_slice(&x.to_le_bytes());
        i += 8;
    }
    let i = i.min(len);
    for ((d, a), b) in out[i..len].iter_mut().zip(&new[i..len]).zip(&base[i..len]) {
        *d = a ^ b;
    }
}

/// Checks the delta at the start of `rle` against a target of `len` bytes without applying
/// it. Returns the bytes it occupies.
pub fn check(rle: &[u8], len: usize) -> Result<usize> {
    walk(rle, len, |_, _, _| {})
}

/// XORs the delta at the start of `rle` into `dst`. Returns the bytes it occupies.
/// On error `dst` may be partly modified; callers check first.
pub fn apply(rle: &[u8], dst: &mut [u8]) -> Result<usize> {
    let len = dst.len();
    walk(rle, len, |at, p, run| {
        // most runs are a few bytes: one masked 16-byte word where both sides have 16 bytes,
        // without a branch on the run's length, which varies from run to run
        if run <= 16 && at + 16 <= len && p + 16 <= rle.len() {
            let mask = u128::MAX >> (128 - 8 * run);
            let x = word128(rle, p) & mask;
            let d = word128(dst, at) ^ x;
            dst[at..at + 16].copy_from_slice(&d.to_le_bytes());
        } else {
            crate::bytes::xor_into(&mut dst[at..at + run], &rle[p..p + run]);
        }
    })
}

/// The little-endian 16 bytes at `s[i..i + 16]`.
#[inline(always)]
fn word128(s: &[u8], i: usize) -> u128 {
    let mut w = [0u8; 16];
    w.copy_from_slice(&s[i..i + 16]);
    u128::from_le_bytes(w)
}

/// A run's `skip` and `code` at `*pos`. Most runs have both below 128, one byte each: read
/// without going through `*pos` in memory, which the general path (not inlined) would make
/// the walk do for every run.
#[inline(always)]
fn run_header(rle: &[u8], pos: &mut usize) -> Result<(u64, u64)> {
    let p = *pos;
    if let Some(&[skip, code]) = rle.get(p..p + 2) {
        if (skip | code) < 0x80 {
            *pos = p + 2;
            return Ok((u64::from(skip), u64::from(code)));
        }
    }
    let mut q = p;
    let skip = varint::get(rle, &mut q)?;
    let code = varint::get(rle, &mut q)?;
    *pos = q;
    Ok((skip, code))
}

/// Walks the runs of the delta at the start of `rle` for a target of `len` bytes, handing
/// `f` each run's target offset, its offset in `rle` and its length (at least 1; both
/// ranges in bounds). Returns the bytes the delta occupies.
#[inline]
fn walk(rle: &[u8], len: usize, mut f: impl FnMut(usize, usize, usize)) -> Result<usize> {
    let mut p = 0usize;
    let mut at = 0usize;
    let mut first = true;
    loop {
        let (skip, code) = run_header(rle, &mut p)?;
        let run = code >> 1;
        let last = code & 1 == 1;
        if run == 0 {
            // only the empty delta `00 01` has an empty run
            if first && last && skip == 0 {
                return Ok(p);
            }
            return Err(Error::BadDelta);
        }
        // both at most `len`, so no sum below overflows
        if skip > len as u64 || run > len as u64 {
            return Err(Error::BadDelta);
        }
        let (start, run) = (at + skip as usize, run as usize);
        if start + run > len {
            return Err(Error::BadDelta);
        }
        if p + run > rle.len() {
            return Err(Error::Truncated);
        }
        f(start, p, run);
        p += run;
        at = start + run;
        if last {
            return Ok(p);
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;

    fn round_trip(new: &[u8], base: &[u8]) -> usize {
        let mut out = [0u8; 10000];
        let n = encode(new, base, &mut out, 10000, Merge::Tight).unwrap();
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
    fn runs_of_every_length_apply_at_every_place_in_the_page() {
        // the masked 16-byte path, its fallback near the end of the page or the delta, and
        // word runs whose last word overlaps the one before; skips of one and two bytes
        let base: [u8; 4096] = core::array::from_fn(|i| (i * 13 % 253) as u8);
        // under miri, a sample: the lengths around 8 and 16, the places at the very ends
        let (lens, edge) = if cfg!(miri) {
            (6..=18, 3)
        } else {
            (1..=40, 64)
        };
        for len in lens {
            for at in (0..edge)
                .chain(200..203)
                .chain(4096 - edge.max(len)..=4096 - len)
            {
                let mut new = base;
                new[at..at + len].iter_mut().for_each(|b| *b = !*b);
                // a second run far enough on that its skip takes two varint bytes
                if at + len + 200 < 4096 {
                    new[at + len + 199] ^= 0x33;
                }
                round_trip(&new, &base);
            }
        }
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

    /// The grammar's runs found byte by byte, the plain way: what `encode` must produce.
    fn reference(new: &[u8], base: &[u8], gap: usize) -> std::vec::Vec<u8> {
        let n = new.len();
        let mut runs: std::vec::Vec<(usize, usize)> = std::vec::Vec::new();
        let mut i = 0;
        while i < n {
            if new[i] == base[i] {
                i += 1;
                continue;
            }
            let mut end = i;
            while end < n && new[end] != base[end] {
                end += 1;
            }
            match runs.last_mut() {
                Some(last) if i - last.1 < gap => last.1 = end,
                _ => runs.push((i, end)),
            }
            i = end;
        }
        if runs.is_empty() {
            return std::vec![0, 1];
        }
        let mut out = std::vec::Vec::new();
        let mut done = 0;
        for (k, &(s, e)) in runs.iter().enumerate() {
            let mut head = [0u8; 20];
            let mut p = 0;
            varint::put(&mut head, &mut p, (s - done) as u64);
            let last = u64::from(k + 1 == runs.len());
            varint::put(&mut head, &mut p, (e - s) as u64 * 2 + last);
            out.extend_from_slice(&head[..p]);
            out.extend(new[s..e].iter().zip(&base[s..e]).map(|(a, b)| a ^ b));
            done = e;
        }
        out
    }

    #[test]
    fn same_runs_as_the_byte_by_byte_reference() {
        let mut rand = crate::test_rng(0x2545_f491_4f6c_dd1du64);
        let mut out = std::vec![0u8; 3 * 4096];
        // fewer rounds under Miri, which runs them about a thousand times slower
        let rounds = if cfg!(miri) { 60 } else { 3000 };
        for round in 0..rounds {
            let len = match round % 3 {
                0 => (rand() % 300) as usize,
                1 => 4096,
                _ => 64 * (1 + (rand() % 8) as usize),
            };
            let base: std::vec::Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            // change density from none to all, in clusters and single bytes
            let density = rand() % 101;
            let mut new = base.clone();
            let mut i = 0;
            while i < len {
                if rand() % 100 < density {
                    let burst = 1 + (rand() % 6) as usize;
                    for b in new.iter_mut().skip(i).take(burst) {
                        *b ^= 1 + (rand() % 255) as u8;
                    }
                    i += burst;
                }
                i += 1 + (rand() % 4) as usize;
            }
            let want = reference(&new, &base, MERGE_GAP);
            let n = encode(&new, &base, &mut out, usize::MAX, Merge::Tight).unwrap();
            assert_eq!(&out[..n], &want[..], "len {len} density {density}");
            // a limit one short of the delta refuses it, the exact one takes it
            assert_eq!(encode(&new, &base, &mut out, n - 1, Merge::Tight), None);
            assert_eq!(encode(&new, &base, &mut out, n, Merge::Tight), Some(n));
            // the rule under LZ4: its own runs, never fewer bytes, and it applies the same
            let wide = reference(&new, &base, MERGE_GAP_LZ4);
            let m = encode(&new, &base, &mut out, usize::MAX, Merge::UnderLz4).unwrap();
            assert_eq!(
                &out[..m],
                &wide[..],
                "under LZ4: len {len} density {density}"
            );
            assert!(m >= n);
            let mut dst = base.clone();
            assert_eq!(apply(&out[..m], &mut dst), Ok(m));
            assert_eq!(dst, new);
        }
    }

    #[test]
    fn no_merge_across_an_unchanged_chunk() {
        // a change at the end of one 64-byte chunk, an unchanged chunk, then a change two
        // bytes into the next: far apart, two runs
        let base = [0u8; 256];
        for (last, first) in [(63, 129), (62, 129), (62, 130), (63, 130), (126, 193)] {
            let mut new = base;
            new[last] = 1;
            new[first] = 2;
            let mut out = [0u8; 64];
            let n = encode(&new, &base, &mut out, 64, Merge::Tight).unwrap();
            assert_eq!(
                &out[..n],
                &reference(&new, &base, MERGE_GAP)[..],
                "{last} {first}"
            );
        }
    }

    #[test]
    fn bounds_never_exceed_the_deltas() {
        let mut rand = crate::test_rng(0x853c_49e6_748f_ea9bu64);
        let mut out = std::vec![0u8; 3 * 4096];
        let rounds = if cfg!(miri) { 30 } else { 1500 };
        for round in 0..rounds {
            let (len, piece) = if round % 2 == 0 {
                (4096, 1024)
            } else {
                (2048, 256)
            };
            let base: std::vec::Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            let density = rand() % 101;
            let mut new = base.clone();
            let mut i = (rand() % 700) as usize;
            while i < len {
                if rand() % 100 < density {
                    new[i] ^= 1 + (rand() % 255) as u8;
                }
                i += 1 + (rand() % 9) as usize;
            }
            let b = bounds(&new, &base, piece);
            let whole = encode(&new, &base, &mut out, usize::MAX, Merge::Tight).unwrap();
            if new == base {
                assert_eq!(b.whole, 0);
            } else {
                assert!(b.whole <= whole && b.whole > 0, "{} > {whole}", b.whole);
            }
            // tight: the headers are the only slack (a byte per long skip or run)
            assert!(
                whole - b.whole.max(2) <= 2 * len / 64 + 2,
                "{} vs {whole}",
                b.whole
            );
            // the bounds hold for the wider gap's deltas too (merging never saves bytes)
            let wide = encode(&new, &base, &mut out, usize::MAX, Merge::UnderLz4).unwrap();
            assert!(b.whole <= wide, "{} > {wide} (under LZ4)", b.whole);
            for (p, &bound) in b.pieces.iter().enumerate().take(len / piece) {
                let r = p * piece..(p + 1) * piece;
                let own = encode(
                    &new[r.clone()],
                    &base[r.clone()],
                    &mut out,
                    usize::MAX,
                    Merge::Tight,
                )
                .unwrap();
                assert!(bound <= own, "piece {p}: {bound} > {own}");
                let wide = encode(
                    &new[r.clone()],
                    &base[r],
                    &mut out,
                    usize::MAX,
                    Merge::UnderLz4,
                )
                .unwrap();
                assert!(bound <= wide, "piece {p}: {bound} > {wide} (under LZ4)");
                assert!(
                    own - bound.max(2) <= 2 * piece / 64 + 2,
                    "piece {p}: {bound} vs {own}"
                );
            }
        }
    }

    #[test]
    fn limit_is_respected() {
        let base = [0u8; 4096];
        let new = [1u8; 4096];
        let mut out = [0u8; 8192];
        assert_eq!(encode(&new, &base, &mut out, 100, Merge::Tight), None);
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
