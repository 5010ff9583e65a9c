//! The stats block: the device's encoder counters, mirrored into shared memory so the host
//! can report them without asking.

use core::sync::atomic::Ordering;

use super::layout::{ctrl, STATS_WORDS};
use super::shm::Region;
use crate::encoder::{EncoderStats, KindStats};

/// The counters in block order (`docs/OFFLOAD.md`).
fn to_array(s: &EncoderStats) -> [u64; STATS_WORDS / 2] {
    [
        s.zero.pages,
        s.zero.bytes,
        s.dup.pages,
        s.dup.bytes,
        s.raw.pages,
        s.raw.bytes,
        s.delta.pages,
        s.delta.bytes,
        s.blocks.pages,
        s.blocks.bytes,
        s.block_zero,
        s.block_ref,
        s.block_literal,
        s.block_delta,
        s.cache_hits,
        s.delta_uses,
        s.bytes_in,
        s.bytes_out,
        s.frames,
        s.frames_lz4,
        s.blobs,
        s.blob_bytes,
        s.iterations,
    ]
}

fn from_array(a: [u64; STATS_WORDS / 2]) -> EncoderStats {
    let k = |i: usize| KindStats {
        pages: a[i],
        bytes: a[i + 1],
    };
    EncoderStats {
        zero: k(0),
        dup: k(2),
        raw: k(4),
        delta: k(6),
        blocks: k(8),
        block_zero: a[10],
        block_ref: a[11],
        block_literal: a[12],
        block_delta: a[13],
        cache_hits: a[14],
        delta_uses: a[15],
        bytes_in: a[16],
        bytes_out: a[17],
        frames: a[18],
        frames_lz4: a[19],
        blobs: a[20],
        blob_bytes: a[21],
        iterations: a[22],
    }
}

/// Device side: writes the counters (Relaxed; the next completion's Release publishes them).
pub(crate) fn write(region: &Region<'_>, s: &EncoderStats) {
    for (i, v) in to_array(s).into_iter().enumerate() {
        let at = ctrl::STATS + 8 * i;
        region.store(at, v as u32, Ordering::Relaxed);
        region.store(at + 4, (v >> 32) as u32, Ordering::Relaxed);
    }
}

/// Host side: reads the counters as of the last completion it acquired.
pub(crate) fn read(region: &Region<'_>) -> EncoderStats {
    let mut a = [0u64; STATS_WORDS / 2];
    for (i, v) in a.iter_mut().enumerate() {
        let at = ctrl::STATS + 8 * i;
        *v = u64::from(region.load(at, Ordering::Relaxed))
            | u64::from(region.load(at + 4, Ordering::Relaxed)) << 32;
    }
    from_array(a)
}
