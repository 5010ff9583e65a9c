//! The built-in page set: a few passes over a small memory with the kinds of pages the codec
//! cares about (zero, duplicate, text-like, counters, noise, partly rewritten pages), fully
//! determined by the page number and the pass, so the firmware and a host test produce the
//! same input without sharing any file.

/// Page size of the set.
pub const PAGE_SIZE: usize = 4096;
/// Pages (pfns 0..PAGES) in the set.
pub const PAGES: u64 = 96;
/// Passes: pass 0 sends every page, later passes the pages dirtied since.
pub const PASSES: u64 = 4;
/// Tag and length of the blob sent before the end of the stream (a stand-in for vCPU state).
pub const BLOB_TAG: u32 = 0x43505530; // "CPU0"
pub const BLOB_LEN: usize = 200;

/// One operation on the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Send page `pfn` (its bytes: [`fill_page`] with this pass).
    Page { pfn: u64, pass: u64 },
    /// The blob ([`fill_blob`]).
    Blob,
    /// End of a pass.
    EndIteration,
    /// End of the stream.
    Finish,
}

/// Whether `pfn` is sent in `pass`.
pub fn dirty(pfn: u64, pass: u64) -> bool {
    pass == 0 || (pfn * 7 + pass).is_multiple_of(3) || (pass == PASSES - 1 && pfn % 5 == 1)
}

/// The operations in order, one per index; `None` past the end.
pub fn op(mut i: u64) -> Option<Op> {
    for pass in 0..PASSES {
        for pfn in 0..PAGES {
            if dirty(pfn, pass) {
                if i == 0 {
                    return Some(Op::Page { pfn, pass });
                }
                i -= 1;
            }
        }
        if pass == PASSES - 1 {
            if i == 0 {
                return Some(Op::Blob);
            }
            i -= 1;
        }
        if i == 0 {
            return Some(Op::EndIteration);
        }
        i -= 1;
    }
    if i == 0 {
        Some(Op::Finish)
    } else {
        None
    }
}

/// Xorshift64: the noise source.
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Writes page `pfn` as it is in `pass` into `page` (`PAGE_SIZE` bytes).
pub fn fill_page(pfn: u64, pass: u64, page: &mut [u8]) {
    let page = &mut page[..PAGE_SIZE];
    let mut x = (pfn + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    match pfn % 8 {
        0 | 1 => page.fill(0),
        2 => {
            // text-like: a line with the pfn, repeated; each pass edits one line
            for (i, b) in page.iter_mut().enumerate() {
                *b = b"pagewire offload line 0000\n"[i % 27];
            }
            let line = (pass as usize * 5 + pfn as usize) % 150;
            page[line * 27 + 22] = b'0' + (pass % 10) as u8;
        }
        3 => {
            // the same content on every such page: whole-page duplicates
            for (i, b) in page.iter_mut().enumerate() {
                *b = (i / 16) as u8 ^ 0x5a;
            }
        }
        4 => {
            // noise, with a word rewritten per pass: a delta against the previous version
            for b in page.iter_mut() {
                *b = next(&mut x) as u8;
            }
            for k in 0..pass as usize {
                page[(k * 613 + 40) % PAGE_SIZE] ^= 0xff;
            }
        }
        5 => {
            // counters: compressible but not repetitive
            for (i, c) in page.chunks_exact_mut(4).enumerate() {
                let v = (pfn as u32) << 16 | (i as u32 + pass as u32 * 3);
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        6 => {
            // half zero, half noise that changes every pass
            x ^= pass << 32;
            let (a, b) = page.split_at_mut(PAGE_SIZE / 2);
            a.fill(0);
            for v in b.iter_mut() {
                *v = next(&mut x) as u8;
            }
        }
        _ => {
            // blocks of the kind-3 page, one moved and one zeroed: block references
            let q = PAGE_SIZE / 4;
            for (i, b) in page.iter_mut().enumerate() {
                let src = if i < q { i + q } else { i };
                *b = (src / 16) as u8 ^ 0x5a;
            }
            page[q..2 * q].fill(0);
            page[2 * q + pass as usize] ^= 1;
        }
    }
}

/// Writes the blob into `blob` (`BLOB_LEN` bytes).
pub fn fill_blob(blob: &mut [u8]) {
    for (i, b) in blob[..BLOB_LEN].iter_mut().enumerate() {
        *b = (i * 3) as u8;
    }
}
