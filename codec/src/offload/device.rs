//! The device side: takes descriptors, encodes with its own [`Encoder`], publishes stream
//! bytes and completions. Trusts nothing the host wrote: every descriptor is validated, every
//! index bounded; a bad descriptor gets an error completion, a broken index stops the device
//! with a code in `DEVICE_ERROR`. Nothing here can panic on what the host wrote.

use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use super::error::{DescError, DeviceState, OffloadError};
use super::geometry::Layout;
use super::layout::{ctrl, flags, Completion, RegionHeader, SubmitDesc, HOST_CMD_STOP};
use super::shm::Region;
use super::stats;
use crate::encoder::Encoder;
use crate::error::Error;

/// What one [`Device::poll`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// No descriptor waiting: the caller may sleep a little.
    Idle,
    /// Handled one descriptor (`rejected` says why it was refused, if it was).
    Done {
        seq: u32,
        rejected: Option<DescError>,
    },
    /// A result waits for room in the completion ring or the output area (backpressure).
    Blocked,
    /// The FINISH completion is published; nothing more to do.
    Finished,
    /// The host asked the device to stop.
    Stopped,
}

/// A result not yet published: its completion, and its stream bytes at the front of the
/// device's output buffer.
#[derive(Clone, Copy)]
struct Pending {
    completion: Completion,
    out_len: usize,
    finish: bool,
}

/// The device end of a region.
pub struct Device<'a> {
    region: Region<'a>,
    layout: Layout,
    enc: Encoder<'a>,
    page: &'a mut [u8],
    out: &'a mut [u8],
    pending: Option<Pending>,
    sq_head: u32,
    cq_tail: u32,
    out_tail: u32,
    state: DeviceState,
}

impl<'a> Device<'a> {
    /// Attaches to the region the host set up: reads and checks its header (Acquire on the
    /// magic word, which the host stores last), builds the encoder over `storage`, and marks
    /// the device RUNNING. `page` must hold a page, `out` `Config::max_output_len()` bytes.
    /// On failure the error code is written to `DEVICE_ERROR` and the state to FAILED.
    pub fn attach(
        words: &'a [core::sync::atomic::AtomicU32],
        storage: &'a mut [u8],
        page: &'a mut [u8],
        out: &'a mut [u8],
    ) -> Result<Self, OffloadError> {
        let region = Region::new(words);
        let r = Self::build(region, storage, page, out);
        if let Err(e) = &r {
            if region.len_bytes() >= super::layout::CONTROL_LEN {
                region.store(ctrl::DEVICE_ERROR, e.code(), Relaxed);
                region.store(ctrl::DEVICE_STATE, DeviceState::Failed as u32, Release);
            }
        }
        r
    }

    fn build(
        region: Region<'a>,
        storage: &'a mut [u8],
        page: &'a mut [u8],
        out: &'a mut [u8],
    ) -> Result<Self, OffloadError> {
        let given = region.len_bytes();
        if given < super::layout::CONTROL_LEN {
            return Err(OffloadError::RegionTooSmall {
                needed: super::layout::CONTROL_LEN,
                given,
            });
        }
        if region.load(0, Acquire) != super::layout::OFFLOAD_MAGIC {
            return Err(OffloadError::BadMagic);
        }
        let mut hb = [0u8; super::layout::HEADER_BYTES];
        region.read_bytes(0, &mut hb);
        let header: RegionHeader = bytemuck::pod_read_unaligned(&hb);
        let layout = Layout::check(&header, given)?;
        let cfg = layout.config;
        let ps = cfg.page_size as usize;
        if page.len() < ps {
            return Err(OffloadError::Codec(Error::InsufficientStorage {
                needed: ps,
                given: page.len(),
            }));
        }
        let mut enc = Encoder::new(cfg, storage).map_err(OffloadError::Codec)?;
        enc.set_features(header.features());
        let need = cfg.max_output_len();
        if out.len() < need {
            return Err(OffloadError::Codec(Error::OutputTooSmall {
                needed: need,
                given: out.len(),
            }));
        }
        // Start from the indices as the host left them (zero for a fresh region).
        let sq_head = region.load(ctrl::SQ_HEAD, Relaxed);
        let cq_tail = region.load(ctrl::CQ_TAIL, Relaxed);
        let out_tail = region.load(ctrl::OUT_TAIL, Relaxed);
        region.store(ctrl::DEVICE_ERROR, 0, Relaxed);
        region.store(ctrl::DEVICE_STATE, DeviceState::Running as u32, Release);
        Ok(Device {
            region,
            layout,
            enc,
            page: &mut page[..ps],
            out,
            pending: None,
            sq_head,
            cq_tail,
            out_tail,
            state: DeviceState::Running,
        })
    }

    /// The checked layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The encoder's counters.
    pub fn stats(&self) -> &crate::EncoderStats {
        self.enc.stats()
    }

    /// The device's state.
    pub fn state(&self) -> DeviceState {
        self.state
    }

    /// Does one step: publishes a waiting result, or takes one descriptor, executes it and
    /// publishes its result. Errors are fatal (a broken index): the state is then FAILED.
    pub fn poll(&mut self) -> Result<Poll, OffloadError> {
        match self.state {
            DeviceState::Finished => return Ok(Poll::Finished),
            DeviceState::Stopped => return Ok(Poll::Stopped),
            DeviceState::Failed => {
                return Err(OffloadError::DeviceStopped {
                    state: DeviceState::Failed as u32,
                    code: self.region.load(ctrl::DEVICE_ERROR, Relaxed),
                })
            }
            _ => {}
        }
        self.region.bump(ctrl::HEARTBEAT);
        let r = self.step();
        if let Err(e) = &r {
            self.stop(DeviceState::Failed, e.code());
        }
        r
    }

    fn step(&mut self) -> Result<Poll, OffloadError> {
        if self.region.load(ctrl::HOST_CMD, Acquire) == HOST_CMD_STOP {
            self.stop(DeviceState::Stopped, 0);
            return Ok(Poll::Stopped);
        }
        if self.pending.is_some() {
            return self.publish();
        }
        // Acquire: the descriptor and its data are visible once the tail is.
        let tail = self.region.load(ctrl::SQ_TAIL, Acquire);
        let avail = tail.wrapping_sub(self.sq_head);
        if avail == 0 {
            return Ok(Poll::Idle);
        }
        if avail > self.layout.sq_entries {
            return Err(OffloadError::BadIndex("SQ_TAIL is past the ring"));
        }
        let seq = self.sq_head;
        let desc: SubmitDesc = self.region.read_entry(self.layout.sq_entry(seq));
        let result = self.execute(seq, &desc);
        let mut completion = Completion {
            seq,
            flags: desc.flags,
            ..Completion::default()
        };
        let (out_len, finish) = match result {
            Ok(r) => r,
            Err(e) => {
                completion.status = e.status();
                completion.detail = e.detail();
                (0, false)
            }
        };
        // Release: the host may reuse the entry and its data once it sees the new head.
        self.sq_head = seq.wrapping_add(1);
        self.region.store(ctrl::SQ_HEAD, self.sq_head, Release);
        self.pending = Some(Pending {
            completion,
            out_len,
            finish,
        });
        if self.publish()? == Poll::Finished {
            return Ok(Poll::Finished);
        }
        Ok(Poll::Done {
            seq,
            rejected: result.err(),
        })
    }

    /// Checks the descriptor and runs it; returns the stream bytes written to `out`.
    fn execute(&mut self, seq: u32, d: &SubmitDesc) -> Result<(usize, bool), DescError> {
        if d.seq != seq {
            return Err(DescError::BadSeq(d.seq));
        }
        if d.flags & !flags::ALL != 0 || d.flags.count_ones() != 1 {
            return Err(DescError::BadFlags(d.flags));
        }
        if d.reserved != 0 {
            return Err(DescError::BadReserved);
        }
        let enc_err = DescError::Encoder;
        match d.flags {
            flags::PAGE => {
                if d.blob_tag != 0 {
                    return Err(DescError::BadReserved);
                }
                if d.data_len as usize != self.page.len() {
                    return Err(DescError::BadLength(d.data_len));
                }
                let at = self.data_at(d)?;
                self.region.read_bytes(at, self.page);
                let n = self
                    .enc
                    .encode_page(d.pfn, self.page, self.out)
                    .map_err(enc_err)?;
                Ok((n, false))
            }
            flags::BLOB => {
                if d.pfn != 0 {
                    return Err(DescError::BadReserved);
                }
                // Blobs pass through the page buffer, so they are at most a page long.
                let len = d.data_len as usize;
                if len > self.page.len() || len > self.layout.config.max_blob_len() {
                    return Err(DescError::BadLength(d.data_len));
                }
                let at = self.data_at(d)?;
                self.region.read_bytes(at, &mut self.page[..len]);
                let n = self
                    .enc
                    .append_blob(d.blob_tag, &self.page[..len], self.out);
                n.map(|n| (n, false)).map_err(enc_err)
            }
            _ => {
                if d.pfn != 0 || d.data_offset != 0 || d.data_len != 0 || d.blob_tag != 0 {
                    return Err(DescError::BadReserved);
                }
                let r = if d.flags == flags::FINISH {
                    self.enc.finish(self.out)
                } else {
                    self.enc.end_iteration(self.out)
                };
                r.map(|n| (n, d.flags == flags::FINISH)).map_err(enc_err)
            }
        }
    }

    /// Byte offset in the region of the descriptor's data, checked against the page area.
    fn data_at(&self, d: &SubmitDesc) -> Result<usize, DescError> {
        let off = d.data_offset as usize;
        let end = off.checked_add(d.data_len as usize);
        if off % 4 != 0 || end.is_none_or(|e| e > self.layout.page_len) {
            return Err(DescError::BadRange(d.data_offset));
        }
        Ok(self.layout.page_offset + off)
    }

    /// Publishes the pending result if the completion ring and the output area have room.
    fn publish(&mut self) -> Result<Poll, OffloadError> {
        let Some(p) = self.pending else {
            return Ok(Poll::Idle);
        };
        let cq_head = self.region.load(ctrl::CQ_HEAD, Acquire);
        let used = self.cq_tail.wrapping_sub(cq_head);
        if used > self.layout.cq_entries {
            return Err(OffloadError::BadIndex("CQ_HEAD is ahead of CQ_TAIL"));
        }
        if used == self.layout.cq_entries {
            return Ok(Poll::Blocked);
        }
        let mut c = p.completion;
        c.out_end = self.out_tail;
        if p.out_len > 0 {
            let len = self.layout.out_len;
            // Acquire: the host has finished reading the bytes it released.
            let out_head = self.region.load(ctrl::OUT_HEAD, Acquire);
            let used = self.out_tail.wrapping_sub(out_head);
            if used > len {
                return Err(OffloadError::BadIndex("OUT_HEAD is ahead of the output"));
            }
            let mut pos = self.out_tail;
            let off = pos & (len - 1);
            if off as usize + p.out_len > len as usize {
                pos = pos.wrapping_add(len - off); // skip the tail end: chunks never wrap
            }
            let end = pos.wrapping_add(((p.out_len + 3) & !3) as u32);
            if end.wrapping_sub(out_head) > len {
                return Ok(Poll::Blocked);
            }
            let at = (pos & (len - 1)) as usize;
            self.region
                .write_bytes(self.layout.out_offset + at, &self.out[..p.out_len]);
            c.out_offset = at as u32;
            c.out_len = p.out_len as u32;
            c.out_end = end;
            self.out_tail = end;
            self.region.store(ctrl::OUT_TAIL, end, Release);
        }
        stats::write(&self.region, self.enc.stats());
        self.region
            .write_entry(self.layout.cq_entry(self.cq_tail), &c);
        // Release: entry, output bytes and stats are visible before the new tail.
        self.cq_tail = self.cq_tail.wrapping_add(1);
        self.region.store(ctrl::CQ_TAIL, self.cq_tail, Release);
        self.pending = None;
        if p.finish {
            self.stop(DeviceState::Finished, 0);
            return Ok(Poll::Finished);
        }
        Ok(Poll::Done {
            seq: c.seq,
            rejected: None,
        })
    }

    fn stop(&mut self, state: DeviceState, code: u32) {
        self.state = state;
        self.region.store(ctrl::DEVICE_ERROR, code, Relaxed);
        self.region.store(ctrl::DEVICE_STATE, state as u32, Release);
    }
}
