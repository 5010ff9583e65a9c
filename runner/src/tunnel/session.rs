//! The session around a tunnel's pagewire stream. Source end to destination end: `PWT1`,
//! a length-prefixed JSON [`TunnelHello`], then the pagewire stream (ending with its END
//! record). Destination end to source end, once the whole QEMU stream was handed to the
//! destination QEMU or the attempt failed: a length-prefixed JSON [`TunnelReply`]. Length
//! prefixes and sizes as in the migration session (`migrate::session`).

use std::io::{Read, Write};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::dest::Delivered;
use crate::migrate::session::{read_message, write_message};

/// Opens every tunnel session.
pub const MAGIC: &[u8; 4] = b"PWT1";

/// What the source end announces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelHello {
    /// Random: names this attempt in both ends' logs.
    pub migration_id: u64,
    /// Free text for logs.
    pub label: String,
    /// QEMU's target page size.
    pub page_size: u32,
    /// What compresses the pagewire stream on the link: `zstd` or `none`.
    pub link_compression: String,
}

/// The destination end's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelReply {
    /// True once the whole QEMU stream went to the destination QEMU.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// Bytes of QEMU stream written to the destination QEMU.
    pub qemu_bytes: u64,
    /// Pages written to it.
    pub pages: u64,
}

impl TunnelReply {
    /// The reply for a finished attempt.
    pub fn of(result: &Result<Delivered>) -> Self {
        match result {
            Ok(d) => TunnelReply {
                ok: true,
                error: None,
                qemu_bytes: d.qemu_bytes,
                pages: d.pages,
            },
            Err(e) => TunnelReply {
                ok: false,
                error: Some(format!("{e:#}")),
                qemu_bytes: 0,
                pages: 0,
            },
        }
    }
}

/// Writes the magic and the hello.
pub fn write_hello<W: Write>(w: &mut W, h: &TunnelHello) -> Result<()> {
    w.write_all(MAGIC)?;
    write_message(w, h)
}

/// Reads and checks the magic and the hello.
pub fn read_hello<R: Read>(r: &mut R) -> Result<TunnelHello> {
    let mut m = [0u8; 4];
    r.read_exact(&mut m).context("reading the session magic")?;
    if &m != MAGIC {
        bail!("not a pagewire tunnel session (magic {m:02x?})");
    }
    read_message(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_another_session_is_refused() {
        let h = TunnelHello {
            migration_id: 7,
            label: "qemu".into(),
            page_size: 4096,
            link_compression: "zstd".into(),
        };
        let mut buf = Vec::new();
        write_hello(&mut buf, &h).unwrap();
        assert_eq!(read_hello(&mut &buf[..]).unwrap(), h);
        buf[3] = b'1' + 1;
        let e = read_hello(&mut &buf[..]).unwrap_err().to_string();
        assert!(e.contains("not a pagewire tunnel session"), "{e}");
    }
}
