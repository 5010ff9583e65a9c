//! Writes the seed corpus of every fuzz target into `fuzz/seeds/<target>/` (checked in,
//! small). Run from the repository root:
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example make_seeds

use std::fs;
use std::path::Path;

use pagewire::{Config, Features};
use pagewire_fuzz::{encode, PageOp, Step};

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
    ];
    for (i, b) in bodies.iter().enumerate() {
        let mut s = vec![(i as u8) << 2];
        s.extend_from_slice(&(b.len() as u16).to_le_bytes());
        s.extend_from_slice(b);
        write("decode_body", &format!("body-{i}"), &s);
    }
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
    // structured targets take arbitrary bytes
    for t in ["roundtrip", "corrupted", "policies"] {
        for i in 0..4u64 {
            write(t, &format!("noise-{i}"), &noise(100 + i, 64 << i));
        }
    }
}
