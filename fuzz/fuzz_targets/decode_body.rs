//! Arbitrary frame bodies behind a valid stream header, each wrapped in a frame with the
//! right sequence number and CRC, so the fuzzer reaches the record parser (and, with the
//! LZ4 flag, the decompressor on a valid LZ4 block of its bytes). The real CRC check is
//! untouched: the frames are simply built correctly. Decoded in both modes, which must hand
//! out the same events and reach the same verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire_fuzz::{bodies_stream, decode_all, ModesCase};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // the differential target's configurations with 4 KiB pages (bit 5 clear), so the
    // seeds keep their meaning
    let cfg = ModesCase::config(sel & 0x1f);
    decode_all(&bodies_stream(&cfg, rest), 64 << 20);
});
