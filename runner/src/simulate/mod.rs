//! `pagewire simulate`: a model of pre-copy live migration over a WAN link, fed by real
//! memory traces or built-in synthetic workloads, run for every combination of stop policy
//! and codec setting. See `docs/SIMULATOR.md` for the model and its limits.

pub mod guest;
pub mod limits;
pub mod link;
pub mod migration;
pub mod plot;
pub mod report;
pub mod sender;
pub mod timeline;

use anyhow::Result;
use pagewire::policy::{AnyPolicy, PolicyParams, SmartStop, StopPolicy, SynchronizedArrival};

use pagewire::policy::PolicyKind;
use pagewire::Config;

pub use limits::MAX_SIMULATED_S;
pub use link::LinkModel;
pub use migration::{Migration, RunResult, SimIteration};
pub use report::{GroupMember, GroupRun, Row, SimReport};
pub use sender::{CodecMode, Sender};
pub use timeline::{SnapshotTimeline, SyntheticTimeline, Timeline};

use crate::host_memory::Budget;
use crate::workload::Workload;
use guest::Guest;

/// Everything a simulation run needs besides the workload.
#[derive(Debug, Clone, Copy)]
pub struct SimOptions {
    pub link: LinkModel,
    /// Codec configuration for the codec settings that use pagewire.
    pub codec: Config,
    /// Smart Stop's window.
    pub smart_window: usize,
    /// The downtime limit policy's limit, in milliseconds.
    pub downtime_limit_ms: u64,
}

impl SimOptions {
    fn policy(&self, kind: PolicyKind, vm_pages: u64) -> AnyPolicy {
        kind.build(&PolicyParams {
            smart_window: self.smart_window,
            downtime_limit_us: self.downtime_limit_ms.saturating_mul(1000),
            ..PolicyParams::new(vm_pages, u64::from(self.codec.page_size))
        })
    }
}

/// Migrates one VM living through `timeline` under `policy` with codec setting `codec`.
pub fn run_one(
    timeline: &mut dyn Timeline,
    policy: PolicyKind,
    codec: CodecMode,
    opts: &SimOptions,
) -> Result<RunResult> {
    let cfg = Config {
        page_size: timeline.page_size() as u32,
        ..opts.codec
    };
    let mut storage = vec![0u8; sender::storage_len(codec, cfg)];
    let sender = Sender::new(codec, cfg, &mut storage)?;
    let guest = Guest::start(timeline)?;
    let vm_pages = guest.pages() as u64;
    let mut p = opts.policy(policy, vm_pages);
    Migration::new(guest, sender, opts.link).run(&mut p)
}

/// Migrates several VMs at once over one link (an equal share each), every member under
/// Smart Stop; with `synchronized`, a Synchronized Arrival group holds back each member's
/// stop-and-copy until all have reached the crossover.
pub fn run_group(
    timelines: &mut [Box<dyn Timeline>],
    codec: CodecMode,
    opts: &SimOptions,
    synchronized: bool,
) -> Result<GroupRun> {
    let n = timelines.len();
    let link = opts.link.share(n);
    let cfgs: Vec<Config> = timelines
        .iter()
        .map(|w| Config {
            page_size: w.page_size() as u32,
            ..opts.codec
        })
        .collect();
    let names: Vec<String> = timelines.iter().map(|w| w.name().to_owned()).collect();
    let mem: Vec<usize> = timelines.iter().map(|w| w.mem_bytes()).collect();
    let mut storages: Vec<Vec<u8>> = cfgs
        .iter()
        .map(|&c| vec![0u8; sender::storage_len(codec, c)])
        .collect();
    let mut running: Vec<Option<Migration>> = Vec::with_capacity(n);
    for ((w, storage), &cfg) in timelines.iter_mut().zip(storages.iter_mut()).zip(&cfgs) {
        let sender = Sender::new(codec, cfg, storage)?;
        running.push(Some(Migration::new(
            Guest::start(w.as_mut())?,
            sender,
            link,
        )));
    }
    let mut policies: Vec<SmartStop> = (0..n).map(|_| SmartStop::new(opts.smart_window)).collect();
    let mut group = SynchronizedArrival::<16>::new();
    let ids: Vec<usize> = (0..n).map(|_| group.join().unwrap_or(usize::MAX)).collect();
    let mut results: Vec<Option<RunResult>> = vec![None; n];
    // Advance whichever member is furthest behind in simulated time, one iteration at a time.
    while let Some(i) = (0..n).filter(|&i| running[i].is_some()).min_by(|&a, &b| {
        let t = |i: usize| running[i].as_ref().map_or(f64::INFINITY, |m| m.now());
        t(a).total_cmp(&t(b))
    }) {
        let Some(m) = running[i].as_mut() else { break };
        let report = m.iterate()?;
        let own = policies[i].decide(&report);
        let decision = if synchronized {
            group.report(ids[i], own, &report).decision()
        } else {
            own
        };
        if decision == pagewire::policy::Decision::StopAndCopy {
            if let Some(m) = running[i].take() {
                results[i] = Some(m.stop_and_copy()?);
            }
        }
    }
    let members: Vec<GroupMember> = names
        .into_iter()
        .zip(mem)
        .zip(results)
        .map(|((name, mem_bytes), r)| GroupMember {
            name,
            mem_bytes,
            result: r.unwrap_or_else(empty_result),
        })
        .collect();
    Ok(GroupRun::new(synchronized, codec, members))
}

fn empty_result() -> RunResult {
    RunResult {
        iterations: 0,
        total_s: 0.0,
        downtime_s: 0.0,
        bytes: 0,
        final_start_s: 0.0,
        rows: Vec::new(),
    }
}

/// Runs every policy x codec combination on each workload, then the group comparison
/// (Synchronized Arrival against independent Smart Stop) on `group`. `progress` hears a line
/// per finished run.
pub fn run_all(
    timelines: &mut [Box<dyn Timeline>],
    group: &mut [Box<dyn Timeline>],
    opts: &SimOptions,
    mut progress: impl FnMut(&str),
) -> Result<SimReport> {
    let mut rows = Vec::new();
    for w in timelines.iter_mut() {
        for policy in PolicyKind::ALL {
            for codec in CodecMode::ALL {
                let result = run_one(w.as_mut(), policy, codec, opts)?;
                progress(&format!(
                    "{} / {} / {}",
                    w.name(),
                    policy.name(),
                    codec.name()
                ));
                rows.push(Row {
                    workload: w.name().to_owned(),
                    policy: policy.name().to_owned(),
                    codec,
                    result,
                });
            }
        }
    }
    let mut groups = Vec::new();
    if group.len() >= 2 {
        for synchronized in [false, true] {
            groups.push(run_group(group, CodecMode::All, opts, synchronized)?);
            progress(if synchronized {
                "group / synchronized arrival"
            } else {
                "group / independent"
            });
        }
    }
    Ok(SimReport {
        bandwidth_bytes_per_s: opts.link.bytes_per_s,
        rtt_s: opts.link.rtt_s,
        rows,
        groups,
    })
}

/// A guest a simulation will run, known before anything is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedGuest {
    /// Its name in reports and messages.
    pub name: String,
    /// Guest memory in bytes.
    pub mem_bytes: usize,
    /// Its built-in workload, or `None` for a snapshot series.
    pub workload: Option<Workload>,
}

/// The guests [`run_all`] will run, as [`timeline::open`] and [`timeline::group`] build
/// them: the single runs (the series `dir`, named and sized, or each of `builtins` with
/// `mem_bytes`), and with `group` the Synchronized Arrival pair.
pub fn plan(
    dir: Option<(&str, usize)>,
    builtins: &[Workload],
    mem_bytes: usize,
    group: bool,
) -> (Vec<PlannedGuest>, Vec<PlannedGuest>) {
    let singles: Vec<PlannedGuest> = match dir {
        Some((name, mem)) => vec![PlannedGuest {
            name: name.to_owned(),
            mem_bytes: mem,
            workload: None,
        }],
        None => builtins
            .iter()
            .map(|&w| PlannedGuest {
                name: w.name().to_owned(),
                mem_bytes,
                workload: Some(w),
            })
            .collect(),
    };
    if !group {
        return (singles, Vec::new());
    }
    let big = singles.first().map_or(mem_bytes, |g| g.mem_bytes);
    let pair = vec![
        PlannedGuest {
            name: "the group's web tier".into(),
            mem_bytes: timeline::web_tier_bytes(big),
            workload: Some(Workload::HotSet),
        },
        PlannedGuest {
            name: "the group's database tier".into(),
            mem_bytes: big,
            workload: dir.is_none().then_some(Workload::Database),
        },
    ];
    (singles, pair)
}

/// Checks up front that the link carries each planned guest's first pass within
/// [`MAX_SIMULATED_S`] (the group's members share it).
pub fn check_link(
    link: &LinkModel,
    singles: &[PlannedGuest],
    group: &[PlannedGuest],
    page_size: usize,
) -> Result<()> {
    for g in singles {
        link.check_first_pass(g.mem_bytes, page_size, &g.name)?;
    }
    let shared = link.share(group.len());
    for g in group {
        shared.check_first_pass(g.mem_bytes, page_size, &g.name)?;
    }
    Ok(())
}

/// The memory [`run_all`] holds at once for these guests: every timeline (they live for
/// the whole run), one more synthetic series (a timeline's reset builds the new one before
/// the old is gone), and the larger of one single run and the group run.
pub fn memory_budget(singles: &[PlannedGuest], group: &[PlannedGuest], codec: &Config) -> Budget {
    let mut b = Budget::new();
    let mut largest_series = Budget::new();
    for g in singles.iter().chain(group) {
        let t = timeline::memory_budget(g.workload, g.mem_bytes, &g.name);
        if g.workload.is_some() && t.total() > largest_series.total() {
            largest_series = t.clone();
        }
        b.extend(t);
    }
    for (what, bytes) in largest_series.items() {
        b.add(format!("{what}, rebuilt"), *bytes);
    }
    let single = singles
        .iter()
        .map(|g| run_memory_budget(g.mem_bytes, codec, &g.name))
        .max_by_key(Budget::total)
        .unwrap_or_default();
    let mut pair = Budget::new();
    for g in group {
        pair.extend(run_memory_budget(g.mem_bytes, codec, &g.name));
    }
    b.extend(if pair.total() > single.total() {
        pair
    } else {
        single
    });
    b
}

/// The memory one simulated migration of `mem_bytes` holds besides its timeline: the
/// guest's current memory, its dirty log and write plan, the encoder's storage and output.
pub fn run_memory_budget(mem_bytes: usize, codec: &Config, name: &str) -> Budget {
    let pages = mem_bytes / (codec.page_size as usize).max(1);
    let storage = CodecMode::ALL
        .iter()
        .map(|&m| sender::storage_len(m, *codec))
        .max()
        .unwrap_or(0);
    let mut b = Budget::new();
    b.add_len(format!("the running memory of {name}"), mem_bytes)
        // dirty flags (1 byte), dirty list, send list and write plan (8, 8 and 16 bytes)
        .add_len(format!("the dirty log of {name}"), pages.saturating_mul(33))
        .add_len(
            format!("the encoder of {name}"),
            storage.saturating_add(codec.max_output_len()),
        );
    b
}

/// Runs `run_all` would make for these inputs (for a progress bar).
pub fn run_count(workloads: usize, group: usize) -> usize {
    workloads * PolicyKind::ALL.len() * CodecMode::ALL.len() + if group >= 2 { 2 } else { 0 }
}
