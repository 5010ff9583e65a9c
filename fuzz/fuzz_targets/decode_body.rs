//! Arbitrary frame bodies behind a valid stream header, each wrapped in a frame with the
//! right sequence number and CRC, so the fuzzer reaches the record parser (and, with the
//! LZ4 flag, the decompressor on a valid LZ4 block of its bytes). The real CRC check is
//! untouched: the frames are simply built correctly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::Config;
use pagewire_fuzz::{decode_all, frame};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let cfg = Config {
        cache_pages: [1u32, 2, 4, 64][usize::from(sel % 4)],
        blocks_per_page: [1u8, 2, 4, 8][usize::from((sel >> 2) % 4)],
        frame_bytes: 16384,
        lz4: sel & 0x10 != 0,
        stream_id: 7,
        ..Config::DEFAULT
    };
    let mut wire = cfg.header_bytes().to_vec();
    // bodies, each behind a two-byte little-endian length
    let mut rest = rest;
    let mut seq = 0;
    while rest.len() >= 2 && seq < 16 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        rest = &rest[2 + len..];
        if body.is_empty() || body.len() > cfg.frame_bytes as usize {
            continue;
        }
        wire.extend_from_slice(&frame(&cfg, seq, body, cfg.lz4 && seq % 2 == 1));
        seq += 1;
    }
    decode_all(&wire, 64 << 20);
});
