//! Profiling aid: encodes a series once, then decodes it over and over (in place or through
//! a cache copy), so a profiler sees the decoder alone; prints each pass's decode speed and
//! the later passes' (mean, and the best round).
//!
//!     cargo run --release -p pagewire-benches --example decode_profile -- DIR [in-place|cache-copy] [no-lz4]
//!
//! `ROUNDS=N` (20): decodes of the whole stream. `FOCUS=1`: pass 0 keeps only the pages the
//! later passes send again, so the later passes dominate a profile. `ONLY_FIRST=1`: decodes
//! pass 0 alone. `COLD=1`: caches flushed before each pass's decode, as
//! in the harness, where the pass's encoding runs in between. `PERF_CTL=FIFO PERF_ACK=FIFO2` with
//! `perf record --control fifo:FIFO,FIFO2 -D -1`: perf samples the later passes only.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pagewire::{Config, DecodeMode, Decoder, Encoder, MemoryImage, HEADER_LEN};
use pagewire_benches::PageSet;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let set = match args.first().map(String::as_str) {
        Some("synthetic") | None => PageSet::synthetic(64, 8, 1)?,
        Some(dir) => PageSet::from_dir(dir.as_ref(), 8)?,
    };
    let mut set = set;
    if std::env::var_os("FOCUS").is_some() {
        // pass 0 keeps only the pages later passes send again: the profile sees them alone
        let later: std::collections::HashSet<u64> =
            set.passes[1..].iter().flatten().map(|&(p, _)| p).collect();
        set.passes[0].retain(|(p, _)| later.contains(p));
    }
    let mode = match args.get(1).map(String::as_str) {
        Some("cache-copy") => DecodeMode::CacheCopy,
        _ => DecodeMode::InPlace,
    };
    let cfg = Config {
        page_size: set.page_size as u32,
        lz4: args.get(2).map(String::as_str) != Some("no-lz4"),
        ..Config::DEFAULT
    };
    let mut enc_mem = vec![0u8; cfg.encoder_storage_len()];
    let mut enc = Encoder::new(cfg, &mut enc_mem)?;
    let mut out = vec![0u8; cfg.max_output_len()];
    let mut wires: Vec<Vec<u8>> = Vec::new();
    for (i, pass) in set.passes.iter().enumerate() {
        let before = *enc.stats();
        let mut w = Vec::new();
        for &(pfn, off) in pass {
            let n = enc.encode_page(pfn, set.page(off), &mut out)?;
            w.extend_from_slice(&out[..n]);
        }
        let n = enc.end_iteration(&mut out)?;
        w.extend_from_slice(&out[..n]);
        if i + 1 == set.passes.len() {
            let n = enc.finish(&mut out)?;
            w.extend_from_slice(&out[..n]);
        }
        let a = enc.stats();
        eprintln!(
            "pass {i}: zero {} dup {} raw {} delta {} ({} B) blocks {} ({} B)",
            a.zero.pages - before.zero.pages,
            a.dup.pages - before.dup.pages,
            a.raw.pages - before.raw.pages,
            a.delta.pages - before.delta.pages,
            a.delta.bytes - before.delta.bytes,
            a.blocks.pages - before.blocks.pages,
            a.blocks.bytes - before.blocks.bytes,
        );
        wires.push(w);
    }
    let mut dec_mem = vec![0u8; cfg.decoder_storage_len_for(mode)];
    let mut mem = vec![1u8; set.mem_bytes];
    let later_bytes = (set.pages_in(1..set.passes.len()) * set.page_size) as f64;
    let mut later = Duration::ZERO;
    let rounds: usize = std::env::var("ROUNDS").map_or(20, |r| r.parse().unwrap_or(20));
    let mut per_pass = vec![Duration::ZERO; wires.len()];
    // PERF_CTL=FIFO PERF_ACK=FIFO2: `perf record --control fifo:FIFO,FIFO2 -D -1` samples
    // the later passes only
    let mut perf_ctl = std::env::var_os("PERF_CTL").map(|p| {
        let ctl = std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .expect("PERF_CTL");
        let ack =
            std::fs::File::open(std::env::var_os("PERF_ACK").expect("PERF_ACK")).expect("PERF_ACK");
        (ctl, ack)
    });
    let tell = |perf: &mut Option<(std::fs::File, std::fs::File)>, what: &[u8]| {
        use std::io::{Read, Write};
        if let Some((ctl, ack)) = perf.as_mut() {
            ctl.write_all(what).expect("perf control");
            let mut b = [0u8; 5];
            ack.read_exact(&mut b).expect("perf ack");
        }
    };
    // COLD=1: 64 MiB written before each pass's decode, so that it starts with cold caches
    let mut evict = std::env::var_os("COLD").map(|_| vec![0u8; 64 << 20]);
    let mut best = Duration::MAX;
    for _ in 0..rounds {
        let before = later;
        let mut dec = Decoder::new(cfg, mode, &mut dec_mem)?;
        let passes = if std::env::var_os("ONLY_FIRST").is_some() {
            1
        } else {
            wires.len()
        };
        for (i, w) in wires.iter().enumerate().take(passes) {
            let input = if i == 0 { &w[HEADER_LEN..] } else { &w[..] };
            if i == 1 {
                tell(&mut perf_ctl, b"enable\n");
            }
            if let Some(evict) = evict.as_mut() {
                // as in the harness, where the pass's encoding runs between two decodes
                if i > 0 {
                    tell(&mut perf_ctl, b"disable\n");
                }
                evict
                    .iter_mut()
                    .step_by(64)
                    .for_each(|b| *b = b.wrapping_add(1));
                if i > 0 {
                    tell(&mut perf_ctl, b"enable\n");
                }
            }
            let t = Instant::now();
            let used = dec
                .decode(input, &mut MemoryImage::new(&mut mem, set.page_size))
                .context("decode")?;
            per_pass[i] += t.elapsed();
            if i > 0 {
                later += t.elapsed();
            }
            assert_eq!(used, input.len());
        }
        tell(&mut perf_ctl, b"disable\n");
        best = best.min(later - before);
    }
    for (i, (d, w)) in per_pass.iter().zip(&wires).enumerate() {
        let pages = set.passes[i].len();
        println!(
            "pass {i}: {pages} pages, {} wire bytes, {:.1} us per pass, {:.2} GB/s",
            w.len(),
            d.as_secs_f64() * 1e6 / rounds as f64,
            (pages * set.page_size * rounds) as f64 / d.as_secs_f64() / 1e9
        );
    }
    println!(
        "{:?}: later passes {:.2} GB/s, best round {:.2} GB/s ({} pages per round)",
        mode,
        later_bytes * rounds as f64 / later.as_secs_f64() / 1e9,
        later_bytes / best.as_secs_f64() / 1e9,
        set.pages_in(1..set.passes.len())
    );
    Ok(())
}
