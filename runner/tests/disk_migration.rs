//! A running guest migrated with its root disk through the pagewire tunnels (disk and
//! memory on one shaped, mutual-TLS link), then back into the disk it left, incrementally:
//! both disks equal byte for byte at each switchover, both machines' RAM equal, the guest
//! counts on and reads every file back from the destination's disk, and the last disk
//! checks clean with every file as the guest recorded it. Small disk, small guest; the
//! 1 GiB run with real content is `pagewire tunnel demo --disk` (docs/STORAGE.md).
//! Skipped (with the reason) where QEMU, the kernel or e2fsprogs cannot be had.

mod guest;

use std::time::Duration;

use pagewire::Config;
use pagewire_runner::machine::disk_guest;
use pagewire_runner::machine::Workload;
use pagewire_runner::migrate::Codec;
use pagewire_runner::net::Shape;
use pagewire_runner::tunnel::demo::{run_disk_demo, DiskDemoConfig, DiskMethod, TunnelCodec};
use pagewire_runner::tunnel::LinkCompression;

#[test]
fn a_guest_moves_with_its_disk_and_comes_back_incrementally() {
    let cache = guest::target_dir().join("test-guest");
    let work = tempfile::tempdir().unwrap();
    let disk = work.path().join("pristine.raw");
    let image = match disk_guest::build(&cache, Workload::Heartbeat, &disk, 64) {
        Ok(g) => g,
        Err(e) => {
            println!("SKIPPED: {e}");
            return;
        }
    };
    let cfg = DiskDemoConfig {
        image,
        shape: Shape::parse("1gbit", "2ms").unwrap(),
        codec: TunnelCodec {
            codec: Codec::On,
            config: Config::DEFAULT,
            link: LinkCompression::ZstdAuto,
        },
        work_dir: work.path().join("runs"),
        timeout: Duration::from_secs(180),
        rounds_before_way_back: 4,
    };
    let demo = run_disk_demo(
        &[DiskMethod::Pagewire, DiskMethod::PagewireWayBack],
        &cfg,
        &mut |l| eprintln!("{l}"),
    )
    .unwrap();
    for r in &demo.runs {
        eprintln!("{}", serde_json::to_string(r).unwrap());
    }
    let [there, back] = &demo.runs[..] else {
        panic!("two runs, got {:?}", demo.runs);
    };
    assert!(there.verified, "{there:?}");
    assert!(back.verified, "{back:?}");
    assert!(there.disks_equal && back.disks_equal);
    // the four files written at boot and a slot per round (at least 2 before the first
    // migration, 4 at the destination before the way back, 4 after it)
    assert!(back.files_checked >= 4 + 10, "{back:?}");
    // the way back sends what changed, and refers to the rest
    assert!(back.differing_bytes < there.differing_bytes / 4, "{back:?}");
    let refs = back.disk_destination.as_ref().unwrap().delivered.base_bytes;
    assert!(refs > 0, "{back:?}");
    assert!(back.disk_wire_bytes < there.disk_wire_bytes / 2, "{back:?}");
}

mod faults {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::thread::{self, JoinHandle};
    use std::time::{Duration, Instant};

    use pagewire::Config;
    use pagewire_runner::disk::{
        disk_source, DiskDest, DiskDestConfig, DiskSourceConfig, DiskSourceReport, NbdAddr, Phase,
        DEFAULT_WINDOW,
    };
    use pagewire_runner::machine::disk_guest::{self, check_recorded_files, fsck};
    use pagewire_runner::machine::{Machine, Start, Workload, ROOT_NODE};
    use pagewire_runner::migrate::{Codec, Deadlines};
    use pagewire_runner::net::{Shape, Wire};
    use pagewire_runner::trace::qmp::Qmp;
    use pagewire_runner::tunnel::LinkCompression;
    use serde_json::{json, Value};

    use super::guest;

    /// Forwards one connection to `to` until [`Cut::now`] shuts both sides.
    struct Cut(Arc<std::sync::Mutex<Vec<TcpStream>>>, u16);

    impl Cut {
        fn to(to: std::net::SocketAddr) -> Cut {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let held = Arc::new(std::sync::Mutex::new(Vec::new()));
            let h = held.clone();
            thread::spawn(move || {
                let (a, _) = l.accept().unwrap();
                let b = TcpStream::connect(to).unwrap();
                h.lock()
                    .unwrap()
                    .extend([a.try_clone().unwrap(), b.try_clone().unwrap()]);
                let pump = |mut from: TcpStream, mut to: TcpStream| {
                    thread::spawn(move || {
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    })
                };
                pump(a.try_clone().unwrap(), b.try_clone().unwrap());
                pump(b, a);
            });
            Cut(held, port)
        }

        fn now(&self) {
            for s in self.0.lock().unwrap().iter() {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// One mirror attempt through the disk tunnel, its link through a [`Cut`].
    struct Attempt {
        cut: Cut,
        dest: DiskDest,
        phase: Phase,
        source: JoinHandle<anyhow::Result<DiskSourceReport>>,
    }

    fn attempt(export: u16, shape: Shape) -> (Attempt, u16) {
        let dest = DiskDest::start(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            DiskDestConfig {
                export: NbdAddr {
                    host_port: format!("127.0.0.1:{export}"),
                    name: ROOT_NODE.into(),
                },
                tls: None,
                deadlines: Deadlines::default(),
                base: false,
                log: Arc::new(|l| eprintln!("disk dest: {l}")),
            },
        )
        .unwrap();
        let cut = Cut::to(dest.addr());
        let cfg = DiskSourceConfig {
            to: format!("127.0.0.1:{}", cut.1),
            wire: Wire::new(shape),
            tls: None,
            config: Config::DEFAULT,
            codec: Codec::On,
            compression: LinkCompression::ZstdAuto,
            label: "fault test".into(),
            deadlines: Deadlines::default(),
            window: DEFAULT_WINDOW,
        };
        let nbd = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = nbd.local_addr().unwrap().port();
        let phase = Phase::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let p = phase.clone();
        let source = thread::spawn(move || {
            disk_source(&nbd, &cfg, p, |_| {
                let _ = tx.send(());
            })
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the source end opened its link");
        (
            Attempt {
                cut,
                dest,
                phase,
                source,
            },
            port,
        )
    }

    fn job(q: &mut Qmp) -> Option<Value> {
        let jobs = q.execute("query-block-jobs", None).unwrap();
        jobs.as_array()
            .and_then(|a| a.iter().find(|j| j["device"] == "copy"))
            .cloned()
    }

    fn wait_job(q: &mut Qmp, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            let j = job(q).expect("the job is there (auto-dismiss off)");
            if f(&j) {
                return j;
            }
            assert!(
                Instant::now() < until,
                "the mirror job never got {what}: {j}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn start_mirror(q: &mut Qmp, port: u16) {
        q.execute(
            "blockdev-add",
            Some(
                json!({ "driver": "nbd", "node-name": "tgt", "export": "disk",
                "server": { "type": "inet", "host": "127.0.0.1", "port": port.to_string() } }),
            ),
        )
        .unwrap();
        q.execute(
            "blockdev-mirror",
            Some(
                json!({ "job-id": "copy", "device": ROOT_NODE, "target": "tgt",
                         "sync": "full", "auto-dismiss": false }),
            ),
        )
        .unwrap();
    }

    /// The job ended with an error; it is dismissed and its target removed.
    fn failed(q: &mut Qmp, a: Attempt) -> String {
        let j = wait_job(q, "concluded", |j| j["status"] == "concluded");
        let err = j["error"].as_str().map(str::to_string);
        q.execute("job-dismiss", Some(json!({ "id": "copy" })))
            .unwrap();
        q.execute("blockdev-del", Some(json!({ "node-name": "tgt" })))
            .unwrap();
        let source = a.source.join().unwrap();
        assert!(source.is_err(), "the source end saw the cut");
        a.dest.stop();
        err.unwrap_or_else(|| panic!("the mirror job ended without an error: {j}"))
    }

    fn checks(m: &Machine) -> usize {
        m.console().checks_ok().len()
    }

    fn wait_more_checks(m: &Machine, n: usize) {
        let want = checks(m) + n;
        m.console()
            .wait_for("more passed checks", Duration::from_secs(120), |s| {
                (s.checks_ok.len() >= want).then_some(())
            })
            .unwrap();
    }

    #[test]
    fn the_guest_runs_on_when_its_disk_link_is_cut_mid_copy_and_mid_sync() {
        let cache = guest::target_dir().join("test-guest");
        let work = tempfile::tempdir().unwrap();
        let (a, b) = (work.path().join("a.raw"), work.path().join("b.raw"));
        let image = match disk_guest::build(&cache, Workload::Heartbeat, &a, 64) {
            Ok(g) => g,
            Err(e) => {
                println!("SKIPPED: {e}");
                return;
            }
        };
        std::fs::File::create(&b)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let mut source = Machine::launch(&image, &work.path().join("a"), &Start::Boot).unwrap();
        source.wait_ready(Duration::from_secs(120)).unwrap();
        wait_more_checks(&source, 2);
        let mut dest = Machine::launch(
            &image.on_disk(&b),
            &work.path().join("b"),
            &Start::Incoming {
                uri: "defer".into(),
                paused: true,
            },
        )
        .unwrap();
        let mut dq = dest.qmp().unwrap();
        let export = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        dq.execute(
            "nbd-server-start",
            Some(json!({ "addr": { "type": "inet",
                "data": { "host": "127.0.0.1", "port": export.to_string() } } })),
        )
        .unwrap();
        dq.execute(
            "block-export-add",
            Some(json!({ "type": "nbd", "id": "e", "node-name": ROOT_NODE,
                         "name": ROOT_NODE, "writable": true })),
        )
        .unwrap();
        let mut sq = source.qmp().unwrap();

        // mid-copy: a slow link, cut while the bulk copy runs
        let (at, port) = attempt(export, Shape::parse("20mbit", "5ms").unwrap());
        start_mirror(&mut sq, port);
        wait_job(&mut sq, "under way", |j| j["offset"].as_u64() > Some(0));
        assert_ne!(
            job(&mut sq).unwrap()["ready"],
            true,
            "cut before the job is ready"
        );
        at.cut.now();
        let why = failed(&mut sq, at);
        eprintln!("mid-copy: the mirror job failed: {why}");
        wait_more_checks(&source, 2);

        // mid-sync: the job ready, writes synchronous, the guest writing; cut
        let (at, port) = attempt(export, Shape::default());
        start_mirror(&mut sq, port);
        wait_job(&mut sq, "ready", |j| j["ready"] == true);
        at.phase.set_synchronous(true);
        wait_more_checks(&source, 2);
        at.cut.now();
        let why = failed(&mut sq, at);
        eprintln!("mid-sync: the mirror job failed: {why}");
        wait_more_checks(&source, 2);

        // a third attempt completes: ready, the guest paused, the job finishes its copy
        let (at, port) = attempt(export, Shape::default());
        start_mirror(&mut sq, port);
        wait_job(&mut sq, "ready", |j| j["ready"] == true);
        at.phase.set_synchronous(true);
        sq.execute("stop", None).unwrap();
        sq.execute("block-job-cancel", Some(json!({ "device": "copy" })))
            .unwrap();
        let j = wait_job(&mut sq, "concluded", |j| j["status"] == "concluded");
        assert!(j["error"].is_null(), "{j}");
        sq.execute("job-dismiss", Some(json!({ "id": "copy" })))
            .unwrap();
        sq.execute("blockdev-del", Some(json!({ "node-name": "tgt" })))
            .unwrap();
        at.source.join().unwrap().unwrap();
        at.dest.next(Duration::from_secs(30)).unwrap();
        at.dest.stop();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "the destination's disk equals the source's"
        );
        sq.execute("cont", None).unwrap();
        wait_more_checks(&source, 2);
        assert!(
            source.console().failures().is_empty(),
            "{}",
            source.console().text()
        );
        // the source's disk is intact: the four files written at boot and a slot per
        // round (at most 16), each as the guest wrote it
        let rounds = checks(&source);
        drop(sq);
        let _ = source.qmp().unwrap().execute("stop", None);
        source.kill();
        dest.kill();
        fsck(&a).unwrap();
        assert!(check_recorded_files(&a).unwrap() >= 4 + rounds.min(16));
    }
}
