//! The first pass over a frame: every record checked against the stream so far (tags,
//! lengths, references, owners and retirement, iteration order, the end record's count)
//! before any page is written.
//!
//! The owner tables advance as the records are checked (the pfn map for good, the owners of
//! the frame's new slots in their pending list): a frame with an error leaves the decoder
//! failed, so nothing needs rolling back, and the apply pass reads the owners each record
//! saw from the stored table, which it fills as it goes.

use crate::error::{Error, Result};
use crate::owners::Owners;
use crate::wire::record::{
    block_item, blocks_to_last_ref, parse, slot_for_age, BlockItem, ParseState, Record,
};

/// What a valid frame adds to the stream's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    /// The iteration expected next after this frame.
    pub iteration: u64,
    /// Page records of the stream up to the end of this frame.
    pub page_records: u64,
    /// Iteration ends in this frame.
    pub iteration_ends: u64,
    /// Blobs in this frame.
    pub blobs: u64,
    /// The frame holds the end record (as its last record).
    pub ended: bool,
}

/// Checks every record of `body`, parsed from `st` on, the stream so far having reached
/// `iteration` and `page_records`.
pub(super) fn check_body(
    body: &[u8],
    mut st: ParseState,
    iteration: u64,
    page_records: u64,
    owners: &mut Owners<'_, true>,
) -> Result<Tally> {
    let mut t = Tally {
        iteration,
        page_records,
        iteration_ends: 0,
        blobs: 0,
        ended: false,
    };
    let mut pos = 0;
    while pos < body.len() {
        if t.ended {
            return Err(Error::TrailingData);
        }
        let before = st;
        match parse(body, &mut pos, &mut st)? {
            Record::IterationEnd { iteration: got } => {
                if got != t.iteration {
                    return Err(Error::IterationOutOfOrder {
                        expected: t.iteration,
                        got,
                    });
                }
                t.iteration += 1;
                t.iteration_ends += 1;
            }
            Record::End { page_records: n } => {
                if n != t.page_records {
                    return Err(Error::Malformed(
                        "end record page count differs from pages received",
                    ));
                }
                t.ended = true;
            }
            Record::Blob { .. } => t.blobs += 1,
            page => {
                check_owners(&page, &before, owners)?;
                t.page_records += 1;
            }
        }
    }
    Ok(t)
}

/// The retirement rule for one page record parsed from `st` (`docs/FORMAT.md`): every
/// slot it refers to must be live, a PATCH must name its own page's slot; then its page's
/// old slot retires unless the record leaves the page equal to it, and an inserting record
/// makes the new slot its page's.
fn check_owners(record: &Record<'_>, st: &ParseState, owners: &mut Owners<'_, true>) -> Result<()> {
    let slot = |age| slot_for_age(st.inserted, st.capacity, age);
    match *record {
        Record::Zero { pfn } => owners.retire(pfn),
        Record::Dup { pfn, age } => {
            let s = slot(age)?;
            live(owners, s)?;
            if owners.slot_of(pfn) != Some(s) {
                owners.retire(pfn);
            }
        }
        Record::Raw {
            pfn, cached: true, ..
        } => insert(owners, st, pfn)?,
        Record::Raw {
            pfn, cached: false, ..
        } => owners.retire(pfn),
        Record::Delta {
            pfn,
            age,
            in_place: true,
            ..
        } => {
            let s = slot(age)?;
            if owners.slot_of(pfn) != Some(s) {
                return Err(if owners.is_live(s) {
                    Error::ForeignPatch
                } else {
                    Error::RetiredSlot
                });
            }
        }
        Record::Delta {
            pfn,
            age,
            in_place: false,
            ..
        } => {
            live(owners, slot(age)?)?;
            insert(owners, st, pfn)?;
        }
        Record::Blocks {
            pfn,
            kinds,
            base_age,
            payload,
        } => {
            if let Some(age) = base_age {
                live(owners, slot(age)?)?;
            }
            // items after the last reference hold none: not walked again
            let kinds = &kinds[..st.blocks_per_page];
            let mut pos = 0;
            for &k in &kinds[..blocks_to_last_ref(kinds)] {
                if let BlockItem::Ref { age, .. } = block_item(payload, &mut pos, k, st)? {
                    live(owners, slot(age)?)?;
                }
            }
            insert(owners, st, pfn)?;
        }
        Record::IterationEnd { .. } | Record::Blob { .. } | Record::End { .. } => {}
    }
    Ok(())
}

fn live(owners: &Owners<'_, true>, slot: usize) -> Result<()> {
    if owners.is_live(slot) {
        Ok(())
    } else {
        Err(Error::RetiredSlot)
    }
}

/// An inserting record for `pfn`, its new slot the head of the ring at `st`.
fn insert(owners: &mut Owners<'_, true>, st: &ParseState, pfn: u64) -> Result<()> {
    let head = (st.inserted % st.capacity) as usize;
    if owners.insert(head, st.inserted >= st.capacity, pfn) {
        Ok(())
    } else {
        Err(Error::Malformed(
            "a frame inserts more pages than frame_bytes / 16",
        ))
    }
}
