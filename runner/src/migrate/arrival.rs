//! Where the destination's decoder puts a stream: the guest's memory, in place when it is at
//! hand as one piece ([`InMemory`]), else page by page through a staging page
//! ([`ThroughStaging`]); and what else the stream carries ([`Arrivals`]).

use anyhow::{bail, Result};
use pagewire::{DecodeMode, Destination, Error, MemoryImage};

use super::guest::DestGuest;
use super::session::{BLOB_PAUSE, BLOB_VCPU, MAX_BLOB};

/// What the stream carried besides the pages.
pub(super) struct Stream {
    pub(super) blobs: StateBlobs,
    pub(super) iterations: u64,
    /// Stream bytes decoded (header and frames).
    pub(super) bytes: u64,
    /// How it was decoded.
    pub(super) decoding: Decoding,
}

/// How the destination decoded a stream: its mode, and the storage its decoder held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoding {
    pub mode: DecodeMode,
    pub storage_bytes: usize,
}

impl Decoding {
    /// "in place" or "cache copy".
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            DecodeMode::InPlace => "in place",
            DecodeMode::CacheCopy => "cache copy",
        }
    }
}

/// What arrived besides page contents, and the first page that had no place.
pub(super) struct Arrivals {
    pages: u64,
    bad_pfn: Option<u64>,
    blobs: StateBlobs,
    /// Pre-copy iterations completed.
    pub(super) iterations: u64,
}

impl Arrivals {
    /// For a guest of `pages` pages and `vcpus` vCPUs.
    pub(super) fn new(pages: u64, vcpus: usize) -> Self {
        Arrivals {
            pages,
            bad_pfn: None,
            blobs: StateBlobs::new(vcpus),
            iterations: 0,
        }
    }

    /// Checks that `pfn` is a page of the guest; else the decoder's error, remembered.
    fn page(&mut self, pfn: u64) -> pagewire::Result<()> {
        if pfn >= self.pages {
            self.bad_pfn.get_or_insert(pfn);
            return Err(Error::PfnOutOfRange { pfn });
        }
        Ok(())
    }

    /// Fails on the first page or blob that could not go where it belongs.
    fn check(&self) -> Result<()> {
        if let Some(pfn) = self.bad_pfn {
            bail!("the stream carries page {pfn}, beyond the VM's memory");
        }
        if let Some(tag) = self.blobs.bad {
            bail!("the stream carries an unknown or oversized blob (tag {tag})");
        }
        Ok(())
    }

    fn into_stream(self, bytes: u64, decoding: Decoding) -> Stream {
        Stream {
            blobs: self.blobs,
            iterations: self.iterations,
            bytes,
            decoding,
        }
    }
}

/// Zeros `page` unless it reads as zeros already: memory the guest never used stays
/// unbacked at the destination too.
fn zero_unless_zero(page: &mut [u8]) {
    if page.iter().any(|&b| b != 0) {
        page.fill(0);
    }
}

/// A destination for the engine's receive loop.
pub(super) trait GuestDestination: Destination {
    /// What arrived so far.
    fn arrivals(&self) -> &Arrivals;
    /// Fails on the first page or blob that could not go where it belongs.
    fn check(&mut self) -> Result<()>;
    /// What the whole stream of `bytes` bytes, decoded as `decoding` says, carried
    /// besides the pages.
    fn into_stream(self, bytes: u64, decoding: Decoding) -> Stream;
}

/// In place: the decoder writes and reads the guest's memory itself, which holds what it
/// last wrote (the guest does not run before the end).
pub(super) struct InMemory<'m> {
    mem: MemoryImage<'m>,
    arrivals: Arrivals,
}

impl<'m> InMemory<'m> {
    /// Over the guest's memory `mem` (`arrivals`' pages of `page_size` bytes).
    pub(super) fn new(mem: &'m mut [u8], page_size: usize, arrivals: Arrivals) -> Self {
        InMemory {
            mem: MemoryImage::new(mem, page_size),
            arrivals,
        }
    }
}

/// The guest's memory as a `MemoryImage`; a page beyond the guest is also remembered, for
/// the error that names it.
impl Destination for InMemory<'_> {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        self.arrivals.page(pfn)?;
        self.mem.page_mut(pfn)
    }

    fn page(&self, pfn: u64) -> pagewire::Result<&[u8]> {
        self.mem.page(pfn)
    }

    fn page_pair(&mut self, from: u64, to: u64) -> pagewire::Result<(&[u8], &mut [u8])> {
        self.arrivals.page(from)?;
        self.arrivals.page(to)?;
        self.mem.page_pair(from, to)
    }

    /// A page that already reads as zeros is left alone: memory the guest never used stays
    /// unbacked here too. (Its pages are the stream's page size: the header was checked
    /// against the guest's.)
    fn zero_page(&mut self, pfn: u64, _page_size: usize) -> pagewire::Result<()> {
        zero_unless_zero(self.page_mut(pfn)?);
        Ok(())
    }

    fn iteration_end(&mut self, iteration: u64) {
        self.arrivals.iterations = iteration + 1;
    }

    fn blob(&mut self, tag: u32, data: &[u8]) {
        self.arrivals.blobs.add(tag, data);
    }
}

impl GuestDestination for InMemory<'_> {
    fn arrivals(&self) -> &Arrivals {
        &self.arrivals
    }

    fn check(&mut self) -> Result<()> {
        self.arrivals.check()
    }

    fn into_stream(self, bytes: u64, decoding: Decoding) -> Stream {
        self.arrivals.into_stream(bytes, decoding)
    }
}

/// One lane's share of the guest's memory, in place: the pages `pfn % lanes == lane`.
/// The lanes of a migration decode at once, each on its own thread, into one memory: each
/// view hands out only its own pages (a stream that names another lane's page is refused),
/// so no two views ever reach the same byte.
pub(super) struct LaneMemory<'m> {
    base: *mut u8,
    page_size: usize,
    lane: u64,
    lanes: u64,
    /// The first page of another lane this lane's stream named.
    misplaced: Option<u64>,
    arrivals: Arrivals,
    _mem: std::marker::PhantomData<&'m mut [u8]>,
}

// SAFETY: a view reaches only its own lane's pages of a memory borrowed mutably for `'m`
// by all views together; moving a view to another thread moves that exclusive access.
unsafe impl Send for LaneMemory<'_> {}

impl<'m> LaneMemory<'m> {
    /// `lanes` views over the guest's memory `mem` (pages of `page_size` bytes; the
    /// guest has `vcpus` vCPUs).
    pub(super) fn split(
        mem: &'m mut [u8],
        page_size: usize,
        lanes: u32,
        vcpus: usize,
    ) -> Vec<Self> {
        let pages = (mem.len() / page_size) as u64;
        let base = mem.as_mut_ptr();
        (0..u64::from(lanes))
            .map(|lane| LaneMemory {
                base,
                page_size,
                lane,
                lanes: u64::from(lanes),
                misplaced: None,
                arrivals: Arrivals::new(pages, vcpus),
                _mem: std::marker::PhantomData,
            })
            .collect()
    }

    /// Whether `pfn` is a page of the guest and of this lane.
    fn mine(&self, pfn: u64) -> bool {
        pfn < self.arrivals.pages && pfn % self.lanes == self.lane
    }

    /// Checks `pfn` as a page to write: the guest's and this lane's; else the decoder's
    /// error, remembered.
    fn own(&mut self, pfn: u64) -> pagewire::Result<()> {
        self.arrivals.page(pfn)?;
        if !self.mine(pfn) {
            self.misplaced.get_or_insert(pfn);
            return Err(Error::PfnOutOfRange { pfn });
        }
        Ok(())
    }

    /// The page at `pfn`, checked to be this lane's.
    fn at(&self, pfn: u64) -> *mut u8 {
        debug_assert!(self.mine(pfn));
        // SAFETY (of the offset): `mine` checked that the page lies inside the memory
        unsafe { self.base.add(pfn as usize * self.page_size) }
    }

    /// `e`, or what this lane's stream did wrong if it named another lane's page.
    pub(super) fn explain(&self, e: anyhow::Error) -> anyhow::Error {
        match self.misplaced {
            Some(pfn) => anyhow::anyhow!(
                "lane {}'s stream carries page {pfn}, which travels on lane {} ({e:#})",
                self.lane,
                pfn % self.lanes
            ),
            None => e,
        }
    }
}

impl Destination for LaneMemory<'_> {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        self.own(pfn)?;
        // SAFETY: this lane's page, inside the memory, reached by no other view; the
        // borrow of `self` keeps every other page this view hands out away meanwhile.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.at(pfn), self.page_size) })
    }

    fn page(&self, pfn: u64) -> pagewire::Result<&[u8]> {
        if !self.mine(pfn) {
            return Err(Error::PageUnreadable { pfn });
        }
        // SAFETY: as in `page_mut`, shared for as long as `self` is.
        Ok(unsafe { std::slice::from_raw_parts(self.at(pfn), self.page_size) })
    }

    fn page_pair(&mut self, from: u64, to: u64) -> pagewire::Result<(&[u8], &mut [u8])> {
        self.own(from)?;
        self.own(to)?;
        if from == to {
            return Err(Error::PageUnreadable { pfn: from });
        }
        // SAFETY: two different pages of this lane: disjoint, each as in `page_mut`.
        Ok(unsafe {
            (
                std::slice::from_raw_parts(self.at(from), self.page_size),
                std::slice::from_raw_parts_mut(self.at(to), self.page_size),
            )
        })
    }

    /// As [`InMemory`]: a page that already reads as zeros is left alone.
    fn zero_page(&mut self, pfn: u64, _page_size: usize) -> pagewire::Result<()> {
        zero_unless_zero(self.page_mut(pfn)?);
        Ok(())
    }

    fn iteration_end(&mut self, iteration: u64) {
        self.arrivals.iterations = iteration + 1;
    }

    /// Blobs (the pause information, vCPU states) travel on lane 0 only.
    fn blob(&mut self, tag: u32, data: &[u8]) {
        if self.lane == 0 {
            self.arrivals.blobs.add(tag, data);
        } else {
            self.arrivals.blobs.bad.get_or_insert(tag);
        }
    }
}

impl GuestDestination for LaneMemory<'_> {
    fn arrivals(&self) -> &Arrivals {
        &self.arrivals
    }

    fn check(&mut self) -> Result<()> {
        if let Some(pfn) = self.misplaced {
            return Err(self.explain(anyhow::anyhow!("page {pfn} on the wrong lane")));
        }
        self.arrivals.check()
    }

    fn into_stream(self, bytes: u64, decoding: Decoding) -> Stream {
        self.arrivals.into_stream(bytes, decoding)
    }
}

/// Cache copy: the decoder writes each page into a staging page, which then goes to the
/// guest through [`DestGuest::write_page`].
pub(super) struct ThroughStaging<'g, G> {
    guest: &'g mut G,
    /// Pages written so far: a zero page over a never-written page is skipped, so memory
    /// the guest never used stays unbacked here too.
    written: Vec<u64>,
    staging: Vec<u8>,
    write_failed: Option<anyhow::Error>,
    arrivals: Arrivals,
}

impl<'g, G> ThroughStaging<'g, G> {
    /// Into `guest`, whose pages are `page_size` bytes.
    pub(super) fn new(guest: &'g mut G, page_size: usize, arrivals: Arrivals) -> Self {
        ThroughStaging {
            guest,
            written: vec![0; (arrivals.pages as usize).div_ceil(64)],
            staging: vec![0; page_size],
            write_failed: None,
            arrivals,
        }
    }
}

impl<G: DestGuest> Destination for ThroughStaging<'_, G> {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        self.arrivals.page(pfn)?;
        Ok(&mut self.staging)
    }

    fn page_done(&mut self, pfn: u64) {
        let data = &self.staging;
        let (w, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
        if self.written[w] & bit == 0 && data.iter().all(|&b| b == 0) {
            return;
        }
        self.written[w] |= bit;
        if let Err(e) = self.guest.write_page(pfn, data) {
            self.write_failed.get_or_insert(e);
        }
    }

    fn iteration_end(&mut self, iteration: u64) {
        self.arrivals.iterations = iteration + 1;
    }

    fn blob(&mut self, tag: u32, data: &[u8]) {
        self.arrivals.blobs.add(tag, data);
    }
}

impl<G: DestGuest> GuestDestination for ThroughStaging<'_, G> {
    fn arrivals(&self) -> &Arrivals {
        &self.arrivals
    }

    fn check(&mut self) -> Result<()> {
        self.arrivals.check()?;
        if let Some(e) = self.write_failed.take() {
            return Err(e.context("writing a page into the guest"));
        }
        Ok(())
    }

    fn into_stream(self, bytes: u64, decoding: Decoding) -> Stream {
        self.arrivals.into_stream(bytes, decoding)
    }
}

/// The blobs of a stream: the pause information and one state per vCPU, each joined from
/// its pieces (see `session`).
pub(super) struct StateBlobs {
    pub(super) pause: Option<Vec<u8>>,
    pub(super) states: Vec<Option<Vec<u8>>>,
    /// The first blob with an unknown tag, or past [`MAX_BLOB`].
    bad: Option<u32>,
}

impl StateBlobs {
    fn new(vcpus: usize) -> Self {
        StateBlobs {
            pause: None,
            states: vec![None; vcpus],
            bad: None,
        }
    }

    fn add(&mut self, tag: u32, data: &[u8]) {
        let slot = if tag == BLOB_PAUSE {
            &mut self.pause
        } else if let Some(slot) = tag
            .checked_sub(BLOB_VCPU)
            .and_then(|i| self.states.get_mut(i as usize))
        {
            slot
        } else {
            self.bad.get_or_insert(tag);
            return;
        };
        // pieces of one blob arrive back to back: join them, within bounds
        let whole = slot.get_or_insert_with(Vec::new);
        if whole.len() + data.len() > MAX_BLOB {
            self.bad.get_or_insert(tag);
            return;
        }
        whole.extend_from_slice(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pagewire::{Config, Decoder, Encoder};

    const PS: usize = 4096;
    const PAGES: usize = 96;

    /// A guest whose memory is not at hand: pages arrive through `write_page`.
    struct PageByPage(Vec<u8>);

    impl DestGuest for PageByPage {
        fn write_page(&mut self, pfn: u64, data: &[u8]) -> Result<()> {
            let at = pfn as usize * PS;
            self.0[at..at + PS].copy_from_slice(data);
            Ok(())
        }
        fn restore_state(&mut self, _: &[Vec<u8>]) -> Result<()> {
            Ok(())
        }
        fn memory_digest(&mut self) -> Result<u128> {
            Ok(0)
        }
        fn start(&mut self) -> Result<()> {
            Ok(())
        }
    }

    /// Three passes over memory that repeats, changes a little and goes back to zeros, as
    /// one stream with iteration ends and a blob; and the memory after the last pass.
    fn stream() -> (Vec<u8>, Vec<u8>) {
        lane_stream(1, 0)
    }

    /// As [`stream`], lane `lane` of `lanes`: only its pages (`pfn % lanes == lane`), the
    /// blob on lane 0 only.
    fn lane_stream(lanes: usize, lane: usize) -> (Vec<u8>, Vec<u8>) {
        let cfg = Config {
            cache_pages: 32,
            ..Config::DEFAULT
        };
        let mut storage = vec![0u8; cfg.encoder_storage_len()];
        let mut enc = Encoder::new(cfg, &mut storage).unwrap();
        let mut out = vec![0u8; cfg.max_output_len()];
        let mut wire = Vec::new();
        let mut mem = vec![0u8; PAGES * PS];
        for pass in 0..3u8 {
            for pfn in 0..PAGES {
                let page = &mut mem[pfn * PS..(pfn + 1) * PS];
                match (pfn + pass as usize) % 4 {
                    0 => page.fill(0),
                    1 => page.fill(pfn as u8 % 5),
                    _ => page[pfn * 7 % PS] = pfn as u8 ^ pass,
                }
                if pfn % lanes != lane {
                    continue;
                }
                let n = enc.encode_page(pfn as u64, page, &mut out).unwrap();
                wire.extend_from_slice(&out[..n]);
            }
            let n = enc.end_iteration(&mut out).unwrap();
            wire.extend_from_slice(&out[..n]);
        }
        if lane == 0 {
            let n = enc.append_blob(BLOB_PAUSE, b"{}", &mut out).unwrap();
            wire.extend_from_slice(&out[..n]);
        }
        let n = enc.finish(&mut out).unwrap();
        wire.extend_from_slice(&out[..n]);
        (wire, mem)
    }

    fn decode<D: GuestDestination>(wire: &[u8], mode: DecodeMode, dest: &mut D) {
        let cfg = Config::from_header(wire).unwrap();
        let mut storage = vec![0u8; cfg.decoder_storage_len_for(mode)];
        let (mut dec, used) = Decoder::from_header(wire, mode, &mut storage).unwrap();
        dec.decode(&wire[used..], dest).unwrap();
        dec.check_complete().unwrap();
        dest.check().unwrap();
    }

    #[test]
    fn in_place_and_through_staging_rebuild_the_same_memory() {
        let (wire, want) = stream();
        // stale bytes where the stream writes zeros: a zero page must still be written
        let mut mem = vec![0xa5u8; PAGES * PS];
        let mut in_mem = InMemory::new(&mut mem, PS, Arrivals::new(PAGES as u64, 1));
        decode(&wire, DecodeMode::InPlace, &mut in_mem);
        assert_eq!(in_mem.arrivals().iterations, 3);
        let decoding = Decoding {
            mode: DecodeMode::InPlace,
            storage_bytes: 0,
        };
        let stream = in_mem.into_stream(wire.len() as u64, decoding);
        assert_eq!(stream.blobs.pause.as_deref(), Some(&b"{}"[..]));
        assert!(mem == want, "in place");

        let mut guest = PageByPage(vec![0; PAGES * PS]);
        let mut staged = ThroughStaging::new(&mut guest, PS, Arrivals::new(PAGES as u64, 1));
        decode(&wire, DecodeMode::CacheCopy, &mut staged);
        assert_eq!(staged.arrivals().iterations, 3);
        assert!(guest.0 == want, "through staging");
    }

    #[test]
    fn lanes_decode_at_once_into_one_memory() {
        let (a, want) = lane_stream(2, 0);
        let (b, _) = lane_stream(2, 1);
        let mut mem = vec![0xa5u8; PAGES * PS];
        let views = LaneMemory::split(&mut mem, PS, 2, 1);
        let iterations: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = views
                .into_iter()
                .zip([&a, &b])
                .map(|(mut view, wire)| {
                    s.spawn(move || {
                        decode(wire, DecodeMode::InPlace, &mut view);
                        view.arrivals().iterations
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(iterations, [3, 3]);
        assert!(mem == want);
    }

    #[test]
    fn a_lane_may_not_touch_another_lanes_page() {
        // every page on one stream, decoded as lane 0 of 2: page 1 is lane 1's
        let (wire, _) = stream();
        let mut mem = vec![0u8; PAGES * PS];
        let mut views = LaneMemory::split(&mut mem, PS, 2, 1);
        let view = &mut views[0];
        let cfg = Config::from_header(&wire).unwrap();
        let mut storage = vec![0u8; cfg.decoder_storage_len_for(DecodeMode::InPlace)];
        let (mut dec, used) =
            Decoder::from_header(&wire, DecodeMode::InPlace, &mut storage).unwrap();
        assert!(dec.decode(&wire[used..], view).is_err());
        let e = view.check().unwrap_err().to_string();
        assert!(e.contains("page 1, which travels on lane 1"), "{e}");
        // nor read one, nor carry a blob on lane 1
        assert!(views[0].page(1).is_err() && views[1].page(1).is_ok());
        views[1].blob(BLOB_PAUSE, b"{}");
        assert!(views[1].check().is_err());
    }

    #[test]
    fn a_page_beyond_the_guest_is_refused_in_place() {
        let (wire, _) = stream();
        let mut mem = vec![0u8; (PAGES - 1) * PS];
        let mut in_mem = InMemory::new(&mut mem, PS, Arrivals::new(PAGES as u64 - 1, 1));
        let cfg = Config::from_header(&wire).unwrap();
        let mut storage = vec![0u8; cfg.decoder_storage_len_for(DecodeMode::InPlace)];
        let (mut dec, used) =
            Decoder::from_header(&wire, DecodeMode::InPlace, &mut storage).unwrap();
        assert!(dec.decode(&wire[used..], &mut in_mem).is_err());
        let e = in_mem.check().unwrap_err().to_string();
        assert!(e.contains(&format!("page {}", PAGES - 1)), "{e}");
    }

    #[test]
    fn blob_pieces_are_joined_and_oversized_or_unknown_blobs_refused() {
        let mut blobs = StateBlobs::new(2);
        blobs.add(BLOB_VCPU + 1, &[1; 4096]);
        blobs.add(BLOB_VCPU + 1, &[2; 900]);
        blobs.add(BLOB_PAUSE, b"{}");
        let v = blobs.states[1].as_deref().unwrap();
        assert_eq!(v.len(), 4996);
        assert_eq!((v[4095], v[4096]), (1, 2));
        assert_eq!(blobs.pause.as_deref(), Some(&b"{}"[..]));
        assert!(blobs.states[0].is_none() && blobs.bad.is_none());

        blobs.add(BLOB_VCPU + 2, b"no such vCPU");
        assert_eq!(blobs.bad, Some(BLOB_VCPU + 2));
        blobs.bad = None;
        let piece = vec![0u8; 4096];
        for _ in 0..MAX_BLOB / 4096 {
            blobs.add(BLOB_VCPU, &piece);
        }
        assert!(blobs.bad.is_none());
        blobs.add(BLOB_VCPU, &[0]);
        assert_eq!(blobs.bad, Some(BLOB_VCPU), "past MAX_BLOB");
    }
}
