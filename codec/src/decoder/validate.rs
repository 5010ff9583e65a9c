//! The first pass over a frame: every record checked against the stream so far (tags,
//! lengths, references, iteration order, the end record's count) before any page is handed
//! out.

use crate::error::{Error, Result};
use crate::wire::record::{parse, ParseState, Record};

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
            _ => t.page_records += 1,
        }
    }
    Ok(t)
}
