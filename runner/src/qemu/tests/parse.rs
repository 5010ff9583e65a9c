//! The events of the hand-built samples, whatever the pieces they arrive in.

use super::build::{
    delta, device_tail, page_of, sample, sample_with_switchover_start, Raw, BLOCKS, PAGE, RAM_ID,
};
use super::{parse, parse_chunked};
use crate::qemu::{
    Event, FeedError, OwnedEvent, OwnedPageData, Parser, RamBlock, RamSection, StreamError,
};

fn page(block: usize, offset: usize, data: OwnedPageData) -> OwnedEvent {
    OwnedEvent::Page {
        block,
        offset: offset as u64,
        data,
    }
}

#[test]
fn the_sample_gives_its_events_in_order() {
    let events = parse(&sample(true, true)).unwrap();
    let OwnedEvent::Header(h) = &events[0] else {
        panic!("first event {:?}", events[0]);
    };
    assert_eq!(h.machine_type.as_deref(), Some(&b"pc-i440fx-7.2"[..]));
    assert_eq!(h.raw, Raw::header("pc-i440fx-7.2").0);
    let blocks: Vec<RamBlock> = BLOCKS
        .iter()
        .map(|(n, l)| RamBlock {
            name: n.as_bytes().to_vec(),
            length: *l,
        })
        .collect();
    let end = OwnedEvent::SectionEnd { footer: true };
    let part = OwnedEvent::SectionBegin(RamSection::Part { id: RAM_ID });
    let expected = vec![
        events[0].clone(),
        OwnedEvent::SectionBegin(RamSection::Start {
            id: RAM_ID,
            instance_id: 0,
            version_id: 4,
        }),
        OwnedEvent::RamBlocks(blocks),
        end.clone(),
        part.clone(),
        page(0, 0, OwnedPageData::Raw(page_of(1))),
        page(0, PAGE, OwnedPageData::Fill(0)),
        page(1, 0, OwnedPageData::Raw(page_of(2))),
        end.clone(),
        part,
        page(1, 0, OwnedPageData::Raw(page_of(3))),
        page(0, 0, OwnedPageData::Xbzrle(delta(1, 9))),
        page(0, 3 * PAGE, OwnedPageData::Raw(page_of(4))),
        end.clone(),
        OwnedEvent::SectionBegin(RamSection::End { id: RAM_ID }),
        page(0, 2 * PAGE, OwnedPageData::Raw(page_of(5))),
        end,
        OwnedEvent::DeviceState(device_tail()),
    ];
    assert_eq!(events, expected);
}

#[test]
fn any_piece_size_gives_the_same_events() {
    for (config, footers) in [(true, true), (false, false), (true, false)] {
        let s = sample(config, footers);
        let whole = parse(&s).unwrap();
        for chunk in (1..=40).chain([511, 4095, 4096, 4097, 9000]) {
            assert_eq!(
                parse_chunked(&s, chunk).unwrap(),
                whole,
                "pieces of {chunk}"
            );
        }
    }
}

#[test]
fn without_footers_section_ends_say_so() {
    let events = parse(&sample(false, false)).unwrap();
    assert!(events.contains(&OwnedEvent::SectionEnd { footer: false }));
    assert!(!events.contains(&OwnedEvent::SectionEnd { footer: true }));
    let OwnedEvent::Header(h) = &events[0] else {
        panic!()
    };
    assert_eq!(h.machine_type, None);
}

#[test]
fn configuration_subsections_are_read_and_kept() {
    let uuid = [7u8; 16];
    let s = Raw::header("virt-7.2")
        .subsection("configuration/target-page-bits")
        .be32(12)
        .subsection("configuration/uuid")
        .bytes(&uuid);
    let header_len = s.0.len();
    let s = s
        .start(RAM_ID, 4)
        .blocks(BLOCKS)
        .eos(RAM_ID, true)
        .end(RAM_ID)
        .eos(RAM_ID, true)
        .bytes(&device_tail());
    let events = parse(&s.0).unwrap();
    let OwnedEvent::Header(h) = &events[0] else {
        panic!()
    };
    assert_eq!(h.target_page_bits, Some(12));
    assert_eq!(h.uuid, Some(uuid));
    assert_eq!(h.raw, s.0[..header_len]);
}

#[test]
fn every_prefix_is_truncated_or_in_device_state_and_its_events_a_prefix() {
    let s = sample(true, true);
    let full = parse(&s).unwrap();
    let tail_at = s.len() - device_tail().len();
    for cut in 0..s.len() {
        let mut parser = Parser::new();
        let mut events = Vec::new();
        parser
            .feed(&s[..cut], |e| {
                events.push(e.to_owned_event());
                Ok::<(), ()>(())
            })
            .unwrap();
        let events = crate::qemu::join_device_state(events);
        if cut > tail_at {
            parser.finish().unwrap();
        } else {
            assert!(
                matches!(parser.finish(), Err(StreamError::Truncated { .. })),
                "cut at {cut}: {:?}",
                parser.finish()
            );
        }
        let n = events.len();
        if let (Some(OwnedEvent::DeviceState(part)), OwnedEvent::DeviceState(all)) =
            (events.last(), &full[n.max(1) - 1])
        {
            assert!(all.starts_with(part));
            assert_eq!(events[..n - 1], full[..n - 1]);
        } else {
            assert_eq!(events[..], full[..n], "cut at {cut}");
        }
    }
}

#[test]
fn a_sink_error_stops_the_parser() {
    let s = sample(true, true);
    let mut parser = Parser::new();
    let mut seen = 0;
    let r = parser.feed(&s, |e| {
        seen += 1;
        if matches!(e, Event::Page { .. }) {
            Err("full")
        } else {
            Ok(())
        }
    });
    assert!(matches!(r, Err(FeedError::Sink("full"))));
    assert_eq!(seen, 6, "header, START, blocks, end, PART, first page");
    let again = parser.feed(&s, |_| Ok::<(), ()>(()));
    assert!(matches!(
        again,
        Err(FeedError::Stream(StreamError::Abandoned))
    ));
}

#[test]
fn a_stream_that_is_only_device_state_after_ram_is_carried_in_one_piece() {
    let tail = vec![0x04u8; 1 << 20];
    let s = Raw::header("pc")
        .start(RAM_ID, 4)
        .blocks(BLOCKS)
        .eos(RAM_ID, true)
        .end(RAM_ID)
        .eos(RAM_ID, true)
        .bytes(&tail);
    let mut parser = Parser::new();
    let mut pieces = Vec::new();
    parser
        .feed(&s.0, |e| {
            if let Event::DeviceState(d) = e {
                pieces.push(d.len());
            }
            Ok::<(), ()>(())
        })
        .unwrap();
    // The type byte, then the rest straight from the input: nothing gathered.
    assert_eq!(pieces, vec![1, tail.len() - 1]);
    assert!(parser.in_device_state());
}

/// A real QEMU 7.2 stream of the test guest, cut to its START section, six pages, an empty
/// END section and its whole device state (the fuzz seed `qemu-7.2-cut`, after its
/// piece-size byte): the parser reads real bytes even where QEMU is not installed.
#[test]
fn a_cut_real_qemu_7_2_stream_parses() {
    let seed = include_bytes!("../../../../fuzz/seeds/qemu_stream/qemu-7.2-cut");
    let events = parse(&seed[1..]).unwrap();
    let OwnedEvent::Header(h) = &events[0] else {
        panic!()
    };
    assert_eq!(h.machine_type.as_deref(), Some(&b"pc-i440fx-7.2"[..]));
    let OwnedEvent::RamBlocks(blocks) = &events[2] else {
        panic!("{:?}", events[2])
    };
    let names: Vec<String> = blocks.iter().map(RamBlock::name_lossy).collect();
    assert_eq!(
        names,
        [
            "pc.ram",
            "/rom@etc/acpi/tables",
            "pc.bios",
            "pc.rom",
            "/rom@etc/table-loader",
            "/rom@etc/acpi/rsdp"
        ]
    );
    assert_eq!(blocks[0].length, 128 << 20);
    let pages = events
        .iter()
        .filter(|e| matches!(e, OwnedEvent::Page { .. }))
        .count();
    assert_eq!(pages, 6);
    let Some(OwnedEvent::DeviceState(tail)) = events.last() else {
        panic!()
    };
    assert_eq!(tail[0], 0x04);
    assert!(tail.windows(10).any(|w| w == br#""devices":"#));
}

#[test]
fn qemu_10s_switchover_start_is_an_event_in_its_place() {
    let plain = parse(&sample(true, true)).unwrap();
    let with = parse(&sample_with_switchover_start()).unwrap();
    let end = plain
        .iter()
        .position(|e| matches!(e, OwnedEvent::SectionBegin(RamSection::End { .. })))
        .unwrap();
    let mut expected = plain.clone();
    expected.insert(end, OwnedEvent::SwitchoverStart);
    assert_eq!(with, expected);
    for chunk in [1, 3, 4096] {
        assert_eq!(
            parse_chunked(&sample_with_switchover_start(), chunk).unwrap(),
            expected
        );
    }
}
