//! The migration engine: live migration of a running guest over any byte stream. Pre-copy
//! over the guest's dirty log through a stream encoder, a stop policy (optionally gated by
//! a Synchronized Arrival group), stop-and-copy with the guest's state and a memory digest
//! in blobs, and a switchover in which the destination starts only a complete, verified
//! guest and only once the source has committed. It drives the guest through the traits of
//! [`guest`], so it does not know which VMM runs it; the link is any byte stream whose
//! waits can be bounded (`net::Link`).
//!
//! * [`guest`]: what the engine needs of a guest at either end;
//! * [`source`]: the sending side;
//! * [`dest`]: the receiving side; [`arrival`]: where its decoder puts the stream;
//! * [`session`]: the session around the codec stream (hello, blobs, acknowledgements, the
//!   switchover's messages, status queries);
//! * [`switchover`]: the destination's one decision per migration, start or abort;
//! * [`policy`]: stop policies and codec settings by name;
//! * [`deadlines`]: how long each side waits, and which wait expired;
//! * [`lanes`]: the pages split among encoders on threads and connections of their own;
//! * [`progress`]: what a migration tells its progress display;
//! * [`compress`]: LZ4 on or off, picked from the measured CPU headroom;
//! * [`link_stage`] and [`zstd_level`]: zstd over a whole stream on its own thread, its
//!   level chosen as it runs (the QEMU tunnel's link; the disk tunnel uses the tuner);
//! * [`report`]: measurements as a table and JSON.

pub mod arrival;
pub mod compress;
pub mod deadlines;
pub mod dest;
pub mod guest;
pub mod lanes;
pub mod link_stage;
mod pages_out;
pub mod policy;
pub mod progress;
pub mod report;
pub mod session;
pub mod source;
pub mod switchover;
pub mod zstd_level;

pub use compress::{AutoStage, Compression, Stage};
pub use deadlines::{Deadline, Deadlines};
pub use dest::{arrive, migrate_in, Arrived, Decoding, DestOptions, LaneLinks, OneConnection};
pub use guest::PageRead;
pub use guest::{DestGuest, GuestBuilder, SourceGuest};
pub use policy::{parse_policy, Codec};
pub use progress::{MigrationProgress, NoProgress};
pub use report::{IterationRow, MigrationReport};
pub use source::{migrate_out, Gate, OutcomeUnknown, Redial, SourceOptions};
pub use switchover::Outcomes;
