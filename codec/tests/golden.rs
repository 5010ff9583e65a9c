//! Golden vectors: the exact bytes of small streams, so that any change to the wire format
//! is noticed. The first vector is built by hand from docs/FORMAT.md; the others pin the
//! encoder's choices (LZ4 off, so they do not depend on the LZ4 implementation), the last
//! one those the retirement rule of format version 3 forces (a DELTA where the slot is
//! another page's, a literal block where the only equal block is in a retired slot).

mod common;
use common::*;
use pagewire::{crc32c, Config};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn small_cfg() -> Config {
    Config {
        cache_pages: 4,
        frame_bytes: 8192,
        lz4: false,
        stream_id: 0x0102_0304,
        ..Config::DEFAULT
    }
}

#[test]
fn hand_built_stream_matches_the_spec() {
    let cfg = small_cfg();
    // stream header: magic, version 3, flags 0, blocks 4, reserved, page_size 4096,
    // cache 4, frame_bytes 8192, delta_threshold 2048, stream id, CRC-32C of bytes 0..28
    let mut want = Vec::new();
    want.extend_from_slice(b"PGWR");
    want.extend_from_slice(&[3, 0, 4, 0]);
    want.extend_from_slice(&4096u32.to_le_bytes());
    want.extend_from_slice(&4u32.to_le_bytes());
    want.extend_from_slice(&8192u32.to_le_bytes());
    want.extend_from_slice(&2048u32.to_le_bytes());
    want.extend_from_slice(&0x0102_0304u32.to_le_bytes());
    let c = crc32c(&want);
    want.extend_from_slice(&c.to_le_bytes());
    // one frame: ZERO pfn 5 (zigzag(5 - 0) = 10), ZERO pfn 6 (zigzag(0) = 0),
    // ITERATION_END 0, END with 2 page records
    let body = [0x01, 10, 0x01, 0, 0x10, 0, 0x12, 2];
    let mut frame = vec![1, 0, 0, 0];
    frame.extend_from_slice(&0x0102_0304u32.to_le_bytes());
    frame.extend_from_slice(&0u32.to_le_bytes()); // frame seq 0
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    let c = crc32c(&frame);
    frame.extend_from_slice(&c.to_le_bytes());
    // ITERATION_END goes out in its own frame, END in the next: rebuild as the encoder does
    let steps = [
        Step::Page(5, vec![0; 4096]),
        Step::Page(6, vec![0; 4096]),
        Step::EndIteration,
    ];
    let (wire, _) = encode(cfg, &steps);
    assert_eq!(hex(&wire[..32]), hex(&want));
    // the hand-built single frame decodes to the same events as the encoder's stream
    let mut hand = want.clone();
    hand.extend_from_slice(&frame);
    let (events, r) = decode(&hand);
    r.unwrap();
    assert_eq!(events, expected_events(&steps));
    let (events2, r2) = decode(&wire);
    r2.unwrap();
    assert_eq!(events2, events);
}

#[test]
fn encoder_output_is_pinned() {
    // frames of 16 KiB hold all five page records of the first iteration
    let cfg = Config {
        frame_bytes: 16384,
        ..small_cfg()
    };
    let mut base = vec![0u8; 4096];
    for (i, b) in base.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut edited = base.clone();
    edited[100] ^= 0xff;
    edited[101] ^= 0x0f;
    let mut mixed = vec![0u8; 4096];
    mixed[1024..2048].copy_from_slice(&base[3072..4096]); // block 1 = block 3 of base
    mixed[3072..4096].fill(0xab); // a literal block
    let steps = vec![
        Step::Page(0, vec![0; 4096]), // ZERO
        Step::Page(1, base.clone()),  // RAW
        Step::Page(2, base.clone()),  // DUP of pfn 1
        Step::Page(1, edited),        // PATCH of pfn 1's version
        Step::Page(3, mixed),         // BLOCKS: zero, ref, zero, literal
        Step::EndIteration,
        Step::Blob(7, b"vcpu".to_vec()),
    ];
    let (wire, stats) = encode(cfg, &steps);
    assert_eq!(
        (
            stats.zero.pages,
            stats.raw.pages,
            stats.dup.pages,
            stats.delta.pages,
            stats.blocks.pages
        ),
        (1, 1, 1, 1, 1)
    );
    let (events, r) = decode(&wire);
    r.unwrap();
    assert_eq!(events, expected_events(&steps));
    // Everything but the two large payloads, in order: header, frame 0 header, records.
    let s = hex(&wire);
    let expected_prefix = concat!(
        "5047575203000400",
        "00100000",
        "04000000",
        "00400000",
        "00080000",
        "04030201", // header
    );
    assert!(s.starts_with(expected_prefix), "{}", &s[..80]);
    // frame 0: type 1, flags 0, stream id, seq 0, lengths
    assert_eq!(&s[64..80], "0100000004030201");
    assert_eq!(&s[80..88], "00000000");
    let body_at = 32 + 20;
    // ZERO pfn0 | RAW pfn1 (zigzag 0) + 4096 bytes | DUP pfn2 age 1 | PATCH pfn1 (zigzag -2 = 3) age 1 ...
    assert_eq!(hex(&wire[body_at..body_at + 4]), "01000300");
    let after_raw = body_at + 4 + 4096;
    assert_eq!(hex(&wire[after_raw..after_raw + 3]), "020001");
    // PATCH: tag 06, pfn code 03, age 1 (pfn 1's version is the newest page), one run:
    // skip 100, code 2*2+1 = 5, XOR bytes ff 0f
    assert_eq!(
        hex(&wire[after_raw + 3..after_raw + 3 + 8]),
        "0603016405ff0f05"
    );
    // BLOCKS: tag 05, pfn 3 after pfn 1 -> zigzag(1) = 02, kinds zero,ref,zero,literal =
    // 0b10_00_01_00 = 0x84, ref to block 3 of the page of age 1: the RAW page's slot, which
    // the PATCH changed in place (its block 3 is untouched): (1-1)*4+3 = 3, then 1024 x ab
    assert_eq!(hex(&wire[after_raw + 10..after_raw + 14]), "05028403");
    // weighing every record kind (`set_exhaustive`) picks the same records here
    let (exhaustive, _) = encode_switching(cfg, pagewire::Features::ALL, &steps, None, true);
    assert_eq!(hex(&exhaustive), hex(&wire));
    assert_eq!(exhaustive[..after_raw + 10], wire[..after_raw + 10]);
    assert_eq!(
        &wire[after_raw + 14..after_raw + 14 + 1024],
        &[0xab; 1024][..]
    );
    let tail = after_raw + 14 + 1024;
    // ITERATION_END 0 closes frame 0; CRC follows
    assert_eq!(hex(&wire[tail..tail + 2]), "1000");
    let crc = crc32c(&wire[32..tail + 2]);
    assert_eq!(&wire[tail + 2..tail + 6], &crc.to_le_bytes());
    // frame 1: BLOB tag 7 len 4 "vcpu", END 5 pages
    let f1 = tail + 6;
    assert_eq!(
        hex(&wire[f1..f1 + 20]),
        "01000000040302010100000009000000".to_owned() + "09000000"
    );
    assert_eq!(hex(&wire[f1 + 20..f1 + 29]), "110704766370751205");
    assert_eq!(wire.len(), f1 + 20 + 9 + 4);
}

#[test]
fn retirement_is_pinned() {
    let cfg = Config {
        frame_bytes: 16384,
        ..small_cfg()
    };
    let mut base = vec![0u8; 4096];
    for (i, b) in base.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut two = base.clone();
    two[100] ^= 0x11;
    let mut one = base.clone();
    one[3000] ^= 0x22;
    let steps = vec![
        Step::Page(1, base.clone()),  // RAW: slot of pfn 1
        Step::Page(2, base.clone()),  // DUP of pfn 1's slot: pfn 2 owns no slot
        Step::Page(2, two.clone()),   // DELTA (not PATCH): pfn 2's own new slot
        Step::Page(1, one.clone()),   // PATCH of pfn 1's own slot
        Step::Page(2, vec![0; 4096]), // ZERO: pfn 2's slot retires
        Step::Page(3, two.clone()),   // equal to the retired slot: may not refer to it
        Step::EndIteration,
    ];
    let (wire, stats) = encode(cfg, &steps);
    let (events, r) = decode(&wire);
    r.unwrap();
    assert_eq!(events, expected_events(&steps));
    assert_eq!(
        (
            stats.raw.pages,
            stats.dup.pages,
            stats.delta.pages,
            stats.zero.pages
        ),
        (1, 1, 2, 1)
    );
    assert_eq!(
        (stats.blocks.pages, stats.block_ref, stats.block_literal),
        (1, 2, 2)
    );
    // header (version 3), then frame 0 with every record of the first iteration
    assert_eq!(hex(&wire[..8]), "5047575203000400");
    let body = 32 + 20;
    // RAW pfn 1 (zigzag 1 = 02), then the page
    assert_eq!(hex(&wire[body..body + 2]), "0302");
    assert_eq!(&wire[body + 2..body + 2 + 4096], &base[..]);
    let at = body + 2 + 4096;
    assert_eq!(
        hex(&wire[at..at + 21]),
        concat!(
            "020001",         // DUP pfn 2, age 1 (pfn 1's slot)
            "040101640311",   // DELTA pfn 2 (zigzag -1), age 1: skip 100, 1 byte ^ 11
            "060302b8170322", // PATCH pfn 1 (zigzag -2), age 2: skip 3000, 1 byte ^ 22
            "0100",           // ZERO pfn 2: retires the DELTA's slot
            "050066",         // BLOCKS pfn 3: literal, ref, literal, ref (0b01_10_01_10)
        )
    );
    // block 0 equals block 0 of the retired slot (age 1) only: it goes out literal
    let at = at + 21;
    assert_eq!(&wire[at..at + 1024], &two[..1024]);
    // block 1: block 1 of pfn 1's slot (age 2): (2 - 1) * 4 + 1 = 5
    assert_eq!(hex(&wire[at + 1024..at + 1025]), "05");
    // block 2 differs from pfn 1's (its PATCH at 3000): literal; block 3: ref 7
    let at = at + 1025;
    assert_eq!(&wire[at..at + 1024], &two[2048..3072]);
    assert_eq!(
        hex(&wire[at + 1024..at + 1027]),
        "071000",
        "ref 7, ITERATION_END 0"
    );
    let crc = crc32c(&wire[32..at + 1027]);
    assert_eq!(&wire[at + 1027..at + 1031], &crc.to_le_bytes());
    // frame 1: END with 6 pages
    assert_eq!(
        hex(&wire[at + 1031 + 20..]),
        "1206".to_owned() + &hex(&wire[wire.len() - 4..])
    );
}
