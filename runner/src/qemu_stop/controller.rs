//! The switchover controller: holds QEMU's downtime limit at a floor during pre-copy, feeds
//! each completed pass to a stop policy, and raises the limit to QEMU's maximum when the
//! policy says stop, so that QEMU stops the guest at its next check. Any failure hands the
//! switchover back to QEMU with the limit it had before.

use std::fmt;
use std::ops::ControlFlow;
use std::thread;
use std::time::Duration;

use pagewire::policy::{AnyPolicy, Decision, IterationReport, StopPolicy};
use serde_json::{json, Value};

use super::sample::{PassTracker, RamSample};
use super::timeline::{PassRecord, StopEnd, StopTimeline};
use crate::trace::qmp::{Qmp, QmpAddr, QmpError, DEFAULT_TIMEOUT};

/// QEMU's largest accepted `downtime-limit` in milliseconds (2000 s; QEMU 7.2 refuses more
/// with "expects an integer in the range of 0 to (2000 * 1000) ms").
pub const QEMU_MAX_DOWNTIME_LIMIT_MS: u64 = 2_000_000;
/// QEMU's default `downtime-limit` (300 ms).
pub const QEMU_DEFAULT_DOWNTIME_LIMIT_MS: u64 = 300;
/// QEMU 7.2's default `max-bandwidth`: 128 MiB/s (not the 32 MiB/s of older versions).
pub const QEMU_DEFAULT_MAX_BANDWIDTH: u64 = 128 << 20;
/// The limit held during pre-copy. Not 0: at 0 QEMU skips the end-of-pass bitmap sync and
/// goes straight to stop-and-copy after the first pass.
pub const DEFAULT_FLOOR_MS: u64 = 1;
/// How often `query-migrate` is asked.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How the controller drives QEMU.
#[derive(Debug, Clone)]
pub struct StopOptions {
    /// The downtime limit during pre-copy, in milliseconds.
    pub floor_ms: u64,
    /// The limit restored as the safety net and at the end; `None`: the one QEMU has when
    /// [`QemuStop::prepare`] runs.
    pub user_downtime_limit_ms: Option<u64>,
    /// `max-bandwidth` to set, in bytes per second; `None` leaves QEMU's.
    pub max_bandwidth: Option<u64>,
    /// Time between `query-migrate` calls.
    pub poll_interval: Duration,
    /// Where to reconnect to restore the limit if this QMP connection is lost.
    pub reconnect: Option<QmpAddr>,
    /// Deadline for each QMP reply.
    pub command_timeout: Duration,
}

impl Default for StopOptions {
    fn default() -> Self {
        StopOptions {
            floor_ms: DEFAULT_FLOOR_MS,
            user_downtime_limit_ms: None,
            max_bandwidth: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            reconnect: None,
            command_timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// What the progress callback sees after each `query-migrate`.
#[derive(Debug)]
pub struct Progress<'a> {
    /// QEMU's `status` (`setup`, `active`, ...).
    pub status: &'a str,
    /// The RAM figures, once QEMU reports them.
    pub sample: Option<&'a RamSample>,
    /// The pass that was seen to end in this reply, with the decision.
    pub pass: Option<&'a PassRecord>,
}

/// The controller lost QEMU or QEMU refused a command: the switchover was handed back to
/// QEMU's own downtime limit if `restored`.
#[derive(Debug)]
pub struct StopError {
    /// What it saw up to the failure (its `end` says it handed over).
    pub timeline: StopTimeline,
    /// The failure.
    pub cause: QmpError,
    /// Whether the user's downtime limit is back in place in QEMU.
    pub restored: bool,
}

impl fmt::Display for StopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = self.timeline.user_downtime_limit_ms;
        if self.restored {
            write!(
                f,
                "{}; QEMU's downtime limit is back at {limit} ms, so QEMU decides the \
                 switchover itself",
                self.cause
            )
        } else {
            write!(
                f,
                "{}; the downtime limit could not be restored: set it yourself with \
                 migrate-set-parameters downtime-limit={limit}, or the migration may never \
                 converge",
                self.cause
            )
        }
    }
}

impl std::error::Error for StopError {}

/// A stop policy deciding when one QEMU migration switches over.
#[derive(Debug)]
pub struct QemuStop {
    policy: AnyPolicy,
    opts: StopOptions,
    user_limit_ms: Option<u64>,
}

impl QemuStop {
    /// A controller for `policy`.
    pub fn new(policy: AnyPolicy, opts: StopOptions) -> Self {
        QemuStop {
            policy,
            opts,
            user_limit_ms: None,
        }
    }

    /// Remembers QEMU's downtime limit (unless given), then sets the floor and the
    /// bandwidth. Call it before `migrate`, so that QEMU cannot end a short first pass on
    /// its own; [`QemuStop::run`] calls it if it was not.
    pub fn prepare(&mut self, qmp: &mut Qmp) -> Result<(), QmpError> {
        let user = match self.opts.user_downtime_limit_ms {
            Some(ms) => ms,
            None => {
                let p = qmp.execute_within(
                    "query-migrate-parameters",
                    None,
                    self.opts.command_timeout,
                )?;
                p.get("downtime-limit")
                    .and_then(Value::as_u64)
                    .unwrap_or(QEMU_DEFAULT_DOWNTIME_LIMIT_MS)
            }
        };
        self.user_limit_ms = Some(user);
        let mut args = json!({ "downtime-limit": self.opts.floor_ms });
        if let Some(bw) = self.opts.max_bandwidth {
            args["max-bandwidth"] = json!(bw);
        }
        self.set(qmp, args)
    }

    /// Drives the migration `migrate` started until QEMU reports it completed, failed or
    /// cancelled, or until `progress` breaks (then the user's limit is restored and QEMU
    /// finishes on its own). On a QMP failure the limit is restored too (through
    /// `reconnect` if the connection is gone) and the error says whether that worked.
    pub fn run(
        &mut self,
        qmp: &mut Qmp,
        mut progress: impl FnMut(&Progress<'_>) -> ControlFlow<()>,
    ) -> Result<StopTimeline, Box<StopError>> {
        let mut timeline = StopTimeline {
            policy: self.policy.name().to_string(),
            floor_ms: self.opts.floor_ms,
            user_downtime_limit_ms: self
                .user_limit_ms
                .or(self.opts.user_downtime_limit_ms)
                .unwrap_or(QEMU_DEFAULT_DOWNTIME_LIMIT_MS),
            max_bandwidth: self.opts.max_bandwidth,
            passes: Vec::new(),
            stop_after_pass: None,
            dirty_sync_count_at_stop: None,
            end: StopEnd::Cancelled,
            final_dirty_sync_count: 0,
            total_time_ms: 0,
            qemu_downtime_ms: None,
            qemu_downtime_bytes: None,
        };
        if self.user_limit_ms.is_none() {
            if let Err(e) = self.prepare(qmp) {
                return Err(self.hand_over(qmp, timeline, e));
            }
            timeline.user_downtime_limit_ms = self.user_limit();
        }
        let mut tracker = PassTracker::new();
        loop {
            let reply = match qmp.execute_within("query-migrate", None, self.opts.command_timeout) {
                Ok(r) => r,
                Err(e) => return Err(self.hand_over(qmp, timeline, e)),
            };
            let status = reply
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("none");
            let sample = RamSample::from_query_migrate(&reply);
            if let Some(s) = &sample {
                timeline.final_dirty_sync_count = s.dirty_sync_count;
                timeline.total_time_ms = s.at_ms;
            }
            let end = match status {
                "completed" => Some(StopEnd::Completed),
                "failed" => Some(StopEnd::Failed {
                    error: reply
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("QEMU gave no reason")
                        .to_string(),
                }),
                "cancelled" => Some(StopEnd::Cancelled),
                _ => None,
            };
            if let Some(end) = end {
                timeline.end = end;
                timeline.qemu_downtime_ms = reply.get("downtime").and_then(Value::as_u64);
                timeline.qemu_downtime_bytes =
                    reply.pointer("/ram/downtime-bytes").and_then(Value::as_u64);
                // Leave QEMU's parameters as they were found, for its next migration. The
                // migration is over either way, so its end stays in the timeline.
                return match self.restore(qmp) {
                    Ok(()) => Ok(timeline),
                    Err(cause) => Err(Box::new(StopError {
                        timeline,
                        cause,
                        restored: false,
                    })),
                };
            }
            let mut seen = None;
            if let Some(s) = &sample {
                if let Some(report) = tracker.observe(s) {
                    if timeline.stop_after_pass.is_none() {
                        let record = self.decide(report, s);
                        if record.decision == Decision::StopAndCopy {
                            let raise = json!({ "downtime-limit": QEMU_MAX_DOWNTIME_LIMIT_MS });
                            if let Err(e) = self.set(qmp, raise) {
                                timeline.passes.push(record);
                                return Err(self.hand_over(qmp, timeline, e));
                            }
                            timeline.stop_after_pass = Some(report.iteration);
                            timeline.dirty_sync_count_at_stop = Some(s.dirty_sync_count);
                        }
                        timeline.passes.push(record);
                        seen = timeline.passes.last();
                    }
                }
            }
            let flow = progress(&Progress {
                status,
                sample: sample.as_ref(),
                pass: seen,
            });
            if flow.is_break() {
                let reason = "the caller stopped the controller".to_string();
                return match self.restore(qmp) {
                    Ok(()) => {
                        timeline.end = StopEnd::HandedToQemu { reason };
                        Ok(timeline)
                    }
                    Err(e) => Err(self.hand_over(qmp, timeline, e)),
                };
            }
            thread::sleep(self.opts.poll_interval);
        }
    }

    /// Asks the policy about one pass; past the policy's own ceiling the controller stops
    /// by itself (a policy that never says stop would otherwise run forever).
    fn decide(&mut self, report: IterationReport, s: &RamSample) -> PassRecord {
        let name = self.policy.name();
        let ceiling = self.policy.max_iterations();
        let (decision, reason) = if report.iteration > ceiling {
            (
                Decision::StopAndCopy,
                format!(
                    "pass {} is past {name}'s ceiling of {ceiling}",
                    report.iteration
                ),
            )
        } else {
            let d = self.policy.decide(&report);
            let verb = match d {
                Decision::Continue => "continue",
                Decision::StopAndCopy => "stop and copy",
            };
            (
                d,
                format!(
                    "{name}: {verb} ({} pages sent, {} dirty)",
                    report.pages_sent, report.pages_remaining
                ),
            )
        };
        PassRecord {
            report,
            seen_at_ms: s.at_ms,
            dirty_sync_count: s.dirty_sync_count,
            remaining_bytes: s.remaining_bytes,
            dirty_pages_rate: s.dirty_pages_rate,
            decision,
            reason,
        }
    }

    fn user_limit(&self) -> u64 {
        self.user_limit_ms.unwrap_or(QEMU_DEFAULT_DOWNTIME_LIMIT_MS)
    }

    fn set(&self, qmp: &mut Qmp, args: Value) -> Result<(), QmpError> {
        qmp.execute_within(
            "migrate-set-parameters",
            Some(args),
            self.opts.command_timeout,
        )
        .map(|_| ())
    }

    /// Puts the user's downtime limit back, reconnecting if this connection is gone (the
    /// new connection then replaces it in `qmp`).
    fn restore(&self, qmp: &mut Qmp) -> Result<(), QmpError> {
        let args = json!({ "downtime-limit": self.user_limit() });
        match self.set(qmp, args.clone()) {
            Err(e) if e.is_connection_lost() => {
                let Some(addr) = &self.opts.reconnect else {
                    return Err(e);
                };
                // QEMU serves one QMP client at a time: free the slot first.
                qmp.close();
                let mut fresh = Qmp::connect(addr, self.opts.command_timeout)?;
                self.set(&mut fresh, args)?;
                *qmp = fresh;
                Ok(())
            }
            other => other,
        }
    }

    /// The safety net: restore the user's limit so that QEMU's own rule ends the migration.
    fn hand_over(
        &self,
        qmp: &mut Qmp,
        mut timeline: StopTimeline,
        cause: QmpError,
    ) -> Box<StopError> {
        let restored = self.restore(qmp).is_ok();
        timeline.end = StopEnd::HandedToQemu {
            reason: cause.to_string(),
        };
        Box::new(StopError {
            timeline,
            cause,
            restored,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagewire::policy::{PolicyKind, PolicyParams};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::sync::{Arc, Mutex};

    /// A fake QEMU: answers `query-migrate` with `replies` in turn (closing the connection
    /// where one is `None`), reports a downtime limit of 300 ms, and logs every
    /// `migrate-set-parameters` argument object in `set`. Serves connections one after the
    /// other, as QEMU does.
    struct FakeQemu {
        addr: QmpAddr,
        set: Arc<Mutex<Vec<Value>>>,
        _dir: tempfile::TempDir,
    }

    fn fake_qemu(replies: Vec<Option<Value>>) -> FakeQemu {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let set = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&set);
        thread::spawn(move || {
            let mut replies = replies.into_iter();
            for conn in listener.incoming() {
                let Ok(mut s) = conn else { return };
                writeln!(s, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).unwrap_or(0) > 0 {
                    let msg: Value = serde_json::from_str(&line).unwrap();
                    line.clear();
                    let ret = match msg["execute"].as_str().unwrap() {
                        "query-migrate" => match replies.next().flatten() {
                            Some(v) => v,
                            None => break,
                        },
                        "query-migrate-parameters" => json!({ "downtime-limit": 300 }),
                        "migrate-set-parameters" => {
                            log.lock().unwrap().push(msg["arguments"].clone());
                            json!({})
                        }
                        _ => json!({}),
                    };
                    let reply = json!({ "return": ret, "id": msg["id"] });
                    // `ignore`: the controller may be gone.
                    let _ = writeln!(s, "{reply}");
                }
            }
        });
        FakeQemu {
            addr: QmpAddr::Unix(path),
            set,
            _dir: dir,
        }
    }

    /// An active migration's reply at `sync`, with the pass that `sync` started half sent.
    fn active(at_ms: u64, sync: u64) -> Option<Value> {
        Some(json!({
            "status": "active", "total-time": at_ms,
            "ram": {
                "dirty-sync-count": sync, "remaining": 4_096_000, "transferred": at_ms * 8_000,
                "normal": at_ms * 2, "duplicate": 0, "mbps": 64.0, "page-size": 4096,
                "dirty-pages-rate": 1000
            }
        }))
    }

    fn opts() -> StopOptions {
        StopOptions {
            poll_interval: Duration::from_millis(1),
            command_timeout: Duration::from_secs(5),
            ..StopOptions::default()
        }
    }

    fn xen_today(passes: u32) -> AnyPolicy {
        let mut p = PolicyKind::XenToday.build(&PolicyParams::new(32768, 4096));
        p.set_max_iterations(passes);
        p
    }

    #[test]
    fn floor_then_raise_after_the_deciding_pass_then_the_user_limit_again() {
        let done = json!({
            "status": "completed", "total-time": 5000, "downtime": 7,
            "ram": {
                "dirty-sync-count": 5, "remaining": 0, "page-size": 4096,
                "downtime-bytes": 9_529_551
            }
        });
        let q = fake_qemu(vec![
            Some(json!({ "status": "setup" })),
            active(1000, 1),
            active(2000, 2),
            active(3000, 3),
            active(3100, 3),
            Some(done),
        ]);
        let mut qmp = Qmp::connect(&q.addr, Duration::from_secs(5)).unwrap();
        let mut stop = QemuStop::new(
            xen_today(2),
            StopOptions {
                max_bandwidth: Some(1 << 30),
                ..opts()
            },
        );
        let mut statuses = Vec::new();
        let t = stop
            .run(&mut qmp, |p| {
                statuses.push(p.status.to_string());
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(
            *q.set.lock().unwrap(),
            [
                json!({ "downtime-limit": 1, "max-bandwidth": 1u64 << 30 }),
                json!({ "downtime-limit": QEMU_MAX_DOWNTIME_LIMIT_MS }),
                json!({ "downtime-limit": 300 }),
            ]
        );
        assert_eq!(statuses, ["setup", "active", "active", "active", "active"]);
        assert_eq!(t.end, StopEnd::Completed);
        assert_eq!(t.user_downtime_limit_ms, 300);
        assert_eq!(t.passes.len(), 2);
        assert_eq!(t.passes[0].decision, Decision::Continue);
        assert_eq!(t.passes[1].decision, Decision::StopAndCopy);
        assert_eq!(t.passes[1].report.iteration, 2);
        assert_eq!(t.stop_after_pass, Some(2));
        assert_eq!(t.dirty_sync_count_at_stop, Some(3));
        assert_eq!(t.final_dirty_sync_count, 5);
        assert_eq!(t.qemu_downtime_ms, Some(7));
        assert_eq!(t.qemu_downtime_bytes, Some(9_529_551));
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["end"]["kind"], "completed");
        assert_eq!(json["passes"][1]["decision"], "stop-and-copy");
    }

    #[test]
    fn a_lost_connection_restores_the_limit_through_a_new_one() {
        // The first connection closes at the third query-migrate; the second gets the rest.
        let q = fake_qemu(vec![
            active(1000, 1),
            active(2000, 2),
            None,
            active(2500, 2),
        ]);
        let mut qmp = Qmp::connect(&q.addr, Duration::from_secs(5)).unwrap();
        let mut stop = QemuStop::new(
            xen_today(10),
            StopOptions {
                user_downtime_limit_ms: Some(2000),
                reconnect: Some(q.addr.clone()),
                ..opts()
            },
        );
        let e = stop
            .run(&mut qmp, |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(e.restored, "{e}");
        assert!(e.cause.is_connection_lost());
        assert!(e.to_string().contains("back at 2000 ms"), "{e}");
        assert_eq!(e.timeline.passes.len(), 1);
        assert!(matches!(e.timeline.end, StopEnd::HandedToQemu { .. }));
        assert_eq!(
            *q.set.lock().unwrap(),
            [
                json!({ "downtime-limit": 1 }),
                json!({ "downtime-limit": 2000 })
            ]
        );
        // The caller's handle is the new connection.
        assert_eq!(
            qmp.execute("query-migrate", None).unwrap()["status"],
            "active"
        );
    }

    #[test]
    fn without_a_way_back_the_error_says_what_to_run() {
        let q = fake_qemu(vec![active(1000, 1), None]);
        let mut qmp = Qmp::connect(&q.addr, Duration::from_secs(5)).unwrap();
        let mut stop = QemuStop::new(xen_today(10), opts());
        let e = stop
            .run(&mut qmp, |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(!e.restored);
        assert!(
            e.to_string()
                .contains("migrate-set-parameters downtime-limit=300"),
            "{e}"
        );
    }

    #[test]
    fn a_caller_that_breaks_hands_over_to_qemu() {
        let q = fake_qemu(vec![active(1000, 1), active(2000, 2), active(3000, 3)]);
        let mut qmp = Qmp::connect(&q.addr, Duration::from_secs(5)).unwrap();
        let mut stop = QemuStop::new(xen_today(10), opts());
        let t = stop
            .run(&mut qmp, |p| match p.pass {
                Some(_) => ControlFlow::Break(()),
                None => ControlFlow::Continue(()),
            })
            .unwrap();
        assert!(matches!(t.end, StopEnd::HandedToQemu { .. }), "{:?}", t.end);
        assert_eq!(
            *q.set.lock().unwrap(),
            [
                json!({ "downtime-limit": 1 }),
                json!({ "downtime-limit": 300 })
            ]
        );
    }

    #[test]
    fn past_the_policy_ceiling_the_controller_stops_by_itself() {
        // Passes 1 to 3 end between two replies: one report numbered 3, past a cap of 2.
        let q = fake_qemu(vec![active(1000, 1), active(2000, 4)]);
        let mut qmp = Qmp::connect(&q.addr, Duration::from_secs(5)).unwrap();
        let mut stop = QemuStop::new(xen_today(2), opts());
        let e = stop
            .run(&mut qmp, |_| ControlFlow::Continue(()))
            .unwrap_err();
        let t = e.timeline;
        assert_eq!(t.passes.len(), 1);
        assert_eq!(t.passes[0].report.iteration, 3);
        assert_eq!(t.passes[0].decision, Decision::StopAndCopy);
        assert!(
            t.passes[0].reason.contains("ceiling of 2"),
            "{}",
            t.passes[0].reason
        );
        assert_eq!(t.stop_after_pass, Some(3));
    }
}
