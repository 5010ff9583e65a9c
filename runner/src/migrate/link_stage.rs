//! Compression of the whole pagewire stream on the QEMU tunnel's link (and, its level
//! tuner, on the disk tunnel's): zstd, streaming, with its
//! window across frames (the codec's LZ4 is then off: zstd on LZ4 output gains little).
//! QEMU's multifd compresses its pages with zstd; the tunnel gives zstd what is left after
//! the codec's zero pages, duplicates and deltas. Flushed at every QEMU section end, so
//! nothing waits in the compressor. zstd runs on its own thread beside the parser and the
//! codec.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::zstd_level::{LevelChange, LevelTuner, Reason, Window, AUTO_LEVELS, WINDOW};
use crate::migrate::compress::thread_cpu_time;

/// What compresses the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkCompression {
    /// The codec's own stream (with LZ4 frames, if the codec setting has them).
    None,
    /// zstd at this level over the codec's stream.
    Zstd { level: i32 },
    /// zstd over the codec's stream, its level chosen as the migration runs
    /// ([`super::zstd_level`]).
    ZstdAuto,
}

/// zstd's level unless told otherwise: chosen as the migration runs.
pub const DEFAULT_ZSTD_LEVEL: &str = "auto";

impl LinkCompression {
    /// `none` or `zstd` (at `level`: a number, or `auto`).
    pub fn parse(name: &str, level: &str) -> Result<Self> {
        match name {
            "none" => Ok(LinkCompression::None),
            "zstd" if level == "auto" => Ok(LinkCompression::ZstdAuto),
            "zstd" => {
                let level: i32 = level.parse().with_context(|| {
                    format!("zstd level {level:?} is neither auto nor a number")
                })?;
                if !zstd::compression_level_range().contains(&level) || level == 0 {
                    bail!(
                        "zstd level {level} is outside {:?} (0 is not a level)",
                        zstd::compression_level_range()
                    );
                }
                Ok(LinkCompression::Zstd { level })
            }
            _ => bail!("unknown link compression {name:?}: use zstd or none"),
        }
    }

    /// Its name in the hello.
    pub fn name(self) -> &'static str {
        match self {
            LinkCompression::None => "none",
            LinkCompression::Zstd { .. } | LinkCompression::ZstdAuto => "zstd",
        }
    }

    /// Whether the codec should put LZ4 on its frames under it.
    pub fn wants_codec_lz4(self) -> bool {
        self == LinkCompression::None
    }

    /// Runs `f` on a writer that compresses into `link`, then ends the compressed stream.
    /// zstd runs on a thread of its own, so that it overlaps with `f`'s work (parsing and
    /// the codec); at most [`QUEUED`] pieces wait for it.
    pub fn write<W: Write + Send, T>(
        self,
        link: &mut W,
        f: impl FnOnce(&mut dyn Write) -> Result<T>,
    ) -> Result<(T, StageReport)> {
        let (start_level, tuner) = match self {
            LinkCompression::None => return Ok((f(link)?, StageReport::default())),
            LinkCompression::Zstd { level } => (level, None),
            LinkCompression::ZstdAuto => {
                let t = LevelTuner::default();
                (t.level(), Some(t))
            }
        };
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<Piece>(QUEUED);
            let zstd = scope.spawn(move || compress(link, start_level, tuner, &rx));
            let mut front = Front { tx: Some(tx) };
            let t = f(&mut front);
            let ended = t.is_ok() && front.send(Piece::End).is_ok();
            drop(front);
            let compressed = zstd
                .join()
                .map_err(|_| anyhow::anyhow!("the zstd thread panicked"))?;
            match (t, compressed) {
                // the link failed under zstd: its reason, not the broken pipe `f` saw
                (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
                (Ok(t), Ok(report)) => {
                    anyhow::ensure!(ended, "the zstd thread stopped early");
                    Ok((t, report))
                }
            }
        })
    }
}

/// What the link stage did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageReport {
    /// CPU seconds of the zstd thread (compressing, and TLS under it).
    pub cpu_s: f64,
    /// The level it started at and ended at (`None` without zstd).
    pub first_level: Option<i32>,
    pub last_level: Option<i32>,
    /// With `auto`: every change of level, when and why.
    pub level_changes: Vec<LevelChange>,
}

impl StageReport {
    /// For reports: "zstd level 1", or with `auto` "zstd auto: level 1, then 2 at 0.22 s
    /// (zstd waited for the link), ...".
    pub fn describe(&self) -> Option<String> {
        let first = self.first_level?;
        if self.level_changes.is_empty() {
            return Some(format!("zstd level {first}"));
        }
        let steps: Vec<String> = self
            .level_changes
            .iter()
            .map(|c| {
                let why = match c.reason {
                    Reason::LinkBound => "zstd waited for the link",
                    Reason::ZstdBound => "zstd busy without pause",
                };
                format!("{} at {:.2} s ({why})", c.level, c.at_s)
            })
            .collect();
        Some(format!(
            "zstd auto: level {first}, then {}",
            steps.join(", ")
        ))
    }
}

/// Pieces of stream waiting for zstd.
pub const QUEUED: usize = 8;

/// What the compressing thread is given.
enum Piece {
    Bytes(Vec<u8>),
    Flush,
    End,
}

/// The writer `f` sees: hands pieces to the zstd thread.
struct Front {
    tx: Option<mpsc::SyncSender<Piece>>,
}

impl Front {
    fn send(&mut self, p: Piece) -> std::io::Result<()> {
        let gone = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the link failed");
        self.tx.as_ref().ok_or_else(gone)?.send(p).map_err(|_| {
            self.tx = None;
            gone()
        })
    }
}

impl Write for Front {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.send(Piece::Bytes(buf.to_vec()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send(Piece::Flush)
    }
}

/// The link under zstd, timing how long zstd's output waits for it.
struct Timed<'w, W: Write> {
    link: &'w mut W,
    waited: Duration,
}

impl<W: Write> Write for Timed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let t = Instant::now();
        let n = self.link.write(buf);
        self.waited += t.elapsed();
        n
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let t = Instant::now();
        let r = self.link.flush();
        self.waited += t.elapsed();
        r
    }
}

/// The zstd thread: compresses pieces into `link` until the end (or the sender is gone,
/// which leaves the compressed stream unended: the far end then fails the migration).
/// With a tuner, every [`WINDOW`] it may end the zstd frame and go on in a new one at
/// another level (the far end's decoder reads one frame after the other).
fn compress<W: Write>(
    link: &mut W,
    level: i32,
    mut tuner: Option<LevelTuner>,
    rx: &mpsc::Receiver<Piece>,
) -> Result<StageReport> {
    let cpu = thread_cpu_time();
    let started = Instant::now();
    let mut report = StageReport {
        first_level: Some(level),
        last_level: Some(level),
        ..StageReport::default()
    };
    let mut timed = Timed {
        link,
        waited: Duration::ZERO,
    };
    let mut z = zstd::stream::write::Encoder::new(&mut timed, level).context("starting zstd")?;
    let sending = "sending to the tunnel's destination end";
    // the window's start, and the link's and the queue's waits then
    let mut window = (Instant::now(), Duration::ZERO, Duration::ZERO);
    let mut idle = Duration::ZERO;
    loop {
        let waited = Instant::now();
        let Ok(piece) = rx.recv() else { break };
        idle += waited.elapsed();
        match piece {
            Piece::Bytes(b) => z.write_all(&b).context(sending)?,
            Piece::Flush => z.flush().context(sending)?,
            Piece::End => {
                z.finish().context(sending)?;
                report.cpu_s = (thread_cpu_time() - cpu).as_secs_f64();
                return Ok(report);
            }
        }
        let Some(t) = tuner.as_mut() else { continue };
        if window.0.elapsed() < WINDOW {
            continue;
        }
        let link_now = z.get_ref().waited;
        let w = Window {
            wall: window.0.elapsed(),
            link: link_now - window.1,
            idle: idle - window.2,
        };
        window = (Instant::now(), link_now, idle);
        if let Some((level, reason)) = t.decide(&w) {
            debug_assert!(AUTO_LEVELS.contains(&level));
            let out = z.finish().context(sending)?;
            z = zstd::stream::write::Encoder::new(out, level).context("starting zstd")?;
            report.last_level = Some(level);
            report.level_changes.push(LevelChange {
                at_s: started.elapsed().as_secs_f64(),
                level,
                reason,
            });
        }
    }
    Ok(report)
}

/// Runs `f` on a reader that decompresses what `link` carries, as the hello named it.
pub fn read<R: Read, T>(
    name: &str,
    link: &mut R,
    f: impl FnOnce(&mut dyn Read) -> Result<T>,
) -> Result<T> {
    match name {
        "none" => f(link),
        "zstd" => {
            let mut z = zstd::stream::read::Decoder::new(link).context("starting zstd")?;
            f(&mut z)
        }
        other => {
            bail!("the source end compresses its link with {other:?}, which this end does not know")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_raises_the_level_on_a_slow_link_and_the_far_end_reads_every_frame() {
        // a link that takes 40 ms for every write: zstd waits for it most of the time
        struct Slow(Vec<u8>);
        impl Write for Slow {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                std::thread::sleep(Duration::from_millis(40));
                self.0.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // text-like pages zstd shrinks about 3x, in pieces with a flush now and then
        let data: Vec<u8> = (0..6_000_000u32)
            .map(|i| b"pagewire tunnel "[(i % 16) as usize] ^ ((i / 4099) % 7) as u8)
            .collect();
        let mut link = Slow(Vec::new());
        let ((), report) = LinkCompression::ZstdAuto
            .write(&mut link, |w| {
                for (i, piece) in data.chunks(64 * 1024).enumerate() {
                    w.write_all(piece)?;
                    if i % 8 == 7 {
                        w.flush()?;
                    }
                }
                Ok(())
            })
            .unwrap();
        assert!(
            report
                .level_changes
                .iter()
                .any(|c| c.reason == Reason::LinkBound && c.level > 1),
            "{report:?}"
        );
        assert_eq!(report.first_level, Some(1));
        assert_eq!(
            report.last_level,
            report.level_changes.last().map(|c| c.level)
        );
        // each change began a new zstd frame; the far end reads them all as one stream
        let back = read("zstd", &mut &link.0[..], |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)?;
            Ok(v)
        })
        .unwrap();
        assert!(
            back == data,
            "{} of {} bytes came back",
            back.len(),
            data.len()
        );
    }

    #[test]
    fn both_settings_round_trip_and_unknown_ones_are_refused() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [
            LinkCompression::None,
            LinkCompression::Zstd { level: 3 },
            LinkCompression::ZstdAuto,
        ] {
            let mut wire = Vec::new();
            c.write(&mut wire, |w| {
                w.write_all(&data[..1000])?;
                w.flush()?;
                w.write_all(&data[1000..])?;
                Ok(())
            })
            .unwrap();
            let back = read(c.name(), &mut &wire[..], |r| {
                let mut v = Vec::new();
                r.read_to_end(&mut v)?;
                Ok(v)
            })
            .unwrap();
            assert_eq!(back, data);
            if c != LinkCompression::None {
                assert!(wire.len() < data.len() / 4, "{} B", wire.len());
            }
        }
        // a link that fails under zstd: the writer gets an error, never a hang
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("cut"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let e = LinkCompression::Zstd { level: 1 }
            .write(&mut Broken, |w| {
                for _ in 0..1000 {
                    w.write_all(&data)?;
                    w.flush()?;
                }
                Ok(())
            })
            .unwrap_err();
        assert!(format!("{e:#}").contains("cut"), "{e:#}");
        assert!(LinkCompression::parse("zstd", "99").is_err());
        assert!(LinkCompression::parse("zstd", "0").is_err());
        assert!(LinkCompression::parse("zstd", "fast").is_err());
        assert!(LinkCompression::parse("lz5", "3").is_err());
        assert_eq!(
            LinkCompression::parse("zstd", "auto").unwrap(),
            LinkCompression::ZstdAuto
        );
        assert_eq!(
            LinkCompression::parse("zstd", "-3").unwrap(),
            LinkCompression::Zstd { level: -3 }
        );
        assert!(read("brotli", &mut &[][..], |_| Ok(())).is_err());
    }
}
