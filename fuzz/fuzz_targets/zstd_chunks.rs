//! The zstd chunks a destination reads when the source sends `--compress zstd`, or a C
//! caller uses the `zstd` feature (`stream-zstd`): arbitrary bytes as the link give stream
//! bytes or an error, never a panic, never more than the reader's buffer at once, whether
//! read off a link ([`ZstdIn`]) or pushed in pieces ([`Unchunker`], as C does); and any data
//! written in arbitrary pieces, with flushes and changes of level (or stored chunks)
//! between, comes back exactly, then the end, then whatever followed the end chunk on the
//! link, untouched.
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use pagewire_stream_zstd::{Unchunker, ZstdIn, ZstdOut};

/// Stream bytes read from an arbitrary link before giving up: far more than any input here
/// can hold honestly, small enough to stay fast.
const LIMIT: usize = 16 << 20;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode & 3 == 2 {
        // the bytes as the link, pushed in pieces into output buffers of another size
        let mut un = Unchunker::new().unwrap();
        let mut out = vec![0u8; 1 + usize::from(mode >> 2) * 131];
        let (mut at, mut total) = (0usize, 0usize);
        let step = 1 + usize::from(mode >> 4) * 61;
        while total < LIMIT {
            let end = (at + step).min(rest.len());
            match un.feed(&rest[at..end], &mut out) {
                Err(_) => break,
                Ok(p) => {
                    assert!(p.consumed <= end - at && p.produced <= out.len());
                    at += p.consumed;
                    total += p.produced;
                    if p.ended || (p.consumed == 0 && p.produced == 0 && end == rest.len()) {
                        break;
                    }
                }
            }
        }
        return;
    }
    if mode & 1 == 0 {
        // the bytes as the link: read in pieces until the end or an error
        let mut link = rest;
        let mut zin = ZstdIn::new().unwrap();
        let mut buf = vec![0u8; 1 + usize::from(mode) * 97];
        let mut total = 0usize;
        while total < LIMIT {
            match zin.reader(&mut link).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    assert!(n <= buf.len());
                    total += n;
                }
            }
        }
        return;
    }
    // the bytes as data: through ZstdOut in pieces, then back, then what follows
    // a new level opens a new zstd context, which costs far more than the bytes here: a
    // few changes per input keep the target fast (`auto` changes a few times per pass)
    let levels = [Some(1), None, Some(3), Some(-5), None, Some(2)];
    let mut changes = 0;
    let first = usize::from(mode >> 1) % levels.len();
    let mut link = Vec::new();
    let mut out = ZstdOut::new(levels[first]).unwrap();
    let step = 1 + usize::from(mode >> 3) * 37;
    for (i, piece) in rest.chunks(step).enumerate() {
        // the level (or stored chunks) changes every few pieces, as `auto` changes it
        if i % 4 == 3 && changes < 6 {
            changes += 1;
            out.set_level(&mut link, levels[(first + i) % levels.len()]).unwrap();
        }
        out.write(&mut link, piece).unwrap();
        if i % 3 == 2 {
            out.flush(&mut link).unwrap();
        }
    }
    out.finish(&mut link).unwrap();
    link.extend_from_slice(b"after");
    let mut r = &link[..];
    let mut zin = ZstdIn::new().unwrap();
    let mut back = vec![0u8; rest.len()];
    zin.reader(&mut r).read_exact(&mut back).unwrap();
    assert_eq!(back, rest);
    zin.expect_end(&mut r).unwrap();
    assert_eq!(r, b"after");
});
