//! The XOR/RLE delta decoder (and XBZRLE's) on arbitrary input against an arbitrary base:
//! `check` and `apply` agree, nothing panics, nothing is written past the target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::{wire::delta, xbzrle};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let len = [512usize, 1024, 4096][usize::from(sel % 3)];
    let split = rest.len().min(len);
    let (base_bytes, rle) = rest.split_at(split);
    let mut base = vec![0x33u8; len];
    base[..base_bytes.len()].copy_from_slice(base_bytes);

    let checked = delta::check(rle, len);
    let mut dst = base.clone();
    let applied = delta::apply(rle, &mut dst);
    assert_eq!(checked, applied, "check and apply disagree");
    if let Ok(n) = applied {
        assert!(n <= rle.len());
        // applying the same delta twice restores the base (XOR)
        let mut again = dst.clone();
        assert_eq!(delta::apply(rle, &mut again), Ok(n));
        assert_eq!(again, base);
    }

    let mut page = base.clone();
    if xbzrle::decode(rle, &mut page).is_err() {
        assert_eq!(
            page, base,
            "a rejected XBZRLE page must leave the page untouched"
        );
    }
});
