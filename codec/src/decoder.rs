//! The decoder: checks each frame completely (CRC, then every record against the cache
//! state) before it hands out a single page, then rebuilds the pages into its cache.

use crate::cache::PageCache;
use crate::config::{Config, MAX_BLOCKS_PER_PAGE};
use crate::error::{Error, Result};
use crate::stats::DecoderStats;
use crate::wire::delta;
use crate::wire::frame::{Frame, FrameHeader, FRAME_HEADER_LEN};
use crate::wire::header::HEADER_LEN;
use crate::wire::record::{block_item, parse, BlockItem, BlockKind, ParseState, Record};

/// Where decoded pages, iteration ends and blobs go.
pub trait Sink {
    /// Page `pfn` now holds `data` (`page_size` bytes).
    fn page(&mut self, pfn: u64, data: &[u8]);
    /// Every page of iteration `iteration` has been delivered.
    fn iteration_end(&mut self, _iteration: u64) {}
    /// An opaque blob the source appended.
    fn blob(&mut self, _tag: u32, _data: &[u8]) {}
    /// The end-of-stream record arrived; the migration stream is complete.
    fn end_of_stream(&mut self) {}
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    Ended,
    Failed,
}

/// The destination side of a stream, over storage the caller owns.
pub struct Decoder<'a> {
    cfg: Config,
    cache: PageCache<'a>,
    body: &'a mut [u8],
    scratch: &'a mut [u8],
    zero: &'a [u8],
    expected_seq: u32,
    iteration: u64,
    page_records: u64,
    state: State,
    stats: DecoderStats,
}

impl<'a> Decoder<'a> {
    /// Builds a decoder for `cfg` over `storage` (at least `cfg.decoder_storage_len()` bytes).
    pub fn new(cfg: Config, storage: &'a mut [u8]) -> Result<Self> {
        cfg.validate()?;
        let needed = cfg.decoder_storage_len();
        if storage.len() < needed {
            return Err(Error::InsufficientStorage {
                needed,
                given: storage.len(),
            });
        }
        let ps = cfg.page_size as usize;
        let (cache, rest) = storage.split_at_mut(cfg.cache_len());
        let (body, rest) = rest.split_at_mut(cfg.frame_bytes as usize);
        let (scratch, rest) = rest.split_at_mut(ps);
        let zero = &mut rest[..ps];
        zero.fill(0);
        Ok(Decoder {
            cfg,
            cache: PageCache::new(cache, ps),
            body,
            scratch,
            zero,
            expected_seq: 0,
            iteration: 0,
            page_records: 0,
            state: State::Running,
            stats: DecoderStats::default(),
        })
    }

    /// Parses the stream header at the front of `input` and builds a decoder for the
    /// configuration it carries. Returns the decoder and the header length consumed.
    pub fn from_header(input: &[u8], storage: &'a mut [u8]) -> Result<(Self, usize)> {
        let cfg = Config::from_header(input)?;
        let mut dec = Decoder::new(cfg, storage)?;
        dec.stats.bytes_in = HEADER_LEN as u64;
        Ok((dec, HEADER_LEN))
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
    pub fn decode<S: Sink>(&mut self, input: &[u8], sink: &mut S) -> Result<usize> {
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
            self.decode_frame(&rest[..len], sink)?;
            pos += len;
        }
        Ok(pos)
    }

    /// Decodes exactly one frame. Nothing reaches `sink` unless the whole frame is valid.
    /// Any error is final: the decoder refuses further frames.
    pub fn decode_frame<S: Sink>(&mut self, frame: &[u8], sink: &mut S) -> Result<usize> {
        match self.state {
            State::Failed => return Err(Error::Finished),
            State::Ended => {
                self.state = State::Failed;
                return Err(Error::TrailingData);
            }
            State::Running => {}
        }
        let r = self.decode_frame_inner(frame, sink);
        if r.is_err() {
            self.state = State::Failed;
        }
        r
    }

    fn parse_state(&self) -> ParseState {
        ParseState {
            page_size: self.cfg.page_size as usize,
            blocks_per_page: self.cfg.blocks_per_page as usize,
            capacity: self.cache.capacity(),
            inserted: self.cache.inserted(),
            next_pfn: 0,
        }
    }

    fn decode_frame_inner<S: Sink>(&mut self, frame: &[u8], sink: &mut S) -> Result<usize> {
        let view = Frame::new_checked(frame)?;
        let fh = FrameHeader::from_frame(&view, self.cfg.frame_bytes)?;
        let len = fh.frame_len();
        if frame.len() < len {
            return Err(Error::Truncated);
        }
        if frame.len() > len {
            return Err(Error::LengthOutOfRange);
        }
        view.check_crc()?;
        if fh.stream_id != self.cfg.stream_id {
            return Err(Error::WrongStream);
        }
        if fh.seq != self.expected_seq {
            return Err(Error::FrameOutOfOrder {
                expected: self.expected_seq,
                got: fh.seq,
            });
        }
        let wire = view.body();
        let raw_len = fh.raw_len as usize;
        let st = self.parse_state();
        let Decoder {
            cache,
            body: body_buf,
            scratch,
            zero,
            ..
        } = self;
        let body: &[u8] = if fh.lz4 {
            if !self.cfg.lz4 {
                return Err(Error::Malformed(
                    "LZ4 frame in a stream whose header disables LZ4",
                ));
            }
            match lz4_flex::block::decompress_into(wire, &mut body_buf[..raw_len]) {
                Ok(n) if n == raw_len => &body_buf[..raw_len],
                _ => return Err(Error::BadCompression),
            }
        } else {
            wire
        };

        // Pass 1: check every record; nothing is handed out yet.
        let mut check = st;
        let mut pos = 0;
        let mut iteration = self.iteration;
        let mut page_records = self.page_records;
        let mut ended = false;
        while pos < body.len() {
            if ended {
                return Err(Error::TrailingData);
            }
            match parse(body, &mut pos, &mut check)? {
                Record::IterationEnd { iteration: got } => {
                    if got != iteration {
                        return Err(Error::IterationOutOfOrder {
                            expected: iteration,
                            got,
                        });
                    }
                    iteration += 1;
                }
                Record::End { page_records: n } => {
                    if n != page_records {
                        return Err(Error::Malformed(
                            "end record page count differs from pages received",
                        ));
                    }
                    ended = true;
                }
                Record::Blob { .. } => {}
                _ => page_records += 1,
            }
        }

        // Pass 2: apply. Every check already passed, so errors here mean a bug; they are
        // still returned, never panicked on.
        let mut st = st;
        let mut pos = 0;
        let ps = st.page_size;
        while pos < body.len() {
            match parse(body, &mut pos, &mut st)? {
                Record::Zero { pfn } => sink.page(pfn, zero),
                Record::Dup { pfn, age } => {
                    let slot = cache.slot_for_age(age)?;
                    sink.page(pfn, cache.page(slot));
                }
                Record::Raw { pfn, bytes } => {
                    let head = cache.head_slot();
                    cache.page_mut(head).copy_from_slice(bytes);
                    cache.advance();
                    sink.page(pfn, cache.page(head));
                }
                Record::Delta {
                    pfn,
                    age,
                    rle,
                    in_place: true,
                } => {
                    let slot = cache.slot_for_age(age)?;
                    delta::apply(rle, cache.page_mut(slot))?;
                    sink.page(pfn, cache.page(slot));
                }
                Record::Delta {
                    pfn,
                    age,
                    rle,
                    in_place: false,
                } => {
                    let base = cache.slot_for_age(age)?;
                    let head = cache.head_slot();
                    if base != head {
                        cache.copy_between(base, 0, head, 0, ps);
                    }
                    delta::apply(rle, cache.page_mut(head))?;
                    cache.advance();
                    sink.page(pfn, cache.page(head));
                }
                Record::Blocks {
                    pfn,
                    kinds,
                    base_age,
                    payload,
                } => {
                    build_blocks(cache, scratch, &st_before(&st), &kinds, base_age, payload)?;
                    let head = cache.head_slot();
                    cache.advance();
                    sink.page(pfn, cache.page(head));
                }
                Record::IterationEnd { iteration } => {
                    self.iteration = iteration + 1;
                    self.stats.iterations += 1;
                    sink.iteration_end(iteration);
                }
                Record::Blob { tag, data } => {
                    self.stats.blobs += 1;
                    sink.blob(tag, data);
                }
                Record::End { .. } => {
                    self.state = State::Ended;
                    sink.end_of_stream();
                }
            }
            if st.inserted != cache.inserted() {
                return Err(Error::Malformed("cache out of step"));
            }
        }
        let pages = (page_records - self.page_records) as usize;
        self.page_records = page_records;
        self.expected_seq = self.expected_seq.wrapping_add(1);
        self.stats.frames += 1;
        self.stats.bytes_in += len as u64;
        self.stats.pages = page_records;
        Ok(pages)
    }
}

/// The parse state as it was before the BLOCKS record just parsed (which counted its own
/// insertion).
fn st_before(st: &ParseState) -> ParseState {
    ParseState {
        inserted: st.inserted - 1,
        ..*st
    }
}

/// Rebuilds a BLOCKS page into the head slot. When the record refers to the page it is
/// about to evict, the page is built in `scratch` first.
fn build_blocks(
    cache: &mut PageCache<'_>,
    scratch: &mut [u8],
    st: &ParseState,
    kinds: &[BlockKind; MAX_BLOCKS_PER_PAGE],
    base_age: Option<u64>,
    payload: &[u8],
) -> Result<()> {
    let bpp = st.blocks_per_page;
    let bs = st.page_size / bpp;
    let head = cache.head_slot();
    let base = match base_age {
        Some(age) => Some(cache.slot_for_age(age)?),
        None => None,
    };
    // Does any source slot equal the slot being overwritten?
    let mut conflict = base == Some(head);
    let mut pos = 0;
    for &k in &kinds[..bpp] {
        if let BlockItem::Ref { age, .. } = block_item(payload, &mut pos, k, st)? {
            conflict |= cache.slot_for_age(age)? == head;
        }
    }
    let mut pos = 0;
    for (b, &k) in kinds[..bpp].iter().enumerate() {
        let at = b * bs;
        let item = block_item(payload, &mut pos, k, st)?;
        let (src, src_block) = match item {
            BlockItem::Ref { age, block } => (Some(cache.slot_for_age(age)?), block),
            BlockItem::Delta(_) => (base, b),
            _ => (None, 0),
        };
        if let Some(src) = src {
            if conflict {
                scratch[at..at + bs]
                    .copy_from_slice(&cache.page(src)[src_block * bs..(src_block + 1) * bs]);
            } else {
                cache.copy_between(src, src_block * bs, head, at, bs);
            }
        }
        let dst = if conflict {
            &mut scratch[at..at + bs]
        } else {
            &mut cache.page_mut(head)[at..at + bs]
        };
        match item {
            BlockItem::Zero => dst.fill(0),
            BlockItem::Literal(bytes) => dst.copy_from_slice(bytes),
            BlockItem::Delta(rle) => {
                delta::apply(rle, dst)?;
            }
            BlockItem::Ref { .. } => {}
        }
    }
    if conflict {
        cache.page_mut(head).copy_from_slice(scratch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Sink for Nothing {
        fn page(&mut self, _pfn: u64, _data: &[u8]) {}
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
        let mut dec = Decoder::new(CFG, &mut mem).unwrap();
        let mut buf = [0u8; 64];
        let n = frame(0, &[0x02, 0x00, 0x01], &mut buf); // DUP of an empty slot
        assert_eq!(dec.frame_len(&buf), Ok(n));
        assert_eq!(
            dec.decode_frame(&buf[..n], &mut Nothing),
            Err(Error::EmptySlot)
        );
        let n = frame(0, &[0x01, 0x00], &mut buf);
        assert_eq!(
            dec.decode_frame(&buf[..n], &mut Nothing),
            Err(Error::Finished)
        );
        assert_eq!(dec.check_complete(), Err(Error::Finished));
    }

    #[test]
    fn partial_frames_wait_for_more_input() {
        let mut mem = [0u8; CFG.decoder_storage_len()];
        let mut dec = Decoder::new(CFG, &mut mem).unwrap();
        let mut buf = [0u8; 64];
        let n = frame(0, &[0x01, 0x00, 0x12, 0x01], &mut buf);
        assert_eq!(dec.decode(&buf[..n - 1], &mut Nothing), Ok(0));
        assert_eq!(dec.check_complete(), Err(Error::Truncated));
        assert_eq!(dec.decode(&buf[..n], &mut Nothing), Ok(n));
        assert!(dec.is_complete());
        assert_eq!(dec.stats().pages, 1);
    }
}
