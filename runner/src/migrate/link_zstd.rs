//! zstd over the migration stream (`--compress zstd`): on a slow link, zstd with its window
//! across frames sends fewer bytes than the codec's LZ4 per frame (`docs/PERFORMANCE.md`:
//! redis 13.3 % of the raw pages against 19.8 %), and the link, not the CPU, sets the pace.
//!
//! The stream travels in chunks, each a little-endian `u32` and that many bytes, and ends
//! with a chunk of length 0. The top bit of the `u32` marks a *stored* chunk, stream bytes
//! as they are; the other chunks are zstd output, one zstd stream across them (new frames
//! where the level changes). `--compress auto` uses stored chunks while it does not want
//! zstd (`super::compress::LADDER`). The destination reads exactly the chunks, never past
//! the end, because the session's own messages (ready, commit) follow uncompressed on the
//! same link. zstd chunks go out whenever zstd has a chunk's worth, and at every flush: the
//! end of each iteration, whose acknowledgement the source then awaits, and the end of the
//! stream.

use std::io::{Read, Write};

use anyhow::{bail, ensure, Context, Result};

/// Bytes of zstd output sent as one chunk once they are ready.
const CHUNK: usize = 256 * 1024;

/// The largest chunk a destination accepts: zstd's output for one flush of the source's
/// writes, which are at most one codec output at a time, stays far below it.
pub const MAX_CHUNK: usize = 16 << 20;

/// Its name in the hello.
pub const NAME: &str = "zstd";

/// The length word's flag for a stored chunk.
const STORED: u32 = 1 << 31;

/// The levels `--zstd-level` accepts: zstd's own range, without 0 (its "default" alias).
pub fn check_level(level: i32) -> Result<i32> {
    ensure!(
        zstd::compression_level_range().contains(&level) && level != 0,
        "zstd level {level} is outside {:?} (0 is not a level)",
        zstd::compression_level_range()
    );
    Ok(level)
}

/// The source's side: sends the stream in chunks, compressed by zstd or stored.
pub struct ZstdOut {
    /// zstd's level now; `None`: stored chunks.
    level: Option<i32>,
    /// The zstd frame being written, and its level.
    z: Option<(zstd::stream::write::Encoder<'static, Vec<u8>>, i32)>,
}

impl ZstdOut {
    /// Chunks compressed at `level`, or stored (`None`) until [`ZstdOut::set_level`].
    pub fn new(level: Option<i32>) -> Result<Self> {
        Ok(ZstdOut { level, z: None })
    }

    /// Whether writes are compressed now.
    pub fn compressing(&self) -> bool {
        self.level.is_some()
    }

    /// From the next write on: zstd at `level`, or stored chunks (`None`). Whatever zstd
    /// holds goes out first; a new level starts a new zstd frame.
    pub fn set_level<W: Write + ?Sized>(
        &mut self,
        link: &mut W,
        level: Option<i32>,
    ) -> std::io::Result<()> {
        if level == self.level {
            return Ok(());
        }
        match (&mut self.z, level) {
            (Some((_, open)), Some(l)) if *open == l => {}
            (Some(_), Some(_)) => self.end_frame(link)?,
            (Some((z, _)), None) => {
                z.flush()?;
                send_ready(z, link)?;
            }
            (None, _) => {}
        }
        self.level = level;
        Ok(())
    }

    /// Sends `bytes`: compressed (what zstd has ready goes out once it makes a chunk), or
    /// as a stored chunk.
    pub fn write<W: Write + ?Sized>(&mut self, link: &mut W, bytes: &[u8]) -> std::io::Result<()> {
        let Some(level) = self.level else {
            for piece in bytes.chunks(MAX_CHUNK) {
                link.write_all(&(piece.len() as u32 | STORED).to_le_bytes())?;
                link.write_all(piece)?;
            }
            return Ok(());
        };
        let (z, _) = match &mut self.z {
            Some(open) => open,
            none => none.insert((
                zstd::stream::write::Encoder::new(Vec::with_capacity(2 * CHUNK), level)?,
                level,
            )),
        };
        z.write_all(bytes)?;
        if z.get_ref().len() >= CHUNK {
            send_ready(z, link)?;
        }
        Ok(())
    }

    /// Sends everything written so far: the destination can decode all of it.
    pub fn flush<W: Write + ?Sized>(&mut self, link: &mut W) -> std::io::Result<()> {
        if let Some((z, _)) = &mut self.z {
            z.flush()?;
            send_ready(z, link)?;
        }
        link.flush()
    }

    /// Ends the stream: the rest of zstd's output, then the end chunk.
    pub fn finish<W: Write + ?Sized>(&mut self, link: &mut W) -> std::io::Result<()> {
        self.end_frame(link)?;
        link.write_all(&0u32.to_le_bytes())?;
        link.flush()
    }

    /// Ends the open zstd frame, if any, and sends the rest of it.
    fn end_frame<W: Write + ?Sized>(&mut self, link: &mut W) -> std::io::Result<()> {
        if let Some((mut z, _)) = self.z.take() {
            z.do_finish()?;
            send_ready(&mut z, link)?;
        }
        Ok(())
    }
}

/// zstd's output so far, as one chunk (nothing when there is none).
fn send_ready<W: Write + ?Sized>(
    z: &mut zstd::stream::write::Encoder<'static, Vec<u8>>,
    link: &mut W,
) -> std::io::Result<()> {
    let ready = z.get_mut();
    if ready.is_empty() {
        return Ok(());
    }
    link.write_all(&(ready.len() as u32).to_le_bytes())?;
    link.write_all(ready)?;
    ready.clear();
    Ok(())
}

/// Decompressed bytes held at once: zstd output is produced as it is read, so a chunk that
/// decompresses to far more (a hostile or broken source) never makes memory grow beyond
/// this and zstd's window (at most 128 MiB: zstd's default limit on a frame's window).
const OUT: usize = 256 * 1024;

/// The destination's side: reads chunks off the link and hands out the stream they carry.
pub struct ZstdIn {
    z: zstd::stream::raw::Decoder<'static>,
    /// The current chunk, how much of it was taken (by zstd, or handed out when stored),
    /// and whether it is stored.
    chunk: Vec<u8>,
    taken: usize,
    stored: bool,
    /// Decompressed bytes, and how many of them were handed out.
    out: Vec<u8>,
    out_at: usize,
    out_len: usize,
    ended: bool,
}

impl ZstdIn {
    /// A decompressor with nothing read yet.
    pub fn new() -> Result<Self> {
        Ok(ZstdIn {
            z: zstd::stream::raw::Decoder::new().context("starting zstd")?,
            chunk: Vec::new(),
            taken: 0,
            stored: false,
            out: vec![0u8; OUT],
            out_at: 0,
            out_len: 0,
            ended: false,
        })
    }

    /// The stream, read through `link` for as long as the reader lives (the caller writes
    /// its acknowledgements to `link` between reads).
    pub fn reader<'a, R: Read + ?Sized>(&'a mut self, link: &'a mut R) -> Through<'a, R> {
        Through { zin: self, link }
    }

    /// After the stream's last record: the end chunk must follow, with nothing before it
    /// that decompresses to more stream.
    pub fn expect_end<R: Read + ?Sized>(&mut self, link: &mut R) -> Result<()> {
        let mut rest = [0u8; 1];
        let n = self
            .reader(link)
            .read(&mut rest)
            .context("reading the end of the compressed stream")?;
        ensure!(
            n == 0,
            "bytes after the stream's end record inside the compressed stream"
        );
        Ok(())
    }

    /// Decompresses more of what was read into `out`; false when zstd has nothing more
    /// without another chunk.
    fn decompress(&mut self) -> Result<bool> {
        use zstd::stream::raw::Operation;
        let status = self
            .z
            .run_on_buffers(&self.chunk[self.taken..], &mut self.out)
            .context("damaged compressed stream")?;
        self.taken += status.bytes_read;
        (self.out_at, self.out_len) = (0, status.bytes_written);
        Ok(status.bytes_written > 0 || status.bytes_read > 0)
    }

    /// Reads the next chunk off the link; false at the end chunk.
    fn next_chunk<R: Read + ?Sized>(&mut self, link: &mut R) -> Result<bool> {
        let mut len = [0u8; 4];
        link.read_exact(&mut len)
            .context("the link ended inside the compressed stream")?;
        let word = u32::from_le_bytes(len);
        let len = (word & !STORED) as usize;
        if word == 0 {
            self.ended = true;
            return Ok(false);
        }
        if len == 0 {
            bail!("an empty stored chunk: damaged stream");
        }
        if len > MAX_CHUNK {
            bail!(
                "a compressed chunk of {len} bytes, over the limit of {MAX_CHUNK}: damaged stream"
            );
        }
        self.chunk.resize(len, 0);
        self.taken = 0;
        self.stored = word & STORED != 0;
        link.read_exact(&mut self.chunk)
            .context("the link ended inside a compressed chunk")?;
        Ok(true)
    }

    /// Fills `out` with more of the stream; false at its end.
    fn refill<R: Read + ?Sized>(&mut self, link: &mut R) -> Result<bool> {
        loop {
            if self.ended {
                return Ok(false);
            }
            if self.stored {
                if self.taken < self.chunk.len() {
                    return Ok(true);
                }
            } else if self.decompress()? {
                // what zstd still holds, or could make of the chunk's rest
                if self.out_len > 0 {
                    return Ok(true);
                }
                continue;
            }
            ensure!(
                self.taken == self.chunk.len(),
                "zstd stopped inside a compressed chunk: damaged stream"
            );
            if !self.next_chunk(link)? {
                return Ok(false);
            }
        }
    }
}

/// `e` as an I/O error of the kind of the link's own error inside it, if any (a timeout
/// stays a timeout for the deadlines), else of damaged data.
fn as_io_error(e: anyhow::Error) -> std::io::Error {
    let kind = e
        .chain()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map_or(std::io::ErrorKind::InvalidData, std::io::Error::kind);
    std::io::Error::new(kind, format!("{e:#}"))
}

/// The decompressed stream over a borrowed link.
pub struct Through<'a, R: Read + ?Sized> {
    zin: &'a mut ZstdIn,
    link: &'a mut R,
}

impl<R: Read + ?Sized> Read for Through<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let z = &mut *self.zin;
        let empty = if z.stored {
            z.taken == z.chunk.len()
        } else {
            z.out_at == z.out_len
        };
        if empty && !buf.is_empty() {
            let more = z.refill(self.link).map_err(as_io_error)?;
            if !more {
                return Ok(0);
            }
        }
        let (ready, at) = if z.stored {
            (&z.chunk[z.taken..], &mut z.taken)
        } else {
            (&z.out[z.out_at..z.out_len], &mut z.out_at)
        };
        let n = ready.len().min(buf.len());
        buf[..n].copy_from_slice(&ready[..n]);
        *at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Text-like bytes zstd shrinks severalfold.
    fn sample(n: usize) -> Vec<u8> {
        (0..n as u32)
            .map(|i| b"pagewire link zstd "[(i % 19) as usize] ^ ((i / 4099) % 5) as u8)
            .collect()
    }

    #[test]
    fn round_trip_with_messages_between_and_after() {
        let data = sample(3_000_000);
        let mut link = Vec::new();
        let mut out = ZstdOut::new(Some(3)).unwrap();
        for piece in data.chunks(70_000) {
            out.write(&mut link, piece).unwrap();
        }
        out.flush(&mut link).unwrap();
        let flushed = link.len();
        out.write(&mut link, b"the end").unwrap();
        out.finish(&mut link).unwrap();
        // an uncompressed message follows on the same link
        link.extend_from_slice(b"COMMIT");
        assert!(link.len() < data.len() / 4, "{} bytes", link.len());

        let mut r = &link[..];
        let mut zin = ZstdIn::new().unwrap();
        let mut back = vec![0u8; data.len()];
        zin.reader(&mut r).read_exact(&mut back).unwrap();
        assert!(back == data);
        // everything before the flush was decodable from the bytes sent by then
        let mut early = &link[..flushed];
        let mut zin2 = ZstdIn::new().unwrap();
        let mut part = vec![0u8; data.len()];
        zin2.reader(&mut early).read_exact(&mut part).unwrap();
        let mut tail = [0u8; 7];
        zin.reader(&mut r).read_exact(&mut tail).unwrap();
        assert_eq!(&tail, b"the end");
        zin.expect_end(&mut r).unwrap();
        assert_eq!(r, b"COMMIT", "the reader stopped at the end chunk");
    }

    #[test]
    fn stored_chunks_and_level_changes_interleave_in_one_stream() {
        let data = sample(2_000_000);
        let mut link = Vec::new();
        let mut out = ZstdOut::new(None).unwrap();
        let levels = [
            None,
            Some(1),
            None,
            Some(1),
            Some(3),
            None,
            Some(-5),
            Some(-5),
        ];
        for (i, piece) in data.chunks(250_000).enumerate() {
            out.set_level(&mut link, levels[i % levels.len()]).unwrap();
            out.write(&mut link, piece).unwrap();
            if i % 3 == 1 {
                out.flush(&mut link).unwrap();
            }
        }
        out.finish(&mut link).unwrap();
        link.extend_from_slice(b"READY");
        // the stored quarters as they are, the rest compressed
        assert!(link.len() < data.len() / 2, "{} bytes", link.len());
        let mut r = &link[..];
        let mut zin = ZstdIn::new().unwrap();
        let mut back = vec![0u8; data.len()];
        zin.reader(&mut r).read_exact(&mut back).unwrap();
        assert!(back == data);
        zin.expect_end(&mut r).unwrap();
        assert_eq!(r, b"READY");
        // only stored chunks: no zstd at all, 4 bytes a chunk
        let mut plain = Vec::new();
        let mut out = ZstdOut::new(None).unwrap();
        out.write(&mut plain, &data[..1000]).unwrap();
        out.finish(&mut plain).unwrap();
        assert_eq!(plain.len(), 4 + 1000 + 4);
        let mut r = &plain[..];
        let mut v = Vec::new();
        ZstdIn::new()
            .unwrap()
            .reader(&mut r)
            .read_to_end(&mut v)
            .unwrap();
        assert_eq!(v, &data[..1000]);
    }

    #[test]
    fn damage_is_an_error_not_a_panic_or_a_hang() {
        let data = sample(200_000);
        let mut link = Vec::new();
        let mut out = ZstdOut::new(Some(1)).unwrap();
        out.write(&mut link, &data).unwrap();
        out.finish(&mut link).unwrap();
        let read_all = |bytes: &[u8]| -> std::io::Result<Vec<u8>> {
            let mut r = bytes;
            let mut zin = ZstdIn::new().unwrap();
            let mut v = Vec::new();
            zin.reader(&mut r).read_to_end(&mut v)?;
            Ok(v)
        };
        assert_eq!(read_all(&link).unwrap(), data);
        // cut anywhere: an error (or, cut at a chunk's end, fewer bytes), never more bytes
        for cut in [0, 2, 4, 9, link.len() / 2, link.len() - 5] {
            match read_all(&link[..cut]) {
                Ok(v) => assert!(v.len() < data.len()),
                Err(e) => assert!(!e.to_string().is_empty()),
            }
        }
        // a flipped byte inside the zstd data: refused, or at least not the data
        let mut bad = link.clone();
        bad[40] ^= 0x55;
        assert!(read_all(&bad).map_or(true, |v| v != data));
        // an absurd chunk length, compressed or stored; an empty stored chunk
        for word in [MAX_CHUNK as u32 + 1, (MAX_CHUNK as u32 + 1) | STORED] {
            let mut huge = word.to_le_bytes().to_vec();
            huge.extend_from_slice(&[0; 16]);
            let e = read_all(&huge).unwrap_err().to_string();
            assert!(e.contains("over the limit"), "{e}");
        }
        let e = read_all(&STORED.to_le_bytes()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("empty stored chunk"), "{e}");
        // the link's own error keeps its kind: a deadline is told from damage
        struct Stalled;
        impl Read for Stalled {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "no byte moved",
                ))
            }
        }
        let mut one = [0u8; 1];
        let e = ZstdIn::new()
            .unwrap()
            .reader(&mut Stalled)
            .read(&mut one)
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
        // a chunk that decompresses 1000-fold is read in pieces, memory bounded by OUT
        let zeros = vec![0u8; 64 << 20];
        let mut bomb = Vec::new();
        let mut out = ZstdOut::new(Some(19)).unwrap();
        out.write(&mut bomb, &zeros).unwrap();
        out.finish(&mut bomb).unwrap();
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let mut r = &bomb[..];
        let mut zin = ZstdIn::new().unwrap();
        let mut piece = vec![1u8; 1 << 20];
        let mut total = 0usize;
        loop {
            let n = zin.reader(&mut r).read(&mut piece).unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= OUT && piece[..n].iter().all(|&b| b == 0));
            total += n;
        }
        assert_eq!(total, zeros.len());
        assert_eq!(zin.out.len(), OUT);
        // bytes after the end record inside the compressed stream
        let mut r = &link[..];
        let mut zin = ZstdIn::new().unwrap();
        let mut first = vec![0u8; 1000];
        zin.reader(&mut r).read_exact(&mut first).unwrap();
        assert!(zin.expect_end(&mut r).is_err());
        assert!(check_level(0).is_err() && check_level(99).is_err());
        assert_eq!(check_level(-3).unwrap(), -3);
    }
}
