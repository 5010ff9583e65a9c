//! Helpers shared by the fuzz targets and the seed generator: building streams from page
//! recipes, decoding them into a list of events, and wrapping bodies into valid frames.

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use pagewire::wire::frame::{FrameHeader, FRAME_HEADER_LEN};
use pagewire::{crc32c, Config, DecodeMode, Decoder, Destination, Encoder, Features, HEADER_LEN};

/// What the decoder handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Page(u64, Vec<u8>),
    Iteration(u64),
    Blob(u32, Vec<u8>),
    End,
}

/// Both decoder modes, in the order the targets run them.
pub const MODES: [DecodeMode; 2] = [DecodeMode::CacheCopy, DecodeMode::InPlace];

/// Collects every event. In cache copy, pages go through one staging page (a destination
/// without memory of its own); in place, over a sparse guest memory of any pfn, where a page
/// the decoder never wrote is unreadable (a valid stream never refers to one).
pub struct Collect {
    pub events: Vec<Event>,
    mem: BTreeMap<u64, Vec<u8>>,
    staging: Vec<u8>,
    in_place: bool,
}

impl Collect {
    pub fn new(page_size: usize, mode: DecodeMode) -> Self {
        Collect {
            events: Vec::new(),
            mem: BTreeMap::new(),
            staging: vec![0; page_size],
            in_place: mode == DecodeMode::InPlace,
        }
    }
}

impl Destination for Collect {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        if !self.in_place {
            return Ok(&mut self.staging);
        }
        let page_size = self.staging.len();
        Ok(self.mem.entry(pfn).or_insert_with(|| vec![0; page_size]))
    }
    fn page(&self, pfn: u64) -> pagewire::Result<&[u8]> {
        match self.mem.get(&pfn) {
            Some(p) if self.in_place => Ok(p),
            _ => Err(pagewire::Error::PageUnreadable { pfn }),
        }
    }
    fn page_pair(&mut self, from: u64, to: u64) -> pagewire::Result<(&[u8], &mut [u8])> {
        // the source goes through the staging page: two entries of a map cannot be
        // borrowed at once
        let src = self.page(from)?.to_vec();
        self.staging.copy_from_slice(&src);
        let page_size = self.staging.len();
        let dst = self.mem.entry(to).or_insert_with(|| vec![0; page_size]);
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
    fn iteration_end(&mut self, n: u64) {
        self.events.push(Event::Iteration(n));
    }
    fn blob(&mut self, tag: u32, data: &[u8]) {
        self.events.push(Event::Blob(tag, data.to_vec()));
    }
    fn end_of_stream(&mut self) {
        self.events.push(Event::End);
    }
}

/// Decodes a whole stream (header + frames) in both modes, which must hand out the same
/// events and reach the same verdict; returns the events and whether it completed. Streams
/// whose cache copy needs more than `storage_cap` bytes are decoded in neither mode.
pub fn decode_all(wire: &[u8], storage_cap: usize) -> (Vec<Event>, bool) {
    let [copy, in_place] = MODES.map(|mode| decode_all_in(wire, storage_cap, mode));
    assert!(
        copy == in_place,
        "cache copy and in place differ: {} / {} events, complete {} / {}",
        copy.0.len(),
        in_place.0.len(),
        copy.1,
        in_place.1
    );
    copy
}

/// Decodes a whole stream in `mode`; returns the events and whether it completed.
pub fn decode_all_in(wire: &[u8], storage_cap: usize, mode: DecodeMode) -> (Vec<Event>, bool) {
    let Ok(cfg) = Config::from_header(wire) else {
        return (Vec::new(), false);
    };
    // the larger (cache copy) storage decides, so that both modes skip the same streams
    if cfg.decoder_storage_len_for(DecodeMode::CacheCopy) > storage_cap {
        return (Vec::new(), false);
    }
    let mut sink = Collect::new(cfg.page_size as usize, mode);
    let mut mem = vec![0u8; cfg.decoder_storage_len_for(mode)];
    let Ok((mut dec, used)) = Decoder::from_header(wire, mode, &mut mem) else {
        return (sink.events, false);
    };
    let ok = match dec.decode(&wire[used..], &mut sink) {
        Ok(n) => used + n == wire.len() && dec.check_complete().is_ok(),
        Err(_) => false,
    };
    (sink.events, ok)
}

/// Wraps `body` into frame `seq` of a stream with `cfg`, with a correct CRC.
pub fn frame(cfg: &Config, seq: u32, body: &[u8], lz4: bool) -> Vec<u8> {
    let mut f = vec![0u8; FRAME_HEADER_LEN];
    let (wire, raw_len) = if lz4 {
        let mut out = vec![0u8; lz4_max(body.len())];
        let n = pagewire_lz4(body, &mut out);
        out.truncate(n);
        (out, body.len())
    } else {
        (body.to_vec(), body.len())
    };
    FrameHeader {
        lz4,
        stream_id: cfg.stream_id,
        seq,
        wire_len: wire.len() as u32,
        raw_len: raw_len as u32,
    }
    .write(&mut f);
    f.extend_from_slice(&wire);
    let c = crc32c(&f);
    f.extend_from_slice(&c.to_le_bytes());
    f
}

fn lz4_max(n: usize) -> usize {
    lz4_flex::block::get_maximum_output_size(n)
}

fn pagewire_lz4(body: &[u8], out: &mut [u8]) -> usize {
    lz4_flex::block::compress_into(body, out).expect("output sized for the worst case")
}

/// Most frames [`bodies_stream`] makes.
pub const MAX_BODIES: u32 = 16;

/// A stream of arbitrary frame bodies behind `cfg`'s header: `input` holds each body behind
/// a two-byte little-endian length (empty and oversized bodies are skipped); each is wrapped
/// in a frame with the right sequence number and CRC, odd frames LZ4-compressed when `cfg`
/// allows LZ4. So the fuzzer reaches the record parser past the real CRC check.
pub fn bodies_stream(cfg: &Config, input: &[u8]) -> Vec<u8> {
    let mut wire = cfg.header_bytes().to_vec();
    let mut rest = input;
    let mut seq = 0;
    while rest.len() >= 2 && seq < MAX_BODIES {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let body = &rest[2..2 + len];
        rest = &rest[2 + len..];
        if body.is_empty() || body.len() > cfg.frame_bytes as usize {
            continue;
        }
        wire.extend_from_slice(&frame(cfg, seq, body, cfg.lz4 && seq % 2 == 1));
        seq += 1;
    }
    wire
}

/// The input layout of [`bodies_stream`] for `bodies` (for seeds).
pub fn bodies_input<B: AsRef<[u8]>>(bodies: &[B]) -> Vec<u8> {
    let mut s = Vec::new();
    for b in bodies {
        let b = b.as_ref();
        s.extend_from_slice(&(b.len() as u16).to_le_bytes());
        s.extend_from_slice(b);
    }
    s
}

/// The bodies of the frames of a valid stream (decompressed), in order (for seeds).
pub fn bodies_of(wire: &[u8]) -> Vec<Vec<u8>> {
    let cfg = Config::from_header(wire).expect("a valid stream");
    let mut pos = HEADER_LEN;
    let mut bodies = Vec::new();
    while pos < wire.len() {
        let fh = FrameHeader::parse(&wire[pos..], cfg.frame_bytes).expect("a valid frame");
        let body = &wire[pos + FRAME_HEADER_LEN..pos + FRAME_HEADER_LEN + fh.wire_len as usize];
        bodies.push(if fh.lz4 {
            let mut raw = vec![0u8; fh.raw_len as usize];
            let n = lz4_flex::block::decompress_into(body, &mut raw).expect("a valid LZ4 body");
            raw.truncate(n);
            raw
        } else {
            body.to_vec()
        });
        pos += fh.frame_len();
    }
    bodies
}

/// Pages of guest memory the `decode_modes_differential` target decodes into: pfns from 0
/// to 47 (the recipes of [`steps`] use 0-36); any other pfn is out of range, which both
/// modes must report the same way.
pub const MODES_CASE_PAGES: usize = 48;

/// One input of the `decode_modes_differential` target, read from raw bytes so that seeds
/// can be written by `examples/make_seeds.rs`:
///
/// | bytes | meaning |
/// | --- | --- |
/// | 0, bits 0-1 | cache pages `[1, 2, 4, 64]` |
/// | 0, bits 2-3 | blocks per page `[1, 2, 4, 8]` |
/// | 0, bit 4 | LZ4 allowed (odd frames compressed) |
/// | 0, bit 5 | pages of 8192 bytes instead of 4096 |
/// | 0, bit 6 | the rest is a whole stream with its own header (bits 0-5 unused) |
/// | 0, bit 7 | guest memory starts with a pattern (a previous content) instead of zeros |
/// | 1.. | frame bodies for [`bodies_stream`], or the whole stream |
#[derive(Debug)]
pub struct ModesCase {
    pub wire: Vec<u8>,
    pub page_size: usize,
    /// Guest memory before the stream, the same for both modes.
    pub initial: Vec<u8>,
}

impl ModesCase {
    /// The configuration selector byte `sel` stands for (bits 0-5).
    pub fn config(sel: u8) -> Config {
        Config {
            page_size: if sel & 0x20 != 0 { 8192 } else { 4096 },
            cache_pages: [1u32, 2, 4, 64][usize::from(sel % 4)],
            blocks_per_page: [1u8, 2, 4, 8][usize::from((sel >> 2) % 4)],
            frame_bytes: 16384,
            lz4: sel & 0x10 != 0,
            stream_id: 7,
            ..Config::DEFAULT
        }
    }

    /// Reads a case; `None` for an empty input.
    pub fn parse(data: &[u8]) -> Option<ModesCase> {
        let (&sel, rest) = data.split_first()?;
        let (wire, page_size) = if sel & 0x40 != 0 {
            let page_size = Config::from_header(rest).map_or(4096, |c| c.page_size as usize);
            (rest.to_vec(), page_size)
        } else {
            let cfg = Self::config(sel);
            (bodies_stream(&cfg, rest), cfg.page_size as usize)
        };
        let len = MODES_CASE_PAGES * page_size;
        let initial = if sel & 0x80 != 0 {
            // every page different, no zero bytes: what a page never written holds
            (0..len)
                .map(|i| (i / page_size * 37 + i % 251) as u8 | 1)
                .collect()
        } else {
            vec![0; len]
        };
        Some(ModesCase {
            wire,
            page_size,
            initial,
        })
    }
}

/// A page made from a recipe, shaped like guest memory.
#[derive(Debug, Clone, Arbitrary)]
pub enum PageOp {
    Zero,
    Fill(u8),
    Copy(u16),
    Edit {
        from: u16,
        at: u16,
        len: u8,
        value: u8,
    },
    MoveBlock {
        from: u16,
        src: u8,
        dst: u8,
    },
    Random(u64),
    EndIteration,
    Blob(u8, u8),
}

/// A configuration the fuzzer may choose.
#[derive(Debug, Clone, Arbitrary)]
pub struct FuzzConfig {
    pub page_shift: bool,
    pub blocks: u8,
    pub cache: u8,
    pub threshold: u16,
    pub extra_frame: u16,
    pub lz4: bool,
    pub cbr: bool,
    pub delta: bool,
}

impl FuzzConfig {
    /// A valid codec configuration and encoder features.
    pub fn build(&self) -> (Config, Features) {
        let page_size = if self.page_shift { 8192 } else { 4096 };
        let cfg = Config {
            page_size,
            blocks_per_page: [1, 2, 4, 8][usize::from(self.blocks % 4)],
            cache_pages: u32::from(self.cache % 64) + 1,
            delta_threshold: u32::from(self.threshold) % (page_size + 1),
            frame_bytes: page_size + 32 + u32::from(self.extra_frame),
            lz4: self.lz4,
            stream_id: 7,
        };
        (
            cfg,
            Features {
                cbr: self.cbr,
                delta: self.delta,
            },
        )
    }
}

/// One step of a stream built from recipes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Page(u64, Vec<u8>),
    EndIteration,
    Blob(u32, Vec<u8>),
}

/// Turns recipes into steps (pfns cycle over a small range so pages get rewritten).
pub fn steps(ops: &[PageOp], page_size: usize, block_size: usize) -> Vec<Step> {
    let mut pages: Vec<Vec<u8>> = Vec::new();
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let pick =
            |k: u16, pages: &Vec<Vec<u8>>| pages.get(usize::from(k) % pages.len().max(1)).cloned();
        let page = match op {
            PageOp::EndIteration => {
                out.push(Step::EndIteration);
                continue;
            }
            PageOp::Blob(t, n) => {
                out.push(Step::Blob(u32::from(*t), vec![*t; usize::from(*n)]));
                continue;
            }
            PageOp::Zero => vec![0; page_size],
            PageOp::Fill(b) => vec![*b; page_size],
            PageOp::Copy(k) => pick(*k, &pages).unwrap_or_else(|| vec![1; page_size]),
            PageOp::Edit {
                from,
                at,
                len,
                value,
            } => {
                let mut p = pick(*from, &pages).unwrap_or_else(|| vec![2; page_size]);
                let at = usize::from(*at) % page_size;
                let end = (at + usize::from(*len)).min(page_size);
                for b in &mut p[at..end] {
                    *b ^= value | 1;
                }
                p
            }
            PageOp::MoveBlock { from, src, dst } => {
                let s = pick(*from, &pages).unwrap_or_else(|| vec![3; page_size]);
                let nb = page_size / block_size;
                let (a, b) = (usize::from(*src) % nb, usize::from(*dst) % nb);
                let mut p = vec![0; page_size];
                p[b * block_size..(b + 1) * block_size]
                    .copy_from_slice(&s[a * block_size..(a + 1) * block_size]);
                p
            }
            PageOp::Random(seed) => {
                let mut x = *seed | 1;
                (0..page_size)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            }
        };
        pages.push(page.clone());
        out.push(Step::Page((i % 37) as u64, page));
    }
    out
}

/// Encodes steps into a finished stream.
pub fn encode(cfg: Config, features: Features, steps: &[Step]) -> Vec<u8> {
    let mut mem = vec![0u8; cfg.encoder_storage_len()];
    let mut out = vec![0u8; cfg.max_output_len()];
    let mut enc = Encoder::new(cfg, &mut mem).expect("valid config");
    enc.set_features(features);
    let mut wire = Vec::new();
    for s in steps {
        let n = match s {
            Step::Page(pfn, p) => enc.encode_page(*pfn, p, &mut out),
            Step::EndIteration => enc.end_iteration(&mut out),
            Step::Blob(t, d) => enc.append_blob(*t, d, &mut out),
        }
        .expect("the encoder only fails on its own contract");
        wire.extend_from_slice(&out[..n]);
    }
    let n = enc.finish(&mut out).expect("finish");
    wire.extend_from_slice(&out[..n]);
    wire
}

/// Encodes steps into a finished stream as `auto`'s plain stage does: each run of pages
/// between other steps in bulk (`Encoder::encode_plain_pages`), every page a ZERO or PLAIN
/// record, whatever the features.
pub fn encode_plain_in_bulk(cfg: Config, steps: &[Step]) -> Vec<u8> {
    let mut mem = vec![0u8; cfg.encoder_storage_len()];
    let mut out = vec![0u8; cfg.max_output_len()];
    let mut enc = Encoder::new(cfg, &mut mem).expect("valid config");
    let mut wire = Vec::new();
    let mut batch: Vec<(u64, &[u8])> = Vec::new();
    for s in steps.iter().map(Some).chain([None]) {
        if let Some(Step::Page(pfn, p)) = s {
            batch.push((*pfn, p));
            continue;
        }
        let mut rest = &batch[..];
        while !rest.is_empty() {
            let b = enc
                .encode_plain_pages(rest, &mut out)
                .expect("the encoder only fails on its own contract");
            wire.extend_from_slice(&out[..b.written]);
            rest = &rest[b.pages..];
        }
        batch.clear();
        let n = match s {
            Some(Step::EndIteration) => enc.end_iteration(&mut out),
            Some(Step::Blob(t, d)) => enc.append_blob(*t, d, &mut out),
            _ => enc.finish(&mut out),
        }
        .expect("the encoder only fails on its own contract");
        wire.extend_from_slice(&out[..n]);
    }
    wire
}

/// The events a correct decoder hands out for `steps`.
pub fn expected(steps: &[Step]) -> Vec<Event> {
    let mut it = 0;
    let mut v: Vec<Event> = steps
        .iter()
        .map(|s| match s {
            Step::Page(p, d) => Event::Page(*p, d.clone()),
            Step::EndIteration => {
                it += 1;
                Event::Iteration(it - 1)
            }
            Step::Blob(t, d) => Event::Blob(*t, d.clone()),
        })
        .collect();
    v.push(Event::End);
    v
}

/// The second XBZRLE implementation, written from the format's rules, that the codec's
/// differential tests use too.
#[path = "../../codec/tests/reference/xbzrle.rs"]
pub mod xbzrle_reference;

/// One input of the `xbzrle_differential` target, read from raw bytes so that seeds can be
/// written by hand (`examples/make_seeds.rs`):
///
/// | bytes | meaning |
/// | --- | --- |
/// | 0 | page length `[8, 16, 64, 200, 1024, 4096][b % 6]`; old page `(b / 6) % 3`: zeros, memory-like words, the input's own bytes repeated |
/// | 1 | budget: below `0x80`, the encoding's own length plus `b % 9 - 4` (where the give-up rule decides); else bytes 2-3 |
/// | 2-3 | a budget (little-endian), taken modulo `2 * length + 8` |
/// | 4 | number of edits (at most 32) |
/// | 5.. | edits of 4 bytes: offset (little-endian, modulo the length), run length (0: to the end of the page), XOR value |
/// | rest | an arbitrary encoded page for the decoders |
#[derive(Debug)]
pub struct XbzrleCase {
    pub old: Vec<u8>,
    pub new: Vec<u8>,
    pub budget: usize,
    pub encoded: Vec<u8>,
}

/// Page lengths an [`XbzrleCase`] may have.
pub const XBZRLE_CASE_LENGTHS: [usize; 6] = [8, 16, 64, 200, 1024, 4096];

impl XbzrleCase {
    /// Reads a case; `None` if `data` is shorter than its 5-byte head.
    pub fn parse(data: &[u8]) -> Option<XbzrleCase> {
        let (head, rest) = data.split_at_checked(5)?;
        let len = XBZRLE_CASE_LENGTHS[usize::from(head[0]) % 6];
        let old: Vec<u8> = match head[0] / 6 % 3 {
            0 => vec![0; len],
            1 => (0..len)
                .map(|i| if i % 8 < 2 { (i / 8) as u8 } else { 0 })
                .collect(),
            _ => (0..len)
                .map(|i| {
                    if data.is_empty() {
                        0
                    } else {
                        data[i % data.len()]
                    }
                })
                .collect(),
        };
        let edits = usize::from(head[4]).min(32).min(rest.len() / 4);
        let (edit_bytes, encoded) = rest.split_at(edits * 4);
        let mut new = old.clone();
        for e in edit_bytes.chunks_exact(4) {
            let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % len;
            let end = if e[2] == 0 {
                len
            } else {
                (at + usize::from(e[2])).min(len)
            };
            for b in &mut new[at..end] {
                *b ^= e[3];
            }
        }
        let budget = if head[1] < 0x80 {
            let own = xbzrle_reference::encode(&new, &old, usize::MAX / 2).map_or(0, |e| e.len());
            (own + usize::from(head[1] % 9)).saturating_sub(4)
        } else {
            usize::from(u16::from_le_bytes([head[2], head[3]])) % (2 * len + 8)
        };
        Some(XbzrleCase {
            old,
            new,
            budget,
            encoded: encoded.to_vec(),
        })
    }
}
