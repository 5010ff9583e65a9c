//! What the simulated source puts on the wire for each page, per codec setting.

use anyhow::Result;
use pagewire::{Config, Encoder, Features};

/// The codec settings the simulator compares.
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

    /// Encoder configuration and features for this setting, from a base configuration.
    pub fn codec(self, base: Config) -> Option<(Config, Features)> {
        match self {
            CodecMode::None => None,
            CodecMode::XbzrleLike => Some((
                Config { lz4: false, ..base },
                Features {
                    cbr: false,
                    delta: true,
                },
            )),
            CodecMode::CbrOnly => Some((
                Config { lz4: false, ..base },
                Features {
                    cbr: true,
                    delta: false,
                },
            )),
            CodecMode::All => Some((base, Features::ALL)),
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
    /// A sender for `mode`; `storage` must hold `cfg.encoder_storage_len()` bytes when a
    /// codec runs (see [`storage_len`]).
    pub fn new(mode: CodecMode, base: Config, storage: &'a mut [u8]) -> Result<Self> {
        Ok(match mode.codec(base) {
            None => Sender::Raw {
                page_size: u64::from(base.page_size),
            },
            Some((cfg, features)) => {
                let mut enc = Encoder::new(cfg, storage)?;
                enc.set_features(features);
                Sender::Codec {
                    enc: Box::new(enc),
                    out: vec![0; cfg.max_output_len()],
                }
            }
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
    mode.codec(base)
        .map_or(0, |(cfg, _)| cfg.encoder_storage_len())
}
