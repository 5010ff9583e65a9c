//! What the simulated source puts on the wire for each page, per codec setting. The
//! settings are the runner's codec stages (`settings::CodecStages`, which the migration
//! engine uses too), plus a row without any codec.

use anyhow::Result;
use pagewire::{Config, Encoder};

use crate::settings::CodecStages;

/// The codec settings the simulator compares, one row each in its report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodecMode {
    /// No codec: every page whole, with an 8-byte address header.
    None,
    /// Zero pages and XOR/RLE deltas against the page's previous version, no LZ4: what
    /// QEMU's XBZRLE does.
    XbzrleLike,
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
        CodecMode::XbzrleLike,
        CodecMode::CbrOnly,
        CodecMode::All,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            CodecMode::None => "none",
            CodecMode::XbzrleLike => "deltas (xbzrle-like)",
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
}

impl<'a> Sender<'a> {
    /// A sender for `mode`; `storage` must hold [`storage_len`] bytes.
    pub fn new(mode: CodecMode, base: Config, storage: &'a mut [u8]) -> Result<Self> {
        match mode {
            CodecMode::None => Ok(Sender::Raw {
                page_size: u64::from(base.page_size),
            }),
            CodecMode::XbzrleLike => Self::xbzrle_like(base, storage),
            CodecMode::CbrOnly => Self::pagewire(CodecStages::Cbr, base, storage),
            CodecMode::All => Self::pagewire(CodecStages::All, base, storage),
        }
    }

    /// The "deltas (xbzrle-like)" row: pagewire with zero pages and deltas only. The one
    /// place that says how this row sends (with [`xbzrle_like_storage_len`]), so that a
    /// QEMU-faithful XBZRLE cache can take its place.
    fn xbzrle_like(base: Config, storage: &'a mut [u8]) -> Result<Self> {
        Self::pagewire(CodecStages::Deltas, base, storage)
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
        }
    }

    /// Bytes that closing the iteration puts on the wire.
    pub fn end_iteration(&mut self) -> Result<u64> {
        match self {
            Sender::Raw { .. } => Ok(0),
            Sender::Codec { enc, out } => Ok(enc.end_iteration(out)? as u64),
        }
    }

    /// Bytes that ending the stream puts on the wire.
    pub fn finish(&mut self) -> Result<u64> {
        match self {
            Sender::Raw { .. } => Ok(0),
            Sender::Codec { enc, out } => Ok(enc.finish(out)? as u64),
        }
    }
}

/// Storage a sender for `mode` needs.
pub fn storage_len(mode: CodecMode, base: Config) -> usize {
    match mode {
        CodecMode::None => 0,
        CodecMode::XbzrleLike => xbzrle_like_storage_len(base),
        CodecMode::CbrOnly => pagewire_storage_len(CodecStages::Cbr, base),
        CodecMode::All => pagewire_storage_len(CodecStages::All, base),
    }
}

/// Storage of the "deltas (xbzrle-like)" row's sender (see `Sender::xbzrle_like`).
fn xbzrle_like_storage_len(base: Config) -> usize {
    pagewire_storage_len(CodecStages::Deltas, base)
}

fn pagewire_storage_len(stages: CodecStages, base: Config) -> usize {
    stages.apply(base).0.encoder_storage_len()
}
