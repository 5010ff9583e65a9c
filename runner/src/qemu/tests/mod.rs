//! Unit tests on hand-built streams: `build.rs` writes them byte by byte (independently of
//! the emitter), `parse.rs` checks the events and chunking, `refuse.rs` every refusal,
//! `roundtrip.rs` parse -> emit -> parse on the hand-built and on random streams.

pub(crate) mod build;
mod parse;
mod refuse;
mod roundtrip;

use super::{join_device_state, OwnedEvent, Parser, StreamError};

/// Parses `bytes` fed in pieces of `chunk` bytes; the events with device state joined.
fn parse_chunked(bytes: &[u8], chunk: usize) -> Result<Vec<OwnedEvent>, StreamError> {
    let mut parser = Parser::new();
    let mut events = Vec::new();
    for piece in bytes.chunks(chunk.max(1)) {
        parser
            .feed(piece, |e| {
                events.push(e.to_owned_event());
                Ok::<(), ()>(())
            })
            .map_err(|e| match e {
                super::FeedError::Stream(s) => s,
                super::FeedError::Sink(()) => unreachable!("the sink never fails"),
            })?;
    }
    parser.finish()?;
    Ok(join_device_state(events))
}

fn parse(bytes: &[u8]) -> Result<Vec<OwnedEvent>, StreamError> {
    parse_chunked(bytes, bytes.len())
}
