//! The page codecs the comparison harness runs side by side. Each encodes a pass of pages
//! into wire bytes and decodes wire bytes into a destination memory image.

use anyhow::{bail, Context, Result};
use pagewire::xbzrle::{self, XbzrleCache, XbzrlePage};
use pagewire::{Config, DecodeMode, Decoder, Encoder, Features, MemoryImage};

use crate::PageSet;

/// A codec under comparison.
pub trait Codec {
    /// Row label.
    fn name(&self) -> String;
    /// Allocates and touches all state before anything is timed.
    fn prepare(&mut self) -> Result<()> {
        Ok(())
    }
    /// Encodes one pass; appends its wire bytes (for the last pass, the end of the stream too).
    fn encode_pass(
        &mut self,
        set: &PageSet,
        pass: &[(u64, usize)],
        last: bool,
        wire: &mut Vec<u8>,
    ) -> Result<()>;
    /// Encodes one pass straight into `out`, the buffer a transport would send from, where
    /// the codec builds its stream there; returns the bytes written. `None` for a codec
    /// that appends to a `Vec` ([`Codec::encode_pass`]).
    fn encode_pass_into(
        &mut self,
        _set: &PageSet,
        _pass: &[(u64, usize)],
        _last: bool,
        _out: &mut [u8],
    ) -> Option<Result<usize>> {
        None
    }
    /// Decodes one pass's wire bytes into `mem`.
    fn decode_pass(&mut self, wire: &[u8], mem: &mut [u8]) -> Result<()>;
}

fn put_u64(w: &mut Vec<u8>, v: u64) {
    w.extend_from_slice(&v.to_le_bytes());
}

fn get_u64(w: &[u8], p: &mut usize) -> Result<u64> {
    let b = w.get(*p..*p + 8).context("truncated")?;
    *p += 8;
    Ok(u64::from_le_bytes(b.try_into()?))
}

fn dest(mem: &mut [u8], pfn: u64, ps: usize) -> Result<&mut [u8]> {
    let at = pfn as usize * ps;
    mem.get_mut(at..at + ps).context("pfn out of range")
}

/// A plain copy of every page into its place in destination memory: the ceiling of any
/// decoder, which must put every page there. Copying the pass into the front of memory
/// instead (as this row did) measures the CPU cache on the later passes: a few MB, written
/// by the encoder just before, copied to the same few MB every pass.
#[derive(Default)]
pub struct Copy {
    /// The pass's pfns, in the order of its pages on the wire.
    pfns: Vec<u64>,
}

impl Codec for Copy {
    fn name(&self) -> String {
        "memcpy (ceiling)".into()
    }
    fn encode_pass(
        &mut self,
        set: &PageSet,
        pass: &[(u64, usize)],
        _last: bool,
        wire: &mut Vec<u8>,
    ) -> Result<()> {
        wire.reserve(pass.len() * set.page_size);
        self.pfns.clear();
        for &(pfn, off) in pass {
            wire.extend_from_slice(set.page(off));
            self.pfns.push(pfn);
        }
        Ok(())
    }
    fn decode_pass(&mut self, wire: &[u8], mem: &mut [u8]) -> Result<()> {
        if self.pfns.is_empty() {
            return Ok(());
        }
        let ps = wire.len() / self.pfns.len();
        for (page, &pfn) in wire.chunks_exact(ps).zip(&self.pfns) {
            dest(mem, pfn, ps)?.copy_from_slice(page);
        }
        Ok(())
    }
}

/// No encoding: every page whole behind an 8-byte pfn header.
pub struct Raw(pub usize);

impl Codec for Raw {
    fn name(&self) -> String {
        "raw pages + header".into()
    }
    fn encode_pass(
        &mut self,
        set: &PageSet,
        pass: &[(u64, usize)],
        _last: bool,
        wire: &mut Vec<u8>,
    ) -> Result<()> {
        wire.reserve(pass.len() * (set.page_size + 8));
        for &(pfn, off) in pass {
            put_u64(wire, pfn);
            wire.extend_from_slice(set.page(off));
        }
        Ok(())
    }
    fn decode_pass(&mut self, wire: &[u8], mem: &mut [u8]) -> Result<()> {
        let ps = self.0;
        let mut p = 0;
        while p < wire.len() {
            let pfn = get_u64(wire, &mut p)?;
            dest(mem, pfn, ps)?.copy_from_slice(wire.get(p..p + ps).context("truncated")?);
            p += ps;
        }
        Ok(())
    }
}

const XB_RAW: u64 = 0;
const XB_ZERO: u64 = 1 << 62;
const XB_DELTA: u64 = 2 << 62;
const XB_FLAGS: u64 = 3 << 62;

/// QEMU's XBZRLE as its source runs it (`XbzrleCache::send_page`): zero pages as such, the
/// first pass raw, later passes as XBZRLE deltas against a pfn-keyed cache with QEMU's age
/// rule (one bitmap-sync round per pass), raw on a miss or where the encoder gives up,
/// nothing for an unchanged page. Each page takes as many wire bytes as in QEMU's stream
/// (`XbzrlePage::qemu_wire_bytes`). The cache lives for the whole run, as QEMU's does for a
/// migration.
pub struct Xbzrle {
    slots: usize,
    ps: usize,
    out: Vec<u8>,
    cache: Option<XbzrleCache<'static>>,
    passes: usize,
}

impl Xbzrle {
    /// A cache of `slots` pages (QEMU's default: `XbzrleCache::slots_for(DEFAULT_CACHE_BYTES,
    /// page size)`).
    pub fn new(slots: usize, ps: usize) -> Self {
        Xbzrle {
            slots,
            ps,
            out: vec![0; ps],
            cache: None,
            passes: 0,
        }
    }
}

impl Codec for Xbzrle {
    fn name(&self) -> String {
        "xbzrle (QEMU-style)".into()
    }
    fn prepare(&mut self) -> Result<()> {
        let storage = leak(XbzrleCache::storage_len(self.slots, self.ps));
        self.cache = Some(XbzrleCache::new(storage, self.slots, self.ps).context("cache")?);
        Ok(())
    }
    fn encode_pass(
        &mut self,
        set: &PageSet,
        pass: &[(u64, usize)],
        _last: bool,
        wire: &mut Vec<u8>,
    ) -> Result<()> {
        let cache = self.cache.as_mut().context("cache")?;
        // a pass is what QEMU sends between two bitmap syncs
        if self.passes > 0 {
            cache.sync();
        }
        self.passes += 1;
        for &(pfn, off) in pass {
            let page = set.page(off);
            let sent = cache.send_page(pfn, page, &mut self.out);
            let before = wire.len();
            match sent {
                XbzrlePage::Zero => {
                    put_u64(wire, pfn | XB_ZERO);
                    wire.push(0);
                }
                XbzrlePage::Unchanged => {}
                XbzrlePage::Delta(n) => {
                    put_u64(wire, pfn | XB_DELTA);
                    wire.push(1); // QEMU's ENCODING_FLAG_XBZRLE
                    wire.extend_from_slice(&(n as u16).to_be_bytes());
                    wire.extend_from_slice(&self.out[..n]);
                }
                XbzrlePage::Raw => {
                    put_u64(wire, pfn | XB_RAW);
                    wire.extend_from_slice(page);
                }
            }
            debug_assert_eq!(wire.len() - before, sent.qemu_wire_bytes(self.ps));
        }
        Ok(())
    }
    fn decode_pass(&mut self, wire: &[u8], mem: &mut [u8]) -> Result<()> {
        let ps = self.ps;
        let mut p = 0;
        while p < wire.len() {
            let h = get_u64(wire, &mut p)?;
            let page = dest(mem, h & !XB_FLAGS, ps)?;
            match h & XB_FLAGS {
                XB_ZERO => {
                    p += 1;
                    page.fill(0);
                }
                XB_DELTA => {
                    let head = wire.get(p..p + 3).context("truncated")?;
                    if head[0] != 1 {
                        bail!("xbzrle: unknown encoding flag {}", head[0]);
                    }
                    let n = usize::from(u16::from_be_bytes([head[1], head[2]]));
                    p += 3;
                    xbzrle::decode(wire.get(p..p + n).context("truncated")?, page)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    p += n;
                }
                _ => {
                    page.copy_from_slice(wire.get(p..p + ps).context("truncated")?);
                    p += ps;
                }
            }
        }
        Ok(())
    }
}

/// The general-purpose compressors compared.
#[derive(Clone, Copy)]
pub enum Lz {
    Zstd(i32),
    Lz4,
}

/// zstd or lz4 over single pages (`batch` 1) or over runs of `batch` pages.
pub struct Block {
    pub lz: Lz,
    pub batch: usize,
    pub ps: usize,
    comp: zstd::bulk::Compressor<'static>,
    decomp: zstd::bulk::Decompressor<'static>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Block {
    /// A compressor of runs of `batch` pages.
    pub fn new(lz: Lz, batch: usize, ps: usize) -> Result<Self> {
        let level = if let Lz::Zstd(l) = lz { l } else { 1 };
        Ok(Block {
            lz,
            batch,
            ps,
            comp: zstd::bulk::Compressor::new(level)?,
            decomp: zstd::bulk::Decompressor::new()?,
            buf: Vec::new(),
            out: vec![0; lz4_flex::block::get_maximum_output_size(batch * ps) + batch * ps],
        })
    }
}

impl Codec for Block {
    fn name(&self) -> String {
        let what = match self.lz {
            Lz::Zstd(l) => format!("zstd-{l}"),
            Lz::Lz4 => "lz4".into(),
        };
        if self.batch == 1 {
            format!("{what} per page")
        } else {
            format!("{what}, {} KiB batches", self.batch * self.ps / 1024)
        }
    }
    fn encode_pass(
        &mut self,
        set: &PageSet,
        pass: &[(u64, usize)],
        _last: bool,
        wire: &mut Vec<u8>,
    ) -> Result<()> {
        for chunk in pass.chunks(self.batch) {
            self.buf.clear();
            put_u64(wire, chunk.len() as u64);
            for &(pfn, off) in chunk {
                put_u64(wire, pfn);
                self.buf.extend_from_slice(set.page(off));
            }
            let n = match self.lz {
                Lz::Zstd(_) => self.comp.compress_to_buffer(&self.buf, &mut self.out[..])?,
                Lz::Lz4 => lz4_flex::block::compress_into(&self.buf, &mut self.out)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            };
            wire.extend_from_slice(&(n as u32).to_le_bytes());
            wire.extend_from_slice(&self.out[..n]);
        }
        Ok(())
    }
    fn decode_pass(&mut self, wire: &[u8], mem: &mut [u8]) -> Result<()> {
        let ps = self.ps;
        let mut p = 0;
        while p < wire.len() {
            let count = get_u64(wire, &mut p)? as usize;
            if count > self.batch {
                bail!("batch too large");
            }
            let pfns_at = p;
            p += 8 * count;
            let n =
                u32::from_le_bytes(wire.get(p..p + 4).context("truncated")?.try_into()?) as usize;
            p += 4;
            let src = wire.get(p..p + n).context("truncated")?;
            p += n;
            let raw = &mut self.out[..count * ps];
            let got = match self.lz {
                Lz::Zstd(_) => self.decomp.decompress_to_buffer(src, raw)?,
                Lz::Lz4 => lz4_flex::block::decompress_into(src, raw)
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
            };
            if got != count * ps {
                bail!("short block");
            }
            let mut q = pfns_at;
            for i in 0..count {
                let pfn = get_u64(wire, &mut q)?;
                dest(mem, pfn, ps)?.copy_from_slice(&raw[i * ps..(i + 1) * ps]);
            }
        }
        Ok(())
    }
}

/// pagewire with a choice of features and LZ4, optionally with every pass's wire bytes
/// compressed once more by zstd.
pub struct Pagewire {
    pub cfg: Config,
    pub features: Features,
    pub zstd: Option<i32>,
    /// Weigh every record kind for every page (`Encoder::set_exhaustive`).
    pub exhaustive: bool,
    /// How the decoder keeps the pages its stream refers to.
    pub mode: DecodeMode,
    /// Plain pages in bulk (`Encoder::encode_plain_pages`), their frames built in the
    /// harness's output buffer: the raw path, one copy per page.
    pub bulk: bool,
    label: String,
    out: Vec<u8>,
    // Encoder and decoder live across passes over storage leaked once per row: the harness
    // keeps every row's state for the whole run anyway.
    enc: Option<Encoder<'static>>,
    dec: Option<Decoder<'static>>,
}

fn leak(len: usize) -> &'static mut [u8] {
    Box::leak(touched(len).into_boxed_slice())
}

/// A buffer whose pages are already mapped, so first-touch page faults are not measured.
pub fn touched(len: usize) -> Vec<u8> {
    vec![0x5au8; len]
}

/// An empty buffer with `len` bytes of capacity already mapped ([`touched`]): for output
/// appended while it is measured.
pub fn touched_empty(len: usize) -> Vec<u8> {
    let mut v = touched(len);
    v.clear();
    v
}

/// Encodes `pass` of `set` as plain pages in bulk (`Encoder::encode_plain_pages`), its
/// frames built straight in `out`, then ends the iteration and, if `last`, the stream;
/// returns the bytes written.
pub fn encode_plain_pass(
    enc: &mut Encoder<'_>,
    set: &PageSet,
    pass: &[(u64, usize)],
    last: bool,
    out: &mut [u8],
) -> Result<usize> {
    let pages: Vec<(u64, &[u8])> = pass
        .iter()
        .map(|&(pfn, off)| (pfn, set.page(off)))
        .collect();
    let (mut rest, mut n) = (&pages[..], 0);
    while !rest.is_empty() {
        let b = enc.encode_plain_pages(rest, &mut out[n..])?;
        (rest, n) = (&rest[b.pages..], n + b.written);
    }
    n += enc.end_iteration(&mut out[n..])?;
    if last {
        n += enc.finish(&mut out[n..])?;
    }
    Ok(n)
}

impl Pagewire {
    /// A pagewire row.
    pub fn new(label: &str, cfg: Config, features: Features, zstd: Option<i32>) -> Self {
        Pagewire {
            cfg,
            features,
            zstd,
            exhaustive: false,
            mode: DecodeMode::CacheCopy,
            bulk: false,
            label: label.into(),
            out: vec![0; cfg.max_output_len()],
            enc: None,
            dec: None,
        }
    }
}

impl Codec for Pagewire {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn prepare(&mut self) -> Result<()> {
        let mut e = Encoder::new(self.cfg, leak(self.cfg.encoder_storage_len()))?;
        e.set_features(self.features);
        e.set_exhaustive(self.exhaustive);
        self.enc = Some(e);
        self.dec = Some(Decoder::new(
            self.cfg,
            self.mode,
            leak(self.cfg.decoder_storage_len_for(self.mode)),
        )?);
        Ok(())
    }
    fn encode_pass(
        &mut self,
        set: &PageSet,
        pass: &[(u64, usize)],
        last: bool,
        wire: &mut Vec<u8>,
    ) -> Result<()> {
        let enc = self.enc.as_mut().context("encoder")?;
        let out = &mut self.out;
        let mut staged = Vec::new();
        let dst: &mut Vec<u8> = if self.zstd.is_some() {
            &mut staged
        } else {
            wire
        };
        for &(pfn, off) in pass {
            let n = enc.encode_page(pfn, set.page(off), out)?;
            dst.extend_from_slice(&out[..n]);
        }
        let n = enc.end_iteration(out)?;
        dst.extend_from_slice(&out[..n]);
        if last {
            let n = enc.finish(out)?;
            dst.extend_from_slice(&out[..n]);
        }
        if let Some(level) = self.zstd {
            let packed = zstd::bulk::compress(&staged, level)?;
            put_u64(wire, staged.len() as u64);
            wire.extend_from_slice(&packed);
        }
        Ok(())
    }
    fn encode_pass_into(
        &mut self,
        set: &PageSet,
        pass: &[(u64, usize)],
        last: bool,
        out: &mut [u8],
    ) -> Option<Result<usize>> {
        if !self.bulk {
            return None;
        }
        let enc = self.enc.as_mut()?;
        Some(encode_plain_pass(enc, set, pass, last, out))
    }
    fn decode_pass(&mut self, wire: &[u8], mem: &mut [u8]) -> Result<()> {
        let unpacked;
        let mut input: &[u8] = match self.zstd {
            Some(_) => {
                let mut p = 0;
                let n = get_u64(wire, &mut p)? as usize;
                unpacked = zstd::bulk::decompress(&wire[p..], n)?;
                &unpacked
            }
            None => wire,
        };
        let dec = self.dec.as_mut().context("decoder")?;
        if dec.stats().frames == 0 && input.starts_with(&pagewire::MAGIC) {
            if Config::from_header(input)? != self.cfg {
                bail!("stream header does not match the configuration");
            }
            input = &input[pagewire::HEADER_LEN..];
        }
        let mut dest = MemoryImage::new(mem, self.cfg.page_size as usize);
        let used = dec.decode(input, &mut dest)?;
        if used != input.len() {
            bail!("pagewire: {} bytes left undecoded", input.len() - used);
        }
        Ok(())
    }
}
