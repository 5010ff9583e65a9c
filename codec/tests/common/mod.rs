//! Shared helpers for the codec's integration tests: encode page sequences into a wire
//! stream, decode a wire stream into the pages it delivers, and make memory-like pages.
#![allow(dead_code)]

use pagewire::{Config, DecodeMode, Decoder, Destination, Encoder, Result};

/// One step of a migration stream.
#[derive(Debug, Clone)]
pub enum Step {
    Page(u64, Vec<u8>),
    EndIteration,
    Blob(u32, Vec<u8>),
}

/// Encodes `steps` and finishes the stream; returns the wire bytes and the encoder stats.
pub fn encode(cfg: Config, steps: &[Step]) -> (Vec<u8>, pagewire::EncoderStats) {
    encode_with(cfg, pagewire::Features::ALL, steps)
}

/// Like [`encode`], looking only for the given redundancy.
pub fn encode_with(
    cfg: Config,
    features: pagewire::Features,
    steps: &[Step],
) -> (Vec<u8>, pagewire::EncoderStats) {
    encode_switching(cfg, features, steps, None, false)
}

/// Like [`encode_with`]; with `lz4_bits`, after the k-th iteration end LZ4 is switched to
/// bit k (mod 64) of it (where the configuration allows LZ4), and plain pages (no features:
/// PLAIN records) to bit k + 32; `exhaustive` as
/// [`Encoder::set_exhaustive`].
pub fn encode_switching(
    cfg: Config,
    features: pagewire::Features,
    steps: &[Step],
    lz4_bits: Option<u64>,
    exhaustive: bool,
) -> (Vec<u8>, pagewire::EncoderStats) {
    let mut mem = vec![0u8; cfg.encoder_storage_len()];
    let mut out = vec![0u8; cfg.max_output_len()];
    let mut enc = Encoder::new(cfg, &mut mem).expect("encoder");
    enc.set_features(features);
    enc.set_exhaustive(exhaustive);
    let mut wire = Vec::new();
    let mut ends = 0u32;
    for s in steps {
        let n = match s {
            Step::Page(pfn, page) => enc.encode_page(*pfn, page, &mut out),
            Step::EndIteration => {
                let n = enc.end_iteration(&mut out);
                if let Some(bits) = lz4_bits {
                    enc.set_lz4(bits >> (ends % 64) & 1 == 1);
                    // and pages whole past the cache (PLAIN) or as configured, as `auto`
                    // switches its lowest stage
                    let plain = bits >> ((ends + 32) % 64) & 1 == 1;
                    enc.set_features(if plain {
                        pagewire::Features::NONE
                    } else {
                        features
                    });
                }
                ends += 1;
                n
            }
            Step::Blob(tag, data) => enc.append_blob(*tag, data, &mut out),
        }
        .expect("encode");
        wire.extend_from_slice(&out[..n]);
    }
    let n = enc.finish(&mut out).expect("finish");
    wire.extend_from_slice(&out[..n]);
    (wire, *enc.stats())
}

/// Like [`encode_with`], but runs of consecutive pages go through
/// [`Encoder::encode_plain_pages`] where bit k (mod 64) of `batch_bits` is set for the k-th
/// run (a run ends at each iteration end or blob), into an output buffer of exactly
/// `Config::max_output_len()` bytes, so that some calls take no page.
pub fn encode_batched(
    cfg: Config,
    features: pagewire::Features,
    steps: &[Step],
    batch_bits: u64,
) -> (Vec<u8>, pagewire::EncoderStats) {
    let mut mem = vec![0u8; cfg.encoder_storage_len()];
    let mut out = vec![0u8; cfg.max_output_len()];
    let mut enc = Encoder::new(cfg, &mut mem).expect("encoder");
    enc.set_features(features);
    let mut wire = Vec::new();
    let mut run: Vec<(u64, &[u8])> = Vec::new();
    let mut runs = 0u32;
    for s in steps {
        let n = match s {
            Step::Page(pfn, page) => {
                run.push((*pfn, page));
                continue;
            }
            Step::EndIteration => {
                end_run(
                    &mut enc, &mut run, batch_bits, &mut runs, &mut out, &mut wire,
                );
                enc.end_iteration(&mut out)
            }
            Step::Blob(tag, data) => {
                end_run(
                    &mut enc, &mut run, batch_bits, &mut runs, &mut out, &mut wire,
                );
                enc.append_blob(*tag, data, &mut out)
            }
        }
        .expect("encode");
        wire.extend_from_slice(&out[..n]);
    }
    end_run(
        &mut enc, &mut run, batch_bits, &mut runs, &mut out, &mut wire,
    );
    let n = enc.finish(&mut out).expect("finish");
    wire.extend_from_slice(&out[..n]);
    (wire, *enc.stats())
}

/// Encodes the pages of `run` (see [`encode_batched`]) and empties it.
fn end_run(
    enc: &mut Encoder,
    run: &mut Vec<(u64, &[u8])>,
    batch_bits: u64,
    runs: &mut u32,
    out: &mut [u8],
    wire: &mut Vec<u8>,
) {
    let batched = batch_bits >> (*runs % 64) & 1 == 1;
    *runs += 1;
    let mut rest = &run[..];
    while !rest.is_empty() {
        if batched {
            let b = enc.encode_plain_pages(rest, out).expect("batch");
            wire.extend_from_slice(&out[..b.written]);
            rest = &rest[b.pages..];
        } else {
            let n = enc.encode_page(rest[0].0, rest[0].1, out).expect("page");
            wire.extend_from_slice(&out[..n]);
            rest = &rest[1..];
        }
    }
    run.clear();
}

/// What a decoder handed out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Page(u64, Vec<u8>),
    IterationEnd(u64),
    Blob(u32, Vec<u8>),
    End,
}

/// A destination that records every event, each page as it was written (through one
/// staging page in cache-copy mode; in place, over a sparse memory whose pages it reads
/// back).
pub struct Collect {
    pub events: Vec<Event>,
    /// Guest memory by pfn (in place), grown on demand.
    pub mem: std::collections::BTreeMap<u64, Vec<u8>>,
    staging: Vec<u8>,
    page_size: usize,
    in_place: bool,
}

impl Collect {
    pub fn new(page_size: usize, mode: DecodeMode) -> Self {
        Collect {
            events: Vec::new(),
            mem: Default::default(),
            staging: vec![0; page_size],
            page_size,
            in_place: mode == DecodeMode::InPlace,
        }
    }
}

impl Destination for Collect {
    fn page_mut(&mut self, pfn: u64) -> Result<&mut [u8]> {
        if !self.in_place {
            return Ok(&mut self.staging);
        }
        let ps = self.page_size;
        Ok(self.mem.entry(pfn).or_insert_with(|| vec![0; ps]))
    }
    fn page(&self, pfn: u64) -> Result<&[u8]> {
        self.mem
            .get(&pfn)
            .map(|p| &p[..])
            .ok_or(pagewire::Error::PageUnreadable { pfn })
    }
    fn page_pair(&mut self, from: u64, to: u64) -> Result<(&[u8], &mut [u8])> {
        let src = self.page(from)?.to_vec();
        self.staging.copy_from_slice(&src);
        let ps = self.page_size;
        let dst = self.mem.entry(to).or_insert_with(|| vec![0; ps]);
        Ok((&self.staging, dst))
    }
    fn page_done(&mut self, pfn: u64) {
        let page = if self.in_place {
            self.mem[&pfn].clone()
        } else {
            self.staging.clone()
        };
        self.events.push(Event::Page(pfn, page));
    }
    fn iteration_end(&mut self, iteration: u64) {
        self.events.push(Event::IterationEnd(iteration));
    }
    fn blob(&mut self, tag: u32, data: &[u8]) {
        self.events.push(Event::Blob(tag, data.to_vec()));
    }
    fn end_of_stream(&mut self) {
        self.events.push(Event::End);
    }
}

/// Decodes a whole stream in both modes: every event handed out (even on failure) and the
/// verdict, which must be the same in both (this checks it).
pub fn decode(wire: &[u8]) -> (Vec<Event>, Result<()>) {
    let copy = decode_in(wire, DecodeMode::CacheCopy, None);
    let in_place = decode_in(wire, DecodeMode::InPlace, None);
    assert_eq!(copy, in_place, "cache copy and in place differ");
    copy
}

/// Like [`decode`], with a storage size override, in cache-copy mode.
pub fn decode_with_storage(wire: &[u8], storage: Option<usize>) -> (Vec<Event>, Result<()>) {
    decode_in(wire, DecodeMode::CacheCopy, storage)
}

/// Decodes a whole stream in `mode` (with a storage size override).
pub fn decode_in(
    wire: &[u8],
    mode: DecodeMode,
    storage: Option<usize>,
) -> (Vec<Event>, Result<()>) {
    let page_size = Config::from_header(wire).map_or(4096, |c| c.page_size as usize);
    let mut sink = Collect::new(page_size, mode);
    let cfg = match Config::from_header(wire) {
        Ok(c) => c,
        Err(e) => return (sink.events, Err(e)),
    };
    let mut mem = vec![0u8; storage.unwrap_or(cfg.decoder_storage_len_for(mode))];
    let (mut dec, used) = match Decoder::from_header(wire, mode, &mut mem) {
        Ok(d) => d,
        Err(e) => return (sink.events, Err(e)),
    };
    let r = dec.decode(&wire[used..], &mut sink).and_then(|n| {
        if used + n != wire.len() && !dec.is_complete() {
            return Err(pagewire::Error::Truncated);
        }
        if used + n != wire.len() {
            return Err(pagewire::Error::TrailingData);
        }
        dec.check_complete()
    });
    (sink.events, r)
}

/// The events a correct decoder must hand out for `steps`.
pub fn expected_events(steps: &[Step]) -> Vec<Event> {
    let mut it = 0;
    let mut v: Vec<Event> = steps
        .iter()
        .map(|s| match s {
            Step::Page(p, d) => Event::Page(*p, d.clone()),
            Step::EndIteration => {
                it += 1;
                Event::IterationEnd(it - 1)
            }
            Step::Blob(t, d) => Event::Blob(*t, d.clone()),
        })
        .collect();
    v.push(Event::End);
    v
}

/// splitmix64: a tiny deterministic generator for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "the", "page", "kernel", "cache", "migrate", "struct", "return", "0x7f", "buffer", "lock",
];

/// A page of text-like bytes.
pub fn text_page(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(size);
    while p.len() < size {
        p.extend_from_slice(WORDS[rng.below(WORDS.len() as u64) as usize].as_bytes());
        p.push(b' ');
    }
    p.truncate(size);
    p
}

/// A page of pointer-like u64 values near a few bases, with zero gaps.
pub fn pointer_page(rng: &mut Rng, size: usize) -> Vec<u8> {
    let bases = [
        0xffff_8880_0000_0000u64,
        0x0000_7f3a_1200_0000,
        0xffff_ffff_8100_0000,
    ];
    let mut p = vec![0u8; size];
    for w in p.chunks_exact_mut(8) {
        if rng.below(4) != 0 {
            let v = bases[rng.below(3) as usize] + rng.below(1 << 20) * 8;
            w.copy_from_slice(&v.to_le_bytes());
        }
    }
    p
}

/// A page of random bytes.
pub fn random_page(rng: &mut Rng, size: usize) -> Vec<u8> {
    (0..size).map(|_| rng.next() as u8).collect()
}
