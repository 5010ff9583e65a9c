//! The numbers of QEMU's migration stream, each written once. Facts from QEMU 7.2's
//! `migration/savevm.c` and `migration/ram.c`, checked against streams of QEMU 7.2 here;
//! every multi-byte integer is big-endian.

/// `QEVM`: the first four bytes of a migration stream.
pub const MAGIC: u32 = 0x5145_564d;
/// The first four bytes of a multifd channel (its packets carry pages outside the main
/// stream).
pub const MULTIFD_MAGIC: u32 = 0x1122_3344;
/// The stream version current QEMUs write (version 2 is an older layout).
pub const VERSION: u32 = 3;

/// Section and record types: the byte that starts each top-level item.
pub mod item {
    /// End of the device state (followed by the optional VM description).
    pub const EOF: u8 = 0x00;
    /// First section of an iterable handler (`ram`): full header, then its setup data.
    pub const SECTION_START: u8 = 0x01;
    /// A middle section of an iterable handler: section id only.
    pub const SECTION_PART: u8 = 0x02;
    /// The last section of an iterable handler (the stop-and-copy pass): section id only.
    pub const SECTION_END: u8 = 0x03;
    /// The whole state of a non-iterable device: full header.
    pub const SECTION_FULL: u8 = 0x04;
    /// A vmstate subsection (inside the configuration record or a device's state).
    pub const SUBSECTION: u8 = 0x05;
    /// The JSON VM description after [`EOF`].
    pub const VMDESCRIPTION: u8 = 0x06;
    /// The configuration record (machine type and more) right after the header.
    pub const CONFIGURATION: u8 = 0x07;
    /// A command to the destination (postcopy, return path, COLO ...).
    pub const COMMAND: u8 = 0x08;
    /// Follows every section when the machine type has section footers: this byte, then
    /// the section id again.
    pub const SECTION_FOOTER: u8 = 0x7e;
}

/// The name, version and instance of the RAM section.
pub mod ram_section {
    /// The idstr of the RAM handler.
    pub const NAME: &[u8] = b"ram";
    /// The only version of the RAM section format this parser reads.
    pub const VERSION: u32 = 4;
}

/// Flag bits in the low bits (below the target page size) of a RAM record's first word;
/// the high bits are the page's offset in its block (or the total RAM size).
pub mod flag {
    /// Obsolete: no current QEMU writes it.
    pub const FULL: u64 = 0x01;
    /// A page filled with one byte (always 0 from current sources): one fill byte follows.
    pub const ZERO: u64 = 0x02;
    /// The block list (START section only): total size in the high bits.
    pub const MEM_SIZE: u64 = 0x04;
    /// A whole page follows.
    pub const PAGE: u64 = 0x08;
    /// End of this section's RAM records.
    pub const EOS: u64 = 0x10;
    /// Same block as the previous page record, whose name is then left out. The previous
    /// page record may be in an earlier section.
    pub const CONTINUE: u64 = 0x20;
    /// An XBZRLE delta against the page's previous version follows.
    pub const XBZRLE: u64 = 0x40;
    /// RDMA's hook (`rdma:` transport only).
    pub const HOOK: u64 = 0x80;
    /// A zlib-compressed page (the `compress` capability).
    pub const COMPRESS_PAGE: u64 = 0x100;
    /// Multifd's synchronisation point in the main stream (QEMU 8.0 and later).
    pub const MULTIFD_FLUSH: u64 = 0x200;
}

/// The byte before an XBZRLE page's length: the only encoding QEMU knows.
pub const XBZRLE_ENCODING: u8 = 0x01;

/// Names of the configuration record's subsections.
pub mod config {
    /// Present when the target's page size is above its minimum: a 32-bit count of bits.
    pub const TARGET_PAGE_BITS: &[u8] = b"configuration/target-page-bits";
    /// Capabilities both ends must agree on (`x-ignore-shared` in 7.2): a 32-bit count, then
    /// each name as a length byte and its bytes.
    pub const CAPABILITIES: &[u8] = b"configuration/capabilities";
    /// The source's UUID when the `validate-uuid` capability is on: 16 bytes.
    pub const UUID: &[u8] = b"configuration/uuid";
}

/// QEMU 10's notice that the stop-and-copy begins (`QEMU_VM_COMMAND`, this command, length
/// 0), written before RAM's END section when the machine type asks for it; the destination
/// tells its devices. The only command the tunnel carries.
pub const SWITCHOVER_START: u16 = 11;

/// QEMU's command numbers (`QEMU_VM_COMMAND`, then a 16-bit command and a 16-bit length),
/// by name, for the refusal message.
pub fn command_name(cmd: u16) -> &'static str {
    match cmd {
        1 => "OPEN_RETURN_PATH",
        2 => "PING",
        3 => "POSTCOPY_ADVISE",
        4 => "POSTCOPY_LISTEN",
        5 => "POSTCOPY_RUN",
        6 => "POSTCOPY_RAM_DISCARD",
        7 => "PACKAGED",
        8 => "ENABLE_COLO",
        9 => "POSTCOPY_RESUME",
        10 => "RECV_BITMAP",
        SWITCHOVER_START => "SWITCHOVER_START",
        _ => "unknown",
    }
}
