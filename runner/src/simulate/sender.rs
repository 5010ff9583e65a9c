//! What the simulated source puts on the wire for each page, per codec setting. The
//! settings are the runner's codec stages (`settings::CodecStages`, which the migration
//! engine uses too), plus a row without any codec.

use anyhow::{Context, Result};
use pagewire::xbzrle::XbzrleCache;
use pagewire::{Config, Encoder};

use crate::settings::CodecStages;

/// The codec settings the simulator compares, one row each in its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodecMode {
    /// No codec: every page whole, with an 8-byte address header.
    None,
    /// QEMU's XBZRLE as QEMU's source runs it: the first pass raw, then deltas against a
    /// pfn-indexed cache with QEMU's replacement rule, pages counted as QEMU's stream
    /// carries them (`pagewire::xbzrle::XbzrleCache::send_page`).
    Xbzrle,
    /// Zero pages and content-based redundancy elimination (duplicate pages and blocks), no
    /// deltas, no LZ4.
    CbrOnly,
    /// Everything pagewire has, LZ4 frames included.
    All,
}

impl CodecMode {
    /// All settings, in report order.
    pub const ALL: [CodecMode; 4] = [
        CodecMode::None,
        CodecMode::Xbzrle,
        CodecMode::CbrOnly,
        CodecMode::All,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            CodecMode::None => "none",
            CodecMode::Xbzrle => "xbzrle (qemu)",
            CodecMode::CbrOnly => "cbr only",
            CodecMode::All => "all",
        }
    }
}

/// Bytes of per-page header when no codec runs.
pub const RAW_PAGE_HEADER: u64 = 8;

/// Turns pages into wire bytes.
pub enum Sender<'a> {
    /// No codec.
    Raw { page_size: u64 },
    /// A pagewire encoder.
    Codec { enc: Box<Encoder<'a>>, out: Vec<u8> },
    /// QEMU's XBZRLE with QEMU's cache.
    Xbzrle {
        cache: XbzrleCache<'a>,
        out: Vec<u8>,
        page_size: usize,
    },
}

impl<'a> Sender<'a> {
    /// A sender for `mode`; `storage` must hold [`storage_len`] bytes.
    pub fn new(mode: CodecMode, base: Config, storage: &'a mut [u8]) -> Result<Self> {
        match mode {
            CodecMode::None => Ok(Sender::Raw {
                page_size: u64::from(base.page_size),
            }),
            CodecMode::Xbzrle => Self::xbzrle(base, storage),
            CodecMode::CbrOnly => Self::pagewire(CodecStages::Cbr, base, storage),
            CodecMode::All => Self::pagewire(CodecStages::All, base, storage),
        }
    }

    /// The "xbzrle (qemu)" row: QEMU's cache of the same size as pagewire's (64 MiB by
    /// default, QEMU's default too, so `--cache-mib` sets both).
    fn xbzrle(base: Config, storage: &'a mut [u8]) -> Result<Self> {
        let page_size = base.page_size as usize;
        let slots = xbzrle_slots(base);
        let cache = XbzrleCache::new(storage, slots, page_size)
            .context("the XBZRLE cache needs at least one page")?;
        Ok(Sender::Xbzrle {
            cache,
            out: vec![0; page_size],
            page_size,
        })
    }

    /// pagewire's encoder running `stages`.
    fn pagewire(stages: CodecStages, base: Config, storage: &'a mut [u8]) -> Result<Self> {
        let (cfg, features) = stages.apply(base);
        let mut enc = Encoder::new(cfg, storage)?;
        enc.set_features(features);
        Ok(Sender::Codec {
            enc: Box::new(enc),
            out: vec![0; cfg.max_output_len()],
        })
    }

    /// Bytes on the wire now attributable to this page (frames go out as they fill).
    pub fn page(&mut self, pfn: u64, page: &[u8]) -> Result<u64> {
        match self {
            Sender::Raw { page_size } => Ok(*page_size + RAW_PAGE_HEADER),
            Sender::Codec { enc, out } => Ok(enc.encode_page(pfn, page, out)? as u64),
            Sender::Xbzrle {
                cache,
                out,
                page_size,
            } => Ok(cache.send_page(pfn, page, out).qemu_wire_bytes(*page_size) as u64),
        }
    }

    /// Bytes that closing the iteration puts on the wire. The dirty log is read next, so
    /// QEMU's XBZRLE cache starts its next sync round here.
    pub fn end_iteration(&mut self) -> Result<u64> {
        match self {
            Sender::Raw { .. } => Ok(0),
            Sender::Codec { enc, out } => Ok(enc.end_iteration(out)? as u64),
            Sender::Xbzrle { cache, .. } => {
                cache.sync();
                Ok(0)
            }
        }
    }

    /// Bytes that ending the stream puts on the wire.
    pub fn finish(&mut self) -> Result<u64> {
        match self {
            Sender::Raw { .. } | Sender::Xbzrle { .. } => Ok(0),
            Sender::Codec { enc, out } => Ok(enc.finish(out)? as u64),
        }
    }
}

/// Storage a sender for `mode` needs.
pub fn storage_len(mode: CodecMode, base: Config) -> usize {
    match mode {
        CodecMode::None => 0,
        CodecMode::Xbzrle => XbzrleCache::storage_len(xbzrle_slots(base), base.page_size as usize),
        CodecMode::CbrOnly => pagewire_storage_len(CodecStages::Cbr, base),
        CodecMode::All => pagewire_storage_len(CodecStages::All, base),
    }
}

/// Slots of the XBZRLE row's cache: as many pages as pagewire's cache holds.
fn xbzrle_slots(base: Config) -> usize {
    XbzrleCache::slots_for(base.cache_len(), base.page_size as usize)
}

fn pagewire_storage_len(stages: CodecStages, base: Config) -> usize {
    stages.apply(base).0.encoder_storage_len()
}
