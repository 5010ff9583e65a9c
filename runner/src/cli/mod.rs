//! The command line: every clap type and argument check of `pagewire`, one module per
//! command group. Each turns its arguments into the library's options, calls the library
//! and prints the result; nothing below this layer knows about clap.

pub mod encoder;
