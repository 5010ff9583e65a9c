//! Side-by-side comparison of page codecs on the same pages, in one process: wire bytes per
//! raw byte, and encode/decode speed in GB/s of page input on one core, against the memory
//! bandwidth ceiling measured in the same run. Every codec's output is decoded and checked
//! against the source pages.
//!
//!     cargo run --release -p pagewire-benches --bin compare -- [SNAPSHOT_DIR] [--json FILE]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use pagewire::xbzrle::{XbzrleCache, DEFAULT_CACHE_BYTES};
use pagewire::{Config, DecodeMode, Features};
use pagewire_benches::auto::{self, AutoRun};
use pagewire_benches::codecs::{Block, Codec, Copy, Lz, Pagewire, Raw, Xbzrle};
use pagewire_benches::PageSet;
use serde::Serialize;

#[derive(Parser)]
#[command(about = "Compare page codecs side by side on the same pages")]
struct Args {
    /// Snapshot series folder (manifest.json + raw snapshots); built-in synthetic series if absent.
    dir: Option<PathBuf>,
    /// Passes (snapshots) to use.
    #[arg(long, default_value_t = 8)]
    passes: usize,
    /// Synthetic series memory size in MiB.
    #[arg(long, default_value_t = 64)]
    synthetic_mib: usize,
    /// Write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Repeat each measurement and keep the fastest.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Measure only the codecs whose name contains this text (and the copy ceiling); for
    /// profiling one codec.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
    /// MiB of zero pages for the zero-page rows and the read ceiling; twice the last-level
    /// cache (at least 64 MiB) unless given, so that both read memory, not the cache.
    #[arg(long, value_name = "MIB")]
    zero_mib: Option<usize>,
}

/// The last-level cache's size in bytes, as Linux reports it for CPU 0, if it does.
fn last_level_cache() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    (0..8)
        .rev()
        .filter_map(|i| std::fs::read_to_string(dir.join(format!("index{i}/size"))).ok())
        .find_map(|s| {
            let s = s.trim();
            let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
            let n: usize = digits.parse().ok()?;
            match unit {
                "K" => Some(n << 10),
                "M" => Some(n << 20),
                _ => None,
            }
        })
}

#[derive(Serialize, Clone, Default)]
struct Part {
    raw_bytes: u64,
    wire_bytes: u64,
    ratio_percent: f64,
    encode_gb_s: f64,
    decode_gb_s: f64,
}

#[derive(Serialize, Clone)]
struct Row {
    codec: String,
    all_passes: Part,
    later_passes: Part,
}

#[derive(Serialize)]
struct Report {
    pages: String,
    rows: Vec<Row>,
    zero_pages: Vec<Row>,
    zero_pages_read_ceiling_gb_s: f64,
    lanes: Vec<(usize, f64)>,
    best_by_link: Vec<(String, String, f64)>,
    auto_by_link: Vec<AutoByLink>,
}

/// `--compress auto` run on one link, against the best other row there.
#[derive(Serialize)]
struct AutoByLink {
    link: String,
    lanes: usize,
    auto_gb_s: f64,
    best_other: String,
    best_other_gb_s: f64,
    auto: AutoRun,
}

fn part(raw: u64, wire: u64, enc: Duration, dec: Duration) -> Part {
    let gb = |d: Duration| {
        if d.is_zero() {
            0.0
        } else {
            raw as f64 / d.as_secs_f64() / 1e9
        }
    };
    Part {
        raw_bytes: raw,
        wire_bytes: wire,
        ratio_percent: if raw == 0 {
            0.0
        } else {
            wire as f64 * 100.0 / raw as f64
        },
        encode_gb_s: gb(enc),
        decode_gb_s: gb(dec),
    }
}

/// GB/s of reading every page of `set`'s first pass (a word sum), the fastest of `repeat`:
/// the most any codec that must look at every byte can do on these pages.
fn read_ceiling(set: &PageSet, repeat: usize) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..repeat {
        let t = Instant::now();
        // eight independent sums, so the loop is bound by loads, not by one add chain
        let mut sums = [0u64; 8];
        for &(_, off) in &set.passes[0] {
            for line in set.page(off).chunks_exact(64) {
                for (s, w) in sums.iter_mut().zip(line.chunks_exact(8)) {
                    *s = s.wrapping_add(u64::from_ne_bytes(w.try_into().unwrap()));
                }
            }
        }
        std::hint::black_box(sums);
        let bytes = (set.passes[0].len() * set.page_size) as f64;
        best = best.max(bytes / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Runs one codec over every pass; verifies the destination after each pass.
fn measure(codec: &mut dyn Codec, set: &PageSet, verify: bool) -> Result<Row> {
    let ps = set.page_size;
    let mut mem = vec![1u8; set.mem_bytes];
    let mut wire = pagewire_benches::codecs::touched_empty(set.stream_room());
    // for codecs that build their stream in the caller's buffer
    let mut out = pagewire_benches::codecs::touched(set.stream_room());
    let (mut enc_all, mut dec_all, mut enc_later, mut dec_later) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let (mut wire_all, mut wire_later) = (0u64, 0u64);
    let n = set.passes.len();
    for (i, pass) in set.passes.iter().enumerate() {
        wire.clear();
        let t = Instant::now();
        let built = match codec.encode_pass_into(set, pass, i + 1 == n, &mut out) {
            Some(r) => Some(r?),
            None => {
                codec.encode_pass(set, pass, i + 1 == n, &mut wire)?;
                None
            }
        };
        let e = t.elapsed();
        let stream = built.map_or(&wire[..], |len| &out[..len]);
        let t = Instant::now();
        codec.decode_pass(stream, &mut mem)?;
        let d = t.elapsed();
        if verify {
            for &(pfn, off) in pass {
                let at = pfn as usize * ps;
                if mem[at..at + ps] != *set.page(off) {
                    bail!(
                        "{}: pass {i}: page {pfn} differs after decoding",
                        codec.name()
                    );
                }
            }
        }
        enc_all += e;
        dec_all += d;
        wire_all += stream.len() as u64;
        if i > 0 {
            enc_later += e;
            dec_later += d;
            wire_later += stream.len() as u64;
        }
    }
    let raw_all = (set.pages_in(0..n) * ps) as u64;
    let raw_later = (set.pages_in(1..n) * ps) as u64;
    Ok(Row {
        codec: codec.name(),
        all_passes: part(raw_all, wire_all, enc_all, dec_all),
        later_passes: part(raw_later, wire_later, enc_later, dec_later),
    })
}

fn best_of(
    repeat: usize,
    mut make: impl FnMut() -> Result<Box<dyn Codec>>,
    set: &PageSet,
    verify: bool,
) -> Result<Row> {
    let mut best: Option<Row> = None;
    for _ in 0..repeat.max(1) {
        let mut codec = make()?;
        codec.prepare()?;
        let r = measure(codec.as_mut(), set, verify)?;
        best = Some(match best {
            None => r,
            Some(b) => {
                let pick = |x: f64, y: f64| x.max(y);
                let mut m = b.clone();
                m.all_passes.encode_gb_s = pick(b.all_passes.encode_gb_s, r.all_passes.encode_gb_s);
                m.all_passes.decode_gb_s = pick(b.all_passes.decode_gb_s, r.all_passes.decode_gb_s);
                m.later_passes.encode_gb_s =
                    pick(b.later_passes.encode_gb_s, r.later_passes.encode_gb_s);
                m.later_passes.decode_gb_s =
                    pick(b.later_passes.decode_gb_s, r.later_passes.decode_gb_s);
                m
            }
        });
    }
    best.ok_or_else(|| anyhow::anyhow!("no run"))
}

type Maker = Box<dyn Fn() -> Result<Box<dyn Codec>>>;

fn makers(ps: usize) -> Vec<(bool, Maker)> {
    let base = Config {
        page_size: ps as u32,
        ..Config::DEFAULT
    };
    let no_lz4 = Config { lz4: false, ..base };
    let zero_only = Features::NONE;
    let pw =
        move |label: &'static str, cfg: Config, f: Features, z: Option<i32>| -> (bool, Maker) {
            (
                true,
                Box::new(move || Ok(Box::new(Pagewire::new(label, cfg, f, z)) as Box<dyn Codec>)),
            )
        };
    // decoding into the destination memory itself, which holds the previous pass
    let in_place = move |label: &'static str, cfg: Config| -> (bool, Maker) {
        (
            true,
            Box::new(move || {
                let mut c = Pagewire::new(label, cfg, Features::ALL, None);
                c.mode = DecodeMode::InPlace;
                Ok(Box::new(c) as Box<dyn Codec>)
            }),
        )
    };
    let block = move |lz: Lz, batch: usize| -> (bool, Maker) {
        (
            true,
            Box::new(move || Ok(Box::new(Block::new(lz, batch, ps)?) as Box<dyn Codec>)),
        )
    };
    let xbzrle_slots = XbzrleCache::slots_for(DEFAULT_CACHE_BYTES, ps);
    vec![
        (
            true,
            Box::new(|| Ok(Box::new(Copy::default()) as Box<dyn Codec>)),
        ),
        (
            true,
            Box::new(move || Ok(Box::new(Raw(ps)) as Box<dyn Codec>)),
        ),
        (
            true,
            Box::new(move || Ok(Box::new(Xbzrle::new(xbzrle_slots, ps)) as Box<dyn Codec>)),
        ),
        block(Lz::Zstd(1), 1),
        block(Lz::Zstd(3), 1),
        block(Lz::Lz4, 1),
        block(Lz::Zstd(1), 64),
        block(Lz::Zstd(3), 64),
        block(Lz::Lz4, 16),
        pw("pagewire zero pages only", no_lz4, zero_only, None),
        (
            true,
            Box::new(move || {
                let mut c = Pagewire::new("pagewire plain pages, bulk", no_lz4, zero_only, None);
                c.bulk = true;
                Ok(Box::new(c) as Box<dyn Codec>)
            }),
        ),
        pw(
            "pagewire cbr only",
            no_lz4,
            Features {
                cbr: true,
                delta: false,
            },
            None,
        ),
        pw(
            "pagewire deltas only",
            no_lz4,
            Features {
                cbr: false,
                delta: true,
            },
            None,
        ),
        pw("pagewire all, no LZ4", no_lz4, Features::ALL, None),
        (
            true,
            Box::new(move || {
                let mut c = Pagewire::new(
                    "pagewire all, no LZ4, exhaustive",
                    no_lz4,
                    Features::ALL,
                    None,
                );
                c.exhaustive = true;
                Ok(Box::new(c) as Box<dyn Codec>)
            }),
        ),
        in_place("pagewire all, no LZ4, in place", no_lz4),
        pw("pagewire zero + LZ4", base, zero_only, None),
        pw("pagewire all + LZ4", base, Features::ALL, None),
        in_place("pagewire all + LZ4, in place", base),
        pw(
            "pagewire all, no LZ4, + zstd-1",
            no_lz4,
            Features::ALL,
            Some(1),
        ),
        pw("pagewire all + LZ4 + zstd-1", base, Features::ALL, Some(1)),
    ]
}

/// N encoder lanes (pages split by pfn) on N threads: aggregate encode GB/s.
fn lanes(set: &PageSet, n: usize) -> Result<f64> {
    let ps = set.page_size;
    let cfg = Config {
        page_size: ps as u32,
        ..Config::DEFAULT
    };
    let split: Vec<_> = (0..n).map(|l| set.lane_passes(l, n)).collect();
    let mut codecs: Vec<Pagewire> = (0..n)
        .map(|_| Pagewire::new("lane", cfg, Features::ALL, None))
        .collect();
    for c in &mut codecs {
        c.prepare()?;
    }
    // each lane's output mapped before it is measured, as the other rows' output is
    let mut wires: Vec<Vec<u8>> = (0..n)
        .map(|_| pagewire_benches::codecs::touched_empty(set.stream_room()))
        .collect();
    let t = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = codecs
            .iter_mut()
            .zip(&split)
            .zip(&mut wires)
            .map(|((c, passes), wire)| {
                s.spawn(move || -> Result<()> {
                    for (i, pass) in passes.iter().enumerate() {
                        wire.clear();
                        c.encode_pass(set, pass, i + 1 == passes.len(), wire)?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("lane panicked"))??;
        }
        Ok(())
    })?;
    let raw = (set.pages_in(0..set.passes.len()) * ps) as f64;
    Ok(raw / t.elapsed().as_secs_f64() / 1e9)
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "{:<34} {:>9} {:>8} {:>8}   {:>9} {:>8} {:>8}",
        "codec", "all: wire", "enc GB/s", "dec GB/s", "later: wire", "enc GB/s", "dec GB/s"
    );
    for r in rows {
        let (a, l) = (&r.all_passes, &r.later_passes);
        println!(
            "{:<34} {:>8.1}% {:>8.2} {:>8.2}   {:>10.1}% {:>8.2} {:>8.2}",
            r.codec,
            a.ratio_percent,
            a.encode_gb_s,
            a.decode_gb_s,
            l.ratio_percent,
            l.encode_gb_s,
            l.decode_gb_s
        );
    }
}

/// The links of the per-link tables, and their bytes per second.
const LINKS: &[(&str, f64)] = &[
    ("100 Mbit/s", 12.5e6),
    ("1 Gbit/s", 125e6),
    ("10 Gbit/s", 1.25e9),
    ("100 Gbit/s", 12.5e9),
];

/// GB/s of memory a row moves over a link of `bytes_per_s` with `cores` cores: the slower
/// of its encoder and the link carrying its bytes (all passes). With more than one core
/// the row is granted a perfect split of its work among them (`cores` times its
/// one-core speed), which no peer measured here reaches: the bar `auto`'s lanes must
/// clear is the generous one.
fn link_gb_s(r: &Row, bytes_per_s: f64, cores: usize) -> f64 {
    let a = &r.all_passes;
    (a.encode_gb_s * 1e9 * cores as f64).min(bytes_per_s / (a.ratio_percent / 100.0).max(1e-9))
        / 1e9
}

fn check(label: &str, ok: bool, detail: String) {
    println!(
        "  [{}] {label}: {detail}",
        if ok { "met" } else { "NOT met" }
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    let set = match &args.dir {
        Some(d) => PageSet::from_dir(d, args.passes)?,
        None => PageSet::synthetic(args.synthetic_mib, args.passes, 1)?,
    };
    let ps = set.page_size;
    let label = format!(
        "{}: {} passes, {} pages ({} MiB) of input",
        set.name,
        set.passes.len(),
        set.pages_in(0..set.passes.len()),
        (set.pages_in(0..set.passes.len()) * ps) >> 20
    );
    println!("{label}");
    let mut rows = Vec::new();
    let wanted = |name: &str| {
        name == "memcpy (ceiling)" || args.only.as_deref().is_none_or(|o| name.contains(o))
    };
    for (verify, make) in makers(ps) {
        if !wanted(&make()?.name()) {
            continue;
        }
        let r = best_of(args.repeat, &make, &set, verify)?;
        eprintln!("measured {}", r.codec);
        rows.push(r);
    }
    print_rows(
        "one core; ratio = wire bytes / raw page bytes; GB/s of page input",
        &rows,
    );

    // zero pages alone, against the read ceiling on the same pages, more of them than the
    // last-level cache holds
    let zero_mib = args
        .zero_mib
        .unwrap_or_else(|| ((2 * last_level_cache().unwrap_or(0)) >> 20).max(64));
    let zero = PageSet::written_zeros((zero_mib << 20) / ps, ps);
    let pages = zero.pages_in(0..1);
    let read_gb_s = read_ceiling(&zero, args.repeat.max(3));
    let mut zero_rows = Vec::new();
    for (verify, make) in makers(ps) {
        let c = make()?;
        let name = c.name();
        if !wanted(&name) {
            continue;
        }
        if name == "memcpy (ceiling)"
            || name.starts_with("pagewire all")
            || name.starts_with("xbzrle")
        {
            zero_rows.push(best_of(args.repeat.max(3), &make, &zero, verify)?);
        }
    }
    print_rows(&format!("{pages} zero pages (written first)"), &zero_rows);
    println!("read ceiling (summing the same pages): {read_gb_s:.2} GB/s");

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut lane_rows = Vec::new();
    for n in 1..=cores {
        lane_rows.push((n, lanes(&set, n)?));
    }
    println!("\nencoder lanes (pagewire all + LZ4, pages split by pfn), aggregate encode GB/s:");
    for (n, g) in &lane_rows {
        println!("  {n} lane(s): {g:.2}");
    }

    // Which setting moves memory fastest over a given link: limited either by the encoder
    // or by the link carrying the encoded bytes.
    let mut best_by_link = Vec::new();
    println!(
        "\nfastest setting per link (memory moved per second = min(encode speed, link / ratio)):"
    );
    for &(name, bytes_per_s) in LINKS {
        let eff = |r: &Row| link_gb_s(r, bytes_per_s, 1) * 1e9;
        if let Some(best) = rows
            .iter()
            .filter(|r| r.codec != "memcpy (ceiling)")
            .max_by(|a, b| eff(a).total_cmp(&eff(b)))
        {
            println!(
                "  {name:<11} {:<34} {:.2} GB/s of memory",
                best.codec,
                eff(best) / 1e9
            );
            best_by_link.push((name.to_owned(), best.codec.clone(), eff(best) / 1e9));
        }
    }

    // `auto` itself on each link, against the best row above (pagewire's or a peer's)
    let mut auto_by_link = Vec::new();
    if wanted("auto") {
        println!(
            "\n--compress auto on a modelled link (the runner's rule on the measured encoder):"
        );
        println!(
            "  {:<11} {:>5} {:>9}  {:<34} {:>9} {:>6} {:>9}  auto chose (after window)",
            "link", "lanes", "auto GB/s", "best other row", "GB/s", "ratio", "windowed"
        );
        for &(name, bytes_per_s) in LINKS {
            for lanes in [1, 2] {
                let mut best: Option<AutoRun> = None;
                for _ in 0..args.repeat.max(1) {
                    let r = auto::run(&set, bytes_per_s, lanes)?;
                    if best.as_ref().is_none_or(|b| r.gb_s > b.gb_s) {
                        best = Some(r);
                    }
                }
                let a = best.context("no auto run")?;
                let on_link = |r: &Row| link_gb_s(r, bytes_per_s, lanes);
                let Some(other) = rows
                    .iter()
                    .filter(|r| r.codec != "memcpy (ceiling)")
                    .max_by(|x, y| on_link(x).total_cmp(&on_link(y)))
                else {
                    continue;
                };
                let other_gb_s = on_link(other);
                println!(
                    "  {name:<11} {lanes:>5} {:>9.3}  {:<34} {:>9.3} {:>5.2}x {:>8.2}x  {}",
                    a.gb_s,
                    other.codec,
                    other_gb_s,
                    a.gb_s / other_gb_s,
                    a.windowed_gb_s / other_gb_s,
                    a.describe()
                );
                auto_by_link.push(AutoByLink {
                    link: name.to_owned(),
                    lanes,
                    auto_gb_s: a.gb_s,
                    best_other: other.codec.clone(),
                    best_other_gb_s: other_gb_s,
                    auto: a,
                });
            }
        }
        println!(
            "  (auto scored as the rows are: raw bytes over the longer of its CPU time and its \
             bytes' time on the link; windowed: sender and link overlapping only within a \
             16 MiB window, the clocks its rule ran on)\n  (2 lanes: each lane its pages \
             (pfn % 2), half the link; the other rows at twice their one-core speed; lane 0's \
             choices shown)"
        );
    }

    println!("\nspeed targets (ratios within this run):");
    if let (Some((_, one)), Some((_, two))) = (
        lane_rows.iter().find(|(n, _)| *n == 1),
        lane_rows.iter().find(|(n, _)| *n == 2),
    ) {
        check(
            "two lanes encode >= 1.8x one lane",
            *two >= 1.8 * one,
            format!("{:.2}x ({two:.2} vs {one:.2} GB/s)", two / one),
        );
    }
    let find = |name: &str| rows.iter().find(|r| r.codec == name);
    let zfind = |name: &str| zero_rows.iter().find(|r| r.codec == name);
    if let Some(z) = zfind("pagewire all + LZ4") {
        // finding a zero page is reading it: the ceiling is reading, not copying
        let r = z.all_passes.encode_gb_s / read_gb_s;
        check("zero pages >= 0.9x read", r >= 0.9, format!("{:.2}x", r));
    }
    if let (Some(pw), Some(xb)) = (find("pagewire all, no LZ4"), find("xbzrle (QEMU-style)")) {
        let (p, x) = (&pw.later_passes, &xb.later_passes);
        check(
            "encoder without LZ4, later passes: as fast as XBZRLE, fewer bytes",
            p.encode_gb_s >= x.encode_gb_s && p.wire_bytes < x.wire_bytes,
            format!(
                "{:.2} vs {:.2} GB/s, {:.1}% vs {:.1}%",
                p.encode_gb_s, x.encode_gb_s, p.ratio_percent, x.ratio_percent
            ),
        );
    }
    // What LZ4 alone does with the same pages (64 KiB batches, nothing else), printed with
    // the two targets below: both are for pagewire with LZ4, so LZ4's own speed on these
    // pages says how far any change to the rest of pagewire could take them.
    let lz4_alone = find("lz4, 64 KiB batches");
    if let (Some(pw), Some(z)) = (find("pagewire all + LZ4"), find("zstd-1 per page")) {
        let (p, q) = (&pw.all_passes, &z.all_passes);
        let bound = lz4_alone.map_or(String::new(), |l| {
            format!(
                " (LZ4 alone: {:.1}x)",
                l.all_passes.encode_gb_s / q.encode_gb_s
            )
        });
        check(
            "encoder with LZ4: no more bytes than zstd-1 per page, >= 5x faster",
            p.wire_bytes <= q.wire_bytes && p.encode_gb_s >= 5.0 * q.encode_gb_s,
            format!(
                "{:.1}% vs {:.1}%, {:.1}x faster{bound}",
                p.ratio_percent,
                q.ratio_percent,
                p.encode_gb_s / q.encode_gb_s
            ),
        );
    }
    if let (Some(pw), Some(copy)) = (find("pagewire all + LZ4"), find("memcpy (ceiling)")) {
        let c = copy.all_passes.decode_gb_s;
        let r = pw.all_passes.decode_gb_s / c;
        let bound = lz4_alone.map_or(String::new(), |l| {
            format!(" (LZ4 alone: {:.2}x)", l.all_passes.decode_gb_s / c)
        });
        check("decoder >= 0.7x copy", r >= 0.7, format!("{r:.2}x{bound}"));
    }
    // Decoding in place, into memory that holds the previous pass (as a destination VMM's).
    if let (Some(ip), Some(copy)) = (
        find("pagewire all + LZ4, in place"),
        find("memcpy (ceiling)"),
    ) {
        for (what, part, copy_part, lz4_part, target) in [
            (
                "later passes",
                &ip.later_passes,
                &copy.later_passes,
                lz4_alone.map(|l| &l.later_passes),
                1.0,
            ),
            (
                "all passes",
                &ip.all_passes,
                &copy.all_passes,
                lz4_alone.map(|l| &l.all_passes),
                0.7,
            ),
        ] {
            let r = part.decode_gb_s / copy_part.decode_gb_s;
            let bound = lz4_part.map_or(String::new(), |l| {
                format!(
                    " (LZ4 alone: {:.2}x)",
                    l.decode_gb_s / copy_part.decode_gb_s
                )
            });
            check(
                &format!("decoder in place, {what}: >= {target:.1}x copy"),
                r >= target,
                format!("{r:.2}x{bound}"),
            );
        }
    }
    if let (Some(ip), Some(xb)) = (
        find("pagewire all, no LZ4, in place"),
        find("xbzrle (QEMU-style)"),
    ) {
        let (p, x) = (&ip.later_passes, &xb.later_passes);
        check(
            "decoder in place without LZ4, later passes: as fast as XBZRLE's",
            p.decode_gb_s >= x.decode_gb_s,
            format!("{:.2} vs {:.2} GB/s", p.decode_gb_s, x.decode_gb_s),
        );
    }

    if let Some(path) = &args.json {
        let report = Report {
            pages: label,
            rows,
            zero_pages: zero_rows,
            zero_pages_read_ceiling_gb_s: read_gb_s,
            lanes: lane_rows,
            best_by_link,
            auto_by_link,
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}
