//! The tunnel's source end, its data path: reads the QEMU migration stream as the source
//! QEMU writes it, and writes a pagewire stream: every whole page through the codec (zero
//! pages included, so the codec sends them as its zero-page records), everything else as the
//! blobs of [`super::items`], in QEMU's order.
//!
//! Nothing reaches the link before the stream's START section has been parsed whole: every
//! refusal QEMU's setup can provoke (multifd, postcopy, a return path, block migration,
//! another version) comes before or inside it, so a refused stream never reaches the
//! destination. Memory is bounded: the parser's (a page or two), a read buffer, one frame
//! of encoder output, one device-state piece. Reads wait for QEMU and writes for the link,
//! so a slow link slows QEMU's writes: QEMU's bandwidth estimate measures the tunnel.

use std::io::{ErrorKind, Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::digest::StreamDigest;
use super::items::{Item, DEVICE_PIECE};
use super::pfns::PageNumbers;
use super::tail::DeviceTail;
use crate::encoders::StreamEncoder;
use crate::migrate::session::unix_us;
use crate::qemu::{Event, FeedError, PageData, Parser, RamSection};

/// What the source end carried.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Carried {
    /// Bytes of QEMU's stream read.
    pub qemu_bytes: u64,
    /// Pages QEMU sent whole, and those it sent as zero pages (both through the codec).
    pub raw_pages: u64,
    pub zero_pages: u64,
    /// Pages QEMU sent as XBZRLE deltas or filled with a non-zero byte (as blobs).
    pub xbzrle_pages: u64,
    pub fill_pages: u64,
    /// RAM sections (START, PART, END).
    pub sections: u64,
    /// Bytes of device state.
    pub device_bytes: u64,
    /// Bytes of pagewire stream written to the link.
    pub stream_bytes: u64,
    /// When QEMU closed its stream, all of it read (microseconds since the Unix epoch; 0
    /// before): QEMU's side of the switchover is over.
    pub qemu_closed_unix_us: u64,
}

/// Bytes read from QEMU at a time.
const READ_PIECE: usize = 256 * 1024;

/// Carries the stream QEMU writes into `qemu` to `link` until QEMU closes it at the end of
/// a complete stream; then ends the pagewire stream. `progress` sees the counters after
/// every piece. An error (a refused or truncated stream, a failed link) leaves the
/// pagewire stream without its END record, which the far end takes as a failed migration.
pub fn carry_out<R: Read + ?Sized, W: Write + ?Sized>(
    qemu: &mut R,
    link: &mut W,
    enc: &mut dyn StreamEncoder,
    page_size: usize,
    progress: &mut dyn FnMut(&Carried),
) -> Result<Carried> {
    let mut parser = Parser::with_page_size(page_size)
        .ok_or_else(|| anyhow!("page size {page_size} is not one QEMU uses"))?;
    let mut state = Source::new(enc, page_size);
    let mut buf = vec![0u8; READ_PIECE];
    loop {
        let n = match qemu.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading QEMU's migration stream"),
        };
        state.carried.qemu_bytes += n as u64;
        parser
            .feed(&buf[..n], |event| state.event(event))
            .map_err(|e| match e {
                FeedError::Stream(s) => anyhow!(s).context("QEMU's migration stream is refused"),
                FeedError::Sink(e) => e,
            })?;
        state.send(link)?;
        progress(&state.carried);
    }
    state.carried.qemu_closed_unix_us = unix_us();
    parser
        .finish()
        .map_err(|e| anyhow!(e).context("QEMU's migration stream ended early"))?;
    state.end(link)?;
    progress(&state.carried);
    Ok(state.carried)
}

/// The source end's state between pieces.
struct Source<'e> {
    enc: &'e mut dyn StreamEncoder,
    /// Encoder output not yet on the link.
    out: Vec<u8>,
    /// A blob's bytes, reused.
    blob: Vec<u8>,
    /// Device state gathered into a piece.
    device: Vec<u8>,
    /// Its last bytes, to tell a finished stream from one cut short.
    tail: DeviceTail,
    /// What QEMU wrote, for the destination end to check what it rebuilt against.
    digest: StreamDigest,
    zero: Vec<u8>,
    page_size: usize,
    pfns: Option<PageNumbers>,
    /// The START section is open or not yet seen: hold everything back.
    holding: bool,
    /// A section ended: push what was written through the link's buffers (a compressing
    /// link holds bytes back until flushed).
    flush_due: bool,
    in_start: bool,
    carried: Carried,
}

impl<'e> Source<'e> {
    fn new(enc: &'e mut dyn StreamEncoder, page_size: usize) -> Self {
        Source {
            enc,
            out: Vec::new(),
            blob: Vec::new(),
            device: Vec::with_capacity(DEVICE_PIECE),
            tail: DeviceTail::default(),
            digest: StreamDigest::default(),
            zero: vec![0; page_size],
            page_size,
            pfns: None,
            holding: true,
            flush_due: false,
            in_start: false,
            carried: Carried::default(),
        }
    }

    fn event(&mut self, event: Event<'_>) -> Result<()> {
        match event {
            Event::Header(h) => self.item(&Item::Header(&h.raw)),
            Event::SectionBegin(s) => {
                self.in_start = matches!(s, RamSection::Start { .. });
                self.carried.sections += 1;
                self.item(&Item::Section(s))
            }
            Event::RamBlocks(blocks) => {
                self.pfns = Some(PageNumbers::new(blocks, self.page_size)?);
                for b in blocks {
                    self.item(&Item::Block(b.clone()))?;
                }
                Ok(())
            }
            Event::Page {
                block,
                offset,
                data,
            } => self.page(block, offset, data),
            Event::SectionEnd { footer } => {
                self.item(&Item::SectionEnd { footer })?;
                self.flush_due = true;
                if std::mem::take(&mut self.in_start) {
                    self.holding = false;
                }
                // the far end gets every page of the section now
                self.enc.end_iteration(&mut self.out)
            }
            Event::SwitchoverStart => {
                self.digest.switchover_start();
                self.item(&Item::SwitchoverStart)
            }
            Event::DeviceState(mut bytes) => {
                self.carried.device_bytes += bytes.len() as u64;
                self.tail.push(bytes);
                self.digest.device(bytes);
                while !bytes.is_empty() {
                    let take = (DEVICE_PIECE - self.device.len()).min(bytes.len());
                    self.device.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if self.device.len() == DEVICE_PIECE {
                        self.flush_device()?;
                    }
                }
                Ok(())
            }
        }
    }

    fn page(&mut self, block: usize, offset: u64, data: PageData<'_>) -> Result<()> {
        let Some(pfns) = &self.pfns else {
            bail!("a page before the RAM block list");
        };
        let pfn = pfns.pfn(block, offset)?;
        self.digest.page(block, offset, &data);
        let block = block as u32;
        match data {
            PageData::Raw(page) => {
                self.carried.raw_pages += 1;
                self.enc.encode_page(pfn, page, &mut self.out)
            }
            PageData::Fill(0) => {
                self.carried.zero_pages += 1;
                self.enc.encode_page(pfn, &self.zero, &mut self.out)
            }
            PageData::Fill(byte) => {
                self.carried.fill_pages += 1;
                self.item(&Item::Fill {
                    block,
                    offset,
                    byte,
                })
            }
            PageData::Xbzrle(delta) => {
                self.carried.xbzrle_pages += 1;
                self.item(&Item::Xbzrle {
                    block,
                    offset,
                    delta,
                })
            }
        }
    }

    fn item(&mut self, item: &Item<'_>) -> Result<()> {
        let tag = item.encode(&mut self.blob);
        self.enc.append_blob(tag, &self.blob, &mut self.out)
    }

    fn flush_device(&mut self) -> Result<()> {
        if self.device.is_empty() {
            return Ok(());
        }
        let piece = std::mem::take(&mut self.device);
        self.item(&Item::Device(&piece))?;
        self.device = piece;
        self.device.clear();
        Ok(())
    }

    /// Writes what the encoder finished, unless the START section is still to come.
    fn send<W: Write + ?Sized>(&mut self, link: &mut W) -> Result<()> {
        if self.holding || self.out.is_empty() {
            return Ok(());
        }
        link.write_all(&self.out)
            .context("sending to the tunnel's destination end")?;
        self.carried.stream_bytes += self.out.len() as u64;
        self.out.clear();
        if std::mem::take(&mut self.flush_due) {
            link.flush()
                .context("sending to the tunnel's destination end")?;
        }
        Ok(())
    }

    /// Ends the pagewire stream after a complete QEMU stream.
    fn end<W: Write + ?Sized>(&mut self, link: &mut W) -> Result<()> {
        if !self.tail.complete() {
            bail!(
                "QEMU's migration stream ended inside its device state (no end marker): the \
                 source QEMU's migration failed or was cancelled"
            );
        }
        self.flush_device()?;
        let digest = self.digest.value();
        self.item(&Item::Digest(digest))?;
        self.enc.finish(&mut self.out)?;
        self.holding = false;
        self.send(link)?;
        link.flush()
            .context("sending to the tunnel's destination end")?;
        Ok(())
    }
}
