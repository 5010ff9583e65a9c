//! Every `#define` of `pagewire.h`: versions, wire lengths, the stop policies' defaults and
//! names, and the storage bounds.
//!
//! cbindgen writes the header's types and functions, but it copies a constant's expression
//! as text and cannot evaluate another crate's constants, so the numbers the codec owns
//! would have to be re-typed for it. Instead each constant here is computed from where it
//! lives (the codec, Cargo.toml), and `tests/header.rs` writes [`header_text`] into the
//! header, inside the include guard and before the types (`PAGEWIRE_BLESS=1 cargo test -p
//! pagewire-ffi --test header` regenerates it; the same test fails when it is stale).

use core::fmt::Write;

use pagewire::policy::{
    PolicyKind, PolicyParams, SmartStop, SynchronizedArrival, XenClassic, XenToday, DEFAULT_CEILING,
};

/// One `#define` of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Define {
    /// `NAME`, or `NAME(args)` for a function-like macro.
    pub name: String,
    /// Its doc comment, one line per line.
    pub doc: String,
    /// The replacement text.
    pub value: String,
}

/// A value as a C literal.
pub trait CLiteral {
    fn c_literal(&self) -> String;
}

macro_rules! integer_literals {
    ($($t:ty),+) => { $(impl CLiteral for $t { fn c_literal(&self) -> String { self.to_string() } })+ };
}
integer_literals!(u32, u64, usize);

impl CLiteral for &str {
    fn c_literal(&self) -> String {
        assert!(
            self.chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\'),
            "not a plain C string: {self}"
        );
        format!("\"{self}\"")
    }
}

impl Define {
    fn new(name: impl Into<String>, doc: &str, value: &dyn CLiteral) -> Define {
        // a doc comment's lines start with the space after `///`
        let lines: Vec<&str> = doc
            .lines()
            .map(|l| l.strip_prefix(' ').unwrap_or(l))
            .collect();
        Define {
            name: name.into(),
            doc: lines.join("\n").trim().to_string(),
            value: value.c_literal(),
        }
    }
}

/// Declares constants that the header defines, from one list: the `pub const`s Rust code
/// uses, and [`constants`], which lists them for the header with their doc comments.
macro_rules! header_constants {
    ($($(#[doc = $doc:literal])+ pub const $name:ident: $ty:ty = $value:expr;)+) => {
        $($(#[doc = $doc])+ pub const $name: $ty = $value;)+

        /// The constants above, as `#define`s.
        fn constants() -> Vec<Define> {
            vec![$(Define::new(stringify!($name), concat!($($doc, "\n"),+), &$name)),+]
        }
    };
}

/// A number from Cargo.toml's version (evaluated at compile time).
const fn version_part(s: &str) -> u32 {
    match u32::from_str_radix(s, 10) {
        Ok(n) => n,
        Err(_) => panic!("a version part in Cargo.toml is not a number"),
    }
}

header_constants! {
    /// The library version as a string (see also pagewire_version()).
    pub const PAGEWIRE_VERSION: &str = env!("CARGO_PKG_VERSION");
    /// Major version of this library.
    pub const PAGEWIRE_VERSION_MAJOR: u32 = version_part(env!("CARGO_PKG_VERSION_MAJOR"));
    /// Minor version of this library.
    pub const PAGEWIRE_VERSION_MINOR: u32 = version_part(env!("CARGO_PKG_VERSION_MINOR"));
    /// Patch version of this library.
    pub const PAGEWIRE_VERSION_PATCH: u32 = version_part(env!("CARGO_PKG_VERSION_PATCH"));
    /// `(major << 16) | (minor << 8) | patch`, for `#if` comparisons.
    pub const PAGEWIRE_VERSION_NUMBER: u32 =
        (PAGEWIRE_VERSION_MAJOR << 16) | (PAGEWIRE_VERSION_MINOR << 8) | PAGEWIRE_VERSION_PATCH;
    /// The ABI version: the number in the shared library's SONAME (`libpagewire.so.1`). It
    /// changes whenever a change could break a program built against an older header
    /// (1: the decoder's entry points became pagewire_decoder_open, _decode and _close).
    pub const PAGEWIRE_ABI_VERSION: u32 = 1;

    /// Bytes of the stream header that opens every stream.
    pub const PAGEWIRE_HEADER_LEN: usize = pagewire::HEADER_LEN;
    /// Bytes of a frame header: what a reader needs to learn a frame's length.
    pub const PAGEWIRE_FRAME_HEADER_LEN: usize = pagewire::FRAME_HEADER_LEN;
    /// Wire format version this library writes and reads.
    pub const PAGEWIRE_FORMAT_VERSION: u32 = pagewire::FORMAT_VERSION as u32;

    /// Flag of pagewire_decoder_open (and pagewire_config_decoder_storage): decode in
    /// place. The decoder builds each page directly in guest memory and reads the pages
    /// its cache refers to back from there, so it keeps no copy of the cache: 364,552
    /// bytes of codec storage for the default configuration instead of 67,473,416. It
    /// needs RAM regions or a page table that hold what it last wrote (the guest must not
    /// run); see pagewire_destination.
    pub const PAGEWIRE_DECODE_IN_PLACE: u32 = 1;

    /// Upper bound of the bytes an encoder or decoder handle adds to the codec's own
    /// storage (the `_STORAGE_BOUND` macros use it).
    pub const PAGEWIRE_STATE_OVERHEAD: usize = 512;
    /// Bytes of encoder storage that do not grow with the configuration (the codec's fixed
    /// part, its alignment slack and LZ4's hash tables), for PAGEWIRE_ENCODER_STORAGE_BOUND.
    pub const PAGEWIRE_ENCODER_FIXED_BYTES: usize = 64 + pagewire::LZ4_TABLES_STORAGE_MAX;
    /// Encoder storage per cached block, at most (the content index: fewer than 4 entries of
    /// 8 bytes per block, its size rounded up to a power of two), for
    /// PAGEWIRE_ENCODER_STORAGE_BOUND.
    pub const PAGEWIRE_ENCODER_BYTES_PER_CACHED_BLOCK: usize = 32;
    /// Encoder storage per cache page beyond the page itself, at most (the address index:
    /// fewer than 4 entries of 16 bytes per page; the owner tables: 16 bytes per page), for
    /// PAGEWIRE_ENCODER_STORAGE_BOUND.
    pub const PAGEWIRE_ENCODER_BYTES_PER_CACHE_PAGE: usize = 80;
    /// Page-sized buffers of an encoder: the codec's two work pages and the handle's copy of
    /// the guest page being encoded.
    pub const PAGEWIRE_ENCODER_PAGE_BUFFERS: usize = 3;
    /// Page-sized work buffers of a decoder: the codec's scratch page and the handle's
    /// staging page.
    pub const PAGEWIRE_DECODER_PAGE_BUFFERS: usize = 2;
    /// Page-sized work buffers of an in-place decoder: the codec's scratch page alone (it
    /// writes into guest memory, never into a staging page).
    pub const PAGEWIRE_DECODER_IN_PLACE_PAGE_BUFFERS: usize = 1;
    /// Decoder storage per cache page beyond the page itself (the owner tables of format
    /// version 3: an owner pfn and two map entries per slot), for
    /// PAGEWIRE_DECODER_STORAGE_BOUND.
    pub const PAGEWIRE_DECODER_BYTES_PER_CACHE_PAGE: usize = 16;
    /// Bytes of encoder output that do not grow with frame_bytes, at most (stream header,
    /// frame header and trailer, LZ4's fixed overhead), for PAGEWIRE_MAX_OUTPUT_BOUND.
    pub const PAGEWIRE_OUTPUT_FIXED_BYTES: usize = 128;
    /// LZ4 grows an incompressible frame body by at most 1/PAGEWIRE_LZ4_GROWTH_DIVISOR of
    /// its length (plus fixed bytes), for PAGEWIRE_MAX_OUTPUT_BOUND.
    pub const PAGEWIRE_LZ4_GROWTH_DIVISOR: usize = 10;

    /// Iterations after which every stop policy stops, unless
    /// pagewire_policy_set_max_iterations says otherwise.
    pub const PAGEWIRE_DEFAULT_MAX_ITERATIONS: u32 = DEFAULT_CEILING;
    /// Smart Stop's usual window (see docs/SIMULATOR.md for how it was chosen).
    pub const PAGEWIRE_SMART_STOP_DEFAULT_WINDOW: u32 = PolicyParams::new(0, 0).smart_window as u32;
    /// The downtime-limit policy's usual limit, in microseconds.
    pub const PAGEWIRE_DOWNTIME_LIMIT_DEFAULT_US: u64 = PolicyParams::new(0, 0).downtime_limit_us;

    /// Members a `pagewire_group` holds at most.
    pub const PAGEWIRE_GROUP_CAPACITY: usize = 16;
    /// The usual `max_hold` of pagewire_group_init: iterations a ready member may be held
    /// (a small VM's iterations can be very short while a large one converges).
    pub const PAGEWIRE_GROUP_DEFAULT_MAX_HOLD: u32 =
        SynchronizedArrival::<PAGEWIRE_GROUP_CAPACITY>::new().max_hold;
}

/// Numbers of the policies' rules that are fields of the codec's policies rather than
/// constants, read from fresh policies.
fn policy_rules() -> Vec<Define> {
    let classic = XenClassic::new(0);
    let today = XenToday::default();
    let smart = SmartStop::new(usize::MAX);
    vec![
        Define::new(
            "PAGEWIRE_XEN_CLASSIC_MAX_ITERATIONS",
            "Xen's classic rule stops after this many iterations.",
            &classic.max_iterations,
        ),
        Define::new(
            "PAGEWIRE_XEN_CLASSIC_MAX_SENT_FACTOR",
            "Xen's classic rule stops once this many times the guest's memory has been sent.",
            &classic.max_sent_factor,
        ),
        Define::new(
            "PAGEWIRE_XEN_TODAY_MAX_ITERATIONS",
            "Xen today stops after this many iterations.",
            &today.max_iterations,
        ),
        Define::new(
            "PAGEWIRE_XEN_MIN_REMAINING_PAGES",
            "Both Xen rules stop when fewer pages than this remain.",
            &classic.min_remaining,
        ),
        Define::new(
            "PAGEWIRE_SMART_STOP_MAX_WINDOW",
            "Smart Stop's largest window; larger ones are clamped to it.",
            &smart.window,
        ),
    ]
}

/// `PAGEWIRE_POLICY_NAME_SMART_STOP "smart-stop"` and so on: what pagewire_policy_name
/// returns, from the codec's one list of policies.
fn policy_names() -> Vec<Define> {
    PolicyKind::ALL
        .iter()
        .map(|k| {
            let name = k.name();
            Define::new(
                format!(
                    "PAGEWIRE_POLICY_NAME_{}",
                    name.to_ascii_uppercase().replace('-', "_")
                ),
                "What pagewire_policy_name returns for this policy.",
                &name,
            )
        })
        .collect()
}

/// The function-like macros: compile-time bounds for static buffers, sums of the constants
/// above times configuration fields. `sizes::encoder_storage_bound` and its siblings are
/// the same sums in Rust; the C tests compare the two and check the bounds against
/// pagewire_config_sizes.
fn bound_macros() -> Vec<Define> {
    let raw = |name: &str, doc: &str, value: &str| Define {
        name: name.into(),
        doc: doc.trim().into(),
        value: value.trim().into(),
    };
    vec![
        raw(
            "PAGEWIRE_ENCODER_STORAGE_BOUND(page_size, blocks_per_page, cache_pages, frame_bytes)",
            "
Compile-time upper bound of pagewire_sizes.encoder_storage for a configuration given by
its fields, for static buffers:
  static uint8_t enc_mem[PAGEWIRE_ENCODER_STORAGE_BOUND(4096, 4, 16384, 65536)];
Arguments must be valid configuration values.",
            r"
((size_t)PAGEWIRE_STATE_OVERHEAD + (size_t)PAGEWIRE_ENCODER_FIXED_BYTES + \
   (size_t)(cache_pages) * (size_t)(page_size) + \
   (size_t)(cache_pages) * (size_t)(blocks_per_page) * \
   (size_t)PAGEWIRE_ENCODER_BYTES_PER_CACHED_BLOCK + \
   (size_t)(cache_pages) * (size_t)PAGEWIRE_ENCODER_BYTES_PER_CACHE_PAGE + \
   (size_t)(frame_bytes) + (size_t)PAGEWIRE_ENCODER_PAGE_BUFFERS * (size_t)(page_size))",
        ),
        raw(
            "PAGEWIRE_DECODER_STORAGE_BOUND(page_size, cache_pages, frame_bytes)",
            "
Compile-time upper bound of pagewire_sizes.decoder_storage (a decoder with a cache copy,
flags 0), as PAGEWIRE_ENCODER_STORAGE_BOUND.",
            r"
((size_t)PAGEWIRE_STATE_OVERHEAD + (size_t)(cache_pages) * (size_t)(page_size) + \
   (size_t)(cache_pages) * (size_t)PAGEWIRE_DECODER_BYTES_PER_CACHE_PAGE + \
   (size_t)(frame_bytes) + (size_t)(frame_bytes) / 2 + \
   (size_t)PAGEWIRE_DECODER_PAGE_BUFFERS * (size_t)(page_size))",
        ),
        raw(
            "PAGEWIRE_DECODER_IN_PLACE_STORAGE_BOUND(page_size, cache_pages, frame_bytes)",
            "
Compile-time upper bound of what pagewire_config_decoder_storage gives with
PAGEWIRE_DECODE_IN_PLACE, as PAGEWIRE_ENCODER_STORAGE_BOUND: no cache copy, so a few
bytes per cache page (under 400 KB for the default configuration).",
            r"
((size_t)PAGEWIRE_STATE_OVERHEAD + \
   (size_t)(cache_pages) * (size_t)PAGEWIRE_DECODER_BYTES_PER_CACHE_PAGE + \
   (size_t)(frame_bytes) + (size_t)(frame_bytes) / 2 + \
   (size_t)PAGEWIRE_DECODER_IN_PLACE_PAGE_BUFFERS * (size_t)(page_size))",
        ),
        raw(
            "PAGEWIRE_MAX_OUTPUT_BOUND(frame_bytes)",
            "Compile-time upper bound of pagewire_sizes.max_output (and .max_frame).",
            r"
((size_t)(frame_bytes) + (size_t)(frame_bytes) / (size_t)PAGEWIRE_LZ4_GROWTH_DIVISOR + \
   (size_t)PAGEWIRE_OUTPUT_FIXED_BYTES)",
        ),
    ]
}

/// Every `#define` of the header, in header order.
pub fn all() -> Vec<Define> {
    let mut all = constants();
    all.extend(policy_rules());
    all.extend(policy_names());
    all.extend(bound_macros());
    all
}

/// The `#define`s as header text, in cbindgen's comment style.
pub fn header_text() -> String {
    let mut text = String::new();
    for d in all() {
        text.push_str("\n/**\n");
        for line in d.doc.lines() {
            let line = line.trim_end();
            let _ = writeln!(text, " *{}{line}", if line.is_empty() { "" } else { " " });
        }
        // a value of several lines starts on its own line, as the continuations do
        let gap = if d.value.contains('\n') {
            " \\\n  "
        } else {
            " "
        };
        let _ = writeln!(text, " */\n#define {}{gap}{}", d.name, d.value);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_distinct_and_values_computed() {
        let all = all();
        let mut names = HashSet::new();
        for d in &all {
            assert!(d.name.starts_with("PAGEWIRE_"), "{}", d.name);
            assert!(names.insert(d.name.clone()), "{} twice", d.name);
            assert!(!d.doc.is_empty() && !d.value.is_empty(), "{}", d.name);
        }
        let value = |n: &str| &all.iter().find(|d| d.name == n).unwrap().value;
        assert_eq!(
            value("PAGEWIRE_HEADER_LEN"),
            &pagewire::HEADER_LEN.to_string()
        );
        assert_eq!(
            value("PAGEWIRE_SMART_STOP_DEFAULT_WINDOW"),
            &pagewire::policy::DEFAULT_WINDOW.to_string()
        );
        assert_eq!(value("PAGEWIRE_POLICY_NAME_SMART_STOP"), "\"smart-stop\"");
        // one number stands for both Xen rules
        assert_eq!(
            XenClassic::new(0).min_remaining,
            XenToday::default().min_remaining
        );
        assert_eq!(
            value("PAGEWIRE_VERSION"),
            &format!("\"{}\"", env!("CARGO_PKG_VERSION"))
        );
    }
}
