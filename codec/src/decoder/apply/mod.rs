//! The second pass over a frame: every record of an already validated body applied in
//! order, its page written to the destination, in either storage mode.
//!
//! | module | its one job |
//! | --- | --- |
//! | this one | the pass itself, what both modes share |
//! | `copy` | cache copy: pages rebuilt in the decoder's cache, then copied out |
//! | `in_place` | in place: pages built in destination memory, references read from it |

mod copy;
mod in_place;

use super::destination::{one_page, writable};
use super::Destination;
use crate::cache::{PageCache, Ring};
use crate::error::{Error, Result};
use crate::owners::Owners;
use crate::wire::record::{parse_validated, ParseState, Record};

/// Where the decoder keeps the pages its stream refers to.
pub(super) enum Store<'a> {
    /// Only their order; the pages are in destination memory.
    InPlace(Ring),
    /// A copy of every cached page.
    CacheCopy(PageCache<'a>),
}

/// Everything the apply pass changes: the store, the owner tables, a page of scratch for a
/// page built out of (among others) the page it replaces.
pub(super) struct Pages<'a> {
    pub store: Store<'a>,
    pub owners: Owners<'a, true>,
    pub scratch: &'a mut [u8],
}

impl Pages<'_> {
    /// The FIFO order of the cache.
    pub fn ring(&self) -> &Ring {
        match &self.store {
            Store::InPlace(ring) => ring,
            Store::CacheCopy(cache) => cache.ring(),
        }
    }

    /// Applies every record of `body`, parsed from `st` on, in order. Every check already
    /// passed (the first pass: a whole-page delta is walked once more only to apply it), so an error here comes from the destination (a pfn it has
    /// no place for) or means a bug; it is returned, never panicked on.
    pub fn apply_body<D: Destination>(
        &mut self,
        body: &[u8],
        mut st: ParseState,
        dest: &mut D,
    ) -> Result<()> {
        let mut pos = 0;
        while pos < body.len() {
            let before = st;
            match parse_validated(body, &mut pos, &mut st)? {
                Record::IterationEnd { iteration } => dest.iteration_end(iteration),
                Record::Blob { tag, data } => dest.blob(tag, data),
                Record::End { .. } => dest.end_of_stream(),
                page => {
                    let (pfn, unparsed) = match &mut self.store {
                        Store::InPlace(ring) => in_place::apply_page(
                            ring,
                            &mut self.owners,
                            self.scratch,
                            page,
                            &before,
                            dest,
                        )?,
                        Store::CacheCopy(cache) => copy::apply_page(
                            cache,
                            &mut self.owners,
                            self.scratch,
                            page,
                            &before,
                            dest,
                        )?,
                    };
                    pos += unparsed;
                    dest.page_done(pfn);
                }
            }
            if st.inserted != self.ring().inserted() {
                return Err(Error::Malformed("cache out of step"));
            }
        }
        self.owners.end_frame();
        Ok(())
    }
}
