//! pagewire's XBZRLE against the second implementation in `codec/tests/reference/xbzrle.rs`,
//! written from the format's rules: both encoders (the one `encode` picks for this CPU and
//! the baseline one) give the reference's encoding, or give up where it does, for any pages
//! and budget; the decoder accepts exactly what the reference accepts and makes the same
//! page, and leaves the page untouched when it rejects. Input layout: `XbzrleCase`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::xbzrle;
use pagewire_fuzz::{xbzrle_reference as reference, XbzrleCase};

/// An XBZRLE encoder's signature.
type Encode = fn(&[u8], &[u8], &mut [u8], usize) -> Option<usize>;

fn check_decode(encoded: &[u8], old: &[u8]) {
    let want = reference::decode(encoded, old);
    let mut page = old.to_vec();
    let got = xbzrle::decode(encoded, &mut page);
    match want {
        Some(p) => {
            assert_eq!(got, Ok(()), "the reference accepts {encoded:02x?}");
            assert_eq!(page, p, "different pages from {encoded:02x?}");
        }
        None => {
            assert!(got.is_err(), "the reference rejects {encoded:02x?}");
            assert_eq!(page, old, "a rejected page was changed");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = XbzrleCase::parse(data) else {
        return;
    };
    let (old, new, budget) = (&case.old, &case.new, case.budget);
    let want = reference::encode(new, old, budget);
    let encoders: [(&str, Encode); 2] = [
        ("encode", xbzrle::encode),
        ("encode_baseline", xbzrle::encode_baseline),
    ];
    for (name, encode) in encoders {
        // an output of exactly the budget, and a larger one with the same budget
        for spare in [0, 32] {
            let mut out = vec![0xa5; budget + spare];
            let got = encode(new, old, &mut out, budget).map(|n| out[..n].to_vec());
            assert_eq!(got, want, "{name}, budget {budget}, out {}", budget + spare);
        }
    }
    if let Some(valid) = &want {
        check_decode(valid, old);
    }
    // the arbitrary tail alone, and spliced after the valid encoding
    check_decode(&case.encoded, old);
    if let Some(valid) = want {
        let mut spliced = valid;
        spliced.extend_from_slice(&case.encoded);
        check_decode(&spliced, old);
    }
});
