//! The NBD protocol ends of the disk tunnel: our client against our server, QEMU's
//! `qemu-img` writing an image into our server, and our client writing into QEMU's
//! `qemu-nbd`. The QEMU tests are skipped (with the reason) where the tool is missing.

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pagewire_runner::nbd::{serve, Client, MemoryTarget, SessionEnd};

/// Image content as a disk holds it: data, text, zeros, repeats.
fn image(bytes: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = vec![0u8; bytes];
    for (i, block) in v.chunks_mut(4096).enumerate() {
        match i % 5 {
            0 => {
                for b in block.iter_mut() {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *b = x as u8;
                }
            }
            1 => {
                for (j, b) in block.iter_mut().enumerate() {
                    *b = b"a disk block of text "[(i + j) % 21];
                }
            }
            2 => {}
            _ => block[i % 4096] = i as u8,
        }
    }
    v
}

/// Serves `target` as "disk" to one client on a loopback port; returns the port and the
/// thread that gives back how the session ended and the target.
fn one_session(
    mut target: MemoryTarget,
) -> (
    u16,
    std::thread::JoinHandle<(anyhow::Result<SessionEnd>, MemoryTarget)>,
) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_nodelay(true).unwrap();
        let end = serve(&mut s, "disk", &mut target);
        (end, target)
    });
    (port, t)
}

#[test]
fn our_client_and_server_agree_and_errors_keep_the_session() {
    let (port, server) = one_session(MemoryTarget(vec![0; 1 << 20]));
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut c = Client::connect(s, "disk").unwrap();
    assert_eq!(c.size(), 1 << 20);
    let data = image(64 << 10, 3);
    c.write(4096, &data, false).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read(4096, &mut back).unwrap();
    assert!(back == data);
    c.write_zeroes(8192, 4096).unwrap();
    c.flush().unwrap();
    // past the end: an error in the reply, and the session goes on
    let e = c.read((1 << 20) - 10, &mut [0u8; 20]).unwrap_err();
    assert!(format!("{e:#}").contains("EINVAL"), "{e:#}");
    let e = c.write(1 << 20, &[1u8; 4], true).unwrap_err();
    assert!(format!("{e:#}").contains("ENOSPC"), "{e:#}");
    let mut one = [0u8; 1];
    c.read(4096, &mut one).unwrap();
    assert_eq!(one[0], data[0]);
    c.disconnect().unwrap();
    let (end, target) = server.join().unwrap();
    assert_eq!(end.unwrap(), SessionEnd::Disconnected { requests: 8 });
    let mut want = vec![0u8; 1 << 20];
    want[4096..4096 + data.len()].copy_from_slice(&data);
    want[8192..12288].fill(0);
    assert!(target.0 == want);
}

#[test]
fn an_unknown_export_is_refused() {
    let (port, server) = one_session(MemoryTarget(vec![0; 4096]));
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let e = Client::connect(s, "other").err().expect("refused");
    assert!(format!("{e:#}").contains("refused export"), "{e:#}");
    // the client hung up without choosing: the server says how
    let (end, _) = server.join().unwrap();
    assert!(end.is_err());
}

fn tool(name: &str) -> bool {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("SKIPPED: {name} is not installed (apt-get install qemu-utils)");
    }
    found
}

#[test]
fn qemu_img_writes_an_image_into_our_server() {
    if !tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.raw");
    let want = image(4 << 20, 7);
    std::fs::write(&src, &want).unwrap();
    let (port, server) = one_session(MemoryTarget(vec![0xee; 4 << 20]));
    let out = Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(format!("nbd://127.0.0.1:{port}/disk"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (end, target) = server.join().unwrap();
    assert!(
        matches!(end.unwrap(), SessionEnd::Disconnected { requests } if requests > 1),
        "qemu-img wrote and disconnected"
    );
    // every byte arrived, the zero blocks included (the target started as 0xee)
    assert!(target.0 == want, "the image differs after qemu-img convert");
}

/// `qemu-nbd` serving `file` as export "disk" on a free loopback port.
struct QemuNbd(Child, u16);

impl QemuNbd {
    fn start(file: &std::path::Path) -> QemuNbd {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", "disk", "-b", "127.0.0.1", "-t"])
            .args(["-p", &port.to_string()])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        QemuNbd(child, port)
    }

    fn connect(&self) -> TcpStream {
        let by = Instant::now() + Duration::from_secs(20);
        loop {
            match TcpStream::connect(("127.0.0.1", self.1)) {
                Ok(s) => return s,
                Err(e) if Instant::now() > by => panic!("qemu-nbd did not listen: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn our_client_writes_into_qemu_nbd() {
    if !tool("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dest.raw");
    let mut f = std::fs::File::create(&file).unwrap();
    f.write_all(&vec![0xeeu8; 2 << 20]).unwrap();
    drop(f);
    let nbd = QemuNbd::start(&file);
    let mut c = Client::connect(nbd.connect(), "disk").unwrap();
    assert_eq!(c.size(), 2 << 20);
    let data = image(1 << 20, 11);
    c.write(0, &data, false).unwrap();
    c.write_zeroes(1 << 20, 1 << 20).unwrap();
    c.flush().unwrap();
    let mut back = vec![0u8; 4096];
    c.read(8192, &mut back).unwrap();
    assert!(back == data[8192..12288]);
    c.disconnect().unwrap();
    drop(nbd);
    let got = std::fs::read(&file).unwrap();
    assert!(got[..1 << 20] == data[..], "written data");
    assert!(got[1 << 20..].iter().all(|&b| b == 0), "written zeros");
}
