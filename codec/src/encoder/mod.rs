//! The encoder: turns (pfn, page) pairs into frames of records, choosing per page the
//! smallest of zero page, cached duplicate, per-block mix, XOR/RLE delta and raw page.
//!
//! | module | its one job |
//! | --- | --- |
//! | this one | the [`Encoder`] and its calls: pages, iteration ends, blobs, the end |
//! | `choose` | the record for one page, step by step |
//! | `blocks` | the per-block plan: zero blocks, content lookups, block deltas, its size |
//! | `write` | the records as chosen, and the cache insertion rule that follows them |
//! | `seal` | a finished body into a frame: LZ4, header, CRC |
//! | `plain` | plain pages in bulk, their frames built in the caller's buffer |
//! | `lz4` | LZ4 with its hash tables in the encoder's storage, not on the stack |
//! | `index` | the lossy lookup tables (block hash, pfn) only the encoder needs |
//! | `stats` | the counters |

mod blocks;
mod choose;
mod index;
mod lz4;
mod plain;
mod seal;
mod stats;
mod write;

pub use plain::{CopyPages, PlainBatch};
pub use stats::{EncoderStats, KindStats};

use crate::cache::PageCache;
use crate::config::{Config, RECORD_OVERHEAD};
use crate::error::{Error, Result};
use crate::owners::{map_entries, Owners};
use crate::storage::Carver;
use crate::wire::header::{StreamHeader, HEADER_LEN};
use crate::wire::record::{BodyWriter, RecordTag};
use crate::wire::varint;
use index::{AddressIndex, ContentIndex};
use lz4::Lz4Tables;

/// Room kept free for one non-page record (iteration end, end of stream).
const SMALL_RECORD: usize = 1 + 2 * varint::MAX_VARINT_LEN;

/// Hashes a block for the content index.
#[inline]
pub fn block_hash(block: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(block)
}

/// Which redundancy the encoder looks for. Not part of the wire format: any combination
/// produces streams every decoder reads. Zero pages are always detected. With neither,
/// the encoder's fastest setting, pages go whole as PLAIN records, past the cache (nothing
/// could refer to it): a zero test and a copy per page.
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
    /// Nothing but zero pages: every other page goes whole as a PLAIN record.
    pub const NONE: Features = Features {
        cbr: false,
        delta: false,
    };
}

impl Default for Features {
    fn default() -> Self {
        Features::ALL
    }
}

/// The latest cached version of the page being encoded: the base of its deltas, named on
/// the wire by its age.
#[derive(Clone, Copy)]
struct Base {
    age: u64,
    slot: usize,
    /// The slot is the page's own (a delta may then be a PATCH of it).
    owned: bool,
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
    /// Owners of the slots and which are live: the retirement rule, as the decoder keeps it.
    owners: Owners<'a, false>,
    /// Pages the frame being filled inserts (at most `Config::max_frame_inserts`).
    frame_inserts: usize,
    content: ContentIndex<'a>,
    address: AddressIndex<'a>,
    /// The body of the frame being filled.
    body: BodyWriter<'a>,
    /// Two pages: the page delta in the first, block deltas at their blocks' offsets in the
    /// second.
    scratch: &'a mut [u8],
    lz4_tables: Lz4Tables<'a>,
    /// The pfn the next page record's pfn code is relative to (0 at each frame start).
    next_pfn: u64,
    frame_seq: u32,
    iteration: u64,
    header_pending: bool,
    finished: bool,
    stats: EncoderStats,
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
        let slots = cfg.cache_pages as usize;
        let owners = Owners::new(
            carve.words(slots)?,
            carve.words32(map_entries(slots))?,
            &mut [],
        );
        let content = ContentIndex::new(carve.words(cfg.content_index_entries())?);
        let address = AddressIndex::new(carve.words(cfg.address_index_entries() * 2)?);
        let body = BodyWriter::new(carve.bytes(cfg.frame_bytes as usize)?);
        let scratch = carve.bytes(2 * cfg.page_size as usize)?;
        let lz4_tables = Lz4Tables::new(&mut carve, &cfg)?;
        Ok(Encoder {
            cfg,
            features: Features::ALL,
            lz4: cfg.lz4,
            exhaustive: false,
            cache,
            owners,
            frame_inserts: 0,
            content,
            address,
            body,
            scratch,
            lz4_tables,
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
    /// once, for a much faster encoder at almost no cost in bytes (`docs/PERFORMANCE.md`
    /// has the figures). Not part of the wire format; may change between pages.
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
        let written = self.make_room(out, ps + RECORD_OVERHEAD);
        self.write_page_record(pfn, page);
        self.stats.bytes_in += ps as u64;
        Ok(written)
    }

    /// Marks the end of the current pre-copy iteration and flushes the frame, so the
    /// destination has every page of the iteration. Returns the bytes written to `out`.
    pub fn end_iteration(&mut self, out: &mut [u8]) -> Result<usize> {
        self.check_call(out)?;
        let written = self.write_marker(RecordTag::IterationEnd, self.iteration, out);
        self.iteration += 1;
        self.stats.iterations += 1;
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
        let written = self.make_room(out, data.len() + SMALL_RECORD);
        self.body.blob(blob_tag, data);
        self.stats.blobs += 1;
        self.stats.blob_bytes += data.len() as u64;
        Ok(written)
    }

    /// Writes the end-of-stream record and the last frame. The encoder accepts nothing after.
    pub fn finish(&mut self, out: &mut [u8]) -> Result<usize> {
        self.check_call(out)?;
        let written = self.write_marker(RecordTag::End, self.stats.pages(), out);
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
        self.cfg
            .emit(&mut StreamHeader::new_unchecked(&mut out[..HEADER_LEN]));
        self.stats.bytes_out += HEADER_LEN as u64;
        HEADER_LEN
    }

    /// Writes the stream header on the first call, and seals the frame when the next record
    /// (at most `record` bytes) might not fit in it, or might insert a page beyond the
    /// frame's limit. Returns the bytes written to `out`.
    fn make_room(&mut self, out: &mut [u8], record: usize) -> usize {
        let written = self.take_header(out);
        if self.body.room() >= record && self.frame_inserts < self.cfg.max_frame_inserts() {
            return written;
        }
        written + self.flush(&mut out[written..])
    }

    /// A record of `tag` and one counter, then the frame sealed: how an iteration, and the
    /// stream, end. Returns the bytes written to `out`.
    fn write_marker(&mut self, tag: RecordTag, value: u64, out: &mut [u8]) -> usize {
        let written = self.make_room(out, SMALL_RECORD);
        self.body.counter(tag, value);
        written + self.flush(&mut out[written..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::FRAME_HEADER_LEN;

    /// A small encoder without LZ4, for the encoder's unit tests here and in its modules.
    pub(super) const CFG: Config = Config {
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
