//! The encoder: turns (pfn, page) pairs into frames of records, choosing per page the
//! smallest of zero page, cached duplicate, per-block mix, XOR/RLE delta and raw page.

use crate::bytes::is_zero;
use crate::cache::PageCache;
use crate::config::{Config, MAX_BLOCKS_PER_PAGE, RECORD_OVERHEAD};
use crate::error::{Error, Result};
use crate::index::{AddressIndex, ContentIndex};
use crate::stats::EncoderStats;
use crate::storage::Carver;
use crate::wire::delta;
use crate::wire::frame::{Frame, FrameHeader};
use crate::wire::header::HEADER_LEN;
use crate::wire::record::{block_ref, kinds_len, BlockKind, BodyWriter, RecordTag};
use crate::wire::varint::{self, varint_len, zigzag};

/// Room kept free for one non-page record (iteration end, end of stream).
const SMALL_RECORD: usize = 1 + 2 * varint::MAX_VARINT_LEN;

/// Hashes a block for the content index.
#[inline]
pub fn block_hash(block: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(block)
}

/// Which redundancy the encoder looks for. Not part of the wire format: any combination
/// produces streams every decoder reads. Zero pages are always detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Features {
    /// Content-based redundancy elimination: whole-page duplicates and block references
    /// found through the content index.
    pub cbr: bool,
    /// Deltas against the previous version of the same pfn (and whole-page duplicates of it).
    pub delta: bool,
}

impl Features {
    /// Everything on.
    pub const ALL: Features = Features {
        cbr: true,
        delta: true,
    };
}

impl Default for Features {
    fn default() -> Self {
        Features::ALL
    }
}

/// The source side of a stream, over storage the caller owns.
pub struct Encoder<'a> {
    cfg: Config,
    features: Features,
    /// LZ4 on the next frames (`cfg.lz4` allows it; [`Encoder::set_lz4`] switches).
    lz4: bool,
    /// Weigh every record kind for every page ([`Encoder::set_exhaustive`]).
    exhaustive: bool,
    cache: PageCache<'a>,
    content: ContentIndex<'a>,
    address: AddressIndex<'a>,
    body: BodyWriter<'a>,
    scratch: &'a mut [u8],
    next_pfn: u64,
    frame_seq: u32,
    iteration: u64,
    header_pending: bool,
    finished: bool,
    stats: EncoderStats,
}

/// The per-block plan of a BLOCKS record.
struct BlockPlan {
    kinds: [BlockKind; MAX_BLOCKS_PER_PAGE],
    refs: [u64; MAX_BLOCKS_PER_PAGE],
    hashes: [u64; MAX_BLOCKS_PER_PAGE],
    delta_len: [usize; MAX_BLOCKS_PER_PAGE],
}

impl<'a> Encoder<'a> {
    /// Builds an encoder for `cfg` over `storage` (at least `cfg.encoder_storage_len()`
    /// bytes). The stream header goes out with the first frame.
    pub fn new(cfg: Config, storage: &'a mut [u8]) -> Result<Self> {
        cfg.validate()?;
        let needed = cfg.encoder_storage_len();
        if storage.len() < needed {
            return Err(Error::InsufficientStorage {
                needed,
                given: storage.len(),
            });
        }
        let mut carve = Carver::new(storage);
        let cache = PageCache::new(carve.bytes(cfg.cache_len())?, cfg.page_size as usize);
        let content = ContentIndex::new(carve.words(cfg.content_index_entries())?);
        let address = AddressIndex::new(carve.words(cfg.address_index_entries() * 2)?);
        let body = BodyWriter::new(carve.bytes(cfg.frame_bytes as usize)?);
        let scratch = carve.bytes(2 * cfg.page_size as usize)?;
        Ok(Encoder {
            cfg,
            features: Features::ALL,
            lz4: cfg.lz4,
            exhaustive: false,
            cache,
            content,
            address,
            body,
            scratch,
            next_pfn: 0,
            frame_seq: 0,
            iteration: 0,
            header_pending: true,
            finished: false,
            stats: EncoderStats::default(),
        })
    }

    /// The configuration this encoder writes into the stream header.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Chooses which redundancy to look for (all by default); may change between pages.
    pub fn set_features(&mut self, features: Features) {
        self.features = features;
    }

    /// Compresses the frames from the next one on with LZ4 (where it saves bytes), or
    /// stores them: what a sender picks by how busy its CPU is against its link. Only a
    /// stream whose header allows LZ4 can have it on; returns whether it is on now.
    pub fn set_lz4(&mut self, on: bool) -> bool {
        self.lz4 = on && self.cfg.lz4;
        self.lz4
    }

    /// With `true`, every page goes out as the smallest record the encoder can find: its
    /// delta is weighed against the block layout (content lookups, block deltas) too. By
    /// default a page whose delta is within `delta_threshold` is sent as that delta at
    /// once: on the real traces that costs 0.01 % more bytes for a much faster encoder
    /// (`docs/PERFORMANCE.md`). Not part of the wire format; may change between pages.
    pub fn set_exhaustive(&mut self, exhaustive: bool) {
        self.exhaustive = exhaustive;
    }

    /// True while frames get LZ4-compressed (see [`Encoder::set_lz4`]).
    pub fn lz4(&self) -> bool {
        self.lz4
    }

    /// The redundancy the encoder looks for.
    pub fn features(&self) -> Features {
        self.features
    }

    /// Counters so far.
    pub fn stats(&self) -> &EncoderStats {
        &self.stats
    }

    /// The iteration now being encoded (0 for the first pass).
    pub fn iteration(&self) -> u64 {
        self.iteration
    }

    /// Encodes one page. Returns how many bytes of finished stream were written to the front
    /// of `out` (the stream header and/or a full frame; usually 0). `out` must hold
    /// `Config::max_output_len()` bytes.
    ///
    /// The encoder reads `page` several times (zero test, delta, hashes, the copy into its
    /// cache), so it must not change during the call, as Rust's `&[u8]` promises. Guest
    /// memory that running vCPUs may write is copied into a private page first and the copy
    /// encoded: the C API does that for every page it is given, the offload device copies
    /// each page out of its ring, and the runner reads guest pages into its own buffer. (A
    /// page that changed between two reads would leave the two ends' caches out of step.)
    pub fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut [u8]) -> Result<usize> {
        self.check_call(out)?;
        let ps = self.cfg.page_size as usize;
        if page.len() != ps {
            return Err(Error::WrongPageLength {
                expected: ps,
                got: page.len(),
            });
        }
        let mut written = self.take_header(out);
        if self.room() < ps + RECORD_OVERHEAD {
            written += self.flush(&mut out[written..]);
        }
        self.write_page_record(pfn, page);
        self.stats.bytes_in += ps as u64;
        Ok(written)
    }

    /// Marks the end of the current pre-copy iteration and flushes the frame, so the
    /// destination has every page of the iteration. Returns the bytes written to `out`.
    pub fn end_iteration(&mut self, out: &mut [u8]) -> Result<usize> {
        self.check_call(out)?;
        let mut written = self.take_header(out);
        if self.room() < SMALL_RECORD {
            written += self.flush(&mut out[written..]);
        }
        let it = self.iteration;
        self.body.counter(RecordTag::IterationEnd, it);
        self.iteration += 1;
        self.stats.iterations += 1;
        written += self.flush(&mut out[written..]);
        Ok(written)
    }

    /// Appends an opaque blob (vCPU or device state) tagged `blob_tag`, of at most
    /// `Config::max_blob_len()` bytes. Returns the bytes written to `out`.
    pub fn append_blob(&mut self, blob_tag: u32, data: &[u8], out: &mut [u8]) -> Result<usize> {
        self.check_call(out)?;
        let max = self.cfg.max_blob_len();
        if data.len() > max {
            return Err(Error::BlobTooLarge {
                len: data.len(),
                max,
            });
        }
        let mut written = self.take_header(out);
        if self.room() < data.len() + SMALL_RECORD {
            written += self.flush(&mut out[written..]);
        }
        self.body.blob(blob_tag, data);
        self.stats.blobs += 1;
        self.stats.blob_bytes += data.len() as u64;
        Ok(written)
    }

    /// Writes the end-of-stream record and the last frame. The encoder accepts nothing after.
    pub fn finish(&mut self, out: &mut [u8]) -> Result<usize> {
        self.check_call(out)?;
        let mut written = self.take_header(out);
        if self.room() < SMALL_RECORD {
            written += self.flush(&mut out[written..]);
        }
        let pages = self.stats.pages();
        self.body.counter(RecordTag::End, pages);
        written += self.flush(&mut out[written..]);
        self.finished = true;
        Ok(written)
    }

    fn check_call(&self, out: &[u8]) -> Result<()> {
        if self.finished {
            return Err(Error::Finished);
        }
        let needed = self.cfg.max_output_len();
        if out.len() < needed {
            return Err(Error::OutputTooSmall {
                needed,
                given: out.len(),
            });
        }
        Ok(())
    }

    fn take_header(&mut self, out: &mut [u8]) -> usize {
        if !self.header_pending {
            return 0;
        }
        self.header_pending = false;
        out[..HEADER_LEN].copy_from_slice(&self.cfg.header_bytes());
        self.stats.bytes_out += HEADER_LEN as u64;
        HEADER_LEN
    }

    #[inline]
    fn room(&self) -> usize {
        self.body.room()
    }

    /// Seals the current body into a frame at the front of `out`; returns its length.
    fn flush(&mut self, out: &mut [u8]) -> usize {
        if self.body.is_empty() {
            return 0;
        }
        let body = self.body.written();
        let mut frame = Frame::new_unchecked(out);
        let mut wire_len = body.len();
        let mut lz4 = false;
        if self.lz4 {
            if let Ok(n) = lz4_flex::block::compress_into(body, frame.body_mut()) {
                if n < body.len() {
                    wire_len = n;
                    lz4 = true;
                }
            }
        }
        if !lz4 {
            frame.body_mut()[..wire_len].copy_from_slice(body);
        }
        FrameHeader {
            lz4,
            stream_id: self.cfg.stream_id,
            seq: self.frame_seq,
            wire_len: wire_len as u32,
            raw_len: body.len() as u32,
        }
        .emit(&mut frame);
        let total = frame.fill_crc();
        self.stats.frames += 1;
        self.stats.frames_lz4 += u64::from(lz4);
        self.stats.bytes_out += total as u64;
        self.body.clear();
        self.next_pfn = 0;
        self.frame_seq = self.frame_seq.wrapping_add(1);
        total
    }

    /// Chooses the smallest record for the page, writes it into the body and updates the
    /// cache and indexes exactly as the decoder will.
    fn write_page_record(&mut self, pfn: u64, page: &[u8]) {
        let bpp = self.cfg.blocks_per_page as usize;
        let bs = self.cfg.block_size();
        let ps = page.len();
        let pfn_code = zigzag(pfn.wrapping_sub(self.next_pfn) as i64);
        let head = 1 + varint_len(pfn_code);
        self.next_pfn = pfn.wrapping_add(1);

        let mut plan = BlockPlan {
            kinds: [BlockKind::Literal; MAX_BLOCKS_PER_PAGE],
            refs: [0; MAX_BLOCKS_PER_PAGE],
            hashes: [0; MAX_BLOCKS_PER_PAGE],
            delta_len: [0; MAX_BLOCKS_PER_PAGE],
        };
        // A page that is not zero fails the whole-page test at its first non-zero word; the
        // per-block zero test waits until the block layout is needed.
        if is_zero(page) {
            let start = self.body.page(RecordTag::Zero, pfn_code);
            self.stats.zero.add(self.body.len() - start);
            return;
        }

        // The latest cached version of this pfn: a duplicate, or the base for deltas.
        let base = self
            .address
            .get(pfn)
            .filter(|_| self.features.delta)
            .and_then(|seq| self.cache.age_of_seq(seq))
            .and_then(|age| self.cache.slot_for_age(age).ok().map(|slot| (age, slot)));
        // The page delta comes first. Empty: the page is unchanged, a duplicate. Within the
        // delta threshold: sent at once as a PATCH (the cached version is patched in its slot
        // and holds this page from then on: a page that keeps changing takes no new slot),
        // without content lookups, block deltas or hashing for the content index. On the real
        // traces and the synthetic series this sends within 0.01 % of the bytes that weighing
        // it against a block layout did, at a fraction of the work (docs/PERFORMANCE.md). With
        // `exhaustive`, such a delta stays a candidate and is weighed against the block layout
        // and the raw page below.
        let mut page_delta = None;
        let mut bounds = None;
        if let Some((age, slot)) = base {
            let base_page = self.cache.page(slot);
            crate::fast::prefetch(base_page);
            let threshold = self.cfg.delta_threshold as usize;
            // room for the empty delta even under a threshold below it
            let limit = threshold.max(delta::EMPTY_LEN);
            // Lower bounds on the page's and each block's delta, from one cheap pass over
            // difference masks: a page that looks rewritten gets them first, so that a page
            // delta that cannot fit is never written out run by run (for a page of rewritten
            // pointers, 0.9 us against 3.3 us up to the threshold); any other page gets them
            // only if its delta fails, for the block deltas below.
            if delta::looks_rewritten(page, base_page) {
                bounds = Some(delta::bounds(page, base_page, bs));
            }
            let fits = bounds.is_none_or(|b| b.whole <= limit);
            let whole = &mut self.scratch[..ps];
            let page_delta_len = if fits {
                delta::encode(page, base_page, whole, limit)
            } else {
                None
            };
            match page_delta_len {
                Some(delta::EMPTY_LEN) => {
                    self.write_dup(pfn, pfn_code, age);
                    return;
                }
                Some(n) if n <= threshold && self.exhaustive => page_delta = Some(n),
                Some(n) if n <= threshold && n + varint_len(age) <= ps => {
                    self.write_patch(pfn_code, age, slot, n, page);
                    return;
                }
                _ => {}
            }
            if bounds.is_none() {
                bounds = Some(delta::bounds(page, self.cache.page(slot), bs));
            }
        }

        for b in 0..bpp {
            if is_zero(&page[b * bs..(b + 1) * bs]) {
                plan.kinds[b] = BlockKind::Zero;
            }
        }

        // Content lookups, block by block: all hashes first, then all index probes (independent
        // loads, so their cache misses overlap), then the byte checks. A hit at the same block
        // offset names a page that may be a whole duplicate: remember up to two to compare.
        let mut dup_candidates = [None; 2];
        for b in 0..bpp {
            if plan.kinds[b] != BlockKind::Zero {
                plan.hashes[b] = block_hash(&page[b * bs..(b + 1) * bs]);
            }
        }
        let mut probes = [[None; 2]; MAX_BLOCKS_PER_PAGE];
        if self.features.cbr {
            let blocks = plan.kinds.iter().zip(&plan.hashes).take(bpp);
            for (probe, (&kind, &hash)) in probes.iter_mut().zip(blocks) {
                if kind != BlockKind::Zero {
                    *probe = self.content.get(hash);
                }
            }
        }
        for b in 0..bpp {
            let block = &page[b * bs..(b + 1) * bs];
            for loc in probes[b].into_iter().flatten() {
                let (slot, cb) = ((loc as usize) / bpp, (loc as usize) % bpp);
                let Some(age) = self.cache.age_of_slot(slot) else {
                    continue;
                };
                if &self.cache.page(slot)[cb * bs..(cb + 1) * bs] == block {
                    plan.kinds[b] = BlockKind::Ref;
                    plan.refs[b] = block_ref(age, cb, bpp as u64);
                    if cb == b && !dup_candidates.contains(&Some((slot, age))) {
                        if let Some(free) = dup_candidates.iter_mut().find(|c| c.is_none()) {
                            *free = Some((slot, age));
                        }
                    }
                    break;
                }
            }
        }
        for (slot, age) in dup_candidates.into_iter().flatten() {
            if Some(slot) != base.map(|(_, s)| s) && self.cache.page(slot) == page {
                self.write_dup(pfn, pfn_code, age);
                return;
            }
        }

        // Deltas against the base, per literal block.
        if let Some((_, slot)) = base {
            let blocks = &mut self.scratch[ps..];
            let base_page = self.cache.page(slot);
            for b in 0..bpp {
                let hopeless = bounds.is_some_and(|d| d.pieces[b] > bs - 1);
                if plan.kinds[b] != BlockKind::Literal || hopeless {
                    continue;
                }
                let r = b * bs..(b + 1) * bs;
                if let Some(n) = delta::encode(
                    &page[r.clone()],
                    &base_page[r],
                    &mut blocks[b * bs..],
                    bs - 1,
                ) {
                    plan.kinds[b] = BlockKind::Delta;
                    plan.delta_len[b] = n;
                }
            }
        }

        // Sizes of the candidates.
        let base_age = base.map_or(0, |(age, _)| age);
        let any_delta = plan.kinds[..bpp].contains(&BlockKind::Delta);
        let mut blocks_len =
            head + kinds_len(bpp) + if any_delta { varint_len(base_age) } else { 0 };
        for b in 0..bpp {
            blocks_len += match plan.kinds[b] {
                BlockKind::Zero => 0,
                BlockKind::Ref => varint_len(plan.refs[b]),
                BlockKind::Delta => plan.delta_len[b],
                BlockKind::Literal => bs,
            };
        }
        let delta_len = page_delta.map_or(usize::MAX, |n| head + varint_len(base_age) + n);
        let raw_len = head + ps;

        let start = self.body.len();
        if let (Some(n), Some((_, slot))) = (page_delta, base) {
            if delta_len <= blocks_len && delta_len <= raw_len {
                self.write_patch(pfn_code, base_age, slot, n, page);
                return;
            }
        }
        if blocks_len < raw_len {
            self.write_blocks(pfn_code, page, &plan, any_delta.then_some(base_age));
            self.stats.blocks.add(self.body.len() - start);
            self.stats.delta_uses += u64::from(any_delta);
        } else {
            self.body.page(RecordTag::Raw, pfn_code);
            self.body.bytes(page);
            self.stats.raw.add(self.body.len() - start);
        }
        self.insert(pfn, page, &plan);
    }

    /// A PATCH record of the page delta in `scratch[..n]` against the cached page of age
    /// `age` (in `slot`).
    ///
    /// The cached page becomes `page` where it is, as the decoder's copy will once it applies
    /// the delta: no slot is taken, so a page that keeps changing does not push others out.
    fn write_patch(&mut self, pfn_code: u64, age: u64, slot: usize, n: usize, page: &[u8]) {
        let start = self.body.page(RecordTag::Patch, pfn_code);
        self.body.varint(age);
        self.body.bytes(&self.scratch[..n]);
        self.stats.delta.add(self.body.len() - start);
        self.stats.delta_uses += 1;
        self.cache.page_mut(slot).copy_from_slice(page);
    }

    fn write_dup(&mut self, pfn: u64, pfn_code: u64, age: u64) {
        let start = self.body.page(RecordTag::Dup, pfn_code);
        self.body.varint(age);
        self.stats.dup.add(self.body.len() - start);
        self.stats.cache_hits += 1;
        self.address.put(pfn, self.cache.inserted() - age);
    }

    fn write_blocks(
        &mut self,
        pfn_code: u64,
        page: &[u8],
        plan: &BlockPlan,
        base_age: Option<u64>,
    ) {
        let bpp = self.cfg.blocks_per_page as usize;
        let bs = self.cfg.block_size();
        let ps = page.len();
        self.body.page(RecordTag::Blocks, pfn_code);
        self.body.kinds(&plan.kinds[..bpp]);
        if let Some(age) = base_age {
            self.body.varint(age);
        }
        for b in 0..bpp {
            match plan.kinds[b] {
                BlockKind::Zero => self.stats.block_zero += 1,
                BlockKind::Ref => {
                    self.body.varint(plan.refs[b]);
                    self.stats.block_ref += 1;
                    self.stats.cache_hits += 1;
                }
                BlockKind::Delta => {
                    let src = ps + b * bs;
                    self.body.bytes(&self.scratch[src..src + plan.delta_len[b]]);
                    self.stats.block_delta += 1;
                }
                BlockKind::Literal => {
                    self.body.bytes(&page[b * bs..(b + 1) * bs]);
                    self.stats.block_literal += 1;
                }
            }
        }
    }

    /// The cache insertion rule for the records this encoder writes: RAW and BLOCKS pages
    /// enter the cache at the head (PATCH pages change their base in place, in
    /// `write_patch`); the page's non-zero blocks enter the content index under their hashes.
    fn insert(&mut self, pfn: u64, page: &[u8], plan: &BlockPlan) {
        let bpp = self.cfg.blocks_per_page as usize;
        let slot = self.cache.head_slot();
        self.cache.page_mut(slot).copy_from_slice(page);
        let seq = self.cache.advance();
        for b in 0..bpp {
            if plan.kinds[b] != BlockKind::Zero {
                self.content.put(plan.hashes[b], (slot * bpp + b) as u32);
            }
        }
        self.address.put(pfn, seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::FRAME_HEADER_LEN;

    const CFG: Config = Config {
        cache_pages: 8,
        frame_bytes: 16384,
        lz4: false,
        ..Config::DEFAULT
    };

    #[test]
    fn header_once_and_frames_at_iteration_ends() {
        let mut mem = [0u8; CFG.encoder_storage_len()];
        let mut out = [0u8; CFG.max_output_len()];
        let mut enc = Encoder::new(CFG, &mut mem).unwrap();
        assert_eq!(
            enc.encode_page(0, &[0; 4096], &mut out).unwrap(),
            HEADER_LEN
        );
        assert_eq!(&out[..4], b"PGWR");
        assert_eq!(enc.encode_page(1, &[0; 4096], &mut out).unwrap(), 0);
        // ZERO, ZERO, ITERATION_END 0 in one frame
        let n = enc.end_iteration(&mut out).unwrap();
        assert_eq!(n, FRAME_HEADER_LEN + 6 + 4);
        assert_eq!(
            &out[FRAME_HEADER_LEN..FRAME_HEADER_LEN + 6],
            &[0x01, 0x00, 0x01, 0x00, 0x10, 0x00]
        );
        assert_eq!(enc.iteration(), 1);
        assert_eq!(enc.stats().zero.pages, 2);
        assert_eq!(enc.stats().bytes_out, (HEADER_LEN + n) as u64);
    }

    #[test]
    fn lz4_switches_per_frame_and_only_where_the_header_allows_it() {
        let cfg = Config { lz4: true, ..CFG };
        let mut mem = [0u8; CFG.encoder_storage_len()];
        let mut out = [0u8; CFG.max_output_len()];
        let mut enc = Encoder::new(cfg, &mut mem).unwrap();
        let text = |k: u8| -> [u8; 4096] { core::array::from_fn(|i| (i % 18) as u8 + 20 * k) };
        let mut frames = [0u64; 3];
        for (k, on) in [true, false, true].into_iter().enumerate() {
            assert!(enc.set_lz4(on) == on && enc.lz4() == on);
            enc.encode_page(k as u64, &text(k as u8), &mut out).unwrap();
            enc.end_iteration(&mut out).unwrap();
            frames[k] = enc.stats().frames_lz4;
        }
        // frame 1 compressed, frame 2 stored, frame 3 compressed
        assert_eq!(frames, [1, 1, 2]);

        let mut mem = [0u8; CFG.encoder_storage_len()];
        let mut enc = Encoder::new(CFG, &mut mem).unwrap();
        assert!(!enc.set_lz4(true), "the header disables LZ4");
        enc.encode_page(0, &text(0), &mut out).unwrap();
        enc.end_iteration(&mut out).unwrap();
        assert_eq!(enc.stats().frames_lz4, 0);
    }

    #[test]
    fn a_full_frame_is_sealed_before_the_next_page() {
        let mut mem = [0u8; CFG.encoder_storage_len()];
        let mut out = [0u8; CFG.max_output_len()];
        let mut enc = Encoder::new(CFG, &mut mem).unwrap();
        let mut sealed = 0;
        for pfn in 0..8u64 {
            let page: [u8; 4096] =
                core::array::from_fn(|i| (i as u64 * 31 + pfn * 17) as u8 ^ (i >> 7) as u8);
            if enc.encode_page(pfn, &page, &mut out).unwrap() > HEADER_LEN {
                sealed += 1;
            }
        }
        // 16 KiB frames hold three raw pages; the fourth forces a frame out
        assert!(sealed >= 2, "{:?}", enc.stats());
        assert_eq!(enc.stats().raw.pages, 8);
    }
}
