//! LZ4 for frame bodies, with lz4_flex's hash tables in the encoder's storage.
//!
//! lz4_flex's no-alloc `compress_into` builds its hash table on the stack at every call:
//! 8 KiB for bodies under 64 KiB, 16 KiB above. On the firmware's Cortex-M4 that one frame
//! was most of the stack. Here the tables live in storage the caller gave the encoder, and
//! each body compresses to exactly the bytes `compress_into` gives: on 64-bit targets,
//! bodies shorter than `LZ4_SMALL_BODY_MAX` (64 KiB - 1) use the small table (16-bit
//! entries) and longer ones the large table, the choice `compress_into` makes, because the
//! two hash differently there; elsewhere they hash alike and the large table, which is
//! built in place, serves every body.
//!
//! The `safe` build cannot place a table in bytes without `unsafe`, so it calls
//! `compress_into` as before (same output, table on the stack); it carves the same storage,
//! so the configuration's sizes do not depend on the feature.

use crate::config::{Config, LZ4_TABLE_SLOT};
use crate::error::Result;
use crate::storage::Carver;
#[cfg(not(feature = "safe"))]
use {
    crate::config::{LZ4_SMALL_BODY_MAX, LZ4_SMALL_TABLE_DIFFERS},
    crate::fast::Placed,
    lz4_flex::block::CompressTable,
};

/// The tables of one encoder.
#[cfg(not(feature = "safe"))]
pub(super) struct Lz4Tables<'a> {
    small: Option<Placed<'a, CompressTable>>,
    large: Option<Placed<'a, CompressTable>>,
}

#[cfg(not(feature = "safe"))]
impl<'a> Lz4Tables<'a> {
    /// Carves the tables `cfg` counts and places them (none in a stream without LZ4).
    pub fn new(carve: &mut Carver<'a>, cfg: &Config) -> Result<Self> {
        let storage = carve.bytes(cfg.lz4_tables() * LZ4_TABLE_SLOT)?;
        if !cfg.lz4 {
            return Ok(Lz4Tables {
                small: None,
                large: None,
            });
        }
        let (first, second) = storage.split_at_mut(LZ4_TABLE_SLOT.min(storage.len()));
        Ok(if LZ4_SMALL_TABLE_DIFFERS {
            Lz4Tables {
                small: Placed::new(first, CompressTable::small),
                large: Placed::new(second, CompressTable::large),
            }
        } else {
            Lz4Tables {
                small: None,
                large: Placed::new(first, CompressTable::large),
            }
        })
    }

    /// Compresses `body` into `out` as one LZ4 block; `None` if it does not fit or there is
    /// no table for it (a stream without LZ4).
    pub fn compress(&mut self, body: &[u8], out: &mut [u8]) -> Option<usize> {
        let table = match &mut self.small {
            Some(small) if body.len() < LZ4_SMALL_BODY_MAX => small,
            _ => self.large.as_mut()?,
        }
        .get();
        // What `new` and the choice above guarantee, stated where the compiler sees it: a
        // small table only where it differs, and only for short bodies. lz4_flex's paths
        // for anything else are then dropped: where only the large table is placed, its
        // second copy of the compressor (692 B of code on the Cortex-M4), and everywhere,
        // the upgrade of a small table to a large one built on the stack.
        if let CompressTable::Small(_) = table {
            if !LZ4_SMALL_TABLE_DIFFERS || body.len() >= LZ4_SMALL_BODY_MAX {
                return None;
            }
        }
        lz4_flex::block::compress_into_with_table(body, out, table).ok()
    }
}

/// The `safe` build's stand-in: the storage is carved but unused.
#[cfg(feature = "safe")]
pub(super) struct Lz4Tables<'a>(core::marker::PhantomData<&'a mut [u8]>);

#[cfg(feature = "safe")]
impl<'a> Lz4Tables<'a> {
    /// Carves the storage `cfg` counts for the tables.
    pub fn new(carve: &mut Carver<'a>, cfg: &Config) -> Result<Self> {
        carve.bytes(cfg.lz4_tables() * LZ4_TABLE_SLOT)?;
        Ok(Lz4Tables(core::marker::PhantomData))
    }

    /// Compresses `body` into `out` as one LZ4 block; `None` if it does not fit.
    pub fn compress(&mut self, body: &[u8], out: &mut [u8]) -> Option<usize> {
        lz4_flex::block::compress_into(body, out).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LZ4_SMALL_BODY_MAX, LZ4_SMALL_TABLE_DIFFERS};
    extern crate std;
    use std::vec;

    /// Bodies of every size class compress to exactly the bytes of `compress_into`, whose
    /// output the stream format has always carried.
    #[test]
    fn same_bytes_as_compress_into() {
        let cfg = Config {
            frame_bytes: 1 << 17,
            ..Config::DEFAULT
        };
        let mut storage = vec![0u8; cfg.lz4_tables() * LZ4_TABLE_SLOT + 8];
        let mut carve = Carver::new(&mut storage);
        let mut tables = Lz4Tables::new(&mut carve, &cfg).unwrap();
        let mut rand = crate::test_rng(0x1234_5678_9abc_def1);
        let text: std::vec::Vec<u8> = (0..1 << 17)
            .map(|i| match rand() % 4 {
                0 => rand() as u8,
                _ => b"pagewire "[i % 9],
            })
            .collect();
        let mut want = vec![0u8; lz4_flex::block::get_maximum_output_size(text.len())];
        let mut got = want.clone();
        let lens = [1, 100, 4096, 65534, 65535, 65536, 100_000, 1 << 17];
        for len in if cfg!(miri) { &lens[..2] } else { &lens[..] } {
            let body = &text[..*len];
            let n = lz4_flex::block::compress_into(body, &mut want).unwrap();
            assert_eq!(tables.compress(body, &mut got), Some(n), "{len}");
            assert_eq!(&got[..n], &want[..n], "{len}");
        }
    }

    #[test]
    fn tables_only_where_frames_need_them() {
        let tables = |lz4, frame_bytes| {
            Config {
                lz4,
                frame_bytes,
                ..Config::DEFAULT
            }
            .lz4_tables()
        };
        let two = if LZ4_SMALL_TABLE_DIFFERS { 2 } else { 1 };
        assert_eq!(tables(false, 1 << 20), two);
        assert_eq!(tables(true, 8192), 1);
        assert_eq!(tables(true, LZ4_SMALL_BODY_MAX as u32 - 1), 1);
        assert_eq!(tables(true, LZ4_SMALL_BODY_MAX as u32), two);
    }
}
