//! Did QEMU's stream end where a stream ends? The device state is opaque to the tunnel (a
//! device's fields carry no lengths), so a source QEMU that stops inside it (a failed or
//! cancelled migration) would otherwise look like one that finished. A complete stream
//! ends with QEMU's EOF marker followed by the JSON VM description (marker
//! `VMDESCRIPTION`, a 32-bit big-endian length, the JSON), or, where the machine suppresses
//! the description, with the EOF marker alone. The tail is checked for that shape; the
//! second form is one byte, so it only catches a stream that stops elsewhere than after a
//! zero byte.

use crate::qemu::format::item;

/// The most device state kept for the check: a VM description is tens of KiB.
pub const TAIL_MAX: usize = 1 << 20;

/// The last bytes of the device state.
#[derive(Debug, Default)]
pub struct DeviceTail {
    buf: Vec<u8>,
}

impl DeviceTail {
    /// More device state.
    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= TAIL_MAX {
            self.buf.clear();
            self.buf.extend_from_slice(&bytes[bytes.len() - TAIL_MAX..]);
            return;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > 2 * TAIL_MAX {
            self.buf.drain(..self.buf.len() - TAIL_MAX);
        }
    }

    /// True when the device state ends as a complete stream does.
    pub fn complete(&self) -> bool {
        let b = &self.buf;
        if b.last() == Some(&item::EOF) {
            return true;
        }
        // EOF, VMDESCRIPTION, length, then exactly `length` bytes of JSON to the end
        (0..b.len().saturating_sub(5)).rev().any(|at| {
            b[at] == item::EOF
                && b[at + 1] == item::VMDESCRIPTION
                && u32::from_be_bytes([b[at + 2], b[at + 3], b[at + 4], b[at + 5]]) as usize
                    == b.len() - at - 6
                && b.get(at + 6) == Some(&b'{')
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_description(json: &[u8]) -> Vec<u8> {
        let mut t = vec![4, 0, 0, 0, 3, 1, 2, 3, item::EOF, item::VMDESCRIPTION];
        t.extend_from_slice(&(json.len() as u32).to_be_bytes());
        t.extend_from_slice(json);
        t
    }

    #[test]
    fn a_stream_ends_after_its_description_or_its_eof_marker() {
        let full = with_description(br#"{"page_size": 4096, "devices": []}"#);
        for split in [1, 7, full.len() - 1] {
            let mut t = DeviceTail::default();
            t.push(&full[..split]);
            t.push(&full[split..]);
            assert!(t.complete());
        }
        for cut in 1..full.len() {
            let mut t = DeviceTail::default();
            t.push(&full[..cut]);
            assert_eq!(t.complete(), full[cut - 1] == item::EOF, "cut at {cut}");
        }
        let mut t = DeviceTail::default();
        t.push(&[4, 0, 0, 0, 3, item::EOF]);
        assert!(t.complete(), "no description");
        let mut big = DeviceTail::default();
        big.push(&vec![1; 3 * TAIL_MAX]);
        big.push(&full);
        assert!(big.complete() && big.buf.len() <= 2 * TAIL_MAX);
    }
}
