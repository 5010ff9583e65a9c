//! The ways a QEMU guest can cross the link in the demo: QEMU's own migration with its
//! three best-known settings, and the pagewire tunnel. Each names the QMP settings it
//! needs at both QEMUs.

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::trace::qmp::Qmp;

/// A migration method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// QEMU's migration straight over the link, default settings.
    QemuDirect,
    /// QEMU with XBZRLE (a 64 MiB cache).
    QemuXbzrle,
    /// QEMU with multifd, two channels, zstd.
    QemuMultifdZstd,
    /// QEMU's migration through the pagewire tunnel.
    PagewireTunnel,
}

/// XBZRLE's cache at the source.
pub const XBZRLE_CACHE: u64 = 64 << 20;
/// Multifd channels.
pub const MULTIFD_CHANNELS: u64 = 2;
/// QEMU's own downtime limit, left at its default for every method.
pub const QEMU_DOWNTIME_LIMIT_MS: u64 = 300;
/// The bandwidth cap QEMU is given: none to speak of, so the link is the limit.
pub const NO_BANDWIDTH_CAP: u64 = 1 << 40;

impl Method {
    /// Every method, in the order the comparison runs them.
    pub const ALL: [Method; 4] = [
        Method::QemuDirect,
        Method::QemuXbzrle,
        Method::QemuMultifdZstd,
        Method::PagewireTunnel,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::QemuDirect => "qemu-direct",
            Method::QemuXbzrle => "qemu-xbzrle",
            Method::QemuMultifdZstd => "qemu-multifd-zstd",
            Method::PagewireTunnel => "pagewire-tunnel",
        }
    }

    /// The capabilities both QEMUs get (`migrate-set-capabilities`).
    pub fn capabilities(self) -> Value {
        let on = |c: &str| json!({ "capability": c, "state": true });
        // `events`: both QEMUs announce their migration's states, stamped, which times the
        // pause from the source's stop to the destination's arrival
        let mut caps = vec![on("events")];
        match self {
            Method::QemuXbzrle => caps.push(on("xbzrle")),
            Method::QemuMultifdZstd => caps.push(on("multifd")),
            Method::QemuDirect | Method::PagewireTunnel => {}
        }
        Value::Array(caps)
    }

    /// The parameters the source QEMU gets (`migrate-set-parameters`).
    pub fn source_parameters(self) -> Value {
        let mut p = json!({
            "max-bandwidth": NO_BANDWIDTH_CAP,
            "downtime-limit": QEMU_DOWNTIME_LIMIT_MS,
        });
        match self {
            Method::QemuXbzrle => p["xbzrle-cache-size"] = json!(XBZRLE_CACHE),
            Method::QemuMultifdZstd => {
                p["multifd-channels"] = json!(MULTIFD_CHANNELS);
                p["multifd-compression"] = json!("zstd");
            }
            Method::QemuDirect | Method::PagewireTunnel => {}
        }
        p
    }

    /// The parameters the destination QEMU gets (multifd's must match the source's).
    pub fn destination_parameters(self) -> Option<Value> {
        match self {
            Method::QemuMultifdZstd => Some(json!({
                "multifd-channels": MULTIFD_CHANNELS,
                "multifd-compression": "zstd",
            })),
            _ => None,
        }
    }

    /// Sets the method's capabilities on both QEMUs and its parameters on each.
    pub fn set_up(self, source: &mut Qmp, destination: &mut Qmp) -> Result<()> {
        let caps = self.capabilities();
        for q in [&mut *source, &mut *destination] {
            q.execute(
                "migrate-set-capabilities",
                Some(json!({ "capabilities": caps })),
            )
            .context("setting the method's capabilities")?;
        }
        source
            .execute("migrate-set-parameters", Some(self.source_parameters()))
            .context("setting the source's parameters")?;
        if let Some(p) = self.destination_parameters() {
            destination
                .execute("migrate-set-parameters", Some(p))
                .context("setting the destination's parameters")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_method_asks_for_its_own_settings() {
        assert_eq!(
            Method::QemuDirect.capabilities(),
            json!([{"capability": "events", "state": true}])
        );
        assert_eq!(Method::QemuXbzrle.capabilities()[1]["capability"], "xbzrle");
        assert_eq!(
            Method::QemuXbzrle.source_parameters()["xbzrle-cache-size"],
            64 << 20
        );
        let m = Method::QemuMultifdZstd;
        assert_eq!(m.capabilities()[1]["capability"], "multifd");
        assert_eq!(m.source_parameters()["multifd-compression"], "zstd");
        assert_eq!(m.destination_parameters().unwrap()["multifd-channels"], 2);
        for m in Method::ALL {
            assert_eq!(m.source_parameters()["downtime-limit"], 300);
        }
        let names: Vec<_> = Method::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(
            names,
            [
                "qemu-direct",
                "qemu-xbzrle",
                "qemu-multifd-zstd",
                "pagewire-tunnel"
            ]
        );
    }
}
