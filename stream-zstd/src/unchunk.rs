//! The destination's side as a push state machine: the caller hands in whatever bytes the
//! link gave and a buffer for the stream, and learns how much of each was used. It never
//! takes a byte past the end chunk, and its memory does not grow with what it is fed: a
//! chunk that decompresses a thousandfold comes out a buffer at a time (zstd's window, at
//! most 128 MiB by zstd's default limit, is the only other memory).

use std::io;

use zstd::stream::raw::{Decoder, Operation};

use crate::{damaged, MAX_CHUNK, STORED};

/// Where the machine is in the chunk sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk's length word: the bytes so far.
    Word { bytes: [u8; 4], have: usize },
    /// Inside a stored chunk: bytes of it still to come.
    Stored { left: usize },
    /// Inside a zstd chunk: bytes of it still to come.
    Compressed { left: usize },
    /// The end chunk was read.
    Ended,
}

/// What one [`Unchunker::feed`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Link bytes taken from the front of the input.
    pub consumed: usize,
    /// Stream bytes written to the front of the output.
    pub produced: usize,
    /// The end chunk was read and every stream byte before it handed out: nothing more
    /// will come, and link bytes after it were not taken.
    pub ended: bool,
}

/// Link bytes in, stream bytes out (see the crate's *Format*).
pub struct Unchunker {
    z: Decoder<'static>,
    state: State,
    /// zstd filled the last output buffer, so it may hold more output already.
    may_hold_output: bool,
}

impl Unchunker {
    /// A machine at the start of a stream.
    pub fn new() -> io::Result<Self> {
        Ok(Unchunker {
            z: Decoder::new()?,
            state: State::Word {
                bytes: [0; 4],
                have: 0,
            },
            may_hold_output: false,
        })
    }

    /// At most this many link bytes can be taken now without reading past the current
    /// chunk (0 at the end): a reader that must not take bytes after the end chunk off its
    /// link reads no more than this before the next [`Unchunker::feed`].
    pub fn wants(&self) -> usize {
        match self.state {
            State::Word { have, .. } => 4 - have,
            State::Stored { left } | State::Compressed { left } => left,
            State::Ended => 0,
        }
    }

    /// Whether the machine stands between chunks (no chunk begun or half read): where a
    /// link may end without cutting one.
    pub fn between_chunks(&self) -> bool {
        matches!(self.state, State::Word { have: 0, .. }) && !self.may_hold_output
    }

    /// Takes link bytes from `link` and writes stream bytes to `out` until one of them is
    /// used up or the end chunk is reached. An error (kind `InvalidData`) means a damaged
    /// stream; the machine must not be fed again after one.
    pub fn feed(&mut self, link: &[u8], out: &mut [u8]) -> io::Result<Progress> {
        let mut p = Progress::default();
        loop {
            let room = out.len() - p.produced;
            if self.may_hold_output {
                if room == 0 {
                    return Ok(p);
                }
                let s = self.z.run_on_buffers(&[], &mut out[p.produced..])?;
                p.produced += s.bytes_written;
                self.may_hold_output = s.bytes_written == room;
                continue;
            }
            let input = &link[p.consumed..];
            match &mut self.state {
                State::Ended => {
                    p.ended = true;
                    return Ok(p);
                }
                State::Word { bytes, have } => {
                    if input.is_empty() {
                        return Ok(p);
                    }
                    let n = input.len().min(4 - *have);
                    bytes[*have..*have + n].copy_from_slice(&input[..n]);
                    *have += n;
                    p.consumed += n;
                    if *have == 4 {
                        self.state = next_state(u32::from_le_bytes(*bytes))?;
                    }
                }
                State::Stored { left } => {
                    let n = input.len().min(*left).min(room);
                    if n == 0 {
                        return Ok(p);
                    }
                    out[p.produced..p.produced + n].copy_from_slice(&input[..n]);
                    p.consumed += n;
                    p.produced += n;
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Word {
                            bytes: [0; 4],
                            have: 0,
                        };
                    }
                }
                State::Compressed { left } => {
                    let take = input.len().min(*left);
                    // zstd is given no input without room for its output, so that
                    // nothing decoded is ever held back unannounced
                    if take == 0 || room == 0 {
                        return Ok(p);
                    }
                    let s = self
                        .z
                        .run_on_buffers(&input[..take], &mut out[p.produced..])
                        .map_err(|e| damaged(format!("damaged compressed stream: {e}")))?;
                    p.consumed += s.bytes_read;
                    p.produced += s.bytes_written;
                    *left -= s.bytes_read;
                    self.may_hold_output = s.bytes_written == room;
                    if *left == 0 {
                        self.state = State::Word {
                            bytes: [0; 4],
                            have: 0,
                        };
                    } else if s.bytes_read == 0 && s.bytes_written == 0 {
                        return Err(damaged(
                            "zstd stopped inside a compressed chunk: damaged stream",
                        ));
                    }
                }
            }
        }
    }
}

/// The state a chunk's length word leads to.
fn next_state(word: u32) -> io::Result<State> {
    let len = (word & !STORED) as usize;
    if word == 0 {
        return Ok(State::Ended);
    }
    if len == 0 {
        return Err(damaged("an empty stored chunk: damaged stream"));
    }
    if len > MAX_CHUNK {
        return Err(damaged(format!(
            "a compressed chunk of {len} bytes, over the limit of {MAX_CHUNK}: damaged stream"
        )));
    }
    Ok(if word & STORED != 0 {
        State::Stored { left: len }
    } else {
        State::Compressed { left: len }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{sample, ZstdOut};

    /// Feeds `link` in pieces of `feed` bytes with an output buffer of `out` bytes, as a C
    /// caller does; returns the stream and how many link bytes were taken.
    fn drive(link: &[u8], feed: usize, out: usize) -> io::Result<(Vec<u8>, usize)> {
        let mut un = Unchunker::new()?;
        let mut stream = Vec::new();
        let mut buf = vec![0u8; out];
        let mut at = 0;
        loop {
            let end = (at + feed).min(link.len());
            let p = un.feed(&link[at..end], &mut buf)?;
            at += p.consumed;
            stream.extend_from_slice(&buf[..p.produced]);
            if p.ended {
                return Ok((stream, at));
            }
            if p.consumed == 0 && p.produced == 0 && at == link.len() {
                return Ok((stream, at));
            }
        }
    }

    #[test]
    fn any_split_of_input_and_output_gives_the_stream_and_stops_at_the_end() {
        let data = sample(700_000);
        let mut link = Vec::new();
        let mut z = ZstdOut::new(Some(3)).unwrap();
        for (i, piece) in data.chunks(50_000).enumerate() {
            z.set_level(&mut link, [Some(3), None, Some(-1)][i % 3])
                .unwrap();
            z.write(&mut link, piece).unwrap();
            if i % 2 == 0 {
                z.flush(&mut link).unwrap();
            }
        }
        z.finish(&mut link).unwrap();
        let end = link.len();
        link.extend_from_slice(b"NEXT MESSAGE");
        for (feed, out) in [(1, 1), (3, 7), (4096, 1), (1, 65536), (1 << 20, 1 << 20)] {
            let (stream, taken) = drive(&link, feed, out).unwrap();
            assert!(stream == data, "feed {feed} out {out}");
            assert_eq!(taken, end, "feed {feed} out {out}: took bytes past the end");
        }
    }

    #[test]
    fn wants_never_reaches_past_the_current_chunk() {
        let mut link = Vec::new();
        let mut z = ZstdOut::new(None).unwrap();
        z.write(&mut link, b"abc").unwrap();
        z.finish(&mut link).unwrap();
        let mut un = Unchunker::new().unwrap();
        assert!(un.between_chunks());
        assert_eq!(un.wants(), 4);
        let mut out = [0u8; 8];
        let p = un.feed(&link[..2], &mut out).unwrap();
        assert_eq!((p.consumed, un.wants(), un.between_chunks()), (2, 2, false));
        let p = un.feed(&link[2..], &mut out).unwrap();
        assert_eq!((p.consumed, p.produced, p.ended), (2 + 3 + 4, 3, true));
        assert_eq!(un.wants(), 0);
        assert_eq!(&out[..3], b"abc");
    }

    #[test]
    fn damage_is_an_error_with_its_name() {
        let mut out = [0u8; 64];
        let e = Unchunker::new()
            .unwrap()
            .feed(&STORED.to_le_bytes(), &mut out)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("empty stored chunk"), "{e}");
        let e = Unchunker::new()
            .unwrap()
            .feed(&(MAX_CHUNK as u32 + 1).to_le_bytes(), &mut out)
            .unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
        // a zstd chunk of garbage
        let mut bad = 8u32.to_le_bytes().to_vec();
        bad.extend_from_slice(&[0xAB; 8]);
        let e = Unchunker::new().unwrap().feed(&bad, &mut out).unwrap_err();
        assert!(e.to_string().contains("damaged compressed stream"), "{e}");
    }
}
