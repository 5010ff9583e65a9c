//! Compression of the whole pagewire stream on the tunnel's link: zstd, streaming, with its
//! window across frames (the codec's LZ4 is then off: zstd on LZ4 output gains little).
//! QEMU's multifd compresses its pages with zstd; the tunnel gives zstd what is left after
//! the codec's zero pages, duplicates and deltas. Flushed at every QEMU section end, so
//! nothing waits in the compressor. zstd runs on its own thread beside the parser and the
//! codec.

use std::io::{Read, Write};
use std::sync::mpsc;

use anyhow::{bail, Context, Result};

/// What compresses the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkCompression {
    /// The codec's own stream (with LZ4 frames, if the codec setting has them).
    None,
    /// zstd at this level over the codec's stream.
    Zstd { level: i32 },
}

/// zstd's level unless told otherwise: 1, as QEMU's multifd. On the demo guest at
/// 100 Mbit/s level 3 saved 4.5 % of the bytes but its CPU made the migration 0.5 s longer
/// on this 2-core machine (`docs/TUNNEL.md`).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

impl LinkCompression {
    /// `none` or `zstd` (at `level`).
    pub fn parse(name: &str, level: i32) -> Result<Self> {
        match name {
            "none" => Ok(LinkCompression::None),
            "zstd" => {
                if !zstd::compression_level_range().contains(&level) {
                    bail!(
                        "zstd level {level} is outside {:?}",
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
            LinkCompression::Zstd { .. } => "zstd",
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
    ) -> Result<T> {
        let LinkCompression::Zstd { level } = self else {
            return f(link);
        };
        std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<Piece>(QUEUED);
            let zstd = scope.spawn(move || compress(link, level, &rx));
            let mut front = Front { tx: Some(tx) };
            let t = f(&mut front);
            let ended = t.is_ok() && front.send(Piece::End).is_ok();
            drop(front);
            let compressed = zstd
                .join()
                .map_err(|_| anyhow::anyhow!("the zstd thread panicked"))?;
            match (t, compressed) {
                // the link failed under zstd: its reason, not the broken pipe `f` saw
                (_, Err(e)) | (Err(e), Ok(())) => Err(e),
                (Ok(t), Ok(())) => {
                    anyhow::ensure!(ended, "the zstd thread stopped early");
                    Ok(t)
                }
            }
        })
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

/// The zstd thread: compresses pieces into `link` until the end (or the sender is gone,
/// which leaves the compressed stream unended: the far end then fails the migration).
fn compress<W: Write>(link: &mut W, level: i32, rx: &mpsc::Receiver<Piece>) -> Result<()> {
    let mut z = zstd::stream::write::Encoder::new(link, level).context("starting zstd")?;
    let sending = "sending to the tunnel's destination end";
    while let Ok(piece) = rx.recv() {
        match piece {
            Piece::Bytes(b) => z.write_all(&b).context(sending)?,
            Piece::Flush => z.flush().context(sending)?,
            Piece::End => {
                z.finish().context(sending)?;
                return Ok(());
            }
        }
    }
    Ok(())
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
    fn both_settings_round_trip_and_unknown_ones_are_refused() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in [LinkCompression::None, LinkCompression::Zstd { level: 3 }] {
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
        assert!(LinkCompression::parse("zstd", 99).is_err());
        assert!(LinkCompression::parse("lz5", 3).is_err());
        assert!(read("brotli", &mut &[][..], |_| Ok(())).is_err());
    }
}
