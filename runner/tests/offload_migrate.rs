//! Live migration with `--encoder firmware`: the offload firmware encodes a real KVM
//! guest's migration, the destination verifies and resumes it, and the stream is the one
//! the in-process encoder writes for the same pages. A firmware crash mid-migration fails
//! the send and leaves the source running. Skipped (with the reason) where /dev/kvm cannot
//! be used or the firmware does not build.

mod common;

use std::os::unix::net::UnixStream;

use common::*;
use pagewire::policy::PolicyKind;
use pagewire::{
    Config, DecodeMode, Decoder, Destination, Encoder, Features, FRAME_HEADER_LEN, HEADER_LEN,
};
use pagewire_runner::encoders::{EncoderChoice, FirmwareOptions};
use pagewire_runner::migrate::{
    migrate_in, migrate_out, Codec, Compression, DestOptions, NoProgress, SourceOptions,
};
use pagewire_runner::vmm::Vmm;
use pagewire_runner::Workload;

/// What a decoder hands out, in order: exactly the calls an encoder got.
enum Event {
    Page(u64, Vec<u8>),
    IterationEnd,
    Blob(u32, Vec<u8>),
}

/// Records every event; pages go through one staging page (a cache-copy decoder's
/// destination without memory of its own).
struct Record(Vec<Event>, Vec<u8>);

impl Record {
    fn new(cfg: &Config) -> Self {
        Record(Vec::new(), vec![0; cfg.page_size as usize])
    }
}

impl Destination for Record {
    fn page_mut(&mut self, _pfn: u64) -> pagewire::Result<&mut [u8]> {
        Ok(&mut self.1)
    }
    fn page_done(&mut self, pfn: u64) {
        self.0.push(Event::Page(pfn, self.1.clone()));
    }
    fn iteration_end(&mut self, _iteration: u64) {
        self.0.push(Event::IterationEnd);
    }
    fn blob(&mut self, tag: u32, data: &[u8]) {
        self.0.push(Event::Blob(tag, data.to_vec()));
    }
}

/// The codec stream inside a recorded session: after the magic and the hello, up to the end
/// of the frame with the END record (the switchover's messages follow).
fn codec_stream(session: &[u8]) -> &[u8] {
    let len = u32::from_le_bytes(session[4..8].try_into().unwrap()) as usize;
    let stream = &session[8 + len..];
    let cfg = Config::from_header(stream).unwrap();
    let mut store = vec![0u8; cfg.decoder_storage_len()];
    let (mut dec, mut at) =
        Decoder::from_header(stream, DecodeMode::CacheCopy, &mut store).unwrap();
    while !dec.is_complete() {
        let n = dec.frame_len(&stream[at..at + FRAME_HEADER_LEN]).unwrap();
        dec.decode_frame(&stream[at..at + n], &mut Record::new(&cfg))
            .unwrap();
        at += n;
    }
    &stream[..at]
}

/// Decodes `stream`, encodes what it carried again with the in-process encoder, and returns
/// that stream and how many blob pieces it held.
fn reencode_in_process(stream: &[u8], features: Features) -> (Vec<u8>, usize) {
    let cfg = Config::from_header(stream).unwrap();
    let mut dstore = vec![0u8; cfg.decoder_storage_len()];
    let (mut dec, at) = Decoder::from_header(stream, DecodeMode::CacheCopy, &mut dstore).unwrap();
    let mut rec = Record::new(&cfg);
    assert_eq!(
        dec.decode(&stream[at..], &mut rec).unwrap(),
        stream.len() - at
    );
    assert!(dec.is_complete());

    let mut estore = vec![0u8; cfg.encoder_storage_len()];
    let mut enc = Encoder::new(cfg, &mut estore).unwrap();
    enc.set_features(features);
    let mut out = vec![0u8; cfg.max_output_len()];
    let mut again = Vec::new();
    let mut blobs = 0;
    for e in &rec.0 {
        let n = match e {
            Event::Page(pfn, data) => enc.encode_page(*pfn, data, &mut out).unwrap(),
            Event::IterationEnd => enc.end_iteration(&mut out).unwrap(),
            Event::Blob(tag, data) => {
                blobs += 1;
                enc.append_blob(*tag, data, &mut out).unwrap()
            }
        };
        again.extend_from_slice(&out[..n]);
    }
    let n = enc.finish(&mut out).unwrap();
    again.extend_from_slice(&out[..n]);
    (again, blobs)
}

fn firmware_choice(extra: &[&str]) -> Option<EncoderChoice> {
    let mut opts = FirmwareOptions::new(firmware()?);
    opts.extra_args = extra.iter().map(|s| s.to_string()).collect();
    Some(EncoderChoice::Firmware(opts))
}

#[test]
fn the_firmware_encodes_a_live_migration_and_writes_the_in_process_stream() {
    if !kvm_or_skip() {
        return;
    }
    let Some(encoder) = firmware_choice(&[]) else {
        return;
    };
    let mut vm = running_vm(64, 2, Workload::HotSet, 11);
    let (a, mut b) = UnixStream::pair().unwrap();
    let dest = std::thread::spawn(move || migrate_in(&mut b, &Vmm, &DestOptions::default()));
    let opts = SourceOptions {
        codec: Codec::On,
        policy: PolicyKind::SmartStop,
        label: "hot-set".into(),
        encoder,
        // LZ4 alone keeps the codec stream bare on the link (auto may wrap it in zstd chunks)
        compression: Compression::Lz4,
        ..SourceOptions::default()
    };
    let mut link = Tee {
        inner: a,
        sent: Vec::new(),
    };
    let report = migrate_out(&mut vm, &mut link, &opts, None, None, &mut NoProgress).unwrap();
    let arrived = dest.join().unwrap().unwrap();
    assert_eq!(report.encoder, "firmware");
    assert_eq!(arrived.reply.stream_bytes, report.stream_bytes);
    // the destination matched the memory digest at the pause and runs the guest on
    check_arrived(&arrived.vm, &rounds(&vm));
    let mut dst = arrived.vm;
    dst.pause().unwrap();

    let stream = codec_stream(&link.sent);
    assert_eq!(stream.len() as u64, report.stream_bytes);
    assert!(stream.len() >= HEADER_LEN);
    let (again, blobs) = reencode_in_process(stream, Features::ALL);
    // pause information plus two vCPU states of more than a page each
    assert!(blobs >= 5, "{blobs} blob pieces");
    assert!(
        again == stream,
        "the in-process encoder writes a different stream for the same pages ({} vs {} bytes)",
        again.len(),
        stream.len()
    );
}

#[test]
fn a_firmware_crash_fails_the_migration_and_the_source_keeps_running() {
    if !kvm_or_skip() {
        return;
    }
    // the first pass of 64 MiB is 16384 pages: crash in the middle of it
    let Some(encoder) = firmware_choice(&["--crash-after", "5000"]) else {
        return;
    };
    let mut vm = running_vm(64, 1, Workload::Database, 12);
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let dest = std::thread::spawn(move || migrate_in(&mut b, &Vmm, &DestOptions::default()));
    let opts = SourceOptions {
        encoder,
        ..SourceOptions::default()
    };
    let e = migrate_out(&mut vm, &mut a, &opts, None, None, &mut NoProgress).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("offload firmware crashed"), "{msg}");
    drop(a); // what `send` does on its way out: the link closes
    let Err(d) = dest.join().unwrap() else {
        panic!("the destination started a half-migrated VM");
    };
    let d = format!("{d:#}");
    assert!(d.contains("ended"), "the destination starts nothing: {d}");
    source_alive(&vm);
}

#[test]
fn demo_runs_with_the_firmware_encoder_and_send_refuses_fallback() {
    // refused before anything starts, KVM or not
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pagewire"))
        .args(["demo", "--encoder", "firmware", "--fallback"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--fallback is for replay"), "{err}");

    if !kvm_or_skip() {
        return;
    }
    let Some(fw) = firmware() else { return };
    let j = demo_json(&[
        "--encoder".as_ref(),
        "firmware".as_ref(),
        "--firmware".as_ref(),
        fw.as_os_str(),
    ]);
    assert_eq!(j["source"]["encoder"], "firmware");
    assert_eq!(j["destination"]["self_check_ok"], true);
}
