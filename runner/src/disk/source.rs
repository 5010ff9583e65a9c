//! The disk tunnel's source end, its data path: an NBD export ([`BlockTarget`]) whose
//! writes go through the codec to the link instead of to a disk. Whole aligned 4 KiB blocks
//! are pages to the codec (zero blocks, duplicates found by content in its cache, deltas
//! against the block's previous version); anything else goes as blobs.
//!
//! Acknowledgement (`docs/STORAGE.md`, *Guarantees*): in the asynchronous phase a write is
//! acknowledged to the client once it is on its way, and at least every `window` bytes the
//! end waits for the destination to confirm everything before; in the synchronous phase
//! (from [`Phase::set_synchronous`] on) a write is acknowledged only once the destination
//! wrote it. A flush, and a write with FUA, is acknowledged only once the destination wrote
//! and flushed everything before it. After any failure of the link every request fails
//! (`EIO`): a write that did not reach the destination is never acknowledged as flushed, so
//! the mirror job sees an error and not a silent loss.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::items::*;
use crate::encoders::StreamEncoder;
use crate::migrate::link_stage::LinkCompression;
use crate::migrate::session;
use crate::migrate::zstd_level::{LevelTuner, Window, WINDOW};
use crate::nbd::proto::EIO;
use crate::nbd::BlockTarget;

/// The phase of a disk tunnel, shared with whoever drives the migration.
#[derive(Debug, Clone, Default)]
pub struct Phase(Arc<AtomicBool>);

impl Phase {
    /// From now on every write waits for the destination (memory migration started).
    pub fn set_synchronous(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }

    /// Whether writes wait for the destination.
    pub fn synchronous(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What the source end carried.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DiskCarried {
    /// Bytes the client wrote (data writes).
    pub written_bytes: u64,
    /// Of them, in whole aligned blocks (through the codec).
    pub block_bytes: u64,
    /// Bytes of zero and trim ranges.
    pub zeroed_bytes: u64,
    /// Of the written bytes, those in blocks the destination already held (base
    /// references instead of data).
    pub base_bytes: u64,
    /// Round trips in which the destination confirmed everything before.
    pub syncs: u64,
    /// Bytes of pagewire stream written to the link (before zstd).
    pub stream_bytes: u64,
    /// The zstd levels the stream went through, in order (empty: no zstd).
    pub zstd_levels: Vec<i32>,
}

/// Bytes written in the asynchronous phase before the end waits for the destination.
pub const DEFAULT_WINDOW: u64 = 64 << 20;

/// An export that sends what is written to it over `link`.
pub struct DiskOut<'l, L: Read + Write + ?Sized> {
    link: &'l mut L,
    enc: Box<dyn StreamEncoder>,
    out: Vec<u8>,
    size: u64,
    seq: u64,
    unconfirmed: u64,
    window: u64,
    phase: Phase,
    failed: Option<String>,
    carried: DiskCarried,
    base: Option<Base>,
    /// zstd over the stream, when on.
    zstd: Option<DiskZstd>,
}

/// zstd over the disk stream: the codec's output goes in, what it made so far goes to the
/// link. With a tuner (`auto`), every [`WINDOW`] the level may change as
/// `migrate::zstd_level` decides from where the time went (compressing, or waiting for the
/// link); a change ends the zstd frame and starts the next one at the new level.
struct DiskZstd {
    z: zstd::stream::write::Encoder<'static, Vec<u8>>,
    tuner: Option<LevelTuner>,
    window: Instant,
    compressing: Duration,
    sending: Duration,
    levels: Vec<i32>,
}

impl DiskZstd {
    fn new(link: LinkCompression) -> Result<Option<Self>> {
        let (level, tuner) = match link {
            LinkCompression::None => return Ok(None),
            LinkCompression::Zstd { level } => (level, None),
            LinkCompression::ZstdAuto => {
                let t = LevelTuner::starting_at(DISK_AUTO_START);
                (t.level(), Some(t))
            }
        };
        Ok(Some(DiskZstd {
            z: zstd::stream::write::Encoder::new(Vec::new(), level).context("starting zstd")?,
            tuner,
            window: Instant::now(),
            compressing: Duration::ZERO,
            sending: Duration::ZERO,
            levels: vec![level],
        }))
    }

    /// Compresses `bytes` (and flushes, when `flush`) into `link`.
    fn send<L: Write + ?Sized>(&mut self, link: &mut L, bytes: &[u8], flush: bool) -> Result<()> {
        let t = Instant::now();
        self.z.write_all(bytes).context("compressing disk writes")?;
        if flush {
            self.z.flush().context("compressing disk writes")?;
        }
        self.compressing += t.elapsed();
        let made = std::mem::take(self.z.get_mut());
        let t = Instant::now();
        link.write_all(&made).context("sending disk writes")?;
        self.sending += t.elapsed();
        self.retune(link)
    }

    /// At the end of a window, lets the tuner decide the level.
    fn retune<L: Write + ?Sized>(&mut self, link: &mut L) -> Result<()> {
        let wall = self.window.elapsed();
        let Some(tuner) = self.tuner.as_mut() else {
            return Ok(());
        };
        if wall < WINDOW {
            return Ok(());
        }
        let w = Window {
            wall,
            link: self.sending,
            idle: wall.saturating_sub(self.sending + self.compressing),
        };
        self.window = Instant::now();
        self.compressing = Duration::ZERO;
        self.sending = Duration::ZERO;
        if let Some((level, _)) = tuner.decide(&w) {
            let next =
                zstd::stream::write::Encoder::new(Vec::new(), level).context("starting zstd")?;
            let ended = std::mem::replace(&mut self.z, next)
                .finish()
                .context("compressing disk writes")?;
            link.write_all(&ended).context("sending disk writes")?;
            self.levels.push(level);
        }
        Ok(())
    }

    /// Ends the zstd stream on `link`; returns the levels it went through.
    fn finish<L: Write + ?Sized>(self, link: &mut L) -> Result<Vec<i32>> {
        let rest = self.z.finish().context("ending zstd")?;
        link.write_all(&rest).context("ending the disk stream")?;
        Ok(self.levels)
    }
}

/// Where `auto` starts on a disk: a disk is mostly cold data, where the ratio counts (on
/// the demo's disk zstd 6 makes 30.2 MB of what zstd 3 makes 32.3 MB), and its bulk copy
/// is long enough for the tuner to come down where the link is fast.
const DISK_AUTO_START: i32 = 6;

/// What the destination's export held when the copy began (its base index), and which of
/// its blocks this copy has written since: only blocks not yet written are referred to,
/// since the destination applies the stream in order.
struct Base {
    index: Vec<u64>,
    /// Index hash to the first block that had it.
    first: std::collections::HashMap<u64, u64>,
    written: Vec<bool>,
}

impl Base {
    /// A block of the base that holds `block` now, preferring `target` itself.
    fn find(&self, target: u64, block: &[u8]) -> Option<u64> {
        let h = index_hash(block);
        let unwritten = |b: u64| !self.written.get(b as usize).copied().unwrap_or(true);
        if self.index.get(target as usize) == Some(&h) && unwritten(target) {
            return Some(target);
        }
        self.first.get(&h).copied().filter(|&b| unwritten(b))
    }

    /// Blocks touched by `len` bytes at `offset` are no longer the base's.
    fn touch(&mut self, offset: u64, len: u64) {
        if len == 0 || self.written.is_empty() {
            return;
        }
        let (first, last) = (offset / BLOCK, (offset + len - 1) / BLOCK);
        for b in first..=last.min(self.written.len() as u64 - 1) {
            self.written[b as usize] = true;
        }
    }
}

impl<'l, L: Read + Write + ?Sized> DiskOut<'l, L> {
    /// Says hello on `link`, learns the size of the destination's export from its answer
    /// (the size this export then has), and starts the stream with `enc` (pages of 4 KiB),
    /// compressed as `compression` says.
    pub fn start(
        link: &'l mut L,
        label: &str,
        enc: Box<dyn StreamEncoder>,
        phase: Phase,
        window: u64,
        compression: LinkCompression,
    ) -> Result<Self> {
        session::write_message(
            &mut &mut *link,
            &DiskHello {
                label: label.into(),
                zstd: compression != LinkCompression::None,
            },
        )
        .context("sending the disk hello")?;
        let ready: DiskReady = session::read_message(&mut &mut *link)
            .context("waiting for the destination end to open its export")?;
        if let Some(e) = ready.error {
            bail!("the destination end could not open its export: {e}");
        }
        let disk_bytes = ready.disk_bytes;
        let base = match ready.base_blocks {
            0 => None,
            n => {
                anyhow::ensure!(
                    n <= disk_bytes / BLOCK,
                    "a base index of {n} blocks for a disk of {disk_bytes} bytes"
                );
                let mut bytes = vec![0u8; n as usize * 8];
                link.read_exact(&mut bytes)
                    .context("reading the destination's base index")?;
                let index: Vec<u64> = bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let mut first = std::collections::HashMap::with_capacity(index.len());
                for (b, &h) in index.iter().enumerate() {
                    first.entry(h).or_insert(b as u64);
                }
                Some(Base {
                    written: vec![false; index.len()],
                    index,
                    first,
                })
            }
        };
        Ok(DiskOut {
            link,
            enc,
            out: Vec::new(),
            size: disk_bytes,
            seq: 0,
            unconfirmed: 0,
            window: window.max(1),
            phase,
            failed: None,
            carried: DiskCarried::default(),
            base,
            zstd: DiskZstd::new(compression)?,
        })
    }

    /// The export's size: the destination's.
    pub fn size_bytes(&self) -> u64 {
        self.size
    }

    /// What went out so far.
    pub fn carried(&self) -> DiskCarried {
        self.carried.clone()
    }

    /// Why the link failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Ends the stream after the destination confirmed everything written and flushed.
    pub fn finish(mut self) -> Result<DiskCarried> {
        if let Some(why) = &self.failed {
            bail!("the disk tunnel's link failed: {why}");
        }
        self.confirm(true)?;
        self.enc.finish(&mut self.out)?;
        self.send()?;
        if let Some(z) = self.zstd.take() {
            self.carried.zstd_levels = z.finish(&mut *self.link)?;
        }
        self.link.flush().context("ending the disk stream")?;
        Ok(self.carried)
    }

    /// Writes the encoder's output to the link (through zstd, when on).
    fn send(&mut self) -> Result<()> {
        self.carried.stream_bytes += self.out.len() as u64;
        match &mut self.zstd {
            None => self
                .link
                .write_all(&self.out)
                .context("sending disk writes")?,
            Some(z) => z.send(&mut *self.link, &self.out, false)?,
        }
        self.out.clear();
        Ok(())
    }

    /// Pushes everything sent so far onto the link: zstd's pending output too.
    fn push(&mut self) -> Result<()> {
        if let Some(z) = &mut self.zstd {
            z.send(&mut *self.link, &[], true)?;
        }
        self.link.flush().context("sending disk writes")
    }

    fn blob(&mut self, tag: u32, data: &[u8]) -> Result<()> {
        self.enc.append_blob(tag, data, &mut self.out)?;
        self.send()
    }

    /// Waits for the destination to confirm everything sent so far (written, and flushed
    /// when `flush`).
    fn confirm(&mut self, flush: bool) -> Result<()> {
        self.seq += 1;
        self.enc
            .append_blob(TAG_SYNC, &sync(self.seq, flush), &mut self.out)?;
        self.enc.end_iteration(&mut self.out)?;
        self.send()?;
        self.push()?;
        let ack: DiskAck = session::read_message(&mut &mut *self.link)
            .context("waiting for the destination to confirm the disk writes")?;
        if ack.seq != self.seq {
            bail!(
                "the destination confirmed sync {}, expected {}",
                ack.seq,
                self.seq
            );
        }
        if let Some(e) = ack.error {
            bail!("the destination could not write the disk: {e}");
        }
        self.carried.syncs += 1;
        self.unconfirmed = 0;
        Ok(())
    }

    /// After a request's bytes went out: confirm now if the phase, FUA or the window asks.
    fn settle(&mut self, bytes: u64, fua: bool) -> Result<()> {
        self.unconfirmed += bytes;
        if fua || self.phase.synchronous() || self.unconfirmed >= self.window {
            self.confirm(fua)?;
        }
        Ok(())
    }

    fn put(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let aligned = at % BLOCK == 0 && rest.len() as u64 >= BLOCK;
            if aligned {
                let (block, more) = rest.split_at(BLOCK as usize);
                let target = at / BLOCK;
                match self.base.as_ref().and_then(|b| b.find(target, block)) {
                    Some(b) => {
                        self.blob(TAG_BASE, &base_ref(target, b, strong_hash(block)))?;
                        self.carried.base_bytes += BLOCK;
                    }
                    None => {
                        self.enc.encode_page(target, block, &mut self.out)?;
                        self.send()?;
                    }
                }
                // from here on the destination's block holds this write, not the base
                if let Some(b) = &mut self.base {
                    b.touch(at, BLOCK);
                }
                self.carried.block_bytes += BLOCK;
                at += BLOCK;
                rest = more;
            } else {
                // up to the next block boundary (or the end), in blob pieces
                let to_boundary = (BLOCK - at % BLOCK) as usize;
                let n = rest.len().min(to_boundary).min(WRITE_PIECE);
                let mut blob = Vec::with_capacity(8 + n);
                blob.extend_from_slice(&at.to_le_bytes());
                blob.extend_from_slice(&rest[..n]);
                self.blob(TAG_WRITE, &blob)?;
                if let Some(b) = &mut self.base {
                    b.touch(at, n as u64);
                }
                at += n as u64;
                rest = &rest[n..];
            }
        }
        self.carried.written_bytes += data.len() as u64;
        self.settle(data.len() as u64, fua)
    }

    /// Runs `f`; a failure of the link fails this request and every one after it.
    fn guarded(&mut self, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<(), u32> {
        if self.failed.is_some() {
            return Err(EIO);
        }
        f(self).map_err(|e| {
            self.failed = Some(format!("{e:#}"));
            EIO
        })
    }
}

impl<L: Read + Write + ?Sized> BlockTarget for DiskOut<'_, L> {
    fn size(&self) -> u64 {
        self.size
    }

    /// The source end holds no copy of the disk: the mirror job only writes.
    fn read(&mut self, _offset: u64, _buf: &mut [u8]) -> Result<(), u32> {
        Err(crate::nbd::proto::EPERM)
    }

    fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), u32> {
        self.guarded(|s| s.put(offset, data, fua))
    }

    fn write_zeroes(&mut self, offset: u64, len: u64, fua: bool) -> Result<(), u32> {
        self.guarded(|s| {
            if let Some(b) = &mut s.base {
                b.touch(offset, len);
            }
            s.blob(TAG_ZEROES, &range(offset, len))?;
            s.carried.zeroed_bytes += len;
            s.settle(0, fua)
        })
    }

    fn trim(&mut self, offset: u64, len: u64) -> Result<(), u32> {
        self.guarded(|s| {
            if let Some(b) = &mut s.base {
                b.touch(offset, len);
            }
            s.blob(TAG_TRIM, &range(offset, len))?;
            s.carried.zeroed_bytes += len;
            s.settle(0, false)
        })
    }

    fn flush(&mut self) -> Result<(), u32> {
        self.guarded(|s| s.confirm(true))
    }

    /// A heartbeat: a sync point round trip, so that the destination end, which bounds
    /// its waits, sees the link alive while the mirror job has nothing to write (and what
    /// was written is confirmed meanwhile).
    fn idle(&mut self) {
        let _ = self.guarded(|s| s.confirm(false));
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn auto_zstd_changes_level_on_a_slow_link_and_the_stream_still_decodes() {
        // a link that takes 20 ms for every write: zstd waits for it most of the time
        struct Slow(Vec<u8>);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(20));
                self.0.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut z = DiskZstd::new(LinkCompression::ZstdAuto).unwrap().unwrap();
        let mut link = Slow(Vec::new());
        let mut sent = Vec::new();
        let start = Instant::now();
        let mut i = 0u32;
        while start.elapsed() < Duration::from_millis(1500) {
            let piece: Vec<u8> = (0..4096u32)
                .map(|j| ((i * 7 + j / 64) % 251) as u8)
                .collect();
            z.send(&mut link, &piece, i % 8 == 0).unwrap();
            sent.extend_from_slice(&piece);
            i += 1;
        }
        let levels = z.finish(&mut link).unwrap();
        assert_eq!(levels[0], DISK_AUTO_START);
        assert!(levels.len() > 1 && levels[1] > levels[0], "{levels:?}");
        assert_eq!(zstd::decode_all(&link.0[..]).unwrap(), sent);
    }
    use crate::disk::carry_in;
    use crate::encoders::EncoderChoice;
    use crate::nbd::{serve, Client, MemoryTarget};

    /// A destination end writing into a 1 MiB export in memory, on the far side of `link`.
    fn destination(mut link: UnixStream) -> std::thread::JoinHandle<Result<Vec<u8>>> {
        std::thread::spawn(move || {
            let (mut a, b) = UnixStream::pair()?;
            let export = std::thread::spawn(move || {
                let mut t = MemoryTarget(vec![0; 1 << 20]);
                let _ = serve(&mut a, "disk", &mut t);
                t.0
            });
            let mut client = Client::connect(b, "disk")?;
            carry_in(&mut link, &mut client, false)?;
            client.disconnect()?;
            Ok(export.join().unwrap())
        })
    }

    #[test]
    fn the_phases_decide_when_a_write_waits_for_the_destination() {
        let (mut link, far) = UnixStream::pair().unwrap();
        let dest = destination(far);
        let enc = EncoderChoice::InProcess
            .start(pagewire::Config::DEFAULT)
            .unwrap();
        let phase = Phase::default();
        let mut out = DiskOut::start(
            &mut link,
            "t",
            enc,
            phase.clone(),
            64 << 10,
            LinkCompression::None,
        )
        .unwrap();
        assert_eq!(out.size_bytes(), 1 << 20);
        let block = [7u8; 4096];
        // asynchronous: a write waits for nothing until the window (64 KiB) is full
        out.write(0, &block, false).unwrap();
        assert_eq!(out.carried().syncs, 0);
        for i in 1..16 {
            out.write(i * 4096, &block, false).unwrap();
        }
        assert_eq!(out.carried().syncs, 1, "the window filled once");
        // FUA waits, whatever the phase
        out.write(16 * 4096, &block, true).unwrap();
        assert_eq!(out.carried().syncs, 2);
        // synchronous: every write waits for the destination
        phase.set_synchronous(true);
        out.write(17 * 4096, &block, false).unwrap();
        out.write_zeroes(18 * 4096, 4096, false).unwrap();
        assert_eq!(out.carried().syncs, 4);
        out.finish().unwrap();
        let disk = dest.join().unwrap().unwrap();
        assert!(disk[..18 * 4096].chunks(4096).all(|b| b == block));
        assert!(disk[18 * 4096..].iter().all(|&b| b == 0));
    }

    #[test]
    fn heartbeats_keep_a_quiet_link_alive() {
        use std::time::Duration;
        let (mut link, far) = UnixStream::pair().unwrap();
        // the destination end gives up on a link silent for 1 s
        far.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let dest = destination(far);
        let enc = EncoderChoice::InProcess
            .start(pagewire::Config::DEFAULT)
            .unwrap();
        let mut out = DiskOut::start(
            &mut link,
            "t",
            enc,
            Phase::default(),
            64 << 20,
            LinkCompression::None,
        )
        .unwrap();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mirror = std::thread::spawn(move || {
            let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_nodelay(true).unwrap();
            let mut c = Client::connect(s, "disk").unwrap();
            c.write(0, &[5u8; 4096], false).unwrap();
            // quiet for 2.5 s, as a ready mirror job is while memory migrates
            std::thread::sleep(Duration::from_millis(2500));
            c.write(4096, &[6u8; 4096], false).unwrap();
            c.flush().unwrap();
            c.disconnect().unwrap();
        });
        let (mut conn, _) = l.accept().unwrap();
        conn.set_nodelay(true).unwrap();
        let idle = Duration::from_millis(300);
        crate::nbd::serve_tcp(&mut conn, "disk", &mut out, idle, Duration::from_secs(10)).unwrap();
        mirror.join().unwrap();
        let syncs = out.carried().syncs;
        assert!(syncs >= 4, "heartbeats while quiet: {syncs}");
        out.finish().unwrap();
        let disk = dest.join().unwrap().unwrap();
        assert!(disk[..4096].iter().all(|&b| b == 5) && disk[4096..8192].iter().all(|&b| b == 6));
    }

    #[test]
    fn after_the_link_fails_every_request_fails() {
        let (mut link, far) = UnixStream::pair().unwrap();
        let dest = destination(far.try_clone().unwrap());
        let enc = EncoderChoice::InProcess
            .start(pagewire::Config::DEFAULT)
            .unwrap();
        let mut out = DiskOut::start(
            &mut link,
            "t",
            enc,
            Phase::default(),
            64 << 10,
            LinkCompression::None,
        )
        .unwrap();
        out.write(0, &[1u8; 4096], false).unwrap();
        // the link goes down: the write still waiting in the encoder never reached the
        // destination, and the flush that would confirm it fails
        far.shutdown(std::net::Shutdown::Both).unwrap();
        assert_eq!(out.flush(), Err(EIO));
        assert!(out.failure().is_some());
        assert_eq!(out.write(4096, &[2u8; 4096], false), Err(EIO));
        assert_eq!(out.flush(), Err(EIO));
        assert!(out.finish().is_err());
        assert!(dest.join().unwrap().is_err());
    }
}
