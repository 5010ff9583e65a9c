//! The Network Block Device protocol, both roles, for the disk tunnel (issue 20): QEMU
//! moves disks with a mirror block job that writes to an NBD export, so a tunnel end is an
//! NBD server to the source QEMU's mirror job ([`server`]) and an NBD client of the
//! destination QEMU's export ([`client`]). Written from the protocol's specification
//! (`docs/STORAGE.md` says which parts): fixed newstyle negotiation and simple replies,
//! which every QEMU accepts when structured replies are refused.
//!
//! * [`proto`]: the messages, parsed without trusting the peer;
//! * [`server`]: one export to one client, over any byte stream;
//! * [`client`]: one export of a server, one request at a time.
//!
//! Over TCP, set `TCP_NODELAY` on both: a request's header and its payload (and a reply's
//! header and its data) are separate writes, which Nagle's algorithm holds back until the
//! peer's delayed acknowledgement (40 ms each): an 8 MiB copy by `qemu-img` through the disk
//! tunnel took 15.6 s without it and 0.2 s with it.

pub mod client;
pub mod proto;
pub mod server;

pub use client::Client;
pub use server::{serve, serve_tcp, BlockTarget, MemoryTarget, SessionEnd};
