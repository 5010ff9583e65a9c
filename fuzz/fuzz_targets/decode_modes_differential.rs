//! Differential: the two decoder modes on any stream (arbitrary frame bodies in valid
//! frames, or arbitrary bytes with their own header), each into flat guest memory of 48
//! pages that starts the same (zeros, or a pattern standing for a previous content). After
//! every frame both must report the same result, have written the same memory, handed out
//! the same events (each page as it was when done) and counted the same stats; at the end
//! both must agree on whether the stream is complete. Input layout: `ModesCase`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pagewire::{Config, DecodeMode, Decoder, Destination, MemoryImage};
use pagewire_fuzz::{Event, ModesCase};

/// Storage above which a stream is skipped (a cache copy of 16 MiB).
const STORAGE_CAP: usize = 16 << 20;

/// Guest memory that logs the stream's events, each page as it was when done.
struct Logged<'m> {
    mem: MemoryImage<'m>,
    events: Vec<Event>,
}

impl Destination for Logged<'_> {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        self.mem.page_mut(pfn)
    }
    fn page(&self, pfn: u64) -> pagewire::Result<&[u8]> {
        self.mem.page(pfn)
    }
    fn page_pair(&mut self, from: u64, to: u64) -> pagewire::Result<(&[u8], &mut [u8])> {
        self.mem.page_pair(from, to)
    }
    fn page_done(&mut self, pfn: u64) {
        // a page is done only once written, so its pfn is in range
        let page = self
            .mem
            .page(pfn)
            .expect("a done page is in memory")
            .to_vec();
        self.events.push(Event::Page(pfn, page));
    }
    fn iteration_end(&mut self, n: u64) {
        self.events.push(Event::Iteration(n));
    }
    fn blob(&mut self, tag: u32, data: &[u8]) {
        self.events.push(Event::Blob(tag, data.to_vec()));
    }
    fn end_of_stream(&mut self) {
        self.events.push(Event::End);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(case) = ModesCase::parse(data) else {
        return;
    };
    let wire = &case.wire[..];
    if let Ok(cfg) = Config::from_header(wire) {
        if cfg.decoder_storage_len_for(DecodeMode::CacheCopy) > STORAGE_CAP {
            return;
        }
    }
    let storage_len =
        |mode| Config::from_header(wire).map_or(0, |c| c.decoder_storage_len_for(mode));
    let mut s_copy = vec![0u8; storage_len(DecodeMode::CacheCopy)];
    let mut s_in_place = vec![0u8; storage_len(DecodeMode::InPlace)];
    let built = (
        Decoder::from_header(wire, DecodeMode::CacheCopy, &mut s_copy),
        Decoder::from_header(wire, DecodeMode::InPlace, &mut s_in_place),
    );
    let (mut copy, mut in_place, used) = match built {
        (Ok((a, used)), Ok((b, used_b))) => {
            assert_eq!(used, used_b);
            (a, b, used)
        }
        (a, b) => {
            assert_eq!(a.err(), b.err(), "the header is judged differently");
            return;
        }
    };
    let ps = case.page_size;
    let mut m_copy = case.initial.clone();
    let mut m_in_place = case.initial;
    let d_copy = &mut Logged {
        mem: MemoryImage::new(&mut m_copy, ps),
        events: Vec::new(),
    };
    let d_in_place = &mut Logged {
        mem: MemoryImage::new(&mut m_in_place, ps),
        events: Vec::new(),
    };
    let mut pos = used;
    let mut frame = 0;
    while pos < wire.len() {
        let rest = &wire[pos..];
        let len = copy.frame_len(rest);
        assert_eq!(len, in_place.frame_len(rest), "frame {frame}: its length");
        let Ok(len) = len else { break };
        let Some(bytes) = rest.get(..len) else { break };
        let r = copy.decode_frame(bytes, d_copy);
        assert_eq!(r, in_place.decode_frame(bytes, d_in_place), "frame {frame}");
        assert!(
            d_copy.mem.memory() == d_in_place.mem.memory(),
            "frame {frame} ({r:?}): the memory differs"
        );
        assert_eq!(d_copy.events, d_in_place.events, "frame {frame}: events");
        assert_eq!(copy.stats(), in_place.stats(), "frame {frame}: stats");
        if r.is_err() {
            break;
        }
        pos += len;
        frame += 1;
    }
    assert_eq!(copy.is_complete(), in_place.is_complete());
    assert_eq!(copy.check_complete(), in_place.check_complete());
});
