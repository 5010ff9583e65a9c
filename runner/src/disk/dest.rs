//! The disk tunnel's destination end, its data path: decodes the stream from the link and
//! writes every block, range and piece into the destination's NBD export, in stream order;
//! consecutive blocks (and consecutive zero blocks) go out as one request. At each sync
//! point it writes what is pending, flushes the export when asked, and confirms on the
//! link.

use std::cell::RefCell;
use std::io::{Read, Write};

use anyhow::{anyhow, bail, ensure, Context, Result};
use pagewire::{Config, DecodeMode, Decoder, Destination, Error, HEADER_LEN};
use serde::Serialize;

use super::items::*;
use crate::migrate::dest::decode_frame;
use crate::migrate::session;
use crate::nbd::Client;

/// What the destination end wrote.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct DiskDelivered {
    /// Bytes written in whole blocks.
    pub block_bytes: u64,
    /// Bytes written as zero blocks, zero ranges and trims.
    pub zeroed_bytes: u64,
    /// Bytes written from pieces.
    pub piece_bytes: u64,
    /// Bytes of blocks the export already held (base references), checked and copied
    /// there (or left, when in place).
    pub base_bytes: u64,
    /// NBD requests sent to the export.
    pub requests: u64,
    /// Sync points confirmed.
    pub syncs: u64,
    /// Stream bytes decoded.
    pub stream_bytes: u64,
}

/// Largest run of consecutive blocks written in one request.
const RUN_BYTES: usize = 1 << 20;

/// Applies decoded blocks and blobs to the export, coalescing runs.
struct Apply<'c, S: Read + Write> {
    client: &'c mut Client<S>,
    blocks: u64,
    page: Vec<u8>,
    /// Consecutive blocks not yet written: the first block's number and their bytes.
    run: Option<(u64, Vec<u8>)>,
    /// Consecutive zero blocks not yet written: first block, count.
    zeros: Option<(u64, u64)>,
    /// Consecutive base references to blocks the export holds in place (the way back's
    /// common case), not yet checked: the first block and each one's strong hash. One
    /// read checks them all, instead of a request per block.
    in_place: Option<(u64, Vec<u128>)>,
    /// The block the last zero record was for: the decoder ends every page record,
    /// zero pages included, with `page_done`, which must not then write the staging page.
    zeroed: Option<u64>,
    /// Sync points reached: their sequence numbers, to confirm.
    acks: Vec<u64>,
    failed: Option<anyhow::Error>,
    done: DiskDelivered,
}

impl<S: Read + Write> Apply<'_, S> {
    fn fail(&mut self, e: anyhow::Error) {
        self.failed.get_or_insert(e);
    }

    /// Writes the pending run and zero run, and checks the pending in-place references.
    fn write_pending(&mut self) -> Result<()> {
        self.check_in_place()?;
        self.write_runs()
    }

    /// Reads the blocks of the pending in-place references and checks each against the
    /// strong hash the source sent.
    fn check_in_place(&mut self) -> Result<()> {
        let Some((first, strong)) = self.in_place.take() else {
            return Ok(());
        };
        let mut blocks = vec![0u8; strong.len() * BLOCK as usize];
        self.client.read(first * BLOCK, &mut blocks)?;
        self.done.requests += 1;
        for (i, (block, want)) in blocks.chunks_exact(BLOCK as usize).zip(&strong).enumerate() {
            ensure!(
                strong_hash(block) == *want,
                "block {} of the base no longer holds what the source referenced (its \
                 strong hash differs); nothing of it was written: copy again without the \
                 base",
                first + i as u64
            );
        }
        self.done.base_bytes += blocks.len() as u64;
        Ok(())
    }

    /// Writes the pending run and zero run.
    fn write_runs(&mut self) -> Result<()> {
        if let Some((first, bytes)) = self.run.take() {
            self.client.write(first * BLOCK, &bytes, false)?;
            self.done.block_bytes += bytes.len() as u64;
            self.done.requests += 1;
        }
        if let Some((first, n)) = self.zeros.take() {
            self.client.write_zeroes(first * BLOCK, n * BLOCK)?;
            self.done.zeroed_bytes += n * BLOCK;
            self.done.requests += 1;
        }
        Ok(())
    }

    fn in_disk(&self, offset: u64, len: u64) -> Result<()> {
        ensure!(
            offset
                .checked_add(len)
                .is_some_and(|e| e <= self.blocks * BLOCK),
            "the stream writes {len} bytes at {offset}, past the end of the disk"
        );
        Ok(())
    }

    fn apply_blob(&mut self, tag: u32, data: &[u8]) -> Result<()> {
        if tag == TAG_BASE {
            self.write_runs()?;
        } else {
            self.write_pending()?;
        }
        match tag {
            TAG_WRITE => {
                let (offset, bytes) = parse_write(data)?;
                self.in_disk(offset, bytes.len() as u64)?;
                self.client.write(offset, bytes, false)?;
                self.done.piece_bytes += bytes.len() as u64;
                self.done.requests += 1;
            }
            TAG_ZEROES | TAG_TRIM => {
                let (offset, len) = parse_range(data)?;
                self.in_disk(offset, len)?;
                self.client.write_zeroes(offset, len)?;
                self.done.zeroed_bytes += len;
                self.done.requests += 1;
            }
            TAG_BASE => {
                let (target, base, strong) = parse_base_ref(data)?;
                self.in_disk(target.saturating_mul(BLOCK), BLOCK)?;
                self.in_disk(base.saturating_mul(BLOCK), BLOCK)?;
                if base == target {
                    let joins = self.in_place.as_ref().is_some_and(|(first, s)| {
                        first + s.len() as u64 == target && s.len() < RUN_BYTES / BLOCK as usize
                    });
                    if !joins {
                        self.check_in_place()?;
                        self.in_place = Some((target, Vec::new()));
                    }
                    if let Some((_, s)) = &mut self.in_place {
                        s.push(strong);
                    }
                    return Ok(());
                }
                self.check_in_place()?;
                let mut block = vec![0u8; BLOCK as usize];
                self.client.read(base * BLOCK, &mut block)?;
                self.done.requests += 1;
                ensure!(
                    strong_hash(&block) == strong,
                    "block {base} of the base no longer holds what the source referenced \
                     (its strong hash differs); nothing of it was written: copy again \
                     without the base"
                );
                self.client.write(target * BLOCK, &block, false)?;
                self.done.requests += 1;
                self.done.base_bytes += BLOCK;
            }
            TAG_SYNC => {
                let (seq, flush) = parse_sync(data)?;
                if flush {
                    self.client.flush()?;
                    self.done.requests += 1;
                }
                self.acks.push(seq);
            }
            other => bail!("the disk stream carries an unknown blob (tag {other:#x})"),
        }
        Ok(())
    }
}

impl<S: Read + Write> Destination for Apply<'_, S> {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        if pfn >= self.blocks {
            return Err(Error::PfnOutOfRange { pfn });
        }
        Ok(&mut self.page)
    }

    fn page_done(&mut self, pfn: u64) {
        if self.zeroed.take() == Some(pfn) {
            return;
        }
        if self.zeros.is_some() {
            if let Err(e) = self.write_pending() {
                return self.fail(e);
            }
        }
        let joins = self.run.as_ref().is_some_and(|(first, b)| {
            first + (b.len() as u64) / BLOCK == pfn && b.len() < RUN_BYTES
        });
        if !joins {
            if let Err(e) = self.write_pending() {
                return self.fail(e);
            }
            self.run = Some((pfn, Vec::with_capacity(RUN_BYTES)));
        }
        if let Some((_, b)) = &mut self.run {
            b.extend_from_slice(&self.page);
        }
    }

    fn zero_page(&mut self, pfn: u64, _page_size: usize) -> pagewire::Result<()> {
        if pfn >= self.blocks {
            return Err(Error::PfnOutOfRange { pfn });
        }
        self.zeroed = Some(pfn);
        let joins = self.zeros.is_some_and(|(first, n)| first + n == pfn);
        if joins {
            if let Some((_, n)) = &mut self.zeros {
                *n += 1;
            }
        } else {
            if let Err(e) = self.write_pending() {
                self.fail(e);
            }
            self.zeros = Some((pfn, 1));
        }
        Ok(())
    }

    fn blob(&mut self, tag: u32, data: &[u8]) {
        if self.failed.is_none() {
            if let Err(e) = self.apply_blob(tag, data) {
                self.fail(e);
            }
        }
    }

    fn end_of_stream(&mut self) {
        if let Err(e) = self.write_pending() {
            self.fail(e);
        }
    }
}

/// Answers the hello on `link` with the size of the export `client` holds (and, with
/// `base`, an index of the blocks it holds now, for the source to refer to), then receives
/// the disk stream into it, confirming every sync point on `link`, until the stream's END;
/// then flushes the export. A failure to write is
/// confirmed as that failure (the source end then fails its client's request) and ends
/// the stream here.
pub fn carry_in<L: Read + Write + ?Sized, S: Read + Write>(
    link: &mut L,
    client: &mut Client<S>,
    base: bool,
) -> Result<DiskDelivered> {
    let hello: DiskHello =
        session::read_message(&mut &mut *link).context("reading the disk hello")?;
    let index = if base {
        base_index(client)?
    } else {
        Vec::new()
    };
    let ready = DiskReady {
        disk_bytes: client.size(),
        error: None,
        base_blocks: index.len() as u64,
    };
    session::write_message(&mut &mut *link, &ready).context("answering the disk hello")?;
    let bytes: Vec<u8> = index.iter().flat_map(|h| h.to_le_bytes()).collect();
    link.write_all(&bytes).context("sending the base index")?;
    link.flush()?;
    // the stream comes in on the link (through zstd if the hello said so) while the
    // confirmations go out on it, one after the other on this thread
    let link = RefCell::new(link);
    let mut stream: Box<dyn Read + '_> = if hello.zstd {
        Box::new(zstd::stream::read::Decoder::new(ReadSide(&link)).context("starting zstd")?)
    } else {
        Box::new(ReadSide(&link))
    };
    let mut header = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut header)
        .context("reading the disk stream's header")?;
    let cfg = Config::from_header(&header).map_err(|e| anyhow!("bad disk stream header: {e}"))?;
    ensure!(
        u64::from(cfg.page_size) == BLOCK,
        "a disk stream of {}-byte pages (blocks are {BLOCK})",
        cfg.page_size
    );
    let mut storage = vec![0u8; cfg.decoder_storage_len_for(DecodeMode::CacheCopy)];
    let (mut dec, _) = Decoder::from_header(&header, DecodeMode::CacheCopy, &mut storage)
        .map_err(|e| anyhow!("bad disk stream header: {e}"))?;
    let mut frame = vec![0u8; cfg.max_frame_len()];
    let mut apply = Apply {
        blocks: client.size().div_ceil(BLOCK),
        client,
        page: vec![0; BLOCK as usize],
        run: None,
        zeros: None,
        in_place: None,
        zeroed: None,
        acks: Vec::new(),
        failed: None,
        done: DiskDelivered {
            stream_bytes: HEADER_LEN as u64,
            ..DiskDelivered::default()
        },
    };
    while !dec.is_complete() {
        apply.done.stream_bytes += decode_frame(&mut stream, &mut dec, &mut frame, &mut apply)?;
        let failed = apply.failed.take();
        for seq in apply.acks.drain(..) {
            let error = failed.as_ref().map(|e| format!("{e:#}"));
            session::write_message(&mut WriteSide(&link), &DiskAck { seq, error })
                .context("confirming disk writes")?;
            apply.done.syncs += 1;
        }
        if let Some(e) = failed {
            return Err(e.context("writing into the destination's export"));
        }
    }
    apply.client.flush()?;
    Ok(apply.done)
}

/// The reading half of a link whose writing half is also in use on the same thread.
struct ReadSide<'a, L: ?Sized>(&'a RefCell<&'a mut L>);

impl<L: Read + ?Sized> Read for ReadSide<'_, L> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// The writing half: see [`ReadSide`].
struct WriteSide<'a, L: ?Sized>(&'a RefCell<&'a mut L>);

impl<L: Write + ?Sized> Write for WriteSide<'_, L> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// The index hash of every whole block of the export, read through `client`.
fn base_index<S: Read + Write>(client: &mut Client<S>) -> Result<Vec<u64>> {
    let size = client.size();
    let mut index = Vec::with_capacity((size / BLOCK) as usize);
    let mut buf = vec![0u8; RUN_BYTES];
    let mut at = 0u64;
    while at + BLOCK <= size {
        let n = ((size - at) / BLOCK * BLOCK).min(RUN_BYTES as u64) as usize;
        client
            .read(at, &mut buf[..n])
            .context("reading the export for its base index")?;
        index.extend(buf[..n].chunks_exact(BLOCK as usize).map(index_hash));
        at += n as u64;
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::encoders::EncoderChoice;
    use crate::nbd::{serve, MemoryTarget};

    /// Sends a stream of base references (target, base, strong hash) into an export whose
    /// blocks hold 0x11 but block 1, 0x22; returns what `carry_in` said and the export
    /// afterwards.
    fn refer(refs: &[(u64, u64, u128)]) -> (Result<DiskDelivered>, Vec<u8>) {
        let refs = refs.to_vec();
        let mut disk = vec![0x11u8; 4 * 4096];
        disk[4096..8192].fill(0x22);
        let (mut a, b) = UnixStream::pair().unwrap();
        let export = std::thread::spawn(move || {
            let mut t = MemoryTarget(disk);
            let _ = serve(&mut a, "disk", &mut t);
            t.0
        });
        let mut client = Client::connect(b, "disk").unwrap();
        let (mut src, mut dst) = UnixStream::pair().unwrap();
        let source = std::thread::spawn(move || {
            session::write_message(
                &mut src,
                &DiskHello {
                    label: "t".into(),
                    zstd: false,
                },
            )
            .unwrap();
            let ready: DiskReady = session::read_message(&mut src).unwrap();
            assert_eq!(ready.disk_bytes, 4 * 4096);
            let mut enc = EncoderChoice::InProcess.start(Config::DEFAULT).unwrap();
            let mut out = Vec::new();
            for (target, base, strong) in refs {
                enc.append_blob(TAG_BASE, &base_ref(target, base, strong), &mut out)
                    .unwrap();
            }
            enc.append_blob(TAG_SYNC, &sync(1, true), &mut out).unwrap();
            enc.end_iteration(&mut out).unwrap();
            enc.finish(&mut out).unwrap();
            let _ = src.write_all(&out);
            let _ = session::read_message::<DiskAck, _>(&mut src);
        });
        let r = carry_in(&mut dst, &mut client, false);
        drop(dst);
        drop(client);
        source.join().unwrap();
        (r, export.join().unwrap())
    }

    #[test]
    fn a_base_reference_is_checked_before_it_is_used() {
        let (r, disk) = refer(&[(1, 0, strong_hash(&[0x11u8; 4096]))]);
        assert_eq!(r.unwrap().base_bytes, 4096);
        assert!(
            disk[4096..8192].iter().all(|&b| b == 0x11),
            "copied from block 0"
        );
        // a reference whose content is not what the base holds (a colliding index hash,
        // a base changed since its index): refused, nothing written
        let (r, disk) = refer(&[(1, 0, strong_hash(&[0x33u8; 4096]))]);
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("strong hash differs"), "{e}");
        assert!(
            disk[4096..8192].iter().all(|&b| b == 0x22),
            "block 1 untouched"
        );
    }

    #[test]
    fn references_to_blocks_in_place_are_checked_with_one_read() {
        let h11 = strong_hash(&[0x11u8; 4096]);
        let (r, disk) = refer(&[(2, 2, h11), (3, 3, h11)]);
        let r = r.unwrap();
        assert_eq!(r.base_bytes, 8192);
        // one read for both, one flush
        assert_eq!(r.requests, 2);
        assert!(disk[8192..].iter().all(|&b| b == 0x11));
        // the second does not hold what the source referenced: refused, named
        let (r, _) = refer(&[(2, 2, h11), (3, 3, strong_hash(&[0x33u8; 4096]))]);
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("block 3 of the base"), "{e}");
        // a run is broken by a reference elsewhere, and checked before it
        let (r, _) = refer(&[
            (2, 2, h11),
            (0, 1, strong_hash(&[0x22u8; 4096])),
            (3, 3, h11),
        ]);
        assert_eq!(r.unwrap().base_bytes, 3 * 4096);
    }
}
