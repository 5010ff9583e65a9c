//! Where a tunnel end meets its QEMU: a unix socket or a TCP address, as QEMU's own
//! migration URIs name them (`unix:/path`, `tcp:host:port`), or, at the source, standard
//! input (`stdio`), for QEMU's `migrate exec:pagewire tunnel source --qemu stdio ...`.

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
    /// Standard input: QEMU runs the source end with `exec:` and writes into its stdin.
    Stdio,
}

/// A connection to or from QEMU.
pub trait QemuStream: Read + Write + Send {}
impl<T: Read + Write + Send> QemuStream for T {}

impl QemuEndpoint {
    /// Parses `unix:/path`, `tcp:host:port` or `stdio`.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "stdio" {
            return Ok(QemuEndpoint::Stdio);
        }
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
        bail!(
            "{s:?}: a QEMU endpoint is unix:/path or tcp:host:port (as in QEMU's migrate URIs), \
             or stdio at the source end under QEMU's exec:"
        )
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
            QemuEndpoint::Stdio => QemuListener::Stdio,
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
            QemuEndpoint::Stdio => {
                bail!("stdio is for the source end only: the destination QEMU listens on a socket")
            }
        })
    }

    /// The URI to give QEMU (`migrate` at the source, `-incoming` at the destination).
    pub fn uri(&self) -> String {
        match self {
            QemuEndpoint::Unix(p) => format!("unix:{}", p.display()),
            QemuEndpoint::Tcp(a) => format!("tcp:{a}"),
            QemuEndpoint::Stdio => "stdio".into(),
        }
    }
}

/// Waits for the source QEMU's migration connection.
pub enum QemuListener {
    Unix(UnixListener),
    Tcp(TcpListener),
    /// The stream is already there, on standard input.
    Stdio,
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
            // QEMU's exec: keeps the pipe open until the end; a QEMU that dies closes it
            QemuListener::Stdio => Box::new(StdinStream(std::io::stdin())),
        })
    }
}

/// Standard input as a QEMU connection: QEMU's stream comes in, nothing goes back.
struct StdinStream(std::io::Stdin);

impl Read for StdinStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for StdinStream {
    fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "nothing goes back to QEMU on its exec: pipe",
        ))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
        assert_eq!(QemuEndpoint::parse("stdio").unwrap(), QemuEndpoint::Stdio);
        assert!(QemuEndpoint::Stdio.connect(Duration::from_secs(1)).is_err());
        for bad in ["unix:", "tcp:4444", "exec:cat", "/tmp/x"] {
            assert!(QemuEndpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
