//! Codec settings, the one place they become a codec configuration: the numbers a user
//! gives ([`CodecSettings`]: cache size, blocks, frame size, ...) and which of the codec's
//! stages run ([`CodecStages`]: the presets the migration engine's `--codec on|off` and the
//! simulator's codec rows name).

use anyhow::Result;
use pagewire::{Config, Features};

/// Codec settings as a user gives them; `None` keeps the codec's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CodecSettings {
    /// Cache capacity in MiB (default: 64 MiB, `Config::DEFAULT` at 4 KiB pages).
    pub cache_mib: Option<u64>,
    /// Blocks per page.
    pub blocks: Option<u64>,
    /// Largest whole-page delta worth sending, in bytes.
    pub delta_threshold: Option<u64>,
    /// Largest uncompressed frame body, in KiB.
    pub frame_kib: Option<u64>,
    /// Turn LZ4 frame compression off.
    pub no_lz4: bool,
}

/// Default cache capacity in MiB.
pub const DEFAULT_CACHE_MIB: u64 = 64;

/// Out-of-range numbers become a value the codec rejects, so the user sees the codec's own
/// message about the field.
fn saturate_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl CodecSettings {
    /// The codec configuration for pages of `page_size` bytes, checked by the codec.
    pub fn config(&self, page_size: usize) -> Result<Config> {
        let d = Config::DEFAULT;
        let page_size = saturate_u32(page_size as u64);
        let cache_bytes = self
            .cache_mib
            .unwrap_or(DEFAULT_CACHE_MIB)
            .saturating_mul(1 << 20);
        let cache_pages = if page_size == 0 {
            0
        } else {
            saturate_u32(cache_bytes / u64::from(page_size))
        };
        let cfg = Config {
            page_size,
            blocks_per_page: self
                .blocks
                .map_or(d.blocks_per_page, |b| u8::try_from(b).unwrap_or(u8::MAX)),
            cache_pages,
            delta_threshold: self.delta_threshold.map_or(d.delta_threshold, saturate_u32),
            frame_bytes: self
                .frame_kib
                .map_or(d.frame_bytes, |k| saturate_u32(k.saturating_mul(1024))),
            lz4: !self.no_lz4,
            stream_id: d.stream_id,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Which of the codec's stages run. Zero pages are always detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CodecStages {
    /// Zero pages only: every other page raw, a one-page cache, no LZ4 (about what a plain
    /// pre-copy migration sends).
    ZeroPages,
    /// Zero pages and content-based redundancy elimination (duplicate pages and blocks), no
    /// deltas, no LZ4.
    Cbr,
    /// Everything pagewire has: zero pages, CBR, deltas, LZ4 frames.
    All,
}

impl CodecStages {
    /// The encoder configuration and features for these stages, from a base configuration.
    pub fn apply(self, base: Config) -> (Config, Features) {
        match self {
            CodecStages::ZeroPages => (
                Config {
                    lz4: false,
                    cache_pages: 1,
                    ..base
                },
                Features::NONE,
            ),
            CodecStages::Cbr => (
                Config { lz4: false, ..base },
                Features {
                    cbr: true,
                    delta: false,
                },
            ),
            CodecStages::All => (base, Features::ALL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_codec_defaults() {
        let c = CodecSettings::default().config(4096).unwrap();
        assert_eq!(c, Config::DEFAULT);
    }

    #[test]
    fn maps_each_option() {
        let s = CodecSettings {
            cache_mib: Some(8),
            blocks: Some(8),
            delta_threshold: Some(1024),
            frame_kib: Some(128),
            no_lz4: true,
        };
        let c = s.config(8192).unwrap();
        assert_eq!(c.cache_pages, 1024);
        assert_eq!(c.blocks_per_page, 8);
        assert_eq!(c.delta_threshold, 1024);
        assert_eq!(c.frame_bytes, 128 * 1024);
        assert!(!c.lz4);
        assert_eq!(c.page_size, 8192);
    }

    #[test]
    fn bad_values_give_the_codec_message() {
        let msg = |s: CodecSettings| format!("{}", s.config(4096).unwrap_err());
        let m = msg(CodecSettings {
            blocks: Some(3),
            ..Default::default()
        });
        assert!(m.contains("blocks_per_page must be 1, 2, 4 or 8"), "{m}");
        let m = msg(CodecSettings {
            blocks: Some(100_000),
            ..Default::default()
        });
        assert!(m.contains("blocks_per_page"), "{m}");
        let m = msg(CodecSettings {
            cache_mib: Some(0),
            ..Default::default()
        });
        assert!(m.contains("cache_pages"), "{m}");
        let m = msg(CodecSettings {
            cache_mib: Some(u64::MAX),
            ..Default::default()
        });
        assert!(m.contains("cache_pages"), "{m}");
        let m = msg(CodecSettings {
            frame_kib: Some(4),
            ..Default::default()
        });
        assert!(m.contains("frame_bytes"), "{m}");
        let m = msg(CodecSettings {
            delta_threshold: Some(5000),
            ..Default::default()
        });
        assert!(m.contains("delta_threshold"), "{m}");
        let m = format!("{}", CodecSettings::default().config(1000).unwrap_err());
        assert!(m.contains("page_size"), "{m}");
    }

    #[test]
    fn stages_switch_what_they_say() {
        for stages in [CodecStages::ZeroPages, CodecStages::Cbr, CodecStages::All] {
            let (cfg, f) = stages.apply(Config::DEFAULT);
            cfg.validate().unwrap();
            assert_eq!(cfg.lz4, stages == CodecStages::All);
            assert_eq!(f.cbr, matches!(stages, CodecStages::Cbr | CodecStages::All));
            assert_eq!(f.delta, stages == CodecStages::All);
        }
        assert_eq!(
            CodecStages::ZeroPages.apply(Config::DEFAULT).0.cache_pages,
            1
        );
    }
}
