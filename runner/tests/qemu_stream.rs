//! The migration-stream parser and emitter against a real QEMU: a live migration of the
//! small Linux guest (Debian kernel, busybox initramfs, TCG) to `exec:cat > FILE`, parsed
//! whole, re-emitted into a second file, and that file fed to a destination QEMU's
//! `-incoming`. The destination must finish the incoming migration and the guest go on
//! counting its heartbeats from where the source stopped (its counter lives in guest
//! memory: a guest that rebooted or lost memory would not).
//!
//! A second test turns on postcopy-ram, return-path and x-ignore-shared in turn, migrates
//! to a unix socket the test serves, and checks that the parser refuses each by name before
//! any page, and that the source guest runs on after each failed migration.
//!
//! Where QEMU or the Debian packages cannot be had, each test prints `SKIPPED: <reason>` on
//! stderr and passes.

mod guest;

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use guest::{Start, Vm, MEM_MIB};
use pagewire_runner::qemu::{
    Emitter, Event, FeedError, PageData, Parser, RamBlock, RamSection, StreamError,
};
use pagewire_runner::trace::qmp::Qmp;
use serde_json::json;
use xxhash_rust::xxh3::Xxh3;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(60);
const PAGE: usize = 4096;

/// One guest at a time: two TCG guests on two cores would slow each other down.
static ONE_VM: Mutex<()> = Mutex::new(());

/// What a parse saw, and a digest of every event, so two parses compare without keeping
/// the stream.
#[derive(Debug, Default, PartialEq)]
struct Summary {
    blocks: Vec<RamBlock>,
    starts: usize,
    parts: usize,
    ends: usize,
    raw_pages: u64,
    fill_pages: u64,
    xbzrle_pages: u64,
    device_bytes: u64,
    device_head: Vec<u8>,
    digest: u64,
    /// The most memory the parser held after any piece.
    held_max: usize,
}

/// Parses `from` in pieces of an odd size (so items split across pieces), writes the
/// re-emitted stream to `to`, and checks that every page of every block came at least
/// once.
fn relay(from: &Path, to: Option<&Path>) -> Summary {
    let mut input = File::open(from).unwrap();
    let mut emitter = to.map(|p| Emitter::new(BufWriter::new(File::create(p).unwrap()), PAGE));
    let mut parser = Parser::new();
    let mut sum = Summary::default();
    let mut hash = Xxh3::new();
    let mut seen: Vec<Vec<bool>> = Vec::new();
    let mut buf = vec![0u8; 65521];
    loop {
        let n = input.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        parser
            .feed(&buf[..n], |e| {
                note(&mut sum, &mut hash, &mut seen, &e);
                match emitter.as_mut() {
                    Some(em) => em.event(&e),
                    None => Ok::<(), io::Error>(()),
                }
            })
            .unwrap_or_else(|e| panic!("{} refused: {e}", from.display()));
        sum.held_max = sum.held_max.max(parser.held_bytes());
    }
    parser.finish().unwrap();
    if let Some(em) = emitter {
        em.into_inner().unwrap();
    }
    for (b, pages) in sum.blocks.iter().zip(&seen) {
        let missing = pages.iter().filter(|s| !**s).count();
        assert_eq!(
            missing,
            0,
            "{} pages of block {} never sent",
            missing,
            b.name_lossy()
        );
    }
    sum.digest = hash.digest();
    sum
}

fn note(sum: &mut Summary, hash: &mut Xxh3, seen: &mut Vec<Vec<bool>>, e: &Event<'_>) {
    match *e {
        Event::Header(h) => hash.update(&h.raw),
        Event::SectionBegin(s) => {
            match s {
                RamSection::Start { .. } => sum.starts += 1,
                RamSection::Part { .. } => sum.parts += 1,
                RamSection::End { .. } => sum.ends += 1,
            }
            hash.update(format!("{s:?}").as_bytes());
        }
        Event::RamBlocks(b) => {
            sum.blocks = b.to_vec();
            *seen = b
                .iter()
                .map(|b| vec![false; (b.length / PAGE as u64) as usize])
                .collect();
            hash.update(format!("{b:?}").as_bytes());
        }
        Event::Page {
            block,
            offset,
            data,
        } => {
            seen[block][(offset / PAGE as u64) as usize] = true;
            hash.update(&(block as u64).to_le_bytes());
            hash.update(&offset.to_le_bytes());
            match data {
                PageData::Raw(p) => {
                    sum.raw_pages += 1;
                    hash.update(b"raw");
                    hash.update(p);
                }
                PageData::Fill(f) => {
                    sum.fill_pages += 1;
                    hash.update(&[b'f', f]);
                }
                PageData::Xbzrle(x) => {
                    sum.xbzrle_pages += 1;
                    hash.update(b"xbzrle");
                    hash.update(x);
                }
            }
        }
        Event::SectionEnd { footer } => hash.update(&[b'e', footer as u8]),
        Event::SwitchoverStart => hash.update(b"switchover-start"),
        Event::DeviceState(d) => {
            if sum.device_head.len() < 64 {
                let take = d.len().min(64 - sum.device_head.len());
                sum.device_head.extend_from_slice(&d[..take]);
            }
            sum.device_bytes += d.len() as u64;
            hash.update(d);
        }
    }
}

/// The heartbeat rounds on `vm`'s console so far, in order.
fn heartbeats(vm: &Vm) -> Vec<u64> {
    vm.console().heartbeats().iter().map(|b| b.round).collect()
}

/// Waits until `until` holds for the heartbeats on `vm`'s console; panics with the log
/// after `timeout` or if `vm` exits.
fn wait_heartbeats(vm: &mut Vm, timeout: Duration, until: impl Fn(&[u64]) -> bool) -> Vec<u64> {
    let deadline = Instant::now() + timeout;
    loop {
        let beats = heartbeats(vm);
        if until(&beats) {
            return beats;
        }
        if let Some(status) = vm.exited() {
            panic!(
                "QEMU exited ({status}); serial log:\n{}",
                vm.console().text()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "no expected heartbeat within {timeout:?}; serial log:\n{}",
                vm.console().text()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn qmp(vm: &mut Vm) -> Qmp {
    vm.qmp().unwrap()
}

/// Polls `query` until `done` says the value is final; panics after `timeout`.
fn poll(
    q: &mut Qmp,
    command: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = q.execute(command, None).unwrap();
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{command} still says {v} after {timeout:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Boots a destination QEMU for the same guest, waiting for its migration from `stream`.
fn destination(g: &guest::Guest, dir: &Path, stream: &Path) -> Vm {
    let uri = format!("exec:cat {}", stream.display());
    Vm::launch(g, dir, &Start::Incoming { uri, paused: false })
        .expect("start the destination qemu-system-x86_64")
}

#[test]
fn a_live_qemu_stream_parses_and_its_re_emitted_copy_migrates_the_guest() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let g = match guest::guest() {
        Ok(g) => g,
        Err(why) => {
            let _ = writeln!(io::stderr(), "SKIPPED: qemu_stream: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let src_dir: PathBuf = tmp.path().join("source");
    fs::create_dir_all(&src_dir).unwrap();
    let stream = tmp.path().join("stream.bin");
    let rebuilt = tmp.path().join("rebuilt.bin");

    // Source: boot, let the workload run, migrate while it runs.
    let mut src = guest::boot(&g, &src_dir);
    src.wait_ready(BOOT_TIMEOUT).unwrap();
    wait_heartbeats(&mut src, BOOT_TIMEOUT, |b| b.len() >= 2);
    let mut sq = qmp(&mut src);
    let uri = format!("exec:cat > {}", stream.display());
    sq.execute("migrate", Some(json!({ "uri": uri }))).unwrap();
    let info = poll(&mut sq, "query-migrate", MIGRATION_TIMEOUT, |v| {
        matches!(v["status"].as_str(), Some("completed" | "failed"))
    });
    assert_eq!(info["status"], "completed", "source migration: {info}");
    let last_source_beat = *heartbeats(&src).last().unwrap();
    drop(sq);
    src.kill();

    // Parse it whole, re-emit it, and parse the copy.
    let original = relay(&stream, Some(&rebuilt));
    let names: Vec<String> = original.blocks.iter().map(RamBlock::name_lossy).collect();
    let ram = original
        .blocks
        .iter()
        .find(|b| b.name == b"pc.ram")
        .unwrap_or_else(|| panic!("no pc.ram among {names:?}"));
    assert_eq!(ram.length, MEM_MIB << 20);
    assert!(names.iter().any(|n| n == "pc.bios"), "{names:?}");
    let block_pages: u64 = original.blocks.iter().map(|b| b.length / PAGE as u64).sum();
    let pages = original.raw_pages + original.fill_pages + original.xbzrle_pages;
    // Every page once in the first pass (checked in `relay`), some again in later passes.
    assert!(pages >= block_pages, "{pages} pages for {block_pages}");
    assert!(pages < 4 * block_pages, "{pages} pages for {block_pages}");
    assert!(original.raw_pages > 0 && original.fill_pages > 0);
    assert_eq!((original.starts, original.ends), (1, 1));
    assert!(original.parts >= 1);
    assert_eq!(
        original.device_head[0], 0x04,
        "device state starts with a FULL section"
    );
    assert!(original.device_bytes > 1000);
    // Bounded memory: two pages of buffers, the header and six block names, for 79 MB.
    assert!(
        original.held_max < 64 << 10,
        "the parser held {} bytes",
        original.held_max
    );
    let copy = Summary {
        held_max: original.held_max,
        ..relay(&rebuilt, None)
    };
    assert_eq!(
        copy, original,
        "the re-emitted stream parses to other events"
    );
    eprintln!(
        "qemu_stream: {} bytes, blocks {names:?}, {} raw + {} zero + {} xbzrle pages in {} \
         PART sections, {} bytes of device state; the parser held at most {} bytes; \
         re-emitted {} bytes",
        fs::metadata(&stream).unwrap().len(),
        original.raw_pages,
        original.fill_pages,
        original.xbzrle_pages,
        original.parts,
        original.device_bytes,
        original.held_max,
        fs::metadata(&rebuilt).unwrap().len(),
    );

    // Destination: fed the re-emitted stream, it must resume the guest where it stopped.
    let mut dst = destination(&g, &tmp.path().join("destination"), &rebuilt);
    let mut dq = qmp(&mut dst);
    let status = poll(&mut dq, "query-status", MIGRATION_TIMEOUT, |v| {
        v["status"] != "inmigrate"
    });
    assert_eq!(status["status"], "running", "destination: {status}");
    let beats = wait_heartbeats(&mut dst, Duration::from_secs(30), |b| b.len() >= 2);
    let log = dst.console().text();
    assert!(
        !log.contains(guest::READY),
        "the destination guest booted again:\n{log}"
    );
    assert!(
        beats[0] + 1 >= last_source_beat && beats[0] <= last_source_beat + 3,
        "destination counts {beats:?} after the source's {last_source_beat}"
    );
    assert!(beats.windows(2).all(|w| w[1] == w[0] + 1), "{beats:?}");
    eprintln!(
        "qemu_stream: the source's last heartbeat {last_source_beat}, the destination's \
         first {beats:?}"
    );
    drop(dq);
    dst.kill();

    // The check above can fail: the same copy cut inside the RAM part makes the
    // destination give up its incoming migration and exit.
    let cut = tmp.path().join("cut.bin");
    let bytes = fs::read(&rebuilt).unwrap();
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    drop(bytes);
    let mut broken = destination(&g, &tmp.path().join("broken"), &cut);
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    let status = loop {
        if let Some(s) = broken.exited() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "a destination fed half a stream kept running"
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert!(
        !status.success(),
        "a destination fed half a stream exited {status}"
    );
    assert!(heartbeats(&broken).is_empty());
}

/// Migrates the source to a unix socket this test serves, with `capability` on, and
/// returns the parser's refusal; the connection is then closed, which fails the migration.
fn refusal_with(q: &mut Qmp, dir: &Path, capability: &str) -> StreamError {
    let caps = |on: bool| json!({ "capabilities": [{ "capability": capability, "state": on }] });
    q.execute("migrate-set-capabilities", Some(caps(true)))
        .unwrap();
    let path = dir.join(format!("{capability}.sock"));
    let listener = UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let uri = format!("unix:{}", path.display());
    q.execute("migrate", Some(json!({ "uri": uri }))).unwrap();
    let deadline = Instant::now() + MIGRATION_TIMEOUT;
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "QEMU never connected to {uri}");
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept on {uri}: {e}"),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(MIGRATION_TIMEOUT)).unwrap();
    let mut parser = Parser::new();
    let mut buf = vec![0u8; 4096];
    let mut pages = 0u64;
    let refusal = loop {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended without a refusal");
        let fed = parser.feed(&buf[..n], |e| {
            pages += matches!(e, Event::Page { .. }) as u64;
            Ok::<(), ()>(())
        });
        match fed {
            Ok(()) => {}
            Err(FeedError::Stream(e)) => break e,
            Err(FeedError::Sink(())) => unreachable!("the sink never fails"),
        }
    };
    assert_eq!(pages, 0, "refused only after {pages} pages");
    drop(conn);
    let info = poll(q, "query-migrate", MIGRATION_TIMEOUT, |v| {
        matches!(
            v["status"].as_str(),
            Some("failed" | "cancelled" | "completed")
        )
    });
    assert_ne!(info["status"], "completed", "{info}");
    q.execute("migrate-set-capabilities", Some(caps(false)))
        .unwrap();
    refusal
}

#[test]
fn real_streams_with_postcopy_return_path_or_x_ignore_shared_are_refused_at_the_start() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let g = match guest::guest() {
        Ok(g) => g,
        Err(why) => {
            let _ = writeln!(io::stderr(), "SKIPPED: qemu_stream refusals: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut src = guest::boot(&g, tmp.path());
    src.wait_ready(BOOT_TIMEOUT).unwrap();
    let mut q = qmp(&mut src);

    // Postcopy and the return path announce themselves by commands right after the
    // configuration record: OPEN_RETURN_PATH comes first.
    for capability in ["postcopy-ram", "return-path"] {
        let e = refusal_with(&mut q, tmp.path(), capability);
        assert_eq!(e, StreamError::Command { cmd: 1 }, "{capability}: {e}");
        assert!(e.to_string().contains("return-path=false"), "{e}");
        assert!(e.to_string().contains("postcopy-ram=false"), "{e}");
    }
    // x-ignore-shared is listed in the configuration record.
    let e = refusal_with(&mut q, tmp.path(), "x-ignore-shared");
    assert_eq!(
        e,
        StreamError::Capability {
            name: "x-ignore-shared".into()
        }
    );
    assert!(e.to_string().contains("x-ignore-shared=false"), "{e}");

    // Each refused migration failed and left the source guest running.
    let before = *heartbeats(&src).last().unwrap_or(&0);
    let status = q.execute("query-status", None).unwrap();
    assert_eq!(status["status"], "running", "{status}");
    wait_heartbeats(&mut src, Duration::from_secs(30), |b| {
        b.last().is_some_and(|&n| n >= before + 2)
    });
}
