//! Property tests: random page sequences shaped like guest memory must come back exactly,
//! for any configuration, including tiny caches with heavy eviction.

mod common;
use common::*;
use pagewire::{Config, DecodeMode, Decoder, MemoryImage, Result};
use proptest::prelude::*;

/// How the next page is made.
#[derive(Debug, Clone)]
enum Op {
    Zero,
    Text,
    Pointers,
    Random,
    /// An exact copy of an earlier page.
    Copy(usize),
    /// An earlier page with a few bytes changed.
    Edit(usize, u8),
    /// A block of an earlier page moved to another offset, the rest zero or text.
    MoveBlock(usize),
    /// An iteration boundary.
    EndIteration,
    /// A small opaque blob.
    Blob(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Zero),
        2 => Just(Op::Text),
        2 => Just(Op::Pointers),
        1 => Just(Op::Random),
        3 => any::<usize>().prop_map(Op::Copy),
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, n)| Op::Edit(i, n)),
        2 => any::<usize>().prop_map(Op::MoveBlock),
        1 => Just(Op::EndIteration),
        1 => any::<u8>().prop_map(Op::Blob),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![4 => Just(4096u32), 1 => Just(8192u32)],
        prop_oneof![Just(1u8), Just(2u8), Just(4u8), Just(8u8)],
        prop_oneof![Just(1u32), Just(2), Just(3), Just(5), Just(16), Just(256)],
        0u32..=4096,
        prop_oneof![Just(0u32), Just(4096), Just(60000)],
        any::<bool>(),
        any::<u32>(),
    )
        .prop_map(
            |(page_size, blocks_per_page, cache_pages, thr, extra_frame, lz4, stream_id)| Config {
                page_size,
                blocks_per_page,
                cache_pages,
                delta_threshold: thr.min(page_size),
                frame_bytes: page_size + pagewire::RECORD_OVERHEAD as u32 + extra_frame,
                lz4,
                stream_id,
            },
        )
}

/// Turns ops into steps: pfns drawn from a small range so that pages get rewritten.
fn build(cfg: &Config, ops: &[Op], seed: u64) -> Vec<Step> {
    let ps = cfg.page_size as usize;
    let bs = cfg.block_size();
    let mut rng = Rng(seed);
    let mut pages: Vec<Vec<u8>> = Vec::new();
    let mut steps = Vec::new();
    for op in ops {
        let pick = |i: usize, pages: &Vec<Vec<u8>>| pages.get(i % pages.len().max(1)).cloned();
        let page = match op {
            Op::EndIteration => {
                steps.push(Step::EndIteration);
                continue;
            }
            Op::Blob(n) => {
                steps.push(Step::Blob(u32::from(*n), vec![*n; usize::from(*n) * 3]));
                continue;
            }
            Op::Zero => vec![0u8; ps],
            Op::Text => text_page(&mut rng, ps),
            Op::Pointers => pointer_page(&mut rng, ps),
            Op::Random => random_page(&mut rng, ps),
            Op::Copy(i) => pick(*i, &pages).unwrap_or_else(|| text_page(&mut rng, ps)),
            Op::Edit(i, n) => {
                let mut p = pick(*i, &pages).unwrap_or_else(|| pointer_page(&mut rng, ps));
                for _ in 0..=(*n % 24) {
                    let at = rng.below(ps as u64) as usize;
                    p[at] = p[at].wrapping_add(n.wrapping_add(1).max(1));
                }
                p
            }
            Op::MoveBlock(i) => {
                let src = pick(*i, &pages).unwrap_or_else(|| text_page(&mut rng, ps));
                let mut p = if rng.below(2) == 0 {
                    vec![0u8; ps]
                } else {
                    text_page(&mut rng, ps)
                };
                let nb = ps / bs;
                let (from, to) = (rng.below(nb as u64) as usize, rng.below(nb as u64) as usize);
                p[to * bs..(to + 1) * bs].copy_from_slice(&src[from * bs..(from + 1) * bs]);
                p
            }
        };
        let pfn = rng.below(48);
        pages.push(page.clone());
        steps.push(Step::Page(pfn, page));
    }
    steps
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn pages_come_back_exactly(
        cfg in config(),
        ops in prop::collection::vec(op(), 0..120),
        seed in any::<u64>(),
        cbr in any::<bool>(),
        delta in any::<bool>(),
        lz4_bits in prop::option::of(any::<u64>()),
        exhaustive in any::<bool>(),
    ) {
        let steps = build(&cfg, &ops, seed);
        let features = pagewire::Features { cbr, delta };
        // LZ4 switched at iteration ends, as a sender picking it by its CPU headroom does
        let (wire, stats) = encode_switching(cfg, features, &steps, lz4_bits, exhaustive);
        if !cbr {
            prop_assert_eq!(stats.block_ref, 0);
        }
        if !delta {
            prop_assert_eq!(stats.delta_uses, 0);
        }
        let (events, r) = decode(&wire);
        prop_assert_eq!(r, Ok(()));
        prop_assert_eq!(events, expected_events(&steps));
        let pages = steps.iter().filter(|s| matches!(s, Step::Page(..))).count() as u64;
        prop_assert_eq!(stats.pages(), pages);
        prop_assert_eq!(stats.bytes_out, wire.len() as u64);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Plain pages in bulk, built in the caller's buffer, between page-by-page records of
    /// any features: the PLAIN and ZERO records retire their pages' slots on both sides, so
    /// the deltas and references after them stay valid, in both decoder modes.
    #[test]
    fn plain_batches_mix_with_page_by_page_records(
        cfg in config(),
        ops in prop::collection::vec(op(), 0..120),
        seed in any::<u64>(),
        cbr in any::<bool>(),
        delta in any::<bool>(),
        batch_bits in any::<u64>(),
    ) {
        let steps = build(&cfg, &ops, seed);
        let features = pagewire::Features { cbr, delta };
        let (wire, stats) = encode_batched(cfg, features, &steps, batch_bits);
        let (events, r) = decode(&wire);
        prop_assert_eq!(r, Ok(()));
        prop_assert_eq!(events, expected_events(&steps));
        let pages = steps.iter().filter(|s| matches!(s, Step::Page(..))).count() as u64;
        prop_assert_eq!(stats.pages(), pages);
        prop_assert_eq!(stats.bytes_out, wire.len() as u64);
    }
}

#[test]
fn redundancy_is_found() {
    // 64 pages of text, then the same pages again with small edits, then copies of the edited
    // pages at new pfns: the second and third passes must cost a small fraction of the first.
    // (The edits go out as PATCHes, which replace the versions they were made from in the
    // cache: copies of the pages as they were before the edits would only find 3 of their 4
    // blocks.)
    let cfg = Config {
        cache_pages: 256,
        lz4: false,
        ..Config::DEFAULT
    };
    let mut rng = Rng(7);
    let first: Vec<Vec<u8>> = (0..64).map(|_| text_page(&mut rng, 4096)).collect();
    let mut steps: Vec<Step> = first
        .iter()
        .enumerate()
        .map(|(i, p)| Step::Page(i as u64, p.clone()))
        .collect();
    steps.push(Step::EndIteration);
    let (pass1, _) = encode(cfg, &steps);
    let mut edited = Vec::new();
    for (i, p) in first.iter().enumerate() {
        let mut e = p.clone();
        e[i * 13 % 4096] ^= 0x55;
        steps.push(Step::Page(i as u64, e.clone()));
        edited.push(e);
    }
    steps.push(Step::EndIteration);
    for (i, p) in edited.iter().enumerate() {
        steps.push(Step::Page(1000 + i as u64, p.clone()));
    }
    let (all, stats) = encode(cfg, &steps);
    let later = all.len() - pass1.len();
    assert!(
        later * 20 < pass1.len(),
        "later passes {later} bytes vs first {}: {stats:?}",
        pass1.len()
    );
    assert_eq!(stats.delta_uses, 64);
    // The content index is lossy (direct-mapped buckets), so a few copies go out as blocks
    // of cache references instead of whole-page duplicates; all of them hit the cache.
    assert!(stats.dup.pages >= 48, "{stats:?}");
    assert_eq!(stats.raw.pages, 64, "only the first pass is raw: {stats:?}");
    let (events, r) = decode(&all);
    r.unwrap();
    assert_eq!(events, expected_events(&steps));
}

#[test]
fn lz4_frames_shrink_text() {
    let mut rng = Rng(3);
    let steps: Vec<Step> = (0..32)
        .map(|i| Step::Page(i, text_page(&mut rng, 4096)))
        .collect();
    let (plain, _) = encode(
        Config {
            lz4: false,
            ..Config::DEFAULT
        },
        &steps,
    );
    let (packed, stats) = encode(Config::DEFAULT, &steps);
    assert!(stats.frames_lz4 > 0);
    assert!(
        packed.len() * 2 < plain.len(),
        "{} vs {}",
        packed.len(),
        plain.len()
    );
    let (events, r) = decode(&packed);
    r.unwrap();
    assert_eq!(events, expected_events(&steps));
}

#[test]
fn capacity_one_cache_with_heavy_eviction() {
    let cfg = Config {
        cache_pages: 1,
        blocks_per_page: 8,
        ..Config::DEFAULT
    };
    let mut rng = Rng(11);
    let mut steps = Vec::new();
    let mut page = pointer_page(&mut rng, 4096);
    for i in 0..200u64 {
        // the same pfn edited over and over: every delta's base is the slot it evicts
        let at = rng.below(4096) as usize;
        page[at] ^= 0xa5;
        if i % 7 == 0 {
            // a block taken from the cached (about to be evicted) page at another offset
            let (a, b) = page.split_at_mut(2048);
            b[..512].copy_from_slice(&a[..512]);
        }
        steps.push(Step::Page(0, page.clone()));
    }
    let (wire, stats) = encode(cfg, &steps);
    assert!(stats.delta_uses > 100, "{stats:?}");
    let (events, r) = decode(&wire);
    r.unwrap();
    assert_eq!(events, expected_events(&steps));
}

#[test]
fn features_select_the_redundancy_looked_for() {
    let cfg = Config {
        lz4: false,
        ..Config::DEFAULT
    };
    let mut rng = Rng(5);
    let page = text_page(&mut rng, 4096);
    let mut edited = page.clone();
    edited[7] ^= 1;
    // pfn 0, the same page at pfn 1 (content duplicate), then pfn 0 edited (delta)
    let steps = vec![
        Step::Page(0, page.clone()),
        Step::Page(1, page),
        Step::Page(0, edited),
    ];
    let run = |cbr, delta| {
        let (wire, stats) = encode_with(cfg, pagewire::Features { cbr, delta }, &steps);
        let (events, r) = decode(&wire);
        r.unwrap();
        assert_eq!(events, expected_events(&steps));
        (stats.dup.pages, stats.delta_uses, stats.raw.pages)
    };
    assert_eq!(run(true, true), (1, 1, 1));
    assert_eq!(run(true, false), (1, 0, 1)); // the edit still shares 3 blocks: BLOCKS of refs
    assert_eq!(run(false, true), (0, 1, 2));
    assert_eq!(run(false, false), (0, 0, 3));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// XBZRLE gives back the new page from the old one for any set of edits, or declines.
    #[test]
    fn xbzrle_round_trips(seed in any::<u64>(), edits in prop::collection::vec((0usize..4096, 1usize..300, any::<u8>()), 0..40)) {
        let mut rng = Rng(seed);
        let old = pointer_page(&mut rng, 4096);
        let mut new = old.clone();
        for (at, len, v) in edits {
            for b in &mut new[at..(at + len).min(4096)] {
                *b = b.wrapping_add(v | 1);
            }
        }
        let mut out = vec![0u8; 4096];
        match pagewire::xbzrle::encode(&new, &old, &mut out, 4096) {
            Some(n) => {
                let mut page = old.clone();
                prop_assert_eq!(pagewire::xbzrle::decode(&out[..n], &mut page), Ok(()));
                prop_assert_eq!(page, new);
            }
            None => prop_assert!(new.iter().zip(&old).filter(|(a, b)| a != b).count() > 1000),
        }
    }
}

/// Decodes `wire` into flat guest memory of `pages` pages in `mode`.
fn decode_into_memory(wire: &[u8], mode: DecodeMode, pages: usize) -> (Vec<u8>, Result<()>) {
    let cfg = Config::from_header(wire).expect("header");
    let ps = cfg.page_size as usize;
    let mut guest = vec![0u8; pages * ps];
    let mut mem = vec![0u8; cfg.decoder_storage_len_for(mode)];
    let (mut dec, used) = Decoder::from_header(wire, mode, &mut mem).expect("decoder");
    let r = dec
        .decode(&wire[used..], &mut MemoryImage::new(&mut guest, ps))
        .and_then(|_| dec.check_complete());
    (guest, r)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random page histories come back as the source's memory in both modes, the in-place
    /// decoder writing into and reading from one flat buffer.
    #[test]
    fn both_modes_rebuild_the_source_memory(
        cfg in config(),
        ops in prop::collection::vec(op(), 0..160),
        seed in any::<u64>(),
        exhaustive in any::<bool>(),
    ) {
        let steps = build(&cfg, &ops, seed);
        let ps = cfg.page_size as usize;
        let mut source = vec![0u8; 48 * ps];
        for s in &steps {
            if let Step::Page(pfn, page) = s {
                let at = *pfn as usize * ps;
                source[at..at + ps].copy_from_slice(page);
            }
        }
        let (wire, _) = encode_switching(cfg, pagewire::Features::ALL, &steps, None, exhaustive);
        for mode in [DecodeMode::InPlace, DecodeMode::CacheCopy] {
            let (guest, r) = decode_into_memory(&wire, mode, 48);
            prop_assert_eq!(r, Ok(()));
            prop_assert!(guest == source, "{:?}: memory differs", mode);
        }
    }
}
