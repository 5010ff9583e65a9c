//! Streams written byte by byte from the format's rules, for the tests.

use crate::qemu::format::{flag, item, SWITCHOVER_START};

pub const PAGE: usize = 4096;
pub const RAM_ID: u32 = 2;

/// A stream under construction.
#[derive(Clone, Default)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    pub fn be16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn be32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn be64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    /// A length byte and the name.
    pub fn name(self, n: &str) -> Self {
        self.u8(n.len() as u8).bytes(n.as_bytes())
    }

    /// Magic and version 3.
    pub fn magic() -> Self {
        Raw::default().be32(0x5145_564d).be32(3)
    }
    /// Magic, version and a configuration record naming `machine`.
    pub fn header(machine: &str) -> Self {
        Raw::magic()
            .u8(item::CONFIGURATION)
            .be32(machine.len() as u32)
            .bytes(machine.as_bytes())
    }
    /// A configuration subsection's head.
    pub fn subsection(self, name: &str) -> Self {
        self.u8(item::SUBSECTION).name(name).be32(1)
    }
    /// START of `ram` with its header fields.
    pub fn start(self, id: u32, version: u32) -> Self {
        self.u8(item::SECTION_START)
            .be32(id)
            .name("ram")
            .be32(0)
            .be32(version)
    }
    /// The block list record.
    pub fn blocks(self, blocks: &[(&str, u64)]) -> Self {
        let total: u64 = blocks.iter().map(|b| b.1).sum();
        let mut s = self.be64(total | flag::MEM_SIZE);
        for (n, len) in blocks {
            s = s.name(n).be64(*len);
        }
        s
    }
    pub fn part(self, id: u32) -> Self {
        self.u8(item::SECTION_PART).be32(id)
    }
    pub fn end(self, id: u32) -> Self {
        self.u8(item::SECTION_END).be32(id)
    }
    /// QEMU 10's SWITCHOVER_START command (no payload).
    pub fn switchover_start(self) -> Self {
        self.u8(item::COMMAND).be16(SWITCHOVER_START).be16(0)
    }
    /// A page record's word and, unless `block` is `None` (CONTINUE), its block name.
    pub fn record(self, offset: u64, kind: u64, block: Option<&str>) -> Self {
        match block {
            Some(n) => self.be64(offset | kind).name(n),
            None => self.be64(offset | kind | flag::CONTINUE),
        }
    }
    pub fn page(self, offset: u64, block: Option<&str>, data: &[u8]) -> Self {
        self.record(offset, flag::PAGE, block).bytes(data)
    }
    pub fn zero(self, offset: u64, block: Option<&str>) -> Self {
        self.record(offset, flag::ZERO, block).u8(0)
    }
    pub fn xbzrle(self, offset: u64, block: Option<&str>, delta: &[u8]) -> Self {
        self.record(offset, flag::XBZRLE, block)
            .u8(1)
            .be16(delta.len() as u16)
            .bytes(delta)
    }
    /// End of section and a footer.
    pub fn eos(self, id: u32, footer: bool) -> Self {
        let s = self.be64(flag::EOS);
        if footer {
            s.u8(item::SECTION_FOOTER).be32(id)
        } else {
            s
        }
    }
}

/// A page of `b` bytes with a marker at its start.
pub fn page_of(b: u8) -> Vec<u8> {
    let mut p = vec![b; PAGE];
    p[..4].copy_from_slice(b"PAGE");
    p
}

/// A valid XBZRLE delta turning `page_of(old)` into `page_of(old)` with bytes 100..108 set
/// to `new`.
pub fn delta(old: u8, new: u8) -> Vec<u8> {
    let before = page_of(old);
    let mut after = before.clone();
    after[100..108].fill(new);
    let mut out = vec![0; PAGE];
    let n = pagewire::xbzrle::encode(&after, &before, &mut out, PAGE).expect("fits");
    out.truncate(n);
    out
}

/// The device state the samples end with: a FULL section, EOF and a VM description, as
/// opaque bytes.
pub fn device_tail() -> Vec<u8> {
    let mut t = Raw::default()
        .u8(item::SECTION_FULL)
        .be32(3)
        .name("timer")
        .be32(0)
        .be32(2)
        .bytes(&[1, 2, 3, 4, 5, 6, 7, 8])
        .u8(item::SECTION_FOOTER)
        .be32(3)
        .u8(item::EOF)
        .u8(item::VMDESCRIPTION);
    let json = br#"{"page_size": 4096, "devices": []}"#;
    t = t.be32(json.len() as u32).bytes(json);
    t.0
}

/// The blocks of the samples.
pub const BLOCKS: &[(&str, u64)] = &[
    ("pc.ram", 4 * PAGE as u64),
    ("/rom@etc/acpi/tables", PAGE as u64),
];

/// A valid stream: START with two blocks; a PART with a named page, a CONTINUE zero page
/// and a page of the other block; a PART whose first record continues the previous
/// section's block, with an XBZRLE page; an END with the stop-and-copy pages; the device
/// state.
pub fn sample(config: bool, footers: bool) -> Vec<u8> {
    sample_stream(config, footers, false)
}

fn sample_stream(config: bool, footers: bool, switchover_start: bool) -> Vec<u8> {
    let s = if config {
        Raw::header("pc-i440fx-7.2")
    } else {
        Raw::magic()
    };
    let s = s
        .start(RAM_ID, 4)
        .blocks(BLOCKS)
        .eos(RAM_ID, footers)
        .part(RAM_ID)
        .page(0, Some("pc.ram"), &page_of(1))
        .zero(PAGE as u64, None)
        .page(0, Some("/rom@etc/acpi/tables"), &page_of(2))
        .eos(RAM_ID, footers)
        .part(RAM_ID)
        .page(0, None, &page_of(3))
        .xbzrle(0, Some("pc.ram"), &delta(1, 9))
        .page(3 * PAGE as u64, None, &page_of(4))
        .eos(RAM_ID, footers);
    let s = if switchover_start {
        s.switchover_start()
    } else {
        s
    };
    s.end(RAM_ID)
        .page(2 * PAGE as u64, Some("pc.ram"), &page_of(5))
        .eos(RAM_ID, footers)
        .bytes(&device_tail())
        .0
}

/// The sample as QEMU 10 writes it on machine types that ask for it: SWITCHOVER_START
/// between the last PART section and the END section.
pub fn sample_with_switchover_start() -> Vec<u8> {
    sample_stream(true, true, true)
}

/// The sample's prefix up to and including the START section.
pub fn prefix() -> Raw {
    Raw::header("pc-i440fx-7.2")
        .start(RAM_ID, 4)
        .blocks(BLOCKS)
        .eos(RAM_ID, true)
}
