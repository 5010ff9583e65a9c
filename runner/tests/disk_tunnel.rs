//! The disk tunnel's data path with real QEMU tools at both ends: `qemu-img convert` writes
//! an image into the source end's NBD export, the writes cross a TCP link through the codec,
//! and the destination end writes them into `qemu-nbd`'s export of another file, which must
//! then equal the image byte for byte. A link cut mid-copy fails `qemu-img` (it sees an
//! error, not a success) and a second attempt completes. Skipped (with the reason) where
//! `qemu-img` or `qemu-nbd` is missing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pagewire::Config;
use pagewire_runner::disk::{
    carry_in, disk_source, switch_when_migrating, DiskCarried, DiskDelivered, DiskDest,
    DiskDestConfig, DiskOut, DiskSourceConfig, NbdAddr, Phase,
};
use pagewire_runner::encoders::EncoderChoice;
use pagewire_runner::migrate::{Codec, Deadlines};
use pagewire_runner::nbd::{serve, Client};
use pagewire_runner::net::{tls, Shape, Wire};
use pagewire_runner::trace::qmp::{Qmp, QmpAddr};
use pagewire_runner::tunnel::LinkCompression;
use serde_json::{json, Value};

const DISK: usize = 8 << 20;

fn tools() -> bool {
    for t in ["qemu-img", "qemu-nbd"] {
        let ok = Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            println!("SKIPPED: {t} is not installed (apt-get install qemu-utils)");
            return false;
        }
    }
    true
}

/// A disk image with what disks hold: data, text, zero blocks, and blocks that repeat
/// others (what the codec's cache finds).
fn image(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = vec![0u8; DISK];
    for i in 0..DISK / 4096 {
        let (before, block) = v.split_at_mut(i * 4096);
        let block = &mut block[..4096];
        match i % 6 {
            0 | 1 => {
                for b in block.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            2 => {
                for (j, b) in block.iter_mut().enumerate() {
                    *b = b"a line of a text file on a disk\n"[(i + j) % 32];
                }
            }
            3 => {}
            _ if i < 5 => {}
            // a copy of a block 5 before, with a few bytes changed
            _ => {
                block.copy_from_slice(&before[(i - 5) * 4096..(i - 4) * 4096]);
                block[i % 4096] ^= 0x5a;
            }
        }
    }
    v
}

/// `qemu-nbd` serving `file` as export "disk" on a free loopback port.
struct QemuNbd(Child, u16);

impl QemuNbd {
    fn start(file: &std::path::Path) -> QemuNbd {
        let port = free_port();
        let child = Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", "disk", "-b", "127.0.0.1", "-t"])
            .args(["-p", &port.to_string()])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        QemuNbd(child, port)
    }

    fn client(&self) -> Client<TcpStream> {
        let by = Instant::now() + Duration::from_secs(20);
        let s = loop {
            match TcpStream::connect(("127.0.0.1", self.1)) {
                Ok(s) => break s,
                Err(e) if Instant::now() > by => panic!("qemu-nbd did not listen: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        // a request's header and payload are two writes: Nagle would hold the second
        s.set_nodelay(true).unwrap();
        Client::connect(s, "disk").unwrap()
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The file at `dst` holds `want`; else which 4 KiB blocks differ.
fn assert_same_disk(dst: &std::path::Path, want: &[u8]) {
    let got = std::fs::read(dst).unwrap();
    assert_eq!(got.len(), want.len());
    let bad: Vec<usize> = (0..want.len() / 4096)
        .filter(|&b| got[b * 4096..(b + 1) * 4096] != want[b * 4096..(b + 1) * 4096])
        .collect();
    assert!(
        bad.is_empty(),
        "the destination disk differs in {} blocks, the first {:?}",
        bad.len(),
        &bad[..bad.len().min(8)]
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Forwards one connection from `from` to `to`, cutting both ways after `limit` bytes.
fn cutting_link(from: TcpListener, to: u16, limit: usize) {
    std::thread::spawn(move || {
        let (mut a, _) = from.accept().unwrap();
        let mut b = TcpStream::connect(("127.0.0.1", to)).unwrap();
        let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut b2, &mut a2);
        });
        let mut left = limit;
        let mut buf = vec![0u8; 16384];
        while left > 0 {
            let n = match a.read(&mut buf[..left.min(16384)]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if b.write_all(&buf[..n]).is_err() {
                break;
            }
            left -= n;
        }
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
    });
}

struct Run {
    qemu_img: Output,
    source: anyhow::Result<DiskCarried>,
    dest: anyhow::Result<DiskDelivered>,
}

/// One copy of `src` by `qemu-img convert` through a tunnel into `nbd`'s export, the link
/// cut after `cut` bytes if given.
fn copy_through_tunnel(src: &std::path::Path, nbd: &QemuNbd, cut: Option<usize>) -> Run {
    // the destination end: listens for the link, writes into qemu-nbd
    let link_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let link_port = link_l.local_addr().unwrap().port();
    let mut client = nbd.client();
    let dest = std::thread::spawn(move || {
        let (mut link, _) = link_l.accept().unwrap();
        link.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        link.set_nodelay(true).unwrap();
        let r = carry_in(&mut link, &mut client, false);
        if r.is_ok() {
            client.disconnect().unwrap();
        }
        r
    });
    let to = match cut {
        None => link_port,
        Some(limit) => {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let p = l.local_addr().unwrap().port();
            cutting_link(l, link_port, limit);
            p
        }
    };
    // the source end: an NBD export for qemu-img whose writes go to the link
    let nbd_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let nbd_port = nbd_l.local_addr().unwrap().port();
    let source = std::thread::spawn(move || -> anyhow::Result<DiskCarried> {
        let mut link = TcpStream::connect(("127.0.0.1", to))?;
        link.set_read_timeout(Some(Duration::from_secs(30)))?;
        link.set_nodelay(true)?;
        let enc = EncoderChoice::InProcess.start(Config::DEFAULT)?;
        let mut out = DiskOut::start(
            &mut link,
            "test",
            enc,
            Phase::default(),
            1 << 20,
            LinkCompression::None,
        )?;
        let (mut conn, _) = nbd_l.accept()?;
        conn.set_nodelay(true)?;
        let served = serve(&mut conn, "disk", &mut out);
        if let Some(why) = out.failure() {
            anyhow::bail!("the disk tunnel's link failed: {why}");
        }
        served?;
        out.finish()
    });
    let qemu_img = Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(src)
        .arg(format!("nbd://127.0.0.1:{nbd_port}/disk"))
        .output()
        .unwrap();
    Run {
        qemu_img,
        source: source.join().unwrap(),
        dest: dest.join().unwrap(),
    }
}

#[test]
fn qemu_img_copies_an_image_through_the_tunnel_into_qemu_nbd() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let dst = dir.path().join("dst.raw");
    let want = image(5);
    std::fs::write(&src, &want).unwrap();
    std::fs::write(&dst, vec![0xeeu8; DISK]).unwrap();
    let nbd = QemuNbd::start(&dst);
    let run = copy_through_tunnel(&src, &nbd, None);
    assert!(
        run.qemu_img.status.success(),
        "qemu-img: {}",
        String::from_utf8_lossy(&run.qemu_img.stderr)
    );
    let carried = run.source.unwrap();
    let delivered = run.dest.unwrap();
    drop(nbd);
    assert_same_disk(&dst, &want);
    // every data byte went out, confirmed at least once per MiB of the window
    assert!(carried.written_bytes + carried.zeroed_bytes >= (DISK as u64) / 2);
    assert!(carried.syncs >= 4, "{carried:?}");
    assert_eq!(delivered.syncs, carried.syncs);
    // a third of the blocks repeat others and a sixth are text: the codec sends less
    assert!(
        carried.stream_bytes < carried.written_bytes * 3 / 4,
        "{carried:?}"
    );
    println!("disk tunnel: {carried:?}; {delivered:?}");
}

#[test]
fn a_link_cut_mid_copy_fails_qemu_img_and_a_second_attempt_completes() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let dst = dir.path().join("dst.raw");
    let want = image(9);
    std::fs::write(&src, &want).unwrap();
    std::fs::write(&dst, vec![0xeeu8; DISK]).unwrap();
    let nbd = QemuNbd::start(&dst);
    let cut = copy_through_tunnel(&src, &nbd, Some(1 << 20));
    assert!(
        !cut.qemu_img.status.success(),
        "qemu-img must see the failure, not a success"
    );
    let e = format!("{:#}", cut.source.unwrap_err());
    assert!(e.contains("link failed"), "{e}");
    assert!(cut.dest.is_err());
    let again = copy_through_tunnel(&src, &nbd, None);
    assert!(
        again.qemu_img.status.success(),
        "qemu-img: {}",
        String::from_utf8_lossy(&again.qemu_img.stderr)
    );
    again.source.unwrap();
    again.dest.unwrap();
    drop(nbd);
    assert_same_disk(&dst, &want);
}

/// A QEMU with no guest, only the source disk as block node `src`, driven over QMP: what
/// a source QEMU's block layer does in a migration with `--copy-storage-all`.
struct QemuBlock {
    child: Child,
    qmp: Qmp,
    /// A second QMP socket, for a watcher of its own.
    second_qmp: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl QemuBlock {
    fn start(image: &std::path::Path) -> Option<QemuBlock> {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let second_qmp = dir.path().join("qmp-2.sock");
        let child = Command::new("qemu-system-x86_64")
            .args(["-machine", "none", "-nodefaults", "-display", "none"])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", sock.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", second_qmp.display()))
            .arg("-blockdev")
            .arg(format!(
                "driver=file,filename={},node-name=src-file",
                image.display()
            ))
            .args(["-blockdev", "driver=raw,file=src-file,node-name=src"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let by = Instant::now() + Duration::from_secs(20);
        let qmp = loop {
            match Qmp::connect(&QmpAddr::Unix(sock.clone()), Duration::from_secs(10)) {
                Ok(q) => break q,
                Err(e) if Instant::now() > by => panic!("QEMU's QMP did not answer: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        Some(QemuBlock {
            child,
            qmp,
            second_qmp,
            _dir: dir,
        })
    }

    fn run(&mut self, cmd: &str, args: Value) -> Value {
        self.qmp
            .execute(cmd, Some(args))
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    /// The job's entry in `query-jobs`, once `done` says it is where the test waits.
    fn wait_job(&mut self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let by = Instant::now() + Duration::from_secs(120);
        loop {
            let jobs = self.qmp.execute("query-jobs", None).unwrap();
            let job = jobs
                .as_array()
                .unwrap()
                .iter()
                .find(|j| j["id"] == id)
                .cloned()
                .unwrap_or(Value::Null);
            if done(&job) {
                return job;
            }
            assert!(Instant::now() < by, "job {id}: {job}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for QemuBlock {
    fn drop(&mut self) {
        let _ = self.qmp.execute("quit", None);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn qemus_mirror_job_copies_a_disk_through_the_tunnel() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let want = image(13);
    let Some((carried, delivered)) = mirror_case(dir.path(), &want, &vec![0xeeu8; DISK], false)
    else {
        return;
    };
    assert_eq!(delivered.syncs, carried.syncs);
    assert_eq!(carried.base_bytes, 0);
    println!("mirror job through the tunnel: {carried:?}; {delivered:?}");
}

#[test]
fn the_way_back_refers_to_the_old_copy_the_destination_holds() {
    if !tools() {
        return;
    }
    // "follow the sun": the destination still holds yesterday's copy; since then the
    // source changed 3 % of its blocks (rewrote some, moved some elsewhere)
    let old = image(23);
    let mut now = old.clone();
    let blocks = DISK / 4096;
    for k in 0..blocks * 3 / 100 {
        let b = (k * 37 + 11) % blocks;
        if k % 2 == 0 {
            now[b * 4096 + k % 4096] ^= 0xa5;
        } else {
            let from = (b + 101) % blocks;
            now.copy_within(from * 4096..(from + 1) * 4096, b * 4096);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let Some((carried, delivered)) = mirror_case(dir.path(), &now, &old, true) else {
        return;
    };
    println!("the way back: {carried:?}; {delivered:?}");
    assert_eq!(delivered.base_bytes, carried.base_bytes);
    // nearly every block was already there: less than 5 % of the disk went over the link
    assert!(carried.base_bytes > (DISK as u64) * 9 / 10, "{carried:?}");
    assert!(
        carried.stream_bytes < (DISK as u64) * 5 / 100,
        "{} stream bytes for a disk of {DISK}: {carried:?}",
        carried.stream_bytes
    );
}

/// QEMU's full mirror of a disk holding `src` through the data path into `qemu-nbd`'s
/// export of a file holding `dst_before` (offering it as a base when `base`); checks the
/// file equals `src` afterwards. `None` (after a SKIPPED line) without QEMU.
fn mirror_case(
    dir: &std::path::Path,
    src_bytes: &[u8],
    dst_before: &[u8],
    base: bool,
) -> Option<(DiskCarried, DiskDelivered)> {
    let src = dir.join("src.raw");
    let dst = dir.join("dst.raw");
    std::fs::write(&src, src_bytes).unwrap();
    std::fs::write(&dst, dst_before).unwrap();
    let Some(mut qemu) = QemuBlock::start(&src) else {
        println!("SKIPPED: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        return None;
    };
    let nbd = QemuNbd::start(&dst);
    // the destination end
    let link_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let link_port = link_l.local_addr().unwrap().port();
    let mut client = nbd.client();
    let dest = std::thread::spawn(move || {
        let (mut link, _) = link_l.accept().unwrap();
        link.set_nodelay(true).unwrap();
        let r = carry_in(&mut link, &mut client, base);
        client.disconnect().unwrap();
        r
    });
    // the source end: the export the mirror job writes to
    let nbd_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let nbd_port = nbd_l.local_addr().unwrap().port();
    let source = std::thread::spawn(move || -> anyhow::Result<DiskCarried> {
        let mut link = TcpStream::connect(("127.0.0.1", link_port))?;
        link.set_nodelay(true)?;
        let enc = EncoderChoice::InProcess.start(Config::DEFAULT)?;
        let mut out = DiskOut::start(
            &mut link,
            "mirror",
            enc,
            Phase::default(),
            1 << 20,
            LinkCompression::None,
        )?;
        let (mut conn, _) = nbd_l.accept()?;
        conn.set_nodelay(true)?;
        serve(&mut conn, "disk", &mut out)?;
        out.finish()
    });
    // QEMU's own storage migration: the NBD target as a block node, a full mirror to it;
    // once ready (source and target agree) cancelling completes the copy without a pivot
    // (what libvirt does after the memory migration)
    mirror_through(&mut qemu, nbd_port);
    let carried = source.join().unwrap().unwrap();
    let delivered = dest.join().unwrap().unwrap();
    drop(qemu);
    drop(nbd);
    assert_same_disk(&dst, src_bytes);
    Some((carried, delivered))
}

/// Runs QEMU's full mirror of `src` to the block node `tgt` at the tunnel's export on
/// `port` until ready, then completes it without a pivot and removes the node.
fn mirror_through(qemu: &mut QemuBlock, port: u16) {
    qemu.run(
        "blockdev-add",
        json!({"driver": "nbd", "node-name": "tgt", "export": "disk",
               "server": {"type": "inet", "host": "127.0.0.1", "port": port.to_string()}}),
    );
    qemu.run(
        "blockdev-mirror",
        json!({"job-id": "m", "device": "src", "target": "tgt", "sync": "full",
               "auto-dismiss": false}),
    );
    qemu.wait_job("m", |j| j["status"] == "ready");
    qemu.run("block-job-cancel", json!({"device": "m"}));
    let job = qemu.wait_job("m", |j| j["status"] == "concluded");
    assert!(job.get("error").is_none(), "the mirror job failed: {job}");
    qemu.run("job-dismiss", json!({"id": "m"}));
    qemu.run("blockdev-del", json!({"node-name": "tgt"}));
}

#[test]
fn the_network_ends_carry_a_mirror_job_over_mutual_tls_and_a_shaped_link() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let dst = dir.path().join("dst.raw");
    let want = image(17);
    std::fs::write(&src, &want).unwrap();
    std::fs::write(&dst, vec![0xeeu8; DISK]).unwrap();
    let Some(mut qemu) = QemuBlock::start(&src) else {
        println!("SKIPPED: qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
        return;
    };
    let nbd = QemuNbd::start(&dst);
    // qemu-nbd listens before the destination end needs it
    drop(nbd.client());
    let keys = dir.path().join("keys");
    tls::keygen(&keys).unwrap();
    let dest = DiskDest::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        DiskDestConfig {
            export: NbdAddr::parse(&format!("nbd://127.0.0.1:{}/disk", nbd.1)).unwrap(),
            tls: Some(tls::server_config(&keys).unwrap()),
            deadlines: Deadlines::default(),
            base: false,
            log: std::sync::Arc::new(|l| eprintln!("disk dest: {l}")),
        },
    )
    .unwrap();
    let cfg = DiskSourceConfig {
        to: dest.addr().to_string(),
        wire: Wire::new(Shape::parse("1gbit", "2ms").unwrap()),
        tls: Some(tls::client_config(&keys).unwrap()),
        config: Config::DEFAULT,
        codec: Codec::On,
        compression: LinkCompression::Zstd { level: 3 },
        label: "test".into(),
        deadlines: Deadlines::default(),
        window: 1 << 20,
    };
    let nbd_l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = nbd_l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    let source = std::thread::spawn(move || {
        disk_source(&nbd_l, &cfg, Phase::default(), |size| {
            tx.send(size).unwrap()
        })
    });
    // the source end serves the destination's size once the link is up
    let size = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(size, DISK as u64);
    mirror_through(&mut qemu, port);
    let sent = source.join().unwrap().unwrap();
    let got = dest.next(Duration::from_secs(30)).unwrap();
    dest.stop();
    drop(qemu);
    drop(nbd);
    assert_same_disk(&dst, &want);
    assert_eq!(got.delivered.syncs, sent.carried.syncs);
    // the codec, then zstd over its stream (its text blocks went without LZ4): on the
    // wire, with TLS, less than the stream and much less than was written
    assert!(sent.wire_bytes < sent.carried.stream_bytes, "{sent:?}");
    assert!(sent.wire_bytes < sent.carried.written_bytes / 2, "{sent:?}");
    println!("disk tunnel over TLS: {sent:?}; {got:?}");
}

/// Ends the child process when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_disk_commands_carry_qemu_img_into_qemu_nbd() {
    if !tools() {
        return;
    }
    let pw = env!("CARGO_BIN_EXE_pagewire");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let dst = dir.path().join("dst.raw");
    let want = image(21);
    std::fs::write(&src, &want).unwrap();
    std::fs::write(&dst, vec![0xeeu8; DISK]).unwrap();
    let keys = dir.path().join("keys");
    let ok = Command::new(pw).arg("keygen").arg(&keys).output().unwrap();
    assert!(ok.status.success());
    let nbd = QemuNbd::start(&dst);
    drop(nbd.client());
    let dest_port = free_port();
    let dest = Reaped(
        Command::new(pw)
            .args([
                "disk",
                "dest",
                "--listen",
                &format!("127.0.0.1:{dest_port}"),
            ])
            .arg("--keys")
            .arg(&keys)
            .args([
                "--export",
                &format!("nbd://127.0.0.1:{}/disk", nbd.1),
                "--json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let nbd_port = free_port();
    // the source end retries nothing: give the destination end its moment to listen
    let by = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", dest_port)).is_err() {
        assert!(Instant::now() < by, "disk dest did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let source = Command::new(pw)
        .args([
            "disk",
            "source",
            "--nbd-listen",
            &format!("127.0.0.1:{nbd_port}"),
        ])
        .args(["--to", &format!("127.0.0.1:{dest_port}")])
        .arg("--keys")
        .arg(&keys)
        .args(["--rate", "1gbit", "--delay", "2ms", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // it serves one client: wait for its word, not with a probe connection
    let mut source = source;
    let mut err = std::io::BufReader::new(source.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(line.contains("serving nbd://"), "disk source said: {line}");
    let img = Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(format!("nbd://127.0.0.1:{nbd_port}/disk"))
        .output()
        .unwrap();
    assert!(
        img.status.success(),
        "qemu-img: {}",
        String::from_utf8_lossy(&img.stderr)
    );
    let out = source.wait_with_output().unwrap();
    let mut rest = String::new();
    let _ = err.read_to_string(&mut rest);
    assert!(out.status.success(), "disk source: {rest}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["wire_bytes"].as_u64().unwrap() > 0, "{report}");
    let mut dest = dest;
    let status = dest.0.wait().unwrap();
    assert!(status.success());
    drop(nbd);
    assert_same_disk(&dst, &want);
}

#[test]
fn the_source_end_turns_synchronous_when_qemus_memory_migration_starts() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("src.raw");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let mut qemu = QemuBlock::start(&img).expect("qemu-system-x86_64");
    let phase = Phase::default();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let watch = switch_when_migrating(
        QmpAddr::Unix(qemu.second_qmp.clone()),
        phase.clone(),
        stop.clone(),
        move |l| {
            let _ = tx.send(l.to_string());
        },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(!phase.synchronous(), "no migration yet");
    qemu.run("migrate", json!({ "uri": "exec:cat > /dev/null" }));
    let line = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(phase.synchronous(), "{line}");
    assert!(line.contains("memory migration is"), "{line}");
    watch.join().unwrap();
}
