//! Differential: a valid stream with bytes flipped or cut at fuzzer-chosen places either
//! fails, or hands out nothing but the correct events of the frames before the first damaged
//! one. No page from a frame whose CRC failed is ever delivered. Decoded in both modes, which
//! must hand out the same events and reach the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::wire::frame::FrameHeader;
use pagewire::HEADER_LEN;
use pagewire_fuzz::{decode_all, encode, expected, steps, FuzzConfig, PageOp};

/// Recipes, up to 8 byte flips (offset, XOR mask) and where to cut the stream.
type Input = (FuzzConfig, Vec<PageOp>, Vec<(u16, u8)>, Option<u16>);

fuzz_target!(|input: Input| {
    let (fc, ops, flips, cut) = input;
    let (cfg, features) = fc.build();
    let steps = steps(
        &ops[..ops.len().min(60)],
        cfg.page_size as usize,
        cfg.block_size(),
    );
    let wire = encode(cfg, features, &steps);
    let want = expected(&steps);

    // frame boundaries of the valid stream and the events before each frame
    let mut starts = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < wire.len() {
        starts.push(pos);
        pos += FrameHeader::parse(&wire[pos..], cfg.frame_bytes)
            .expect("valid frame")
            .frame_len();
    }

    let mut bad = wire.clone();
    for (at, mask) in flips.iter().take(8) {
        let at = usize::from(*at) % bad.len();
        bad[at] ^= mask;
    }
    if let Some(c) = cut {
        bad.truncate(usize::from(c) % bad.len());
    }
    // the first byte that really differs (flips may cancel out), or where the cut is
    let first_damage =
        bad.iter()
            .zip(&wire)
            .position(|(a, b)| a != b)
            .unwrap_or(if bad.len() < wire.len() {
                bad.len()
            } else {
                usize::MAX
            });
    if first_damage == usize::MAX {
        return;
    }
    let (events, ok) = decode_all(&bad, usize::MAX);
    assert!(!ok, "a damaged stream was accepted");
    // events allowed: those of frames that end before the first damaged byte
    let damaged_frame = starts.iter().rposition(|&s| s <= first_damage);
    let allowed = match damaged_frame {
        None => 0,
        Some(k) => decode_all(&wire[..starts[k]], usize::MAX).0.len(),
    };
    assert!(
        events.len() <= allowed,
        "{} events from damaged frames",
        events.len() - allowed
    );
    assert_eq!(&want[..events.len()], &events[..]);
});
