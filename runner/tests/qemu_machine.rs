//! `pagewire_runner::machine` against a real QEMU: QEMU's own live migration of the small
//! Linux guest from a source to a destination started paused (`-S`, `-incoming unix:`),
//! both machines' RAM compared through `pmemsave` before the destination runs, then the
//! destination resumed: its guest must go on counting heartbeats from where the source
//! stopped and pass its own checks of the files it wrote before the migration. The
//! comparison is then shown to see a difference (the destination, run on and paused again,
//! no longer matches the source), and the guest is migrated once more to a destination that
//! is not paused (over TCP, on a port QEMU picks), to measure the pause it sees.
//!
//! A second test damages the pages of one tmpfs file in a migration stream on its way to a
//! paused destination: the memory comparison must count exactly those pages, and the
//! guest, resumed, must report the damage itself with `PAGEWIRE-CHECK FAIL`.
//!
//! One QEMU pair at a time.
//!
//! Where QEMU or the Debian packages cannot be had, the test prints `SKIPPED: <reason>` on
//! stderr and passes.

mod guest;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pagewire_runner::machine::{
    compare_machines, guest_pause, migrate, run_state, wait_incoming, wait_listening,
    wait_migration, Beat, Machine, MigrationPair, Start, MEM_MIB, WORKLOAD_TEXT,
};
use pagewire_runner::qemu::{Emitter, Event, PageData, Parser};
use pagewire_runner::trace::qmp::{Qmp, QmpAddr};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
/// One guest pair at a time: TCG guests on two cores slow each other down.
static ONE_VM: Mutex<()> = Mutex::new(());

/// Rounds until every file written before the migration has been checked again.
const FILES: usize = 8;

fn rounds(beats: &[Beat]) -> Vec<u64> {
    beats.iter().map(|b| b.round).collect()
}

/// Migrates to `uri` with QEMU's own migration and waits for it.
fn migrate_to(q: &mut Qmp, uri: &str) -> pagewire_runner::machine::MigrationOutcome {
    migrate(q, uri).unwrap();
    let out = wait_migration(q, MIGRATION_TIMEOUT).unwrap();
    assert!(out.completed(), "source migration: {}", out.info);
    out
}

/// The destination went on from the source's last heartbeat, counting one by one, and
/// checked the `FILES` files written before the migration without a failure.
fn continues(source: &Machine, destination: &Machine, after: Instant) -> Vec<Beat> {
    let last = source.console().last_heartbeat().unwrap().round;
    let beats = destination
        .console()
        .wait_heartbeats_after(after, FILES + 2, Duration::from_secs(60))
        .unwrap();
    let r = rounds(&beats);
    // +2: a heartbeat line cut by the switchover is finished at the destination, where its
    // first half is missing, so it is not counted.
    assert!(
        r[0] == last + 1 || r[0] == last + 2,
        "destination counts {r:?} after the source's {last}"
    );
    assert!(r.windows(2).all(|w| w[1] == w[0] + 1), "{r:?}");
    // Round r's check comes before its heartbeat, so round r[0]'s may have run at the
    // source; rounds r[0]+1 to r[0]+8 check at the destination every file that was in the
    // guest at the switchover.
    let checked =
        |m: &Machine| -> Vec<u64> { m.console().checks_ok().iter().map(|b| b.round).collect() };
    let (at_source, at_destination) = (checked(source), checked(destination));
    assert!(
        at_source.contains(&r[0]) || at_destination.contains(&r[0]),
        "no check ok in round {}",
        r[0]
    );
    for round in r[0] + 1..=r[0] + FILES as u64 {
        assert!(
            at_destination.contains(&round),
            "no check ok in round {round} at the destination: {at_destination:?}"
        );
    }
    for m in [source, destination] {
        assert!(
            m.console().failures().is_empty(),
            "{:?}",
            m.console().failures()
        );
    }
    let text = destination.console().text();
    assert!(
        !text.contains(guest::READY),
        "the destination booted again:\n{text}"
    );
    beats
}

#[test]
fn a_direct_qemu_migration_keeps_guest_memory_identical_and_the_guest_checks_pass() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let g = match guest::guest() {
        Ok(g) => g,
        Err(why) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED: qemu_machine: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("migrate.sock");
    let t0 = Instant::now();
    let mut pair =
        MigrationPair::launch(&g, tmp.path(), &format!("unix:{}", sock.display()), true).unwrap();
    pair.source.wait_ready(BOOT_TIMEOUT).unwrap();
    // Checks start in round 9; migrate once the source has passed some.
    pair.source
        .console()
        .wait_for("two passed checks", BOOT_TIMEOUT, |s| {
            (s.checks_ok.len() >= 2).then_some(())
        })
        .unwrap();
    let booted = t0.elapsed();
    let mut sq = pair.source.qmp().unwrap();
    let mut dq = pair.destination.qmp().unwrap();
    // A second client at the same time, on the second socket.
    let mut other = Qmp::connect(
        &QmpAddr::Unix(pair.source.second_qmp_path().to_path_buf()),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(run_state(&mut other).unwrap(), "running");
    drop(other);
    let uri = wait_listening(&mut dq, MIGRATION_TIMEOUT).unwrap();
    assert_eq!(uri, format!("unix:{}", sock.display()));

    let migrated_at = Instant::now();
    let outcome = migrate_to(&mut sq, &uri);
    assert_eq!(wait_incoming(&mut dq, MIGRATION_TIMEOUT).unwrap(), "paused");

    // Both paused: the source after its migration, the destination before it ever ran.
    let dumps = tmp.path().join("dumps");
    let same = compare_machines(&mut sq, &mut dq, &dumps).unwrap();
    assert_eq!(same.bytes, MEM_MIB << 20);
    assert!(
        same.equal(),
        "{} pages differ, the first at {:#x}",
        same.differing_pages,
        same.first_difference.unwrap()
    );
    assert_eq!(same.source_digest, same.destination_digest);

    let resumed = Instant::now();
    dq.execute("cont", None).unwrap();
    let beats = continues(&pair.source, &pair.destination, resumed);
    let paused_pause =
        guest_pause(&pair.source.console().heartbeats(), &beats, migrated_at).unwrap();

    // The comparison sees a difference: the destination has run on since.
    dq.execute("stop", None).unwrap();
    let differs = compare_machines(&mut sq, &mut dq, &dumps).unwrap();
    assert!(!differs.equal());
    assert_ne!(differs.source_digest, differs.destination_digest);
    dq.execute("cont", None).unwrap();

    // Once more, to a destination that runs as soon as the migration is in: the pause the
    // guest sees is QEMU's downtime plus up to one tick (50 ms).
    let MigrationPair {
        source,
        destination: second_source,
    } = pair;
    drop(sq);
    drop(source);
    // Over TCP this time, on a port QEMU picks.
    let mut third = Machine::launch(
        &g,
        &tmp.path().join("third"),
        &Start::Incoming {
            uri: "tcp:127.0.0.1:0".into(),
            paused: false,
        },
    )
    .unwrap();
    let mut tq = third.qmp().unwrap();
    let uri2 = wait_listening(&mut tq, MIGRATION_TIMEOUT).unwrap();
    assert!(
        uri2.starts_with("tcp:127.0.0.1:") && !uri2.ends_with(":0"),
        "{uri2}"
    );
    let second_at = Instant::now();
    let outcome2 = migrate_to(&mut dq, &uri2);
    assert_eq!(
        wait_incoming(&mut tq, MIGRATION_TIMEOUT).unwrap(),
        "running"
    );
    let beats2 = continues(&second_source, &third, second_at);
    assert!(beats2.len() > 1);
    // The ticks' counter lives in guest memory too: the destination ticks on from the source.
    let (last_tick, next_tick) = (
        second_source.console().ticks().last().unwrap().round,
        third.console().ticks()[0].round,
    );
    assert!(
        next_tick > last_tick && next_tick <= last_tick + 2,
        "ticks {last_tick} at the source, then {next_tick}"
    );
    let live_pause = guest_pause(
        &second_source.console().ticks(),
        &third.console().ticks(),
        second_at,
    )
    .unwrap();
    let period = {
        let b = second_source.console().heartbeats();
        let n = b.len().min(10);
        b[b.len() - 1].at.duration_since(b[b.len() - n].at) / (n as u32 - 1)
    };
    eprintln!(
        "qemu_machine: booted and 2 checks passed in {:.1} s; migration 1 (destination -S): \
         QEMU total {:?} ms, downtime {:?} ms, {:?} RAM bytes; {} MiB compared equal; the \
         guest's pause {} ms (includes the comparison), heartbeats {}..{}; after running on, \
         {} pages differ, the first at {:#x}; migration 2 (tcp, destination running): QEMU total \
         {:?} ms, downtime {:?} ms; the guest's pause {} ms between ticks {} and {} \
         (heartbeat period {} ms); {} checks ok in all",
        booted.as_secs_f64(),
        outcome.total_ms,
        outcome.downtime_ms,
        outcome.ram_transferred,
        same.bytes >> 20,
        paused_pause.length().as_millis(),
        paused_pause.before.round,
        paused_pause.after.round,
        differs.differing_pages,
        differs.first_difference.unwrap(),
        outcome2.total_ms,
        outcome2.downtime_ms,
        live_pause.length().as_millis(),
        live_pause.before.round,
        live_pause.after.round,
        period.as_millis(),
        third.console().checks_ok().len(),
    );

    // Dropped machines leave no QEMU behind.
    let pids = [second_source.pid(), third.pid()];
    drop((dq, tq, second_source, third));
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let ours = tmp.path().to_string_lossy().into_owned();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&ours),
            "QEMU {pid} still runs"
        );
    }
}

/// Reads the stream at `path` in pieces and calls `each` with every event.
fn parse(path: &Path, mut each: impl FnMut(&Event<'_>)) {
    let mut input = File::open(path).unwrap();
    let mut parser = Parser::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = input.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        parser
            .feed(&buf[..n], |e| {
                each(&e);
                Ok::<(), ()>(())
            })
            .unwrap();
    }
    parser.finish().unwrap();
}

/// Copies the stream `from` to `to`, changing in the final copy of every page that holds
/// `text` its first byte to upper case. Returns the pc.ram offsets of the changed pages.
fn damage(from: &Path, to: &Path, text: &[u8]) -> Vec<u64> {
    // Pass 1: the last copy of each page, and whether it holds `text`.
    let mut ordinal = 0u64;
    let mut last: HashMap<(usize, u64), (u64, bool)> = HashMap::new();
    parse(from, |e| {
        if let Event::Page {
            block,
            offset,
            data,
        } = *e
        {
            let hit = matches!(data, PageData::Raw(p) if p.windows(text.len()).any(|w| w == text));
            last.insert((block, offset), (ordinal, hit));
            ordinal += 1;
        }
    });
    let chosen: HashSet<u64> = last.values().filter(|v| v.1).map(|v| v.0).collect();
    // Pass 2: re-emit, damaging the chosen copies.
    let mut em = Emitter::new(BufWriter::new(File::create(to).unwrap()), 4096);
    let (mut ordinal, mut names, mut damaged) = (0u64, Vec::new(), Vec::new());
    parse(from, |e| match *e {
        Event::RamBlocks(b) => {
            names = b.iter().map(|b| b.name.clone()).collect();
            em.event(e).unwrap();
        }
        Event::Page {
            block,
            offset,
            data: PageData::Raw(p),
        } if chosen.contains(&ordinal) => {
            assert_eq!(names[block], b"pc.ram", "text outside guest RAM");
            let mut page = p.to_vec();
            let at = page.windows(text.len()).position(|w| w == text).unwrap();
            page[at] = page[at].to_ascii_uppercase();
            let data = PageData::Raw(&page);
            em.event(&Event::Page {
                block,
                offset,
                data,
            })
            .unwrap();
            damaged.push(offset);
            ordinal += 1;
        }
        Event::Page { .. } => {
            em.event(e).unwrap();
            ordinal += 1;
        }
        _ => em.event(e).unwrap(),
    });
    em.into_inner().unwrap().flush().unwrap();
    damaged.sort_unstable();
    damaged
}

#[test]
fn pages_damaged_in_the_stream_show_in_the_memory_comparison_and_in_the_guests_own_check() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let g = match guest::guest() {
        Ok(g) => g,
        Err(why) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED: qemu_machine damage: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let stream = tmp.path().join("stream.bin");
    let damaged_stream = tmp.path().join("damaged.bin");
    let mut src = Machine::launch(&g, &tmp.path().join("source"), &Start::Boot).unwrap();
    src.wait_ready(BOOT_TIMEOUT).unwrap();
    src.console()
        .wait_for("a passed check", BOOT_TIMEOUT, |s| {
            (!s.checks_ok.is_empty()).then_some(())
        })
        .unwrap();
    let mut sq = src.qmp().unwrap();
    let outcome = {
        migrate(&mut sq, &format!("exec:cat > {}", stream.display())).unwrap();
        wait_migration(&mut sq, MIGRATION_TIMEOUT).unwrap()
    };
    assert!(outcome.completed(), "{}", outcome.info);

    // The file of three rounds before the source's last heartbeat is whole in tmpfs, and is
    // checked again five rounds after it.
    let last = src.console().last_heartbeat().unwrap().round;
    let round = last - 3;
    let text = format!("{WORKLOAD_TEXT}{round}\n");
    let damaged = damage(&stream, &damaged_stream, text.as_bytes());
    assert!(
        damaged.len() >= 200,
        "only {} pages hold {text:?}",
        damaged.len()
    );

    let mut dst = Machine::launch(
        &g,
        &tmp.path().join("destination"),
        &Start::Incoming {
            uri: format!("exec:cat {}", damaged_stream.display()),
            paused: true,
        },
    )
    .unwrap();
    let mut dq = dst.qmp().unwrap();
    assert_eq!(wait_incoming(&mut dq, MIGRATION_TIMEOUT).unwrap(), "paused");
    let c = compare_machines(&mut sq, &mut dq, &tmp.path().join("dumps")).unwrap();
    assert_eq!(c.differing_pages, damaged.len() as u64);
    assert_eq!(c.first_difference, Some(damaged[0]));

    dq.execute("cont", None).unwrap();
    let failure = dst
        .console()
        .wait_for("a failed check", Duration::from_secs(60), |s| {
            s.failures.first().cloned()
        })
        .unwrap();
    assert_eq!(failure.round, Some(round + 8), "{}", failure.line);
    assert!(
        failure.line.contains(&format!("from round {round}:")),
        "{}",
        failure.line
    );
    // The files checked before it passed (round last+1's check may have run at the source).
    let ok = rounds(&dst.console().checks_ok());
    for r in last + 2..round + 8 {
        assert!(ok.contains(&r), "round {r}'s check did not pass: {ok:?}");
    }
    assert_eq!(dst.console().failures().len(), 1);
    eprintln!(
        "qemu_machine damage: {} pages of round {round}'s file changed in the stream; \
         pmemsave found {} differing pages from {:#x}; the guest said: {}",
        damaged.len(),
        c.differing_pages,
        c.first_difference.unwrap(),
        failure.line
    );
}
