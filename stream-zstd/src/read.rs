//! The destination's side over a link it reads itself: an [`Unchunker`] that takes no more
//! off the link than the current chunk holds, so that it never reads past the end chunk.

use std::io::{self, Read};

use crate::{damaged, Unchunker};

/// Link bytes read ahead of zstd at once (never past the current chunk).
const LINK_BUF: usize = 256 * 1024;

/// Stream bytes decompressed ahead of a small read: a reader asking for a few bytes at a
/// time (a record header) would otherwise run zstd once per few bytes.
const OUT: usize = 256 * 1024;

/// A read of at least this many bytes is decompressed straight into the reader's buffer.
const DIRECT: usize = 16 * 1024;

/// The destination's side: reads chunks off the link and hands out the stream they carry.
pub struct ZstdIn {
    link: LinkSide,
    /// Stream bytes decompressed ahead, and how many of them were handed out.
    out: Vec<u8>,
    out_at: usize,
    out_len: usize,
}

/// The machine and the link bytes read for it.
struct LinkSide {
    un: Unchunker,
    /// Link bytes read and not yet taken by the machine.
    buf: Vec<u8>,
    at: usize,
    len: usize,
}

impl ZstdIn {
    /// A decompressor with nothing read yet.
    pub fn new() -> io::Result<Self> {
        Ok(ZstdIn {
            link: LinkSide {
                un: Unchunker::new()?,
                buf: vec![0u8; LINK_BUF],
                at: 0,
                len: 0,
            },
            out: vec![0u8; OUT],
            out_at: 0,
            out_len: 0,
        })
    }

    /// The stream, read through `link` for as long as the reader lives (the caller writes
    /// its acknowledgements to `link` between reads).
    pub fn reader<'a, R: Read + ?Sized>(&'a mut self, link: &'a mut R) -> Through<'a, R> {
        Through { zin: self, link }
    }

    /// After the stream's last record: the end chunk must follow, with nothing before it
    /// that decompresses to more stream.
    pub fn expect_end<R: Read + ?Sized>(&mut self, link: &mut R) -> io::Result<()> {
        let mut rest = [0u8; 1];
        let n = self.reader(link).read(&mut rest)?;
        if n != 0 {
            return Err(damaged(
                "bytes after the stream's end record inside the compressed stream",
            ));
        }
        Ok(())
    }
}

impl LinkSide {
    /// Writes more of the stream into `out`, reading `link` when the machine needs it; 0 at
    /// the end of the stream (the machine answers every feed after the end chunk so).
    fn decode_into<R: Read + ?Sized>(&mut self, link: &mut R, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let p = self.un.feed(&self.buf[self.at..self.len], out)?;
            self.at += p.consumed;
            if p.produced > 0 || p.ended {
                return Ok(p.produced);
            }
            // the machine took everything read so far and has nothing to hand out
            let want = self.un.wants().min(LINK_BUF);
            let n = loop {
                match link.read(&mut self.buf[..want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r?,
                }
            };
            if n == 0 {
                let where_ = if self.un.between_chunks() {
                    "inside the compressed stream"
                } else {
                    "inside a compressed chunk"
                };
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the link ended {where_}"),
                ));
            }
            (self.at, self.len) = (0, n);
        }
    }
}

/// The decompressed stream over a borrowed link.
pub struct Through<'a, R: Read + ?Sized> {
    zin: &'a mut ZstdIn,
    link: &'a mut R,
}

impl<R: Read + ?Sized> Read for Through<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let z = &mut *self.zin;
        if buf.is_empty() {
            return Ok(0);
        }
        if z.out_at == z.out_len {
            if buf.len() >= DIRECT {
                return z.link.decode_into(self.link, buf);
            }
            let n = z.link.decode_into(self.link, &mut z.out)?;
            (z.out_at, z.out_len) = (0, n);
        }
        let ready = &z.out[z.out_at..z.out_len];
        let n = ready.len().min(buf.len());
        buf[..n].copy_from_slice(&ready[..n]);
        z.out_at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample;
    use crate::{check_level, ZstdOut, MAX_CHUNK, STORED};

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
            assert!(n <= piece.len() && piece[..n].iter().all(|&b| b == 0));
            total += n;
        }
        assert_eq!(total, zeros.len());
        // nothing grew with the 1000-fold chunk
        assert_eq!((zin.out.len(), zin.link.buf.len()), (OUT, LINK_BUF));
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
