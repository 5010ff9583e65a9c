//! Where a tunnel end meets its QEMU: a unix socket or a TCP address, as QEMU's own
//! migration URIs name them (`unix:/path`, `tcp:host:port`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A QEMU migration endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuEndpoint {
    /// `unix:/path`.
    Unix(PathBuf),
    /// `tcp:host:port`.
    Tcp(String),
}

/// A connection to or from QEMU.
pub trait QemuStream: Read + Write + Send {}
impl<T: Read + Write + Send> QemuStream for T {}

impl QemuEndpoint {
    /// Parses `unix:/path` or `tcp:host:port`.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                bail!("{s:?}: a unix endpoint needs a path");
            }
            return Ok(QemuEndpoint::Unix(p.into()));
        }
        if let Some(a) = s.strip_prefix("tcp:") {
            if !a.contains(':') {
                bail!("{s:?}: a tcp endpoint is tcp:host:port");
            }
            return Ok(QemuEndpoint::Tcp(a.to_string()));
        }
        bail!("{s:?}: a QEMU endpoint is unix:/path or tcp:host:port (as in QEMU's migrate URIs)")
    }

    /// Listens for the source QEMU's `migrate` to this endpoint (a stale unix socket file
    /// is replaced).
    pub fn listen(&self) -> Result<QemuListener> {
        Ok(match self {
            QemuEndpoint::Unix(p) => {
                if p.exists() {
                    std::fs::remove_file(p)
                        .with_context(|| format!("removing the old socket {}", p.display()))?;
                }
                QemuListener::Unix(
                    UnixListener::bind(p)
                        .with_context(|| format!("listening on {}", p.display()))?,
                )
            }
            QemuEndpoint::Tcp(a) => QemuListener::Tcp(
                TcpListener::bind(a).with_context(|| format!("listening on {a}"))?,
            ),
        })
    }

    /// Connects to the destination QEMU's `-incoming` at this endpoint. A stalled QEMU
    /// fails writes after `stall`.
    pub fn connect(&self, stall: Duration) -> Result<Box<dyn QemuStream>> {
        Ok(match self {
            QemuEndpoint::Unix(p) => {
                let s = UnixStream::connect(p)
                    .with_context(|| format!("connecting to QEMU at {}", p.display()))?;
                s.set_write_timeout(Some(stall))?;
                Box::new(s)
            }
            QemuEndpoint::Tcp(a) => {
                let s =
                    TcpStream::connect(a).with_context(|| format!("connecting to QEMU at {a}"))?;
                s.set_write_timeout(Some(stall))?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
        })
    }

    /// The URI to give QEMU (`migrate` at the source, `-incoming` at the destination).
    pub fn uri(&self) -> String {
        match self {
            QemuEndpoint::Unix(p) => format!("unix:{}", p.display()),
            QemuEndpoint::Tcp(a) => format!("tcp:{a}"),
        }
    }
}

/// Waits for the source QEMU's migration connection.
pub enum QemuListener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl QemuListener {
    /// The next connection; a QEMU that goes quiet for `stall` fails the reads.
    pub fn accept(&self, stall: Duration) -> Result<Box<dyn QemuStream>> {
        Ok(match self {
            QemuListener::Unix(l) => {
                let (s, _) = l.accept().context("accepting QEMU's migration")?;
                s.set_read_timeout(Some(stall))?;
                Box::new(s)
            }
            QemuListener::Tcp(l) => {
                let (s, _) = l.accept().context("accepting QEMU's migration")?;
                s.set_read_timeout(Some(stall))?;
                Box::new(s)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_like_qemu_uris() {
        let u = QemuEndpoint::parse("unix:/tmp/x.sock").unwrap();
        assert_eq!(u, QemuEndpoint::Unix("/tmp/x.sock".into()));
        assert_eq!(u.uri(), "unix:/tmp/x.sock");
        assert_eq!(
            QemuEndpoint::parse("tcp:127.0.0.1:4444").unwrap().uri(),
            "tcp:127.0.0.1:4444"
        );
        for bad in ["unix:", "tcp:4444", "exec:cat", "/tmp/x"] {
            assert!(QemuEndpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
