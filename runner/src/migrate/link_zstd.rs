//! zstd over the migration stream (`--compress zstd`): on a slow link, zstd with its window
//! across frames sends fewer bytes than the codec's LZ4 per frame (`docs/PERFORMANCE.md`:
//! redis 13.3 % of the raw pages against 19.8 %), and the link, not the CPU, sets the pace.
//!
//! The compressed stream travels in chunks, each a little-endian `u32` length and that many
//! bytes of zstd output, and ends with a chunk of length 0. The destination reads exactly
//! the chunks, never past the end, because the session's own messages (ready, commit)
//! follow uncompressed on the same link. Chunks go out whenever zstd has a chunk's worth,
//! and at every flush: the end of each iteration, whose acknowledgement the source then
//! awaits, and the end of the stream.

use std::io::{Read, Write};

use anyhow::{bail, ensure, Context, Result};

/// Bytes of zstd output sent as one chunk once they are ready.
const CHUNK: usize = 256 * 1024;

/// The largest chunk a destination accepts: zstd's output for one flush of the source's
/// writes, which are at most one codec output at a time, stays far below it.
pub const MAX_CHUNK: usize = 16 << 20;

/// Its name in the hello.
pub const NAME: &str = "zstd";

/// The levels `--zstd-level` accepts: zstd's own range, without 0 (its "default" alias).
pub fn check_level(level: i32) -> Result<i32> {
    ensure!(
        zstd::compression_level_range().contains(&level) && level != 0,
        "zstd level {level} is outside {:?} (0 is not a level)",
        zstd::compression_level_range()
    );
    Ok(level)
}

/// The source's side: compresses the stream and sends it in chunks.
pub struct ZstdOut {
    z: zstd::stream::write::Encoder<'static, Vec<u8>>,
}

impl ZstdOut {
    /// A compressor at `level`.
    pub fn new(level: i32) -> Result<Self> {
        let z = zstd::stream::write::Encoder::new(Vec::with_capacity(2 * CHUNK), level)
            .context("starting zstd")?;
        Ok(ZstdOut { z })
    }

    /// Compresses `bytes`; sends what zstd has ready once it makes a chunk.
    pub fn write<W: Write + ?Sized>(&mut self, link: &mut W, bytes: &[u8]) -> std::io::Result<()> {
        self.z.write_all(bytes)?;
        if self.z.get_ref().len() >= CHUNK {
            self.send_ready(link)?;
        }
        Ok(())
    }

    /// Sends everything written so far: the destination can decode all of it.
    pub fn flush<W: Write + ?Sized>(&mut self, link: &mut W) -> std::io::Result<()> {
        self.z.flush()?;
        self.send_ready(link)?;
        link.flush()
    }

    /// Ends the compressed stream: the rest of zstd's output, then the end chunk.
    pub fn finish<W: Write + ?Sized>(&mut self, link: &mut W) -> std::io::Result<()> {
        self.z.do_finish()?;
        self.send_ready(link)?;
        link.write_all(&0u32.to_le_bytes())?;
        link.flush()
    }

    /// zstd's output so far, as one chunk (nothing when there is none).
    fn send_ready<W: Write + ?Sized>(&mut self, link: &mut W) -> std::io::Result<()> {
        let ready = self.z.get_mut();
        if ready.is_empty() {
            return Ok(());
        }
        link.write_all(&(ready.len() as u32).to_le_bytes())?;
        link.write_all(ready)?;
        ready.clear();
        Ok(())
    }
}

/// The destination's side: reads chunks off the link and hands out the stream they carry.
pub struct ZstdIn {
    z: zstd::stream::write::Decoder<'static, Vec<u8>>,
    /// How much of the decompressed bytes in `z`'s buffer were handed out.
    at: usize,
    chunk: Vec<u8>,
    ended: bool,
}

impl ZstdIn {
    /// A decompressor with nothing read yet.
    pub fn new() -> Result<Self> {
        let z = zstd::stream::write::Decoder::new(Vec::with_capacity(2 * CHUNK))
            .context("starting zstd")?;
        Ok(ZstdIn {
            z,
            at: 0,
            chunk: Vec::new(),
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

    /// Reads the next chunk into the decompressor; false at the end chunk.
    fn next_chunk<R: Read + ?Sized>(&mut self, link: &mut R) -> Result<bool> {
        let mut len = [0u8; 4];
        link.read_exact(&mut len)
            .context("the link ended inside the compressed stream")?;
        let len = u32::from_le_bytes(len) as usize;
        if len == 0 {
            self.ended = true;
            return Ok(false);
        }
        if len > MAX_CHUNK {
            bail!(
                "a compressed chunk of {len} bytes, over the limit of {MAX_CHUNK}: damaged stream"
            );
        }
        self.chunk.resize(len, 0);
        link.read_exact(&mut self.chunk)
            .context("the link ended inside a compressed chunk")?;
        let out = self.z.get_mut();
        out.drain(..self.at);
        self.at = 0;
        self.z
            .write_all(&self.chunk)
            .and_then(|()| self.z.flush())
            .context("damaged compressed stream")?;
        Ok(true)
    }
}

/// The decompressed stream over a borrowed link.
pub struct Through<'a, R: Read + ?Sized> {
    zin: &'a mut ZstdIn,
    link: &'a mut R,
}

impl<R: Read + ?Sized> Read for Through<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let ready = &self.zin.z.get_ref()[self.zin.at..];
            if !ready.is_empty() {
                let n = ready.len().min(buf.len());
                buf[..n].copy_from_slice(&ready[..n]);
                self.zin.at += n;
                return Ok(n);
            }
            if self.zin.ended || buf.is_empty() {
                return Ok(0);
            }
            let more = self.zin.next_chunk(self.link).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:#}"))
            })?;
            if !more {
                return Ok(0);
            }
        }
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
        let mut out = ZstdOut::new(3).unwrap();
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
    fn damage_is_an_error_not_a_panic_or_a_hang() {
        let data = sample(200_000);
        let mut link = Vec::new();
        let mut out = ZstdOut::new(1).unwrap();
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
        // an absurd chunk length
        let mut huge = (MAX_CHUNK as u32 + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let e = read_all(&huge).unwrap_err().to_string();
        assert!(e.contains("over the limit"), "{e}");
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
