//! XBZRLE, QEMU's page delta encoding, for VMMs that speak QEMU's migration format.
//!
//! Written from the format's published grammar: an encoded page is a sequence of
//! `zrun nzrun bytes[nzrun]` groups, where `zrun` counts bytes equal to the old page and
//! `nzrun` counts the new bytes that follow, sent verbatim. Both lengths are ULEB128 of at
//! most 14 bits (two bytes). Only the first zero run may be empty; a non-zero run never is;
//! the encoding ends after a non-zero run (no trailing zero run), so an unchanged page
//! encodes to nothing.
//!
//! **When the encoder gives up** (and the caller sends the page raw): exactly when QEMU's
//! scalar encoder (`xbzrle_encode_buffer` in `migration/xbzrle.c`) does, so that a caller
//! sends the bytes QEMU would. QEMU checks for two spare bytes of its budget `dlen` before
//! each step of its walk, including the step that finds only unchanged bytes left. Stated
//! on the whole encoding `E` of a non-empty page, for a budget `limit`, it gives up when
//!
//! * `limit < 2`, even for an unchanged page (which otherwise encodes to nothing);
//! * `E` is longer than `limit`;
//! * `E` is longer than `limit - 2` and the page ends with unchanged bytes (QEMU's walk
//!   reaches them with fewer than two spare bytes): old `00 00 00 00`, new `11 00 00 00`
//!   encodes to `00 01 11`, which needs a budget of 5, not 3;
//! * a run is longer than 14 bits can count (pages over 16 KiB only; QEMU asserts there).
//!
//! QEMU's AVX512 encoder disagrees with the scalar one in the third case (it also writes
//! past its budget there); the scalar rule is the one followed.
//!
//! The decoder is as strict as QEMU's (`xbzrle_decode_buffer`): any violation of the
//! grammar is an error, and it never writes past the page.

/// Largest run length the 14-bit ULEB128 can carry.
pub const MAX_RUN: usize = 0x3fff;

/// Why an XBZRLE page was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum XbzrleError {
    /// A run length is not a valid ULEB128 of at most 14 bits, or the input ends inside it.
    BadLength,
    /// An empty zero run after the first, or an empty non-zero run.
    EmptyRun,
    /// A run reaches past the end of the page.
    PastEnd,
    /// The input ends inside a run's bytes.
    Truncated,
}

impl core::fmt::Display for XbzrleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            XbzrleError::BadLength => "XBZRLE run length is not a 14-bit ULEB128",
            XbzrleError::EmptyRun => "XBZRLE empty run",
            XbzrleError::PastEnd => "XBZRLE run past the end of the page",
            XbzrleError::Truncated => "XBZRLE input ends inside a run",
        })
    }
}

/// `v` (at most [`MAX_RUN`]) as a ULEB128 in the low bytes of a word, and its length.
#[inline(always)]
fn uleb14(v: usize) -> (u32, usize) {
    let v = v as u32;
    if v < 0x80 {
        (v, 1)
    } else {
        ((v & 0x7f) | 0x80 | (v >> 7) << 8, 2)
    }
}

fn get_len(buf: &[u8], p: &mut usize) -> Result<usize, XbzrleError> {
    let b0 = *buf.get(*p).ok_or(XbzrleError::BadLength)?;
    if b0 < 0x80 {
        *p += 1;
        return Ok(usize::from(b0));
    }
    let b1 = *buf.get(*p + 1).ok_or(XbzrleError::BadLength)?;
    if b1 >= 0x80 {
        return Err(XbzrleError::BadLength);
    }
    *p += 2;
    Ok(usize::from(b0 & 0x7f) | (usize::from(b1) << 7))
}

/// Encodes `new` against `old` (same length, at most 16 KiB so runs fit 14 bits) into
/// `out`. Returns the length (0 for an unchanged page), or `None` where QEMU's encoder gives
/// up with a budget of `limit` bytes (see the module comment; `limit` is capped at
/// `out.len()`). Compares the pages with the widest instructions the CPU has (AVX2 where
/// present, chosen at run time); the bytes are those of [`encode_baseline`].
pub fn encode(new: &[u8], old: &[u8], out: &mut [u8], limit: usize) -> Option<usize> {
    crate::fast::with_widest_masks(Encoding {
        new,
        old,
        out,
        limit,
    })
}

/// [`encode`] without its run-time choice: the page comparison every CPU of the target has
/// (SSE2 on x86_64, words elsewhere and in the `safe` build). The same bytes; for tests
/// that check both paths.
pub fn encode_baseline(new: &[u8], old: &[u8], out: &mut [u8], limit: usize) -> Option<usize> {
    crate::fast::with_baseline_masks(Encoding {
        new,
        old,
        out,
        limit,
    })
}

/// One call of the encoder, run by `fast` with the difference masks it picks.
struct Encoding<'a> {
    new: &'a [u8],
    old: &'a [u8],
    out: &'a mut [u8],
    limit: usize,
}

impl crate::fast::WithMasks for Encoding<'_> {
    type Output = Option<usize>;

    // always inlined, so that it is compiled with the target features of its caller
    #[inline(always)]
    fn run(self, mask: impl Fn(&[u8; 64], &[u8; 64]) -> u64) -> Option<usize> {
        encode_with_masks(self.new, self.old, self.out, self.limit, mask)
    }
}

/// Where the walk over the difference masks is.
struct Walk<'a> {
    new: &'a [u8],
    out: &'a mut [u8],
    /// Bytes written.
    len: usize,
    /// End of the last non-zero run written: where the next zero run starts.
    runs_end: usize,
    /// Start of the non-zero run being walked, if one is.
    open: Option<usize>,
}

impl Walk<'_> {
    /// Writes the group whose non-zero run is `start..end`; `None` if it does not fit.
    #[inline(always)]
    fn group(&mut self, start: usize, end: usize) -> Option<()> {
        let (zrun, nzrun) = (start - self.runs_end, end - start);
        if zrun > MAX_RUN || nzrun > MAX_RUN {
            return None;
        }
        let (z, z_len) = uleb14(zrun);
        let (nz, nz_len) = uleb14(nzrun);
        let head_len = z_len + nz_len;
        let o = self.len;
        if o + head_len + nzrun > self.out.len() {
            return None;
        }
        let head = (z | nz << (8 * z_len)).to_le_bytes();
        if nzrun <= 16 && o + 4 + 16 <= self.out.len() && start + 16 <= self.new.len() {
            // most runs are short: fixed-size copies, whose extra bytes the next group or
            // nothing (they lie past the encoding's end) overwrites
            self.out[o..o + 4].copy_from_slice(&head);
            self.out[o + head_len..o + head_len + 16].copy_from_slice(&self.new[start..start + 16]);
        } else {
            self.out[o..o + head_len].copy_from_slice(&head[..head_len]);
            self.out[o + head_len..o + head_len + nzrun].copy_from_slice(&self.new[start..end]);
        }
        self.len = o + head_len + nzrun;
        self.runs_end = end;
        Some(())
    }

    /// Walks the 64 bytes at `base` whose difference mask is `m` (bit `i`: byte `base + i`
    /// differs), writing each non-zero run that ends in them.
    #[inline(always)]
    fn chunk(&mut self, base: usize, m: u64) -> Option<()> {
        let mut from = 0;
        loop {
            let start = match self.open {
                Some(start) => start,
                None => {
                    let changed = m & (!0u64 << from);
                    if changed == 0 {
                        return Some(());
                    }
                    from = changed.trailing_zeros();
                    base + from as usize
                }
            };
            let same = !m & (!0u64 << from);
            if same == 0 {
                self.open = Some(start); // the run goes on into the next chunk
                return Some(());
            }
            from = same.trailing_zeros();
            self.open = None;
            self.group(start, base + from as usize)?;
        }
    }
}

/// The encoder over 64-byte difference masks from `mask` (bit `i` set where byte `i`
/// differs): whole chunks that are all unchanged or all changed inside a run are passed
/// over, the others walked a run at a time with bit scans. The last partial chunk is
/// compared padded with equal bytes.
#[inline(always)]
fn encode_with_masks(
    new: &[u8],
    old: &[u8],
    out: &mut [u8],
    limit: usize,
    mask: impl Fn(&[u8; 64], &[u8; 64]) -> u64,
) -> Option<usize> {
    let n = new.len().min(old.len());
    let (new, old) = (&new[..n], &old[..n]);
    let limit = limit.min(out.len());
    if n == 0 {
        return Some(0);
    }
    if limit < 2 {
        return None;
    }
    let mut walk = Walk {
        new,
        out: &mut out[..limit],
        len: 0,
        runs_end: 0,
        open: None,
    };
    let mut chunks = new.chunks_exact(64).zip(old.chunks_exact(64));
    let mut base = 0;
    for (a, b) in &mut chunks {
        let (Ok(a), Ok(b)) = (<&[u8; 64]>::try_from(a), <&[u8; 64]>::try_from(b)) else {
            return None; // chunks_exact gives 64 bytes
        };
        let m = mask(a, b);
        let passed_over = match walk.open {
            None => m == 0,
            Some(_) => m == !0,
        };
        if !passed_over {
            walk.chunk(base, m)?;
        }
        base += 64;
    }
    let tail = n - base;
    if tail > 0 {
        let (mut a, mut b) = ([0u8; 64], [0u8; 64]);
        a[..tail].copy_from_slice(&new[base..]);
        b[..tail].copy_from_slice(&old[base..]);
        // the padding compares equal, so a run reaching the end is closed at `n`
        walk.chunk(base, mask(&a, &b))?;
    }
    if let Some(start) = walk.open {
        walk.group(start, n)?;
    }
    fits_with_trailing(walk.len, limit, new[n - 1] == old[n - 1])
}

/// The last part of the give-up rule: a changed page that ends with unchanged bytes needs
/// two spare bytes after its encoding of `len` bytes.
#[inline]
fn fits_with_trailing(len: usize, limit: usize, ends_unchanged: bool) -> Option<usize> {
    if len > 0 && ends_unchanged && len + 2 > limit {
        None
    } else {
        Some(len)
    }
}

/// Applies an encoded page to `page` (which holds the old content). Checks the whole input
/// first, so on error `page` is unchanged.
pub fn decode(encoded: &[u8], page: &mut [u8]) -> Result<(), XbzrleError> {
    walk(encoded, page.len(), |_, _| {})?;
    walk(encoded, page.len(), |at, bytes| {
        page[at..at + bytes.len()].copy_from_slice(bytes)
    })
}

fn walk(encoded: &[u8], len: usize, mut f: impl FnMut(usize, &[u8])) -> Result<(), XbzrleError> {
    let mut p = 0;
    let mut at = 0;
    while p < encoded.len() {
        let zrun = get_len(encoded, &mut p)?;
        if zrun == 0 && at != 0 {
            return Err(XbzrleError::EmptyRun);
        }
        at += zrun;
        if p >= encoded.len() {
            // a zero run must be followed by a non-zero run
            return Err(XbzrleError::BadLength);
        }
        let nzrun = get_len(encoded, &mut p)?;
        if nzrun == 0 {
            return Err(XbzrleError::EmptyRun);
        }
        if at + nzrun > len {
            return Err(XbzrleError::PastEnd);
        }
        let bytes = encoded.get(p..p + nzrun).ok_or(XbzrleError::Truncated)?;
        f(at, bytes);
        p += nzrun;
        at += nzrun;
    }
    Ok(())
}

/// QEMU's default XBZRLE cache size (the `xbzrle-cache-size` migration parameter): 64 MiB.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

/// Sync rounds an entry is safe from replacement after it was last touched (QEMU's
/// `CACHED_PAGE_LIFETIME` in `migration/page_cache.c`).
const LIFETIME: u64 = 2;

/// A slot's tag when it holds no page.
const EMPTY: u64 = u64::MAX;

/// QEMU's XBZRLE page cache (`migration/page_cache.c`) and its use by QEMU's source
/// (`migration/ram.c`), over caller-provided storage: previous versions of pages, one slot
/// per `pfn % slots` (QEMU's sizes are powers of two, where this is its mask).
///
/// Each entry remembers the bitmap-sync round it was last touched in: inserted, or found by
/// a lookup (`cache_is_cached` updates the age on a hit). An insert into a slot that holds
/// another page touched within the last two rounds is refused (`cache_insert` returns -1),
/// and the page is then simply not cached: QEMU sends it raw, and the next change of it is
/// a miss again. The same page, or an empty or older slot, is always replaced. The caller
/// advances the round with [`XbzrleCache::sync`] at each bitmap sync after the first (a new
/// cache is in round 1, QEMU's first sync at setup).
pub struct XbzrleCache<'a> {
    pages: &'a mut [u8],
    tags: &'a mut [u64],
    touched: &'a mut [u64],
    page_size: usize,
    round: u64,
}

/// What QEMU's source sends for a page ([`XbzrleCache::send_page`],
/// [`XbzrleCache::encode_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XbzrlePage {
    /// A zero page: its flag and one byte.
    Zero,
    /// The page equals its cached version: nothing to send.
    Unchanged,
    /// An XBZRLE encoding of this many bytes is at the front of `out`.
    Delta(usize),
    /// Not cached, the first round, or the encoding gave up: send the page raw.
    Raw,
}

impl XbzrlePage {
    /// Bytes QEMU's stream carries for this page of `page_size` bytes (`migration/ram.c`):
    /// an 8-byte page header (address and flags; the RAM block's name, which QEMU adds when
    /// the block changes, not counted), then one byte for a zero page, the page for a raw
    /// one, or an encoding flag, a 16-bit length and the encoding for a delta.
    pub const fn qemu_wire_bytes(self, page_size: usize) -> usize {
        match self {
            XbzrlePage::Zero => 8 + 1,
            XbzrlePage::Unchanged => 0,
            XbzrlePage::Delta(n) => 8 + 1 + 2 + n,
            XbzrlePage::Raw => 8 + page_size,
        }
    }
}

impl<'a> XbzrleCache<'a> {
    /// Bytes of storage for `slots` pages of `page_size` bytes (tags and rounds included).
    pub const fn storage_len(slots: usize, page_size: usize) -> usize {
        slots * (page_size + 16) + 8
    }

    /// Slots in a cache of `cache_bytes` (QEMU's `cache_init`: the size over the page size,
    /// which QEMU requires to be a power of two).
    pub const fn slots_for(cache_bytes: usize, page_size: usize) -> usize {
        match cache_bytes.checked_div(page_size) {
            Some(slots) => slots,
            None => 0,
        }
    }

    /// An empty cache over `storage` (at least `storage_len(slots, page_size)` bytes), in
    /// round 1; `None` if the storage is too small or `slots` or `page_size` is 0.
    pub fn new(storage: &'a mut [u8], slots: usize, page_size: usize) -> Option<Self> {
        if slots == 0 || page_size == 0 || storage.len() < Self::storage_len(slots, page_size) {
            return None;
        }
        let mut carve = crate::storage::Carver::new(storage);
        let tags = carve.words(slots).ok()?;
        tags.fill(EMPTY);
        let touched = carve.words(slots).ok()?;
        touched.fill(0);
        let pages = carve.bytes(slots * page_size).ok()?;
        Some(XbzrleCache {
            pages,
            tags,
            touched,
            page_size,
            round: 1,
        })
    }

    /// The current bitmap-sync round (1 for a new cache).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Starts the next round: call it at each bitmap sync after the first, before the pages
    /// of the new dirty bitmap are sent (QEMU's `dirty_sync_count`).
    pub fn sync(&mut self) {
        self.round = self.round.saturating_add(1);
    }

    fn slot(&self, pfn: u64) -> usize {
        (pfn % self.tags.len() as u64) as usize
    }

    fn page_mut(&mut self, slot: usize) -> &mut [u8] {
        let ps = self.page_size;
        &mut self.pages[slot * ps..(slot + 1) * ps]
    }

    /// The slot holding `pfn`, touched now (QEMU's `cache_is_cached`).
    fn lookup(&mut self, pfn: u64) -> Option<usize> {
        let s = self.slot(pfn);
        if self.tags[s] != pfn {
            return None;
        }
        self.touched[s] = self.round;
        Some(s)
    }

    /// The slot `pfn` may take, claimed for it now, or `None` where QEMU's age rule refuses
    /// (QEMU's `cache_insert` up to its copy).
    fn claim(&mut self, pfn: u64) -> Option<usize> {
        let s = self.slot(pfn);
        let fresh = self.touched[s].saturating_add(LIFETIME) > self.round;
        if self.tags[s] != EMPTY && self.tags[s] != pfn && fresh {
            return None;
        }
        self.tags[s] = pfn;
        self.touched[s] = self.round;
        Some(s)
    }

    /// Caches `page` as the latest version of `pfn`, unless the slot holds another page
    /// touched within the last two rounds; `false` when refused (QEMU's `cache_insert`).
    pub fn insert(&mut self, pfn: u64, page: &[u8]) -> bool {
        match self.claim(pfn) {
            Some(s) => {
                self.page_mut(s).copy_from_slice(page);
                true
            }
            None => false,
        }
    }

    /// Caches a zero page as the latest version of `pfn`, as [`insert`](Self::insert) does:
    /// for a page sent as a zero page (QEMU's `xbzrle_cache_zero_page`), so that the next
    /// delta of `pfn` is against what the destination holds.
    pub fn insert_zero(&mut self, pfn: u64) -> bool {
        match self.claim(pfn) {
            Some(s) => {
                self.page_mut(s).fill(0);
                true
            }
            None => false,
        }
    }

    /// Encodes `page` against the cached version of `pfn` into `out` (at least a page) and
    /// caches it, as QEMU's `save_xbzrle_page` does before the last stage: a miss tries to
    /// cache the page and sends it raw; a hit encodes with a budget of one page and keeps
    /// the new version, whether it goes out as a delta or, where the encoder gives up, raw.
    pub fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut [u8]) -> XbzrlePage {
        let Some(s) = self.lookup(pfn) else {
            self.insert(pfn, page);
            return XbzrlePage::Raw;
        };
        let ps = self.page_size;
        let result = match encode(page, &self.pages[s * ps..(s + 1) * ps], out, ps) {
            Some(0) => return XbzrlePage::Unchanged,
            Some(n) => XbzrlePage::Delta(n),
            None => XbzrlePage::Raw,
        };
        self.page_mut(s).copy_from_slice(page);
        result
    }

    /// What QEMU's source sends for `page` of `pfn` with XBZRLE on, in its order
    /// (`migration/ram.c`): a zero page as one (and, from the second round, cached as
    /// zeros); in the first round every other page raw, without touching the cache (QEMU
    /// starts XBZRLE once its first pass over memory is complete); after it,
    /// [`encode_page`](Self::encode_page).
    pub fn send_page(&mut self, pfn: u64, page: &[u8], out: &mut [u8]) -> XbzrlePage {
        if crate::bytes::is_zero(page) {
            if self.round > 1 {
                self.insert_zero(pfn);
            }
            return XbzrlePage::Zero;
        }
        if self.round == 1 {
            return XbzrlePage::Raw;
        }
        self.encode_page(pfn, page, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both encoders, the one [`super::encode`] picks for this CPU and the baseline: every
    /// test below checks that they agree, byte for byte.
    fn encode(new: &[u8], old: &[u8], out: &mut [u8], limit: usize) -> Option<usize> {
        let mut baseline = [0u8; 8192];
        let base_out = &mut baseline[..out.len().min(8192)];
        let want = encode_baseline(new, old, base_out, limit);
        let got = super::encode(new, old, out, limit);
        assert_eq!(got, want, "the two encoders disagree");
        if let Some(n) = got {
            assert_eq!(out[..n], base_out[..n], "the two encoders disagree");
        }
        got
    }

    #[test]
    fn both_encoders_agree_on_random_edits_and_budgets() {
        let mut rand = crate::test_rng(0xd1b5_4a32_d192_ed03);
        let old: [u8; 4096] =
            core::array::from_fn(|i| (i as u32).wrapping_mul(2_654_435_761) as u8);
        let mut out = [0u8; 4096];
        for _ in 0..if cfg!(miri) { 6 } else { 3000 } {
            let mut new = old;
            let edits = rand() % 40;
            for _ in 0..edits {
                let r = rand();
                let at = (r % 4096) as usize;
                let len = ((r >> 12) % if r >> 40 & 1 == 1 { 600 } else { 9 }) as usize;
                for b in &mut new[at..(at + len).min(4096)] {
                    *b ^= (r >> 24) as u8 | 1;
                }
            }
            let budget = (rand() % 4200) as usize;
            if let Some(n) = encode(&new, &old, &mut out, budget) {
                let mut page = old;
                decode(&out[..n], &mut page).unwrap();
                assert_eq!(page, new);
            }
        }
    }

    fn round_trip(new: &[u8], old: &[u8]) -> usize {
        let mut out = [0u8; 8192];
        let n = encode(new, old, &mut out, 8192).unwrap();
        let mut page = old.to_vec();
        decode(&out[..n], &mut page).unwrap();
        assert_eq!(page, new);
        n
    }

    #[test]
    fn grammar_examples() {
        let old = [0u8; 4096];
        assert_eq!(round_trip(&old, &old), 0, "unchanged encodes to nothing");
        let mut new = old;
        new[0] = 9;
        // first zero run may be empty: 00 01 09
        let mut out = [0u8; 16];
        assert_eq!(encode(&new, &old, &mut out, 16), Some(3));
        assert_eq!(&out[..3], &[0x00, 0x01, 0x09]);
        let mut new = old;
        new[200] = 1;
        new[201] = 2;
        // zrun 200 = c8 01, nzrun 2, bytes
        assert_eq!(encode(&new, &old, &mut out, 16), Some(5));
        assert_eq!(&out[..5], &[0xc8, 0x01, 0x02, 0x01, 0x02]);
        let mut new = old;
        new[4095] = 7;
        round_trip(&new, &old);
    }

    #[test]
    fn overflow_falls_back() {
        let old = [0u8; 4096];
        let new = [1u8; 4096];
        let mut out = [0u8; 8192];
        // a fully rewritten page needs 4096 bytes plus run headers
        assert_eq!(encode(&new, &old, &mut out, 4096), None);
    }

    #[test]
    fn gives_up_where_qemu_does_with_unchanged_bytes_left_and_under_two_spare() {
        let old = [0u8; 8];
        let mut new = old;
        new[0] = 0x11;
        let mut out = [0u8; 16];
        // the smallest case: QEMU's scalar encoder returns -1 for budgets 3 and 4
        for limit in [3, 4] {
            assert_eq!(encode(&new, &old, &mut out, limit), None, "budget {limit}");
        }
        assert_eq!(encode(&new, &old, &mut out, 5), Some(3));
        assert_eq!(&out[..3], &[0x00, 0x01, 0x11]);
        // a change that reaches the last byte leaves no unchanged bytes to walk: the budget
        // only has to hold the encoding
        let mut new = old;
        new[7] = 0x22;
        assert_eq!(encode(&new, &old, &mut out, 2), None);
        assert_eq!(encode(&new, &old, &mut out, 3), Some(3));
        assert_eq!(&out[..3], &[0x07, 0x01, 0x22]);
    }

    #[test]
    fn an_unchanged_page_needs_a_budget_of_two() {
        let page = [5u8; 4096];
        let mut out = [0u8; 4];
        assert_eq!(encode(&page, &page, &mut out, 0), None);
        assert_eq!(encode(&page, &page, &mut out, 1), None);
        assert_eq!(encode(&page, &page, &mut out, 2), Some(0));
        // `out` caps the budget too
        assert_eq!(encode(&page, &page, &mut out[..1], 4096), None);
        // an empty page has no walk to make (QEMU's loop never runs)
        assert_eq!(encode(&[], &[], &mut out, 0), Some(0));
    }

    #[test]
    fn the_real_call_at_4095_and_4096_bytes() {
        // QEMU's call: a 4096-byte page, a 4096-byte budget
        let old = [0u8; 4096];
        let mut out = [0u8; 8192];
        // the first k bytes changed: 00, a two-byte length, k bytes; unchanged bytes follow
        let head = |k: usize| {
            let mut p = old;
            p[..k].fill(0xa5);
            p
        };
        assert_eq!(encode(&head(4091), &old, &mut out, 4096), Some(4094));
        assert_eq!(
            encode(&head(4092), &old, &mut out, 4096),
            None,
            "4095 bytes"
        );
        assert_eq!(
            encode(&head(4093), &old, &mut out, 4096),
            None,
            "4096 bytes"
        );
        // the last 4096 - s bytes changed: a one-byte zero run s, a two-byte length, the
        // bytes; nothing follows, so the whole budget may be used
        let tail = |s: usize| {
            let mut p = old;
            p[s..].fill(0x5a);
            p
        };
        assert_eq!(encode(&tail(4), &old, &mut out, 4096), Some(4095));
        assert_eq!(encode(&tail(3), &old, &mut out, 4096), Some(4096));
        assert_eq!(encode(&tail(2), &old, &mut out, 4096), None, "4097 bytes");
        // each encoding that was kept decodes to its page
        for new in [head(4091), tail(4), tail(3)] {
            let n = encode(&new, &old, &mut out, 4096).unwrap();
            let mut page = old;
            decode(&out[..n], &mut page).unwrap();
            assert_eq!(page, new);
        }
    }

    #[test]
    fn strict_decoder() {
        let mut page = [0u8; 4096];
        assert_eq!(decode(&[0x00, 0x00], &mut page), Err(XbzrleError::EmptyRun));
        assert_eq!(
            decode(&[0x00, 0x01, 0x05, 0x00, 0x01, 0x06], &mut page),
            Err(XbzrleError::EmptyRun)
        );
        assert_eq!(
            decode(&[0xff, 0x1f, 0x02, 1, 2], &mut page),
            Err(XbzrleError::PastEnd)
        );
        assert_eq!(
            decode(&[0x80, 0x80, 0x01], &mut page),
            Err(XbzrleError::BadLength)
        );
        assert_eq!(decode(&[0x05], &mut page), Err(XbzrleError::BadLength));
        assert_eq!(
            decode(&[0x00, 0x03, 1], &mut page),
            Err(XbzrleError::Truncated)
        );
        assert_eq!(page, [0u8; 4096], "nothing written on error");
        assert_eq!(decode(&[], &mut page), Ok(()));
    }

    #[test]
    fn cache_keys_by_pfn() {
        let mut mem = [0u8; XbzrleCache::storage_len(2, 4096)];
        let mut c = XbzrleCache::new(&mut mem, 2, 4096).unwrap();
        let mut out = [0u8; 4096];
        let a = [3u8; 4096];
        assert_eq!(c.encode_page(0, &a, &mut out), XbzrlePage::Raw);
        assert_eq!(c.encode_page(0, &a, &mut out), XbzrlePage::Unchanged);
        let mut b = a;
        b[10] = 4;
        assert_eq!(c.encode_page(0, &b, &mut out), XbzrlePage::Delta(3));
        // pfn 2 shares pfn 0's slot and evicts it (once pfn 0 is two rounds old)
        c.sync();
        c.sync();
        assert_eq!(c.encode_page(2, &a, &mut out), XbzrlePage::Raw);
        assert_eq!(c.encode_page(0, &b, &mut out), XbzrlePage::Raw);
        // a page sent as a zero page is cached as one: the next delta is against zeros
        c.sync();
        c.sync();
        assert!(c.insert(0, &[0; 4096]));
        let mut one = [0u8; 4096];
        one[7] = 1;
        assert_eq!(c.encode_page(0, &one, &mut out), XbzrlePage::Delta(3));
        let mut page = [0u8; 4096];
        decode(&out[..3], &mut page).unwrap();
        assert_eq!(page, one);
    }

    #[test]
    fn a_page_touched_in_the_last_two_rounds_keeps_its_slot() {
        let mut mem = [0u8; XbzrleCache::storage_len(4, 4096)];
        let mut c = XbzrleCache::new(&mut mem, 4, 4096).unwrap();
        let mut out = [0u8; 4096];
        let (a, b) = ([1u8; 4096], [2u8; 4096]);
        assert!(c.insert(1, &a)); // round 1
        assert!(!c.insert(5, &b), "same round: refused");
        c.sync();
        assert!(!c.insert(5, &b), "one round later: refused");
        c.sync();
        assert!(c.insert(5, &b), "two rounds later: replaced");
        assert_eq!(
            c.encode_page(1, &a, &mut out),
            XbzrlePage::Raw,
            "pfn 1 was evicted"
        );
        // the refused insert of pfn 1 just now left pfn 5 cached: its next change is a delta
        let mut b2 = b;
        b2[9] = 0;
        assert_eq!(c.encode_page(5, &b2, &mut out), XbzrlePage::Delta(3));
        // the same page is always replaced, whatever its age
        assert!(c.insert(5, &b));
        assert_eq!(c.encode_page(5, &b, &mut out), XbzrlePage::Unchanged);
    }

    #[test]
    fn a_hit_counts_as_a_touch() {
        let mut mem = [0u8; XbzrleCache::storage_len(4, 4096)];
        let mut c = XbzrleCache::new(&mut mem, 4, 4096).unwrap();
        let mut out = [0u8; 4096];
        let a = [1u8; 4096];
        assert!(c.insert(2, &a)); // round 1
        c.sync();
        c.sync();
        // round 3: found, so touched now; an unchanged page is a hit too
        assert_eq!(c.encode_page(2, &a, &mut out), XbzrlePage::Unchanged);
        assert!(!c.insert(6, &a), "touched this round by the lookup");
        c.sync();
        assert!(!c.insert(6, &a));
        assert!(!c.insert_zero(6), "zero pages follow the same rule");
        c.sync();
        assert!(c.insert_zero(6));
        assert_eq!(c.round(), 5);
    }

    #[test]
    fn a_page_the_encoder_gives_up_on_is_still_cached() {
        let mut mem = [0u8; XbzrleCache::storage_len(1, 4096)];
        let mut c = XbzrleCache::new(&mut mem, 1, 4096).unwrap();
        let mut out = [0u8; 4096];
        assert!(c.insert(0, &[0; 4096]));
        let rewritten = [9u8; 4096];
        assert_eq!(c.encode_page(0, &rewritten, &mut out), XbzrlePage::Raw);
        // the next delta is against the page sent raw
        let mut next = rewritten;
        next[4095] = 0;
        assert_eq!(c.encode_page(0, &next, &mut out), XbzrlePage::Delta(4));
        assert_eq!(&out[..4], &[0xff, 0x1f, 0x01, 0x00]);
    }

    #[test]
    fn send_page_starts_xbzrle_in_the_second_round() {
        let mut mem = [0u8; XbzrleCache::storage_len(8, 4096)];
        let mut c = XbzrleCache::new(&mut mem, 8, 4096).unwrap();
        let mut out = [0u8; 4096];
        let page = [4u8; 4096];
        let mut edited = page;
        edited[0] = 5;
        // round 1: raw or zero, nothing cached
        assert_eq!(c.send_page(3, &page, &mut out), XbzrlePage::Raw);
        assert_eq!(c.send_page(3, &page, &mut out), XbzrlePage::Raw);
        assert_eq!(c.send_page(4, &[0; 4096], &mut out), XbzrlePage::Zero);
        c.sync();
        // round 2: a miss is cached and sent raw; a zero page is cached as zeros
        assert_eq!(c.send_page(3, &page, &mut out), XbzrlePage::Raw);
        assert_eq!(c.send_page(4, &[0; 4096], &mut out), XbzrlePage::Zero);
        c.sync();
        assert_eq!(c.send_page(3, &edited, &mut out), XbzrlePage::Delta(3));
        assert_eq!(c.send_page(3, &edited, &mut out), XbzrlePage::Unchanged);
        let mut one = [0u8; 4096];
        one[100] = 1;
        assert_eq!(c.send_page(4, &one, &mut out), XbzrlePage::Delta(3));
        assert_eq!(&out[..3], &[100, 1, 1]);
    }

    #[test]
    fn qemu_stream_bytes_per_page() {
        assert_eq!(XbzrlePage::Zero.qemu_wire_bytes(4096), 9);
        assert_eq!(XbzrlePage::Unchanged.qemu_wire_bytes(4096), 0);
        assert_eq!(XbzrlePage::Delta(3).qemu_wire_bytes(4096), 14);
        assert_eq!(XbzrlePage::Raw.qemu_wire_bytes(4096), 4104);
        assert_eq!(
            XbzrleCache::slots_for(DEFAULT_CACHE_BYTES, 4096),
            16384,
            "QEMU's default cache: 64 MiB of 4 KiB pages"
        );
    }
}
