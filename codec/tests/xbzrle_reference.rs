//! `pagewire::xbzrle` against the second implementation in `reference/xbzrle.rs`, written
//! from the format's rules alone: the same encoding or the same give-up for any pages and
//! budget, the same accept/reject and the same page for any encoded input. Exhaustive on
//! small pages and inputs, random on real-sized pages.

#[path = "reference/xbzrle.rs"]
mod reference;

use pagewire::xbzrle;
use proptest::prelude::*;

/// An XBZRLE encoder's signature.
type Encode = fn(&[u8], &[u8], &mut [u8], usize) -> Option<usize>;

/// The codec's encoders (the one `encode` picks for this CPU and the baseline one) and the
/// reference agree on `(new, old, budget)`, with an output buffer of exactly the budget and
/// with a larger one.
fn check_encode(new: &[u8], old: &[u8], budget: usize) {
    let want = reference::encode(new, old, budget);
    let encoders: [(&str, Encode); 2] = [
        ("encode", xbzrle::encode),
        ("encode_baseline", xbzrle::encode_baseline),
    ];
    for (name, encode) in encoders {
        for spare in [0, 64] {
            let mut out = vec![0xee; budget + spare];
            let got = encode(new, old, &mut out, budget).map(|n| out[..n].to_vec());
            assert_eq!(
                got,
                want,
                "{name}: budget {budget}, out {} bytes\nold {old:02x?}\nnew {new:02x?}",
                budget + spare
            );
        }
    }
}

/// The codec's decoder and the reference agree on `input` applied to `old`; a rejected
/// input leaves the page as it was.
fn check_decode(input: &[u8], old: &[u8]) {
    let want = reference::decode(input, old);
    let mut page = old.to_vec();
    let got = xbzrle::decode(input, &mut page);
    match want {
        Some(p) => {
            assert_eq!(got, Ok(()), "input {input:02x?} on {} bytes", old.len());
            assert_eq!(page, p, "input {input:02x?}");
        }
        None => {
            assert!(got.is_err(), "input {input:02x?} on {} bytes", old.len());
            assert_eq!(page, old, "a rejected input changed the page");
        }
    }
}

/// Every page of `len` bytes over the alphabet {0, 1}.
fn binary_pages(len: usize) -> impl Iterator<Item = Vec<u8>> {
    (0..1u32 << len).map(move |bits| (0..len).map(|i| (bits >> i & 1) as u8).collect())
}

#[test]
fn every_small_page_pair_and_budget() {
    for len in 0..=6 {
        for old in binary_pages(len) {
            for new in binary_pages(len) {
                for budget in 0..=3 * len + 4 {
                    check_encode(&new, &old, budget);
                }
            }
        }
    }
}

#[test]
fn every_short_input_on_small_and_two_byte_length_pages() {
    // single-byte lengths, the two-byte forms of small and large lengths, bad second bytes
    const ALPHABET: [u8; 9] = [0x00, 0x01, 0x02, 0x03, 0x7f, 0x80, 0x81, 0x82, 0xff];
    let pages: Vec<Vec<u8>> = [0usize, 1, 3, 4, 130, 200]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 7) as u8).collect())
        .collect();
    let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
    let mut last = inputs.clone();
    for _ in 0..4 {
        last = last
            .iter()
            .flat_map(|p| {
                ALPHABET.iter().map(move |&b| {
                    let mut q = p.clone();
                    q.push(b);
                    q
                })
            })
            .collect();
        inputs.extend(last.iter().cloned());
    }
    for input in &inputs {
        for old in &pages {
            check_decode(input, old);
        }
    }
}

#[test]
fn runs_longer_than_fourteen_bits_give_up_in_both() {
    let old = vec![0u8; 20_000];
    let mut new = old.clone();
    new[19_000] = 1; // a zero run of 19,000 bytes
    check_encode(&new, &old, 40_000);
    let mut new = old.clone();
    new[..17_000].fill(3); // a non-zero run of 17,000 bytes
    check_encode(&new, &old, 40_000);
    new[..0x3fff].fill(3);
    new[0x3fff..].fill(0); // exactly 14 bits: encodable
    check_encode(&new, &old, 40_000);
    assert!(reference::encode(&new, &old, 40_000).is_some());
}

/// A 4 KiB page shaped like memory, from a seed: words of small integers and pointers.
fn memory_page(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..512)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = if x & 3 == 0 {
                0x7f00_0000_0000 | (x >> 20 & 0xff_fff8)
            } else {
                x >> 56
            };
            word.to_le_bytes()
        })
        .collect()
}

/// Edits of a page: (offset, length, value added to each byte).
fn edits() -> impl Strategy<Value = Vec<(usize, usize, u8)>> {
    prop_oneof![
        prop::collection::vec((0usize..4096, 1usize..8, 1u8..), 0..20),
        prop::collection::vec((0usize..4096, 1usize..400, 1u8..), 0..60),
        // a page rewritten from some offset on, up to its end
        (0usize..4096, 1u8..).prop_map(|(at, v)| vec![(at, 4096, v)]),
    ]
}

fn edited(old: &[u8], edits: &[(usize, usize, u8)]) -> Vec<u8> {
    let mut new = old.to_vec();
    for &(at, len, v) in edits {
        let end = (at + len).min(new.len());
        for b in &mut new[at..end] {
            *b = b.wrapping_add(v);
        }
    }
    new
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Budgets around the encoding's own length, where the give-up rule decides, and the
    /// real call's 4096.
    #[test]
    fn real_sized_pages_at_every_boundary(seed in any::<u64>(), edits in edits()) {
        let old = memory_page(seed);
        let new = edited(&old, &edits);
        let full = reference::encode(&new, &old, usize::MAX / 2).map_or(0, |e| e.len());
        for budget in [0, 1, 2, 3, 4096, 8192].into_iter().chain(full.saturating_sub(3)..full + 4) {
            check_encode(&new, &old, budget);
        }
    }

    /// Arbitrary bytes, and valid encodings with a byte changed, cut or extended.
    #[test]
    fn any_input_is_judged_alike(
        seed in any::<u64>(),
        edits in edits(),
        noise in prop::collection::vec(any::<u8>(), 0..48),
        flip in (any::<usize>(), any::<u8>()),
        cut in any::<usize>(),
    ) {
        let old = memory_page(seed);
        check_decode(&noise, &old);
        check_decode(&noise, &old[..64]);
        let new = edited(&old, &edits);
        if let Some(valid) = reference::encode(&new, &old, 8192) {
            check_decode(&valid, &old);
            if !valid.is_empty() {
                let mut bad = valid.clone();
                let at = flip.0 % bad.len();
                bad[at] ^= flip.1;
                check_decode(&bad, &old);
                check_decode(&valid[..cut % valid.len()], &old);
                let mut longer = valid.clone();
                longer.extend_from_slice(&noise);
                check_decode(&longer, &old);
            }
        }
    }
}
