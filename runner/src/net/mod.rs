//! Network: moving bytes between hosts. The migration's byte stream ([`Link`]) over TCP with
//! every wait bounded ([`deadline`]), WAN shaping on the sending side ([`shape`]), mutual TLS
//! on pre-shared certificates ([`tls`]), an accept loop that no stranger can stop or starve
//! ([`listen`]), one job per connection at a time on it ([`one_at_a_time`]: the tunnels'
//! destination ends), and the Synchronized Arrival coordinator, its server and its client
//! ([`coord`]). Nothing here knows about guests or the codec's stream.

pub mod coord;
pub mod deadline;
pub mod dial;
pub mod listen;
pub mod one_at_a_time;
pub mod relay;
pub mod shape;
pub mod tls;

pub use deadline::{connect_by, is_timeout, Link, TimedTcp, Waits};
pub use dial::{dial, dial_on};
pub use shape::{Shape, ShapedStream, Wire, SMALL_UNSENT};
