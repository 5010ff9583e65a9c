//! Corrupted and hostile input: every truncation point and every single-bit flip of a few
//! valid streams is rejected, and no page of a damaged frame is ever handed out. Hostile
//! frames with valid CRCs get their named error.

mod common;
use common::*;
use pagewire::wire::frame::{FrameHeader, FRAME_HEADER_LEN};
use pagewire::{crc32c, Config, Error, HEADER_LEN};

fn sample_steps(seed: u64, ps: usize) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut steps = Vec::new();
    let mut pages: Vec<Vec<u8>> = Vec::new();
    for i in 0..18u64 {
        let page = match i % 6 {
            0 => vec![0u8; ps],
            1 => text_page(&mut rng, ps),
            2 => pointer_page(&mut rng, ps),
            3 => pages[pages.len() - 1].clone(),
            4 => {
                let mut p = pages[pages.len() - 2].clone();
                p[(i * 37) as usize % ps] ^= 0x40;
                p
            }
            _ => {
                let mut p = vec![0u8; ps];
                let src = &pages[pages.len() - 3];
                p[..ps / 4].copy_from_slice(&src[ps / 2..ps / 2 + ps / 4]);
                p
            }
        };
        pages.push(page.clone());
        steps.push(Step::Page(i % 7, page));
        if i % 8 == 7 {
            steps.push(Step::EndIteration);
        }
    }
    steps.push(Step::Blob(3, b"registers".to_vec()));
    steps
}

fn streams() -> Vec<(Vec<u8>, Vec<Event>)> {
    let cfgs = [
        Config {
            cache_pages: 4,
            frame_bytes: 12288,
            ..Config::DEFAULT
        },
        Config {
            cache_pages: 2,
            frame_bytes: 9000,
            lz4: false,
            blocks_per_page: 8,
            ..Config::DEFAULT
        },
    ];
    cfgs.iter()
        .enumerate()
        .map(|(i, cfg)| {
            let steps = sample_steps(i as u64 + 1, 4096);
            let (wire, stats) = encode(*cfg, &steps);
            assert!(stats.frames >= 3, "want several frames: {stats:?}");
            (wire, expected_events(&steps))
        })
        .collect()
}

/// Start offsets of the frames of a valid stream.
fn frame_starts(wire: &[u8], frame_bytes: u32) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < wire.len() {
        starts.push(pos);
        pos += FrameHeader::parse(&wire[pos..], frame_bytes)
            .unwrap()
            .frame_len();
    }
    starts
}

#[test]
fn every_truncation_is_rejected() {
    for (wire, expected) in streams() {
        let (events, r) = decode(&wire);
        r.unwrap();
        assert_eq!(events, expected);
        for cut in 0..wire.len() {
            let (events, r) = decode(&wire[..cut]);
            assert!(r.is_err(), "cut at {cut} of {} accepted", wire.len());
            assert!(events.len() < expected.len());
            assert_eq!(
                &expected[..events.len()],
                &events[..],
                "cut at {cut}: wrong events"
            );
        }
        println!(
            "{} cut points of a {}-byte stream rejected",
            wire.len(),
            wire.len()
        );
    }
}

#[test]
fn every_single_bit_flip_is_rejected_and_damaged_frames_yield_nothing() {
    for (wire, expected) in streams() {
        let cfg = Config::from_header(&wire).unwrap();
        let starts = frame_starts(&wire, cfg.frame_bytes);
        // events handed out by the frames before frame k
        let before: Vec<usize> = starts.iter().map(|&s| decode(&wire[..s]).0.len()).collect();
        let mut flipped = wire.clone();
        for byte in 0..wire.len() {
            let frame = starts.iter().rposition(|&s| s <= byte);
            let allowed = frame.map_or(0, |k| before[k]);
            for bit in 0..8 {
                flipped[byte] ^= 1 << bit;
                let (events, r) = decode(&flipped);
                assert!(r.is_err(), "flip of byte {byte} bit {bit} accepted");
                assert!(
                    events.len() <= allowed,
                    "flip in byte {byte}: {} events handed out, only {allowed} precede the damaged frame",
                    events.len()
                );
                assert_eq!(&expected[..events.len()], &events[..]);
                flipped[byte] ^= 1 << bit;
            }
        }
    }
}

// ---- hostile frames with valid CRCs ----

fn hostile_cfg() -> Config {
    Config {
        cache_pages: 2,
        lz4: false,
        frame_bytes: 16384,
        ..Config::DEFAULT
    }
}

/// A stream header plus frames with the given bodies, each with a correct CRC.
fn stream_of(cfg: Config, bodies: &[&[u8]]) -> Vec<u8> {
    let mut wire = cfg.header_bytes().to_vec();
    for (seq, body) in bodies.iter().enumerate() {
        wire.extend_from_slice(&frame_of(cfg, seq as u32, body));
    }
    wire
}

fn frame_of(cfg: Config, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_HEADER_LEN];
    FrameHeader {
        lz4: false,
        stream_id: cfg.stream_id,
        seq,
        wire_len: body.len() as u32,
        raw_len: body.len() as u32,
    }
    .write(&mut f);
    f.extend_from_slice(body);
    let c = crc32c(&f);
    f.extend_from_slice(&c.to_le_bytes());
    f
}

fn raw_record(pfn_code: u8, fill: u8) -> Vec<u8> {
    let mut r = vec![0x03, pfn_code];
    r.extend_from_slice(&[fill; 4096]);
    r
}

/// The stream fails with `want`, and nothing of the frame that carries the fault is handed
/// out: at most the events of the frames before the last one.
fn assert_rejected(wire: &[u8], want: Error) {
    let (events, r) = decode(wire);
    assert_eq!(r, Err(want));
    let cfg = Config::from_header(wire).unwrap();
    let (mut pos, mut last) = (HEADER_LEN, HEADER_LEN);
    while pos < wire.len() {
        last = pos;
        match FrameHeader::parse(&wire[pos..], cfg.frame_bytes) {
            Ok(h) => pos += h.frame_len(),
            Err(_) => break,
        }
    }
    let (before, _) = decode(&wire[..last]);
    assert!(
        events.len() <= before.len(),
        "{} events handed out, {} precede the last frame",
        events.len(),
        before.len()
    );
    assert_eq!(&before[..events.len()], &events[..]);
}

#[test]
fn a_stream_replayed_twice_or_restarted_midway_is_rejected() {
    let (wire, _) = encode(
        Config {
            cache_pages: 4,
            ..Config::DEFAULT
        },
        &sample_steps(9, 4096),
    );
    // the whole stream again after its end
    let twice = [wire.clone(), wire.clone()].concat();
    let (events, r) = decode(&twice);
    assert_eq!(r, Err(Error::TrailingData));
    assert_eq!(
        events,
        decode(&wire).0,
        "nothing of the replay is handed out"
    );
    // a second stream header where a frame is expected
    let cfg = Config::from_header(&wire).unwrap();
    let first = HEADER_LEN
        + FrameHeader::parse(&wire[HEADER_LEN..], cfg.frame_bytes)
            .unwrap()
            .frame_len();
    let restarted = [&wire[..first], &wire[..]].concat();
    let (events, r) = decode(&restarted);
    assert_eq!(r, Err(Error::Malformed("unknown frame type")));
    assert_eq!(events, decode(&wire[..first]).0);
}

#[test]
fn hostile_references_get_named_errors() {
    let cfg = hostile_cfg();
    // DUP of a never-filled slot
    assert_rejected(&stream_of(cfg, &[&[0x02, 0x00, 0x01]]), Error::EmptySlot);
    // DUP age 0 (the slot being filled: the future)
    assert_rejected(&stream_of(cfg, &[&[0x02, 0x00, 0x00]]), Error::EmptySlot);
    // three RAW pages into a 2-page cache, then DUP of age 3: evicted
    let mut body = Vec::new();
    for i in 0..3 {
        body.extend_from_slice(&raw_record(0, i + 1));
    }
    let f0 = body.clone();
    assert_rejected(
        &stream_of(cfg, &[&f0[..8196], &f0[8196..], &[0x02, 0x00, 0x03]]),
        Error::EvictedSlot,
    );
    // block reference to an evicted slot: BLOCKS kinds all REF (0x55), ref (3-1)*4
    assert_rejected(
        &stream_of(
            cfg,
            &[&f0[..8196], &f0[8196..], &[0x05, 0x00, 0x55, 8, 0, 0, 0]],
        ),
        Error::EvictedSlot,
    );
    // and nothing of the hostile frame was handed out: only the pages of the first frames
    let (events, _) = decode(&stream_of(
        cfg,
        &[&f0[..8196], &f0[8196..], &[0x01, 0x00, 0x02, 0x00, 0x09]],
    ));
    assert_eq!(events.len(), 3);
}

#[test]
fn a_patch_changes_its_base_in_place_and_takes_no_slot() {
    let cfg = hostile_cfg();
    // RAW pfn 0 (all 7), PATCH pfn 0 (zigzag -1 = 1) age 1: byte 9 ^= 0x0f, DUP pfn 1 age 1
    let mut body = raw_record(0, 7);
    body.extend_from_slice(&[0x06, 0x01, 0x01, 0x09, 0x03, 0x0f]);
    body.extend_from_slice(&[0x02, 0x00, 0x01, 0x12, 0x03]);
    let (events, r) = decode(&stream_of(cfg, &[&body]));
    r.unwrap();
    let mut patched = vec![7u8; 4096];
    patched[9] ^= 0x0f;
    assert_eq!(
        events,
        vec![
            Event::Page(0, vec![7; 4096]),
            Event::Page(0, patched.clone()),
            Event::Page(1, patched),
            Event::End
        ]
    );
    // only the RAW page took a slot: age 2 names nothing (a DELTA would have filled it)
    let mut body = raw_record(0, 7);
    body.extend_from_slice(&[0x06, 0x01, 0x01, 0x09, 0x03, 0x0f, 0x02, 0x00, 0x02]);
    assert_rejected(&stream_of(cfg, &[&body]), Error::EmptySlot);
    // a PATCH is checked like a DELTA: its base must be cached, its runs inside the page
    assert_rejected(
        &stream_of(cfg, &[&[0x06, 0x00, 0x01, 0x00, 0x03, 0x01]]),
        Error::EmptySlot,
    );
    let mut body = raw_record(0, 7);
    body.extend_from_slice(&[0x06, 0x01, 0x01, 0xff, 0x1f, 0x05, 1, 2]);
    assert_rejected(&stream_of(cfg, &[&body]), Error::BadDelta);
}

#[test]
fn hostile_deltas_and_lengths_get_named_errors() {
    let cfg = hostile_cfg();
    let raw = raw_record(0, 7);
    // DELTA whose run runs past the page: skip 4095, len 2
    let mut body = raw.clone();
    body.extend_from_slice(&[0x04, 0x00, 0x01, 0xff, 0x1f, 0x05, 1, 2]);
    assert_rejected(&stream_of(cfg, &[&body]), Error::BadDelta);
    // a varint that overflows
    let mut body = raw.clone();
    body.extend_from_slice(&[
        0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ]);
    assert_rejected(&stream_of(cfg, &[&body]), Error::VarintOverflow);
    // unknown record tag
    assert_rejected(
        &stream_of(cfg, &[&[0x7e]]),
        Error::Malformed("unknown record tag"),
    );
    // RAW page cut short inside the frame
    assert_rejected(&stream_of(cfg, &[&raw[..100]]), Error::Truncated);
    // blob longer than the frame
    assert_rejected(
        &stream_of(cfg, &[&[0x11, 0x01, 0xff, 0x7f]]),
        Error::LengthOutOfRange,
    );
    // a frame claiming a huge body
    let mut wire = cfg.header_bytes().to_vec();
    let mut f = frame_of(cfg, 0, &[0x01, 0x00]);
    f[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    wire.extend_from_slice(&f);
    assert_rejected(&wire, Error::LengthOutOfRange);
    // data after the end record, in the same frame and in a later frame
    assert_rejected(
        &stream_of(cfg, &[&[0x12, 0x00, 0x01, 0x00]]),
        Error::TrailingData,
    );
    assert_rejected(
        &stream_of(cfg, &[&[0x12, 0x00], &[0x01, 0x00]]),
        Error::TrailingData,
    );
    // end record that miscounts the pages
    assert_rejected(
        &stream_of(cfg, &[&[0x01, 0x00, 0x12, 0x05]]),
        Error::Malformed("end record page count differs from pages received"),
    );
    // iteration markers out of order
    assert_rejected(
        &stream_of(cfg, &[&[0x10, 0x01]]),
        Error::IterationOutOfOrder {
            expected: 0,
            got: 1,
        },
    );
}

#[test]
fn replayed_reordered_and_foreign_frames_are_rejected() {
    let cfg = hostile_cfg();
    let a = frame_of(cfg, 0, &[0x01, 0x00]);
    let b = frame_of(cfg, 1, &[0x01, 0x02]);
    let end = frame_of(cfg, 2, &[0x12, 0x02]);
    let mut ok = cfg.header_bytes().to_vec();
    ok.extend_from_slice(&a);
    ok.extend_from_slice(&b);
    ok.extend_from_slice(&end);
    decode(&ok).1.unwrap();
    // replayed frame
    let mut w = cfg.header_bytes().to_vec();
    for f in [&a, &a, &b, &end] {
        w.extend_from_slice(f);
    }
    assert_rejected(
        &w,
        Error::FrameOutOfOrder {
            expected: 1,
            got: 0,
        },
    );
    // reordered
    let mut w = cfg.header_bytes().to_vec();
    for f in [&b, &a, &end] {
        w.extend_from_slice(f);
    }
    assert_rejected(
        &w,
        Error::FrameOutOfOrder {
            expected: 0,
            got: 1,
        },
    );
    // a frame of another stream interleaved
    let other = Config {
        stream_id: 99,
        ..cfg
    };
    let mut w = cfg.header_bytes().to_vec();
    w.extend_from_slice(&a);
    w.extend_from_slice(&frame_of(other, 1, &[0x01, 0x02]));
    assert_rejected(&w, Error::WrongStream);
    // LZ4 flag in a stream whose header disables LZ4
    let mut w = cfg.header_bytes().to_vec();
    let mut f = frame_of(cfg, 0, &[0x01, 0x00]);
    f[1] = 1;
    let n = f.len() - 4;
    let c = crc32c(&f[..n]);
    f[n..].copy_from_slice(&c.to_le_bytes());
    w.extend_from_slice(&f);
    assert_rejected(
        &w,
        Error::Malformed("LZ4 frame in a stream whose header disables LZ4"),
    );
}

#[test]
fn too_little_storage_for_the_header_config_is_named() {
    let cfg = Config {
        cache_pages: 1000,
        ..Config::DEFAULT
    };
    let (wire, _) = encode(cfg, &[Step::Page(0, vec![1; 4096])]);
    let (_, r) = decode_with_storage(&wire, Some(4096 * 10));
    assert_eq!(
        r,
        Err(Error::InsufficientStorage {
            needed: cfg.decoder_storage_len(),
            given: 40960
        })
    );
}

#[test]
fn encoder_only_fails_on_its_own_contract() {
    let cfg = Config::DEFAULT;
    let mut mem = vec![0u8; cfg.encoder_storage_len()];
    let mut enc = pagewire::Encoder::new(cfg, &mut mem).unwrap();
    let mut small = vec![0u8; 100];
    assert!(matches!(
        enc.encode_page(0, &[0; 4096], &mut small),
        Err(Error::OutputTooSmall { .. })
    ));
    let mut out = vec![0u8; cfg.max_output_len()];
    assert!(matches!(
        enc.encode_page(0, &[0; 100], &mut out),
        Err(Error::WrongPageLength { .. })
    ));
    let big = vec![0u8; cfg.max_blob_len() + 1];
    assert!(matches!(
        enc.append_blob(1, &big, &mut out),
        Err(Error::BlobTooLarge { .. })
    ));
    enc.finish(&mut out).unwrap();
    assert_eq!(
        enc.encode_page(0, &[0; 4096], &mut out),
        Err(Error::Finished)
    );
    let mut tiny = vec![0u8; 1000];
    assert!(matches!(
        pagewire::Encoder::new(cfg, &mut tiny),
        Err(Error::InsufficientStorage { .. })
    ));
}

// ---- format version 3: owners and retirement ----

/// A body of records: RAW pfn 0 (all 7) and then `rest`.
fn after_raw(rest: &[u8]) -> Vec<u8> {
    let mut body = raw_record(0, 7);
    body.extend_from_slice(rest);
    body
}

#[test]
fn references_to_retired_slots_are_rejected_before_their_frame_is_applied() {
    let cfg = hostile_cfg();
    // ZERO pfn 0 (zigzag -1 = 1) retires pfn 0's slot; DUP pfn 1 age 1 refers to it
    let retire = [0x01, 0x01];
    let dup = [0x02, 0x00, 0x01];
    assert_rejected(
        &stream_of(cfg, &[&after_raw(&[&retire[..], &dup].concat())]),
        Error::RetiredSlot,
    );
    // the same across frames: the retirement is applied, the reference's frame is not
    assert_rejected(
        &stream_of(cfg, &[&after_raw(&retire), &[0x02, 0x01, 0x01]]),
        Error::RetiredSlot,
    );
    // a second RAW of pfn 0 retires the first: a block reference (age 2, block 0) to it
    let mut second = raw_record(0x01, 9);
    second.extend_from_slice(&[0x05, 0x00, 0x01, 0x04]);
    assert_rejected(&stream_of(cfg, &[&after_raw(&second)]), Error::RetiredSlot);
    // ... and a DELTA base (BLOCKS with a delta block) or a copying DELTA of it
    let mut base = raw_record(0x01, 9);
    base.extend_from_slice(&[0x05, 0x00, 0x03, 0x02, 0x00, 0x01]);
    assert_rejected(&stream_of(cfg, &[&after_raw(&base)]), Error::RetiredSlot);
    let mut copy = raw_record(0x01, 9);
    copy.extend_from_slice(&[0x04, 0x00, 0x02, 0x00, 0x01]);
    assert_rejected(&stream_of(cfg, &[&after_raw(&copy)]), Error::RetiredSlot);
    // a DUP of another page's slot retires the duplicating page's own
    let mut dup_retires = raw_record(0x00, 9); // RAW pfn 1: its slot
    dup_retires.extend_from_slice(&[0x02, 0x01, 0x02]); // DUP pfn 1 age 2 (pfn 0's)
    dup_retires.extend_from_slice(&[0x02, 0x00, 0x01]); // DUP pfn 2 age 1 (pfn 1's old)
    assert_rejected(
        &stream_of(cfg, &[&after_raw(&dup_retires)]),
        Error::RetiredSlot,
    );
}

#[test]
fn a_plain_page_takes_no_slot_and_retires_its_own() {
    let cfg = hostile_cfg();
    let mut plain = vec![0x07, 0x01]; // PLAIN pfn 0 (zigzag -1), all 5
    plain.extend_from_slice(&[5; 4096]);
    // pfn 0's RAW slot retires: a DUP of it is refused
    let dup_of_raw = [&plain[..], &[0x02, 0x00, 0x01]].concat();
    assert_rejected(
        &stream_of(cfg, &[&after_raw(&dup_of_raw)]),
        Error::RetiredSlot,
    );
    // it takes no slot: age 2 is still the RAW (retired), and nothing has age 1 but it
    let mut raw1 = raw_record(0x00, 9); // RAW pfn 1: the only live slot, age 1
    raw1.extend_from_slice(&plain[..1]);
    raw1.extend_from_slice(&[0x03]); // PLAIN pfn 0 (pfn 2 expected: zigzag -2)
    raw1.extend_from_slice(&[5; 4096]);
    raw1.extend_from_slice(&[0x02, 0x00, 0x01]); // DUP pfn 1 age 1: pfn 1's RAW
    raw1.extend_from_slice(&[0x12, 0x04]); // END: 4 page records
    let (events, r) = decode(&stream_of(cfg, &[&after_raw(&raw1)]));
    r.unwrap_or_else(|e| panic!("{e:?}"));
    let pages: Vec<(u64, u8)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Page(pfn, p) => Some((*pfn, p[4095])),
            _ => None,
        })
        .collect();
    assert_eq!(pages, [(0, 7), (1, 9), (0, 5), (1, 9)]);
}

#[test]
fn a_patch_may_change_only_its_own_pages_slot() {
    let cfg = hostile_cfg();
    let empty_patch = |pfn_code: u8| [0x06, pfn_code, 0x01, 0x00, 0x01];
    // PATCH pfn 1 of pfn 0's live slot
    assert_rejected(
        &stream_of(cfg, &[&after_raw(&empty_patch(0x00))]),
        Error::ForeignPatch,
    );
    // a DUP does not make the slot the duplicating page's
    let dup_then_patch = [&[0x02, 0x00, 0x01][..], &empty_patch(0x01)].concat();
    assert_rejected(
        &stream_of(cfg, &[&after_raw(&dup_then_patch)]),
        Error::ForeignPatch,
    );
    // PATCH of the page's own slot after the page was zeroed: retired
    let zero_then_patch = [&[0x01, 0x01][..], &empty_patch(0x01)].concat();
    assert_rejected(
        &stream_of(cfg, &[&after_raw(&zero_then_patch)]),
        Error::RetiredSlot,
    );
    // what stays allowed: a DUP of the page's own slot keeps it, a PATCH then changes it,
    // and another page DUPs the patched slot; a copying DELTA takes a slot of its own
    let body = after_raw(&[
        0x02, 0x01, 0x01, // DUP pfn 0 age 1: its own slot, kept
        0x06, 0x01, 0x01, 0x09, 0x03, 0x0f, // PATCH pfn 0: byte 9 ^= 0x0f
        0x02, 0x00, 0x01, // DUP pfn 1 of it
        0x04, 0x01, 0x01, 0x00, 0x03, 0xf0, // DELTA pfn 1 age 1: byte 0 ^= 0xf0, new slot
        0x02, 0x00, 0x02, // DUP pfn 2 age 2: pfn 0's slot, still live
        0x12, 0x06,
    ]);
    let (events, r) = decode(&stream_of(cfg, &[&body]));
    r.unwrap();
    let mut patched = vec![7u8; 4096];
    patched[9] ^= 0x0f;
    let mut copied = patched.clone();
    copied[0] ^= 0xf0;
    let pages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Page(pfn, p) => Some((*pfn, p[0], p[9])),
            _ => None,
        })
        .collect();
    assert_eq!(
        pages,
        [
            (0, 7, 7),
            (0, 7, 7),
            (0, 7, 7 ^ 0x0f),
            (1, 7, 7 ^ 0x0f),
            (1, 7 ^ 0xf0, 7 ^ 0x0f),
            (2, 7, 7 ^ 0x0f),
        ]
    );
    assert_eq!(events[4], Event::Page(1, copied));
}

#[test]
fn a_page_built_from_its_own_old_content_and_a_frame_that_wraps_the_cache() {
    let cfg = hostile_cfg(); // 2 slots
    let mut raw1 = raw_record(0x00, 1); // RAW pfn 1 (all 1): slot 1
    raw1[100] = 0xaa; // byte 98 of the page
    let body = after_raw(
        &[
            &raw1[..],
            // BLOCKS pfn 1 (zigzag -1 = 1) built out of its own old page and of the slot it
            // overwrites: block 0 = block 3 of its own page (age 1: ref 3), block 1 a delta of
            // its own block 1 (base age 1), blocks 2, 3 = block 0 of pfn 0 (age 2, the head
            // slot: refs 4); kinds ref, delta, ref, ref = 0b01_01_11_01. It takes slot 0
            // (evicting pfn 0's page) and retires its old slot 1.
            &[0x05, 0x01, 0x5d, 0x01, 0x03, 0x00, 0x03, 0x55, 0x04, 0x04],
            // DELTA pfn 2 copying the BLOCKS page (age 1): byte 1 ^= 0x77, into slot 1
            &[0x04, 0x00, 0x01, 0x01, 0x03, 0x77],
            // DUP pfn 3 of age 2 (the BLOCKS page, still live), END
            &[0x02, 0x00, 0x02, 0x12, 0x05],
        ]
        .concat(),
    );
    let (events, r) = decode(&stream_of(cfg, &[&body]));
    r.unwrap();
    // block 0 from pfn 1's block 3 (all 1, not its own block 0 with 0xaa at byte 98)
    let mut blocks = vec![1u8; 4096];
    blocks[1024] ^= 0x55; // block 1's delta at its offset 0
    blocks[2048..].fill(7); // blocks 2 and 3 from pfn 0
    let mut delta = blocks.clone();
    delta[1] ^= 0x77;
    let pages: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Page(pfn, p) => Some((*pfn, p.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(pages.len(), 5);
    assert_eq!(pages[2], (1, blocks.clone()));
    assert_eq!(pages[3], (2, delta));
    assert_eq!(pages[4], (3, blocks));
}

#[test]
fn a_frame_may_insert_at_most_frame_bytes_over_16_pages() {
    let cfg = hostile_cfg(); // 16 KiB frames: 1024 insertions
    assert_eq!(cfg.max_frame_inserts(), 1024);
    // BLOCKS of four zero blocks: three bytes, one insertion each
    let body: Vec<u8> = (0..1025).flat_map(|_| [0x05, 0x00, 0x00]).collect();
    assert_rejected(
        &stream_of(cfg, &[&body]),
        Error::Malformed("a frame inserts more pages than frame_bytes / 16"),
    );
    let (_, r) = decode(&stream_of(cfg, &[&body[..1024 * 3]]));
    assert_eq!(
        r,
        Err(Error::Truncated),
        "1024 are fine (the stream just has no end)"
    );
    // the encoder ends its frames there: pages of four cached blocks each are small
    // inserting records, far more than 1024 of which would fit in a frame's bytes
    let mut rng = Rng(5);
    let pool: Vec<Vec<u8>> = (0..8).map(|_| random_page(&mut rng, 1024)).collect();
    let steps: Vec<Step> = (0..3000u64)
        .map(|pfn| {
            let page: Vec<u8> = (0..4)
                .flat_map(|b| pool[((pfn >> (3 * b)) + b) as usize % 8].clone())
                .collect();
            Step::Page(pfn % 200, page)
        })
        .collect();
    let cfg = Config {
        cache_pages: 64,
        frame_bytes: 65536,
        ..hostile_cfg()
    };
    let (wire, stats) = encode(cfg, &steps);
    assert!(stats.blocks.pages > 2500, "{stats:?}");
    let (events, r) = decode(&wire);
    r.unwrap();
    assert_eq!(events, expected_events(&steps));
    assert!(stats.frames > stats.blocks.pages / 4096, "{stats:?}");
}

/// Decodes `wire` into 8 pages of flat guest memory in `mode`.
fn into_memory(wire: &[u8], mode: pagewire::DecodeMode) -> (Vec<u8>, pagewire::Result<()>) {
    let cfg = Config::from_header(wire).unwrap();
    let mut guest = vec![0u8; 8 * 4096];
    let mut mem = vec![0u8; cfg.decoder_storage_len_for(mode)];
    let (mut dec, used) = pagewire::Decoder::from_header(wire, mode, &mut mem).unwrap();
    let r = dec
        .decode(
            &wire[used..],
            &mut pagewire::MemoryImage::new(&mut guest, 4096),
        )
        .and_then(|_| dec.check_complete());
    (guest, r)
}

/// Six pages rewritten over and over: edits of their own last version (PATCH or DELTA),
/// copies of each other (DUP), zero pages and new text: every retirement event.
fn rewriting_steps(seed: u64) -> Vec<Step> {
    let mut rng = Rng(seed);
    let mut now: Vec<Vec<u8>> = vec![vec![0u8; 4096]; 6];
    let mut steps = Vec::new();
    for i in 0..40 {
        let pfn = rng.below(6) as usize;
        let page = match rng.below(5) {
            0 => vec![0u8; 4096],
            1 => now[rng.below(6) as usize].clone(),
            2 => text_page(&mut rng, 4096),
            _ => {
                let mut p = now[pfn].clone();
                for _ in 0..3 {
                    p[rng.below(4096) as usize] ^= 1 + rng.below(255) as u8;
                }
                p
            }
        };
        now[pfn] = page.clone();
        steps.push(Step::Page(pfn as u64, page));
        if i % 13 == 12 {
            steps.push(Step::EndIteration);
        }
    }
    steps
}

/// Where each record of a valid body starts.
fn record_starts(body: &[u8], cfg: Config) -> Vec<usize> {
    use pagewire::wire::record::{parse, ParseState};
    let mut st = ParseState {
        page_size: cfg.page_size as usize,
        blocks_per_page: cfg.blocks_per_page as usize,
        capacity: u64::MAX / 2,
        inserted: u64::MAX / 2,
        next_pfn: 0,
    };
    let (mut pos, mut starts) = (0, Vec::new());
    while pos < body.len() {
        starts.push(pos);
        parse(body, &mut pos, &mut st).unwrap();
    }
    starts
}

#[test]
fn mutated_streams_decode_the_same_in_both_modes() {
    // stored frames with their CRCs fixed after the mutation, so the records themselves
    // are what is hostile: both modes must write the same memory and fail the same way
    let mut rng = Rng(77);
    let mut outcomes = std::collections::HashMap::new();
    for round in 0..2000u64 {
        let cfg = Config {
            cache_pages: 1 + (round % 4) as u32,
            frame_bytes: 9000 + (round % 3) as u32 * 4096,
            lz4: false,
            blocks_per_page: [1, 2, 4, 8][(round % 4) as usize],
            ..Config::DEFAULT
        };
        let (mut wire, _) = encode(cfg, &rewriting_steps(round));
        let starts = frame_starts(&wire, cfg.frame_bytes);
        let f = starts[rng.below(starts.len() as u64) as usize];
        let len = FrameHeader::parse(&wire[f..], cfg.frame_bytes)
            .unwrap()
            .frame_len();
        let body = f + FRAME_HEADER_LEN..f + len - 4;
        // the records' own fields: PATCH <-> DELTA, pfn codes, ages (or any byte)
        let starts = record_starts(&wire[body.clone()], cfg);
        for _ in 0..=rng.below(3) {
            let r = body.start + starts[rng.below(starts.len() as u64) as usize];
            let tag = wire[r];
            match rng.below(4) {
                0 if tag == 0x04 || tag == 0x06 => wire[r] ^= 0x04 ^ 0x06,
                1 if wire[r + 1] < 0x80 => wire[r + 1] = rng.below(6) as u8,
                2 if matches!(tag, 0x02 | 0x04 | 0x06) && wire[r + 2] < 0x80 => {
                    wire[r + 2] = 1 + rng.below(4) as u8
                }
                _ => {
                    let at = body.start + rng.below(body.len() as u64) as usize;
                    wire[at] ^= 1 << rng.below(8);
                }
            }
        }
        let c = crc32c(&wire[f..f + len - 4]);
        wire[f + len - 4..f + len].copy_from_slice(&c.to_le_bytes());
        // events and verdicts through the helper (any pfn), memory through an 8-page image
        let (_, r) = decode(&wire);
        let in_place = into_memory(&wire, pagewire::DecodeMode::InPlace);
        let copy = into_memory(&wire, pagewire::DecodeMode::CacheCopy);
        assert!(
            in_place == copy,
            "round {round}: {:?} / {:?}",
            in_place.1,
            copy.1
        );
        *outcomes.entry(format!("{r:?}")).or_insert(0) += 1;
        *outcomes.entry(format!("{:?}", in_place.1)).or_insert(0) += 1;
    }
    // the mutations reach the owner rules: some streams still decode, and among the
    // errors are references to retired slots and PATCHes of foreign ones
    for want in [
        "Ok(())",
        "Err(RetiredSlot)",
        "Err(ForeignPatch)",
        "Err(EvictedSlot)",
    ] {
        assert!(
            outcomes.get(want).copied().unwrap_or(0) >= 10,
            "{want}: {outcomes:?}"
        );
    }
}
