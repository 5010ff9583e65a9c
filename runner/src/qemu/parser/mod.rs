//! The incremental parser: fed bytes as they arrive, in pieces of any size, it hands out
//! [`Event`]s. It keeps at most one item (a page, a name) of a piece that split it, the
//! block list and a page of scratch: never the stream.
//!
//! Each state needs a fixed number of bytes, known when the state is entered; `feed` takes
//! them straight from the input when they are there (no copy) and gathers them in
//! `pending` when a piece ends inside the item. The steps live beside this file:
//! `header.rs` (magic, version, configuration record), `section.rs` (section headers,
//! footers, the switch to device state), `record.rs` (RAM records: the block list and the
//! pages).

mod header;
mod record;
mod section;

use super::error::{FeedError, StreamError};
use super::event::{Event, RamBlock, StreamHeader};

/// The most RAM blocks a stream may list (a PC guest has about ten; each memory device
/// adds one). Bounds the block list's memory to 256 KiB of names.
pub const MAX_BLOCKS: usize = 1024;

/// x86's target page size, the parser's default.
pub const DEFAULT_PAGE_SIZE: usize = 4096;

/// The parser. Feed it with [`Parser::feed`]; call [`Parser::finish`] when the stream ends.
pub struct Parser {
    pending: Vec<u8>,
    state: State,
    machine: Machine,
}

/// What the parser knows about the stream so far.
struct Machine {
    page_size: usize,
    header: StreamHeader,
    header_sent: bool,
    subsections_seen: Vec<&'static [u8]>,
    blocks: Vec<RamBlock>,
    /// Bytes of the stated RAM total the block list has not yet covered.
    list_remaining: u64,
    list_done: bool,
    ram_id: Option<u32>,
    /// The kind of the open RAM section, if one is open.
    open: Option<u8>,
    ram_ended: bool,
    /// The block of the previous page record, which CONTINUE refers to (across sections).
    last_block: Option<usize>,
    footers: Option<bool>,
    scratch: Vec<u8>,
}

/// A RAM page record whose header has been read.
#[derive(Debug, Clone, Copy)]
struct PageRecord {
    /// The kind flag (ZERO, PAGE or XBZRLE).
    kind: u64,
    offset: u64,
    block: usize,
}

/// Where the parser is; each state needs [`State::need`] bytes.
#[derive(Debug, Clone)]
enum State {
    Magic,
    ConfigOrSection,
    ConfigLen,
    ConfigName(u32),
    ConfigNext,
    SubsectionNameLen,
    SubsectionName(u8),
    TargetPageBits,
    Uuid,
    CapabilityCount,
    CapabilityLen,
    CapabilityName(u8),
    SectionType,
    SectionId(u8),
    SectionName { id: u32, len: u8 },
    CommandHead,
    Record,
    ListNameLen,
    ListEntry(u8),
    BlockNameLen { kind: u64, offset: u64 },
    BlockName { kind: u64, offset: u64, len: u8 },
    Payload(PageRecord),
    XbzrleData(PageRecord, u16),
    Footer,
    FooterId,
    Device,
    Failed(StreamError),
}

impl State {
    fn need(&self, page_size: usize) -> usize {
        match *self {
            State::Magic => 8,
            State::ConfigLen | State::TargetPageBits | State::CapabilityCount => 4,
            State::ConfigName(n) => n as usize,
            State::SubsectionName(n) => n as usize + 4,
            State::Uuid => 16,
            State::CapabilityName(n) => n as usize,
            State::SectionId(kind) => {
                if kind == super::format::item::SECTION_START {
                    5
                } else {
                    4
                }
            }
            State::SectionName { len, .. } => len as usize + 8,
            State::CommandHead => 4,
            State::Record => 8,
            State::ListEntry(n) => n as usize + 8,
            State::BlockName { len, .. } => len as usize,
            State::Payload(rec) => match rec.kind {
                super::format::flag::PAGE => page_size,
                super::format::flag::XBZRLE => 3,
                _ => 1,
            },
            State::XbzrleData(_, n) => n as usize,
            State::FooterId => 4,
            State::ConfigOrSection
            | State::ConfigNext
            | State::SubsectionNameLen
            | State::CapabilityLen
            | State::SectionType
            | State::ListNameLen
            | State::BlockNameLen { .. }
            | State::Footer => 1,
            // Not reached: `feed` handles these before asking.
            State::Device | State::Failed(_) => 0,
        }
    }

    /// What the stream was in the middle of, for [`StreamError::Truncated`].
    fn inside(&self) -> &'static str {
        match self {
            State::Magic => "the header",
            State::ConfigOrSection
            | State::ConfigLen
            | State::ConfigName(_)
            | State::ConfigNext
            | State::SubsectionNameLen
            | State::SubsectionName(_)
            | State::TargetPageBits
            | State::Uuid
            | State::CapabilityCount
            | State::CapabilityLen
            | State::CapabilityName(_) => "the configuration record",
            State::SectionType | State::SectionId(_) | State::SectionName { .. } => {
                "a section header (before the device state)"
            }
            State::CommandHead => "a command",
            State::ListNameLen | State::ListEntry(_) => "the RAM block list",
            State::Record
            | State::BlockNameLen { .. }
            | State::BlockName { .. }
            | State::Payload(_)
            | State::XbzrleData(..) => "a RAM section",
            State::Footer | State::FooterId => "a section footer",
            State::Device | State::Failed(_) => "the device state",
        }
    }
}

/// The sink's type: called with each event in stream order.
type Sink<'s, E> = dyn FnMut(Event<'_>) -> Result<(), E> + 's;

impl Parser {
    /// A parser for x86 guests (4 KiB target pages).
    pub fn new() -> Self {
        Self::with_page_size(DEFAULT_PAGE_SIZE).expect("4096 is a valid page size")
    }

    /// A parser for a target page size of `page_size` bytes (a power of two from 1 KiB to
    /// 64 KiB); `None` for any other size.
    pub fn with_page_size(page_size: usize) -> Option<Self> {
        if !page_size.is_power_of_two() || !(1024..=65536).contains(&page_size) {
            return None;
        }
        Some(Parser {
            pending: Vec::with_capacity(page_size),
            state: State::Magic,
            machine: Machine {
                page_size,
                header: StreamHeader::default(),
                header_sent: false,
                subsections_seen: Vec::new(),
                blocks: Vec::new(),
                list_remaining: 0,
                list_done: false,
                ram_id: None,
                open: None,
                ram_ended: false,
                last_block: None,
                footers: None,
                scratch: vec![0; page_size],
            },
        })
    }

    /// The target page size.
    pub fn page_size(&self) -> usize {
        self.machine.page_size
    }

    /// The RAM block list (empty until the START section's list was read).
    pub fn blocks(&self) -> &[RamBlock] {
        &self.machine.blocks
    }

    /// Bytes of memory the parser holds: its buffers and the block list. Bounded by the
    /// page size and [`MAX_BLOCKS`], whatever the stream's length.
    pub fn held_bytes(&self) -> usize {
        let m = &self.machine;
        let names: usize = m.blocks.iter().map(|b| b.name.capacity()).sum();
        self.pending.capacity()
            + m.scratch.capacity()
            + m.header.raw.capacity()
            + m.blocks.capacity() * std::mem::size_of::<RamBlock>()
            + names
    }

    /// Whether the parser has reached the device state (the opaque tail).
    pub fn in_device_state(&self) -> bool {
        matches!(self.state, State::Device)
    }

    /// Parses the next piece of the stream, calling `sink` with each event it completes.
    /// Any error stops the parser for good.
    pub fn feed<E>(
        &mut self,
        mut input: &[u8],
        mut sink: impl FnMut(Event<'_>) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        let Parser {
            pending,
            state,
            machine,
        } = self;
        if let State::Failed(e) = state {
            return Err(FeedError::Stream(e.clone()));
        }
        while !input.is_empty() {
            if let State::Device = state {
                let sent = sink(Event::DeviceState(input));
                return sent.map_err(|e| {
                    *state = State::Failed(StreamError::Abandoned);
                    FeedError::Sink(e)
                });
            }
            let need = state.need(machine.page_size);
            let bytes: &[u8] = if pending.is_empty() && input.len() >= need {
                let (now, rest) = input.split_at(need);
                input = rest;
                now
            } else {
                let take = (need - pending.len()).min(input.len());
                pending.extend_from_slice(&input[..take]);
                input = &input[take..];
                if pending.len() < need {
                    return Ok(());
                }
                pending
            };
            let current = std::mem::replace(state, State::Failed(StreamError::Abandoned));
            match machine.step(current, bytes, &mut sink) {
                Ok(next) => *state = next,
                Err(FeedError::Stream(e)) => {
                    *state = State::Failed(e.clone());
                    return Err(FeedError::Stream(e));
                }
                Err(sink_error) => return Err(sink_error),
            }
            pending.clear();
        }
        Ok(())
    }

    /// Checks that the stream ended where a stream may end: in the device state.
    pub fn finish(&self) -> Result<(), StreamError> {
        match &self.state {
            State::Device => Ok(()),
            State::Failed(e) => Err(e.clone()),
            other => Err(StreamError::Truncated {
                inside: other.inside(),
            }),
        }
    }
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    /// One item: `bytes` is exactly what `state` needed. Returns the next state.
    fn step<E>(
        &mut self,
        state: State,
        bytes: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        match state {
            State::Magic => self.magic(bytes).map_err(FeedError::Stream),
            State::ConfigOrSection => self.config_or_section(bytes[0], sink),
            State::ConfigLen => self.config_len(bytes).map_err(FeedError::Stream),
            State::ConfigName(_) => Ok(self.config_name(bytes)),
            State::ConfigNext => self.config_next(bytes[0], sink),
            State::SubsectionNameLen => Ok(self.subsection_name_len(bytes[0])),
            State::SubsectionName(_) => self.subsection_name(bytes).map_err(FeedError::Stream),
            State::TargetPageBits => self.target_page_bits(bytes).map_err(FeedError::Stream),
            State::Uuid => Ok(self.uuid(bytes)),
            State::CapabilityCount => self.capability_count(bytes).map_err(FeedError::Stream),
            State::CapabilityLen => self.capability_len(bytes[0]).map_err(FeedError::Stream),
            State::CapabilityName(_) => Err(FeedError::Stream(self.capability_name(bytes))),
            State::SectionType => self.section_type(bytes[0], sink),
            State::SectionId(kind) => self.section_id(kind, bytes, sink),
            State::SectionName { id, len } => self.section_name(id, len, bytes, sink),
            State::CommandHead => self.command(bytes, sink),
            State::Record => self.record(bytes, sink),
            State::ListNameLen => self.list_name_len(bytes[0]).map_err(FeedError::Stream),
            State::ListEntry(_) => self.list_entry(bytes, sink),
            State::BlockNameLen { kind, offset } => self
                .block_name_len(kind, offset, bytes[0])
                .map_err(FeedError::Stream),
            State::BlockName { kind, offset, .. } => self
                .block_name(kind, offset, bytes)
                .map_err(FeedError::Stream),
            State::Payload(rec) => self.payload(rec, bytes, sink),
            State::XbzrleData(rec, _) => self.xbzrle_data(rec, bytes, sink),
            State::Footer => self.footer(bytes[0], sink),
            State::FooterId => self.footer_id(bytes, sink),
            // `feed` never steps these; refusing keeps a mistake here from passing bytes on.
            State::Device | State::Failed(_) => Err(FeedError::Stream(StreamError::Abandoned)),
        }
    }
}

/// Sends `event` to the sink, wrapping its error.
fn send<E>(sink: &mut Sink<'_, E>, event: Event<'_>) -> Result<(), FeedError<E>> {
    sink(event).map_err(FeedError::Sink)
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}
