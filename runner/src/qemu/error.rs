//! Why a stream is refused: one variant per thing the parser does not carry, each saying
//! what it found and what to do. Every refusal is final for the stream.

use std::fmt;

/// What the parser supports, for the end of every refusal about the stream's shape.
const SUPPORTED: &str = "pagewire carries single-connection precopy migration, with or \
    without xbzrle (no multifd, postcopy, block migration or compression)";

/// A stream the parser refuses, or one that ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// The first four bytes are not `QEVM`.
    NotQemuStream { magic: [u8; 4] },
    /// The connection is one of multifd's extra channels.
    MultifdChannel,
    /// A stream version other than 3.
    Version { version: u32 },
    /// The machine type in the configuration record is longer than any QEMU writes.
    MachineTypeTooLong { len: u32 },
    /// A configuration subsection QEMU 7.2 does not write.
    UnknownConfigSubsection { name: String },
    /// A configuration subsection twice.
    RepeatedConfigSubsection { name: String },
    /// The configuration's target page size differs from the parser's.
    TargetPageBits { bits: u32, expected: u32 },
    /// More capabilities in the configuration than QEMU has.
    TooManyCapabilities { count: u32 },
    /// A capability the configuration says both ends need; each changes the stream.
    Capability { name: String },
    /// A command to the destination (postcopy, return path, COLO).
    Command { cmd: u16 },
    /// A byte where a section must start that starts none.
    UnknownSectionType { byte: u8 },
    /// An iterable section other than `ram` (block migration, dirty bitmaps, vfio ...).
    IterableSection { name: String },
    /// A RAM section version other than 4.
    RamVersion { version: u32 },
    /// A second `ram` START section.
    RepeatedRamStart,
    /// A PART or END section before the `ram` START section.
    SectionBeforeRamStart { id: u32 },
    /// A PART or END section of a section id that is not RAM's.
    UnknownSection { id: u32 },
    /// A PART or END section after RAM's END section.
    SectionAfterRamEnd { id: u32 },
    /// Device state (a FULL section or EOF) before RAM's END section.
    DeviceStateBeforeRamEnd,
    /// A section footer naming another section.
    FooterMismatch { found: u32, expected: u32 },
    /// Footers after some sections and not after others.
    FooterInconsistent,
    /// A RAM record's flags include a bit the parser refuses or does not know.
    Flags { flags: u64 },
    /// A RAM record's flags combine kinds that exclude each other, or none.
    FlagCombination { flags: u64 },
    /// An end-of-section record with an offset or other flags.
    MalformedEos { word: u64 },
    /// The block list outside the START section, or twice.
    MisplacedBlockList,
    /// A page record before the block list.
    PageBeforeBlockList,
    /// A block with an empty name in the block list.
    EmptyBlockName,
    /// More RAM blocks than [`super::MAX_BLOCKS`].
    TooManyBlocks,
    /// A block listed twice.
    RepeatedBlock { name: String },
    /// A block length of zero or not a whole number of pages.
    BlockLength { name: String, length: u64 },
    /// Block lengths that add up to more than the stated total.
    BlockListTotal {
        name: String,
        length: u64,
        remaining: u64,
    },
    /// A page record naming a block not in the block list.
    UnknownBlock { name: String },
    /// A page record that continues the previous block when there was none.
    ContinueWithoutBlock,
    /// A page whose end lies past its block's end.
    PagePastBlock {
        block: String,
        offset: u64,
        length: u64,
    },
    /// An XBZRLE page with another encoding byte than QEMU's.
    XbzrleEncoding { byte: u8 },
    /// An XBZRLE page longer than a page.
    XbzrleTooLong { len: u16 },
    /// An XBZRLE page QEMU's decoder would reject.
    XbzrleInvalid { block: String, offset: u64 },
    /// The stream ended inside an item, or before the device state.
    Truncated { inside: &'static str },
    /// The caller's event sink failed earlier; the parser stopped there.
    Abandoned,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StreamError::*;
        match self {
            NotQemuStream { .. }
            | MultifdChannel
            | Version { .. }
            | MachineTypeTooLong { .. }
            | UnknownConfigSubsection { .. }
            | RepeatedConfigSubsection { .. }
            | TargetPageBits { .. }
            | TooManyCapabilities { .. }
            | Capability { .. }
            | Command { .. } => self.fmt_start(f),
            UnknownSectionType { .. }
            | IterableSection { .. }
            | RamVersion { .. }
            | RepeatedRamStart
            | SectionBeforeRamStart { .. }
            | UnknownSection { .. }
            | SectionAfterRamEnd { .. }
            | DeviceStateBeforeRamEnd
            | FooterMismatch { .. }
            | FooterInconsistent => self.fmt_section(f),
            _ => self.fmt_record(f),
        }
    }
}

impl StreamError {
    /// The header, the configuration record and commands.
    fn fmt_start(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StreamError::*;
        match self {
            NotQemuStream { magic } => write!(
                f,
                "not a QEMU migration stream (starts {magic:02x?}, not 'QEVM'): point the \
                 source's `migrate` at pagewire, nothing else"
            ),
            MultifdChannel => write!(
                f,
                "multifd is on (this connection is a multifd channel): {SUPPORTED}; run \
                 `migrate-set-capabilities multifd=false` on both QEMUs"
            ),
            Version { version } => write!(
                f,
                "migration stream version {version}: pagewire parses version 3, which \
                 current QEMUs write"
            ),
            MachineTypeTooLong { len } => write!(
                f,
                "the configuration names a machine type of {len} bytes (at most 256): a \
                 damaged stream"
            ),
            UnknownConfigSubsection { name } => write!(
                f,
                "the configuration carries subsection '{name}', which QEMU 7.2 does not \
                 write: a newer QEMU; pagewire parses QEMU 7.2's stream"
            ),
            RepeatedConfigSubsection { name } => {
                write!(f, "the configuration carries subsection '{name}' twice")
            }
            TargetPageBits { bits, expected } => write!(
                f,
                "the stream's target pages are 2^{bits} bytes, the parser was set up for \
                 2^{expected}: start it with the guest architecture's target page size"
            ),
            TooManyCapabilities { count } => {
                write!(
                    f,
                    "the configuration lists {count} capabilities, more than QEMU has"
                )
            }
            Capability { name } => match name.as_str() {
                "x-ignore-shared" => write!(
                    f,
                    "x-ignore-shared is on (shared RAM blocks are left out and the block \
                     list carries addresses): {SUPPORTED}; run `migrate-set-capabilities \
                     x-ignore-shared=false`"
                ),
                "mapped-ram" => write!(
                    f,
                    "mapped-ram is on (a stream laid out for a file): {SUPPORTED}; run \
                     `migrate-set-capabilities mapped-ram=false`"
                ),
                other => write!(
                    f,
                    "the source requires capability '{other}' on both ends, which changes \
                     the stream in a way pagewire does not parse; turn it off with \
                     `migrate-set-capabilities`"
                ),
            },
            Command { cmd } => {
                let name = super::format::command_name(*cmd);
                let what = match *cmd {
                    3..=7 | 9 | 10 => {
                        "postcopy-ram is on; run `migrate-set-capabilities postcopy-ram=false`"
                    }
                    1 => {
                        "the source opened a return path (return-path or postcopy is on); run \
                         `migrate-set-capabilities return-path=false postcopy-ram=false`"
                    }
                    8 => "x-colo is on; run `migrate-set-capabilities x-colo=false`",
                    super::format::SWITCHOVER_START => {
                        "out of place: pagewire carries it only as QEMU 10 writes it, with no \
                         payload, between RAM sections before RAM's END section"
                    }
                    _ => "a command pagewire does not know",
                };
                write!(
                    f,
                    "the stream carries command {name} ({cmd}): {what}; {SUPPORTED}"
                )
            }
            // `fmt` routes only the variants above here.
            other => write!(f, "{other:?}"),
        }
    }

    /// Sections and footers.
    fn fmt_section(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StreamError::*;
        match self {
            UnknownSectionType { byte } => write!(
                f,
                "byte 0x{byte:02x} where a section must start: not a section type QEMU 7.2 \
                 writes (a damaged stream, or a newer QEMU)"
            ),
            IterableSection { name } => {
                let what = match name.as_str() {
                    "block" => {
                        "block migration is on; migrate without `-b`/`-i` and without the \
                         `block` capability (copy disks with drive-mirror or shared storage)"
                    }
                    "dirty-bitmap" => {
                        "dirty-bitmaps is on; run `migrate-set-capabilities \
                         dirty-bitmaps=false`"
                    }
                    _ => {
                        "a device migrates its state iteratively (vfio, ...); migrate that \
                         guest without pagewire"
                    }
                };
                write!(
                    f,
                    "iterable section '{name}' beside RAM: {what}; {SUPPORTED}"
                )
            }
            RamVersion { version } => write!(
                f,
                "RAM section version {version}: pagewire parses version 4 (QEMU 7.2's)"
            ),
            RepeatedRamStart => write!(f, "a second 'ram' START section"),
            SectionBeforeRamStart { id } => {
                write!(f, "section {id} continues before the 'ram' START section")
            }
            UnknownSection { id } => write!(
                f,
                "a PART or END section of section {id}, which is not RAM's: another \
                 iterable handler is active; {SUPPORTED}"
            ),
            SectionAfterRamEnd { id } => {
                write!(f, "section {id} continues after RAM's END section")
            }
            DeviceStateBeforeRamEnd => write!(
                f,
                "device state before RAM's END section: not a precopy stream (a snapshot or \
                 postcopy?); {SUPPORTED}"
            ),
            FooterMismatch { found, expected } => write!(
                f,
                "section footer names section {found} after section {expected}: a damaged \
                 stream"
            ),
            FooterInconsistent => {
                write!(f, "section footers after some sections and not others")
            }
            // `fmt` routes only the variants above here.
            other => write!(f, "{other:?}"),
        }
    }

    /// RAM records, and the end of the stream.
    fn fmt_record(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StreamError::*;
        match self {
            Flags { flags } => {
                let what = if flags & super::format::flag::COMPRESS_PAGE != 0 {
                    "compressed pages: compress is on; run `migrate-set-capabilities \
                     compress=false`"
                } else if flags & super::format::flag::MULTIFD_FLUSH != 0 {
                    "multifd is on; run `migrate-set-capabilities multifd=false`"
                } else if flags & super::format::flag::HOOK != 0 {
                    "RDMA's hook: migrate over tcp:, unix: or exec:, not rdma:"
                } else if flags & super::format::flag::FULL != 0 {
                    "the obsolete FULL flag, which no current QEMU writes"
                } else {
                    "flag bits QEMU 7.2 does not write (a damaged stream or a newer QEMU)"
                };
                write!(f, "RAM record flags 0x{flags:x}: {what}; {SUPPORTED}")
            }
            FlagCombination { flags } => write!(
                f,
                "RAM record flags 0x{flags:x} name no single record kind: a damaged stream"
            ),
            MalformedEos { word } => write!(
                f,
                "end-of-section record 0x{word:016x} with an offset or other flags: a \
                 damaged stream"
            ),
            MisplacedBlockList => write!(
                f,
                "a RAM block list outside the 'ram' START section, or twice: a damaged \
                 stream"
            ),
            PageBeforeBlockList => write!(f, "a page before the RAM block list"),
            EmptyBlockName => write!(f, "a RAM block with an empty name"),
            TooManyBlocks => write!(
                f,
                "more than {} RAM blocks: more than pagewire keeps",
                super::MAX_BLOCKS
            ),
            RepeatedBlock { name } => write!(f, "RAM block '{name}' listed twice"),
            BlockLength { name, length } => write!(
                f,
                "RAM block '{name}' of {length} bytes: not a positive whole number of pages"
            ),
            BlockListTotal {
                name,
                length,
                remaining,
            } => write!(
                f,
                "RAM block '{name}' of {length} bytes, but only {remaining} of the stated \
                 total are left: a damaged stream"
            ),
            UnknownBlock { name } => {
                write!(
                    f,
                    "a page of RAM block '{name}', which the block list does not name"
                )
            }
            ContinueWithoutBlock => {
                write!(f, "a page continues the previous block, but there was none")
            }
            PagePastBlock {
                block,
                offset,
                length,
            } => write!(
                f,
                "a page at offset 0x{offset:x} of RAM block '{block}', which is only \
                 0x{length:x} bytes"
            ),
            XbzrleEncoding { byte } => write!(
                f,
                "an XBZRLE page of encoding 0x{byte:02x}; QEMU writes only 0x01"
            ),
            XbzrleTooLong { len } => {
                write!(f, "an XBZRLE page of {len} bytes, more than a page")
            }
            XbzrleInvalid { block, offset } => write!(
                f,
                "the XBZRLE page at offset 0x{offset:x} of RAM block '{block}' is not valid \
                 XBZRLE (a run past the page end, an empty run or a bad length)"
            ),
            Truncated { inside } => write!(
                f,
                "the stream ended inside {inside}: the source stopped or the connection broke"
            ),
            Abandoned => write!(
                f,
                "the parser stopped at an earlier error of its event sink"
            ),
            // `fmt` routes only the variants above here.
            other => write!(f, "{other:?}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// An error from [`super::Parser::feed`]: the stream's, or the one the caller's event sink
/// returned. Either stops the parser for good: its item was consumed.
#[derive(Debug)]
pub enum FeedError<E> {
    /// The stream is refused.
    Stream(StreamError),
    /// The sink failed.
    Sink(E),
}

impl<E: fmt::Display> fmt::Display for FeedError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedError::Stream(e) => e.fmt(f),
            FeedError::Sink(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for FeedError<E> {}
