//! Writes a QEMU migration stream from [`Event`]s: what the tunnel's far end will feed to
//! the destination QEMU's `-incoming`.
//!
//! The header is written as it came; the START section carries the same block list; pages
//! go into the sections the events open (a page outside any section opens a PART section,
//! so a caller may regroup pages freely), each section's first page names its block and
//! later pages of the same block use CONTINUE; every section ends with an end-of-section
//! record and, when the source wrote them, a footer; the device state follows as it came.
//! Writes straight to `out` (wrap it in a `BufWriter`); holds nothing but the block list.

use std::io::{self, Write};

use super::event::{Event, PageData, RamBlock, RamSection, StreamHeader};
use super::format::{flag, item, ram_section, SWITCHOVER_START, XBZRLE_ENCODING};

/// The emitter.
pub struct Emitter<W: Write> {
    out: W,
    page_size: usize,
    blocks: Vec<RamBlock>,
    /// RAM's section id, once the START section was written.
    ram_id: Option<u32>,
    ram_ended: bool,
    /// The section open now, and the block of its previous page.
    open: Option<Open>,
    footers: bool,
}

#[derive(Clone, Copy)]
struct Open {
    id: u32,
    last_block: Option<usize>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

impl<W: Write> Emitter<W> {
    /// An emitter for target pages of `page_size` bytes.
    pub fn new(out: W, page_size: usize) -> Self {
        Emitter {
            out,
            page_size,
            blocks: Vec::new(),
            ram_id: None,
            ram_ended: false,
            open: None,
            footers: true,
        }
    }

    /// Writes one event.
    pub fn event(&mut self, event: &Event<'_>) -> io::Result<()> {
        match *event {
            Event::Header(h) => self.header(h),
            Event::SectionBegin(s) => self.begin(s),
            Event::RamBlocks(b) => self.blocks(b),
            Event::Page {
                block,
                offset,
                data,
            } => self.page(block, offset, data),
            Event::SectionEnd { footer } => self.end_section(footer),
            Event::SwitchoverStart => self.switchover_start(),
            Event::DeviceState(d) => self.device_state(d),
        }
    }

    /// QEMU 10's SWITCHOVER_START command, between RAM sections before the END section.
    pub fn switchover_start(&mut self) -> io::Result<()> {
        if self.ram_id.is_none() || self.ram_ended || self.open.is_some() {
            return Err(invalid(
                "SWITCHOVER_START belongs between RAM sections, before the END section".into(),
            ));
        }
        self.out.write_all(&[item::COMMAND])?;
        self.out.write_all(&SWITCHOVER_START.to_be_bytes())?;
        self.out.write_all(&0u16.to_be_bytes())
    }

    /// The header and configuration record, as the source wrote them.
    pub fn header(&mut self, h: &StreamHeader) -> io::Result<()> {
        self.out.write_all(&h.raw)
    }

    /// Opens a RAM section (closing none: end the previous one first).
    pub fn begin(&mut self, section: RamSection) -> io::Result<()> {
        if self.open.is_some() {
            return Err(invalid("a RAM section begins inside another".into()));
        }
        let id = match section {
            RamSection::Start {
                id,
                instance_id,
                version_id,
            } => {
                self.out.write_all(&[item::SECTION_START])?;
                self.out.write_all(&id.to_be_bytes())?;
                self.out.write_all(&[ram_section::NAME.len() as u8])?;
                self.out.write_all(ram_section::NAME)?;
                self.out.write_all(&instance_id.to_be_bytes())?;
                self.out.write_all(&version_id.to_be_bytes())?;
                self.ram_id = Some(id);
                id
            }
            RamSection::Part { id } | RamSection::End { id } => {
                let kind = match section {
                    RamSection::End { .. } => {
                        self.ram_ended = true;
                        item::SECTION_END
                    }
                    _ => item::SECTION_PART,
                };
                self.out.write_all(&[kind])?;
                self.out.write_all(&id.to_be_bytes())?;
                id
            }
        };
        self.open = Some(Open {
            id,
            last_block: None,
        });
        Ok(())
    }

    /// The block list, inside the START section.
    pub fn blocks(&mut self, blocks: &[RamBlock]) -> io::Result<()> {
        if self.ram_id.is_none() || self.open.is_none() {
            return Err(invalid(
                "the block list belongs in the open START section".into(),
            ));
        }
        let total: u64 = blocks.iter().map(|b| b.length).sum();
        self.out
            .write_all(&(total | flag::MEM_SIZE).to_be_bytes())?;
        for b in blocks {
            let len = u8::try_from(b.name.len())
                .map_err(|_| invalid(format!("block name of {} bytes", b.name.len())))?;
            self.out.write_all(&[len])?;
            self.out.write_all(&b.name)?;
            self.out.write_all(&b.length.to_be_bytes())?;
        }
        self.blocks = blocks.to_vec();
        Ok(())
    }

    /// One page; opens a PART section if none is open.
    pub fn page(&mut self, block: usize, offset: u64, data: PageData<'_>) -> io::Result<()> {
        let Some(b) = self.blocks.get(block) else {
            return Err(invalid(format!(
                "page of block {block}, not in the block list"
            )));
        };
        if offset % self.page_size as u64 != 0 || offset >= b.length {
            return Err(invalid(format!(
                "page at 0x{offset:x} of block '{}' ({} bytes)",
                b.name_lossy(),
                b.length
            )));
        }
        let (kind, len_ok) = match data {
            PageData::Raw(p) => (flag::PAGE, p.len() == self.page_size),
            PageData::Fill(_) => (flag::ZERO, true),
            PageData::Xbzrle(x) => (
                flag::XBZRLE,
                x.len() <= self.page_size.min(u16::MAX as usize),
            ),
        };
        if !len_ok {
            return Err(invalid("page data of the wrong length".into()));
        }
        if self.open.is_none() {
            let Some(id) = self.ram_id else {
                return Err(invalid("a page before the START section".into()));
            };
            self.begin(RamSection::Part { id })?;
        }
        let Some(open) = self.open.as_mut() else {
            return Err(invalid("no RAM section is open".into()));
        };
        let same = open.last_block == Some(block);
        open.last_block = Some(block);
        let word = offset | kind | if same { flag::CONTINUE } else { 0 };
        self.out.write_all(&word.to_be_bytes())?;
        if !same {
            let name = &self.blocks[block].name;
            self.out.write_all(&[name.len() as u8])?;
            self.out.write_all(name)?;
        }
        match data {
            PageData::Raw(p) => self.out.write_all(p),
            PageData::Fill(byte) => self.out.write_all(&[byte]),
            PageData::Xbzrle(x) => {
                self.out.write_all(&[XBZRLE_ENCODING])?;
                self.out.write_all(&(x.len() as u16).to_be_bytes())?;
                self.out.write_all(x)
            }
        }
    }

    /// Ends the open section: end-of-section record, then a footer if `footer`.
    pub fn end_section(&mut self, footer: bool) -> io::Result<()> {
        let Some(open) = self.open.take() else {
            return Err(invalid("no RAM section is open".into()));
        };
        self.out.write_all(&flag::EOS.to_be_bytes())?;
        self.footers = footer;
        if footer {
            self.out.write_all(&[item::SECTION_FOOTER])?;
            self.out.write_all(&open.id.to_be_bytes())?;
        }
        Ok(())
    }

    /// Ends the RAM part with an (empty) END section if no END section was written, as
    /// the tunnel's far end will when it regroups pages. Does nothing after one.
    pub fn end_ram(&mut self) -> io::Result<()> {
        let Some(id) = self.ram_id else {
            return Err(invalid("no START section was written".into()));
        };
        if self.ram_ended {
            return Ok(());
        }
        if self.open.is_some() {
            self.end_section(self.footers)?;
        }
        self.begin(RamSection::End { id })?;
        self.end_section(self.footers)
    }

    /// The next bytes of the device state, as they came.
    pub fn device_state(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.open.is_some() {
            return Err(invalid("device state inside a RAM section".into()));
        }
        self.out.write_all(bytes)
    }

    /// Hands everything written so far to the writer's destination.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Flushes and returns the writer.
    pub fn into_inner(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}
