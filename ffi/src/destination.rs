//! `pagewire_destination`: where one decode call delivers, described by a small struct (the
//! callbacks alone, guest RAM regions, or a page table, each with the optional event
//! callbacks), checked and turned into the codec's `Destination`.

use pagewire::DecodeMode;

use crate::error::{Fail, Res};
use crate::pagewire_result::PAGEWIRE_INVALID_ARGUMENT;
use crate::ptr::items;
use crate::sink::{pagewire_ram_region, pagewire_sink, Events, Ram};

/// Where `pagewire_destination.kind` says pages go (4 bytes).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pagewire_destination_kind {
    /// Only to the callbacks in `events` (a NULL `events.page` skips pages).
    PAGEWIRE_TO_CALLBACKS = 0,
    /// The decoder writes page `pfn` into the region of `regions` that holds it.
    PAGEWIRE_TO_RAM_REGIONS = 1,
    /// The decoder writes page `pfn` to `page_table[pfn]`.
    PAGEWIRE_TO_PAGE_TABLE = 2,
}

/// Where a `pagewire_decoder_decode` call delivers what it decodes. Set `kind` and the
/// fields it names; leave the others 0 (a zero-initialised struct with `events` filled in
/// delivers to callbacks). 80 bytes on 64-bit targets.
///
/// * `PAGEWIRE_TO_CALLBACKS`: pages go to `events.page`.
/// * `PAGEWIRE_TO_RAM_REGIONS`: the decoder writes each page straight into guest RAM, page
///   `pfn` into the region of `regions[0 .. region_count)` that holds it; a page in no
///   region stops delivery with `PAGEWIRE_PFN_OUT_OF_RANGE` (final, like a callback
///   failure).
/// * `PAGEWIRE_TO_PAGE_TABLE`: the decoder writes page `pfn` to `page_table[pfn]`, a table
///   of `page_table_len` host pointers indexed by pfn, for guest memory mapped page by page
///   (Xen's foreign mappings, or any scattered layout). A pfn at or past `page_table_len`,
///   or whose entry is NULL, stops delivery with `PAGEWIRE_PFN_OUT_OF_RANGE`.
///
/// With RAM regions or a page table, `events.page` (if set) runs after each page has been
/// stored. `events` also receives iteration ends, blobs and the end of the stream; any of
/// its callbacks may be NULL.
///
/// A decoder opened with `PAGEWIRE_DECODE_IN_PLACE` also reads from this memory: the pages
/// the stream refers to (a duplicate, a delta's base, a block) are read back from where it
/// wrote them. It needs RAM regions or a page table on every call (callbacks alone are
/// refused with `PAGEWIRE_INVALID_ARGUMENT`, before any input is read; the decoder stays
/// usable), and:
///
/// * the memory of every pfn the decoder wrote holds, at the next call, exactly what it
///   last wrote there: the guest does not run and nothing else writes to it until the
///   stream is complete, and each call gives the same pfn -> memory mapping (the memory
///   need not stay mapped between calls, but must be back with the same content);
/// * distinct pfns have distinct, non-overlapping host pages. The decoder refuses to read
///   one page while it writes another that overlaps it (`PAGEWIRE_INVALID_ARGUMENT`,
///   final for the stream) rather than hand out aliasing memory, but it cannot see
///   aliases it does not use at once: those leave wrong bytes in guest memory.
///
/// A pfn the stream refers to that has no place (out of the regions, past
/// `page_table_len`, or a NULL entry) stops delivery with `PAGEWIRE_PFN_OUT_OF_RANGE`.
///
/// Safety: each region's `host` has `page_count * page_size` writable (and, in place,
/// readable) bytes, and each non-NULL `page_table` entry `page_size` such bytes, that
/// overlap no other buffer of the call and no decoder storage.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct pagewire_destination {
    /// A `pagewire_destination_kind`.
    pub kind: u32,
    /// Must be 0 (room for delivery options to come).
    pub reserved: u32,
    /// `PAGEWIRE_TO_RAM_REGIONS`: the guest's RAM, like KVM memory slots; else NULL.
    pub regions: *const pagewire_ram_region,
    /// Entries of `regions`; else 0.
    pub region_count: usize,
    /// `PAGEWIRE_TO_PAGE_TABLE`: one host pointer per pfn (NULL: no place); else NULL.
    pub page_table: *const *mut u8,
    /// Entries of `page_table`; else 0.
    pub page_table_len: usize,
    /// Callbacks for what the stream carries besides page contents (and for pages with
    /// `PAGEWIRE_TO_CALLBACKS`).
    pub events: pagewire_sink,
}

/// A checked destination: where pages go besides the callbacks.
pub(crate) struct Destination<'a> {
    events: &'a pagewire_sink,
    places: Places<'a>,
}

enum Places<'a> {
    None,
    Regions(&'a [pagewire_ram_region]),
    Table(&'a [*mut u8]),
}

fn invalid(what: &'static str) -> Fail {
    Fail::new(PAGEWIRE_INVALID_ARGUMENT, what)
}

impl<'a> Destination<'a> {
    /// Checks `d`: a known kind, the reserved field and the fields of other kinds zero, the
    /// arrays readable and aligned.
    ///
    /// # Safety
    /// `d.regions` is NULL or valid for reads of `d.region_count` regions, and
    /// `d.page_table` of `d.page_table_len` pointers, for `'a`.
    pub unsafe fn check(d: &'a pagewire_destination) -> Res<Destination<'a>> {
        use pagewire_destination_kind::*;
        if d.reserved != 0 {
            return Err(invalid("pagewire_destination.reserved must be 0"));
        }
        let no_regions = d.regions.is_null() && d.region_count == 0;
        let no_table = d.page_table.is_null() && d.page_table_len == 0;
        let places =
            match d.kind {
                k if k == PAGEWIRE_TO_CALLBACKS as u32 && no_regions && no_table => Places::None,
                k if k == PAGEWIRE_TO_RAM_REGIONS as u32 && no_table => {
                    // SAFETY: forwarded contract.
                    Places::Regions(unsafe { items(d.regions, d.region_count, "regions")? })
                }
                k if k == PAGEWIRE_TO_PAGE_TABLE as u32 && no_regions => {
                    // SAFETY: forwarded contract.
                    Places::Table(unsafe { items(d.page_table, d.page_table_len, "page_table")? })
                }
                k if k > PAGEWIRE_TO_PAGE_TABLE as u32 => {
                    return Err(invalid(
                        "pagewire_destination.kind is not a pagewire_destination_kind",
                    ))
                }
                _ => return Err(invalid(
                    "pagewire_destination sets regions or page_table that its kind does not use",
                )),
            };
        Ok(Destination {
            events: &d.events,
            places,
        })
    }

    /// The codec's `Destination` for a decoder in `mode` of pages of `page_size` bytes, with
    /// `staging` (one page, cache copy only) to write into without RAM; checks the RAM
    /// regions. An in-place decoder reads pages back from its destination, which callbacks
    /// alone cannot give: refused before anything is decoded.
    pub fn sink<'s>(
        &self,
        staging: &'s mut [u8],
        page_size: usize,
        mode: DecodeMode,
    ) -> Res<Events<'s>>
    where
        'a: 's,
    {
        let ram =
            match self.places {
                Places::None if mode == DecodeMode::InPlace => return Err(invalid(
                    "a decoder opened with PAGEWIRE_DECODE_IN_PLACE reads pages back from guest \
                     memory: give it PAGEWIRE_TO_RAM_REGIONS or PAGEWIRE_TO_PAGE_TABLE, not \
                     callbacks alone",
                )),
                Places::None => None,
                Places::Regions(regions) => Some(Ram::regions(regions, page_size)?),
                Places::Table(table) => Some(Ram::table(table)),
            };
        Ok(Events::new(self.events, ram, staging, page_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagewire_result::PAGEWIRE_NULL_ARGUMENT;
    use pagewire_destination_kind::*;

    fn callbacks() -> pagewire_destination {
        pagewire_destination {
            kind: PAGEWIRE_TO_CALLBACKS as u32,
            reserved: 0,
            regions: core::ptr::null(),
            region_count: 0,
            page_table: core::ptr::null(),
            page_table_len: 0,
            events: pagewire_sink {
                user: core::ptr::null_mut(),
                page: None,
                iteration_end: None,
                blob: None,
                end_of_stream: None,
            },
        }
    }

    #[test]
    fn kinds_fields_and_arrays_are_checked() {
        let mut ram = vec![0u8; 4096];
        let region = pagewire_ram_region {
            first_pfn: 0,
            page_count: 1,
            host: ram.as_mut_ptr(),
        };
        let table = [ram.as_mut_ptr()];
        let code = |d: &pagewire_destination| {
            // SAFETY: every pointer is NULL or points to a live array of the length given.
            unsafe { Destination::check(d) }.err().map(|f| f.code)
        };
        let ok = [
            callbacks(),
            pagewire_destination {
                kind: PAGEWIRE_TO_RAM_REGIONS as u32,
                regions: &region,
                region_count: 1,
                ..callbacks()
            },
            pagewire_destination {
                kind: PAGEWIRE_TO_PAGE_TABLE as u32,
                page_table: table.as_ptr(),
                page_table_len: 1,
                ..callbacks()
            },
        ];
        for d in &ok {
            assert_eq!(code(d), None);
        }
        let bad = [
            (
                pagewire_destination {
                    reserved: 1,
                    ..callbacks()
                },
                PAGEWIRE_INVALID_ARGUMENT,
            ),
            (
                pagewire_destination {
                    kind: 3,
                    ..callbacks()
                },
                PAGEWIRE_INVALID_ARGUMENT,
            ),
            (
                pagewire_destination {
                    region_count: 1,
                    ..ok[0]
                },
                PAGEWIRE_INVALID_ARGUMENT,
            ),
            (
                pagewire_destination {
                    page_table: table.as_ptr(),
                    ..ok[1]
                },
                PAGEWIRE_INVALID_ARGUMENT,
            ),
            (
                pagewire_destination {
                    regions: core::ptr::null(),
                    ..ok[1]
                },
                PAGEWIRE_NULL_ARGUMENT,
            ),
            (
                pagewire_destination {
                    page_table: core::ptr::null(),
                    ..ok[2]
                },
                PAGEWIRE_NULL_ARGUMENT,
            ),
        ];
        for (d, want) in &bad {
            assert_eq!(code(d), Some(*want), "{d:?}");
        }
    }
}
