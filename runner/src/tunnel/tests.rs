//! The two data paths end to end on hand-built QEMU streams: what the destination QEMU gets
//! parses to the same events as what the source QEMU wrote; refused, truncated and damaged
//! streams fail without a complete stream reaching QEMU.

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use anyhow::Result;
use pagewire::Config;

use super::{carry_in, carry_out, Carried, Delivered};
use crate::encoders::InProcessEncoder;
use crate::qemu::tests::build::{page_of, sample, sample_with_switchover_start, Raw, PAGE, RAM_ID};
use crate::qemu::{join_device_state, FeedError, OwnedEvent, Parser};

/// A QEMU connection that keeps what it was given.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn events(bytes: &[u8]) -> Vec<OwnedEvent> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    parser
        .feed(bytes, |e| {
            out.push(e.to_owned_event());
            Ok::<(), ()>(())
        })
        .map_err(|e| match e {
            FeedError::Stream(s) => s,
            FeedError::Sink(()) => unreachable!(),
        })
        .unwrap();
    parser.finish().unwrap();
    join_device_state(out)
}

fn source(qemu: &[u8]) -> (Result<Carried>, Vec<u8>) {
    let mut enc = InProcessEncoder::new(Config {
        stream_id: 7,
        ..Config::DEFAULT
    })
    .unwrap();
    let mut link = Vec::new();
    // QEMU's writes arrive in pieces of odd sizes
    let mut reader = Pieces(qemu, 1000);
    let r = carry_out(&mut reader, &mut link, &mut enc, PAGE, &mut |_| {});
    (r, link)
}

fn dest(link: &[u8]) -> (Result<Delivered>, Vec<u8>, bool) {
    let qemu = Shared::default();
    let mut connected = false;
    let q = qemu.clone();
    let mut connect = || -> Result<Box<dyn Write>> {
        connected = true;
        Ok(Box::new(q.clone()))
    };
    let r = carry_in(&mut &link[..], &mut connect, 1 << 30, &mut |_| {});
    let got = qemu.0.borrow().clone();
    (r, got, connected)
}

/// Reads at most `.1` bytes at a time.
struct Pieces<'a>(&'a [u8], usize);

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(self.1).min(buf.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

/// Several passes over 64 pages of which a few change a little each pass: what the codec's
/// cache and deltas are for.
fn passes() -> Vec<u8> {
    let mut s = Raw::header("pc-i440fx-7.2")
        .start(RAM_ID, 4)
        .blocks(&[("pc.ram", 64 * PAGE as u64), ("vga.vram", 8 * PAGE as u64)])
        .eos(RAM_ID, true);
    let page = |pass: u8, i: u64| {
        let mut p = page_of((i % 5) as u8 + 1);
        p[200 + i as usize] = pass;
        p
    };
    for pass in 0..4u8 {
        s = s.part(RAM_ID);
        let mut first = true;
        for i in 0..64u64 {
            if pass > 0 && i % 4 != 0 {
                continue;
            }
            let name = first.then_some("pc.ram");
            first = false;
            s = if i % 9 == 0 {
                s.zero(i * PAGE as u64, name)
            } else {
                s.page(i * PAGE as u64, name, &page(pass, i))
            };
        }
        s = s
            .page(0, Some("vga.vram"), &page(pass, 1))
            .eos(RAM_ID, true);
    }
    s.end(RAM_ID)
        .page(4 * PAGE as u64, Some("pc.ram"), &page(9, 4))
        .eos(RAM_ID, true)
        .bytes(&crate::qemu::tests::build::device_tail())
        .0
}

#[test]
fn the_destination_qemu_gets_the_stream_the_source_qemu_wrote() {
    for qemu in [
        sample(true, true),
        sample(false, false),
        sample_with_switchover_start(),
        passes(),
    ] {
        let (carried, link) = source(&qemu);
        let carried = carried.unwrap();
        assert_eq!(carried.qemu_bytes, qemu.len() as u64);
        assert_eq!(carried.stream_bytes, link.len() as u64);
        let (delivered, out, connected) = dest(&link);
        let delivered = delivered.unwrap();
        assert!(connected);
        assert_eq!(delivered.qemu_bytes, out.len() as u64);
        assert_eq!(events(&out), events(&qemu), "events differ");
        let pages = carried.raw_pages + carried.zero_pages + carried.xbzrle_pages;
        assert_eq!(delivered.pages, pages + carried.fill_pages);
    }
    // the codec earns its keep on repeated pages
    let qemu = passes();
    let (_, link) = source(&qemu);
    assert!(
        link.len() * 4 < qemu.len(),
        "{} B on the link for {} B of QEMU stream",
        link.len(),
        qemu.len()
    );
}

/// An encoder with a bug: it changes one byte of the `n`th page it is given.
struct FlipsOnePage {
    inner: InProcessEncoder,
    n: u64,
}

impl crate::encoders::StreamEncoder for FlipsOnePage {
    fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let mut page = page.to_vec();
        if self.n == 0 {
            page[100] ^= 0x20;
        }
        self.n = self.n.wrapping_sub(1);
        self.inner.encode_page(pfn, &page, out)
    }
    fn append_blob(&mut self, tag: u32, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.inner.append_blob(tag, data, out)
    }
    fn end_iteration(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.inner.end_iteration(out)
    }
    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.inner.finish(out)
    }
    fn stats(&self) -> pagewire::EncoderStats {
        self.inner.stats()
    }
    fn set_lz4(&mut self, on: bool) -> bool {
        self.inner.set_lz4(on)
    }
    fn lz4(&self) -> bool {
        self.inner.lz4()
    }
    fn set_plain(&mut self, on: bool) -> bool {
        self.inner.set_plain(on)
    }
}

#[test]
fn a_page_the_tunnel_got_wrong_is_caught_before_qemu_gets_the_end_of_its_stream() {
    let qemu = passes();
    let mut enc = FlipsOnePage {
        inner: InProcessEncoder::new(Config::DEFAULT).unwrap(),
        n: 30,
    };
    let mut link = Vec::new();
    carry_out(
        &mut Pieces(&qemu, 1000),
        &mut link,
        &mut enc,
        PAGE,
        &mut |_| {},
    )
    .unwrap();
    // every frame is sound: only the digest can tell
    let (delivered, out, connected) = dest(&link);
    assert!(connected);
    let e = format!("{:#}", delivered.unwrap_err());
    assert!(e.contains("differs from what the source QEMU wrote"), "{e}");
    // QEMU got the pages, but not the end of the device state: its stream is incomplete
    let mut parser = Parser::new();
    parser
        .feed(&out, |_| Ok::<(), ()>(()))
        .map_err(|_| "parse error")
        .unwrap();
    assert!(parser.finish().is_err(), "QEMU got a complete stream");
}

#[test]
fn a_refused_stream_sends_nothing_and_never_reaches_qemu() {
    // postcopy's advise comes before the START section
    let postcopy = Raw::header("pc")
        .u8(0x08)
        .be16(1)
        .be16(16)
        .bytes(&[0; 16])
        .0;
    // block migration's START section
    let block = Raw::header("pc")
        .u8(0x01)
        .be32(3)
        .name("block")
        .be32(0)
        .be32(1)
        .0;
    for qemu in [postcopy, block] {
        let (r, link) = source(&qemu);
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("refused"), "{e}");
        assert!(link.is_empty(), "{} B went out", link.len());
        let (r, out, connected) = dest(&link);
        assert!(r.is_err());
        assert!(!connected && out.is_empty());
    }
}

#[test]
fn a_source_qemu_that_stops_midway_leaves_qemu_an_incomplete_stream() {
    let qemu = passes();
    for cut in [qemu.len() / 3, qemu.len() - 40] {
        let (r, link) = source(&qemu[..cut]);
        let e = format!("{:#}", r.unwrap_err());
        assert!(
            e.contains("ended early") || e.contains("ended inside its device state"),
            "{e}"
        );
        let (r, out, _) = dest(&link);
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("ended before its END record"), "{e}");
        assert!(out.len() < qemu.len());
    }
}

#[test]
fn a_damaged_link_is_caught_and_no_wrong_page_reaches_qemu() {
    let qemu = passes();
    let (_, link) = source(&qemu);
    let good = events(&qemu);
    for at in (0..link.len()).step_by(37) {
        for bit in [0, 5] {
            let mut bad = link.clone();
            bad[at] ^= 1 << bit;
            let (r, out, _) = dest(&bad);
            assert!(r.is_err(), "a flipped bit at {at} went through");
            // what QEMU got before the error is a prefix of the right stream's events
            let mut parser = Parser::new();
            let mut seen = Vec::new();
            let _ = parser.feed(&out, |e| {
                seen.push(e.to_owned_event());
                Ok::<(), ()>(())
            });
            let seen = join_device_state(seen);
            let n = seen.len().saturating_sub(1); // the last may be cut short
            assert_eq!(seen[..n], good[..n], "a wrong event after a flip at {at}");
        }
    }
}

#[test]
fn a_stream_asking_for_too_large_a_cache_is_refused_before_qemu() {
    let (_, link) = source(&sample(true, true));
    let qemu = Shared::default();
    let mut connect = || -> Result<Box<dyn Write>> { Ok(Box::new(qemu.clone())) };
    let e = carry_in(&mut &link[..], &mut connect, 1 << 20, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("--max-cache-mib"), "{e}");
    assert!(qemu.0.borrow().is_empty());
}

/// Both ends over real sockets (plain TCP, a unix socket for each QEMU): the source end
/// opens its link while it waits for QEMU, and closes it again when QEMU is late.
mod over_sockets {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use pagewire::Config;

    use super::{events, passes};
    use crate::migrate::{Codec, Deadlines};
    use crate::net::{Shape, Wire};
    use crate::tunnel::{
        accept_and_tunnel_out, DestEndConfig, LinkCompression, QemuEndpoint, SourceEndConfig,
        TunnelDest,
    };

    /// One migration: QEMU connects to the source end after `qemu_after`; the destination
    /// QEMU's bytes, whether the source end saw QEMU connect, and the destination end's
    /// outcome for each link it was given (ok or failed).
    fn migrate(qemu_after: Duration) -> (Vec<u8>, bool, Vec<bool>) {
        let dir = tempfile::tempdir().unwrap();
        let deadlines = Deadlines {
            progress: Duration::from_millis(600),
            ..Deadlines::default()
        };
        let incoming = dir.path().join("dst.sock");
        let dst_qemu = UnixListener::bind(&incoming).unwrap();
        let dst_reader = thread::spawn(move || {
            let (mut s, _) = dst_qemu.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        let dest = TunnelDest::start(
            TcpListener::bind("127.0.0.1:0").unwrap(),
            DestEndConfig {
                qemu: QemuEndpoint::Unix(incoming),
                tls: None,
                deadlines,
                max_cache: 1 << 30,
                log: Arc::new(|_| {}),
            },
        )
        .unwrap();
        let cfg = SourceEndConfig {
            to: dest.addr().to_string(),
            wire: Wire::new(Shape::default()),
            tls: None,
            config: Config::DEFAULT,
            codec: Codec::On,
            link_compression: LinkCompression::ZstdAuto,
            label: "early link".into(),
            deadlines,
        };
        let src = QemuEndpoint::Unix(dir.path().join("src.sock"));
        let listener = src.listen().unwrap();
        let path = dir.path().join("src.sock");
        let qemu = thread::spawn(move || {
            thread::sleep(qemu_after);
            let mut s = UnixStream::connect(path).unwrap();
            s.write_all(&passes()).unwrap();
        });
        let mut connected = false;
        let report =
            accept_and_tunnel_out(&listener, &cfg, || connected = true, &mut |_, _| {}).unwrap();
        qemu.join().unwrap();
        assert!(report.reply.ok);
        let mut outcomes = Vec::new();
        while let Some(r) = dest.next(Duration::from_millis(200)) {
            outcomes.push(r.is_ok());
        }
        dest.stop();
        (dst_reader.join().unwrap(), connected, outcomes)
    }

    #[test]
    fn the_source_end_opens_its_link_early_and_again_when_qemu_is_late() {
        let want = events(&passes());
        // QEMU at once: the early link carries it, the only link
        let (got, connected, links) = migrate(Duration::ZERO);
        assert!(connected);
        assert_eq!(events(&got), want);
        assert_eq!(links, [true]);
        // QEMU after the early link was given up (half the 600 ms progress deadline): that
        // link fails at the destination end, which takes the second one
        let (got, connected, links) = migrate(Duration::from_millis(700));
        assert!(connected);
        assert_eq!(events(&got), want);
        assert_eq!(links, [false, true]);
    }
}
