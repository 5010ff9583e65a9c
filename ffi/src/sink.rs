//! Where decoded pages go: the caller's callbacks (`pagewire_sink`) and/or guest RAM
//! regions the decoder writes into directly (`pagewire_ram_region`).

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
        last: usize,
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
            last: 0,
        })
    }

    /// A page table: page `pfn` goes to `table[pfn]` (NULL: the pfn has no place).
    pub fn table(table: &'a [*mut u8]) -> Ram<'a> {
        Ram::Table { table }
    }

    /// Where page `pfn` goes: a pointer to `page_size` writable bytes.
    fn place(&mut self, pfn: u64) -> Res<*mut u8> {
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
                    .get(*last)
                    .and_then(|r| holds(r).map(|i| (*last, i)))
                {
                    Some(hit) => Some(hit),
                    None => regions
                        .iter()
                        .enumerate()
                        .find_map(|(n, r)| holds(r).map(|i| (n, i))),
                };
                let (n, index) = hit.ok_or_else(out_of_range)?;
                *last = n;
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

/// The codec's `Destination` over the C callbacks and/or RAM, for a cache-copy decoder:
/// pages are written into their RAM place, or else into a staging page, then handed to the
/// page callback. Remembers the first failure, after which it delivers nothing.
pub(crate) struct Events<'a> {
    sink: &'a pagewire_sink,
    ram: Option<Ram<'a>>,
    /// Where a page goes when there is no RAM (one page).
    staging: &'a mut [u8],
    /// The RAM place of the page being written.
    place: *mut u8,
    pub stopped: Option<Fail>,
}

impl<'a> Events<'a> {
    pub fn new(sink: &'a pagewire_sink, ram: Option<Ram<'a>>, staging: &'a mut [u8]) -> Events<'a> {
        Events {
            sink,
            ram,
            staging,
            place: core::ptr::null_mut(),
            stopped: None,
        }
    }

    fn check(&mut self, rc: c_int) {
        if rc != 0 && self.stopped.is_none() {
            self.stopped = Some(Fail::new(
                PAGEWIRE_CALLBACK_FAILED,
                "a sink callback returned non-zero; the decoder accepts no more input",
            ));
        }
    }
}

impl Destination for Events<'_> {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        if self.stopped.is_some() {
            // the caller reports `stopped`, not this
            return Err(pagewire::Error::Finished);
        }
        let page_size = self.staging.len();
        let Some(ram) = &mut self.ram else {
            self.place = core::ptr::null_mut();
            return Ok(self.staging);
        };
        match ram.place(pfn) {
            Ok(place) => {
                self.place = place;
                // SAFETY: by the pointer rules the place has `page_size` writable bytes that
                // overlap neither the decoder's storage nor anything Rust holds.
                Ok(unsafe { core::slice::from_raw_parts_mut(place, page_size) })
            }
            Err(f) => {
                self.stopped = Some(f);
                Err(pagewire::Error::PfnOutOfRange { pfn })
            }
        }
    }

    fn page_done(&mut self, pfn: u64) {
        if self.stopped.is_some() {
            return;
        }
        if let Some(cb) = self.sink.page {
            let data = if self.place.is_null() {
                self.staging.as_ptr()
            } else {
                self.place.cast_const()
            };
            // SAFETY: pointer rules: a non-NULL callback is a valid function of this type;
            // `data` holds the page (staging or its RAM place) for the duration of the call.
            let rc = unsafe { cb(self.sink.user, pfn, data, self.staging.len()) };
            self.check(rc);
        }
    }

    fn iteration_end(&mut self, iteration: u64) {
        if self.stopped.is_some() {
            return;
        }
        if let Some(cb) = self.sink.iteration_end {
            // SAFETY: as in `page`.
            let rc = unsafe { cb(self.sink.user, iteration) };
            self.check(rc);
        }
    }

    fn blob(&mut self, tag: u32, data: &[u8]) {
        if self.stopped.is_some() {
            return;
        }
        if let Some(cb) = self.sink.blob {
            // SAFETY: as in `page`.
            let rc = unsafe { cb(self.sink.user, tag, data.as_ptr(), data.len()) };
            self.check(rc);
        }
    }

    fn end_of_stream(&mut self) {
        if self.stopped.is_some() {
            return;
        }
        if let Some(cb) = self.sink.end_of_stream {
            // SAFETY: as in `page`.
            let rc = unsafe { cb(self.sink.user) };
            self.check(rc);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagewire_result::PAGEWIRE_NULL_ARGUMENT;

    #[test]
    fn ram_regions_take_pages_in_range_only() {
        let mut a = vec![0u8; 2 * 4096];
        let mut b = vec![0u8; 4096];
        let regions = [
            pagewire_ram_region {
                first_pfn: 10,
                page_count: 2,
                host: a.as_mut_ptr(),
            },
            pagewire_ram_region {
                first_pfn: 100,
                page_count: 1,
                host: b.as_mut_ptr(),
            },
        ];
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
