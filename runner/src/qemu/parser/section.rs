//! Section headers and footers. START and FULL sections carry a 32-bit section id, a
//! length-prefixed idstr, a 32-bit instance id and a 32-bit version; PART and END only the
//! id. Only `ram` may iterate; the first FULL section (or EOF) after RAM's END section
//! starts the device state, which is passed on unparsed.

use super::{be32, send, FeedError, Machine, Sink, State};
use crate::qemu::error::StreamError;
use crate::qemu::event::{Event, RamSection};
use crate::qemu::format::{item, ram_section, SWITCHOVER_START};

impl Machine {
    /// The byte that starts a top-level item after the header: sends the header first if
    /// this is the first section.
    pub(super) fn section_type<E>(
        &mut self,
        byte: u8,
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        if !self.header_sent {
            self.header_sent = true;
            send(sink, Event::Header(&self.header))?;
        }
        match byte {
            item::SECTION_START | item::SECTION_PART | item::SECTION_END => {
                Ok(State::SectionId(byte))
            }
            item::SECTION_FULL | item::EOF => {
                if !self.ram_ended {
                    return Err(FeedError::Stream(StreamError::DeviceStateBeforeRamEnd));
                }
                send(sink, Event::DeviceState(&[byte]))?;
                Ok(State::Device)
            }
            item::COMMAND => Ok(State::CommandHead),
            _ => Err(FeedError::Stream(StreamError::UnknownSectionType { byte })),
        }
    }

    /// A command's number and length. Only QEMU 10's SWITCHOVER_START (no payload) is
    /// carried, and only where QEMU writes it: inside RAM's iterations, before its END
    /// section; every other command changes how the stream must be read and is refused.
    pub(super) fn command<E>(
        &mut self,
        b: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        let cmd = u16::from_be_bytes([b[0], b[1]]);
        let len = u16::from_be_bytes([b[2], b[3]]);
        if cmd == SWITCHOVER_START && len == 0 && self.ram_id.is_some() && !self.ram_ended {
            send(sink, Event::SwitchoverStart)?;
            return Ok(State::SectionType);
        }
        Err(FeedError::Stream(StreamError::Command { cmd }))
    }

    /// The section id (and for START the idstr's length).
    pub(super) fn section_id<E>(
        &mut self,
        kind: u8,
        b: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        let id = be32(b);
        if kind == item::SECTION_START {
            return Ok(State::SectionName { id, len: b[4] });
        }
        let Some(ram_id) = self.ram_id else {
            return Err(FeedError::Stream(StreamError::SectionBeforeRamStart { id }));
        };
        if id != ram_id {
            return Err(FeedError::Stream(StreamError::UnknownSection { id }));
        }
        if self.ram_ended {
            return Err(FeedError::Stream(StreamError::SectionAfterRamEnd { id }));
        }
        let section = if kind == item::SECTION_END {
            self.ram_ended = true;
            RamSection::End { id }
        } else {
            RamSection::Part { id }
        };
        self.open = Some(kind);
        send(sink, Event::SectionBegin(section))?;
        Ok(State::Record)
    }

    /// A START section's idstr, instance id and version: only `ram`, version 4, once.
    pub(super) fn section_name<E>(
        &mut self,
        id: u32,
        len: u8,
        b: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        let (name, rest) = b.split_at(len as usize);
        if name != ram_section::NAME {
            return Err(FeedError::Stream(StreamError::IterableSection {
                name: String::from_utf8_lossy(name).into_owned(),
            }));
        }
        if self.ram_id.is_some() {
            return Err(FeedError::Stream(StreamError::RepeatedRamStart));
        }
        let instance_id = be32(&rest[..4]);
        let version_id = be32(&rest[4..]);
        if version_id != ram_section::VERSION {
            return Err(FeedError::Stream(StreamError::RamVersion {
                version: version_id,
            }));
        }
        self.ram_id = Some(id);
        self.open = Some(item::SECTION_START);
        let section = RamSection::Start {
            id,
            instance_id,
            version_id,
        };
        send(sink, Event::SectionBegin(section))?;
        Ok(State::Record)
    }

    /// The byte after a section's end-of-section record: a footer, or (for a machine type
    /// without footers) the next section's type.
    pub(super) fn footer<E>(
        &mut self,
        byte: u8,
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        if byte == item::SECTION_FOOTER {
            if self.footers == Some(false) {
                return Err(FeedError::Stream(StreamError::FooterInconsistent));
            }
            return Ok(State::FooterId);
        }
        if self.footers == Some(true) {
            return Err(FeedError::Stream(StreamError::FooterInconsistent));
        }
        self.footers = Some(false);
        self.close_section(false, sink)?;
        self.section_type(byte, sink)
    }

    pub(super) fn footer_id<E>(
        &mut self,
        b: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        let found = be32(b);
        let expected = self.ram_id.unwrap_or(u32::MAX);
        if found != expected {
            return Err(FeedError::Stream(StreamError::FooterMismatch {
                found,
                expected,
            }));
        }
        self.footers = Some(true);
        self.close_section(true, sink)?;
        Ok(State::SectionType)
    }

    fn close_section<E>(
        &mut self,
        footer: bool,
        sink: &mut Sink<'_, E>,
    ) -> Result<(), FeedError<E>> {
        self.open = None;
        send(sink, Event::SectionEnd { footer })
    }
}
