//! Arbitrary page sequences (zero pages, copies, edits of earlier pages, moved blocks,
//! random pages, iteration ends, blobs) through encoder and decoder, for arbitrary
//! configurations and features: exactly the same pages come back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire_fuzz::{decode_all, encode, expected, steps, FuzzConfig, PageOp};

fuzz_target!(|input: (FuzzConfig, Vec<PageOp>)| {
    let (fc, ops) = input;
    let (cfg, features) = fc.build();
    let steps = steps(
        &ops[..ops.len().min(200)],
        cfg.page_size as usize,
        cfg.block_size(),
    );
    let wire = encode(cfg, features, &steps);
    let (events, ok) = decode_all(&wire, usize::MAX);
    assert!(ok, "a valid stream must decode completely");
    assert_eq!(events, expected(&steps));
});
