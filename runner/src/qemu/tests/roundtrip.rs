//! Parse -> emit -> parse gives the same events, on the samples and on random streams; the
//! emitter is deterministic, so emitting those events again gives the same bytes.

use super::build::{
    delta, device_tail, page_of, sample, sample_with_switchover_start, Raw, PAGE, RAM_ID,
};
use super::{parse, parse_chunked};
use crate::qemu::{Emitter, OwnedEvent, OwnedPageData, RamBlock, RamSection, StreamHeader};

fn emit(events: &[OwnedEvent]) -> Vec<u8> {
    let mut e = Emitter::new(Vec::new(), PAGE);
    for ev in events {
        e.event(&ev.as_event()).unwrap();
    }
    e.into_inner().unwrap()
}

fn round_trip(stream: &[u8]) -> Vec<u8> {
    let events = parse(stream).unwrap();
    let out = emit(&events);
    assert_eq!(parse(&out).unwrap(), events);
    assert_eq!(emit(&parse(&out).unwrap()), out);
    out
}

#[test]
fn samples_round_trip() {
    for (config, footers) in [(true, true), (false, false), (true, false), (false, true)] {
        let s = sample(config, footers);
        let out = round_trip(&s);
        // Same length: only which records use CONTINUE may differ.
        assert!(out.len() <= s.len() + 64, "{} vs {}", out.len(), s.len());
        assert!(out.ends_with(&device_tail()));
    }
}

#[test]
fn switchover_start_is_written_back_before_the_end_section() {
    let out = round_trip(&sample_with_switchover_start());
    let command_then_end = Raw::default().switchover_start().end(RAM_ID).0;
    assert!(out
        .windows(command_then_end.len())
        .any(|w| w == command_then_end));
    // and nowhere else: the emitter refuses it inside a section or after RAM's end
    let mut e = Emitter::new(Vec::new(), PAGE);
    assert!(e.switchover_start().is_err(), "before RAM's START section");
}

#[test]
fn the_emitter_names_the_block_at_each_sections_first_page() {
    // The sample's second PART starts with CONTINUE; the emitted one names the block.
    let s = sample(true, true);
    let out = round_trip(&s);
    let part = Raw::default()
        .part(RAM_ID)
        .page(0, Some("/rom@etc/acpi/tables"), &page_of(3))
        .0;
    assert!(out.windows(part.len()).any(|w| w == part));
    assert!(!s.windows(part.len()).any(|w| w == part));
}

#[test]
fn pages_outside_a_section_open_a_part_and_end_ram_closes_it() {
    let events = parse(&sample(true, true)).unwrap();
    let mut e = Emitter::new(Vec::new(), PAGE);
    // Header, START, blocks, its end; then pages alone, regrouped by the emitter.
    for ev in &events[..4] {
        e.event(&ev.as_event()).unwrap();
    }
    e.page(0, 0, crate::qemu::PageData::Raw(&page_of(7)))
        .unwrap();
    e.page(0, PAGE as u64, crate::qemu::PageData::Fill(0))
        .unwrap();
    e.end_ram().unwrap();
    e.device_state(&device_tail()).unwrap();
    let out = e.into_inner().unwrap();
    let got = parse(&out).unwrap();
    assert_eq!(
        got[4],
        OwnedEvent::SectionBegin(RamSection::Part { id: RAM_ID })
    );
    assert_eq!(got[7], OwnedEvent::SectionEnd { footer: true });
    assert_eq!(
        got[8],
        OwnedEvent::SectionBegin(RamSection::End { id: RAM_ID })
    );
    assert_eq!(got.len(), 11);
}

#[test]
fn the_emitter_refuses_events_out_of_place() {
    let mut e = Emitter::new(Vec::new(), PAGE);
    assert!(e.page(0, 0, crate::qemu::PageData::Fill(0)).is_err());
    assert!(e.end_section(true).is_err());
    e.begin(RamSection::Start {
        id: 1,
        instance_id: 0,
        version_id: 4,
    })
    .unwrap();
    e.blocks(&[RamBlock {
        name: b"pc.ram".to_vec(),
        length: PAGE as u64,
    }])
    .unwrap();
    assert!(e
        .page(0, PAGE as u64, crate::qemu::PageData::Fill(0))
        .is_err());
    assert!(e.page(1, 0, crate::qemu::PageData::Fill(0)).is_err());
    assert!(e.page(0, 0, crate::qemu::PageData::Raw(&[0; 10])).is_err());
    assert!(e.device_state(b"x").is_err());
}

/// A small xorshift generator: the tests need no crate for this.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random valid events: a random block list, sections of random pages of every kind, an
/// END section (after QEMU 10's SWITCHOVER_START half the time), random device bytes.
fn random_events(rng: &mut Rng) -> Vec<OwnedEvent> {
    let footer = rng.below(2) == 0;
    let raw = if rng.below(2) == 0 {
        Raw::header("pc-q35-7.2").0
    } else {
        Raw::magic().0
    };
    let header = StreamHeader {
        machine_type: (raw.len() > 8).then(|| b"pc-q35-7.2".to_vec()),
        raw,
        ..StreamHeader::default()
    };
    let blocks: Vec<RamBlock> = (0..1 + rng.below(5))
        .map(|i| RamBlock {
            name: format!("block-{i}-{}", "x".repeat(rng.below(200) as usize)).into_bytes(),
            length: (1 + rng.below(6)) * PAGE as u64,
        })
        .collect();
    let id = rng.below(1000) as u32;
    let mut ev = vec![
        OwnedEvent::Header(header),
        OwnedEvent::SectionBegin(RamSection::Start {
            id,
            instance_id: rng.below(3) as u32,
            version_id: 4,
        }),
        OwnedEvent::RamBlocks(blocks.clone()),
        OwnedEvent::SectionEnd { footer },
    ];
    let sections = rng.below(5);
    for s in 0..=sections {
        if s == sections && rng.below(2) == 0 {
            ev.push(OwnedEvent::SwitchoverStart);
        }
        ev.push(OwnedEvent::SectionBegin(if s == sections {
            RamSection::End { id }
        } else {
            RamSection::Part { id }
        }));
        for _ in 0..rng.below(8) {
            let block = rng.below(blocks.len() as u64) as usize;
            let offset = rng.below(blocks[block].length / PAGE as u64) * PAGE as u64;
            let data = match rng.below(3) {
                0 => OwnedPageData::Raw(page_of(rng.next() as u8)),
                1 => OwnedPageData::Fill(rng.next() as u8),
                _ => OwnedPageData::Xbzrle(delta(rng.next() as u8, rng.next() as u8)),
            };
            ev.push(OwnedEvent::Page {
                block,
                offset,
                data,
            });
        }
        ev.push(OwnedEvent::SectionEnd { footer });
    }
    let tail: Vec<u8> = (0..1 + rng.below(300)).map(|_| rng.next() as u8).collect();
    let mut tail = tail;
    tail[0] = if rng.below(2) == 0 { 0x04 } else { 0x00 };
    ev.push(OwnedEvent::DeviceState(tail));
    ev
}

#[test]
fn random_streams_round_trip_in_any_pieces() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..300 {
        let events = random_events(&mut rng);
        let bytes = emit(&events);
        let chunk = 1 + rng.below(3000) as usize;
        assert_eq!(parse_chunked(&bytes, chunk).unwrap(), events);
        assert_eq!(emit(&parse(&bytes).unwrap()), bytes);
    }
}

/// Writes the fuzz target's seeds (`fuzz/seeds/qemu_stream/`), each a piece-size byte and
/// a stream: `cargo test -p pagewire-runner write_qemu_stream_fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes files into fuzz/seeds"]
fn write_qemu_stream_fuzz_seeds() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/qemu_stream");
    std::fs::create_dir_all(&dir).unwrap();
    let seed = |piece: u8, stream: Vec<u8>| [vec![piece], stream].concat();
    std::fs::write(dir.join("sample-footers"), seed(5, sample(true, true))).unwrap();
    let qemu10 = seed(3, sample_with_switchover_start());
    std::fs::write(dir.join("sample-switchover-start"), qemu10).unwrap();
    let bare = seed(2, sample(false, false));
    std::fs::write(dir.join("sample-no-config-no-footers"), bare).unwrap();
    let mut rng = Rng(7);
    let random = seed(0, emit(&random_events(&mut rng)));
    std::fs::write(dir.join("random"), random).unwrap();
}
