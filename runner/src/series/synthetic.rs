//! A deterministic synthetic guest-memory workload: a series of memory snapshots that look
//! enough like the RAM of a running Linux guest to exercise every path of the codec, so that
//! `pagewire replay` and `pagewire simulate` work on a fresh machine without
//! real traces.
//!
//! What it models:
//!
//! * **Content mix of the first snapshot.** Memory is laid out in runs of 1 to 64 pages of
//!   one kind (allocators and the page cache hand out contiguous ranges):
//!   * zero pages (free memory, untouched heap), about 35%;
//!   * text pages: words from a small vocabulary with spaces, punctuation and newlines,
//!     often only partly filled with a zero tail (page cache, logs, string tables);
//!   * pointer pages: arrays of 64-byte structs whose fields are 8-byte-aligned pointers
//!     near one of a few bases (kernel direct map, heap, stack, mapped libraries), small
//!     integers, flags and zeros (kernel objects, heap metadata);
//!   * code pages: byte sequences drawn from a skewed set of instruction-like patterns;
//!   * shared pages: exact copies of pages of a small "library" pool, each present at
//!     several page frames (shared libraries, page cache duplicates, KSM candidates);
//!   * random pages, a few percent (encrypted or compressed data; incompressible).
//! * **What changes between snapshots** (one `step` = one dirty-logging interval):
//!   * a fixed *hot set* of text and pointer pages, nearly all rewritten from scratch each
//!     interval (buffers, busy heap objects): whole-page changes that deltas cannot help;
//!   * a wider *warm set*, of which about half gets small in-place edits each interval (a
//!     few counters incremented, a few bytes overwritten): what XOR/RLE deltas are for;
//!   * a few pages freed (newly zeroed) and a few pages newly filled with text, pointers or
//!     a copy of a library page (allocation, page cache reads).
//!
//! Everything follows from the seed through a SplitMix64 generator, so a series is the same
//! on every machine. The pages written in a step are reported like a dirty log would report
//! them: a written page may, rarely, end up with the same content it had.

use anyhow::{bail, Result};

use super::SnapshotSource;
use crate::host_memory::Budget;

/// A SplitMix64 pseudo-random generator: tiny, fast, deterministic, good enough for
/// workload synthesis (not for cryptography).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A uniform index into a collection of `n` elements (`n > 0`).
    #[inline]
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a float in [0, 1)
        ((self.next_u64() >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < p
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// What kind of content a page holds; decides how it is generated and rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Zero,
    Text,
    Pointer,
    Code,
    /// A copy of library page number `n`.
    Shared(u32),
    Random,
}

/// Shares of the page kinds in the first snapshot (they need not sum to 1: they are weights).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ContentMix {
    pub zero: f64,
    pub text: f64,
    pub pointer: f64,
    pub code: f64,
    pub shared: f64,
    pub random: f64,
}

impl Default for ContentMix {
    fn default() -> Self {
        ContentMix {
            zero: 0.35,
            text: 0.20,
            pointer: 0.20,
            code: 0.11,
            shared: 0.10,
            random: 0.04,
        }
    }
}

/// Shape of a synthetic series.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticParams {
    /// Bytes of guest memory (a multiple of `page_size`).
    pub mem_bytes: usize,
    /// Page size in bytes (a multiple of 64, at least 64).
    pub page_size: usize,
    /// Snapshots in the series (the first one plus `snapshots - 1` steps).
    pub snapshots: usize,
    /// Content mix of the first snapshot.
    pub mix: ContentMix,
    /// Distinct pages in the library pool that shared pages copy.
    pub library_pages: usize,
    /// Fraction of pages in the hot set (rewritten whole nearly every step).
    pub hot_fraction: f64,
    /// Probability that a hot page is rewritten in a step.
    pub hot_rewrite_probability: f64,
    /// Fraction of pages in the warm set (small in-place edits).
    pub warm_fraction: f64,
    /// Probability that a warm page gets edited in a step.
    pub warm_edit_probability: f64,
    /// Fraction of all pages freed (zeroed) per step, drawn among non-zero pages.
    pub free_fraction: f64,
    /// Fraction of all pages newly filled per step.
    pub fill_fraction: f64,
}

impl Default for SyntheticParams {
    /// 64 MiB of 4 KiB pages, 8 snapshots.
    fn default() -> Self {
        SyntheticParams {
            mem_bytes: 64 << 20,
            page_size: 4096,
            snapshots: 8,
            mix: ContentMix::default(),
            library_pages: 256,
            hot_fraction: 0.02,
            hot_rewrite_probability: 0.9,
            warm_fraction: 0.10,
            warm_edit_probability: 0.5,
            free_fraction: 0.003,
            fill_fraction: 0.005,
        }
    }
}

impl SyntheticParams {
    /// Pages of guest memory.
    pub fn pages(&self) -> usize {
        self.mem_bytes / self.page_size
    }

    /// Checks that the parameters describe a series that can be generated.
    pub fn validate(&self) -> Result<()> {
        if self.page_size < 64 || self.page_size % 64 != 0 {
            bail!(
                "synthetic page size {} must be a multiple of 64 bytes",
                self.page_size
            );
        }
        if self.mem_bytes == 0 || self.mem_bytes % self.page_size != 0 {
            bail!(
                "synthetic memory size {} must be a non-zero multiple of the page size {}",
                self.mem_bytes,
                self.page_size
            );
        }
        if self.snapshots == 0 {
            bail!("a synthetic series needs at least one snapshot");
        }
        if self.library_pages == 0 {
            bail!("the synthetic library pool needs at least one page");
        }
        let m = &self.mix;
        let weights = [m.zero, m.text, m.pointer, m.code, m.shared, m.random];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f64>() <= 0.0
        {
            bail!("synthetic content mix weights must be non-negative with a positive sum");
        }
        for (name, p) in [
            ("hot_fraction", self.hot_fraction),
            ("hot_rewrite_probability", self.hot_rewrite_probability),
            ("warm_fraction", self.warm_fraction),
            ("warm_edit_probability", self.warm_edit_probability),
            ("free_fraction", self.free_fraction),
            ("fill_fraction", self.fill_fraction),
        ] {
            if !(0.0..=1.0).contains(&p) {
                bail!("synthetic {name} must be within 0..=1, got {p}");
            }
        }
        Ok(())
    }
}

const VOCABULARY: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "with",
    "as",
    "on",
    "be",
    "at",
    "this",
    "by",
    "from",
    "or",
    "an",
    "are",
    "page",
    "memory",
    "kernel",
    "return",
    "error",
    "value",
    "struct",
    "static",
    "const",
    "int",
    "char",
    "void",
    "unsigned",
    "long",
    "size",
    "buffer",
    "request",
    "response",
    "server",
    "client",
    "connection",
    "timeout",
    "user",
    "session",
    "GET",
    "POST",
    "HTTP/1.1",
    "200",
    "404",
    "Content-Type:",
    "application/json",
    "text/html",
    "key",
    "name",
    "id",
    "status",
    "ok",
    "true",
    "false",
    "null",
    "INFO",
    "WARN",
    "DEBUG",
    "2024-05-17",
    "12:34:56",
    "/usr/lib",
    "/var/log",
    "#include",
    "if",
    "else",
    "while",
    "{",
    "}",
    "(",
    ");",
    "=",
    "==",
    "->",
    "0x0",
    "ffff",
];

/// Instruction-like byte patterns for code pages (prologues, moves, calls, jumps, padding).
const CODE_PATTERNS: &[&[u8]] = &[
    &[0x55, 0x48, 0x89, 0xe5],
    &[0x48, 0x89, 0x7d],
    &[0x48, 0x8b, 0x45],
    &[0x48, 0x83, 0xec],
    &[0xe8],
    &[0xe9],
    &[0x0f, 0x84],
    &[0x0f, 0x85],
    &[0x74],
    &[0x75],
    &[0xc3],
    &[0x5d, 0xc3],
    &[0x31, 0xc0],
    &[0x48, 0x8d, 0x05],
    &[0x41, 0x57, 0x41, 0x56],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x90],
    &[0xcc, 0xcc, 0xcc, 0xcc],
    &[0x00, 0x00, 0x00, 0x00],
];

/// Pointer bases: kernel direct map, kernel text, user heap, user stack, mapped libraries.
const POINTER_BASES: &[u64] = &[
    0xffff_8880_0000_0000,
    0xffff_ffff_8100_0000,
    0x0000_5555_5555_0000,
    0x0000_7ffc_0000_0000,
    0x0000_7f3a_1c00_0000,
];

/// Writes text: words separated by spaces and punctuation, with newlines; the first
/// `fill` bytes get text and the rest is zero.
fn gen_text(rng: &mut SplitMix64, page: &mut [u8]) {
    let fill = if rng.chance(0.4) {
        page.len() / 4 + rng.index(page.len() * 3 / 4)
    } else {
        page.len()
    };
    let mut p = 0;
    while p < fill {
        let w = VOCABULARY[rng.index(VOCABULARY.len())].as_bytes();
        let sep: &[u8] = match rng.below(16) {
            0 => b"\n",
            1 => b", ",
            2 => b". ",
            3 => b": ",
            _ => b" ",
        };
        for &b in w.iter().chain(sep) {
            if p == fill {
                break;
            }
            page[p] = b;
            p += 1;
        }
    }
    page[fill..].fill(0);
}

/// Writes an array of 64-byte structs; the layout (which field holds what) is fixed per
/// page, the values vary.
fn gen_pointer(rng: &mut SplitMix64, page: &mut [u8]) {
    // field kinds: 0 pointer, 1 small int, 2 zero, 3 flags
    let mut layout = [0u8; 8];
    for f in &mut layout {
        *f = match rng.below(10) {
            0..=4 => 0,
            5..=6 => 1,
            7..=8 => 2,
            _ => 3,
        };
    }
    let base = POINTER_BASES[rng.index(POINTER_BASES.len())];
    let spread = 1u64 << (12 + rng.below(12));
    let flags = rng.next_u64() & 0xff_ffff;
    for (i, word) in page.chunks_exact_mut(8).enumerate() {
        let v = match layout[i % 8] {
            0 => {
                if rng.chance(0.1) {
                    0
                } else {
                    base.wrapping_add(rng.below(spread) & !7)
                }
            }
            1 => rng.below(1000),
            2 => 0,
            _ => flags | (rng.below(4) << 24),
        };
        word.copy_from_slice(&v.to_le_bytes());
    }
}

/// Writes instruction-like bytes: skewed patterns with random immediates.
fn gen_code(rng: &mut SplitMix64, page: &mut [u8]) {
    let mut p = 0;
    while p < page.len() {
        // favour the first patterns (a crude Zipf)
        let a = rng.index(CODE_PATTERNS.len());
        let b = rng.index(CODE_PATTERNS.len());
        let pat = CODE_PATTERNS[a.min(b)];
        for &byte in pat {
            if p == page.len() {
                break;
            }
            page[p] = byte;
            p += 1;
        }
        // an immediate or displacement of 0, 1 or 4 bytes
        let imm = match rng.below(3) {
            0 => 0,
            1 => 1,
            _ => 4,
        };
        let v = rng.next_u64().to_le_bytes();
        for &byte in &v[..imm] {
            if p == page.len() {
                break;
            }
            page[p] = byte;
            p += 1;
        }
    }
}

/// The memory a series for `params` holds: its image, the kind of every page, the library
/// pool, and the hot and warm page lists (at most one entry per page each).
pub fn memory_budget(params: &SyntheticParams) -> Budget {
    let pages = params.mem_bytes / params.page_size.max(1);
    let mut b = Budget::new();
    b.add_len("the synthetic image", params.mem_bytes)
        .add_len(
            "the synthetic page lists",
            pages.saturating_mul(size_of::<PageKind>() + 2 * size_of::<u64>()),
        )
        .add_len(
            "the synthetic library",
            params.library_pages.saturating_mul(params.page_size),
        );
    b
}

/// A generated, evolving guest memory image; see the module documentation.
pub struct SyntheticSeries {
    params: SyntheticParams,
    rng: SplitMix64,
    image: Vec<u8>,
    kinds: Vec<PageKind>,
    library: Vec<u8>,
    hot: Vec<u64>,
    warm: Vec<u64>,
    changed: Vec<u64>,
    index: usize,
}

impl SyntheticSeries {
    /// Generates snapshot 0 of the series for `params` from `seed`.
    pub fn new(params: SyntheticParams, seed: u64) -> Result<Self> {
        params.validate()?;
        let ps = params.page_size;
        let pages = params.pages();
        let mut rng = SplitMix64::new(seed);

        let mut library = vec![0u8; params.library_pages * ps];
        for page in library.chunks_exact_mut(ps) {
            if rng.chance(0.7) {
                gen_code(&mut rng, page);
            } else {
                gen_text(&mut rng, page);
            }
        }

        let m = params.mix;
        let weights = [m.zero, m.text, m.pointer, m.code, m.shared, m.random];
        let total: f64 = weights.iter().sum();
        let mut kinds = Vec::with_capacity(pages);
        while kinds.len() < pages {
            let mut x = ((rng.next_u64() >> 11) as f64) / (1u64 << 53) as f64 * total;
            let mut pick = 0;
            for (i, w) in weights.iter().enumerate() {
                if x < *w {
                    pick = i;
                    break;
                }
                x -= w;
                pick = i;
            }
            let run = 1 + rng.index(64);
            for _ in 0..run.min(pages - kinds.len()) {
                kinds.push(match pick {
                    0 => PageKind::Zero,
                    1 => PageKind::Text,
                    2 => PageKind::Pointer,
                    3 => PageKind::Code,
                    4 => PageKind::Shared(rng.index(params.library_pages) as u32),
                    _ => PageKind::Random,
                });
            }
        }

        let mut series = SyntheticSeries {
            rng,
            image: vec![0u8; params.mem_bytes],
            kinds,
            library,
            hot: Vec::new(),
            warm: Vec::new(),
            changed: Vec::new(),
            index: 0,
            params,
        };
        for pfn in 0..pages {
            series.write_page(pfn, series.kinds[pfn]);
        }

        // Hot pages are busy text and pointer pages; warm pages are any non-zero pages.
        let hot_n = (pages as f64 * series.params.hot_fraction) as usize;
        let warm_n = (pages as f64 * series.params.warm_fraction) as usize;
        let candidates: Vec<u64> = (0..pages as u64)
            .filter(|&p| matches!(series.kinds[p as usize], PageKind::Text | PageKind::Pointer))
            .collect();
        let nonzero: Vec<u64> = (0..pages as u64)
            .filter(|&p| series.kinds[p as usize] != PageKind::Zero)
            .collect();
        series.hot = series.sample(&candidates, hot_n);
        series.warm = series.sample(&nonzero, warm_n);
        Ok(series)
    }

    /// The parameters of the series.
    pub fn params(&self) -> &SyntheticParams {
        &self.params
    }

    /// Snapshots in the series.
    pub fn len(&self) -> usize {
        self.params.snapshots
    }

    /// Always false: a series has at least one snapshot.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Index of the snapshot `image` now holds (0 for the first).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The current snapshot: `mem_bytes` of guest memory.
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// What kind of content page `pfn` now holds.
    pub fn kind(&self, pfn: u64) -> PageKind {
        self.kinds[pfn as usize]
    }

    /// Pages written by the last step, ascending (empty before the first step), like a
    /// dirty log: a superset of the pages whose content differs.
    pub fn changed(&self) -> &[u64] {
        &self.changed
    }

    /// Moves to the next snapshot of the series and returns the pages written, or `None`
    /// when the series is at its last snapshot.
    pub fn advance(&mut self) -> Option<&[u64]> {
        if self.index + 1 >= self.params.snapshots {
            return None;
        }
        Some(self.step())
    }

    /// Runs the workload for one more interval, ignoring the snapshot count (a migration
    /// simulator runs the guest for as long as the migration takes), and returns the pages
    /// written, ascending.
    pub fn step(&mut self) -> &[u64] {
        let pages = self.params.pages();
        let mut changed = Vec::new();

        for i in 0..self.hot.len() {
            if self.rng.chance(self.params.hot_rewrite_probability) {
                let pfn = self.hot[i] as usize;
                // a hot page keeps being a busy text or pointer page
                let kind = match self.kinds[pfn] {
                    PageKind::Text => PageKind::Text,
                    _ => PageKind::Pointer,
                };
                self.write_page(pfn, kind);
                changed.push(pfn as u64);
            }
        }
        for i in 0..self.warm.len() {
            if self.rng.chance(self.params.warm_edit_probability) {
                let pfn = self.warm[i] as usize;
                self.edit_page(pfn);
                changed.push(pfn as u64);
            }
        }
        let frees = (pages as f64 * self.params.free_fraction) as usize;
        for _ in 0..frees {
            let pfn = self.rng.index(pages);
            if self.kinds[pfn] != PageKind::Zero {
                self.write_page(pfn, PageKind::Zero);
                changed.push(pfn as u64);
            }
        }
        let fills = (pages as f64 * self.params.fill_fraction) as usize;
        for _ in 0..fills {
            let pfn = self.rng.index(pages);
            let kind = match self.rng.below(3) {
                0 => PageKind::Text,
                1 => PageKind::Pointer,
                _ => PageKind::Shared(self.rng.index(self.params.library_pages) as u32),
            };
            self.write_page(pfn, kind);
            changed.push(pfn as u64);
        }

        changed.sort_unstable();
        changed.dedup();
        self.changed = changed;
        self.index += 1;
        &self.changed
    }

    /// Draws `n` distinct elements of `from` (all of them if `n` is larger), ascending.
    fn sample(&mut self, from: &[u64], n: usize) -> Vec<u64> {
        let mut v = from.to_vec();
        let n = n.min(v.len());
        for i in 0..n {
            let j = i + self.rng.index(v.len() - i);
            v.swap(i, j);
        }
        v.truncate(n);
        v.sort_unstable();
        v
    }

    fn page_mut(&mut self, pfn: usize) -> &mut [u8] {
        let ps = self.params.page_size;
        &mut self.image[pfn * ps..(pfn + 1) * ps]
    }

    /// Gives page `pfn` fresh content of `kind`.
    fn write_page(&mut self, pfn: usize, kind: PageKind) {
        let ps = self.params.page_size;
        self.kinds[pfn] = kind;
        let mut rng = self.rng.clone();
        let page = &mut self.image[pfn * ps..(pfn + 1) * ps];
        match kind {
            PageKind::Zero => page.fill(0),
            PageKind::Text => gen_text(&mut rng, page),
            PageKind::Pointer => gen_pointer(&mut rng, page),
            PageKind::Code => gen_code(&mut rng, page),
            PageKind::Shared(n) => {
                let n = n as usize;
                page.copy_from_slice(&self.library[n * ps..(n + 1) * ps]);
            }
            PageKind::Random => rng.fill(page),
        }
        self.rng = rng;
    }

    /// A few small in-place edits: counters incremented, a few bytes overwritten. A page
    /// that was a copy of a library page is no longer one afterwards.
    fn edit_page(&mut self, pfn: usize) {
        let ps = self.params.page_size;
        let edits = 1 + self.rng.below(4);
        let mut rng = self.rng.clone();
        let page = self.page_mut(pfn);
        for _ in 0..edits {
            if rng.chance(0.6) {
                let at = rng.index(ps / 8) * 8;
                let mut w = [0u8; 8];
                w.copy_from_slice(&page[at..at + 8]);
                let v = u64::from_le_bytes(w).wrapping_add(1 + rng.below(16));
                page[at..at + 8].copy_from_slice(&v.to_le_bytes());
            } else {
                let len = 1 + rng.index(8);
                let at = rng.index(ps - len);
                rng.fill(&mut page[at..at + len]);
            }
        }
        self.rng = rng;
        if let PageKind::Shared(_) | PageKind::Zero = self.kinds[pfn] {
            self.kinds[pfn] = PageKind::Code;
        }
    }
}

impl SnapshotSource for SyntheticSeries {
    fn describe(&self) -> String {
        let p = self.params();
        format!(
            "synthetic workload ({} snapshots of {} MiB)",
            p.snapshots,
            p.mem_bytes >> 20
        )
    }

    fn page_size(&self) -> usize {
        self.params().page_size
    }

    fn mem_bytes(&self) -> usize {
        self.params().mem_bytes
    }

    fn snapshots(&self) -> usize {
        self.len()
    }

    fn read(&mut self, i: usize, buf: &mut [u8]) -> Result<()> {
        while self.index() < i {
            if self.advance().is_none() {
                bail!("the synthetic series has no snapshot {i}");
            }
        }
        if self.index() != i {
            bail!(
                "the synthetic series is at snapshot {}, cannot go back to {i}",
                self.index()
            );
        }
        buf.copy_from_slice(self.image());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SyntheticParams {
        SyntheticParams {
            mem_bytes: 4 << 20,
            snapshots: 4,
            library_pages: 16,
            ..SyntheticParams::default()
        }
    }

    #[test]
    fn deterministic_per_seed() {
        let mut a = SyntheticSeries::new(small(), 7).unwrap();
        let mut b = SyntheticSeries::new(small(), 7).unwrap();
        let c = SyntheticSeries::new(small(), 8).unwrap();
        assert_eq!(a.image(), b.image());
        assert_ne!(a.image(), c.image());
        assert_eq!(a.advance().unwrap(), b.advance().unwrap());
        assert_eq!(a.image(), b.image());
    }

    #[test]
    fn content_mix_is_roughly_as_asked() {
        let s = SyntheticSeries::new(small(), 1).unwrap();
        let ps = s.params().page_size;
        let pages = s.params().pages();
        let zero = s
            .image()
            .chunks_exact(ps)
            .filter(|p| p.iter().all(|&b| b == 0))
            .count();
        let share = zero as f64 / pages as f64;
        assert!((0.2..0.5).contains(&share), "zero share {share}");
        let mut seen = std::collections::HashSet::new();
        let dups = s
            .image()
            .chunks_exact(ps)
            .filter(|p| p.iter().any(|&b| b != 0) && !seen.insert(p.to_vec()))
            .count();
        assert!(dups > pages / 50, "only {dups} duplicate pages");
    }

    #[test]
    fn steps_report_changed_pages_and_stop_at_the_end() {
        let mut s = SyntheticSeries::new(small(), 3).unwrap();
        let ps = s.params().page_size;
        let mut prev = s.image().to_vec();
        for _ in 1..s.len() {
            let changed = s.advance().unwrap().to_vec();
            assert!(changed.windows(2).all(|w| w[0] < w[1]));
            let differing: Vec<u64> = (0..s.params().pages())
                .filter(|&p| prev[p * ps..(p + 1) * ps] != s.image()[p * ps..(p + 1) * ps])
                .map(|p| p as u64)
                .collect();
            // every differing page was reported, and most reported pages differ
            assert!(differing.iter().all(|p| changed.binary_search(p).is_ok()));
            assert!(differing.len() * 10 >= changed.len() * 9);
            let share = differing.len() as f64 / s.params().pages() as f64;
            assert!((0.02..0.2).contains(&share), "changed share {share}");
            prev = s.image().to_vec();
        }
        assert!(s.advance().is_none());
        assert_eq!(s.index(), s.len() - 1);
    }

    #[test]
    fn rejects_bad_params() {
        let bad = [
            SyntheticParams {
                mem_bytes: 4097,
                ..small()
            },
            SyntheticParams {
                page_size: 100,
                ..small()
            },
            SyntheticParams {
                snapshots: 0,
                ..small()
            },
            SyntheticParams {
                hot_fraction: 2.0,
                ..small()
            },
        ];
        for p in bad {
            assert!(SyntheticSeries::new(p, 0).is_err());
        }
    }
}
