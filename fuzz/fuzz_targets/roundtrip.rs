//! Arbitrary page sequences (zero pages, copies, edits of earlier pages, moved blocks,
//! random pages, iteration ends, blobs) through encoder and decoder, for arbitrary
//! configurations and features: exactly the same pages come back, in both decoder modes, and
//! from the same pages sent as plain pages in bulk; and decoding in place into guest memory
//! leaves it equal to the source's memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::{DecodeMode, Decoder, MemoryImage};
use pagewire_fuzz::{
    decode_all, encode, encode_plain_in_bulk, expected, steps, FuzzConfig, PageOp, Step,
};

/// The pfns `steps` uses (0-36).
const PAGES: usize = 37;

fuzz_target!(|input: (FuzzConfig, Vec<PageOp>)| {
    let (fc, ops) = input;
    let (cfg, features) = fc.build();
    let ps = cfg.page_size as usize;
    let steps = steps(&ops[..ops.len().min(200)], ps, cfg.block_size());
    let wire = encode(cfg, features, &steps);
    let (events, ok) = decode_all(&wire, usize::MAX);
    assert!(ok, "a valid stream must decode completely");
    assert_eq!(events, expected(&steps));
    // the same pages as plain pages in bulk
    let (plain, ok) = decode_all(&encode_plain_in_bulk(cfg, &steps), usize::MAX);
    assert!(ok, "a valid bulk plain stream must decode completely");
    assert_eq!(plain, events);

    // the source's memory: the last version of every page sent, zeros elsewhere
    let mut source = vec![0u8; PAGES * ps];
    for s in &steps {
        if let Step::Page(pfn, page) = s {
            let at = *pfn as usize * ps;
            source[at..at + ps].copy_from_slice(page);
        }
    }
    let mut guest = vec![0u8; PAGES * ps];
    let mut storage = vec![0u8; cfg.decoder_storage_len_for(DecodeMode::InPlace)];
    let (mut dec, used) =
        Decoder::from_header(&wire, DecodeMode::InPlace, &mut storage).expect("own header");
    let n = dec
        .decode(&wire[used..], &mut MemoryImage::new(&mut guest, ps))
        .expect("a valid stream decodes in place");
    assert_eq!(used + n, wire.len());
    assert_eq!(dec.check_complete(), Ok(()));
    assert!(guest == source, "guest memory differs from the source's");
});
