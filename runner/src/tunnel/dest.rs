//! The tunnel's destination end, its data path: decodes the pagewire stream from the link
//! and writes a QEMU migration stream into the destination QEMU's `-incoming`: the header
//! and the START section as the source QEMU wrote them, each page in the section it came
//! in (raw, zero, fill byte or XBZRLE, as it left the source end), the device state as it
//! came.
//!
//! The destination QEMU is connected only when the stream's first item (QEMU's header)
//! arrives, so a migration the source end refused never reaches it. Any error (a bad frame,
//! an item out of place, a stream without its END record) drops the connection to QEMU
//! before its stream is complete, so QEMU fails its incoming migration: it never loads a
//! guest from half a stream. Writes wait for QEMU, and the link is read only as fast as
//! QEMU takes the stream.

use std::io::{self, BufWriter, Read, Write};

use anyhow::{anyhow, bail, ensure, Context, Result};
use pagewire::{Config, DecodeMode, Decoder, Destination, Error, HEADER_LEN};
use serde::Serialize;

use super::digest::StreamDigest;
use super::items::Item;
use super::pfns::PageNumbers;
use crate::migrate::dest::decode_frame;
use crate::migrate::session::unix_us;
use crate::qemu::format::item;
use crate::qemu::{
    Emitter, Event, FeedError, PageData, Parser, RamBlock, RamSection, StreamHeader,
};

/// What the destination end carried.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Delivered {
    /// Bytes of pagewire stream decoded.
    pub stream_bytes: u64,
    /// Bytes of QEMU stream written to the destination QEMU.
    pub qemu_bytes: u64,
    /// Pages written (raw, zero, fill and XBZRLE).
    pub pages: u64,
    /// Bytes of device state.
    pub device_bytes: u64,
    /// Decoder storage (cache copy).
    pub decoder_storage_bytes: usize,
    /// When QEMU had the last byte of its stream (microseconds since the Unix epoch; 0
    /// before).
    pub qemu_fed_unix_us: u64,
}

/// Largest decoder cache a stream may ask of the destination end, unless told otherwise.
pub const DEFAULT_MAX_CACHE: u64 = 1 << 30;

/// Opens the connection to the destination QEMU, when the stream's first item arrives.
pub type ConnectQemu<'c> = &'c mut dyn FnMut() -> Result<Box<dyn Write>>;

/// Decodes the pagewire stream on `link` up to its END record and writes the QEMU stream
/// it carries to the connection `connect` opens. Returns once the whole QEMU stream was
/// handed to QEMU; the connection is closed then (QEMU reads to its end).
pub fn carry_in<R: Read + ?Sized>(
    link: &mut R,
    connect: ConnectQemu<'_>,
    max_cache: u64,
    progress: &mut dyn FnMut(&Delivered),
) -> Result<Delivered> {
    let mut header = [0u8; HEADER_LEN];
    link.read_exact(&mut header)
        .context("reading the pagewire stream header")?;
    let cfg = Config::from_header(&header).map_err(|e| anyhow!("bad stream header: {e}"))?;
    ensure!(
        cfg.cache_len() as u64 <= max_cache,
        "the stream asks for a {} MiB decoder cache, more than the {} MiB this end accepts \
         (--max-cache-mib)",
        cfg.cache_len() >> 20,
        max_cache >> 20
    );
    let mode = DecodeMode::CacheCopy;
    let storage_bytes = cfg.decoder_storage_len_for(mode);
    let mut storage = vec![0u8; storage_bytes];
    let (mut dec, _) = Decoder::from_header(&header, mode, &mut storage)
        .map_err(|e| anyhow!("bad stream header: {e}"))?;
    let mut frame = vec![0u8; cfg.max_frame_len()];
    let mut rebuild = Rebuild::new(connect, cfg.page_size as usize);
    rebuild.delivered.stream_bytes = HEADER_LEN as u64;
    rebuild.delivered.decoder_storage_bytes = storage_bytes;
    while !dec.is_complete() {
        let n = decode_frame(link, &mut dec, &mut frame, &mut rebuild);
        rebuild.check()?;
        rebuild.delivered.stream_bytes += n?;
        progress(&rebuild.delivered);
    }
    rebuild.finish()
}

/// Counts what goes to QEMU.
struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type QemuOut = Emitter<BufWriter<Counting<Box<dyn Write>>>>;

/// The decoder's destination: one staging page, and the QEMU stream being written.
struct Rebuild<'c> {
    connect: ConnectQemu<'c>,
    out: Option<QemuOut>,
    page_size: usize,
    staging: Vec<u8>,
    zero: bool,
    /// The START section's blocks as they arrive, and their page numbers once complete.
    blocks: Vec<RamBlock>,
    in_start: bool,
    pfns: Option<PageNumbers>,
    ram_ended: bool,
    ended: bool,
    /// The first thing that went wrong; everything after it is ignored.
    failed: Option<anyhow::Error>,
    delivered: Delivered,
    /// What QEMU is given, for the check against the source end's digest.
    digest: StreamDigest,
    /// The device state's last bytes (QEMU's EOF marker among them), held back until the
    /// digest matched: without them QEMU fails its incoming migration.
    held: Vec<u8>,
    /// The source end's digest arrived and matched.
    checked: bool,
}

/// How much of the device state's end the destination end holds back until the digest
/// matched: QEMU's EOF marker and the JSON description after it (tens of KiB) fit.
const HELD_BACK: usize = 1 << 20;

impl<'c> Rebuild<'c> {
    fn new(connect: ConnectQemu<'c>, page_size: usize) -> Self {
        Rebuild {
            connect,
            out: None,
            page_size,
            staging: vec![0; page_size],
            zero: false,
            blocks: Vec::new(),
            in_start: false,
            pfns: None,
            ram_ended: false,
            ended: false,
            failed: None,
            delivered: Delivered::default(),
            digest: StreamDigest::default(),
            held: Vec::new(),
            checked: false,
        }
    }

    fn check(&mut self) -> Result<()> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: anyhow::Error) {
        self.failed.get_or_insert(e);
    }

    fn out(&mut self) -> Result<&mut QemuOut> {
        self.out
            .as_mut()
            .ok_or_else(|| anyhow!("the stream carries RAM before QEMU's header"))
    }

    fn item(&mut self, item: Item<'_>) -> Result<()> {
        match item {
            Item::Header(raw) => {
                ensure!(self.out.is_none(), "QEMU's header arrived twice");
                let header = parse_header(raw)?;
                let qemu = (self.connect)().context("connecting to the destination QEMU")?;
                let writer = BufWriter::with_capacity(
                    256 * 1024,
                    Counting {
                        inner: qemu,
                        bytes: 0,
                    },
                );
                let mut out = Emitter::new(writer, self.page_size);
                out.header(&header)?;
                self.out = Some(out);
            }
            Item::Section(s) => {
                ensure!(!self.ram_ended, "a RAM section after RAM's END section");
                self.in_start = matches!(s, RamSection::Start { .. });
                if matches!(s, RamSection::End { .. }) {
                    self.ram_ended = true;
                }
                ensure!(
                    self.in_start == self.pfns.is_none(),
                    "RAM sections out of order (a START section must come first, once)"
                );
                self.out()?.begin(s)?;
            }
            Item::Block(b) => {
                ensure!(self.in_start, "a RAM block outside the START section");
                ensure!(
                    self.blocks.len() < crate::qemu::MAX_BLOCKS,
                    "more than {} RAM blocks",
                    crate::qemu::MAX_BLOCKS
                );
                self.blocks.push(b);
            }
            Item::SectionEnd { footer } => {
                if std::mem::take(&mut self.in_start) {
                    let blocks = std::mem::take(&mut self.blocks);
                    self.pfns = Some(PageNumbers::new(&blocks, self.page_size)?);
                    self.out()?.blocks(&blocks)?;
                }
                let out = self.out()?;
                out.end_section(footer)?;
                // QEMU gets every page of the section now
                out.flush()?;
            }
            Item::Xbzrle {
                block,
                offset,
                delta,
            } => self.placed_page(block, offset, PageData::Xbzrle(delta))?,
            Item::Fill {
                block,
                offset,
                byte,
            } => self.placed_page(block, offset, PageData::Fill(byte))?,
            Item::SwitchoverStart => {
                ensure!(
                    self.pfns.is_some() && !self.ram_ended && !self.in_start,
                    "SWITCHOVER_START outside RAM's iterations"
                );
                self.digest.switchover_start();
                self.out()?.switchover_start()?;
            }
            Item::Device(bytes) => {
                ensure!(self.ram_ended, "device state before RAM's END section");
                ensure!(!self.checked, "device state after the stream's digest");
                self.delivered.device_bytes += bytes.len() as u64;
                self.digest.device(bytes);
                self.held.extend_from_slice(bytes);
                if self.held.len() > HELD_BACK {
                    let through = self.held.len() - HELD_BACK;
                    let older: Vec<u8> = self.held.drain(..through).collect();
                    self.out()?.device_state(&older)?;
                }
            }
            Item::Digest(theirs) => {
                ensure!(!self.checked, "the stream's digest arrived twice");
                let ours = self.digest.value();
                ensure!(
                    ours == theirs,
                    "what the tunnel rebuilt differs from what the source QEMU wrote (digest \
                     {ours:016x} here, {theirs:016x} at the source end): QEMU does not get the \
                     end of the stream, so it fails its incoming migration"
                );
                self.checked = true;
                let held = std::mem::take(&mut self.held);
                self.out()?.device_state(&held)?;
            }
        }
        Ok(())
    }

    /// A page named by block and offset, checked against the block list.
    fn placed_page(&mut self, block: u32, offset: u64, data: PageData<'_>) -> Result<()> {
        let pfns = self
            .pfns
            .as_ref()
            .ok_or_else(|| anyhow!("a page before the RAM block list"))?;
        pfns.pfn(block as usize, offset)?;
        self.delivered.pages += 1;
        self.digest.page(block as usize, offset, &data);
        self.out()?.page(block as usize, offset, data)?;
        Ok(())
    }

    /// A page the codec decoded: whole, or zero.
    fn decoded_page(&mut self, pfn: u64) -> Result<()> {
        let pfns = self
            .pfns
            .as_ref()
            .ok_or_else(|| anyhow!("a page before the RAM block list"))?;
        let (block, offset) = pfns.place(pfn)?;
        let data = if std::mem::take(&mut self.zero) {
            PageData::Fill(0)
        } else {
            PageData::Raw(&self.staging)
        };
        self.delivered.pages += 1;
        self.digest.page(block, offset, &data);
        let out = self
            .out
            .as_mut()
            .ok_or_else(|| anyhow!("the stream carries RAM before QEMU's header"))?;
        out.page(block, offset, data)?;
        Ok(())
    }

    /// Checks the stream ended where a QEMU stream may, and closes QEMU's connection.
    fn finish(mut self) -> Result<Delivered> {
        self.check()?;
        ensure!(self.ended, "the stream ended before its END record");
        ensure!(
            self.ram_ended && self.delivered.device_bytes > 0,
            "the stream ended before QEMU's device state"
        );
        ensure!(
            self.checked,
            "the stream ended without the source end's digest"
        );
        let out = self
            .out
            .take()
            .expect("device state came, so QEMU is connected");
        let mut counting = out
            .into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .context("writing to the destination QEMU")?;
        counting
            .flush()
            .context("writing to the destination QEMU")?;
        self.delivered.qemu_bytes = counting.bytes;
        self.delivered.qemu_fed_unix_us = unix_us();
        Ok(self.delivered)
    }

    /// The pfn's page has a place in the block list; else the decoder's error.
    fn check_pfn(&mut self, pfn: u64) -> pagewire::Result<()> {
        match &self.pfns {
            Some(p) if pfn < p.pages() => Ok(()),
            _ => {
                self.fail(anyhow!(
                    "the stream carries page {pfn}, outside QEMU's RAM blocks"
                ));
                Err(Error::PfnOutOfRange { pfn })
            }
        }
    }
}

impl Destination for Rebuild<'_> {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        self.check_pfn(pfn)?;
        self.zero = false;
        Ok(&mut self.staging)
    }

    fn zero_page(&mut self, pfn: u64, _page_size: usize) -> pagewire::Result<()> {
        self.check_pfn(pfn)?;
        self.zero = true;
        Ok(())
    }

    fn page_done(&mut self, pfn: u64) {
        if self.failed.is_none() {
            if let Err(e) = self.decoded_page(pfn) {
                self.fail(e);
            }
        }
    }

    fn blob(&mut self, tag: u32, data: &[u8]) {
        if self.failed.is_none() {
            if let Err(e) = Item::decode(tag, data).and_then(|item| self.item(item)) {
                self.fail(e);
            }
        }
    }

    fn end_of_stream(&mut self) {
        self.ended = true;
    }
}

/// QEMU's header and configuration record, checked by the stream parser. The record has
/// no end marker, so a START section's first byte follows it, as in every stream.
fn parse_header(raw: &[u8]) -> Result<StreamHeader> {
    let mut parser = Parser::new();
    let mut header = None;
    for piece in [raw, &[item::SECTION_START]] {
        parser
            .feed(piece, |e| match e {
                Event::Header(h) if header.is_none() => {
                    header = Some(h.clone());
                    Ok(())
                }
                _ => Err(()),
            })
            .map_err(|e| match e {
                FeedError::Stream(s) => {
                    anyhow!(s).context("QEMU's header in the stream is refused")
                }
                FeedError::Sink(()) => anyhow!("QEMU's header in the stream has more after it"),
            })?;
    }
    match header {
        Some(h) if h.raw == raw => Ok(h),
        _ => bail!("the stream's QEMU header is incomplete or has bytes after it"),
    }
}
