//! What a fresh guest boots with: its spec (workload, seed, rate), each vCPU's descriptor
//! (which pages the guest program writes, how and how fast) and the initial memory image.
//!
//! The built-in workloads (`crate::workload`) are the simulator's too, with the same
//! names, but here a real guest does the writing:
//!
//! * `hot-set`: a hot set of 3% of memory, rewritten whole (text and pointer pages) about
//!   once a second, plus a few edits elsewhere;
//! * `database`: small in-place edits spread over the whole of memory, ~7% of pages a second;
//! * `compile`: a phase-changing mix: 0.5 s busy (fills, frees, edits over a 10% working
//!   set and beyond) then 2 s quiet;
//! * `idle`: a few edits a second.
//!
//! Rates are in pages per second relative to memory size, so a larger guest dirties
//! proportionally more, as the simulator's workloads do. The VMM paces rounds at
//! [`TICK_HZ`]; the guest's writes are fully determined by the seed.

use anyhow::Result;

use super::layout;
use super::memory::{GuestMemory, PAGE_SIZE};
use super::program::off;
use super::vcpu::TICK_HZ;
use crate::series::{SplitMix64, SyntheticParams, SyntheticSeries};
use crate::workload::Workload;

/// One phase's operation mix, as the guest reads it: operations per round and the shares
/// of text fills, pointer fills and zeroing (the rest are in-place edits), in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mix {
    pages_per_s_permille: u64,
    text: u64,
    pointer: u64,
    zero: u64,
}

/// (hot set in permille of the slice, permille of operations on the hot set, busy mix,
/// quiet mix, busy rounds, quiet rounds)
fn shape(workload: Workload) -> (u64, u64, Mix, Mix, u64, u64) {
    let none = Mix {
        pages_per_s_permille: 0,
        text: 0,
        pointer: 0,
        zero: 0,
    };
    match workload {
        Workload::HotSet => (
            30,
            950,
            Mix {
                pages_per_s_permille: 32,
                text: 45,
                pointer: 45,
                zero: 0,
            },
            none,
            1,
            0,
        ),
        Workload::Database => (
            2,
            50,
            Mix {
                pages_per_s_permille: 70,
                text: 3,
                pointer: 3,
                zero: 0,
            },
            none,
            1,
            0,
        ),
        Workload::Compile => (
            100,
            700,
            Mix {
                pages_per_s_permille: 80,
                text: 30,
                pointer: 30,
                zero: 15,
            },
            Mix {
                pages_per_s_permille: 5,
                text: 10,
                pointer: 10,
                zero: 0,
            },
            TICK_HZ / 2,
            TICK_HZ * 2,
        ),
        Workload::Idle => (
            5,
            500,
            Mix {
                pages_per_s_permille: 1,
                text: 0,
                pointer: 0,
                zero: 0,
            },
            none,
            1,
            0,
        ),
    }
}

/// Everything the VMM needs to boot a guest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GuestSpec {
    /// Which workload runs.
    pub workload: Workload,
    /// Seed of the initial image and of every vCPU's PRNG.
    pub seed: u64,
    /// Scales every rate (1.0 = as documented).
    pub rate: f64,
}

impl GuestSpec {
    /// The workload at its documented rate.
    pub fn new(workload: Workload, seed: u64) -> Self {
        GuestSpec {
            workload,
            seed,
            rate: 1.0,
        }
    }
}

/// This vCPU's slice of the data area: (first address, pages).
pub fn slice(mem_len: usize, vcpus: usize, i: usize) -> (u64, u64) {
    let data_pages = (mem_len as u64 - layout::DATA_BASE) / PAGE_SIZE as u64;
    let per = data_pages / vcpus as u64;
    (layout::DATA_BASE + i as u64 * per * PAGE_SIZE as u64, per)
}

/// Writes vCPU `i`'s descriptor and seeds its PRNG.
pub fn write_descriptor(mem: &GuestMemory, spec: &GuestSpec, vcpus: usize, i: usize) {
    let sp = layout::state_page(i);
    let (base, pages) = slice(mem.len(), vcpus, i);
    let (hot_permille, hot_share, busy, quiet, busy_rounds, quiet_rounds) = shape(spec.workload);
    let w = |o: i32, v: u64| mem.write_u64(sp + o as u64, v);
    w(off::DATA_BASE, base);
    w(off::DATA_PAGES, pages);
    w(off::HOT_PAGES, (pages * hot_permille / 1000).max(1));
    w(off::HOT_THRESH, hot_share * 65536 / 1000);
    for (at, mix) in [(off::BUSY, busy), (off::QUIET, quiet)] {
        let per_s = pages as f64 * mix.pages_per_s_permille as f64 / 1000.0 * spec.rate;
        let ops = if mix.pages_per_s_permille == 0 {
            0
        } else {
            ((per_s / TICK_HZ as f64).round() as u64).max(1)
        };
        let pct = |p: u64| p * 65536 / 100;
        w(at, ops);
        w(at + 8, pct(mix.text));
        w(at + 16, pct(mix.text + mix.pointer));
        w(at + 24, pct(mix.text + mix.pointer + mix.zero));
    }
    w(off::BUSY_ROUNDS, busy_rounds);
    w(off::QUIET_ROUNDS, quiet_rounds);
    w(off::WORDS, layout::WORDS);
    w(off::INDEX, i as u64);
    let bases = [
        0xffff_8880_0000_0000u64,
        0x0000_5555_5555_0000,
        0x0000_7ffc_0000_0000,
        0x0000_7f3a_1c00_0000,
    ];
    for (k, b) in bases.iter().enumerate() {
        w(off::BASES + 8 * k as i32, *b);
    }
    let mut rng = SplitMix64::new(spec.seed ^ (0x5eed_0000 + i as u64));
    w(off::RNG, rng.next_u64() | 1);
}

/// Words the text chunks are built from.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "for", "on", "with", "that", "this", "page", "memory",
    "kernel", "user", "error", "value", "return", "static", "struct", "int", "char", "void",
    "const", "if", "else", "while", "for", "NULL", "data", "file", "path", "/usr", "/var", "INFO",
    "WARN", "12:34", "2024", "0x0", "ffff", "->", "=", ";", "{", "}", "(", ")", "size",
];

/// The 256 8-byte text chunks the guest's text fills draw from (words, spaces, punctuation).
pub fn text_chunks(seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(seed ^ 0x7e47);
    let mut out = Vec::with_capacity(256 * 8);
    for _ in 0..256 {
        let mut chunk = Vec::with_capacity(16);
        while chunk.len() < 8 {
            chunk.extend_from_slice(WORDS[rng.index(WORDS.len())].as_bytes());
            chunk.push(match rng.below(12) {
                0 => b'\n',
                1 => b',',
                2 => b'.',
                _ => b' ',
            });
        }
        out.extend_from_slice(&chunk[..8]);
    }
    out
}

/// Fills the data area with the synthetic generator's content (text, pointer, code, shared,
/// random and zero pages), as a booted guest's memory would hold, 16 MiB at a time so the
/// host needs little extra memory even for large guests.
pub fn prefill(mem: &GuestMemory, seed: u64) -> Result<()> {
    const CHUNK: usize = 16 << 20;
    let mut at = layout::DATA_BASE as usize;
    let mut k = 0u64;
    while at < mem.len() {
        let n = CHUNK.min(mem.len() - at);
        let params = SyntheticParams {
            mem_bytes: n,
            page_size: PAGE_SIZE,
            snapshots: 1,
            ..SyntheticParams::default()
        };
        let s = SyntheticSeries::new(params, seed.wrapping_add(k.wrapping_mul(0x9e37)))?;
        let image = s.image();
        // Write only the non-zero pages so zero memory stays unbacked.
        for (p, page) in image.chunks_exact(PAGE_SIZE).enumerate() {
            if page.iter().any(|&b| b != 0) {
                mem.write((at + p * PAGE_SIZE) as u64, page);
            }
        }
        at += n;
        k += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_split_memory_and_scale_rates() {
        let mem = GuestMemory::new(64 << 20).unwrap();
        let spec = GuestSpec::new(Workload::HotSet, 1);
        write_descriptor(&mem, &spec, 2, 0);
        write_descriptor(&mem, &spec, 2, 1);
        let r = |i: usize, o: i32| mem.read_u64(layout::state_page(i) + o as u64);
        let pages = r(0, off::DATA_PAGES);
        assert_eq!(pages, (62 << 20) / 4096 / 2);
        assert_eq!(r(1, off::DATA_BASE), layout::DATA_BASE + pages * 4096);
        // 3.2% of the slice a second, at 100 rounds a second
        let ops = r(0, off::BUSY);
        assert_eq!(ops, (pages as f64 * 0.032 / 100.0).round() as u64);
        assert!(r(0, off::HOT_PAGES) >= 1);
        assert_ne!(r(0, off::RNG), r(1, off::RNG));
        assert_eq!(text_chunks(3).len(), 2048);
    }
}
