//! Arbitrary bytes as an NBD client's side of a session with the disk tunnel's NBD server
//! (`runner/src/nbd/`): every option and request it sends is answered or ends the session
//! with an error, never a panic, and no request reaches past the export (the in-memory
//! export would panic on an access outside it).
//!
//! The protocol's files depend on `std` and `anyhow` alone, so they are compiled here as
//! they are, without the runner's dependencies.
#![no_main]

#[allow(dead_code, unused_imports)]
#[path = "../../runner/src/nbd/mod.rs"]
mod nbd;

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use nbd::{serve, MemoryTarget};

/// The client's bytes to read; what the server writes is counted and dropped.
struct Session<'a> {
    input: &'a [u8],
    written: usize,
}

impl Read for Session<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Session<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut s = Session {
        input: data,
        written: 0,
    };
    let mut target = MemoryTarget(vec![0u8; 64 << 10]);
    let _ = serve(&mut s, "disk", &mut target);
    // the greeting always goes out first
    assert!(s.written >= 18);
    assert_eq!(target.0.len(), 64 << 10);
});
