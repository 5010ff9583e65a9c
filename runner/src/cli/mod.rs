//! The command line: every clap type and argument check of `pagewire`, one module per
//! command group. Each turns its arguments into the library's options, calls the library
//! and prints the result; below this layer nothing knows about clap.

use clap::{Parser, Subcommand};

pub mod deadlines;
pub mod disk;
pub mod disk_demo;
pub mod encoder;
pub mod live;
pub mod progress;
pub mod replay;
pub mod simulate;
pub mod trace;
pub mod tunnel;

#[derive(Parser)]
#[command(
    name = "pagewire",
    version,
    about = "pagewire: live VM migration page codec tools"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Live-migrate a real KVM guest between two processes over loopback, with a WAN shape
    /// (100 Mbit/s, +20 ms by default): both ends in one command.
    Demo(live::DemoArgs),
    /// Boot a KVM guest and live-migrate it to a `pagewire receive` at --to.
    Send(live::SendArgs),
    /// Wait for one live migration on --listen, resume the VM, let it check itself.
    Receive(live::ReceiveArgs),
    /// Make the pre-shared CA and certificates for mutual TLS between send and receive.
    Keygen(live::KeygenArgs),
    /// Coordinate Synchronized Arrival for `send --group` members on --listen.
    Coordinator(live::CoordinatorArgs),
    /// Replay a snapshot series through the encoder and decoder, verify every page, and
    /// report wire bytes and codec speed per pass.
    Replay(replay::ReplayArgs),
    /// Simulate pre-copy migrations over a WAN link for every stop policy and codec
    /// setting, on a snapshot series or the built-in workloads; print a table, write SVG
    /// plots (and JSON).
    Simulate(simulate::SimulateArgs),
    /// Record real memory traces (`trace capture`: snapshots of a QEMU guest through QMP).
    Trace(trace::TraceArgs),
    /// Carry an unmodified QEMU's live migration through pagewire: `tunnel source` beside
    /// the source QEMU, `tunnel dest` beside the destination QEMU.
    Tunnel(tunnel::TunnelArgs),
    /// Carry a QEMU mirror job's disk writes (storage migration) through the codec:
    /// `disk source` as the mirror job's NBD target, `disk dest` beside the destination
    /// QEMU's NBD export.
    Disk(disk::DiskArgs),
}
