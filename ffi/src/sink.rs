//! Where decoded pages go: the caller's callbacks (`pagewire_sink`) and/or guest RAM
//! regions the decoder writes into directly (`pagewire_ram_region`).

use core::cell::Cell;
use core::ffi::{c_int, c_void};

use pagewire::Destination;

use crate::error::{Fail, Res};
use crate::pagewire_result::{
    PAGEWIRE_CALLBACK_FAILED, PAGEWIRE_INVALID_ARGUMENT, PAGEWIRE_PFN_OUT_OF_RANGE,
};

/// Receives a decoded page: `len` (the page size) bytes at `data`, valid only during the
/// call. Return 0 to go on; anything else stops the decoder (see `pagewire_sink`).
pub type pagewire_page_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, pfn: u64, data: *const u8, len: usize) -> c_int>;
/// Every page of pre-copy iteration `iteration` (0, 1, 2 ...) has been delivered.
pub type pagewire_iteration_end_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, iteration: u64) -> c_int>;
/// An opaque blob the source appended: `len` bytes at `data`, valid only during the call.
pub type pagewire_blob_fn =
    Option<unsafe extern "C" fn(user: *mut c_void, tag: u32, data: *const u8, len: usize) -> c_int>;
/// The end of the stream arrived: the migration stream is complete.
pub type pagewire_end_of_stream_fn = Option<unsafe extern "C" fn(user: *mut c_void) -> c_int>;

/// Callbacks for what a decoder delivers, in stream order. Any callback may be NULL (that
/// kind of item is then skipped). `user` is passed to each callback unchanged.
///
/// A callback that returns non-zero stops delivery: no further callback runs for the rest
/// of the call, the call returns `PAGEWIRE_CALLBACK_FAILED`, and the decoder refuses all
/// later input (`PAGEWIRE_FINISHED`), because the frame was already applied to its cache.
/// Callbacks run on the calling thread, must return normally (no longjmp, no C++
/// exception), and must not call functions on the same decoder. Five pointers (40 bytes on
/// 64-bit targets).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pagewire_sink {
    pub user: *mut c_void,
    pub page: pagewire_page_fn,
    pub iteration_end: pagewire_iteration_end_fn,
    pub blob: pagewire_blob_fn,
    pub end_of_stream: pagewire_end_of_stream_fn,
}

/// A range of guest pages and the host memory that holds them (like a KVM memory slot):
/// page `first_pfn + i` lives at `host + i * page_size`. 24 bytes on 64-bit targets.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pagewire_ram_region {
    pub first_pfn: u64,
    pub page_count: u64,
    /// `page_count * page_size` writable bytes (read-only use is never made of them).
    pub host: *mut u8,
}

/// Where the decoder writes pages itself: guest RAM as regions, or a page table (one host
/// pointer per pfn). Checked once per call.
pub(crate) enum Ram<'a> {
    Regions {
        regions: &'a [pagewire_ram_region],
        page_size: usize,
        /// The region of the latest hit: pages come in runs, so it is tried first.
        last: Cell<usize>,
    },
    Table {
        table: &'a [*mut u8],
    },
}

fn out_of_range() -> Fail {
    Fail::new(
        PAGEWIRE_PFN_OUT_OF_RANGE,
        "the stream holds a page whose pfn has no place in the guest RAM given",
    )
}

/// Why an in-place decoder may not read one page while it writes another.
fn shared_memory() -> Fail {
    Fail::new(
        PAGEWIRE_INVALID_ARGUMENT,
        "two pfns of the destination share host memory (page_table entries or RAM regions \
         overlap): an in-place decoder cannot read one while it writes the other",
    )
}

impl<'a> Ram<'a> {
    /// Checks that each region has a host pointer and a byte size that fits the address
    /// space.
    pub fn regions(regions: &'a [pagewire_ram_region], page_size: usize) -> Res<Ram<'a>> {
        for r in regions {
            if r.page_count == 0 {
                continue;
            }
            if r.host.is_null() {
                return Err(Fail::null("regions[i].host"));
            }
            let fits = usize::try_from(r.page_count)
                .ok()
                .and_then(|n| n.checked_mul(page_size))
                .is_some_and(|b| b <= isize::MAX as usize);
            if !fits {
                return Err(Fail::new(
                    PAGEWIRE_INVALID_ARGUMENT,
                    "a RAM region is larger than the address space",
                ));
            }
        }
        Ok(Ram::Regions {
            regions,
            page_size,
            last: Cell::new(0),
        })
    }

    /// A page table: page `pfn` goes to `table[pfn]` (NULL: the pfn has no place).
    pub fn table(table: &'a [*mut u8]) -> Ram<'a> {
        Ram::Table { table }
    }

    /// Where page `pfn` lives: a pointer to `page_size` bytes of guest memory.
    fn place(&self, pfn: u64) -> Res<*mut u8> {
        match self {
            Ram::Regions {
                regions,
                page_size,
                last,
            } => {
                let holds = |r: &pagewire_ram_region| {
                    pfn.checked_sub(r.first_pfn).filter(|&i| i < r.page_count)
                };
                let hit = match regions
                    .get(last.get())
                    .and_then(|r| holds(r).map(|i| (last.get(), i)))
                {
                    Some(hit) => Some(hit),
                    None => regions
                        .iter()
                        .enumerate()
                        .find_map(|(n, r)| holds(r).map(|i| (n, i))),
                };
                let (n, index) = hit.ok_or_else(out_of_range)?;
                last.set(n);
                // index < page_count and page_count * page_size fits (checked in `regions`).
                let offset = index as usize * *page_size;
                // SAFETY: `offset + page_size <= page_count * page_size`, inside the region's
                // host memory (valid by the pointer rules).
                Ok(unsafe { regions[n].host.add(offset) })
            }
            Ram::Table { table } => {
                let p = usize::try_from(pfn)
                    .ok()
                    .and_then(|i| table.get(i).copied())
                    .unwrap_or(core::ptr::null_mut());
                if p.is_null() {
                    return Err(out_of_range());
                }
                Ok(p)
            }
        }
    }

    /// The places of page `from` (to read) and page `to` (to write), refused when their
    /// `page_size` bytes overlap: two table entries (or regions) may point to the same host
    /// page, and a shared and a mutable slice of the same bytes must never coexist.
    fn pair(&self, from: u64, to: u64, page_size: usize) -> Res<(*const u8, *mut u8)> {
        let (src, dst) = (self.place(from)?, self.place(to)?);
        if (src as usize).abs_diff(dst as usize) < page_size {
            return Err(shared_memory());
        }
        Ok((src.cast_const(), dst))
    }

    /// Copies page `pfn` (`data`, one page) to its place.
    #[cfg(test)]
    fn store(&mut self, pfn: u64, data: &[u8]) -> Res {
        let dst = self.place(pfn)?;
        // SAFETY: by the pointer rules the place has a page of writable bytes that overlap
        // neither the decoder's storage nor anything Rust holds; `data` is one page.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }
}

/// The codec's `Destination` over the C callbacks and/or RAM, for a decoder in either mode.
/// With RAM, pages are written into their place (and, in place, read back from there);
/// without, into a staging page (cache copy only) handed to the page callback. Remembers
/// the first failure, after which it delivers nothing.
pub(crate) struct Events<'a> {
    sink: &'a pagewire_sink,
    ram: Option<Ram<'a>>,
    /// Where a page goes when there is no RAM (one page; empty for an in-place decoder,
    /// which is never given a destination without RAM).
    staging: &'a mut [u8],
    page_size: usize,
    /// The first failure of delivery (a `Cell`: `Destination::page` reads through `&self`).
    stopped: Cell<Option<Fail>>,
}

impl<'a> Events<'a> {
    pub fn new(
        sink: &'a pagewire_sink,
        ram: Option<Ram<'a>>,
        staging: &'a mut [u8],
        page_size: usize,
    ) -> Events<'a> {
        Events {
            sink,
            ram,
            staging,
            page_size,
            stopped: Cell::new(None),
        }
    }

    /// The failure that stopped delivery, if any: reported instead of what the codec made
    /// of it.
    pub fn stopped(&self) -> Option<Fail> {
        self.stopped.get()
    }

    /// Records `fail` (the first one counts) and gives the codec error to return with it.
    fn stop(&self, fail: Fail, e: pagewire::Error) -> pagewire::Error {
        if self.stopped.get().is_none() {
            self.stopped.set(Some(fail));
        }
        e
    }

    fn check(&mut self, rc: c_int) {
        if rc != 0 {
            self.stop(
                Fail::new(
                    PAGEWIRE_CALLBACK_FAILED,
                    "a sink callback returned non-zero; the decoder accepts no more input",
                ),
                pagewire::Error::Finished,
            );
        }
    }

    /// The place of page `pfn` in RAM; a failure stops delivery.
    fn place(&self, ram: &Ram<'_>, pfn: u64) -> pagewire::Result<*mut u8> {
        ram.place(pfn)
            .map_err(|f| self.stop(f, pagewire::Error::PfnOutOfRange { pfn }))
    }
}

impl Destination for Events<'_> {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        if self.stopped().is_some() {
            // the caller reports `stopped`, not this
            return Err(pagewire::Error::Finished);
        }
        let Some(ram) = &self.ram else {
            return Ok(self.staging);
        };
        let place = self.place(ram, pfn)?;
        // SAFETY: by the pointer rules the place has `page_size` writable bytes that overlap
        // neither the decoder's storage nor anything Rust holds; `&mut self` keeps any other
        // page this destination handed out from being used meanwhile.
        Ok(unsafe { core::slice::from_raw_parts_mut(place, self.page_size) })
    }

    fn page(&self, pfn: u64) -> pagewire::Result<&[u8]> {
        if self.stopped().is_some() {
            return Err(pagewire::Error::Finished);
        }
        let Some(ram) = &self.ram else {
            // only an in-place decoder reads pages back, and it is never given callbacks
            // alone (`destination::Destination::sink`): no silent staging garbage either way
            return Err(pagewire::Error::PageUnreadable { pfn });
        };
        let place = self.place(ram, pfn)?;
        // SAFETY: by the pointer rules the place has `page_size` readable bytes that
        // overlap neither the decoder's storage nor anything Rust holds; `&self` keeps any
        // mutable page of this destination from being used meanwhile.
        Ok(unsafe { core::slice::from_raw_parts(place, self.page_size) })
    }

    fn page_pair(&mut self, from: u64, to: u64) -> pagewire::Result<(&[u8], &mut [u8])> {
        if self.stopped().is_some() {
            return Err(pagewire::Error::Finished);
        }
        let Some(ram) = &self.ram else {
            return Err(pagewire::Error::PageUnreadable { pfn: from });
        };
        let (src, dst) = match ram.pair(from, to, self.page_size) {
            Ok(pair) => pair,
            Err(f) if f.code == PAGEWIRE_PFN_OUT_OF_RANGE => {
                let pfn = if ram.place(from).is_err() { from } else { to };
                return Err(self.stop(f, pagewire::Error::PfnOutOfRange { pfn }));
            }
            Err(f) => return Err(self.stop(f, pagewire::Error::PageUnreadable { pfn: from })),
        };
        // SAFETY: by the pointer rules each place has `page_size` bytes of guest memory
        // that overlap neither the decoder's storage nor anything Rust holds, and `pair`
        // checked that the two do not overlap each other; `&mut self` keeps any other page
        // of this destination from being used meanwhile.
        Ok(unsafe {
            (
                core::slice::from_raw_parts(src, self.page_size),
                core::slice::from_raw_parts_mut(dst, self.page_size),
            )
        })
    }

    fn page_done(&mut self, pfn: u64) {
        if self.stopped().is_some() {
            return;
        }
        let Some(cb) = self.sink.page else {
            return;
        };
        // in place, a page may be complete without `page_mut` (a DUP of its own slot), so
        // its place is found again rather than remembered
        let data = match &self.ram {
            None => self.staging.as_ptr(),
            Some(ram) => match self.place(ram, pfn) {
                Ok(place) => place.cast_const(),
                Err(_) => return,
            },
        };
        // SAFETY: pointer rules: a non-NULL callback is a valid function of this type;
        // `data` holds the page (staging or its RAM place) for the duration of the call.
        let rc = unsafe { cb(self.sink.user, pfn, data, self.page_size) };
        self.check(rc);
    }

    fn iteration_end(&mut self, iteration: u64) {
        if self.stopped().is_some() {
            return;
        }
        if let Some(cb) = self.sink.iteration_end {
            // SAFETY: as in `page_done`.
            let rc = unsafe { cb(self.sink.user, iteration) };
            self.check(rc);
        }
    }

    fn blob(&mut self, tag: u32, data: &[u8]) {
        if self.stopped().is_some() {
            return;
        }
        if let Some(cb) = self.sink.blob {
            // SAFETY: as in `page_done`.
            let rc = unsafe { cb(self.sink.user, tag, data.as_ptr(), data.len()) };
            self.check(rc);
        }
    }

    fn end_of_stream(&mut self) {
        if self.stopped().is_some() {
            return;
        }
        if let Some(cb) = self.sink.end_of_stream {
            // SAFETY: as in `page_done`.
            let rc = unsafe { cb(self.sink.user) };
            self.check(rc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagewire_result::PAGEWIRE_NULL_ARGUMENT;

    const NO_EVENTS: pagewire_sink = pagewire_sink {
        user: core::ptr::null_mut(),
        page: None,
        iteration_end: None,
        blob: None,
        end_of_stream: None,
    };

    /// Pfns 10-11 at `a` (two pages), pfn 100 at `b` (one page). Raw pointers straight from
    /// the vectors, so the tests may read the vectors between decoder calls (Miri).
    fn two_regions(a: *mut u8, b: *mut u8) -> [pagewire_ram_region; 2] {
        [
            pagewire_ram_region {
                first_pfn: 10,
                page_count: 2,
                host: a,
            },
            pagewire_ram_region {
                first_pfn: 100,
                page_count: 1,
                host: b,
            },
        ]
    }

    /// An in-place destination over `ram`, for the `Destination` calls alone.
    fn in_place(ram: Ram<'_>) -> Events<'_> {
        Events::new(&NO_EVENTS, Some(ram), &mut [], 4096)
    }

    #[test]
    fn regions_read_back_pages_and_pair_them_across_regions() {
        let (mut a, mut b) = (vec![0u8; 2 * 4096], vec![0u8; 4096]);
        let regions = two_regions(a.as_mut_ptr(), b.as_mut_ptr());
        let mut d = in_place(Ram::regions(&regions, 4096).unwrap());
        d.page_mut(10).unwrap().fill(5);
        assert!(d.page(10).unwrap().iter().all(|&x| x == 5));
        // across regions, and within one, both ways
        for (from, to) in [(10, 100), (100, 11), (11, 10)] {
            let (src, dst) = d.page_pair(from, to).unwrap();
            dst.copy_from_slice(src);
            dst[0] = to as u8;
        }
        assert_eq!(d.page(100).unwrap()[..2], [100, 5]);
        assert_eq!(d.page(11).unwrap()[..2], [11, 5]);
        assert_eq!(d.page(10).unwrap()[..2], [10, 5]);
        assert!(d.stopped().is_none());
        assert_eq!((a[0], a[1], a[4096], b[0], b[1]), (10, 5, 11, 100, 5));
    }

    #[test]
    fn a_pfn_in_no_region_stops_delivery_with_out_of_range() {
        let mut a = vec![0u8; 4096];
        let regions = [pagewire_ram_region {
            first_pfn: 1,
            page_count: 1,
            host: a.as_mut_ptr(),
        }];
        for case in 0..3 {
            let mut d = in_place(Ram::regions(&regions, 4096).unwrap());
            let e = match case {
                0 => d.page(0).err(),
                1 => d.page_pair(2, 1).err(),
                _ => d.page_pair(1, 2).err(),
            };
            let pfn = [0, 2, 2][case];
            assert_eq!(e, Some(pagewire::Error::PfnOutOfRange { pfn }));
            assert_eq!(d.stopped().unwrap().code, PAGEWIRE_PFN_OUT_OF_RANGE);
            // stopped: nothing more is handed out
            assert_eq!(d.page(1).err(), Some(pagewire::Error::Finished));
        }
    }

    #[test]
    fn table_entries_sharing_a_host_page_are_never_paired() {
        let mut mem = vec![0u8; 3 * 4096];
        let base = mem.as_mut_ptr();
        // SAFETY: offsets inside `mem`.
        let (p0, p1, half) = unsafe { (base, base.add(4096), base.add(4096 + 2048)) };
        // pfn 0 and 2 share a page; pfn 3 overlaps half of pfn 1's; pfn 4 has no place
        let table = [p0, p1, p0, half, core::ptr::null_mut()];
        let mut d = in_place(Ram::table(&table));
        {
            let (src, dst) = d.page_pair(0, 1).unwrap();
            dst.copy_from_slice(src);
        }
        assert_eq!(
            d.page_pair(0, 2).err(),
            Some(pagewire::Error::PageUnreadable { pfn: 0 })
        );
        assert_eq!(d.stopped().unwrap().code, PAGEWIRE_INVALID_ARGUMENT);
        for (from, to) in [(2, 0), (1, 3), (3, 1), (0, 0)] {
            let mut d = in_place(Ram::table(&table));
            assert!(d.page_pair(from, to).is_err(), "{from} {to}");
            assert_eq!(d.stopped().unwrap().code, PAGEWIRE_INVALID_ARGUMENT);
        }
        let mut d = in_place(Ram::table(&table));
        assert_eq!(
            d.page_pair(4, 0).err(),
            Some(pagewire::Error::PfnOutOfRange { pfn: 4 })
        );
        assert_eq!(d.stopped().unwrap().code, PAGEWIRE_PFN_OUT_OF_RANGE);
    }

    #[test]
    fn without_ram_nothing_is_read_back() {
        let mut staging = vec![0u8; 4096];
        let mut d = Events::new(&NO_EVENTS, None, &mut staging, 4096);
        assert_eq!(
            d.page(0).err(),
            Some(pagewire::Error::PageUnreadable { pfn: 0 })
        );
        assert_eq!(
            d.page_pair(0, 1).err(),
            Some(pagewire::Error::PageUnreadable { pfn: 0 })
        );
        // a cache copy still writes into the staging page
        assert_eq!(d.page_mut(0).unwrap().len(), 4096);
    }

    #[test]
    fn ram_regions_take_pages_in_range_only() {
        let (mut a, mut b) = (vec![0u8; 2 * 4096], vec![0u8; 4096]);
        let regions = two_regions(a.as_mut_ptr(), b.as_mut_ptr());
        let mut ram = Ram::regions(&regions, 4096).unwrap();
        ram.store(11, &[7u8; 4096]).unwrap();
        ram.store(100, &[9u8; 4096]).unwrap();
        for pfn in [0, 9, 12, 99, 101, u64::MAX] {
            assert_eq!(
                ram.store(pfn, &[1u8; 4096]).unwrap_err().code,
                PAGEWIRE_PFN_OUT_OF_RANGE
            );
        }
        assert!(a[..4096].iter().all(|&x| x == 0));
        assert!(a[4096..].iter().all(|&x| x == 7));
        assert!(b.iter().all(|&x| x == 9));
        let mut table_page = vec![0u8; 4096];
        let table = [core::ptr::null_mut(), table_page.as_mut_ptr()];
        let mut by_table = Ram::table(&table);
        by_table.store(1, &[3u8; 4096]).unwrap();
        for pfn in [0, 2, u64::MAX] {
            assert_eq!(
                by_table.store(pfn, &[1u8; 4096]).unwrap_err().code,
                PAGEWIRE_PFN_OUT_OF_RANGE
            );
        }
        assert!(table_page.iter().all(|&x| x == 3));
        let null = [pagewire_ram_region {
            first_pfn: 0,
            page_count: 1,
            host: core::ptr::null_mut(),
        }];
        assert_eq!(
            Ram::regions(&null, 4096).err().unwrap().code,
            PAGEWIRE_NULL_ARGUMENT
        );
        let huge = [pagewire_ram_region {
            first_pfn: 0,
            page_count: u64::MAX / 2,
            host: a.as_mut_ptr(),
        }];
        assert_eq!(
            Ram::regions(&huge, 4096).err().unwrap().code,
            PAGEWIRE_INVALID_ARGUMENT
        );
    }
}
