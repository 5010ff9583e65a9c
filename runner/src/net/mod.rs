//! Moving the migration stream between processes: TCP, WAN shaping on the sending side, and
//! (in [`tls`]) mutual TLS on pre-shared certificates.

pub mod shape;
pub mod tls;

use std::io::{Read, Write};

pub use shape::{Shape, ShapedStream};

/// A bidirectional byte stream a migration runs over.
pub trait Link: Read + Write + Send {}
impl<T: Read + Write + Send> Link for T {}
