//! Connecting to a pagewire peer: TCP, the sending side's shape, then mutual TLS (unless
//! turned off for tests of the link itself), all within one deadline.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::deadline::{connect_by, Link, Waits};
use super::shape::{Shape, ShapedStream, Wire};
use super::tls;

/// Connects to `to` by `by`; `wire_bytes` counts the bytes that leave (after TLS).
pub fn dial(
    to: &str,
    shape: Shape,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    by: Instant,
    wire_bytes: Arc<AtomicU64>,
) -> Result<Box<dyn Link>> {
    dial_on(to, Wire::new(shape), tls_config, by, wire_bytes)
}

/// As [`dial`], on a link `wire` that other connections share (a migration's lanes).
pub fn dial_on(
    to: &str,
    wire: Wire,
    tls_config: Option<Arc<rustls::ClientConfig>>,
    by: Instant,
    wire_bytes: Arc<AtomicU64>,
) -> Result<Box<dyn Link>> {
    let tcp = connect_by(to, by).with_context(|| format!("connecting to {to}"))?;
    let mut shaped = ShapedStream::on_wire(tcp, wire, wire_bytes)?;
    shaped.set_waits(Waits::until(by))?;
    Ok(match tls_config {
        Some(t) => Box::new(tls::connect(shaped, t)?),
        None => Box::new(shaped),
    })
}
