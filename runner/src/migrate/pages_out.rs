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
        enc.set_plain(false);
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
            plain: false,
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
        for (k, &pfn) in pfns.iter().enumerate() {
            read(pfn, &mut self.page)?;
            self.enc.encode_page(pfn, &self.page, &mut self.out)?;
            c.bytes += self.send_out("sending pages")?;
            c.lz4_pages += u64::from(self.enc.lz4());
            c.zstd_pages += u64::from(self.zstd_on());
            c.plain_pages += u64::from(self.plain);
            if let Some(stage) = self.auto.as_mut().and_then(Chooser::page_sent) {
                if let Some(w) = self.auto.as_ref().and_then(|a| a.windows.last()) {
                    if w.stage_next != w.stage {
                        progress.stage_changed(w);
                    }
                }
                self.set_stage(stage)?;
            }
            if k % 256 == 255 {
                progress.pages_sent(256);
            }
        }
        progress.pages_sent(pfns.len() as u64 % 256);
        Ok(c)
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
