//! Driving QEMU's own migration over QMP: start it, wait for its end, read QEMU's figures.
//! A completed status is QEMU's word only; judge the guest by its console (issue 18).

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Result};
use serde_json::{json, Value};

use crate::trace::qmp::{Qmp, QmpEvent};

/// How often the waits ask QEMU.
const POLL: Duration = Duration::from_millis(50);

/// What `query-migrate` said at the end.
#[derive(Debug, Clone)]
pub struct MigrationOutcome {
    /// `completed`, `failed` or `cancelled`.
    pub status: String,
    /// QEMU's `total-time`, ms.
    pub total_ms: Option<u64>,
    /// QEMU's `downtime`, ms (its estimate: from stopping the guest to the end at the source).
    pub downtime_ms: Option<u64>,
    /// QEMU's `ram.transferred`, bytes.
    pub ram_transferred: Option<u64>,
    /// The whole reply.
    pub info: Value,
}

impl MigrationOutcome {
    pub fn completed(&self) -> bool {
        self.status == "completed"
    }
}

/// `migrate` to `uri` (returns once QEMU has started it).
pub fn migrate(qmp: &mut Qmp, uri: &str) -> Result<()> {
    qmp.execute("migrate", Some(json!({ "uri": uri })))?;
    Ok(())
}

/// Polls the source's `query-migrate` until the migration ends, at most `timeout`.
pub fn wait_migration(qmp: &mut Qmp, timeout: Duration) -> Result<MigrationOutcome> {
    let deadline = Instant::now() + timeout;
    loop {
        let info = qmp.execute("query-migrate", None)?;
        let status = info["status"].as_str().unwrap_or("").to_string();
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            return Ok(MigrationOutcome {
                status,
                total_ms: info["total-time"].as_u64(),
                downtime_ms: info["downtime"].as_u64(),
                ram_transferred: info["ram"]["transferred"].as_u64(),
                info,
            });
        }
        if Instant::now() >= deadline {
            bail!(
                "the migration had not ended after {} s: {info}",
                timeout.as_secs()
            );
        }
        thread::sleep(POLL);
    }
}

/// QEMU's run state (`query-status`): `running`, `paused`, `inmigrate`, `postmigrate`, ...
pub fn run_state(qmp: &mut Qmp) -> Result<String> {
    let v = qmp.execute("query-status", None)?;
    Ok(v["status"].as_str().unwrap_or("").to_string())
}

/// Polls a destination until its incoming migration is over (its state leaves
/// `inmigrate`), at most `timeout`, and returns the state: `running`, or `paused` for a
/// destination started with `-S`.
pub fn wait_incoming(qmp: &mut Qmp, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let state = run_state(qmp)?;
        if state != "inmigrate" {
            return Ok(state);
        }
        if Instant::now() >= deadline {
            bail!(
                "the destination was still receiving after {} s",
                timeout.as_secs()
            );
        }
        thread::sleep(POLL);
    }
}

/// Polls a destination started with `-incoming unix:...` or `tcp:...` until it listens, at
/// most `timeout`, and returns the URI to `migrate` to: `tcp:HOST:PORT` with the port QEMU
/// chose when given port 0, or `unix:PATH`. (`exec:` and `defer` never listen.)
pub fn wait_listening(qmp: &mut Qmp, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let info = qmp.execute("query-migrate", None)?;
        if let Some(uri) = info["socket-address"]
            .as_array()
            .and_then(|a| a.iter().find_map(listening_uri))
        {
            return Ok(uri);
        }
        if Instant::now() >= deadline {
            bail!(
                "the destination did not listen for its migration within {} s: {info}",
                timeout.as_secs()
            );
        }
        thread::sleep(POLL);
    }
}

/// The guest's pause as the two QEMUs stamped it: from the source's `STOP` to the
/// destination's `MIGRATION` event with status `completed` (the moment a destination that
/// starts on arrival resumes the guest; the destination needs the `events` capability).
/// Free of the ticks' period and of polling; `None` when either event is missing. Both
/// QEMUs run on this host, so their wall clocks agree.
pub fn stop_to_arrival(source: &[QmpEvent], destination: &[QmpEvent]) -> Option<Duration> {
    let (stopped, arrived) = stop_and_arrival(source, destination)?;
    arrived.duration_since(stopped).ok()
}

/// The two moments of [`stop_to_arrival`]: the source's last `STOP` before the
/// destination's `completed`, and that `completed`.
pub fn stop_and_arrival(
    source: &[QmpEvent],
    destination: &[QmpEvent],
) -> Option<(SystemTime, SystemTime)> {
    let arrived = destination
        .iter()
        .find(|e| e.is_migration("completed"))?
        .at?;
    let stopped = source
        .iter()
        .rev()
        .filter(|e| e.name == "STOP")
        .filter_map(|e| e.at)
        .find(|&at| at <= arrived)?;
    Some((stopped, arrived))
}

/// A `migrate` URI from one of `query-migrate`'s `socket-address` entries.
fn listening_uri(addr: &Value) -> Option<String> {
    match addr["type"].as_str()? {
        "inet" => {
            let host = addr["host"].as_str()?;
            let port = addr["port"].as_str()?;
            Some(if host.contains(':') {
                format!("tcp:[{host}]:{port}")
            } else {
                format!("tcp:{host}:{port}")
            })
        }
        "unix" => Some(format!("unix:{}", addr["path"].as_str()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, micros: u64, data: Value) -> QmpEvent {
        QmpEvent {
            name: name.into(),
            at: Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_micros(micros)),
            data,
        }
    }

    #[test]
    fn the_pause_runs_from_the_last_stop_to_the_arrival() {
        let completed = json!({"status": "completed"});
        let source = [
            event("STOP", 1_000, Value::Null), // a pause long before: not this one
            event("RESUME", 2_000, Value::Null),
            event("STOP", 5_000_000, Value::Null),
            event("STOP", 9_000_000, Value::Null), // after the arrival: not this one
        ];
        let destination = [
            event("MIGRATION", 4_000_000, json!({"status": "active"})),
            event("MIGRATION", 5_250_000, completed.clone()),
        ];
        assert_eq!(
            stop_to_arrival(&source, &destination),
            Some(Duration::from_millis(250))
        );
        assert_eq!(stop_to_arrival(&source[..2], &destination[..1]), None);
        assert_eq!(stop_to_arrival(&[], &destination), None);
    }

    #[test]
    fn listening_addresses_become_uris() {
        let inet = json!({"port": "47123", "ipv4": true, "host": "127.0.0.1", "type": "inet"});
        assert_eq!(listening_uri(&inet).unwrap(), "tcp:127.0.0.1:47123");
        let v6 = json!({"port": "5", "host": "::1", "type": "inet"});
        assert_eq!(listening_uri(&v6).unwrap(), "tcp:[::1]:5");
        let unix = json!({"path": "/tmp/m.sock", "type": "unix"});
        assert_eq!(listening_uri(&unix).unwrap(), "unix:/tmp/m.sock");
        assert_eq!(listening_uri(&json!({"type": "vsock"})), None);
    }
}
