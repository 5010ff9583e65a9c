//! `pagewire demo`: both ends in one process over loopback, authenticated with a fresh key
//! set as two hosts would be with `keygen`'s.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use super::receive::{ReceiveConfig, ReceiveEvent, Received, Receiver};
use super::send::{boot_and_send, GuestConfig, SendConfig};
use crate::migrate::{DestOptions, MigrationProgress, MigrationReport, SourceOptions};
use crate::net::listen::Stopper;
use crate::net::{tls, Shape};

/// A demo whose receiving end listens, ready for [`Demo::send`].
pub struct Demo {
    addr: SocketAddr,
    cfg: SendConfig,
    dest: JoinHandle<Result<Received>>,
    stop: Stopper,
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
                deadlines: source.deadlines,
                ..DestOptions::default()
            },
            run_after: Duration::from_secs(1),
            // the sender reports the outcome; the receiving end speaks only of failures
            log: Arc::new(|e| {
                if matches!(e, ReceiveEvent::Failed { .. }) {
                    eprintln!("destination: {e}");
                }
            }),
            ..ReceiveConfig::default()
        };
        let receiver = Receiver::start(listener, rcfg)?;
        let stop = receiver.stopper();
        let dest = std::thread::spawn(move || receiver.wait());
        let cfg = SendConfig {
            to: addr.to_string(),
            shape,
            source: Arc::new(source),
            tls: Some(tls::client_config(&keys)?),
        };
        let _ = std::fs::remove_dir_all(&keys);
        Ok(Demo {
            addr,
            cfg,
            dest,
            stop,
        })
    }

    /// Where the receiving end listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Boots `guest` and migrates it to the receiving end (which stops listening if the
    /// migration fails).
    pub fn send(
        &self,
        guest: &GuestConfig,
        progress: &mut dyn MigrationProgress,
    ) -> Result<MigrationReport> {
        let r = boot_and_send(&self.cfg, guest, None, progress);
        if r.is_err() {
            self.stop.stop();
        }
        r
    }

    /// Waits for the receiving end and returns what it saw.
    pub fn received(self) -> Result<Received> {
        self.dest
            .join()
            .map_err(|_| anyhow::anyhow!("the receiving side panicked"))?
            .context("the receiving side")
    }
}
