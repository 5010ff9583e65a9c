//! The decoder: checks each frame completely (CRC, then every record against the cache
//! state and the owners of its slots) before it writes a single page, then writes the pages
//! into destination memory, in place or through a cache copy ([`DecodeMode`]).
//!
//! | module | its one job |
//! | --- | --- |
//! | this one | the [`Decoder`], its calls and its progress through the stream |
//! | `destination` | the [`Destination`] interface, and [`MemoryImage`] |
//! | `frame` | a frame's checks before its body is read, and the body (LZ4) |
//! | `validate` | the first pass: every record checked, owners and retirement, nothing written |
//! | `apply` | the second pass: pages written to the destination, in either mode |

mod apply;
mod destination;
mod frame;
mod validate;

pub use destination::{page_pair_in, Destination, MemoryImage};

use crate::cache::{PageCache, Ring};
use crate::config::{Config, DecodeMode};
use crate::error::{Error, Result};
use crate::owners::{map_entries, Owners};
use crate::storage::Carver;
use crate::wire::frame::{FrameHeader, FRAME_HEADER_LEN};
use crate::wire::header::HEADER_LEN;
use crate::wire::record::ParseState;
use apply::{Pages, Store};
use validate::Tally;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Ended,
    Failed,
}

/// What the decoder has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DecoderStats {
    pub pages: u64,
    pub frames: u64,
    pub bytes_in: u64,
    pub blobs: u64,
    pub iterations: u64,
}

/// The destination side of a stream, over storage the caller owns.
pub struct Decoder<'a> {
    cfg: Config,
    mode: DecodeMode,
    pages: Pages<'a>,
    /// Where an LZ4 body is decompressed.
    body: &'a mut [u8],
    expected_seq: u32,
    /// The iteration whose end marker comes next.
    iteration: u64,
    page_records: u64,
    state: State,
    stats: DecoderStats,
}

impl<'a> Decoder<'a> {
    /// Builds a decoder for `cfg` in `mode` over `storage` (at least
    /// `cfg.decoder_storage_len_for(mode)` bytes).
    pub fn new(cfg: Config, mode: DecodeMode, storage: &'a mut [u8]) -> Result<Self> {
        cfg.validate()?;
        let needed = cfg.decoder_storage_len_for(mode);
        if storage.len() < needed {
            return Err(Error::InsufficientStorage {
                needed,
                given: storage.len(),
            });
        }
        let ps = cfg.page_size as usize;
        let slots = cfg.cache_pages as usize;
        let mut carve = Carver::new(storage);
        let owner = carve.words(slots)?;
        let map = carve.words32(map_entries(slots))?;
        let pending = carve.words(cfg.max_frame_inserts())?;
        let body = carve.bytes(cfg.frame_bytes as usize)?;
        let scratch = carve.bytes(ps)?;
        let store = match mode {
            DecodeMode::InPlace => Store::InPlace(Ring::new(slots as u64)),
            DecodeMode::CacheCopy => {
                Store::CacheCopy(PageCache::new(carve.bytes(cfg.cache_len())?, ps))
            }
        };
        Ok(Decoder {
            cfg,
            mode,
            pages: Pages {
                store,
                owners: Owners::new(owner, map, pending),
                scratch,
            },
            body,
            expected_seq: 0,
            iteration: 0,
            page_records: 0,
            state: State::Running,
            stats: DecoderStats::default(),
        })
    }

    /// Parses the stream header at the front of `input` and builds a decoder in `mode` for
    /// the configuration it carries. Returns the decoder and the header length consumed.
    pub fn from_header(
        input: &[u8],
        mode: DecodeMode,
        storage: &'a mut [u8],
    ) -> Result<(Self, usize)> {
        let cfg = Config::from_header(input)?;
        let mut dec = Decoder::new(cfg, mode, storage)?;
        dec.stats.bytes_in = HEADER_LEN as u64;
        Ok((dec, HEADER_LEN))
    }

    /// The storage mode.
    pub fn mode(&self) -> DecodeMode {
        self.mode
    }

    /// The configuration from the stream header.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> &DecoderStats {
        &self.stats
    }

    /// True once the end-of-stream record has been decoded.
    pub fn is_complete(&self) -> bool {
        self.state == State::Ended
    }

    /// `Ok` once the end-of-stream record has been decoded; `Truncated` before.
    pub fn check_complete(&self) -> Result<()> {
        match self.state {
            State::Ended => Ok(()),
            State::Running => Err(Error::Truncated),
            State::Failed => Err(Error::Finished),
        }
    }

    /// Length of the frame that starts `buf`, from its header alone (`FRAME_HEADER_LEN`
    /// bytes), checked against this stream's limits: what a network reader needs to know
    /// how much to read.
    pub fn frame_len(&self, buf: &[u8]) -> Result<usize> {
        Ok(FrameHeader::parse(buf, self.cfg.frame_bytes)?.frame_len())
    }

    /// Decodes every complete frame at the front of `input`; returns the bytes consumed.
    /// A partial frame at the end is left for the next call.
    pub fn decode<D: Destination>(&mut self, input: &[u8], dest: &mut D) -> Result<usize> {
        let mut pos = 0;
        while pos < input.len() {
            let rest = &input[pos..];
            if self.state == State::Ended {
                // anything after the end record, whatever it looks like
                self.state = State::Failed;
                return Err(Error::TrailingData);
            }
            if rest.len() < FRAME_HEADER_LEN {
                break;
            }
            let len = match self.frame_len(rest) {
                Ok(len) => len,
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            };
            if rest.len() < len {
                break;
            }
            self.decode_frame(&rest[..len], dest)?;
            pos += len;
        }
        Ok(pos)
    }

    /// Decodes exactly one frame. Nothing of it is written to `dest` unless the whole frame
    /// is valid. Any error is final: the decoder refuses further frames.
    pub fn decode_frame<D: Destination>(&mut self, frame: &[u8], dest: &mut D) -> Result<usize> {
        match self.state {
            State::Failed => return Err(Error::Finished),
            State::Ended => {
                self.state = State::Failed;
                return Err(Error::TrailingData);
            }
            State::Running => {}
        }
        let r = self.decode_frame_inner(frame, dest);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn parse_state(&self) -> ParseState {
        ParseState {
            page_size: self.cfg.page_size as usize,
            blocks_per_page: self.cfg.blocks_per_page as usize,
            capacity: self.pages.ring().capacity(),
            inserted: self.pages.ring().inserted(),
            next_pfn: 0,
        }
    }

    /// One frame: checked, its records validated, then applied; returns the pages in it.
    fn decode_frame_inner<D: Destination>(&mut self, frame: &[u8], dest: &mut D) -> Result<usize> {
        let fh = self.check_frame(frame)?;
        let st = self.parse_state();
        let body = frame::body(frame, &fh, self.cfg.lz4, self.body)?;
        let owners = &mut self.pages.owners;
        let tally = validate::check_body(body, st, self.iteration, self.page_records, owners)?;
        self.pages.apply_body(body, st, dest)?;
        Ok(self.advance(&fh, &tally))
    }

    /// Takes the progress of a frame that was applied; returns its page count.
    fn advance(&mut self, fh: &FrameHeader, t: &Tally) -> usize {
        let pages = (t.page_records - self.page_records) as usize;
        self.iteration = t.iteration;
        self.page_records = t.page_records;
        if t.ended {
            self.state = State::Ended;
        }
        self.expected_seq = self.expected_seq.wrapping_add(1);
        self.stats.frames += 1;
        self.stats.bytes_in += fh.frame_len() as u64;
        self.stats.pages = t.page_records;
        self.stats.iterations += t.iteration_ends;
        self.stats.blobs += t.blobs;
        pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing([u8; 4096]);
    impl Destination for Nothing {
        fn page_mut(&mut self, _pfn: u64) -> Result<&mut [u8]> {
            Ok(&mut self.0)
        }
    }

    const CFG: Config = Config {
        cache_pages: 2,
        frame_bytes: 8192,
        lz4: false,
        ..Config::DEFAULT
    };

    fn frame(seq: u32, body: &[u8], out: &mut [u8]) -> usize {
        FrameHeader {
            lz4: false,
            stream_id: 0,
            seq,
            wire_len: body.len() as u32,
            raw_len: body.len() as u32,
        }
        .write(out);
        let end = FRAME_HEADER_LEN + body.len();
        out[FRAME_HEADER_LEN..end].copy_from_slice(body);
        let c = crate::crc32c(&out[..end]);
        out[end..end + 4].copy_from_slice(&c.to_le_bytes());
        end + 4
    }

    #[test]
    fn errors_are_final() {
        let mut mem = [0u8; CFG.decoder_storage_len()];
        let mut dec = Decoder::new(CFG, DecodeMode::CacheCopy, &mut mem).unwrap();
        let mut buf = [0u8; 64];
        let n = frame(0, &[0x02, 0x00, 0x01], &mut buf); // DUP of an empty slot
        assert_eq!(dec.frame_len(&buf), Ok(n));
        assert_eq!(
            dec.decode_frame(&buf[..n], &mut Nothing([0; 4096])),
            Err(Error::EmptySlot)
        );
        let n = frame(0, &[0x01, 0x00], &mut buf);
        assert_eq!(
            dec.decode_frame(&buf[..n], &mut Nothing([0; 4096])),
            Err(Error::Finished)
        );
        assert_eq!(dec.check_complete(), Err(Error::Finished));
    }

    #[test]
    fn each_mode_needs_its_storage_and_no_more() {
        for mode in [DecodeMode::InPlace, DecodeMode::CacheCopy] {
            let need = CFG.decoder_storage_len_for(mode);
            let mut mem = [0u8; CFG.decoder_storage_len() + 8];
            // any alignment of the buffer will do
            for skew in [0, 3] {
                let exact = &mut mem[skew..skew + need];
                assert_eq!(
                    Decoder::new(CFG, mode, exact).map(|d| d.mode()).ok(),
                    Some(mode)
                );
            }
            assert_eq!(
                Decoder::new(CFG, mode, &mut mem[..need - 1]).err(),
                Some(Error::InsufficientStorage {
                    needed: need,
                    given: need - 1
                })
            );
        }
        // in place: the owner tables and the frame buffers, no page copies
        let in_place = CFG.decoder_storage_len_for(DecodeMode::InPlace);
        assert!(in_place < CFG.frame_bytes as usize * 3 / 2 + 2 * 16 + 4096 + 64);
    }

    #[test]
    fn partial_frames_wait_for_more_input() {
        let mut mem = [0u8; CFG.decoder_storage_len()];
        let mut dec = Decoder::new(CFG, DecodeMode::CacheCopy, &mut mem).unwrap();
        let mut buf = [0u8; 64];
        let n = frame(0, &[0x01, 0x00, 0x12, 0x01], &mut buf);
        assert_eq!(dec.decode(&buf[..n - 1], &mut Nothing([0; 4096])), Ok(0));
        assert_eq!(dec.check_complete(), Err(Error::Truncated));
        assert_eq!(dec.decode(&buf[..n], &mut Nothing([0; 4096])), Ok(n));
        assert!(dec.is_complete());
        assert_eq!(dec.stats().pages, 1);
    }
}
