//! Both ends of the ring against each other, in one process.

extern crate std;

use std::format;
use std::vec;
use std::vec::Vec;

use core::sync::atomic::AtomicU32;
use core::sync::atomic::Ordering::{Relaxed, Release};

use super::layout::{ctrl, flags, status, CONTROL_LEN, OFFLOAD_VERSION};
use super::*;
use crate::{Config, DecodeMode, Decoder, Destination, Encoder, Error, Features, Result};

const CFG: Config = Config {
    cache_pages: 32,
    frame_bytes: 16384,
    ..Config::DEFAULT
};

/// What the host asks for, in order.
#[derive(Clone)]
enum Op {
    Page(u64, Vec<u8>),
    Blob(u32, Vec<u8>),
    EndIteration,
    Finish,
}

/// A deterministic page mix: zero pages, repeats, small edits, noise.
fn page(i: u64) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    match i % 5 {
        0 => {}
        1 => p.iter_mut().for_each(|b| *b = (i % 3) as u8),
        2 => {
            for (k, b) in p.iter_mut().enumerate() {
                *b = (k / 64) as u8;
            }
            p[(i as usize * 13) % 4096] ^= 0x5a;
        }
        _ => {
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for b in p.iter_mut().take(2048) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
        }
    }
    p
}

fn ops(pages: u64, passes: u64) -> Vec<Op> {
    let mut v = Vec::new();
    for pass in 0..passes {
        for pfn in 0..pages {
            if pass == 0 || pfn % (pass + 1) == 0 {
                v.push(Op::Page(pfn, page(pfn * 7 + pass * (pfn % 3))));
            }
        }
        if pass == 0 {
            v.push(Op::Blob(9, vec![0xab; 300]));
        }
        v.push(Op::EndIteration);
    }
    v.push(Op::Finish);
    v
}

/// The stream the in-process encoder writes for `ops`.
fn in_process(cfg: Config, ops: &[Op]) -> Vec<u8> {
    let mut mem = vec![0u8; cfg.encoder_storage_len()];
    let mut out = vec![0u8; cfg.max_output_len()];
    let mut enc = Encoder::new(cfg, &mut mem).unwrap();
    let mut wire = Vec::new();
    for op in ops {
        let n = match op {
            Op::Page(pfn, p) => enc.encode_page(*pfn, p, &mut out),
            Op::Blob(t, b) => enc.append_blob(*t, b, &mut out),
            Op::EndIteration => enc.end_iteration(&mut out),
            Op::Finish => enc.finish(&mut out),
        }
        .unwrap();
        wire.extend_from_slice(&out[..n]);
    }
    wire
}

/// Device buffers for `cfg`.
struct Bufs {
    storage: Vec<u8>,
    page: Vec<u8>,
    out: Vec<u8>,
}

impl Bufs {
    fn new(cfg: &Config) -> Self {
        Bufs {
            storage: vec![0; cfg.encoder_storage_len()],
            page: vec![0; cfg.page_size as usize],
            out: vec![0; cfg.max_output_len()],
        }
    }
}

fn region_for(h: &RegionHeader) -> Vec<AtomicU32> {
    (0..h.region_len as usize / 4)
        .map(|_| AtomicU32::new(0))
        .collect()
}

/// Takes every published completion, appending its bytes to `wire`.
fn drain(host: &mut Host<'_>, wire: &mut Vec<u8>, done: &mut Vec<Completion>) {
    while let Some(c) = host.peek_completion().unwrap() {
        let at = wire.len();
        wire.resize(at + c.out_len as usize, 0);
        host.read_output(&c, &mut wire[at..]);
        host.release(&c);
        done.push(c);
    }
}

/// Runs `ops` through host and device in one thread, polling the device `polls_per_op`
/// times per host step (0 = only when the host is stuck), so the rings fill and drain.
fn through_ring(
    cfg: Config,
    params: RegionParams,
    start: u32,
    ops: &[Op],
    polls_per_op: usize,
) -> (Vec<u8>, Vec<Completion>, EncoderStatsPair) {
    let h = params.header(&cfg, Features::ALL).unwrap();
    let words = region_for(&h);
    let mut host = Host::create_at(&words, &h, start).unwrap();
    let mut b = Bufs::new(&cfg);
    let mut dev = Device::attach(&words, &mut b.storage, &mut b.page, &mut b.out).unwrap();
    let mut wire = Vec::new();
    let mut done = Vec::new();
    for op in ops {
        loop {
            let ok = match op {
                Op::Page(pfn, p) => host.submit_page(*pfn, p).unwrap(),
                Op::Blob(t, d) => host.submit_blob(*t, d).unwrap(),
                Op::EndIteration => host.submit_op(flags::END_ITERATION).unwrap(),
                Op::Finish => host.submit_op(flags::FINISH).unwrap(),
            };
            if ok {
                break;
            }
            // stuck: let the device work, then take what it published
            dev.poll().unwrap();
            drain(&mut host, &mut wire, &mut done);
        }
        for _ in 0..polls_per_op {
            dev.poll().unwrap();
        }
        if polls_per_op > 0 {
            drain(&mut host, &mut wire, &mut done);
        }
    }
    for _ in 0..10_000 {
        if dev.poll().unwrap() == Poll::Finished && host.outstanding() == 0 {
            break;
        }
        drain(&mut host, &mut wire, &mut done);
    }
    assert_eq!(host.device_state().0, Some(DeviceState::Finished));
    assert_eq!(host.outstanding(), 0);
    let stats = (host.stats(), *dev.stats());
    (wire, done, stats)
}

/// Asserts two streams are equal without printing megabytes.
fn same(a: &[u8], b: &[u8], what: &str) {
    let first = a.iter().zip(b).position(|(x, y)| x != y);
    assert!(
        a == b,
        "{what}: streams differ: lengths {} and {}, first difference at {first:?}",
        a.len(),
        b.len()
    );
}

type EncoderStatsPair = (crate::EncoderStats, crate::EncoderStats);

#[test]
fn ring_stream_equals_in_process_stream_and_decodes() {
    let ops = ops(200, 4);
    let want = in_process(CFG, &ops);
    let (wire, done, (host_stats, dev_stats)) =
        through_ring(CFG, RegionParams::DEFAULT, 0, &ops, 1);
    same(&wire, &want, "ring");
    assert_eq!(done.len(), ops.len());
    assert!(done.iter().all(|c| c.status == status::OK));
    assert_eq!(host_stats, dev_stats);
    assert_eq!(host_stats.bytes_out, wire.len() as u64);

    /// Counts pages through one staging page (a relay's destination).
    struct Count(u64, [u8; 4096]);
    impl Destination for Count {
        fn page_mut(&mut self, _: u64) -> Result<&mut [u8]> {
            Ok(&mut self.1)
        }
        fn page_done(&mut self, _: u64) {
            self.0 += 1;
        }
    }
    let mut dm = vec![0u8; CFG.decoder_storage_len()];
    let (mut dec, used) = Decoder::from_header(&wire, DecodeMode::CacheCopy, &mut dm).unwrap();
    let mut n = Count(0, [0; 4096]);
    dec.decode(&wire[used..], &mut n).unwrap();
    dec.check_complete().unwrap();
    assert_eq!(n.0, host_stats.pages());
}

#[test]
fn tiny_rings_wrap_many_times_and_across_u32() {
    let ops = ops(120, 3);
    let want = in_process(CFG, &ops);
    let params = RegionParams {
        sq_entries: 4,
        cq_entries: 2,
        page_slots: 3,
        out_area_len: 0,
    };
    // the device only runs when the host is stuck: every ring fills up
    for start in [0, u32::MAX - 5] {
        let (wire, done, _) = through_ring(CFG, params, start, &ops, 0);
        same(&wire, &want, &format!("start {start}"));
        assert_eq!(done.len(), ops.len());
        assert_eq!(done[0].seq, start);
        assert_eq!(
            done.last().unwrap().seq,
            start.wrapping_add(ops.len() as u32 - 1)
        );
    }
}

#[test]
fn output_area_wraps_and_applies_backpressure() {
    // no LZ4, so frames are big; the smallest allowed output area holds two chunks
    let cfg = Config { lz4: false, ..CFG };
    let params = RegionParams {
        out_area_len: (2 * geometry::chunk_max(&cfg)).next_power_of_two() as u32,
        ..RegionParams::DEFAULT
    };
    let ops = ops(150, 2);
    let want = in_process(cfg, &ops);
    let (wire, done, _) = through_ring(cfg, params, 0, &ops, 0);
    same(&wire, &want, "ring");
    let chunks: Vec<_> = done.iter().filter(|c| c.out_len > 0).collect();
    assert!(chunks.len() > 4);
    assert!(chunks.iter().any(|c| c.out_offset == 0) && chunks.iter().any(|c| c.out_offset > 0));
}

#[test]
fn empty_full_and_blocked() {
    let params = RegionParams {
        sq_entries: 2,
        cq_entries: 2,
        page_slots: 2,
        out_area_len: 0,
    };
    let h = params.header(&CFG, Features::ALL).unwrap();
    let words = region_for(&h);
    let mut host = Host::create(&words, &h).unwrap();
    let mut b = Bufs::new(&CFG);
    let mut dev = Device::attach(&words, &mut b.storage, &mut b.page, &mut b.out).unwrap();
    assert_eq!(dev.poll(), Ok(Poll::Idle));
    assert_eq!(host.peek_completion(), Ok(None));
    assert!(host.submit_page(1, &page(1)).unwrap());
    assert!(host.submit_page(2, &page(2)).unwrap());
    assert!(!host.submit_page(3, &page(3)).unwrap(), "ring full");
    assert!(matches!(
        dev.poll(),
        Ok(Poll::Done {
            seq: 0,
            rejected: None
        })
    ));
    assert!(matches!(
        dev.poll(),
        Ok(Poll::Done {
            seq: 1,
            rejected: None
        })
    ));
    // both completions are outstanding: the host may not submit until it takes one
    assert!(!host.submit_page(3, &page(3)).unwrap());
    assert_eq!(dev.poll(), Ok(Poll::Idle));
    let c = host.peek_completion().unwrap().unwrap();
    assert_eq!((c.seq, c.status), (0, status::OK));
    assert_eq!(
        c.out_len, 32,
        "the stream header; the page stays in the frame body"
    );
    host.release(&c);
    assert!(host.submit_page(3, &page(3)).unwrap());

    // a host that ignores the limit: the device holds the result until there is room
    let mut raw = SubmitDesc {
        flags: flags::END_ITERATION,
        ..bytemuck::Zeroable::zeroed()
    };
    assert!(matches!(dev.poll(), Ok(Poll::Done { seq: 2, .. })));
    raw.seq = 3;
    let w = &words;
    let at = h.sq_offset as usize + 32; // entry 3 of a 2-entry ring: slot 1
    Region::new(w).write_entry(at, &raw);
    Region::new(w).store(ctrl::SQ_TAIL, 4, Release);
    assert!(matches!(dev.poll(), Ok(Poll::Done { seq: 3, .. })), "taken");
    assert_eq!(dev.poll(), Ok(Poll::Blocked), "completion ring is full");
    let c = host.peek_completion().unwrap().unwrap();
    host.release(&c);
    assert!(
        matches!(dev.poll(), Ok(Poll::Done { seq: 3, .. })),
        "published"
    );
}

#[test]
fn bad_descriptors_get_error_completions_and_leave_the_stream_alone() {
    let params = RegionParams::DEFAULT;
    let h = params.header(&CFG, Features::ALL).unwrap();
    let words = region_for(&h);
    let mut host = Host::create(&words, &h).unwrap();
    let mut b = Bufs::new(&CFG);
    let mut dev = Device::attach(&words, &mut b.storage, &mut b.page, &mut b.out).unwrap();
    let z: SubmitDesc = bytemuck::Zeroable::zeroed();
    let page_desc = SubmitDesc {
        flags: flags::PAGE,
        data_len: 4096,
        ..z
    };
    let area = h.page_area_len;
    let bad: Vec<(SubmitDesc, bool, DescError)> = vec![
        (z, false, DescError::BadFlags(0)),
        (
            SubmitDesc {
                flags: flags::PAGE | flags::FINISH,
                ..page_desc
            },
            false,
            DescError::BadFlags(9),
        ),
        (
            SubmitDesc { flags: 1 << 9, ..z },
            false,
            DescError::BadFlags(1 << 9),
        ),
        (
            SubmitDesc {
                data_len: 4095,
                ..page_desc
            },
            false,
            DescError::BadLength(4095),
        ),
        (
            SubmitDesc {
                data_offset: 2,
                ..page_desc
            },
            false,
            DescError::BadRange(2),
        ),
        (
            SubmitDesc {
                data_offset: area - 4092,
                ..page_desc
            },
            false,
            DescError::BadRange(area - 4092),
        ),
        (
            SubmitDesc {
                data_offset: u32::MAX - 3,
                ..page_desc
            },
            false,
            DescError::BadRange(u32::MAX - 3),
        ),
        (
            SubmitDesc {
                blob_tag: 1,
                ..page_desc
            },
            false,
            DescError::BadReserved,
        ),
        (
            SubmitDesc {
                reserved: 1,
                ..page_desc
            },
            false,
            DescError::BadReserved,
        ),
        (
            SubmitDesc {
                pfn: 5,
                flags: flags::FINISH,
                ..z
            },
            false,
            DescError::BadReserved,
        ),
        (
            SubmitDesc {
                flags: flags::BLOB,
                data_len: 5000,
                ..z
            },
            false,
            DescError::BadLength(5000),
        ),
        (
            SubmitDesc {
                seq: 77,
                ..page_desc
            },
            true,
            DescError::BadSeq(77),
        ),
    ];
    let ops = ops(20, 1);
    let want = in_process(CFG, &ops);
    let mut wire = Vec::new();
    let mut done = Vec::new();
    // interleave: a bad descriptor before every good operation
    let mut bad_iter = bad.iter().cycle();
    for op in &ops {
        let (d, keep, why) = bad_iter.next().unwrap();
        assert!(host.submit_raw(*d, *keep).unwrap());
        match dev.poll() {
            Ok(Poll::Done { rejected, .. }) => assert_eq!(rejected, Some(*why), "{d:?}"),
            other => panic!("{other:?}"),
        }
        drain(&mut host, &mut wire, &mut done);
        let c = done.last().unwrap();
        assert_eq!((c.status, c.out_len), (why.status(), 0));
        assert_eq!(c.detail, why.detail());
        let ok = match op {
            Op::Page(pfn, p) => host.submit_page(*pfn, p),
            Op::Blob(t, d) => host.submit_blob(*t, d),
            Op::EndIteration => host.submit_op(flags::END_ITERATION),
            Op::Finish => host.submit_op(flags::FINISH),
        };
        assert!(ok.unwrap());
        assert!(matches!(
            dev.poll(),
            Ok(Poll::Done { rejected: None, .. }) | Ok(Poll::Finished)
        ));
        drain(&mut host, &mut wire, &mut done);
    }
    same(&wire, &want, "ring");
    assert_eq!(dev.state(), DeviceState::Finished);
}

#[test]
fn broken_indices_stop_the_device_with_a_code() {
    let h = RegionParams::DEFAULT.header(&CFG, Features::ALL).unwrap();
    for (word, value) in [
        (ctrl::SQ_TAIL, 65u32),
        (ctrl::CQ_HEAD, 3),
        (ctrl::OUT_HEAD, 5),
    ] {
        let words = region_for(&h);
        let mut host = Host::create(&words, &h).unwrap();
        let mut b = Bufs::new(&CFG);
        let mut dev = Device::attach(&words, &mut b.storage, &mut b.page, &mut b.out).unwrap();
        // one END_ITERATION so the device has output to place
        assert!(host.submit_page(0, &page(3)).unwrap());
        assert!(host.submit_op(flags::END_ITERATION).unwrap());
        Region::new(&words).store(word, value, Release);
        let mut r = Ok(Poll::Idle);
        for _ in 0..4 {
            r = dev.poll();
            if r.is_err() {
                break;
            }
        }
        assert!(matches!(r, Err(OffloadError::BadIndex(_))), "{word}: {r:?}");
        assert_eq!(host.device_state(), (Some(DeviceState::Failed), 6));
        assert!(dev.poll().is_err(), "stays failed");
    }
}

#[test]
fn attach_checks_the_header() {
    let good = RegionParams::DEFAULT.header(&CFG, Features::ALL).unwrap();
    let mut b = Bufs::new(&CFG);
    let attach = |h: &RegionHeader, b: &mut Bufs, publish: bool| {
        let words = region_for(&good);
        if publish {
            let r = Region::new(&words);
            r.write_bytes(4, &bytemuck::bytes_of(h)[4..]);
            r.store(0, h.magic, Release);
        }
        let e = Device::attach(&words, &mut b.storage, &mut b.page, &mut b.out).err();
        let state = Region::new(&words).load(ctrl::DEVICE_STATE, Relaxed);
        (e, state)
    };
    assert_eq!(
        attach(&good, &mut b, false),
        (Some(OffloadError::BadMagic), 3)
    );
    let cases: Vec<(RegionHeader, OffloadError)> = vec![
        (
            RegionHeader {
                version: OFFLOAD_VERSION + 1,
                ..good
            },
            OffloadError::UnsupportedVersion(2),
        ),
        (
            RegionHeader {
                region_len: good.region_len + 4,
                ..good
            },
            OffloadError::RegionTooSmall {
                needed: good.region_len as usize + 4,
                given: good.region_len as usize,
            },
        ),
        (
            RegionHeader {
                sq_entries: 3,
                ..good
            },
            OffloadError::BadLayout("sq_entries must be a power of two from 1 to 65536"),
        ),
        (
            RegionHeader {
                cq_offset: good.sq_offset,
                ..good
            },
            OffloadError::BadLayout("two areas overlap"),
        ),
        (
            RegionHeader {
                sq_offset: 512,
                ..good
            },
            OffloadError::BadLayout(
                "an area is misaligned, overlaps the control block or leaves the region",
            ),
        ),
        (
            RegionHeader {
                out_area_len: 4096,
                ..good
            },
            OffloadError::BadLayout(
                "out_area_len must hold two worst-case chunks (2 x Config::max_output_len)",
            ),
        ),
        (
            RegionHeader {
                page_size: 3000,
                ..good
            },
            OffloadError::Codec(Error::InvalidConfig(
                "page_size must be a power of two from 4096 to 65536",
            )),
        ),
        (
            RegionHeader {
                reserved: [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ..good
            },
            OffloadError::BadLayout("reserved header field set"),
        ),
    ];
    for (h, e) in cases {
        assert_eq!(attach(&h, &mut b, true), (Some(e), 3), "{h:?}");
    }
    // buffers too small for the configuration in the header
    let big = RegionParams::DEFAULT
        .header(
            &Config {
                cache_pages: 64,
                ..CFG
            },
            Features::ALL,
        )
        .unwrap();
    let words = region_for(&big);
    let _host = Host::create(&words, &big).unwrap();
    let e = Device::attach(&words, &mut b.storage, &mut b.page, &mut b.out).err();
    assert!(matches!(
        e,
        Some(OffloadError::Codec(Error::InsufficientStorage { .. }))
    ));
    const { assert!(CONTROL_LEN >= ctrl::STATS + 4 * layout::STATS_WORDS) };
}

#[test]
fn device_never_panics_on_random_descriptors() {
    let h = RegionParams {
        sq_entries: 8,
        ..RegionParams::DEFAULT
    }
    .header(&CFG, Features::ALL)
    .unwrap();
    let words = region_for(&h);
    let mut host = Host::create(&words, &h).unwrap();
    let mut b = Bufs::new(&CFG);
    let mut dev = Device::attach(&words, &mut b.storage, &mut b.page, &mut b.out).unwrap();
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut ok = 0;
    let mut seen = [false; 8];
    let mut i = 0u32;
    for _ in 0..20_000 {
        let r = next();
        // mostly plausible values, sometimes anything
        let d = SubmitDesc {
            pfn: if r & 1 == 0 { next() % 64 } else { next() },
            data_offset: if r & 2 == 0 {
                ((next() % 70) * 4096) as u32
            } else {
                next() as u32
            },
            data_len: if r & 4 == 0 {
                4096
            } else {
                (next() % 9000) as u32
            },
            flags: if r & 8 == 0 {
                1 << (next() % 4)
            } else {
                next() as u32
            },
            blob_tag: if r & 16 == 0 { 0 } else { next() as u32 },
            seq: if r & 32 == 0 { i } else { next() as u32 },
            reserved: if r & 64 == 0 { 0 } else { next() as u32 },
        };
        if d.flags == flags::FINISH {
            continue;
        }
        i += 1;
        assert!(host.submit_raw(d, true).unwrap());
        let p = dev.poll().unwrap();
        let mut sink = Vec::new();
        let mut done = Vec::new();
        drain(&mut host, &mut sink, &mut done);
        let c = done[0];
        assert!(matches!(p, Poll::Done { .. }));
        ok += usize::from(c.status == status::OK);
        seen[c.status as usize] = true;
    }
    assert!(ok > 20, "{ok} accepted");
    assert!(
        seen[..6].iter().all(|&s| s),
        "every status but ENCODER: {seen:?}"
    );
}

#[test]
fn two_threads_produce_the_same_stream() {
    let ops = ops(300, 3);
    let want = in_process(CFG, &ops);
    let params = RegionParams {
        sq_entries: 8,
        cq_entries: 8,
        page_slots: 4,
        out_area_len: 0,
    };
    let h = params.header(&CFG, Features::ALL).unwrap();
    let words = region_for(&h);
    let mut host = Host::create(&words, &h).unwrap();
    let wire = std::thread::scope(|s| {
        s.spawn(|| {
            let mut b = Bufs::new(&CFG);
            let mut dev = Device::attach(&words, &mut b.storage, &mut b.page, &mut b.out).unwrap();
            while dev.poll().unwrap() != Poll::Finished {
                std::thread::yield_now();
            }
        });
        let mut wire = Vec::new();
        let mut done = Vec::new();
        for op in &ops {
            loop {
                let ok = match op {
                    Op::Page(pfn, p) => host.submit_page(*pfn, p),
                    Op::Blob(t, d) => host.submit_blob(*t, d),
                    Op::EndIteration => host.submit_op(flags::END_ITERATION),
                    Op::Finish => host.submit_op(flags::FINISH),
                };
                if ok.unwrap() {
                    break;
                }
                drain(&mut host, &mut wire, &mut done);
                std::thread::yield_now();
            }
        }
        while host.outstanding() > 0 {
            drain(&mut host, &mut wire, &mut done);
            std::thread::yield_now();
        }
        wire
    });
    same(&wire, &want, "ring");
}

#[test]
fn host_rejects_what_a_broken_device_writes() {
    let h = RegionParams::DEFAULT.header(&CFG, Features::ALL).unwrap();
    let cases: [(Completion, u32, &str); 5] = [
        (
            Completion {
                seq: 1,
                ..Completion::default()
            },
            1,
            "out of order",
        ),
        (
            Completion {
                out_offset: h.out_area_len - 4,
                out_len: 8,
                out_end: 8,
                ..Completion::default()
            },
            1,
            "leaves the output area",
        ),
        (
            Completion {
                out_offset: 2,
                out_len: 8,
                out_end: 12,
                ..Completion::default()
            },
            1,
            "leaves the output area",
        ),
        (
            Completion {
                out_len: 8,
                out_end: 4,
                ..Completion::default()
            },
            1,
            "inconsistent",
        ),
        (Completion::default(), 2, "past what was submitted"),
    ];
    for (c, tail, why) in cases {
        let words = region_for(&h);
        let mut host = Host::create(&words, &h).unwrap();
        assert!(host.submit_op(flags::END_ITERATION).unwrap());
        let r = Region::new(&words);
        r.write_entry(h.cq_offset as usize, &c);
        r.store(ctrl::CQ_TAIL, tail, Release);
        let e = host.peek_completion().unwrap_err();
        assert!(format!("{e}").contains(why), "{c:?}: {e}");
    }
}
