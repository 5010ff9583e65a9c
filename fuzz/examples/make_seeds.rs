//! Writes the seed corpus of every fuzz target into `fuzz/seeds/<target>/` (checked in,
//! small). Run from the repository root:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example make_seeds

use std::fs;
use std::path::Path;

use pagewire::{Config, Features};
use pagewire_fuzz::{
    bodies_input, bodies_of, decode_all, encode, ModesCase, PageOp, Step, MAX_BODIES,
};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    fs::create_dir_all(&dir).expect("create seed folder");
    fs::write(dir.join(name), bytes).expect("write seed");
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sample_steps(cfg: &Config) -> Vec<Step> {
    let ops = vec![
        PageOp::Zero,
        PageOp::Fill(7),
        PageOp::Copy(1),
        PageOp::Edit {
            from: 1,
            at: 100,
            len: 3,
            value: 9,
        },
        PageOp::MoveBlock {
            from: 1,
            src: 0,
            dst: 3,
        },
        PageOp::EndIteration,
        PageOp::Random(42),
        PageOp::Edit {
            from: 5,
            at: 4000,
            len: 40,
            value: 1,
        },
        PageOp::Blob(3, 12),
    ];
    pagewire_fuzz::steps(&ops, cfg.page_size as usize, cfg.block_size())
}

fn main() {
    let small = Config {
        cache_pages: 4,
        frame_bytes: 16384,
        stream_id: 7,
        ..Config::DEFAULT
    };
    for (i, cfg) in [
        small,
        Config {
            lz4: false,
            ..small
        },
        Config {
            cache_pages: 1,
            blocks_per_page: 8,
            ..small
        },
    ]
    .iter()
    .enumerate()
    {
        let wire = encode(*cfg, Features::ALL, &sample_steps(cfg));
        let mut s = vec![0x80u8];
        s.extend_from_slice(&wire);
        write("decode_stream", &format!("stream-{i}"), &s);
        write("c_api", &format!("stream-{i}"), &s);
        // the same frames behind the built-in header variants
        let mut f = vec![(i as u8) * 5];
        f.extend_from_slice(&wire[pagewire::HEADER_LEN..]);
        write("decode_stream", &format!("frames-{i}"), &f);
    }
    // record bodies: ZERO, RAW, DUP age 1, DELTA age 1 one run, PATCH of pfn 0 age 1, BLOCKS (zero, ref, literal, delta), ITER, END
    let mut raw = vec![0x03, 0x00];
    raw.extend_from_slice(&noise(1, 4096));
    let bodies: Vec<Vec<u8>> = vec![
        vec![0x01, 0x00, 0x01, 0x00, 0x10, 0x00],
        raw.clone(),
        [raw.clone(), vec![0x02, 0x00, 0x01]].concat(),
        [raw.clone(), vec![0x04, 0x00, 0x01, 0x05, 0x05, 1, 2]].concat(),
        [raw.clone(), vec![0x06, 0x01, 0x01, 0x05, 0x05, 1, 2]].concat(),
        [
            raw.clone(),
            vec![0x05, 0x00, 0xe4, 0x01, 0x03],
            vec![9; 1024],
            vec![0x00, 0x01],
        ]
        .concat(),
        vec![0x11, 0x01, 0x03, b'a', b'b', b'c', 0x12, 0x00],
        // PLAIN pfn 0; then RAW, PLAIN of the same page, DUP of its retired slot (refused);
        // then RAW, PLAIN of another page, DUP of the RAW's slot (taken by no PLAIN)
        [vec![0x07, 0x00], noise(4, 4096)].concat(),
        [raw.clone(), vec![0x07, 0x01], noise(5, 4096), vec![0x02, 0x00, 0x01]].concat(),
        [raw.clone(), vec![0x07, 0x00], noise(5, 4096), vec![0x02, 0x00, 0x01]].concat(),
    ];
    for (i, b) in bodies.iter().enumerate() {
        // the two targets read the same selector bits 0-4 and body layout
        let mut s = vec![(i as u8) << 2];
        s.extend_from_slice(&bodies_input(&[b]));
        write("decode_body", &format!("body-{i}"), &s);
        write("decode_modes_differential", &format!("body-{i}"), &s);
    }
    modes_seeds(&raw);
    // deltas: base bytes then a delta
    for (i, rle) in [
        vec![0x00u8, 0x01],
        vec![0x05, 0x04, 1, 2, 0x0a, 0x03, 3],
        vec![0x81, 0x07, 0x03, 5],
    ]
    .iter()
    .enumerate()
    {
        let mut s = vec![0u8];
        s.extend_from_slice(&noise(2, 512));
        s.extend_from_slice(rle);
        write("delta", &format!("delta-{i}"), &s);
    }
    xbzrle_seeds();
    // structured targets take arbitrary bytes
    for t in ["roundtrip", "corrupted", "policies"] {
        for i in 0..4u64 {
            write(t, &format!("noise-{i}"), &noise(100 + i, 64 << i));
        }
    }
}

/// An `XbzrleCase` (see `fuzz/src/lib.rs`): page length index and old page kind, budget byte
/// and absolute budget, edits (offset, run length, XOR value), an encoded page.
fn xbzrle_case(
    length_and_kind: u8,
    budget_mode: u8,
    budget: u16,
    edits: &[(u16, u8, u8)],
    encoded: &[u8],
) -> Vec<u8> {
    let mut s = vec![length_and_kind, budget_mode];
    s.extend_from_slice(&budget.to_le_bytes());
    s.push(edits.len() as u8);
    for &(at, len, xor) in edits {
        s.extend_from_slice(&at.to_le_bytes());
        s.extend_from_slice(&[len, xor]);
    }
    s.extend_from_slice(encoded);
    s
}

/// Edits that change the first `k` bytes of a page, 255 at a time.
fn head_edits(k: usize) -> Vec<(u16, u8, u8)> {
    (0..k)
        .step_by(255)
        .map(|at| (at as u16, (k - at).min(255) as u8, 0xa5))
        .collect()
}

fn xbzrle_seeds() {
    let t = "xbzrle_differential";
    // the smallest case: old 00 * 8, new 11 00 * 7; QEMU gives up at budgets 3 and 4
    for budget in [3, 4, 5] {
        let s = xbzrle_case(0, 0x80, budget, &[(0, 1, 0x11)], &[]);
        write(t, &format!("issue-case-budget-{budget}"), &s);
    }
    // an unchanged page with a budget of 1 (gives up) and 2 (encodes to nothing)
    for budget in [1, 2] {
        write(
            t,
            &format!("unchanged-budget-{budget}"),
            &xbzrle_case(6, 0x80, budget, &[], &[]),
        );
    }
    // QEMU's real call, 4096-byte page and budget: encodings of 4094-4097 bytes, with and
    // without unchanged bytes after them
    for k in [4091, 4092, 4093] {
        let s = xbzrle_case(5, 0x80, 4096, &head_edits(k), &[]);
        write(t, &format!("real-call-head-{k}"), &s);
    }
    for from in [2u16, 3, 4] {
        let s = xbzrle_case(5, 0x80, 4096, &[(from, 0, 0x5a)], &[]);
        write(t, &format!("real-call-tail-from-{from}"), &s);
    }
    // memory-like pages with scattered edits, at budgets around their own encoding length
    let scattered = [
        (5u16, 3u8, 0x40u8),
        (300, 1, 0x01),
        (2000, 130, 0xff),
        (4090, 6, 0x10),
    ];
    for offset in [0u8, 2, 4, 6, 8] {
        let s = xbzrle_case(6 + 5, offset, 0, &scattered, &[]);
        write(t, &format!("scattered-budget-{offset}"), &s);
    }
    // decoder inputs on a 64-byte page: valid, non-canonical lengths, empty runs, past the
    // end, cut short
    for (i, encoded) in [
        &[0x00u8, 0x01, 0x05][..],
        &[0x80, 0x00, 0x81, 0x00, 0x07],
        &[0x00, 0x01, 0x05, 0x00, 0x01, 0x06],
        &[0x3f, 0x02, 1, 2],
        &[0xc0, 0x00, 0x01, 1],
        &[0x05, 0x80],
        &[0x05, 0x03, 1, 2],
    ]
    .iter()
    .enumerate()
    {
        write(
            t,
            &format!("decode-{i}"),
            &xbzrle_case(2, 0, 0, &[], encoded),
        );
    }
}

/// Recipes that rewrite every page several times (`steps` gives op `i` the pfn `i % 37`):
/// edits of a page's own last version (PATCH or DELTA), copies of other pages, moved
/// blocks, zero pages, so slots are retired in every way.
fn rewriting_ops() -> Vec<PageOp> {
    let mut ops: Vec<PageOp> = Vec::new();
    // the page index (what `PageOp` recipes refer to) of each pfn's last version
    let mut last = [0u16; 37];
    let mut pages = 0u16;
    for round in 0..4u16 {
        for _ in 0..37 {
            let pfn = ops.len() % 37;
            let j = pfn as u16;
            ops.push(match (j + round) % 6 {
                // a few new pages, the rest copies of them (small seeds)
                _ if round == 0 && j < 3 => PageOp::Random(u64::from(j) + 1),
                _ if round == 0 && j < 5 => PageOp::Fill(j as u8),
                _ if round == 0 => PageOp::Copy(j % 5),
                0 => PageOp::Zero,
                1 => PageOp::Copy(last[(pfn + 1) % 37]),
                2 => PageOp::MoveBlock {
                    from: last[pfn],
                    src: 1,
                    dst: 0,
                },
                _ => PageOp::Edit {
                    from: last[pfn],
                    at: 64 * j,
                    len: 5,
                    value: 0x11,
                },
            });
            last[pfn] = pages;
            pages += 1;
        }
        ops.push(PageOp::EndIteration);
    }
    ops
}

/// Seeds of `decode_modes_differential` (layout: `ModesCase`): valid streams cut into
/// frame bodies under several selectors, a whole stream, a page out of memory.
fn modes_seeds(raw: &[u8]) {
    let t = "decode_modes_differential";
    // cache 64 or 4, blocks 1-8, LZ4, 8 KiB pages, patterned memory
    for sel in [0x03u8, 0x0e, 0x17, 0x2b, 0x93, 0xa7] {
        let cfg = ModesCase::config(sel);
        let ops = rewriting_ops();
        let steps = pagewire_fuzz::steps(&ops, cfg.page_size as usize, cfg.block_size());
        let wire = encode(cfg, Features::ALL, &steps);
        let bodies = bodies_of(&wire);
        println!("{t}: rewriting-{sel:02x}: {} frames", bodies.len());
        assert!(bodies.len() <= MAX_BODIES as usize, "a seed cut short");
        let mut s = vec![sel];
        s.extend_from_slice(&bodies_input(&bodies));
        let case = ModesCase::parse(&s).expect("a case");
        assert!(
            decode_all(&case.wire, usize::MAX).1,
            "the seed's stream is valid"
        );
        write(t, &format!("rewriting-{sel:02x}"), &s);
    }
    // a whole stream with its own header, into patterned memory
    let cfg = Config {
        cache_pages: 8,
        frame_bytes: 16384,
        stream_id: 9,
        ..Config::DEFAULT
    };
    let mut s = vec![0xc0u8];
    s.extend_from_slice(&encode(cfg, Features::ALL, &sample_steps(&cfg)));
    write(t, "stream", &s);
    // the same pages as an encoder looking for no redundancy sends them: ZERO and PLAIN
    let mut s = vec![0xc0u8];
    s.extend_from_slice(&encode(cfg, Features::NONE, &sample_steps(&cfg)));
    write(t, "stream-plain", &s);
    // RAW of pfn 100 (zigzag 200), past the 48 pages of memory, after a RAW of pfn 0
    let mut far = vec![0x03u8, 0xc8, 0x01];
    far.extend_from_slice(&noise(3, 4096));
    let mut s = vec![0x00u8];
    s.extend_from_slice(&bodies_input(&[[raw, &far].concat()]));
    write(t, "pfn-out-of-range", &s);
}
