//! The host side: sets a region up, hands pages to the device and collects its stream bytes.
//! It checks what the device writes as carefully as the device checks the host.

use core::sync::atomic::AtomicU32;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::error::{DeviceState, OffloadError};
use super::geometry::Layout;
use super::layout::{
    ctrl, flags, Completion, RegionHeader, SubmitDesc, CONTROL_LEN, HEADER_BYTES, HOST_CMD_STOP,
};
use super::shm::Region;
use super::stats;
use crate::encoder::EncoderStats;

/// The host end of a region.
pub struct Host<'a> {
    region: Region<'a>,
    layout: Layout,
    sq_tail: u32,
    cq_head: u32,
    out_head: u32,
    slots: u32,
    /// Page slot of the next descriptor: every descriptor takes the next slot in ring
    /// order, so the slots in use are exactly those of the descriptors in flight.
    next_slot: u32,
}

impl<'a> Host<'a> {
    /// Writes `header` and a zeroed control block into `words`, the magic word last
    /// (Release), so a device that Acquire-loads the magic sees a complete header.
    pub fn create(words: &'a [AtomicU32], header: &RegionHeader) -> Result<Self, OffloadError> {
        Self::create_at(words, header, 0)
    }

    /// Like [`Host::create`], with every free-running index starting at `start` instead of
    /// 0 (tests use it to cross the `u32` wrap).
    pub fn create_at(
        words: &'a [AtomicU32],
        header: &RegionHeader,
        start: u32,
    ) -> Result<Self, OffloadError> {
        let region = Region::new(words);
        let layout = Layout::check(header, region.len_bytes())?;
        for at in (0..CONTROL_LEN).step_by(4) {
            region.store(at, 0, Relaxed);
        }
        for at in [
            ctrl::SQ_TAIL,
            ctrl::SQ_HEAD,
            ctrl::CQ_TAIL,
            ctrl::CQ_HEAD,
            ctrl::OUT_TAIL,
            ctrl::OUT_HEAD,
        ] {
            region.store(at, start, Relaxed);
        }
        let bytes = bytemuck::bytes_of(header);
        region.write_bytes(4, &bytes[4..HEADER_BYTES]);
        region.store(0, header.magic, Release);
        let slots = (layout.page_len / layout.config.page_size as usize).min(u32::MAX as usize);
        Ok(Host {
            region,
            layout,
            sq_tail: start,
            cq_head: start,
            out_head: start,
            slots: slots as u32,
            next_slot: 0,
        })
    }

    /// The checked layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Descriptors submitted and not yet consumed by the device. Fails if the device moved
    /// its head past the tail.
    pub fn in_flight(&self) -> Result<u32, OffloadError> {
        let head = self.region.load(ctrl::SQ_HEAD, Acquire);
        let n = self.sq_tail.wrapping_sub(head);
        if n > self.layout.sq_entries {
            return Err(OffloadError::BadIndex("SQ_HEAD is ahead of SQ_TAIL"));
        }
        Ok(n)
    }

    /// Submitted descriptors whose completion has not been taken yet.
    pub fn outstanding(&self) -> u32 {
        self.sq_tail.wrapping_sub(self.cq_head)
    }

    /// Whether one more descriptor (and its page slot) is free. Keeps the completions of
    /// everything outstanding within the completion ring, so the device is never blocked
    /// on a completion the host is waiting for.
    pub fn can_submit(&self) -> Result<bool, OffloadError> {
        let limit = self
            .layout
            .sq_entries
            .min(self.slots)
            .min(self.layout.cq_entries);
        Ok(self.in_flight()? < limit && self.outstanding() < self.layout.cq_entries)
    }

    /// Submits page `pfn`: copies it into the next page slot, then publishes the descriptor
    /// (Release on `SQ_TAIL`). Returns `false` without doing anything if there is no room.
    pub fn submit_page(&mut self, pfn: u64, page: &[u8]) -> Result<bool, OffloadError> {
        if page.len() != self.layout.config.page_size as usize {
            return Err(OffloadError::Codec(crate::Error::WrongPageLength {
                expected: self.layout.config.page_size as usize,
                got: page.len(),
            }));
        }
        if !self.can_submit()? {
            return Ok(false);
        }
        let offset = self.next_slot * self.layout.config.page_size;
        self.region
            .write_bytes(self.layout.page_offset + offset as usize, page);
        self.push_next(SubmitDesc {
            pfn,
            data_offset: offset,
            data_len: page.len() as u32,
            flags: flags::PAGE,
            ..bytemuck::Zeroable::zeroed()
        });
        Ok(true)
    }

    /// Submits a blob (at most one page, in the next page slot). Returns `false` if there is
    /// no room.
    pub fn submit_blob(&mut self, tag: u32, data: &[u8]) -> Result<bool, OffloadError> {
        let max = (self.layout.config.page_size as usize).min(self.layout.config.max_blob_len());
        if data.len() > max {
            return Err(OffloadError::Codec(crate::Error::BlobTooLarge {
                len: data.len(),
                max,
            }));
        }
        if !self.can_submit()? {
            return Ok(false);
        }
        let offset = self.next_slot * self.layout.config.page_size;
        self.region
            .write_bytes(self.layout.page_offset + offset as usize, data);
        self.push_next(SubmitDesc {
            data_offset: offset,
            data_len: data.len() as u32,
            flags: flags::BLOB,
            blob_tag: tag,
            ..bytemuck::Zeroable::zeroed()
        });
        Ok(true)
    }

    /// Submits an END_ITERATION or FINISH descriptor. Returns `false` if there is no room.
    pub fn submit_op(&mut self, op: u32) -> Result<bool, OffloadError> {
        if !self.can_submit()? {
            return Ok(false);
        }
        self.push_next(SubmitDesc {
            flags: op,
            ..bytemuck::Zeroable::zeroed()
        });
        Ok(true)
    }

    /// Publishes any descriptor as is (its `seq` is set to its ring position). For tests
    /// and hosts that manage the page area themselves; no room check beyond the ring.
    pub fn submit_raw(
        &mut self,
        mut desc: SubmitDesc,
        keep_seq: bool,
    ) -> Result<bool, OffloadError> {
        if self.in_flight()? >= self.layout.sq_entries
            || self.outstanding() >= self.layout.cq_entries
        {
            return Ok(false);
        }
        if !keep_seq {
            desc.seq = self.sq_tail;
        }
        self.next_slot = (self.next_slot + 1) % self.slots;
        self.push(desc);
        Ok(true)
    }

    fn push_next(&mut self, mut desc: SubmitDesc) {
        desc.seq = self.sq_tail;
        self.next_slot = (self.next_slot + 1) % self.slots;
        self.push(desc);
    }

    fn push(&mut self, desc: SubmitDesc) {
        self.region
            .write_entry(self.layout.sq_entry(self.sq_tail), &desc);
        // Release: entry and page bytes are visible before the new tail.
        self.sq_tail = self.sq_tail.wrapping_add(1);
        self.region.store(ctrl::SQ_TAIL, self.sq_tail, Release);
    }

    /// Writes bytes into the page area at `offset` (for hosts placing data themselves).
    pub fn write_page_area(&self, offset: usize, data: &[u8]) -> Result<(), OffloadError> {
        if offset % 4 != 0 || offset.saturating_add(data.len()) > self.layout.page_len {
            return Err(OffloadError::BadLayout("write outside the page area"));
        }
        self.region
            .write_bytes(self.layout.page_offset + offset, data);
        Ok(())
    }

    /// The next completion, checked, if the device has published one (Acquire on
    /// `CQ_TAIL`). Call [`Host::release`] after copying its bytes out.
    pub fn peek_completion(&self) -> Result<Option<Completion>, OffloadError> {
        let tail = self.region.load(ctrl::CQ_TAIL, Acquire);
        let ready = tail.wrapping_sub(self.cq_head);
        if ready == 0 {
            return Ok(None);
        }
        if ready > self.layout.cq_entries || ready > self.outstanding() {
            return Err(OffloadError::BadIndex("CQ_TAIL is past what was submitted"));
        }
        let c: Completion = self.region.read_entry(self.layout.cq_entry(self.cq_head));
        if c.seq != self.cq_head {
            return Err(OffloadError::BadCompletion("completion out of order"));
        }
        if c.out_len > 0 {
            let off = u64::from(c.out_offset);
            if off % 4 != 0 || off + u64::from(c.out_len) > u64::from(self.layout.out_len) {
                return Err(OffloadError::BadCompletion(
                    "output chunk leaves the output area",
                ));
            }
            let len = self.layout.out_len;
            let advance = c.out_end.wrapping_sub(self.out_head);
            if advance > len
                || advance < c.out_len
                || c.out_end & (len - 1) != (c.out_offset + ((c.out_len + 3) & !3)) & (len - 1)
            {
                return Err(OffloadError::BadCompletion(
                    "output chunk position is inconsistent",
                ));
            }
        } else if c.out_end != self.out_head {
            return Err(OffloadError::BadCompletion(
                "empty completion moved the output",
            ));
        }
        Ok(Some(c))
    }

    /// Copies the completion's stream bytes into `dst` (`c.out_len` bytes).
    pub fn read_output(&self, c: &Completion, dst: &mut [u8]) {
        let n = (c.out_len as usize).min(dst.len());
        self.region.read_bytes(
            self.layout.out_offset + c.out_offset as usize,
            &mut dst[..n],
        );
    }

    /// Hands the completion's entry and output bytes back to the device (Release on
    /// `OUT_HEAD`, then on `CQ_HEAD`).
    pub fn release(&mut self, c: &Completion) {
        self.out_head = c.out_end;
        self.region.store(ctrl::OUT_HEAD, self.out_head, Release);
        self.cq_head = self.cq_head.wrapping_add(1);
        self.region.store(ctrl::CQ_HEAD, self.cq_head, Release);
    }

    /// The device's state word (Acquire) and error code; `None` for a value no device writes.
    pub fn device_state(&self) -> (Option<DeviceState>, u32) {
        let s = self.region.load(ctrl::DEVICE_STATE, Acquire);
        (
            DeviceState::from_word(s),
            self.region.load(ctrl::DEVICE_ERROR, Relaxed),
        )
    }

    /// The device's heartbeat counter.
    pub fn heartbeat(&self) -> u32 {
        self.region.load(ctrl::HEARTBEAT, Relaxed)
    }

    /// The device's encoder counters as of the last completion taken.
    pub fn stats(&self) -> EncoderStats {
        stats::read(&self.region)
    }

    /// Asks the device to stop at its next poll.
    pub fn request_stop(&self) {
        self.region.store(ctrl::HOST_CMD, HOST_CMD_STOP, Release);
    }
}
