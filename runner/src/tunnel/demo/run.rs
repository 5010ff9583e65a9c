//! One run of the demo: a source QEMU booting the small Linux guest and a destination QEMU
//! (started paused, `-incoming defer`), the method's settings on both, the migration over
//! the shaped link, then the verification: both machines' RAM identical (`pmemsave`),
//! and, once the destination is resumed, the guest counting on from where it stopped and
//! passing its own checks.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;

use super::super::switchover::Switchover;
use super::super::StageReport;
use super::method::Method;
use super::path::{MigrationPath, TunnelCodec};
use crate::machine::{
    compare_machines, guest_pause, migrate, stop_and_arrival, wait_incoming, wait_migration,
    GuestImage, Machine, MigrationPair,
};
use crate::net::{Shape, Wire};
use crate::qemu_stop::StopTimeline;
use crate::trace::qmp::QmpAddr;

/// What every run of a demo shares.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The guest.
    pub image: GuestImage,
    /// The link.
    pub shape: Shape,
    /// How the tunnel encodes.
    pub codec: TunnelCodec,
    /// Who decides the tunnel run's switchover (QEMU's own runs keep QEMU's rule).
    pub switchover: Switchover,
    /// Where each run keeps its QEMUs' sockets, logs and memory dumps.
    pub work_dir: PathBuf,
    /// Longest a migration may take.
    pub timeout: Duration,
}

/// One method's run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunResult {
    /// What the guest ran.
    pub workload: String,
    /// The method's name.
    pub method: String,
    /// From `migrate` to the destination holding the whole migration (its incoming
    /// migration over), seconds: what the link allows, whatever buffers QEMU's writes
    /// filled (0 when the migration did not complete).
    pub total_s: f64,
    /// QEMU's `total-time` at the source, seconds: until its last write, which buffers on
    /// the way may take long before the link delivers it.
    pub qemu_total_s: f64,
    /// QEMU's `downtime`, ms.
    pub downtime_ms: Option<u64>,
    /// The pause the guest saw in its 50 ms ticks, less the time the destination was held
    /// paused for the memory comparison, ms.
    pub guest_pause_ms: Option<f64>,
    /// From the source QEMU's `STOP` to the destination's migration `completed`, as the
    /// QEMUs stamped them, ms: the pause without the ticks' period and the polling.
    pub stop_to_arrival_ms: Option<f64>,
    /// For the tunnel: where that pause went.
    pub pause_parts: Option<PauseParts>,
    /// Bytes that crossed the link.
    pub wire_bytes: u64,
    /// QEMU's `ram.transferred`: the migration stream's RAM bytes as QEMU counts them.
    pub qemu_ram_bytes: Option<u64>,
    /// Pre-copy passes QEMU made (`dirty-sync-count`).
    pub passes: Option<u64>,
    /// CPU seconds the migration took at the source: QEMU's threads but its vCPUs (which
    /// run the guest) and, for the tunnel, the source end.
    pub cpu_source_s: f64,
    /// The same at the destination.
    pub cpu_destination_s: f64,
    /// How many pages of the two machines' RAM differed before the destination ran (0:
    /// identical; `None`: the run failed before they were compared).
    pub differing_pages: Option<u64>,
    /// The guest counted on and passed its checks at the destination, none failed.
    pub guest_ok: bool,
    /// Everything above held.
    pub verified: bool,
    /// Who decided when QEMU stopped the guest: `qemu` or a pagewire stop policy.
    pub decided_by: String,
    /// What the stop policy saw and decided, pass by pass, when one decided.
    pub switchover: Option<StopTimeline>,
    /// For the tunnel: what its link compression did (zstd's levels).
    pub link_stage: Option<StageReport>,
    /// Why not, when the run failed.
    pub error: Option<String>,
}

/// The tunnel's pause (`stop_to_arrival_ms`) in three parts, from the QEMUs' events and
/// the tunnel ends' clocks (one host, one wall clock), ms.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct PauseParts {
    /// From the source QEMU's `STOP` until the source end had read its whole stream:
    /// QEMU's last pass and device state, as fast as the tunnel took them.
    pub source_qemu_ms: f64,
    /// From there until the destination end had handed the destination QEMU the stream's
    /// last byte: what was still in the tunnel crossing the link, and the decoding.
    pub tunnel_ms: f64,
    /// From there to the destination QEMU's `completed`: it loading the rest.
    pub destination_qemu_ms: f64,
}

impl PauseParts {
    /// The parts between `stopped` and `arrived`, the ends' two moments in microseconds
    /// since the Unix epoch between them; `None` when a moment is missing. A moment outside
    /// its neighbours (an end stamps it just after the fact, and may be descheduled first)
    /// counts as the nearer one, so that the parts always add up to the pause.
    pub fn between(
        stopped: SystemTime,
        qemu_closed_unix_us: u64,
        qemu_fed_unix_us: u64,
        arrived: SystemTime,
    ) -> Option<Self> {
        let us = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_micros() as u64)
        };
        let (a, d) = (us(stopped)?, us(arrived)?);
        if qemu_closed_unix_us == 0 || qemu_fed_unix_us == 0 || a > d {
            return None;
        }
        let b = qemu_closed_unix_us.clamp(a, d);
        let c = qemu_fed_unix_us.clamp(b, d);
        let ms = |from: u64, to: u64| (to - from) as f64 / 1e3;
        Some(PauseParts {
            source_qemu_ms: ms(a, b),
            tunnel_ms: ms(b, c),
            destination_qemu_ms: ms(c, d),
        })
    }
}

/// Heartbeats the destination must show after it was resumed.
const BEATS_AFTER: usize = 4;
/// How long the guest may take to boot, and to show them.
pub(super) const GUEST_WAIT: Duration = Duration::from_secs(120);

/// Runs `method` once; a failure is in the result, never an `Err`.
pub fn run_method(method: Method, cfg: &DemoConfig, log: &mut dyn FnMut(&str)) -> RunResult {
    let decides = match method {
        Method::PagewireTunnel => cfg.switchover,
        _ => Switchover::Qemu,
    };
    let mut r = RunResult {
        workload: cfg.image.workload.name().into(),
        method: method.name().into(),
        decided_by: decides.name().into(),
        ..RunResult::default()
    };
    if let Err(e) = attempt(method, decides, cfg, &mut r, log) {
        r.error = Some(format!("{e:#}"));
        r.verified = false;
    }
    r
}

fn attempt(
    method: Method,
    decides: Switchover,
    cfg: &DemoConfig,
    r: &mut RunResult,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let dir = cfg.work_dir.join(method.name());
    let _ = std::fs::remove_dir_all(&dir);
    log(&format!(
        "{}: booting the source and destination QEMUs",
        method.name()
    ));
    let mut pair = MigrationPair::launch(&cfg.image, &dir, "defer", true)?;
    pair.source.wait_ready(GUEST_WAIT)?;
    pair.source
        .console()
        .wait_for("two passed checks", GUEST_WAIT, |s| {
            (s.checks_ok.len() >= 2).then_some(())
        })?;
    let mut sq = pair.source.qmp()?;
    let mut dq = pair.destination.qmp()?;
    method.set_up(&mut sq, &mut dq)?;
    let reconnect = QmpAddr::Unix(pair.source.qmp_path().to_path_buf());
    let mut stop = decides.prepare(&mut sq, Some(reconnect))?;
    let path = match method {
        Method::PagewireTunnel => {
            MigrationPath::tunnel(&dir, Wire::new(cfg.shape), cfg.codec, &mut dq)?
        }
        _ => MigrationPath::relay(Wire::new(cfg.shape), &mut dq)?,
    };
    let cpu_before = (
        migration_cpu(pair.source.pid())?,
        migration_cpu(pair.destination.pid())?,
    );
    log(&format!(
        "{}: migrating over {}",
        method.name(),
        cfg.shape.describe()
    ));
    let started = Instant::now();
    migrate(&mut sq, path.uri())?;
    if let Some(stop) = stop.as_mut() {
        r.switchover = Some(match stop.run(&mut sq, |_| ControlFlow::Continue(())) {
            Ok(t) => t,
            Err(e) => {
                log(&format!("{}: {e}", method.name()));
                e.timeline
            }
        });
    }
    let outcome = wait_migration(&mut sq, cfg.timeout)?;
    r.qemu_total_s = outcome.total_ms.unwrap_or(0) as f64 / 1e3;
    r.downtime_ms = outcome.downtime_ms;
    r.qemu_ram_bytes = outcome.ram_transferred;
    r.passes = outcome.info["ram"]["dirty-sync-count"].as_u64();
    if !outcome.completed() {
        // QEMU only knows its connection broke; the tunnel's end knows why
        let why = match path.finish() {
            Err(e) => format!("; {e:#}"),
            Ok(_) => String::new(),
        };
        bail!(
            "QEMU's migration {}: {}{why}",
            outcome.status,
            outcome.info["error-desc"]
                .as_str()
                .unwrap_or("no reason given")
        );
    }
    let state = wait_incoming(&mut dq, cfg.timeout)?;
    let arrived = Instant::now();
    ensure!(state == "paused", "the destination is {state}, not paused");
    r.total_s = arrived.duration_since(started).as_secs_f64();
    let cpu_after = (
        migration_cpu(pair.source.pid())?,
        migration_cpu(pair.destination.pid())?,
    );
    let (figures, ends) = path.finish()?;
    let moments = ends
        .as_ref()
        .map(|(s, d)| (s.carried.qemu_closed_unix_us, d.delivered.qemu_fed_unix_us));
    r.link_stage = ends.map(|(s, _)| s.link_stage);
    r.wire_bytes = figures.wire_bytes;
    r.cpu_source_s = cpu_after.0 - cpu_before.0 + figures.source_cpu_s;
    r.cpu_destination_s = cpu_after.1 - cpu_before.1 + figures.destination_cpu_s;

    log(&format!("{}: comparing both machines' RAM", method.name()));
    let same = compare_machines(&mut sq, &mut dq, &dir.join("dumps"))?;
    r.differing_pages = Some(same.differing_pages);
    if let Some((stopped, arrived)) = stop_and_arrival(&sq.take_events(), &dq.take_events()) {
        r.stop_to_arrival_ms = arrived
            .duration_since(stopped)
            .ok()
            .map(|d| d.as_secs_f64() * 1e3);
        r.pause_parts =
            moments.and_then(|(closed, fed)| PauseParts::between(stopped, closed, fed, arrived));
    }
    let resumed = Instant::now();
    dq.execute("cont", None)?;
    let guest_trouble = guest_runs_on(&pair.source, &pair.destination, resumed)?;
    r.guest_ok = guest_trouble.is_none();
    let held = resumed.duration_since(arrived);
    r.guest_pause_ms = guest_pause(
        &pair.source.console().ticks(),
        &pair.destination.console().ticks(),
        started,
    )
    .map(|g| g.length().saturating_sub(held).as_secs_f64() * 1e3);
    r.verified = same.equal() && r.guest_ok;
    let differ = (!same.equal()).then(|| {
        format!(
            "{} pages of RAM differ, the first at {:#x}",
            same.differing_pages,
            same.first_difference.unwrap_or(0)
        )
    });
    let why: Vec<String> = differ.into_iter().chain(guest_trouble).collect();
    ensure!(why.is_empty(), "{}", why.join("; "));
    Ok(())
}

/// Whether the destination's guest counts on from the source's last heartbeat, passes a
/// check of its own there, and neither side reported a failed check: `None` when it all
/// holds, else what did not.
pub(super) fn guest_runs_on(
    source: &Machine,
    destination: &Machine,
    resumed: Instant,
) -> Result<Option<String>> {
    let last = source
        .console()
        .last_heartbeat()
        .context("the source guest printed no heartbeat")?
        .round;
    let beats = destination
        .console()
        .wait_heartbeats_after(resumed, BEATS_AFTER, GUEST_WAIT)?;
    // a heartbeat line cut by the switchover is finished at the destination, unread
    let continues = beats[0].round == last + 1 || beats[0].round == last + 2;
    let checked = destination
        .console()
        .checks_ok()
        .iter()
        .any(|b| b.round > last);
    let failures: Vec<String> = [source, destination]
        .iter()
        .flat_map(|m| m.console().failures())
        .map(|f| f.line)
        .collect();
    let mut trouble = Vec::new();
    if !continues {
        trouble.push(format!(
            "the destination's first heartbeat was round {}, the source's last {last}",
            beats[0].round
        ));
    }
    if !checked {
        trouble.push(format!(
            "no check passed at the destination after round {last}"
        ));
    }
    if !failures.is_empty() {
        trouble.push(format!("failed guest checks: {}", failures.join(", ")));
    }
    Ok((!trouble.is_empty()).then(|| trouble.join("; ")))
}

/// CPU seconds QEMU process `pid` has used (user and system, threads that ended included)
/// less what its vCPU threads used running the guest. QEMU names those `CPU <n>/<accel>`.
pub fn migration_cpu(pid: u32) -> Result<f64> {
    let all = cpu_of_stat(&read_stat(&format!("/proc/{pid}/stat"))?)?;
    let mut vcpus = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let dir = task?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with("CPU ") {
            // a vCPU thread that just ended counts in the process's total only
            if let Ok(stat) = read_stat(&dir.join("stat").display().to_string()) {
                vcpus += cpu_of_stat(&stat)?;
            }
        }
    }
    Ok(all - vcpus)
}

fn read_stat(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
}

fn cpu_of_stat(stat: &str) -> Result<f64> {
    // the fields after the command name, which may hold spaces: state is the first,
    // utime the 12th, stime the 13th
    let after = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    ensure!(f.len() > 12, "malformed /proc stat");
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(ticks / if hz > 0 { hz as f64 } else { 100.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces() {
        let stat = "1234 (qemu system) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0";
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((cpu_of_stat(stat).unwrap() - 400.0 / hz).abs() < 1e-9);
        assert!(cpu_of_stat("1234 (x) S 1").is_err());
        assert!(migration_cpu(std::process::id()).unwrap() >= 0.0);
    }

    #[test]
    fn the_pause_splits_at_the_tunnel_ends_moments() {
        let at = |us: u64| UNIX_EPOCH + Duration::from_micros(us);
        let p = PauseParts::between(at(1_000_000), 1_013_000, 1_320_500, at(1_326_000)).unwrap();
        assert_eq!(
            p,
            PauseParts {
                source_qemu_ms: 13.0,
                tunnel_ms: 307.5,
                destination_qemu_ms: 5.5,
            }
        );
        // the destination end stamped its moment just after QEMU finished: no time left for
        // QEMU, and the parts still add up
        assert_eq!(
            PauseParts::between(at(1_000_000), 1_013_000, 1_327_000, at(1_326_000)),
            Some(PauseParts {
                source_qemu_ms: 13.0,
                tunnel_ms: 313.0,
                destination_qemu_ms: 0.0,
            })
        );
        // a moment missing, or the arrival before the stop: no parts
        assert_eq!(
            PauseParts::between(at(1_000_000), 0, 1_320_500, at(1_326_000)),
            None
        );
        assert_eq!(
            PauseParts::between(at(2_000_000), 1_013_000, 1_320_500, at(1_326_000)),
            None
        );
    }
}
