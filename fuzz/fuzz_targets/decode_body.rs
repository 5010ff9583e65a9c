//! Arbitrary frame bodies behind a valid stream header, each wrapped in a frame with the
//! right sequence number and CRC, so the fuzzer reaches the record parser (and, with the
//! LZ4 flag, the decompressor on a valid LZ4 block of its bytes). The real CRC check is
//! untouched: the frames are simply built correctly. Decoded in both modes, which must hand
//! out the same events and reach the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::Config;
use pagewire_fuzz::{bodies_stream, decode_all};

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
    decode_all(&bodies_stream(&cfg, rest), 64 << 20);
});
