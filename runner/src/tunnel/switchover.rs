//! The tunnel's say in the switchover: a pagewire stop policy drives the source QEMU over
//! QMP ([`crate::qemu_stop`]), or QEMU keeps its own downtime rule. The tunnel lifts QEMU's
//! bandwidth cap when it drives: the tunnel's backpressure paces QEMU to what the link
//! carries, so QEMU's own rate estimate measures the tunnel.

use anyhow::{Context, Result};
use pagewire::policy::{PolicyKind, PolicyParams};

use crate::qemu_stop::{QemuStop, StopOptions};
use crate::trace::qmp::{Qmp, QmpAddr};

/// QEMU's bandwidth cap while the tunnel drives: none to speak of.
pub const NO_BANDWIDTH_CAP: u64 = 1 << 40;

/// The downtime limit held during pre-copy when the tunnel drives, in ms. Not the
/// controller's 1 ms: with QEMU 7.2 under TCG, a 1 ms limit behind the tunnel (which takes
/// QEMU's writes as fast as it can compress them) left the destination with stale copies of
/// 1 to 16 pages in 5 of 7 demo runs (kernel counters one tick old, a guest panic once):
/// both ends' streams were recorded and the destination QEMU got exactly the events the
/// source QEMU wrote, whose last version of each of those pages was older than the source's
/// memory after the migration. At 30 ms and 100 ms, 9 of 9 runs compared equal
/// (`docs/TUNNEL.md`). QEMU stops on its own only once the rest fits in 30 ms at its own
/// rate estimate, still ten times under its default 300 ms.
pub const TUNNEL_FLOOR_MS: u64 = 30;

/// Who decides when QEMU stops the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switchover {
    /// QEMU's own downtime limit, untouched.
    Qemu,
    /// A pagewire stop policy, with QEMU's limit held at `floor_ms` during pre-copy as the
    /// safety net.
    Policy { kind: PolicyKind, floor_ms: u64 },
}

impl Switchover {
    /// `qemu`, or a stop policy's name with QEMU's limit held at `floor_ms` (at least 1:
    /// at 0 QEMU never ends a pass, `docs/TUNNEL.md`).
    pub fn parse(s: &str, floor_ms: u64) -> Result<Self> {
        if s == "qemu" {
            return Ok(Switchover::Qemu);
        }
        anyhow::ensure!(
            floor_ms >= 1,
            "--floor-ms 0: QEMU would go from its first pass straight to stop-and-copy; use 1 or more"
        );
        crate::migrate::parse_policy(s)
            .map(|kind| Switchover::Policy { kind, floor_ms })
            .context("--policy: use qemu (QEMU's own downtime limit) or a stop policy")
    }

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Switchover::Qemu => "qemu",
            Switchover::Policy { kind, .. } => kind.name(),
        }
    }

    /// A controller for the source QEMU at `qmp`, prepared (the floor in place, the cap
    /// lifted) before its migration starts; `None` for QEMU's own rule. `reconnect` is
    /// where the controller reaches QEMU again if its connection breaks.
    pub fn prepare(self, qmp: &mut Qmp, reconnect: Option<QmpAddr>) -> Result<Option<QemuStop>> {
        let Switchover::Policy { kind, floor_ms } = self else {
            return Ok(None);
        };
        let memory = qmp
            .execute("query-memory-size-summary", None)
            .context("asking QEMU for its memory size")?["base-memory"]
            .as_u64()
            .context("QEMU did not say its memory size")?;
        let params = PolicyParams::new(memory / 4096, 4096);
        let mut stop = QemuStop::new(
            kind.build(&params),
            StopOptions {
                max_bandwidth: Some(NO_BANDWIDTH_CAP),
                reconnect,
                floor_ms,
                ..StopOptions::default()
            },
        );
        stop.prepare(qmp)
            .context("setting QEMU's downtime limit and bandwidth")?;
        Ok(Some(stop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_both_ways() {
        assert_eq!(Switchover::parse("qemu", 0).unwrap(), Switchover::Qemu);
        for p in PolicyKind::ALL {
            let s = Switchover::parse(p.name(), TUNNEL_FLOOR_MS).unwrap();
            assert_eq!(s.name(), p.name());
            assert_eq!(
                s,
                Switchover::Policy {
                    kind: p,
                    floor_ms: TUNNEL_FLOOR_MS
                }
            );
        }
        let e = format!("{:#}", Switchover::parse("never", 30).unwrap_err());
        assert!(e.contains("use qemu"), "{e}");
        let e = format!("{:#}", Switchover::parse("smart-stop", 0).unwrap_err());
        assert!(e.contains("--floor-ms 0"), "{e}");
    }
}
