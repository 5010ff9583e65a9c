//! An end-to-end check of the tunnel: the source end digests every page and the device
//! state as the source QEMU wrote them, the destination end the same as it hands them to
//! the destination QEMU, and the destination end compares the two before it lets QEMU
//! have the end of the stream. The link's CRCs and TLS catch damage on the wire; this
//! catches anything the tunnel itself could get wrong between the two QEMUs (a page placed
//! at the wrong address, a wrong cache reference), and it tells a RAM difference found
//! after a migration that QEMU's stream carried from one the tunnel made.
//!
//! A page's digest is of its content, not of its encoding: a whole page of zeros and a
//! zero-filled page digest the same (the codec may send either as the other).

use xxhash_rust::xxh3::Xxh3;

use crate::qemu::PageData;

/// The digest of a QEMU stream's pages, in order, and of its device state.
#[derive(Clone, Default)]
pub struct StreamDigest {
    pages: Xxh3,
    device: Xxh3,
    page_count: u64,
    device_bytes: u64,
}

impl StreamDigest {
    /// One page event: block index, offset, content.
    pub fn page(&mut self, block: usize, offset: u64, data: &PageData<'_>) {
        let data = match data {
            PageData::Raw(p) if pagewire::is_zero(p) => PageData::Fill(0),
            d => *d,
        };
        let (kind, body): (u8, &[u8]) = match &data {
            PageData::Raw(p) => (0, p),
            PageData::Fill(b) => (1, std::slice::from_ref(b)),
            PageData::Xbzrle(d) => (2, d),
        };
        self.pages.update(&[kind]);
        self.pages.update(&(block as u64).to_le_bytes());
        self.pages.update(&offset.to_le_bytes());
        self.pages.update(&(body.len() as u64).to_le_bytes());
        self.pages.update(body);
        self.page_count += 1;
    }

    /// QEMU 10's SWITCHOVER_START command, in its place among the pages.
    pub fn switchover_start(&mut self) {
        self.pages.update(&[3]);
    }

    /// The next bytes of the device state (however QEMU or the tunnel cut them).
    pub fn device(&mut self, bytes: &[u8]) {
        self.device.update(bytes);
        self.device_bytes += bytes.len() as u64;
    }

    /// The digest so far.
    pub fn value(&self) -> u64 {
        let mut all = Xxh3::new();
        all.update(&self.pages.digest().to_le_bytes());
        all.update(&self.device.digest().to_le_bytes());
        all.update(&self.page_count.to_le_bytes());
        all.update(&self.device_bytes.to_le_bytes());
        all.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_order_and_place_count_but_not_encoding_or_cuts() {
        let page = [7u8; 4096];
        let zeros = [0u8; 4096];
        let digest = |events: &[(usize, u64, PageData<'_>)], device: &[&[u8]]| {
            let mut d = StreamDigest::default();
            for (b, o, p) in events {
                d.page(*b, *o, p);
            }
            for piece in device {
                d.device(piece);
            }
            d.value()
        };
        let base = digest(
            &[(0, 0, PageData::Raw(&page)), (0, 4096, PageData::Fill(0))],
            &[b"abcdef"],
        );
        // a zero page as a whole page, the device state cut elsewhere: the same
        assert_eq!(
            base,
            digest(
                &[
                    (0, 0, PageData::Raw(&page)),
                    (0, 4096, PageData::Raw(&zeros))
                ],
                &[b"ab", b"cdef"],
            )
        );
        let mut changed = page;
        changed[4095] ^= 1;
        for other in [
            digest(
                &[
                    (0, 0, PageData::Raw(&changed)),
                    (0, 4096, PageData::Fill(0)),
                ],
                &[b"abcdef"],
            ),
            digest(
                &[(0, 4096, PageData::Raw(&page)), (0, 0, PageData::Fill(0))],
                &[b"abcdef"],
            ),
            digest(
                &[(1, 0, PageData::Raw(&page)), (0, 4096, PageData::Fill(0))],
                &[b"abcdef"],
            ),
            digest(
                &[(0, 0, PageData::Raw(&page)), (0, 4096, PageData::Fill(1))],
                &[b"abcdef"],
            ),
            digest(
                &[(0, 0, PageData::Raw(&page)), (0, 4096, PageData::Fill(0))],
                &[b"abcdeg"],
            ),
            digest(&[(0, 0, PageData::Raw(&page))], &[b"abcdef"]),
        ] {
            assert_ne!(base, other);
        }
    }
}
