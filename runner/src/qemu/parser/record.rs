//! RAM records. Each starts with a 64-bit word: the offset (or, for the block list, the
//! total RAM size) in the bits above the target page size, flags below. A page record
//! names its block (a length byte and the idstr) unless it has CONTINUE, then carries a
//! whole page, one fill byte, or an XBZRLE page (encoding byte, 16-bit length, delta). The
//! block list is the total, then per block its length-prefixed idstr and 64-bit length,
//! until the lengths add up to the total. An end-of-section word closes the section.

use super::{be16, be64, send, FeedError, Machine, PageRecord, Sink, State, MAX_BLOCKS};
use crate::qemu::error::StreamError;
use crate::qemu::event::{Event, PageData, RamBlock};
use crate::qemu::format::{flag, item, XBZRLE_ENCODING};

/// Flag bits the parser understands; any other bit below the page size is refused.
const KNOWN: u64 =
    flag::ZERO | flag::MEM_SIZE | flag::PAGE | flag::EOS | flag::CONTINUE | flag::XBZRLE;

impl Machine {
    pub(super) fn record<E>(
        &mut self,
        b: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        let word = be64(b);
        let mask = self.page_size as u64 - 1;
        let flags = word & mask;
        let addr = word & !mask;
        if flags & !KNOWN != 0 {
            return Err(FeedError::Stream(StreamError::Flags { flags }));
        }
        match flags & !flag::CONTINUE {
            flag::EOS => {
                if word != flag::EOS {
                    return Err(FeedError::Stream(StreamError::MalformedEos { word }));
                }
                Ok(State::Footer)
            }
            flag::MEM_SIZE => {
                if flags & flag::CONTINUE != 0 {
                    return Err(FeedError::Stream(StreamError::FlagCombination { flags }));
                }
                if self.open != Some(item::SECTION_START) || self.list_done {
                    return Err(FeedError::Stream(StreamError::MisplacedBlockList));
                }
                self.list_remaining = addr;
                if addr == 0 {
                    return self.list_complete(sink);
                }
                Ok(State::ListNameLen)
            }
            kind @ (flag::ZERO | flag::PAGE | flag::XBZRLE) => {
                if !self.list_done {
                    return Err(FeedError::Stream(StreamError::PageBeforeBlockList));
                }
                if flags & flag::CONTINUE == 0 {
                    return Ok(State::BlockNameLen { kind, offset: addr });
                }
                let block = self
                    .last_block
                    .ok_or(FeedError::Stream(StreamError::ContinueWithoutBlock))?;
                self.page_record(kind, addr, block)
                    .map_err(FeedError::Stream)
            }
            _ => Err(FeedError::Stream(StreamError::FlagCombination { flags })),
        }
    }

    pub(super) fn list_name_len(&mut self, len: u8) -> Result<State, StreamError> {
        if len == 0 {
            return Err(StreamError::EmptyBlockName);
        }
        Ok(State::ListEntry(len))
    }

    pub(super) fn list_entry<E>(
        &mut self,
        b: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        let (name, len) = b.split_at(b.len() - 8);
        let length = be64(len);
        let lossy = || String::from_utf8_lossy(name).into_owned();
        let refuse = |e| Err(FeedError::Stream(e));
        if self.blocks.len() == MAX_BLOCKS {
            return refuse(StreamError::TooManyBlocks);
        }
        if self.blocks.iter().any(|blk| blk.name == name) {
            return refuse(StreamError::RepeatedBlock { name: lossy() });
        }
        if length == 0 || length % self.page_size as u64 != 0 {
            return refuse(StreamError::BlockLength {
                name: lossy(),
                length,
            });
        }
        if length > self.list_remaining {
            return refuse(StreamError::BlockListTotal {
                name: lossy(),
                length,
                remaining: self.list_remaining,
            });
        }
        self.list_remaining -= length;
        self.blocks.push(RamBlock {
            name: name.to_vec(),
            length,
        });
        if self.list_remaining == 0 {
            self.list_complete(sink)
        } else {
            Ok(State::ListNameLen)
        }
    }

    fn list_complete<E>(&mut self, sink: &mut Sink<'_, E>) -> Result<State, FeedError<E>> {
        self.list_done = true;
        send(sink, Event::RamBlocks(&self.blocks))?;
        Ok(State::Record)
    }

    pub(super) fn block_name_len(
        &mut self,
        kind: u64,
        offset: u64,
        len: u8,
    ) -> Result<State, StreamError> {
        if len == 0 {
            return Err(StreamError::UnknownBlock {
                name: String::new(),
            });
        }
        Ok(State::BlockName { kind, offset, len })
    }

    pub(super) fn block_name(
        &mut self,
        kind: u64,
        offset: u64,
        name: &[u8],
    ) -> Result<State, StreamError> {
        let block = self
            .blocks
            .iter()
            .position(|b| b.name == name)
            .ok_or_else(|| StreamError::UnknownBlock {
                name: String::from_utf8_lossy(name).into_owned(),
            })?;
        self.last_block = Some(block);
        self.page_record(kind, offset, block)
    }

    /// A page record whose block is known: checks that the page lies inside it.
    fn page_record(&mut self, kind: u64, offset: u64, block: usize) -> Result<State, StreamError> {
        let b = &self.blocks[block];
        if offset >= b.length {
            return Err(StreamError::PagePastBlock {
                block: b.name_lossy(),
                offset,
                length: b.length,
            });
        }
        Ok(State::Payload(PageRecord {
            kind,
            offset,
            block,
        }))
    }

    pub(super) fn payload<E>(
        &mut self,
        rec: PageRecord,
        b: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        let data = match rec.kind {
            flag::PAGE => PageData::Raw(b),
            flag::ZERO => PageData::Fill(b[0]),
            _ => {
                if b[0] != XBZRLE_ENCODING {
                    return Err(FeedError::Stream(StreamError::XbzrleEncoding {
                        byte: b[0],
                    }));
                }
                let len = be16(&b[1..]);
                if len as usize > self.page_size {
                    return Err(FeedError::Stream(StreamError::XbzrleTooLong { len }));
                }
                if len > 0 {
                    return Ok(State::XbzrleData(rec, len));
                }
                PageData::Xbzrle(&[])
            }
        };
        self.page(rec, data, sink)
    }

    /// An XBZRLE page's delta: checked with the codec's decoder, as strict as QEMU's, on
    /// scratch memory (whether a delta is valid does not depend on the page it applies to).
    pub(super) fn xbzrle_data<E>(
        &mut self,
        rec: PageRecord,
        b: &[u8],
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        if pagewire::xbzrle::decode(b, &mut self.scratch).is_err() {
            return Err(FeedError::Stream(StreamError::XbzrleInvalid {
                block: self.blocks[rec.block].name_lossy(),
                offset: rec.offset,
            }));
        }
        self.page(rec, PageData::Xbzrle(b), sink)
    }

    fn page<E>(
        &mut self,
        rec: PageRecord,
        data: PageData<'_>,
        sink: &mut Sink<'_, E>,
    ) -> Result<State, FeedError<E>> {
        send(
            sink,
            Event::Page {
                block: rec.block,
                offset: rec.offset,
                data,
            },
        )?;
        Ok(State::Record)
    }
}
