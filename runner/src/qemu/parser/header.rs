//! The stream's start: magic and version, then the optional configuration record (the
//! machine type as a 32-bit length and its bytes, then vmstate subsections, each a
//! `SUBSECTION` byte, a length-prefixed name, a 32-bit version and its fields). The record
//! has no end marker: the first byte that is not `SUBSECTION` starts the first section.

use super::{be32, FeedError, Machine, Sink, State};
use crate::qemu::error::StreamError;
use crate::qemu::format::{config, item, MAGIC, MULTIFD_MAGIC, VERSION};

/// Longest machine type accepted (QEMU's are about 20 bytes).
const MAX_MACHINE_TYPE: u32 = 256;
/// Most capabilities a configuration may list (QEMU 7.2 has about 25 in all).
const MAX_CAPABILITIES: u32 = 64;

impl Machine {
    pub(super) fn magic(&mut self, b: &[u8]) -> Result<State, StreamError> {
        let magic = be32(&b[..4]);
        if magic == MULTIFD_MAGIC {
            return Err(StreamError::MultifdChannel);
        }
        if magic != MAGIC {
            return Err(StreamError::NotQemuStream {
                magic: [b[0], b[1], b[2], b[3]],
            });
        }
        let version = be32(&b[4..]);
        if version != VERSION {
            return Err(StreamError::Version { version });
        }
        self.header.raw.extend_from_slice(b);
        Ok(State::ConfigOrSection)
    }

    pub(super) fn config_or_section<E>(
        &mut self,
        byte: u8,
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        if byte == item::CONFIGURATION {
            self.header.raw.push(byte);
            Ok(State::ConfigLen)
        } else {
            self.section_type(byte, sink)
        }
    }

    pub(super) fn config_len(&mut self, b: &[u8]) -> Result<State, StreamError> {
        let len = be32(b);
        if len > MAX_MACHINE_TYPE {
            return Err(StreamError::MachineTypeTooLong { len });
        }
        self.header.raw.extend_from_slice(b);
        if len == 0 {
            self.header.machine_type = Some(Vec::new());
            Ok(State::ConfigNext)
        } else {
            Ok(State::ConfigName(len))
        }
    }

    pub(super) fn config_name(&mut self, b: &[u8]) -> State {
        self.header.machine_type = Some(b.to_vec());
        self.header.raw.extend_from_slice(b);
        State::ConfigNext
    }

    pub(super) fn config_next<E>(
        &mut self,
        byte: u8,
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        if byte == item::SUBSECTION {
            self.header.raw.push(byte);
            Ok(State::SubsectionNameLen)
        } else {
            self.section_type(byte, sink)
        }
    }

    pub(super) fn subsection_name_len(&mut self, len: u8) -> State {
        self.header.raw.push(len);
        State::SubsectionName(len)
    }

    /// The name and the 32-bit version; the version is the destination's to check.
    pub(super) fn subsection_name(&mut self, b: &[u8]) -> Result<State, StreamError> {
        let name = &b[..b.len() - 4];
        let (known, next): (&'static [u8], State) = if name == config::TARGET_PAGE_BITS {
            (config::TARGET_PAGE_BITS, State::TargetPageBits)
        } else if name == config::CAPABILITIES {
            (config::CAPABILITIES, State::CapabilityCount)
        } else if name == config::UUID {
            (config::UUID, State::Uuid)
        } else {
            return Err(StreamError::UnknownConfigSubsection {
                name: String::from_utf8_lossy(name).into_owned(),
            });
        };
        if self.subsections_seen.contains(&known) {
            return Err(StreamError::RepeatedConfigSubsection {
                name: String::from_utf8_lossy(name).into_owned(),
            });
        }
        self.subsections_seen.push(known);
        self.header.raw.extend_from_slice(b);
        Ok(next)
    }

    pub(super) fn target_page_bits(&mut self, b: &[u8]) -> Result<State, StreamError> {
        let bits = be32(b);
        let expected = self.page_size.trailing_zeros();
        if bits != expected {
            return Err(StreamError::TargetPageBits { bits, expected });
        }
        self.header.target_page_bits = Some(bits);
        self.header.raw.extend_from_slice(b);
        Ok(State::ConfigNext)
    }

    pub(super) fn uuid(&mut self, b: &[u8]) -> State {
        let mut uuid = [0; 16];
        uuid.copy_from_slice(b);
        self.header.uuid = Some(uuid);
        self.header.raw.extend_from_slice(b);
        State::ConfigNext
    }

    /// Capabilities listed here are those that change the stream (QEMU lists only those),
    /// so the first one is refused by name.
    pub(super) fn capability_count(&mut self, b: &[u8]) -> Result<State, StreamError> {
        let count = be32(b);
        if count > MAX_CAPABILITIES {
            return Err(StreamError::TooManyCapabilities { count });
        }
        self.header.raw.extend_from_slice(b);
        Ok(if count == 0 {
            State::ConfigNext
        } else {
            State::CapabilityLen
        })
    }

    pub(super) fn capability_len(&mut self, len: u8) -> Result<State, StreamError> {
        if len == 0 {
            return Err(StreamError::Capability {
                name: String::new(),
            });
        }
        Ok(State::CapabilityName(len))
    }

    pub(super) fn capability_name(&mut self, b: &[u8]) -> StreamError {
        StreamError::Capability {
            name: String::from_utf8_lossy(b).into_owned(),
        }
    }
}
