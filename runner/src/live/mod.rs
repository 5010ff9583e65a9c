//! Live: a real KVM guest of our VMM migrated between processes over TCP. Boots the guest,
//! connects the network layer's pieces (shaped TCP, mutual TLS, the coordinator's gate) to
//! the migration engine, and at the destination lets the arrived guest run and check
//! itself: the library side of `pagewire send`, `receive` and `demo`.

mod demo;
mod receive;
mod send;

pub use demo::Demo;
pub use receive::{receive_one, EventLog, ReceiveConfig, ReceiveEvent, Received, Receiver};
pub use send::{boot_and_send, boot_guest, send_vm, GroupMembership, GuestConfig, SendConfig};
