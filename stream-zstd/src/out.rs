//! The source's side: the stream in chunks, compressed by zstd or stored, to any writer.

use std::io::Write;

use crate::{CHUNK, MAX_CHUNK, STORED};

/// The source's side: sends the stream in chunks, compressed by zstd or stored.
pub struct ZstdOut {
    /// zstd's level now; `None`: stored chunks.
    level: Option<i32>,
    /// The zstd frame being written, and its level.
    z: Option<(zstd::stream::write::Encoder<'static, Vec<u8>>, i32)>,
}

impl ZstdOut {
    /// Chunks compressed at `level`, or stored (`None`) until [`ZstdOut::set_level`].
    pub fn new(level: Option<i32>) -> std::io::Result<Self> {
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
