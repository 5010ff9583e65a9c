//! The guest workloads of `pagewire_runner::machine::Workload` boot in a real QEMU and
//! run: each prints its READY line, heartbeats counting one by one, and passed checks of
//! its own (the idle system's reference file, redis's known keys, the compile's identical
//! objects and program output, the churn's random files), and no failed check. One QEMU at
//! a time.
//!
//! `idle` and `churn` run in every test run. `redis` and `compile` unpack Debian 12 packages (a
//! download of ~15 MB and ~60 MB the first time) and run slowly under TCG, so they are
//! `#[ignore]`d: run them with
//! `cargo test -p pagewire-runner --test workloads -- --ignored --test-threads 1`.
//!
//! Where QEMU or the packages cannot be had, a test prints `SKIPPED: <reason>` on stderr
//! and passes.

mod guest;

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pagewire_runner::machine::{GuestImage, Machine, Start, Workload};

static ONE_VM: Mutex<()> = Mutex::new(());

/// Boots `workload`, waits for READY within `boot`, then for `checks` passed checks and
/// as many heartbeats within `run`; prints the times taken.
fn boots_and_checks(workload: Workload, boot: Duration, run: Duration, checks: usize) {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let built = Instant::now();
    let image = match GuestImage::build_workload(&guest::target_dir().join("test-guest"), workload)
    {
        Ok(i) => i,
        Err(why) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED: workloads {workload}: {why}");
            return;
        }
    };
    assert_eq!(image.mem_mib, workload.mem_mib());
    let built = built.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let vm = Machine::launch(&image, dir.path(), &Start::Boot).unwrap();
    assert!(vm
        .args()
        .join(" ")
        .contains(&format!("-m {}", workload.mem_mib())));
    let ready = vm
        .console()
        .wait_ready(boot)
        .unwrap_or_else(|e| panic!("{e}"));
    let (beats, ok) = vm
        .console()
        .wait_for("passed checks", run, |s| {
            let ok: Vec<_> = s.checks_ok.iter().filter(|b| b.at > ready).collect();
            (ok.len() >= checks && s.heartbeats.len() >= checks)
                .then(|| (s.heartbeats.clone(), ok.len()))
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let text = vm.console().text();
    let memory = text
        .lines()
        .find_map(|l| l.strip_prefix("pagewire-memory: "))
        .unwrap_or("MemAvailable not printed");
    let failures = vm.console().failures();
    assert!(failures.is_empty(), "{failures:?}");
    let rounds: Vec<u64> = beats.iter().map(|b| b.round).collect();
    assert_eq!(rounds[0], 1, "{rounds:?}");
    assert!(rounds.windows(2).all(|w| w[1] == w[0] + 1), "{rounds:?}");
    let per_round = (beats.last().unwrap().at - beats[0].at) / (beats.len() as u32 - 1).max(1);
    eprintln!(
        "workloads {workload}: image {:.1} s, READY {:.1} s after launch, {} rounds, \
         {:.2} s a round, {ok} checks ok; at READY {memory}",
        built.as_secs_f64(),
        (ready - started).as_secs_f64(),
        beats.len(),
        per_round.as_secs_f64(),
    );
}

#[test]
fn idle_boots_and_checks_its_reference_file() {
    boots_and_checks(
        Workload::Idle,
        Duration::from_secs(60),
        Duration::from_secs(30),
        6,
    );
}

#[test]
#[ignore = "downloads redis from Debian and runs ~1 min under TCG; see the module doc"]
fn redis_boots_fills_and_rereads_its_known_keys() {
    boots_and_checks(
        Workload::Redis,
        Duration::from_secs(90),
        Duration::from_secs(90),
        3,
    );
}

#[test]
#[ignore = "downloads gcc from Debian and runs ~1 min under TCG; see the module doc"]
fn compile_builds_the_same_objects_every_round() {
    boots_and_checks(
        Workload::Compile,
        Duration::from_secs(90),
        Duration::from_secs(120),
        2,
    );
}

#[test]
fn churn_rereads_the_random_files_it_wrote() {
    // ten checks: every one of its four files rewritten and read back at least twice
    boots_and_checks(
        Workload::Churn,
        Duration::from_secs(60),
        Duration::from_secs(60),
        10,
    );
}
