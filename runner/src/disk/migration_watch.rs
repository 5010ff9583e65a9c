//! The switch to the synchronous phase when memory migration starts (CloudNet's rule), for
//! a source end that runs beside an unmodified QEMU: it watches the source QEMU's migration
//! over QMP (`query-migrate`) and switches the [`Phase`] as soon as QEMU reports one under
//! way. Within a process (the demo) the caller switches the phase itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{Context, Result};

use super::source::Phase;
use crate::trace::qmp::{Qmp, QmpAddr, DEFAULT_TIMEOUT};

/// How often QEMU is asked.
const POLL: Duration = Duration::from_millis(100);

/// QEMU's migration states in which memory is moving (or has moved): from `setup` on.
pub fn memory_is_migrating(status: &str) -> bool {
    matches!(
        status,
        "setup"
            | "active"
            | "pre-switchover"
            | "device"
            | "postcopy-active"
            | "postcopy-paused"
            | "postcopy-recover"
            | "wait-unplug"
            | "completed"
    )
}

/// Watches the QEMU at `qmp` (a QMP socket no one else uses) until its migration starts,
/// then switches `phase` to synchronous and says so through `log`; ends then, when `stop`
/// is set, or when QEMU's QMP fails (said through `log`: the phase then stays as it is).
pub fn switch_when_migrating(
    qmp: QmpAddr,
    phase: Phase,
    stop: Arc<AtomicBool>,
    log: impl Fn(&str) + Send + 'static,
) -> Result<JoinHandle<()>> {
    let mut q = Qmp::connect(&qmp, DEFAULT_TIMEOUT)
        .with_context(|| format!("connecting to the source QEMU's QMP at {qmp}"))?;
    Ok(thread::Builder::new()
        .name("disk-migration-watch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let status = match q.execute("query-migrate", None) {
                    Ok(v) => v["status"].as_str().unwrap_or("none").to_string(),
                    Err(e) => {
                        log(&format!(
                            "lost the source QEMU's QMP ({e}); writes stay {}",
                            if phase.synchronous() {
                                "synchronous"
                            } else {
                                "asynchronous"
                            }
                        ));
                        return;
                    }
                };
                if memory_is_migrating(&status) {
                    phase.set_synchronous(true);
                    log(&format!(
                        "QEMU's memory migration is {status}: every write is now acknowledged \
                         once the destination wrote it"
                    ));
                    return;
                }
                thread::sleep(POLL);
            }
        })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_states_with_memory_moving_count() {
        for s in ["setup", "active", "device", "completed", "postcopy-active"] {
            assert!(memory_is_migrating(s), "{s}");
        }
        for s in ["none", "failed", "cancelled", "cancelling", ""] {
            assert!(!memory_is_migrating(s), "{s}");
        }
    }
}
