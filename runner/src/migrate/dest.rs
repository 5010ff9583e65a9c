//! The destination side: decode the stream into guest memory, and only after the END record
//! and a full check (memory digest equal to the source's at the pause, a valid state for
//! every vCPU) build the vCPUs' state and resume. Any error before that drops the partial VM
//! unstarted: a half-migrated VM never runs.

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{anyhow, bail, ensure, Context, Result};
use pagewire::FRAME_HEADER_LEN;
use pagewire::{Decoder, Sink, HEADER_LEN};

use super::wire::{self, DestMessage, Hello, PauseInfo, Reply, BLOB_PAUSE, BLOB_VCPU, MAX_BLOB};
use crate::vmm::{GuestMemory, VcpuState, Vm, PAGE_SIZE};

/// Limits on what a source may ask the destination to build.
#[derive(Debug, Clone, Copy)]
pub struct DestOptions {
    /// Largest guest memory accepted, in bytes.
    pub max_mem_bytes: u64,
    /// Most vCPUs accepted.
    pub max_vcpus: u32,
}

impl Default for DestOptions {
    fn default() -> Self {
        DestOptions {
            max_mem_bytes: 16 << 30,
            max_vcpus: 16,
        }
    }
}

/// A VM that arrived and runs.
pub struct Arrived {
    /// The running VM.
    pub vm: Vm,
    /// What the source announced.
    pub hello: Hello,
    /// What the destination told the source.
    pub reply: Reply,
    /// Pre-copy iterations the stream carried.
    pub iterations: u64,
}

/// Where decoded pages and blobs go.
struct Into<'m> {
    mem: &'m GuestMemory,
    pages: u64,
    /// Pages written so far: a zero page over a never-written page is skipped, so memory
    /// the guest never used stays unbacked here too.
    written: Vec<u64>,
    bad_pfn: Option<u64>,
    pause: Option<Vec<u8>>,
    vcpus: Vec<Option<Vec<u8>>>,
    bad_blob: Option<u32>,
    iterations: u64,
}

impl Sink for Into<'_> {
    fn page(&mut self, pfn: u64, data: &[u8]) {
        if pfn < self.pages && data.len() == PAGE_SIZE {
            let (w, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
            if self.written[w] & bit == 0 && data.iter().all(|&b| b == 0) {
                return;
            }
            self.written[w] |= bit;
            self.mem.write(pfn * PAGE_SIZE as u64, data);
        } else {
            self.bad_pfn.get_or_insert(pfn);
        }
    }

    fn iteration_end(&mut self, iteration: u64) {
        self.iterations = iteration + 1;
    }

    fn blob(&mut self, tag: u32, data: &[u8]) {
        let slot = if tag == BLOB_PAUSE {
            &mut self.pause
        } else if let Some(slot) = tag
            .checked_sub(BLOB_VCPU)
            .and_then(|i| self.vcpus.get_mut(i as usize))
        {
            slot
        } else {
            self.bad_blob.get_or_insert(tag);
            return;
        };
        // pieces of one blob arrive back to back (see `wire`): join them, within bounds
        let whole = slot.get_or_insert_with(Vec::new);
        if whole.len() + data.len() > MAX_BLOB {
            self.bad_blob.get_or_insert(tag);
            return;
        }
        whole.extend_from_slice(data);
    }
}

/// Receives a migration over `link` and resumes the VM. Errors are reported to the source
/// (when the link still works) and returned; the partial VM is dropped without running.
pub fn migrate_in<L: Read + Write>(link: &mut L, opts: &DestOptions) -> Result<Arrived> {
    match receive(link, opts) {
        Ok(a) => Ok(a),
        Err(e) => {
            let reply = Reply {
                ok: false,
                error: Some(format!("{e:#}")),
                ..Reply::default()
            };
            let _ = wire::write_message(link, &DestMessage::Reply(reply));
            Err(e)
        }
    }
}

fn receive<L: Read + Write>(link: &mut L, opts: &DestOptions) -> Result<Arrived> {
    let hello = wire::read_hello(link)?;
    ensure!(
        hello.page_size as usize == PAGE_SIZE,
        "page size {} unsupported (this VMM uses {PAGE_SIZE})",
        hello.page_size
    );
    ensure!(
        hello.mem_bytes <= opts.max_mem_bytes,
        "the source's VM has {} MiB of memory, more than the {} MiB this destination accepts",
        hello.mem_bytes >> 20,
        opts.max_mem_bytes >> 20
    );
    ensure!(
        hello.vcpus >= 1 && hello.vcpus <= opts.max_vcpus,
        "the source's VM has {} vCPUs; this destination accepts 1 to {}",
        hello.vcpus,
        opts.max_vcpus
    );
    let vm = Vm::new(hello.mem_bytes as usize, hello.vcpus as usize)?;
    vm.memory().prefault_read();

    let mut header = [0u8; HEADER_LEN];
    link.read_exact(&mut header)
        .context("reading the stream header")?;
    let cfg =
        pagewire::Config::from_header(&header).map_err(|e| anyhow!("bad stream header: {e}"))?;
    ensure!(
        cfg.page_size as usize == PAGE_SIZE,
        "stream page size {} differs from the VM's {PAGE_SIZE}",
        cfg.page_size
    );
    // The header names the cache size the decoder must allocate: bound it by the VM.
    ensure!(
        cfg.cache_len() as u64 <= hello.mem_bytes.max(1 << 30),
        "the stream asks for a {} MiB cache, more than the VM's memory",
        cfg.cache_len() >> 20
    );
    let mut storage = vec![0u8; cfg.decoder_storage_len()];
    let (mut dec, _) = Decoder::from_header(&header, &mut storage)
        .map_err(|e| anyhow!("bad stream header: {e}"))?;
    let mut sink = Into {
        mem: vm.memory(),
        pages: vm.memory().pages() as u64,
        written: vec![0; vm.memory().pages().div_ceil(64)],
        bad_pfn: None,
        pause: None,
        vcpus: vec![None; hello.vcpus as usize],
        bad_blob: None,
        iterations: 0,
    };
    let mut frame = vec![0u8; cfg.max_frame_len()];
    let mut stream_bytes = HEADER_LEN as u64;
    let mut acked = 0u64;
    while !dec.is_complete() {
        link.read_exact(&mut frame[..FRAME_HEADER_LEN])
            .context("the stream ended before its END record")?;
        let len = dec
            .frame_len(&frame[..FRAME_HEADER_LEN])
            .map_err(|e| anyhow!("bad frame: {e}"))?;
        link.read_exact(&mut frame[FRAME_HEADER_LEN..len])
            .context("the stream ended inside a frame")?;
        dec.decode_frame(&frame[..len], &mut sink)
            .map_err(|e| anyhow!("bad frame: {e}"))?;
        stream_bytes += len as u64;
        if let Some(pfn) = sink.bad_pfn {
            bail!("the stream carries page {pfn}, beyond the VM's memory");
        }
        if let Some(tag) = sink.bad_blob {
            bail!("the stream carries an unknown or oversized blob (tag {tag})");
        }
        while acked < sink.iterations {
            wire::write_message(link, &DestMessage::Ack(acked))
                .context("acknowledging an iteration")?;
            acked += 1;
        }
    }

    // Complete: check everything before anything runs.
    let end = Instant::now();
    let pause: PauseInfo = serde_json::from_slice(
        sink.pause
            .as_deref()
            .ok_or_else(|| anyhow!("the stream has no pause information"))?,
    )
    .context("malformed pause information")?;
    let states = sink
        .vcpus
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let b = b
                .as_deref()
                .ok_or_else(|| anyhow!("the stream has no state for vCPU {i}"))?;
            VcpuState::from_bytes(b).with_context(|| format!("vCPU {i} state"))
        })
        .collect::<Result<Vec<_>>>()?;
    let digest = format!("{:032x}", vm.memory().digest());
    ensure!(
        digest == pause.digest,
        "memory digest {digest} differs from the source's {} at the pause",
        pause.digest
    );
    let iterations = sink.iterations;
    let mut vm = vm;
    vm.restore_state(&states)?;
    vm.start()?;
    let resumed_unix_us = wire::unix_us();
    let reply = Reply {
        ok: true,
        error: None,
        resumed_unix_us,
        downtime_us: resumed_unix_us.saturating_sub(pause.pause_unix_us),
        finish_us: end.elapsed().as_micros() as u64,
        stream_bytes,
    };
    // The VM runs now; a lost reply does not stop it (the source resumes its own copy and
    // reports the error: see docs/RUNNER.md on this window).
    let _ = wire::write_message(link, &DestMessage::Reply(reply.clone()));
    Ok(Arrived {
        vm,
        hello,
        reply,
        iterations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_pieces_are_joined_and_oversized_or_unknown_blobs_refused() {
        let mem = GuestMemory::new(2 << 20).unwrap();
        let mut sink = Into {
            mem: &mem,
            pages: mem.pages() as u64,
            written: vec![0; mem.pages().div_ceil(64)],
            bad_pfn: None,
            pause: None,
            vcpus: vec![None; 2],
            bad_blob: None,
            iterations: 0,
        };
        sink.blob(BLOB_VCPU + 1, &[1; 4096]);
        sink.blob(BLOB_VCPU + 1, &[2; 900]);
        sink.blob(BLOB_PAUSE, b"{}");
        let v = sink.vcpus[1].as_deref().unwrap();
        assert_eq!(v.len(), 4996);
        assert_eq!((v[4095], v[4096]), (1, 2));
        assert_eq!(sink.pause.as_deref(), Some(&b"{}"[..]));
        assert!(sink.vcpus[0].is_none() && sink.bad_blob.is_none());

        sink.blob(BLOB_VCPU + 2, b"no such vCPU");
        assert_eq!(sink.bad_blob, Some(BLOB_VCPU + 2));
        sink.bad_blob = None;
        let piece = vec![0u8; 4096];
        for _ in 0..MAX_BLOB / 4096 {
            sink.blob(BLOB_VCPU, &piece);
        }
        assert!(sink.bad_blob.is_none());
        sink.blob(BLOB_VCPU, &[0]);
        assert_eq!(sink.bad_blob, Some(BLOB_VCPU), "past MAX_BLOB");
    }
}
