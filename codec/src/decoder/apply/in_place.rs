//! In place: each page is built directly in destination memory, and what a record refers
//! to is read from the memory of the slot's owner, which holds the slot's content (the
//! retirement rule keeps it so). A page built out of its own old content (a BLOCKS record
//! that refers to the page it replaces) is built in scratch first.

use super::{one_page, writable};
use crate::cache::Ring;
use crate::config::MAX_BLOCKS_PER_PAGE;
use crate::decoder::Destination;
use crate::error::{Error, Result};
use crate::owners::Owners;
use crate::wire::delta;
use crate::wire::record::{
    block_item, block_item_validated, blocks_to_last_ref, BlockItem, BlockKind, ParseState, Record,
};

/// Writes the page of a page record (parsed from state `st` by `parse_validated`) into
/// `dest`; returns its pfn and the length of what `parse_validated` left unparsed (a
/// whole-page delta, a BLOCKS payload; 0 for other records).
pub(super) fn apply_page<D: Destination>(
    ring: &mut Ring,
    owners: &mut Owners<'_, true>,
    scratch: &mut [u8],
    record: Record<'_>,
    st: &ParseState,
    dest: &mut D,
) -> Result<(u64, usize)> {
    let ps = st.page_size;
    let owner_of_age = |age| ring.slot_for_age(age).map(|s| owners.stored_owner(s));
    let mut unparsed = 0;
    let pfn = match record {
        Record::Zero { pfn } => {
            dest.zero_page(pfn, ps)?;
            pfn
        }
        Record::Dup { pfn, age } => {
            let from = owner_of_age(age)?;
            if from != pfn {
                copy_page(dest, from, pfn, ps)?;
            }
            pfn
        }
        Record::Raw { pfn, bytes, cached } => {
            writable(dest, pfn, ps)?.copy_from_slice(bytes);
            if cached {
                insert(ring, owners, pfn);
            }
            pfn
        }
        Record::Delta {
            pfn,
            rle,
            in_place: true,
            ..
        } => {
            // validated: the slot is this page's own, equal to its memory
            unparsed = delta::apply(rle, writable(dest, pfn, ps)?)?;
            pfn
        }
        Record::Delta {
            pfn,
            age,
            rle,
            in_place: false,
        } => {
            let from = owner_of_age(age)?;
            if from != pfn {
                copy_page(dest, from, pfn, ps)?;
            }
            unparsed = delta::apply(rle, writable(dest, pfn, ps)?)?;
            insert(ring, owners, pfn);
            pfn
        }
        Record::Blocks {
            pfn,
            kinds,
            base_age,
            payload,
        } => {
            let base = match base_age {
                Some(age) => Some(owner_of_age(age)?),
                None => None,
            };
            let blocks = Blocks {
                ring,
                owners,
                st,
                kinds: &kinds,
                base,
                payload,
            };
            unparsed = if blocks.refers_to(pfn)? {
                let n = blocks.build_in_scratch(scratch, dest)?;
                writable(dest, pfn, ps)?.copy_from_slice(scratch);
                n
            } else {
                blocks.build_in(pfn, dest)?
            };
            insert(ring, owners, pfn);
            pfn
        }
        Record::IterationEnd { .. } | Record::Blob { .. } | Record::End { .. } => 0,
    };
    Ok((pfn, unparsed))
}

/// The head slot, now `pfn`'s: its owner stored, the ring advanced.
fn insert(ring: &mut Ring, owners: &mut Owners<'_, true>, pfn: u64) {
    owners.store_owner(ring.head_slot(), pfn);
    ring.advance();
}

/// Page `to` becomes a copy of page `from` (`from != to`).
fn copy_page<D: Destination>(dest: &mut D, from: u64, to: u64, page_size: usize) -> Result<()> {
    let (src, dst) = dest.page_pair(from, to)?;
    one_page(src, page_size)?;
    one_page(dst, page_size)?;
    dst.copy_from_slice(src);
    Ok(())
}

/// A validated BLOCKS record, its references resolved to owner pages.
struct Blocks<'r, 'o> {
    ring: &'r Ring,
    owners: &'r Owners<'o, true>,
    st: &'r ParseState,
    kinds: &'r [BlockKind; MAX_BLOCKS_PER_PAGE],
    /// Owner of the base page of the delta blocks.
    base: Option<u64>,
    payload: &'r [u8],
}

/// Where one block comes from: a block of another page's memory, and what then goes on it.
enum Source<'b> {
    Page { pfn: u64, block: usize },
    Nothing,
    Literal(&'b [u8]),
}

impl<'r> Blocks<'r, '_> {
    fn bpp(&self) -> usize {
        self.st.blocks_per_page
    }

    fn bs(&self) -> usize {
        self.st.page_size / self.st.blocks_per_page
    }

    /// Block `b`'s item at `*pos`: where it comes from, and its delta if it has one (which
    /// runs to the end of the payload: its caller adds the length `delta::apply` returns to
    /// `*pos`).
    fn item(&self, pos: &mut usize, b: usize) -> Result<(Source<'r>, Option<&'r [u8]>)> {
        Ok(
            match block_item_validated(self.payload, pos, self.kinds[b], self.st)? {
                BlockItem::Zero => (Source::Nothing, None),
                BlockItem::Literal(bytes) => (Source::Literal(bytes), None),
                BlockItem::Ref { age, block } => {
                    let slot = self.ring.slot_for_age(age)?;
                    let pfn = self.owners.stored_owner(slot);
                    (Source::Page { pfn, block }, None)
                }
                BlockItem::Delta(rle) => {
                    let pfn = self
                        .base
                        .ok_or(Error::Malformed("delta block without a base"))?;
                    (Source::Page { pfn, block: b }, Some(rle))
                }
            },
        )
    }

    /// True when a block comes from page `pfn` itself: a delta block on its base, or a
    /// reference (only items up to the last reference are walked).
    fn refers_to(&self, pfn: u64) -> Result<bool> {
        // a base is named only when some block is a delta on it
        if self.base == Some(pfn) {
            return Ok(true);
        }
        let kinds = &self.kinds[..self.bpp()];
        let mut pos = 0;
        for &k in &kinds[..blocks_to_last_ref(kinds)] {
            if let BlockItem::Ref { age, .. } = block_item(self.payload, &mut pos, k, self.st)? {
                let slot = self.ring.slot_for_age(age)?;
                if self.owners.stored_owner(slot) == pfn {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// Builds the page in `scratch`, reading the pages it refers to; returns the length of
    /// the payload.
    fn build_in_scratch<D: Destination>(&self, scratch: &mut [u8], dest: &D) -> Result<usize> {
        let bs = self.bs();
        let mut pos = 0;
        for b in 0..self.bpp() {
            let dst = &mut scratch[b * bs..(b + 1) * bs];
            let (source, rle) = self.item(&mut pos, b)?;
            match source {
                Source::Nothing => dst.fill(0),
                Source::Literal(bytes) => dst.copy_from_slice(bytes),
                Source::Page { pfn, block } => {
                    let src = dest.page(pfn)?;
                    one_page(src, self.st.page_size)?;
                    dst.copy_from_slice(&src[block * bs..(block + 1) * bs]);
                }
            }
            if let Some(rle) = rle {
                pos += delta::apply(rle, dst)?;
            }
        }
        Ok(pos)
    }

    /// Builds the page in page `pfn`'s memory, which no block comes from; returns the length
    /// of the payload.
    fn build_in<D: Destination>(&self, pfn: u64, dest: &mut D) -> Result<usize> {
        let bs = self.bs();
        let ps = self.st.page_size;
        let mut pos = 0;
        for b in 0..self.bpp() {
            let (source, rle) = self.item(&mut pos, b)?;
            let r = b * bs..(b + 1) * bs;
            let dst = match source {
                Source::Nothing => {
                    let dst = &mut writable(dest, pfn, ps)?[r];
                    dst.fill(0);
                    dst
                }
                Source::Literal(bytes) => {
                    let dst = &mut writable(dest, pfn, ps)?[r];
                    dst.copy_from_slice(bytes);
                    dst
                }
                Source::Page { pfn: from, block } => {
                    let (src, dst) = dest.page_pair(from, pfn)?;
                    one_page(src, ps)?;
                    one_page(dst, ps)?;
                    let dst = &mut dst[r];
                    dst.copy_from_slice(&src[block * bs..(block + 1) * bs]);
                    dst
                }
            };
            if let Some(rle) = rle {
                pos += delta::apply(rle, dst)?;
            }
        }
        Ok(pos)
    }
}
