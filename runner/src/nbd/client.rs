//! An NBD client of one export: what the destination end of a disk tunnel writes through
//! into the destination QEMU's NBD export (`nbd-server-add` / `block-export-add`, or
//! `qemu-nbd`). Fixed newstyle, `NBD_OPT_GO`, one request at a time with simple replies.

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};

use super::proto::*;

/// A connected client in the transmission phase.
pub struct Client<S: Read + Write> {
    s: S,
    size: u64,
    flags: u16,
    cookie: u64,
}

impl<S: Read + Write> Client<S> {
    /// Negotiates export `name` on `s` (a connected stream).
    pub fn connect(mut s: S, name: &str) -> Result<Self> {
        let mut g = [0u8; 18];
        s.read_exact(&mut g).context("reading the NBD greeting")?;
        if u64::from_be_bytes(g[..8].try_into().unwrap()) != NBDMAGIC
            || u64::from_be_bytes(g[8..16].try_into().unwrap()) != IHAVEOPT
        {
            bail!(ProtocolError("not a newstyle NBD server".into()));
        }
        let hflags = u16::from_be_bytes([g[16], g[17]]);
        if hflags & FLAG_FIXED_NEWSTYLE == 0 {
            bail!(ProtocolError(
                "the server does not speak fixed newstyle".into()
            ));
        }
        let mut cflags = CLIENT_FIXED_NEWSTYLE;
        if hflags & FLAG_NO_ZEROES != 0 {
            cflags |= CLIENT_NO_ZEROES;
        }
        s.write_all(&cflags.to_be_bytes())?;
        let go = GoRequest {
            name: name.into(),
            info: vec![INFO_BLOCK_SIZE],
        }
        .to_bytes();
        s.write_all(
            &OptionHeader {
                option: OPT_GO,
                length: go.len() as u32,
            }
            .to_bytes(),
        )?;
        s.write_all(&go)?;
        s.flush()?;
        let mut export = None;
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h)
                .context("reading the reply to NBD_OPT_GO")?;
            let h = OptionReplyHeader::parse(&h)?;
            if h.option != OPT_GO || h.length > MAX_OPTION_LEN {
                bail!(ProtocolError(format!(
                    "a reply to option {} of {} bytes, to NBD_OPT_GO",
                    h.option, h.length
                )));
            }
            let mut data = vec![0u8; h.length as usize];
            s.read_exact(&mut data)?;
            match h.reply {
                REP_ACK => break,
                REP_INFO => {
                    if let Some(e) = parse_info_export(&data) {
                        export = Some(e);
                    }
                }
                r if r & 0x8000_0000 != 0 => bail!(
                    "the NBD server refused export {name:?} (reply {r:#x}: {})",
                    String::from_utf8_lossy(&data)
                ),
                _ => {}
            }
        }
        let Some((size, flags)) = export else {
            bail!(ProtocolError(
                "NBD_OPT_GO ended without the export's size".into()
            ));
        };
        Ok(Client {
            s,
            size,
            flags,
            cookie: 0,
        })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The export's transmission flags.
    pub fn flags(&self) -> u16 {
        self.flags
    }

    fn request(&mut self, kind: u16, flags: u16, offset: u64, length: u32) -> Result<u64> {
        self.cookie += 1;
        let r = Request {
            flags,
            kind,
            cookie: self.cookie,
            offset,
            length,
        };
        self.s.write_all(&r.to_bytes())?;
        Ok(self.cookie)
    }

    fn reply(&mut self, cookie: u64, what: &str) -> Result<()> {
        let mut h = [0u8; SIMPLE_REPLY_LEN];
        self.s
            .read_exact(&mut h)
            .with_context(|| format!("reading the reply to {what}"))?;
        let r = SimpleReply::parse(&h)?;
        if r.cookie != cookie {
            bail!(ProtocolError(format!(
                "a reply to request {}, expected {cookie}",
                r.cookie
            )));
        }
        if r.error != 0 {
            bail!("the NBD server failed {what}: {}", errno_name(r.error));
        }
        Ok(())
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        for (i, piece) in buf.chunks_mut(MAX_PAYLOAD as usize).enumerate() {
            let at = offset + (i as u64) * u64::from(MAX_PAYLOAD);
            let c = self.request(CMD_READ, 0, at, piece.len() as u32)?;
            self.s.flush()?;
            self.reply(c, "a read")?;
            self.s.read_exact(piece).context("reading a read's data")?;
        }
        Ok(())
    }

    /// Writes `data` at `offset` (durable on the reply when `fua`).
    pub fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        let flags = if fua { CMD_FLAG_FUA } else { 0 };
        for (i, piece) in data.chunks(MAX_PAYLOAD as usize).enumerate() {
            let at = offset + (i as u64) * u64::from(MAX_PAYLOAD);
            let c = self.request(CMD_WRITE, flags, at, piece.len() as u32)?;
            self.s.write_all(piece)?;
            self.s.flush()?;
            self.reply(c, "a write")?;
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` read as zeros (written as zeros where the server
    /// lacks `NBD_CMD_WRITE_ZEROES`).
    pub fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<()> {
        if self.flags & TFLAG_SEND_WRITE_ZEROES == 0 {
            let zeros = vec![0u8; len.min(u64::from(MAX_PAYLOAD)) as usize];
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(zeros.len() as u64) as usize;
                self.write(at, &zeros[..n], false)?;
                at += n as u64;
            }
            return Ok(());
        }
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(u64::from(!0xfffu32)) as u32;
            let c = self.request(CMD_WRITE_ZEROES, 0, at, n)?;
            self.s.flush()?;
            self.reply(c, "a write of zeros")?;
            at += u64::from(n);
        }
        Ok(())
    }

    /// Makes every completed write durable.
    pub fn flush(&mut self) -> Result<()> {
        if self.flags & TFLAG_SEND_FLUSH == 0 {
            return Ok(());
        }
        let c = self.request(CMD_FLUSH, 0, 0, 0)?;
        self.s.flush()?;
        self.reply(c, "a flush")
    }

    /// Ends the session (`NBD_CMD_DISC`; the server answers nothing).
    pub fn disconnect(mut self) -> Result<()> {
        self.request(CMD_DISC, 0, 0, 0)?;
        self.s.flush()?;
        Ok(())
    }
}
