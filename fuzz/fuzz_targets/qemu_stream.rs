//! Arbitrary bytes as a QEMU migration stream (`runner/src/qemu/`), fed in pieces of
//! arbitrary sizes: events or a named error, never a panic; the same events and the same
//! error whatever the pieces; every page inside its block and of the right size; and a
//! stream that parses, re-emitted, parses to the same events.
//!
//! The parser's files depend on `std` and the codec alone, so they are compiled here as
//! they are, without the runner's dependencies.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../runner/src/qemu/mod.rs"]
mod qemu;

use libfuzzer_sys::fuzz_target;
use qemu::{join_device_state, Emitter, Event, OwnedEvent, PageData, Parser, StreamError};

/// Parses `bytes` in pieces whose sizes come from `seed` (0: one piece).
fn parse(bytes: &[u8], seed: u8) -> (Vec<OwnedEvent>, Result<(), StreamError>) {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    let mut x = u32::from(seed) | 1;
    let mut rest = bytes;
    let mut blocks = Vec::new();
    while !rest.is_empty() {
        let n = if seed == 0 {
            rest.len()
        } else {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            1 + (x as usize % [3, 17, 300, 5000][usize::from(seed % 4)]).min(rest.len() - 1)
        };
        let (piece, more) = rest.split_at(n.min(rest.len()));
        rest = more;
        let fed = parser.feed(piece, |e| {
            if let Event::RamBlocks(list) = e {
                blocks = list.to_vec();
            }
            if let Event::Page {
                block,
                offset,
                data,
            } = e
            {
                let b: &qemu::RamBlock = &blocks[block];
                assert!(offset < b.length && offset % 4096 == 0);
                match data {
                    PageData::Raw(p) => assert_eq!(p.len(), 4096),
                    PageData::Xbzrle(x) => assert!(x.len() <= 4096),
                    PageData::Fill(_) => {}
                }
            }
            events.push(e.to_owned_event());
            Ok::<(), ()>(())
        });
        match fed {
            Ok(()) => {}
            Err(qemu::FeedError::Stream(e)) => return (join_device_state(events), Err(e)),
            Err(qemu::FeedError::Sink(())) => unreachable!("the sink never fails"),
        }
    }
    let end = parser.finish();
    (join_device_state(events), end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = parse(stream, 0);
    let pieces = parse(stream, seed);
    assert_eq!(whole, pieces, "the pieces changed the result");
    let (events, Ok(())) = whole else {
        return;
    };
    let mut emitter = Emitter::new(Vec::new(), 4096);
    for e in &events {
        emitter
            .event(&e.as_event())
            .expect("the emitter takes parsed events");
    }
    let again = emitter.into_inner().expect("a Vec never fails");
    let (events_again, end) = parse(&again, seed);
    assert_eq!(end, Ok(()));
    assert_eq!(
        events_again, events,
        "parse -> emit -> parse changed the events"
    );
});
