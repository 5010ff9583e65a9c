//! The link between the two QEMUs of a demo run, through one shaper: a shaped relay for
//! QEMU's own migration (its multifd channels share the link), or the two tunnel ends
//! (shaped on the source end's link) for the pagewire tunnel.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pagewire::Config;
use serde_json::json;

use super::super::{
    accept_and_tunnel_out, DestEndConfig, DestReport, LinkCompression, QemuEndpoint,
    SourceEndConfig, SourceReport, TunnelDest,
};
use crate::machine::wait_listening;
use crate::migrate::{Codec, Deadlines};
use crate::net::relay::ShapedRelay;
use crate::net::{tls, Wire};
use crate::trace::qmp::Qmp;

/// How the tunnel encodes.
#[derive(Debug, Clone, Copy)]
pub struct TunnelCodec {
    pub codec: Codec,
    pub config: Config,
    pub link: LinkCompression,
}

/// What crossed the link, and the CPU the path's own programs used at each side.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathFigures {
    pub wire_bytes: u64,
    pub source_cpu_s: f64,
    pub destination_cpu_s: f64,
}

/// A link between the QEMUs, set up and waiting for the source's `migrate`.
pub enum MigrationPath {
    /// QEMU to QEMU through a shaped relay.
    Relay { relay: ShapedRelay, uri: String },
    /// QEMU to the source end, the link, the destination end, QEMU.
    Tunnel {
        dest: TunnelDest,
        source: JoinHandle<Result<SourceReport>>,
        uri: String,
    },
}

/// How long the path waits for the destination QEMU to listen, and for its reports.
const SETTLE: Duration = Duration::from_secs(30);

impl MigrationPath {
    /// A relay to the destination QEMU on `wire`, the destination told to listen
    /// (`migrate-incoming`).
    pub fn relay(wire: Wire, destination: &mut Qmp) -> Result<Self> {
        destination
            .execute(
                "migrate-incoming",
                Some(json!({ "uri": "tcp:127.0.0.1:0" })),
            )
            .context("starting the destination's incoming migration")?;
        // the port QEMU chose
        let uri = wait_listening(destination, SETTLE)?;
        let qemu_addr: SocketAddr = uri
            .strip_prefix("tcp:")
            .with_context(|| format!("the destination listens on {uri}, not on TCP"))?
            .parse()?;
        let relay = ShapedRelay::start(TcpListener::bind("127.0.0.1:0")?, qemu_addr, wire)?;
        let uri = format!("tcp:{}", relay.addr());
        Ok(MigrationPath::Relay { relay, uri })
    }

    /// The two tunnel ends over a mutual-TLS link on `wire` (shaped at the source end), the
    /// destination QEMU listening on a unix socket in `dir`.
    pub fn tunnel(
        dir: &Path,
        wire: Wire,
        codec: TunnelCodec,
        destination: &mut Qmp,
    ) -> Result<Self> {
        let keys = dir.join("keys");
        if !keys.join("ca.pem").exists() {
            tls::keygen(&keys)?;
        }
        let incoming = dir.join("incoming.sock");
        let _ = std::fs::remove_file(&incoming);
        destination
            .execute(
                "migrate-incoming",
                Some(json!({ "uri": format!("unix:{}", incoming.display()) })),
            )
            .context("starting the destination's incoming migration")?;
        let deadline = Instant::now() + SETTLE;
        while !incoming.exists() {
            if Instant::now() > deadline {
                bail!(
                    "the destination QEMU does not listen on {}",
                    incoming.display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        let deadlines = Deadlines::default();
        let dest = TunnelDest::start(
            TcpListener::bind("127.0.0.1:0")?,
            DestEndConfig {
                qemu: QemuEndpoint::Unix(incoming),
                tls: Some(tls::server_config(&keys)?),
                deadlines,
                max_cache: 1 << 30,
                log: Arc::new(|_| {}),
            },
        )?;
        let cfg = SourceEndConfig {
            to: dest.addr().to_string(),
            wire,
            tls: Some(tls::client_config(&keys)?),
            config: codec.config,
            codec: codec.codec,
            link_compression: codec.link,
            label: "tunnel demo".into(),
            deadlines,
        };
        let sock = QemuEndpoint::Unix(dir.join("tunnel.sock"));
        let listener = sock.listen()?;
        let source = thread::Builder::new()
            .name("tunnel-source".into())
            .spawn(move || accept_and_tunnel_out(&listener, &cfg, || {}, &mut |_, _| {}))?;
        Ok(MigrationPath::Tunnel {
            dest,
            source,
            uri: sock.uri(),
        })
    }

    /// The URI the source QEMU migrates to.
    pub fn uri(&self) -> &str {
        match self {
            MigrationPath::Relay { uri, .. } | MigrationPath::Tunnel { uri, .. } => uri,
        }
    }

    /// After the migration: what crossed the link (and, for the tunnel, both ends' reports).
    pub fn finish(self) -> Result<(PathFigures, Option<(SourceReport, DestReport)>)> {
        match self {
            MigrationPath::Relay { relay, .. } => Ok((
                PathFigures {
                    wire_bytes: relay.forwarded(),
                    ..PathFigures::default()
                },
                None,
            )),
            MigrationPath::Tunnel { dest, source, .. } => {
                let s = source
                    .join()
                    .map_err(|_| anyhow!("the tunnel's source end panicked"))?
                    .context("the tunnel's source end")?;
                let d = dest
                    .next(SETTLE)
                    .ok_or_else(|| anyhow!("the tunnel's destination end did not report"))?
                    .context("the tunnel's destination end")?;
                dest.stop();
                Ok((
                    PathFigures {
                        wire_bytes: s.wire_bytes,
                        source_cpu_s: s.cpu_s,
                        destination_cpu_s: d.cpu_s,
                    },
                    Some((s, d)),
                ))
            }
        }
    }
}
