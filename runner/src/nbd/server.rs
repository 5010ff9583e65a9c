//! An NBD server for one export and one client at a time: what QEMU's mirror job (or
//! `qemu-img`) writes to at the source end of a disk tunnel. The export is a
//! [`BlockTarget`]; the server negotiates fixed newstyle, then answers each request in
//! order with a simple reply. A request it can answer with an error (out of range, an
//! unknown command, a failed write) gets that error and the session goes on; anything
//! that leaves the stream out of step (a bad magic, a payload too large to read) ends it.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::proto::*;

/// What an export does with the client's requests. Errors are NBD errno values
/// ([`EIO`], [`ENOSPC`], ...), which the client receives in its reply.
pub trait BlockTarget {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Reads `buf.len()` bytes at `offset` (inside the export: the server checked).
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), u32>;
    /// Writes `data` at `offset`; durable before it returns when `fua`.
    fn write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), u32>;
    /// `len` bytes at `offset` read as zeros afterwards.
    fn write_zeroes(&mut self, offset: u64, len: u64, fua: bool) -> Result<(), u32>;
    /// `len` bytes at `offset` are no longer needed (they may read as anything).
    fn trim(&mut self, _offset: u64, _len: u64) -> Result<(), u32> {
        Ok(())
    }
    /// Every write completed so far is durable.
    fn flush(&mut self) -> Result<(), u32>;
    /// No request came for a while ([`serve_tcp`]'s `idle`): a chance to show the far end
    /// of a tunnel that it is alive. Errors come back with the next request.
    fn idle(&mut self) {}
}

/// An export held in memory (tests, fuzzing).
#[derive(Debug, Clone)]
pub struct MemoryTarget(pub Vec<u8>);

impl BlockTarget for MemoryTarget {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), u32> {
        let at = offset as usize;
        buf.copy_from_slice(&self.0[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8], _fua: bool) -> Result<(), u32> {
        let at = offset as usize;
        self.0[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn write_zeroes(&mut self, offset: u64, len: u64, _fua: bool) -> Result<(), u32> {
        let at = offset as usize;
        self.0[at..at + len as usize].fill(0);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), u32> {
        Ok(())
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The client aborted negotiation (`NBD_OPT_ABORT`).
    Aborted,
    /// The client disconnected (`NBD_CMD_DISC`) after `requests` requests.
    Disconnected { requests: u64 },
}

/// Options a client may try before it must pick an export.
const MAX_OPTIONS: usize = 64;

/// Serves `target` as export `name` to the client on `stream` until it disconnects.
pub fn serve<S: Read + Write, T: BlockTarget + ?Sized>(
    stream: &mut S,
    name: &str,
    target: &mut T,
) -> Result<SessionEnd> {
    serve_with(stream, name, target, None)
}

/// What the export offers: flush, FUA, trim and write-zeroes.
const EXPORT_FLAGS: u16 =
    TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;

/// Negotiation, then requests until the client disconnects (with idle ticks if `tick`).
fn serve_with<S: Read + Write, T: BlockTarget + ?Sized>(
    stream: &mut S,
    name: &str,
    target: &mut T,
    tick: Option<(Duration, Readable<S>)>,
) -> Result<SessionEnd> {
    if !negotiate(stream, name, target.size(), EXPORT_FLAGS)? {
        return Ok(SessionEnd::Aborted);
    }
    transmit(stream, target, tick)
}

/// Waits up to a duration for `S` to have a byte to read: `Ok(false)` when none came.
type Readable<S> = fn(&mut S, Duration) -> std::io::Result<bool>;

/// As [`serve`], on TCP: while no request comes for `idle`, calls [`BlockTarget::idle`];
/// a request once begun must arrive whole within `stall`.
pub fn serve_tcp<T: BlockTarget + ?Sized>(
    stream: &mut TcpStream,
    name: &str,
    target: &mut T,
    idle: Duration,
    stall: Duration,
) -> Result<SessionEnd> {
    stream.set_read_timeout(Some(stall))?;
    let readable: Readable<TcpStream> = |s, wait| {
        let before = s.read_timeout()?;
        s.set_read_timeout(Some(wait))?;
        let r = match s.peek(&mut [0u8; 1]) {
            // a byte, or the end (which the next read reports)
            Ok(_) => Ok(true),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) => Err(e),
        };
        s.set_read_timeout(before)?;
        r
    };
    let every = idle.max(Duration::from_millis(10));
    serve_with(stream, name, target, Some((every, readable)))
}

/// The handshake and the options; true once the client entered transmission.
fn negotiate<S: Read + Write>(s: &mut S, name: &str, size: u64, flags: u16) -> Result<bool> {
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    s.write_all(&hello).context("sending the NBD greeting")?;
    s.flush()?;
    let mut cf = [0u8; 4];
    s.read_exact(&mut cf)
        .context("reading the client's flags")?;
    let client = u32::from_be_bytes(cf);
    if client & !(CLIENT_FIXED_NEWSTYLE | CLIENT_NO_ZEROES) != 0
        || client & CLIENT_FIXED_NEWSTYLE == 0
    {
        bail!(ProtocolError(format!(
            "client flags {client:#x}: fixed newstyle is required, no other flags are known"
        )));
    }
    let no_zeroes = client & CLIENT_NO_ZEROES != 0;
    for _ in 0..MAX_OPTIONS {
        let mut h = [0u8; 16];
        s.read_exact(&mut h).context("reading an option")?;
        let h = OptionHeader::parse(&h)?;
        if h.length > MAX_OPTION_LEN {
            bail!(ProtocolError(format!(
                "option {} with {} bytes of data (at most {MAX_OPTION_LEN})",
                h.option, h.length
            )));
        }
        let mut data = vec![0u8; h.length as usize];
        s.read_exact(&mut data)
            .context("reading an option's data")?;
        let reply = |s: &mut S, kind: u32, d: &[u8]| -> Result<()> {
            s.write_all(&option_reply(h.option, kind, d))?;
            Ok(())
        };
        match h.option {
            OPT_EXPORT_NAME => {
                // no way to say no here but to hang up
                if !name_matches(&data, name) {
                    bail!("the client asked for an export this server does not have");
                }
                s.write_all(&size.to_be_bytes())?;
                s.write_all(&flags.to_be_bytes())?;
                if !no_zeroes {
                    s.write_all(&[0u8; 124])?;
                }
                s.flush()?;
                return Ok(true);
            }
            OPT_GO | OPT_INFO => match GoRequest::parse(&data) {
                Err(e) => reply(s, REP_ERR_INVALID, e.0.as_bytes())?,
                Ok(go) if !name_matches(go.name.as_bytes(), name) => {
                    reply(s, REP_ERR_UNKNOWN, b"no such export")?
                }
                Ok(_) => {
                    reply(s, REP_INFO, &info_export(size, flags))?;
                    reply(s, REP_INFO, &info_block_size(1, 4096, MAX_PAYLOAD))?;
                    reply(s, REP_ACK, &[])?;
                    if h.option == OPT_GO {
                        s.flush()?;
                        return Ok(true);
                    }
                }
            },
            OPT_LIST if data.is_empty() => {
                let mut d = (name.len() as u32).to_be_bytes().to_vec();
                d.extend_from_slice(name.as_bytes());
                reply(s, REP_SERVER, &d)?;
                reply(s, REP_ACK, &[])?;
            }
            OPT_LIST => reply(s, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?,
            OPT_ABORT => {
                let _ = reply(s, REP_ACK, &[]);
                let _ = s.flush();
                return Ok(false);
            }
            // structured replies, TLS, metadata contexts, extended headers: not here, so
            // the client keeps to simple replies
            _ => reply(s, REP_ERR_UNSUP, &[])?,
        }
        s.flush()?;
    }
    bail!(ProtocolError(format!(
        "more than {MAX_OPTIONS} options without choosing an export"
    )))
}

/// The empty name means the default export, which is this server's one export.
fn name_matches(asked: &[u8], name: &str) -> bool {
    asked.is_empty() || asked == name.as_bytes()
}

/// Answers requests until the client disconnects.
fn transmit<S: Read + Write, T: BlockTarget + ?Sized>(
    s: &mut S,
    target: &mut T,
    tick: Option<(Duration, Readable<S>)>,
) -> Result<SessionEnd> {
    let size = target.size();
    let mut buf = Vec::new();
    let mut requests = 0u64;
    loop {
        if let Some((every, readable)) = tick {
            while !readable(s, every).context("waiting for a request")? {
                target.idle();
            }
        }
        let mut h = [0u8; REQUEST_LEN];
        s.read_exact(&mut h)
            .context("reading a request (the client hung up without NBD_CMD_DISC)")?;
        let r = Request::parse(&h)?;
        requests += 1;
        let fua = r.flags & CMD_FLAG_FUA != 0;
        let in_range = r
            .offset
            .checked_add(u64::from(r.length))
            .is_some_and(|end| end <= size);
        let payload = r.length.min(MAX_PAYLOAD) as usize;
        let error = match r.kind {
            CMD_DISC => {
                let _ = target.flush();
                return Ok(SessionEnd::Disconnected { requests });
            }
            CMD_READ if r.length > MAX_PAYLOAD || !in_range => EINVAL,
            CMD_READ => {
                buf.resize(payload, 0);
                match target.read(r.offset, &mut buf) {
                    Ok(()) => {
                        let ok = SimpleReply {
                            error: 0,
                            cookie: r.cookie,
                        };
                        s.write_all(&ok.to_bytes())?;
                        s.write_all(&buf)?;
                        s.flush()?;
                        continue;
                    }
                    Err(e) => e,
                }
            }
            CMD_WRITE => {
                if r.length > MAX_PAYLOAD {
                    // its payload cannot be skipped safely: the stream is out of step
                    bail!(ProtocolError(format!(
                        "a write of {} bytes (at most {MAX_PAYLOAD})",
                        r.length
                    )));
                }
                if in_range {
                    buf.resize(payload, 0);
                    s.read_exact(&mut buf)
                        .context("reading a write's payload")?;
                    target.write(r.offset, &buf, fua).err().unwrap_or(0)
                } else {
                    // skipped without holding it: a peer cannot make the server hold more
                    // than the export's size
                    let mut rest = (&mut *s).take(payload as u64);
                    let skipped = std::io::copy(&mut rest, &mut std::io::sink())
                        .context("reading a write's payload")?;
                    if skipped != payload as u64 {
                        bail!("the client hung up inside a write's payload");
                    }
                    ENOSPC
                }
            }
            CMD_FLUSH => target.flush().err().unwrap_or(0),
            CMD_TRIM if in_range => target
                .trim(r.offset, u64::from(r.length))
                .err()
                .unwrap_or(0),
            CMD_WRITE_ZEROES if in_range => target
                .write_zeroes(r.offset, u64::from(r.length), fua)
                .err()
                .unwrap_or(0),
            CMD_TRIM | CMD_WRITE_ZEROES => ENOSPC,
            _ => EINVAL,
        };
        let reply = SimpleReply {
            error,
            cookie: r.cookie,
        };
        s.write_all(&reply.to_bytes())?;
        s.flush()?;
    }
}
