//! Live migration of a running [`Vm`](crate::vmm::Vm) over any byte stream: pre-copy with
//! KVM's dirty log through the pagewire encoder, a stop policy, stop-and-copy with the vCPU
//! state and a memory digest in blobs, and a destination that resumes only a complete,
//! verified VM.
//!
//! * [`wire`]: the session around the codec stream (hello, blobs, reply);
//! * [`policy`]: stop policies and codec settings by name;
//! * [`compress`]: LZ4 on or off, picked from the measured CPU headroom;
//! * [`source`]: the sending side;
//! * [`dest`]: the receiving side;
//! * [`report`]: measurements as a table and JSON.

pub mod compress;
pub mod dest;
pub mod policy;
pub mod report;
pub mod source;
pub mod wire;

pub use compress::{AutoLz4, Compression};
pub use dest::{migrate_in, Arrived, DestOptions};
pub use policy::{parse_policy, Codec, Policy};
pub use report::{IterationRow, MigrationReport};
pub use source::{migrate_out, Gate, NoProgress, Progress, SourceOptions};
