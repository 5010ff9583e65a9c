//! One lane's way out: its stream encoder, zstd between the encoder and the link (if on),
//! `auto`'s choice per window, and the link it writes. A migration has one per lane; lane 0
//! also carries the session's messages (see `source`), lanes 1.. only pages (see `lanes`).

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use pagewire::Config;

use super::compress::{AutoStage, Chooser, Compression, Stage, Window};
use super::progress::MigrationProgress;
use super::session::{self, DestMessage, Reply};
use crate::encoders::StreamEncoder;
use crate::net::Link;
use pagewire_stream_zstd::ZstdOut;

/// Counts bytes written through it.
pub(super) struct Counted<'a, W: Write + ?Sized> {
    pub(super) inner: &'a mut W,
    pub(super) bytes: u64,
}

impl<W: Write + ?Sized> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Pages of one stretch that went out, by the stage they went in.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PageCounts {
    /// Stream bytes (before zstd).
    pub(super) bytes: u64,
    pub(super) lz4_pages: u64,
    pub(super) zstd_pages: u64,
    pub(super) plain_pages: u64,
}

impl std::ops::AddAssign for PageCounts {
    fn add_assign(&mut self, o: Self) {
        self.bytes += o.bytes;
        self.lz4_pages += o.lz4_pages;
        self.zstd_pages += o.zstd_pages;
        self.plain_pages += o.plain_pages;
    }
}

/// One lane's encoder and link.
pub(super) struct PagesOut<'l, W: Link + ?Sized> {
    pub(super) w: Counted<'l, W>,
    /// zstd between the encoder and the link (`--compress zstd`, and `auto`).
    zstd: Option<ZstdOut>,
    pub(super) enc: Box<dyn StreamEncoder>,
    /// The encoder's output, until it is written.
    pub(super) out: Vec<u8>,
    /// The stage per window (`--compress auto`).
    pub(super) auto: Option<Chooser>,
    /// Pages go whole past the cache now (`auto`'s lowest stage).
    plain: bool,
    page: Vec<u8>,
}

/// Plain pages sent in one step (at most: a batch also ends at `auto`'s next check), each
/// read straight into its frame: 64 pages, 256 KiB of 4 KiB pages, about four frames of
/// the default 64 KiB, between two looks at the progress and `auto`'s clocks.
const PLAIN_BATCH: usize = 64;

impl<'l, W: Link + ?Sized> PagesOut<'l, W> {
    /// Over `link`, with `enc` for a stream of `cfg` and the `compression` asked for.
    pub(super) fn new(
        link: &'l mut W,
        cfg: Config,
        mut enc: Box<dyn StreamEncoder>,
        compression: Compression,
        page_size: usize,
    ) -> Result<Self> {
        // LZ4 starts on wherever the stream allows it; `auto` may switch it per window, and
        // go down to plain pages where the encoder can send them
        let can_plain = enc.set_plain(true);
        let plain = compression == Compression::Plain;
        if plain && !can_plain {
            bail!("--compress plain needs an encoder that can send plain pages: use --encoder inprocess");
        }
        enc.set_plain(plain);
        let lowest = if can_plain {
            Stage::Plain
        } else {
            Stage::Stored
        };
        let auto = (compression == Compression::Auto && cfg.lz4)
            .then(|| Chooser::new(AutoStage::with_lowest(lowest)));
        // zstd chunks on the link for zstd, and for `auto`, which may climb to zstd (stored
        // chunks until it does)
        let zstd = match compression {
            Compression::Zstd { level } => Some(ZstdOut::new(Some(level))?),
            _ if auto.is_some() => Some(ZstdOut::new(None)?),
            _ => None,
        };
        Ok(PagesOut {
            w: Counted {
                inner: link,
                bytes: 0,
            },
            zstd,
            enc,
            out: Vec::with_capacity(cfg.max_output_len()),
            auto,
            plain,
            page: vec![0u8; page_size],
        })
    }

    /// Whether the stream goes in zstd chunks.
    pub(super) fn chunked(&self) -> bool {
        self.zstd.is_some()
    }

    /// Writes what the encoder produced (through zstd, if on) and empties the buffer;
    /// returns the stream bytes it held.
    pub(super) fn send_out(&mut self, what: &'static str) -> Result<u64> {
        let n = self.out.len() as u64;
        match &mut self.zstd {
            Some(z) => z.write(&mut self.w, &self.out).context(what)?,
            None => self.w.write_all(&self.out).context(what)?,
        }
        self.out.clear();
        Ok(n)
    }

    /// Whether zstd compresses what goes out now.
    fn zstd_on(&self) -> bool {
        self.zstd.as_ref().is_some_and(ZstdOut::compressing)
    }

    /// Applies `auto`'s choice: LZ4 on the frames, zstd on the stream, or neither.
    fn set_stage(&mut self, stage: Stage) -> Result<()> {
        self.enc.set_lz4(stage == Stage::Lz4);
        self.plain = self.enc.set_plain(stage == Stage::Plain);
        if let Some(z) = &mut self.zstd {
            z.set_level(&mut self.w, stage.zstd_level())
                .context("sending pages")?;
        }
        Ok(())
    }

    /// Gets everything sent so far to the destination (zstd's pending output included).
    pub(super) fn flush(&mut self, what: &'static str) -> Result<()> {
        match &mut self.zstd {
            Some(z) => z.flush(&mut self.w),
            None => self.w.flush(),
        }
        .context(what)
    }

    /// Ends the stream on the link (zstd's last chunk, if any).
    pub(super) fn finish_link(&mut self, what: &'static str) -> Result<()> {
        match &mut self.zstd {
            Some(z) => z.finish(&mut self.w),
            None => self.w.flush(),
        }
        .context(what)
    }

    /// Sends the pages `pfns`, each read by `read`, switching stages as `auto` decides.
    pub(super) fn send_pages(
        &mut self,
        pfns: &[u64],
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
        progress: &mut dyn MigrationProgress,
    ) -> Result<PageCounts> {
        let mut c = PageCounts::default();
        let (mut rest, mut reported) = (pfns, 0usize);
        while !rest.is_empty() {
            // plain pages in bulk, up to `auto`'s next check; the other stages one by one
            let take = match (&self.auto, self.plain) {
                (_, false) => 1,
                (Some(a), true) => rest.len().min(PLAIN_BATCH).min(a.pages_to_check() as usize),
                (None, true) => rest.len().min(PLAIN_BATCH),
            };
            let now;
            (now, rest) = rest.split_at(take);
            let bytes = if take == 1 {
                read(now[0], &mut self.page)?;
                self.enc.encode_page(now[0], &self.page, &mut self.out)?;
                self.send_out("sending pages")?
            } else {
                self.send_plain(now, read, "sending pages")?
            };
            c.bytes += bytes;
            let n = take as u64;
            c.lz4_pages += n * u64::from(self.enc.lz4());
            c.zstd_pages += n * u64::from(self.zstd_on());
            c.plain_pages += n * u64::from(self.plain);
            let link = &self.w.inner;
            let closed = self.auto.as_mut().and_then(|a| {
                a.bytes_out(bytes);
                a.pages_sent(n, || link.backlog())
            });
            if let Some(stage) = closed {
                if let Some(w) = self.auto.as_ref().and_then(|a| a.windows.last()) {
                    if w.stage_next != w.stage {
                        progress.stage_changed(w);
                    }
                }
                self.set_stage(stage)?;
            }
            let sent = pfns.len() - rest.len();
            if sent - reported >= 256 {
                progress.pages_sent((sent - reported) as u64);
                reported = sent;
            }
        }
        progress.pages_sent((pfns.len() - reported) as u64);
        Ok(c)
    }

    /// Sends `pfns` as plain pages in bulk, each read by `read` straight into its frame and
    /// the frames written from where they were built; returns the stream bytes.
    fn send_plain(
        &mut self,
        pfns: &[u64],
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
        what: &'static str,
    ) -> Result<u64> {
        let mut bytes = self.send_out(what)?;
        let (w, zstd) = (&mut self.w, &mut self.zstd);
        let mut send = |piece: &[u8]| -> Result<()> {
            bytes += piece.len() as u64;
            match zstd {
                Some(z) => z.write(w, piece),
                None => w.write_all(piece),
            }
            .context(what)
        };
        self.enc
            .send_plain_pages(pfns, read, &mut self.page, &mut send)?;
        Ok(bytes)
    }

    /// The last pages, while the guest is paused: no stage changes any more.
    pub(super) fn send_last(
        &mut self,
        pfns: &[u64],
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<PageCounts> {
        let n = pfns.len() as u64;
        let mut c = PageCounts {
            bytes: 0,
            lz4_pages: if self.enc.lz4() { n } else { 0 },
            zstd_pages: if self.zstd_on() { n } else { 0 },
            plain_pages: if self.plain { n } else { 0 },
        };
        if self.plain {
            for now in pfns.chunks(PLAIN_BATCH) {
                c.bytes += self.send_plain(now, read, "sending the last pages")?;
            }
            return Ok(c);
        }
        for &pfn in pfns {
            read(pfn, &mut self.page)?;
            self.enc.encode_page(pfn, &self.page, &mut self.out)?;
            c.bytes += self.send_out("sending the last pages")?;
        }
        Ok(c)
    }

    /// Ends iteration `iteration` (1-based), gets it to the destination and waits for its
    /// acknowledgement (left out of `auto`'s window); returns the stream bytes it added.
    pub(super) fn end_iteration(&mut self, iteration: u32) -> Result<u64> {
        self.enc.end_iteration(&mut self.out)?;
        let bytes = self.send_out("sending pages")?;
        self.flush("sending pages")?;
        let waiting = std::time::Instant::now();
        wait_ack(self.w.inner, u64::from(iteration - 1))?;
        self.set_aside(waiting.elapsed());
        Ok(bytes)
    }

    /// Leaves `waited` out of `auto`'s window (the lane waited for something else than
    /// its link or its encoder).
    pub(super) fn set_aside(&mut self, waited: Duration) {
        if let Some(auto) = &mut self.auto {
            auto.set_aside(waited);
        }
    }

    /// `auto`'s windows so far.
    pub(super) fn windows(&self) -> &[Window] {
        self.auto.as_ref().map_or(&[], |a| &a.windows)
    }
}

/// Waits for the destination's acknowledgement of iteration `n`; a refusal arrives instead
/// when the destination gave up.
fn wait_ack<R: std::io::Read + ?Sized>(mut r: &mut R, n: u64) -> Result<()> {
    match session::read_message(&mut r)
        .context("no acknowledgement from the destination (link down or destination gone)")?
    {
        DestMessage::Ack(got) if got == n => Ok(()),
        DestMessage::Ack(got) => bail!("acknowledgement of iteration {got}, expected {n}"),
        DestMessage::Ready => bail!("the destination said ready in the middle of the stream"),
        DestMessage::Reply(Reply { error, .. }) => bail!(
            "the destination refused the migration: {}",
            error.unwrap_or_else(|| "no reason given".into())
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use pagewire::{DecodeMode, Decoder, EncoderStats, MemoryImage};
    use pagewire_stream_zstd::ZstdIn;

    use super::*;
    use crate::encoders::InProcessEncoder;
    use crate::migrate::compress::{CHECK_PAGES, FIRST_CHECKS, WINDOW_PAGES};
    use crate::migrate::progress::NoProgress;

    const PS: usize = 4096;
    /// More than a window of pages, so that `auto` closes one.
    const N: usize = (WINDOW_PAGES + CHECK_PAGES) as usize + 100;

    /// Sends `N` pages (every fifth zero), highest pfn first, from plain pages on with
    /// `compression`; checks that the stream decodes to them. Returns what was counted,
    /// `auto`'s windows and the encoder's counters.
    fn send_plain(compression: Compression) -> (PageCounts, Vec<Window>, EncoderStats) {
        let mut reads = 0;
        let r = send_plain_counting(compression, &mut reads);
        // each page read once, straight into its frame
        assert_eq!(reads, N);
        r
    }

    /// As [`send_plain`]; `reads` counts the calls of the page reader.
    fn send_plain_counting(
        compression: Compression,
        reads: &mut usize,
    ) -> (PageCounts, Vec<Window>, EncoderStats) {
        let mem: Vec<u8> = (0..N * PS)
            .map(|i| {
                if (i / PS) % 5 == 0 {
                    0
                } else {
                    (i / 7 + i / PS) as u8 | 1
                }
            })
            .collect();
        let cfg = Config::DEFAULT;
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let enc = Box::new(InProcessEncoder::new(cfg).unwrap());
        let mut out = PagesOut::new(&mut a, cfg, enc, compression, PS).unwrap();
        out.set_stage(Stage::Plain).unwrap();
        assert!(out.plain);
        let pfns: Vec<u64> = (0..N as u64).rev().collect();
        let mut read = |pfn: u64, page: &mut [u8]| {
            let at = pfn as usize * PS;
            page.copy_from_slice(&mem[at..at + PS]);
            *reads += 1;
            Ok(())
        };
        let c = out.send_pages(&pfns, &mut read, &mut NoProgress).unwrap();
        let windows = out.windows().to_vec();
        out.enc.finish(&mut out.out).unwrap();
        out.send_out("test").unwrap();
        out.finish_link("test").unwrap();
        let stats = out.enc.stats();
        let chunked = out.chunked();
        drop(out);
        drop(a);
        let wire = reader.join().unwrap();
        let stream = if chunked {
            let mut s = Vec::new();
            ZstdIn::new()
                .unwrap()
                .reader(&mut &wire[..])
                .read_to_end(&mut s)
                .unwrap();
            s
        } else {
            wire
        };
        let mut store = vec![0u8; cfg.decoder_storage_len_for(DecodeMode::InPlace)];
        let (mut dec, used) =
            Decoder::from_header(&stream, DecodeMode::InPlace, &mut store).unwrap();
        let mut back = vec![0x5au8; N * PS];
        let done = dec
            .decode(&stream[used..], &mut MemoryImage::new(&mut back, PS))
            .unwrap();
        assert_eq!(used + done, stream.len());
        assert!(dec.is_complete());
        assert!(back == mem, "decoded memory differs");
        (c, windows, stats)
    }

    #[test]
    fn plain_pages_in_bulk_arrive_as_they_were_read() {
        let (c, _, stats) = send_plain(Compression::None);
        assert_eq!(c.plain_pages, N as u64);
        assert_eq!(stats.zero.pages, N.div_ceil(5) as u64);
        assert_eq!(stats.raw.pages, (N - N.div_ceil(5)) as u64);
    }

    #[test]
    fn a_page_that_cannot_be_read_fails_the_batch_and_sends_none_of_it() {
        let cfg = Config::DEFAULT;
        let (mut link, _peer) = UnixStream::pair().unwrap();
        let enc = Box::new(InProcessEncoder::new(cfg).unwrap());
        let mut out = PagesOut::new(&mut link, cfg, enc, Compression::None, PS).unwrap();
        out.set_stage(Stage::Plain).unwrap();
        let mut read = |pfn: u64, page: &mut [u8]| {
            anyhow::ensure!(pfn != 40, "page {pfn} is gone");
            page.fill(pfn as u8 | 1);
            Ok(())
        };
        let pfns: Vec<u64> = (0..64).collect();
        let e = out
            .send_pages(&pfns, &mut read, &mut NoProgress)
            .unwrap_err();
        assert!(format!("{e:#}").contains("page 40 is gone"), "{e:#}");
        // the frames before the one page 40 was read into went out (15 pages each, pages
        // 0-29); that frame did not
        let sent = out.w.bytes as usize;
        let frame = cfg.max_frame_len();
        assert!(
            sent > frame && sent <= pagewire::HEADER_LEN + 2 * frame,
            "{sent} bytes of {frame}-byte frames"
        );
    }

    #[test]
    fn under_auto_plain_batches_end_at_its_checks() {
        let (c, windows, stats) = send_plain(Compression::Auto);
        assert_eq!(stats.pages(), N as u64);
        // plain until the first window closed, at a check (one of the stream's first, or
        // every CHECK_PAGES of a window) or full, never inside a batch
        assert!(!windows.is_empty());
        assert!(c.plain_pages >= windows[0].pages);
        let mut counted = 0;
        for w in &windows {
            counted += w.pages;
            assert!(
                w.pages % CHECK_PAGES == 0 || FIRST_CHECKS.contains(&counted),
                "{windows:?}"
            );
        }
    }
}
