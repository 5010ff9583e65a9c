//! Profiling aid: encodes a series over and over with one setting, into a wire buffer
//! mapped beforehand, so a profiler sees the encoder alone; prints the speed of pass 0, of
//! the later passes and of all of them (mean over the rounds, and the best round).
//!
//!     cargo run --release -p pagewire-benches --example encode_profile -- DIR [all|none|cbr|delta|bulk|raw] [no-lz4]
//!
//! `synthetic` for DIR is the built-in series, `zeros` the harness's 64 MiB of zero pages
//! (written first). `none` is the encoder's fastest setting
//! (zero pages, the rest PLAIN). `bulk`: plain pages in bulk (`Encoder::encode_plain_pages`),
//! built in the wire buffer, as the harness's plain-pages row; `raw`: no encoder, each page
//! copied behind an 8-byte header, as the harness's raw row. `ROUNDS=N` (20): encodes of the
//! whole series.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pagewire::{Config, Encoder, Features};
use pagewire_benches::codecs::{encode_plain_pass, touched, Codec, Raw};
use pagewire_benches::PageSet;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let set = match args.first().map(String::as_str) {
        Some("synthetic") | None => PageSet::synthetic(64, 8, 1)?,
        Some("zeros") => PageSet::written_zeros(16384, 4096),
        Some(dir) => PageSet::from_dir(dir.as_ref(), 8)?,
    };
    let mode = args.get(1).map(String::as_str);
    let features = match mode {
        Some("all") | None => Features::ALL,
        Some("none" | "bulk" | "raw") => Features::NONE,
        Some("cbr") => Features {
            cbr: true,
            delta: false,
        },
        Some("delta") => Features {
            cbr: false,
            delta: true,
        },
        Some(other) => bail!("unknown setting {other:?}: all, none, cbr, delta, bulk or raw"),
    };
    let cfg = Config {
        page_size: set.page_size as u32,
        lz4: args.get(2).map(String::as_str) != Some("no-lz4"),
        ..Config::DEFAULT
    };
    let rounds: usize = std::env::var("ROUNDS").map_or(20, |r| r.parse().unwrap_or(20));
    let mut storage = touched(cfg.encoder_storage_len());
    let mut out = touched(cfg.max_output_len());
    let mut wire = touched(set.stream_room());
    // `bulk` builds its stream here, in place, mapped beforehand as `wire` is
    let mut built = touched(if mode == Some("bulk") {
        set.stream_room()
    } else {
        0
    });
    let mut built_len = 0;
    let mut per_pass = vec![Duration::ZERO; set.passes.len()];
    let mut best = Duration::MAX;
    let mut wire_bytes = 0usize;
    for _ in 0..rounds {
        let mut enc = Encoder::new(cfg, &mut storage)?;
        enc.set_features(features);
        let mut round = Duration::ZERO;
        wire_bytes = 0;
        for (i, pass) in set.passes.iter().enumerate() {
            wire.clear();
            let t = Instant::now();
            let last = i + 1 == set.passes.len();
            match mode {
                Some("raw") => Raw(set.page_size).encode_pass(&set, pass, last, &mut wire)?,
                Some("bulk") => {
                    built_len = encode_plain_pass(&mut enc, &set, pass, last, &mut built)?
                }
                _ => {
                    for &(pfn, off) in pass {
                        let n = enc.encode_page(pfn, set.page(off), &mut out)?;
                        wire.extend_from_slice(&out[..n]);
                    }
                    let n = enc.end_iteration(&mut out)?;
                    wire.extend_from_slice(&out[..n]);
                    if last {
                        let n = enc.finish(&mut out)?;
                        wire.extend_from_slice(&out[..n]);
                    }
                }
            }
            let took = t.elapsed();
            per_pass[i] += took;
            round += took;
            wire_bytes += wire.len() + std::mem::take(&mut built_len);
        }
        best = best.min(round);
    }
    let gb_s = |pages: usize, d: Duration| (pages * set.page_size) as f64 / d.as_secs_f64() / 1e9;
    let all_pages = set.pages_in(0..set.passes.len());
    let later_pages = set.pages_in(1..set.passes.len());
    let later: Duration = per_pass[1..].iter().sum();
    let all: Duration = per_pass.iter().sum();
    println!(
        "{features:?} lz4 {}: {} pages, wire {:.1} % of the pages",
        cfg.lz4,
        all_pages,
        100.0 * wire_bytes as f64 / (all_pages * set.page_size) as f64
    );
    println!(
        "pass 0 {:.2} GB/s, later passes {:.2} GB/s, all {:.2} GB/s, best round {:.2} GB/s",
        gb_s(set.passes[0].len() * rounds, per_pass[0]),
        gb_s(later_pages * rounds, later),
        gb_s(all_pages * rounds, all),
        gb_s(all_pages, best).max(0.0)
    );
    let _ = out.first().context("output buffer")?;
    Ok(())
}
