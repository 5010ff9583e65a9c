//! What the parser hands out and the emitter takes: the stream as a sequence of events,
//! borrowing page contents and device bytes from the input where it can.

/// The stream's header: version, configuration record and the raw bytes of both, which
/// the emitter writes back unchanged (the destination checks the machine type itself).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamHeader {
    /// The machine type (`pc-i440fx-7.2`), if the stream has a configuration record.
    pub machine_type: Option<Vec<u8>>,
    /// The configuration's target page bits, if it carries them.
    pub target_page_bits: Option<u32>,
    /// The configuration's UUID, if it carries one (`validate-uuid`).
    pub uuid: Option<[u8; 16]>,
    /// The bytes from the magic to the end of the configuration record.
    pub raw: Vec<u8>,
}

/// One RAM block of the START section's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamBlock {
    /// QEMU's idstr (`pc.ram`, `/rom@etc/acpi/tables`, ...): 1 to 255 bytes.
    pub name: Vec<u8>,
    /// Bytes in use, a whole number of target pages.
    pub length: u64,
}

impl RamBlock {
    /// The name for messages.
    pub fn name_lossy(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }
}

/// Which RAM section begins, with the fields of its section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamSection {
    /// The setup section: the block list follows.
    Start {
        id: u32,
        instance_id: u32,
        version_id: u32,
    },
    /// A pass (or part of one) of pre-copy.
    Part { id: u32 },
    /// The stop-and-copy pass.
    End { id: u32 },
}

/// A page's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageData<'a> {
    /// The whole page (target page size).
    Raw(&'a [u8]),
    /// Every byte of the page is this one (QEMU's zero page; sources write 0).
    Fill(u8),
    /// An XBZRLE delta against the previous version of the page, checked against QEMU's
    /// grammar and the page size; passed through (see `docs/TUNNEL.md`).
    Xbzrle(&'a [u8]),
}

/// One event of a stream, in stream order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The header and configuration record; first, once.
    Header(&'a StreamHeader),
    /// A RAM section begins.
    SectionBegin(RamSection),
    /// The START section's block list.
    RamBlocks(&'a [RamBlock]),
    /// A page of block `block` (an index into the block list) at byte `offset`.
    Page {
        block: usize,
        offset: u64,
        data: PageData<'a>,
    },
    /// The open RAM section ends (its end-of-section record), with or without a footer.
    SectionEnd { footer: bool },
    /// QEMU 10's SWITCHOVER_START command: the stop-and-copy begins (between RAM's last PART
    /// section and its END section).
    SwitchoverStart,
    /// The next bytes of the device state: everything from the first section after RAM's
    /// END section to the end of the stream, in order, in pieces of any size.
    DeviceState(&'a [u8]),
}

/// An [`Event`] that owns its bytes, for tests and comparisons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedEvent {
    Header(StreamHeader),
    SectionBegin(RamSection),
    RamBlocks(Vec<RamBlock>),
    Page {
        block: usize,
        offset: u64,
        data: OwnedPageData,
    },
    SectionEnd {
        footer: bool,
    },
    SwitchoverStart,
    DeviceState(Vec<u8>),
}

/// A [`PageData`] that owns its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedPageData {
    Raw(Vec<u8>),
    Fill(u8),
    Xbzrle(Vec<u8>),
}

impl Event<'_> {
    /// A copy that owns its bytes.
    pub fn to_owned_event(self) -> OwnedEvent {
        match self {
            Event::Header(h) => OwnedEvent::Header(h.clone()),
            Event::SectionBegin(s) => OwnedEvent::SectionBegin(s),
            Event::RamBlocks(b) => OwnedEvent::RamBlocks(b.to_vec()),
            Event::Page {
                block,
                offset,
                data,
            } => OwnedEvent::Page {
                block,
                offset,
                data: match data {
                    PageData::Raw(p) => OwnedPageData::Raw(p.to_vec()),
                    PageData::Fill(b) => OwnedPageData::Fill(b),
                    PageData::Xbzrle(x) => OwnedPageData::Xbzrle(x.to_vec()),
                },
            },
            Event::SectionEnd { footer } => OwnedEvent::SectionEnd { footer },
            Event::SwitchoverStart => OwnedEvent::SwitchoverStart,
            Event::DeviceState(d) => OwnedEvent::DeviceState(d.to_vec()),
        }
    }
}

impl OwnedEvent {
    /// The borrowed form, to hand to the emitter.
    pub fn as_event(&self) -> Event<'_> {
        match self {
            OwnedEvent::Header(h) => Event::Header(h),
            OwnedEvent::SectionBegin(s) => Event::SectionBegin(*s),
            OwnedEvent::RamBlocks(b) => Event::RamBlocks(b),
            OwnedEvent::Page {
                block,
                offset,
                data,
            } => Event::Page {
                block: *block,
                offset: *offset,
                data: match data {
                    OwnedPageData::Raw(p) => PageData::Raw(p),
                    OwnedPageData::Fill(b) => PageData::Fill(*b),
                    OwnedPageData::Xbzrle(x) => PageData::Xbzrle(x),
                },
            },
            OwnedEvent::SectionEnd { footer } => Event::SectionEnd { footer: *footer },
            OwnedEvent::SwitchoverStart => Event::SwitchoverStart,
            OwnedEvent::DeviceState(d) => Event::DeviceState(d),
        }
    }
}

/// Events with consecutive device-state pieces joined, so that two parses of one stream
/// fed in different chunk sizes compare equal.
pub fn join_device_state(events: Vec<OwnedEvent>) -> Vec<OwnedEvent> {
    let mut out: Vec<OwnedEvent> = Vec::with_capacity(events.len());
    for e in events {
        match (out.last_mut(), e) {
            (Some(OwnedEvent::DeviceState(acc)), OwnedEvent::DeviceState(more)) => {
                acc.extend_from_slice(&more)
            }
            (_, e) => out.push(e),
        }
    }
    out
}
