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

use crate::bytes::mismatch;

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

fn put_len(out: &mut [u8], o: &mut usize, limit: usize, v: usize) -> Option<()> {
    if v < 0x80 {
        if *o + 1 > limit {
            return None;
        }
        out[*o] = v as u8;
        *o += 1;
    } else {
        if *o + 2 > limit {
            return None;
        }
        out[*o] = (v as u8 & 0x7f) | 0x80;
        out[*o + 1] = (v >> 7) as u8;
        *o += 2;
    }
    Some(())
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
/// `out.len()`).
pub fn encode(new: &[u8], old: &[u8], out: &mut [u8], limit: usize) -> Option<usize> {
    let n = new.len().min(old.len());
    let limit = limit.min(out.len());
    if n == 0 {
        return Some(0);
    }
    if limit < 2 {
        return None;
    }
    let mut o = 0;
    let mut i = 0;
    while i < n {
        let z = mismatch(new, old, i);
        if z >= n {
            break; // no trailing zero run
        }
        // non-zero run: up to the next byte that matches again
        let mut e = z + 1;
        while e < n && new[e] != old[e] {
            e += 1;
        }
        let (zrun, nzrun) = (z - i, e - z);
        if zrun > MAX_RUN || nzrun > MAX_RUN {
            return None;
        }
        put_len(out, &mut o, limit, zrun)?;
        put_len(out, &mut o, limit, nzrun)?;
        if o + nzrun > limit {
            return None;
        }
        out[o..o + nzrun].copy_from_slice(&new[z..e]);
        o += nzrun;
        i = e;
    }
    fits_with_trailing(o, limit, new[n - 1] == old[n - 1])
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

/// QEMU-style XBZRLE page cache: previous versions of pages, keyed by page frame number,
/// one slot per `pfn % slots` (a newer page replaces an older one in its slot), over
/// caller-provided storage.
pub struct XbzrleCache<'a> {
    pages: &'a mut [u8],
    tags: &'a mut [u64],
    page_size: usize,
}

/// What [`XbzrleCache::encode_page`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XbzrlePage {
    /// The page equals its cached version: nothing to send.
    Unchanged,
    /// An XBZRLE encoding of this many bytes is at the front of `out`.
    Delta(usize),
    /// Not cached before, or the encoding overflowed: send the page raw.
    Raw,
}

impl<'a> XbzrleCache<'a> {
    /// Bytes of storage for `slots` pages of `page_size` bytes (tags included).
    pub const fn storage_len(slots: usize, page_size: usize) -> usize {
        slots * (page_size + 8) + 8
    }

    /// A cache over `storage` (at least `storage_len(slots, page_size)` bytes); `None` if
    /// the storage is too small or `slots` is 0.
    pub fn new(storage: &'a mut [u8], slots: usize, page_size: usize) -> Option<Self> {
        if slots == 0 || page_size == 0 || storage.len() < Self::storage_len(slots, page_size) {
            return None;
        }
        let mut carve = crate::storage::Carver::new(storage);
        let tags = carve.words(slots).ok()?;
        tags.fill(u64::MAX);
        let pages = carve.bytes(slots * page_size).ok()?;
        Some(XbzrleCache {
            pages,
            tags,
            page_size,
        })
    }

    fn slot(&self, pfn: u64) -> usize {
        (pfn % self.tags.len() as u64) as usize
    }

    /// Encodes `page` against the cached version of `pfn` into `out` (QEMU's encoder side),
    /// and caches `page` as the new version.
    pub fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut [u8]) -> XbzrlePage {
        let s = self.slot(pfn);
        let ps = self.page_size;
        let result = if self.tags[s] != pfn {
            XbzrlePage::Raw
        } else {
            match encode(page, &self.pages[s * ps..(s + 1) * ps], out, ps) {
                Some(0) => XbzrlePage::Unchanged,
                Some(n) => XbzrlePage::Delta(n),
                None => XbzrlePage::Raw,
            }
        };
        self.insert(pfn, page);
        result
    }

    /// Records `page` as the latest version of `pfn` without encoding it: for a page sent
    /// another way (QEMU caches a zero page it sent as such), so that the next delta of
    /// `pfn` is against what the destination holds.
    pub fn insert(&mut self, pfn: u64, page: &[u8]) {
        let s = self.slot(pfn);
        let ps = self.page_size;
        self.tags[s] = pfn;
        self.pages[s * ps..(s + 1) * ps].copy_from_slice(page);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // pfn 2 shares pfn 0's slot and evicts it
        assert_eq!(c.encode_page(2, &a, &mut out), XbzrlePage::Raw);
        assert_eq!(c.encode_page(0, &b, &mut out), XbzrlePage::Raw);
        // a page sent as a zero page is cached as one: the next delta is against zeros
        c.insert(0, &[0; 4096]);
        let mut one = [0u8; 4096];
        one[7] = 1;
        assert_eq!(c.encode_page(0, &one, &mut out), XbzrlePage::Delta(3));
        let mut page = [0u8; 4096];
        decode(&out[..3], &mut page).unwrap();
        assert_eq!(page, one);
    }
}
