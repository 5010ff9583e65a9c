//! Helpers shared by the fuzz targets and the seed generator: building streams from page
//! recipes, decoding them into a list of events, and wrapping bodies into valid frames.

use arbitrary::Arbitrary;
use pagewire::wire::frame::{FrameHeader, FRAME_HEADER_LEN};
use pagewire::{crc32c, Config, DecodeMode, Decoder, Destination, Encoder, Features};

/// What the decoder handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Page(u64, Vec<u8>),
    Iteration(u64),
    Blob(u32, Vec<u8>),
    End,
}

/// Collects every event; pages go through one staging page (a cache-copy decoder's
/// destination).
#[derive(Default)]
pub struct Collect(pub Vec<Event>, Vec<u8>);

impl Destination for Collect {
    fn page_mut(&mut self, _pfn: u64) -> pagewire::Result<&mut [u8]> {
        Ok(&mut self.1)
    }
    fn page_done(&mut self, pfn: u64) {
        self.0.push(Event::Page(pfn, self.1.clone()));
    }
    fn iteration_end(&mut self, n: u64) {
        self.0.push(Event::Iteration(n));
    }
    fn blob(&mut self, tag: u32, data: &[u8]) {
        self.0.push(Event::Blob(tag, data.to_vec()));
    }
    fn end_of_stream(&mut self) {
        self.0.push(Event::End);
    }
}

/// Decodes a whole stream (header + frames); returns the events and whether it completed.
pub fn decode_all(wire: &[u8], storage_cap: usize) -> (Vec<Event>, bool) {
    let mut sink = Collect::default();
    let Ok(cfg) = Config::from_header(wire) else {
        return (sink.0, false);
    };
    let need = cfg.decoder_storage_len_for(DecodeMode::CacheCopy);
    if need > storage_cap {
        return (sink.0, false);
    }
    sink.1 = vec![0u8; cfg.page_size as usize];
    let mut mem = vec![0u8; need];
    let Ok((mut dec, used)) = Decoder::from_header(wire, DecodeMode::CacheCopy, &mut mem) else {
        return (sink.0, false);
    };
    let ok = match dec.decode(&wire[used..], &mut sink) {
        Ok(n) => used + n == wire.len() && dec.check_complete().is_ok(),
        Err(_) => false,
    };
    (sink.0, ok)
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
