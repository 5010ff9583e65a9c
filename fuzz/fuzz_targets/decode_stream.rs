//! Arbitrary bytes as a whole stream, under several cache capacities: the decoder gives
//! pages or a typed error, never a panic, and a completed stream never exceeds its input.
//! Decoded in both modes, which must hand out the same events and reach the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::Config;
use pagewire_fuzz::decode_all;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 0x80 != 0 {
        // the input carries its own header
        decode_all(rest, 64 << 20);
        return;
    }
    // a valid header with one of several cache capacities, then arbitrary frames
    let cfg = Config {
        cache_pages: [1u32, 2, 3, 16, 256][usize::from(sel % 5)],
        lz4: sel & 0x10 != 0,
        blocks_per_page: [1u8, 2, 4, 8][usize::from((sel >> 5) % 4)],
        ..Config::DEFAULT
    };
    let mut wire = cfg.header_bytes().to_vec();
    wire.extend_from_slice(rest);
    decode_all(&wire, 64 << 20);
});
