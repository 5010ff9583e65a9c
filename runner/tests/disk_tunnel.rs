//! The disk tunnel's data path with real QEMU tools at both ends: `qemu-img convert` writes
//! an image into the source end's NBD export, the writes cross a TCP link through the codec,
//! and the destination end writes them into `qemu-nbd`'s export of another file, which must
//! then equal the image byte for byte. A link cut mid-copy fails `qemu-img` (it sees an
//! error, not a success) and a second attempt completes. Skipped (with the reason) where
//! `qemu-img` or `qemu-nbd` is missing.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pagewire::Config;
use pagewire_runner::disk::{carry_in, DiskCarried, DiskDelivered, DiskOut, Phase};
use pagewire_runner::encoders::EncoderChoice;
use pagewire_runner::nbd::{serve, Client};

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
        let r = carry_in(&mut link, &mut client);
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
            DISK as u64,
            "test",
            enc,
            Phase::default(),
            1 << 20,
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
    let got = std::fs::read(&dst).unwrap();
    assert!(got == want, "the destination image differs from the source");
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
    assert!(std::fs::read(&dst).unwrap() == want);
}
