//! pagewire's std side: the runner. It migrates real KVM guests live between hosts through
//! the codec (`pagewire send`, `receive`, `demo`, with a Synchronized Arrival coordinator),
//! replays memory snapshot series through the encoder and the decoder to measure the codec
//! alone (`replay`), simulates pre-copy migration over modelled WAN links (`simulate`), and
//! records real memory traces of QEMU guests (`trace capture`). The command line itself is
//! the binary's (`src/cli/`); this library holds everything below it, in layers that
//! depend only downwards:
//!
//! * [`live`]: send, receive and demo: a booted guest, the network and the engine together;
//! * [`migrate`]: the migration engine: pre-copy, stop policy, stop-and-copy, the session
//!   protocol and its deadlines, and a switchover in which the destination starts only a
//!   verified guest, and only once the source has committed; it drives any guest through
//!   the traits of [`migrate::guest`];
//! * [`vmm`]: our KVM VMM, the guest the engine drives today;
//! * [`disk`]: a disk's writes through the codec, from an NBD export to another;
//! * [`nbd`]: the Network Block Device protocol, server and client, for moving disks;
//! * [`net`]: links with bounded waits, WAN shaping, mutual TLS, an accept loop no stranger
//!   can stop or starve, and the Synchronized Arrival coordinator;
//! * [`replay`](mod@replay): a snapshot series through an encoder and a decoder, verified page by page;
//! * [`simulate`]: pre-copy migration modelled over a WAN link, every policy and codec
//!   setting;
//! * [`plot`]: SVG figures read at a glance (grouped bar charts), for the simulator and
//!   the comparisons;
//! * [`trace`]: snapshot series of a running QEMU guest, through QMP;
//! * [`machine`]: a real small Linux guest in QEMU that checks its own memory, a source and
//!   destination QEMU for its live migration, its console watched, both RAMs compared;
//! * [`qemu`]: QEMU's migration stream, parsed into pages and device state and written
//!   again (the first part of `pagewire tunnel`);
//! * [`qemu_stop`]: a pagewire stop policy deciding when a QEMU migration switches over,
//!   through QMP;
//! * [`encoders`]: the stream encoders, in process or the offload firmware in its own
//!   process;
//! * [`series`]: snapshot series, from a folder or the synthetic generator;
//! * shared by several layers: [`settings`] (codec settings and stages), [`workload`] (the
//!   built-in workloads by name), [`units`] (bandwidths and durations as people write
//!   them), [`host_memory`] (the memory this process may have, and budgets checked against
//!   it).

mod buffer;
pub mod disk;
pub mod encoders;
pub mod host_memory;
pub mod live;
pub mod machine;
pub mod migrate;
pub mod nbd;
pub mod net;
pub mod plot;
pub mod qemu;
pub mod qemu_stop;
pub mod replay;
pub mod series;
pub mod settings;
pub mod simulate;
pub mod trace;
pub mod tunnel;
pub mod units;
pub mod vmm;
pub mod workload;

pub use replay::{replay, replay_with, ReplayProgress, VerifyError};
pub use replay::{Counts, PassReport, ReplayReport};
pub use series::{Manifest, SnapshotDir, SnapshotSource, SyntheticParams, SyntheticSeries};
pub use settings::CodecSettings;
pub use workload::Workload;
