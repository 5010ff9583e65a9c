//! Traces: recording real guest memory as a snapshot series. [`capture`] stops a running
//! QEMU guest through [`qmp`] (the QEMU Machine Protocol client), saves its RAM, lets it
//! run on, and writes a folder `replay` and `simulate` read; [`launch`] starts the QEMU
//! itself when asked to (`pagewire trace capture --launch`).

pub mod capture;
pub mod launch;
pub mod qmp;
