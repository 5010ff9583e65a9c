//! A second XBZRLE implementation, written from the format's rules as `pagewire::xbzrle`'s
//! module comment states them and kept deliberately plain (a byte at a time, into vectors),
//! so that the codec's encoder and decoder can be checked against it: the codec's
//! differential tests (`tests/xbzrle_reference.rs`) and the fuzz target
//! `xbzrle_differential` (which includes this file) compare the two on every input they
//! make. Any difference is a bug in one of them.
//!
//! The rules:
//!
//! * An encoded page is a sequence of groups `zrun nzrun bytes[nzrun]`: `zrun` bytes equal
//!   to the old page, then `nzrun` new bytes, sent as they are.
//! * A length is a ULEB128 of one byte (`0xxxxxxx`) or two (`1xxxxxxx 0xxxxxxx`, low seven
//!   bits first), so at most `0x3fff`.
//! * Only the first group's zero run may be empty; no non-zero run is; runs stay inside the
//!   page; the input ends right after a group's bytes. An empty input leaves the page as it
//!   was.
//! * The encoder writes the maximal runs: every zero run ends at a changed byte, every
//!   non-zero run at an unchanged byte or the end of the page, and no group follows the
//!   last changed byte.
//! * It gives up (`None`) with a budget under 2 bytes, when the encoding is longer than the
//!   budget, when the page changed and ends with unchanged bytes and the encoding leaves
//!   fewer than 2 bytes of the budget spare, and when a run needs more than 14 bits. An
//!   empty page encodes to nothing whatever the budget.

/// Appends `v` as a ULEB128 of at most 14 bits; `false` when it does not fit.
fn put_uleb14(v: usize, out: &mut Vec<u8>) -> bool {
    if v < 0x80 {
        out.push(v as u8);
        true
    } else if v <= 0x3fff {
        out.push(0x80 | (v & 0x7f) as u8);
        out.push((v >> 7) as u8);
        true
    } else {
        false
    }
}

/// Reads a ULEB128 of at most 14 bits at `*at`, moving past it.
fn get_uleb14(input: &[u8], at: &mut usize) -> Option<usize> {
    let first = *input.get(*at)?;
    if first & 0x80 == 0 {
        *at += 1;
        return Some(usize::from(first));
    }
    let second = *input.get(*at + 1)?;
    if second & 0x80 != 0 {
        return None;
    }
    *at += 2;
    Some(usize::from(first & 0x7f) + usize::from(second) * 128)
}

/// The groups of `new` against `old`: (zero run, first changed byte, non-zero run).
pub fn groups(new: &[u8], old: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut groups = Vec::new();
    let mut i = 0;
    while i < new.len() {
        let zero_start = i;
        while i < new.len() && new[i] == old[i] {
            i += 1;
        }
        if i == new.len() {
            break;
        }
        let changed_start = i;
        while i < new.len() && new[i] != old[i] {
            i += 1;
        }
        groups.push((changed_start - zero_start, changed_start, i - changed_start));
    }
    groups
}

/// The encoding of `new` against `old` (same length) within `budget` bytes, or `None`
/// where the rules say to give up.
pub fn encode(new: &[u8], old: &[u8], budget: usize) -> Option<Vec<u8>> {
    assert_eq!(new.len(), old.len(), "pages of different lengths");
    if new.is_empty() {
        return Some(Vec::new());
    }
    if budget < 2 {
        return None;
    }
    let mut encoded = Vec::new();
    for (zrun, start, nzrun) in groups(new, old) {
        if !put_uleb14(zrun, &mut encoded) || !put_uleb14(nzrun, &mut encoded) {
            return None;
        }
        encoded.extend_from_slice(&new[start..start + nzrun]);
    }
    let changed = !encoded.is_empty();
    let ends_unchanged = new.last() == old.last();
    if encoded.len() > budget || (changed && ends_unchanged && encoded.len() + 2 > budget) {
        return None;
    }
    Some(encoded)
}

/// The page that `encoded` makes of `old`, or `None` if the rules reject it.
pub fn decode(encoded: &[u8], old: &[u8]) -> Option<Vec<u8>> {
    let mut page = old.to_vec();
    let mut at = 0;
    let mut pos = 0;
    let mut first = true;
    while at < encoded.len() {
        let zrun = get_uleb14(encoded, &mut at)?;
        if zrun == 0 && !first {
            return None;
        }
        let nzrun = get_uleb14(encoded, &mut at)?;
        if nzrun == 0 || pos + zrun + nzrun > page.len() {
            return None;
        }
        pos += zrun;
        let bytes = encoded.get(at..at + nzrun)?;
        page[pos..pos + nzrun].copy_from_slice(bytes);
        at += nzrun;
        pos += nzrun;
        first = false;
    }
    Some(page)
}
