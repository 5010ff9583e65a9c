//! Network: moving bytes between hosts. The migration's byte stream ([`Link`]) over TCP,
//! WAN shaping on the sending side ([`shape`]), mutual TLS on pre-shared certificates
//! ([`tls`]), and the Synchronized Arrival coordinator, its server and its client
//! ([`coord`]). Nothing here knows about guests or the codec's stream.

pub mod coord;
pub mod shape;
pub mod tls;

use std::io::{Read, Write};

pub use shape::{Shape, ShapedStream};

/// A bidirectional byte stream a migration runs over.
pub trait Link: Read + Write + Send {}
impl<T: Read + Write + Send> Link for T {}
