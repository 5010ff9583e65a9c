//! In-process migration of a real KVM guest over a local socket pair: the destination's
//! memory digest equals the source's at the pause, the guest carries on and passes its
//! self-check there. Skipped (with the reason) where /dev/kvm cannot be used.

mod common;

use std::os::unix::net::UnixStream;

use common::*;
use pagewire::policy::PolicyKind;
use pagewire::DecodeMode;
use pagewire_runner::migrate::session::{read_message, DestMessage, Reply};
use pagewire_runner::migrate::{
    migrate_in, migrate_out, Codec, Compression, DestOptions, MigrationReport, NoProgress,
    SourceOptions,
};
use pagewire_runner::vmm::Vmm;
use pagewire_runner::Workload;

fn migrate(
    w: Workload,
    vcpus: usize,
    codec: Codec,
    policy: PolicyKind,
    compression: Compression,
) -> MigrationReport {
    let mut vm = running_vm(64, vcpus, w, 3);
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let dest = std::thread::spawn(move || migrate_in(&mut b, &Vmm, &DestOptions::default()));
    let opts = SourceOptions {
        codec,
        policy,
        compression,
        label: w.name().into(),
        ..SourceOptions::default()
    };
    let report = migrate_out(&mut vm, &mut a, &opts, None, None, &mut NoProgress).unwrap();
    let arrived = dest.join().unwrap().unwrap();
    // the source stays paused: its copy is the one that stopped
    assert!(!vm.is_running());
    assert_eq!(arrived.vm.memory().len(), 64 * MIB);
    assert!(report.iterations >= 1);
    assert_eq!(report.rows.len() as u32, report.iterations + 1);
    assert_eq!(report.rows[0].pages_sent, (64 * MIB / 4096) as u64);
    assert!(report.downtime_s > 0.0 && report.downtime_s < report.total_s);
    assert_eq!(arrived.reply.stream_bytes, report.stream_bytes);
    // our VMM hands its memory to the decoder: no copy of the cache at the destination
    assert_eq!(arrived.decoding.mode, DecodeMode::InPlace);
    assert!(
        arrived.decoding.storage_bytes < MIB,
        "{:?}",
        arrived.decoding
    );
    check_arrived(&arrived.vm, &rounds(&vm));
    let mut dst = arrived.vm;
    dst.pause().unwrap();
    report
}

#[test]
fn hot_set_guest_migrates_over_a_socket_pair() {
    if !kvm_or_skip() {
        return;
    }
    let r = migrate(
        Workload::HotSet,
        1,
        Codec::On,
        PolicyKind::SmartStop,
        Compression::Auto,
    );
    // the stream and the session's messages, unless `auto` chose zstd somewhere
    let zstd_pages: u64 = r.rows.iter().map(|row| row.zstd_pages).sum();
    assert_eq!(zstd_pages == 0, r.wire_bytes > r.stream_bytes, "{r:?}");
}

#[test]
fn two_vcpu_database_guest_migrates_without_the_codec_under_xen_classic() {
    if !kvm_or_skip() {
        return;
    }
    migrate(
        Workload::Database,
        2,
        Codec::Off,
        PolicyKind::XenClassic,
        Compression::Auto,
    );
}

#[test]
fn database_guest_migrates_through_zstd_with_fewer_bytes_on_the_link() {
    if !kvm_or_skip() {
        return;
    }
    let r = migrate(
        Workload::Database,
        1,
        Codec::On,
        PolicyKind::SmartStop,
        Compression::Zstd { level: 3 },
    );
    assert_eq!(r.compression, "zstd:3");
    // the destination decoded every stream byte (checked in `migrate`) from fewer link bytes
    assert!(
        r.wire_bytes < r.stream_bytes,
        "{} link bytes for {} stream bytes",
        r.wire_bytes,
        r.stream_bytes
    );
}

#[test]
fn hot_set_guest_migrates_as_plain_pages_read_straight_into_their_frames() {
    if !kvm_or_skip() {
        return;
    }
    let r = migrate(
        Workload::HotSet,
        1,
        Codec::On,
        PolicyKind::SmartStop,
        Compression::Plain,
    );
    assert_eq!(r.compression, "plain");
    // every page of every iteration and of the stop-and-copy went whole, none compressed
    for row in &r.rows {
        assert_eq!(row.plain_pages, row.pages_sent, "{row:?}");
        assert_eq!(row.lz4_pages + row.zstd_pages, 0, "{row:?}");
    }
}

/// A link that plays back a recorded stream and swallows the reply.
struct Playback {
    input: std::io::Cursor<Vec<u8>>,
    replies: Vec<u8>,
}

impl std::io::Read for Playback {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(b)
    }
}

/// A recording never makes anyone wait.
impl pagewire_runner::net::Link for Playback {
    fn set_waits(&mut self, _: pagewire_runner::net::Waits) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::io::Write for Playback {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.replies.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Records a whole migration session of a small idle guest (migrated for real): what the
/// source sent, and where its codec stream ends (the switchover's messages follow).
fn recorded_stream() -> (Vec<u8>, usize) {
    let mut vm = running_vm(16, 1, Workload::Idle, 5);
    let (a, mut b) = UnixStream::pair().unwrap();
    let dest = std::thread::spawn(move || {
        migrate_in(&mut b, &Vmm, &DestOptions::default()).map(|mut a| a.vm.pause().unwrap())
    });
    let mut tee = Tee {
        inner: a,
        sent: Vec::new(),
    };
    // LZ4 fixed: the codec stream then follows the hello as it is, byte for byte (`auto`
    // would put it in chunks, whose damage `pagewire_stream_zstd`'s tests and fuzz target cover)
    let opts = SourceOptions {
        compression: Compression::Lz4,
        ..SourceOptions::default()
    };
    let report = migrate_out(&mut vm, &mut tee, &opts, None, None, &mut NoProgress).unwrap();
    dest.join().unwrap().unwrap();
    let hello_len = u32::from_le_bytes(tee.sent[4..8].try_into().unwrap()) as usize;
    let stream_end = 8 + hello_len + report.stream_bytes as usize;
    (tee.sent, stream_end)
}

fn play(stream: Vec<u8>) -> (anyhow::Result<()>, Vec<u8>) {
    let mut p = Playback {
        input: std::io::Cursor::new(stream),
        replies: Vec::new(),
    };
    let r = migrate_in(&mut p, &Vmm, &DestOptions::default()).map(|mut a| {
        a.vm.pause().unwrap();
    });
    (r, p.replies)
}

/// The final reply among the destination's messages (acknowledgements and ready come
/// first).
fn last_reply(mut bytes: &[u8]) -> Reply {
    loop {
        match read_message(&mut bytes).unwrap() {
            DestMessage::Ack(_) | DestMessage::Ready => continue,
            DestMessage::Reply(r) => return r,
        }
    }
}

#[test]
fn destination_refuses_truncated_or_damaged_streams_and_never_starts_the_vm() {
    if !kvm_or_skip() {
        return;
    }
    let (stream, stream_end) = recorded_stream();
    // the intact recording arrives and runs
    let (ok, replies) = play(stream.clone());
    ok.unwrap();
    assert!(last_reply(&replies).ok);

    // cut before the END record: refused, and the source is told why
    let (r, replies) = play(stream[..stream_end - 10].to_vec());
    let e = format!("{:#}", r.unwrap_err());
    assert!(e.contains("ended"), "{e}");
    let reply = last_reply(&replies);
    assert!(!reply.ok && reply.error.unwrap().contains("ended"));

    // one flipped bit in the middle of the pages: the frame CRC catches it
    let mut bad = stream.clone();
    let at = stream_end / 2;
    bad[at] ^= 0x10;
    let e = format!("{:#}", play(bad).0.unwrap_err());
    assert!(
        e.contains("frame") || e.contains("CRC") || e.contains("crc"),
        "{e}"
    );
}

#[test]
fn automatic_compression_follows_its_rule_on_the_measured_windows() {
    if !kvm_or_skip() {
        return;
    }
    // unshaped socket: much of the first pass is spent in the encoder
    let mut vm = running_vm(128, 1, Workload::Database, 22);
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let dest = std::thread::spawn(move || migrate_in(&mut b, &Vmm, &DestOptions::default()));
    let opts = SourceOptions::default();
    assert_eq!(opts.compression, Compression::Auto);
    let report = migrate_out(&mut vm, &mut a, &opts, None, None, &mut NoProgress).unwrap();
    let mut arrived = dest.join().unwrap().unwrap();
    check_arrived(&arrived.vm, &rounds(&vm));
    arrived.vm.pause().unwrap();
    assert_eq!(report.compression, "auto");
    assert_follows_auto(&report);
}
