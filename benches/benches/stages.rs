//! Criterion benchmarks of every codec stage on one core, in bytes of page input per second.
//!
//!     cargo bench -p pagewire-benches

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pagewire::xbzrle;
use pagewire::{
    block_hash, crc32c, wire::delta, Config, DecodeMode, Decoder, Destination, Encoder, Features,
};
use pagewire_benches::PageSet;

const PS: usize = 4096;

/// One staging page every decoded page is written to, then dropped.
struct Discard([u8; PS]);
impl Destination for Discard {
    fn page_mut(&mut self, _pfn: u64) -> pagewire::Result<&mut [u8]> {
        Ok(&mut self.0)
    }
    fn page_done(&mut self, _pfn: u64) {
        black_box(&self.0);
    }
}

fn set() -> PageSet {
    PageSet::synthetic(32, 4, 7).expect("synthetic pages")
}

fn first_nonzero(set: &PageSet) -> Vec<u8> {
    set.passes[0]
        .iter()
        .map(|&(_, o)| set.page(o))
        .find(|p| p.iter().any(|&b| b != 0))
        .unwrap_or(&[1; PS])
        .to_vec()
}

fn stages(c: &mut Criterion) {
    let set = set();
    let page = first_nonzero(&set);
    let zero = vec![0u8; PS];
    let mut edited = page.clone();
    for i in (0..PS).step_by(397) {
        edited[i] ^= 0x21;
    }

    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Bytes(PS as u64));
    g.bench_function("zero test (zero page)", |b| {
        b.iter(|| black_box(zero.iter().all(|&x| x == 0)))
    });
    g.bench_function("block hash (4 x 1 KiB)", |b| {
        b.iter(|| {
            for blk in page.chunks_exact(1024) {
                black_box(block_hash(blk));
            }
        })
    });
    let mut out = vec![0u8; 2 * PS];
    g.bench_function("delta encode (10 edits)", |b| {
        b.iter(|| {
            black_box(delta::encode(
                &edited,
                &page,
                &mut out,
                PS,
                delta::Merge::Tight,
            ))
        })
    });
    let n = delta::encode(&edited, &page, &mut out, PS, delta::Merge::Tight).unwrap_or(0);
    let rle = out[..n].to_vec();
    g.bench_function("delta decode (10 edits)", |b| {
        b.iter_batched_ref(
            || page.clone(),
            |dst| black_box(delta::apply(&rle, dst)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("xbzrle encode (10 edits)", |b| {
        b.iter(|| black_box(xbzrle::encode(&edited, &page, &mut out, PS)))
    });
    // a rewritten page of pointers: the low bytes of every 8-byte word changed, a run per
    // word, where the delta grows past the threshold
    let mut pointers = page.clone();
    for w in pointers.chunks_exact_mut(8) {
        w[0] ^= 0x31;
        w[1] ^= 0x07;
        w[2] ^= 0x09;
    }
    g.bench_function(
        "delta encode (rewritten pointers, to the 2 KiB threshold)",
        |b| {
            b.iter(|| {
                black_box(delta::encode(
                    &pointers,
                    &page,
                    &mut out,
                    2048,
                    delta::Merge::Tight,
                ))
            })
        },
    );
    g.bench_function(
        "delta bounds (rewritten pointers, page and 4 blocks)",
        |b| b.iter(|| black_box(delta::bounds(&pointers, &page, 1024))),
    );
    g.finish();

    xbzrle_real_pages(c, &set);

    // a frame's CRC-32C (three lanes where the CPU has SSE4.2)
    let frame = &set.data[..16 * PS];
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("crc32c (64 KiB)", |b| {
        b.iter(|| black_box(crc32c(black_box(frame))))
    });
    g.finish();

    // whole-page encode by record kind: a warm encoder that sees the same situation each time
    let mut g = c.benchmark_group("encode page");
    g.throughput(Throughput::Bytes(PS as u64));
    let cfg = Config {
        lz4: false,
        ..Config::DEFAULT
    };
    let mut mem = vec![0u8; cfg.encoder_storage_len()];
    let mut enc = Encoder::new(cfg, &mut mem).expect("encoder");
    let mut out = vec![0u8; cfg.max_output_len()];
    let mut pfn = 1u64 << 20;
    g.bench_function("zero", |b| b.iter(|| enc.encode_page(0, &zero, &mut out)));
    enc.encode_page(7, &page, &mut out).ok();
    g.bench_function("dup (unchanged page)", |b| {
        b.iter(|| enc.encode_page(7, &page, &mut out))
    });
    g.bench_function("delta (edited page, alternating)", |b| {
        let mut flip = false;
        b.iter(|| {
            flip = !flip;
            enc.encode_page(9, if flip { &edited } else { &page }, &mut out)
        })
    });
    let randoms: Vec<Vec<u8>> = (0..64u64)
        .map(|i| {
            (0..PS)
                .map(|j| ((j as u64 * 2654435761 + i * 97) >> 7) as u8)
                .collect()
        })
        .collect();
    g.bench_function("raw (new incompressible pages)", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            pfn += 1;
            enc.encode_page(pfn, &randoms[i % 64], &mut out)
        })
    });
    g.finish();

    // full encoder and decoder on mixed page sets
    let mut g = c.benchmark_group("stream");
    g.sample_size(10);
    let first = &set.passes[0];
    let later: Vec<(u64, usize)> = set.passes[1..].iter().flatten().copied().collect();
    for (lz4, name) in [(false, "no LZ4"), (true, "LZ4")] {
        let cfg = Config {
            lz4,
            ..Config::DEFAULT
        };
        g.throughput(Throughput::Bytes((first.len() * PS) as u64));
        g.bench_function(format!("encode first pass, {name}"), |b| {
            b.iter_batched_ref(
                || vec![0u8; cfg.encoder_storage_len()],
                |mem| {
                    let mut e = Encoder::new(cfg, mem).expect("encoder");
                    e.set_features(Features::ALL);
                    let mut out = vec![0u8; cfg.max_output_len()];
                    for &(p, o) in first {
                        black_box(e.encode_page(p, set.page(o), &mut out).ok());
                    }
                },
                BatchSize::PerIteration,
            )
        });
        // later passes: encode after the first pass (untimed), then the later pages
        g.throughput(Throughput::Bytes((later.len() * PS) as u64));
        g.bench_function(format!("encode later passes, {name}"), |b| {
            b.iter_batched_ref(
                || {
                    let mut mem = vec![0u8; cfg.encoder_storage_len()];
                    {
                        let mut e = Encoder::new(cfg, &mut mem).expect("encoder");
                        let mut out = vec![0u8; cfg.max_output_len()];
                        for &(p, o) in first {
                            e.encode_page(p, set.page(o), &mut out).ok();
                        }
                    }
                    mem
                },
                |mem| {
                    // a fresh encoder over a primed cache would not be in lockstep with any
                    // decoder; here only the work per page is measured
                    let mut e = Encoder::new(cfg, mem).expect("encoder");
                    let mut out = vec![0u8; cfg.max_output_len()];
                    for &(p, o) in &later {
                        black_box(e.encode_page(p, set.page(o), &mut out).ok());
                    }
                },
                BatchSize::PerIteration,
            )
        });
        // decoder: a whole stream of all passes
        let mut emem = vec![0u8; cfg.encoder_storage_len()];
        let mut e = Encoder::new(cfg, &mut emem).expect("encoder");
        let mut out = vec![0u8; cfg.max_output_len()];
        let mut wire = Vec::new();
        for pass in &set.passes {
            for &(p, o) in pass {
                let n = e.encode_page(p, set.page(o), &mut out).unwrap_or(0);
                wire.extend_from_slice(&out[..n]);
            }
            let n = e.end_iteration(&mut out).unwrap_or(0);
            wire.extend_from_slice(&out[..n]);
        }
        let n = e.finish(&mut out).unwrap_or(0);
        wire.extend_from_slice(&out[..n]);
        let total: usize = set.passes.iter().map(Vec::len).sum();
        g.throughput(Throughput::Bytes((total * PS) as u64));
        g.bench_function(format!("decode all passes, {name}"), |b| {
            b.iter_batched_ref(
                || vec![0u8; cfg.decoder_storage_len()],
                |mem| {
                    let (mut d, used) =
                        Decoder::from_header(&wire, DecodeMode::CacheCopy, mem).expect("header");
                    black_box(d.decode(&wire[used..], &mut Discard([0; PS])).ok());
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Changed pages as a migration's later passes see them: (new version, cached version),
/// each list back to back.
struct PagePairs {
    new: Vec<u8>,
    old: Vec<u8>,
}

impl PagePairs {
    fn len(&self) -> usize {
        self.new.len() / PS
    }

    fn first(&self, n: usize) -> PagePairs {
        let n = n.min(self.len());
        PagePairs {
            new: self.new[..n * PS].to_vec(),
            old: self.old[..n * PS].to_vec(),
        }
    }

    fn push(&mut self, new: &[u8], old: &[u8]) {
        self.new.extend_from_slice(new);
        self.old.extend_from_slice(old);
    }
}

/// The pages of `steps` snapshots after the first of a real trace (`../shared/traces`, or
/// `PAGEWIRE_TRACE`), against their versions one snapshot before; `None` if the trace is
/// not there.
fn trace_pairs(name: &str, steps: usize) -> Option<PagePairs> {
    let dir = std::env::var_os("PAGEWIRE_TRACE").map_or_else(
        || {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/traces")
                .join(name)
        },
        std::path::PathBuf::from,
    );
    let read = |file: &str| -> Option<Vec<u8>> {
        let f = std::fs::File::open(dir.join(file)).ok()?;
        zstd::stream::decode_all(f).ok()
    };
    let mut mem = read("base.raw.zst")?;
    let mut pairs = PagePairs {
        new: Vec::new(),
        old: Vec::new(),
    };
    for step in 1..=steps {
        let records = read(&format!("step-{step:03}.bin.zst"))?;
        for r in records.chunks_exact(8 + PS) {
            let pfn = u64::from_le_bytes(r[..8].try_into().ok()?) as usize;
            let page = &r[8..];
            let at = pfn * PS;
            pairs.push(page, mem.get(at..at + PS)?);
            mem[at..at + PS].copy_from_slice(page);
        }
    }
    Some(pairs)
}

/// The later passes' pages of the synthetic series against their previous versions.
fn synthetic_pairs(set: &PageSet) -> PagePairs {
    let mut last = std::collections::HashMap::new();
    let mut pairs = PagePairs {
        new: Vec::new(),
        old: Vec::new(),
    };
    for (i, pass) in set.passes.iter().enumerate() {
        for &(pfn, off) in pass {
            if i > 0 {
                if let Some(&prev) = last.get(&pfn) {
                    pairs.push(set.page(off), set.page(prev));
                }
            }
            last.insert(pfn, off);
        }
    }
    pairs
}

/// The XBZRLE encoder on real changed pages at QEMU's call (a page, a page of budget): many
/// pages read from memory, and a few that stay in the CPU cache.
fn xbzrle_real_pages(c: &mut Criterion, set: &PageSet) {
    let mut series = vec![("synthetic", synthetic_pairs(set))];
    match trace_pairs("redis-fill-128m", 2) {
        Some(p) => series.push(("redis", p)),
        None => eprintln!("SKIPPED: xbzrle on redis pages: trace not found (PAGEWIRE_TRACE)"),
    }
    let mut g = c.benchmark_group("xbzrle real pages");
    g.sample_size(20);
    let mut out = vec![0u8; PS];
    for (name, all) in &series {
        for (label, pairs) in [
            ("from memory", all.first(usize::MAX)),
            ("in cache", all.first(32)),
        ] {
            g.throughput(Throughput::Bytes(pairs.new.len() as u64));
            let id = format!(
                "encode, {name} changed pages ({} pages, {label})",
                pairs.len()
            );
            g.bench_function(id, |b| {
                b.iter(|| {
                    for (new, old) in pairs.new.chunks_exact(PS).zip(pairs.old.chunks_exact(PS)) {
                        black_box(xbzrle::encode(new, old, &mut out, PS));
                    }
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
