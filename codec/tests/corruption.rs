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
