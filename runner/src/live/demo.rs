//! `pagewire demo`: both ends in one process over loopback, authenticated with a fresh key
//! set as two hosts would be with `keygen`'s.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use super::receive::{receive_one, ReceiveConfig, Received};
use super::send::{boot_and_send, GuestConfig, SendConfig};
use crate::migrate::{DestOptions, MigrationProgress, MigrationReport, SourceOptions};
use crate::net::{tls, Shape};

/// A demo whose receiving end listens, ready for [`Demo::send`].
pub struct Demo {
    addr: SocketAddr,
    cfg: SendConfig,
    dest: JoinHandle<Result<Received>>,
}

impl Demo {
    /// Makes the key set, starts the receiving end on a loopback port and prepares the
    /// sending end's configuration (shaped by `shape`). The keys are gone from disk when it
    /// returns: both ends hold them in memory.
    pub fn start(shape: Shape, source: SourceOptions) -> Result<Self> {
        let keys = std::env::temp_dir().join(format!("pagewire-demo-keys-{}", std::process::id()));
        tls::keygen(&keys)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let rcfg = ReceiveConfig {
            tls: Some(tls::server_config(&keys)?),
            dest: DestOptions {
                max_mem_bytes: 1 << 40,
                deadlines: source.deadlines,
                ..DestOptions::default()
            },
            run_after: Duration::from_secs(1),
        };
        let dest = std::thread::spawn(move || receive_one(&listener, &rcfg));
        let cfg = SendConfig {
            to: addr.to_string(),
            shape,
            source: Arc::new(source),
            tls: Some(tls::client_config(&keys)?),
        };
        let _ = std::fs::remove_dir_all(&keys);
        Ok(Demo { addr, cfg, dest })
    }

    /// Where the receiving end listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Boots `guest` and migrates it to the receiving end.
    pub fn send(
        &self,
        guest: &GuestConfig,
        progress: &mut dyn MigrationProgress,
    ) -> Result<MigrationReport> {
        boot_and_send(&self.cfg, guest, None, progress)
    }

    /// Waits for the receiving end and returns what it saw.
    pub fn received(self) -> Result<Received> {
        self.dest
            .join()
            .map_err(|_| anyhow::anyhow!("the receiving side panicked"))?
            .context("the receiving side")
    }
}
