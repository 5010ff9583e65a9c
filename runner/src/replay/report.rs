//! What a replay measured, and its two presentations: an aligned text table and JSON.
//!
//! Sizes are printed in MiB (2^20 bytes), speeds in MB/s (10^6 bytes of page data per
//! second of codec time), ratios as wire bytes in percent of raw page bytes.

use std::fmt::Write as _;
use std::ops::AddAssign;
use std::path::Path;

use anyhow::{Context, Result};
use pagewire::{Config, EncoderStats};
use serde::Serialize;

/// Counters of one pass (or of several passes added up).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Pages sent.
    pub pages: u64,
    /// Pages by record kind.
    pub zero: u64,
    pub dup: u64,
    pub blocks: u64,
    pub delta: u64,
    pub raw: u64,
    /// Page bytes handed to the encoder.
    pub raw_bytes: u64,
    /// Bytes on the wire: stream header and frames (after LZ4).
    pub wire_bytes: u64,
    /// Bytes of the page records before frame compression.
    pub record_bytes: u64,
    /// Blocks inside BLOCKS records, by kind.
    pub block_zero: u64,
    pub block_ref: u64,
    pub block_literal: u64,
    pub block_delta: u64,
    /// Whole-page duplicates plus block references.
    pub cache_hits: u64,
    /// Pages sent as a delta (whole-page, or with at least one delta block).
    pub delta_uses: u64,
    pub frames: u64,
    pub frames_lz4: u64,
    /// Time spent in encoder calls, in nanoseconds.
    pub encode_ns: u64,
    /// Time spent in decoder calls, in nanoseconds.
    pub decode_ns: u64,
}

impl Counts {
    /// The encoder counters that grew from `before` to `after` (timings left at zero).
    pub fn between(before: &EncoderStats, after: &EncoderStats) -> Counts {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let (a, b) = (after, before);
        Counts {
            pages: d(a.pages(), b.pages()),
            zero: d(a.zero.pages, b.zero.pages),
            dup: d(a.dup.pages, b.dup.pages),
            blocks: d(a.blocks.pages, b.blocks.pages),
            delta: d(a.delta.pages, b.delta.pages),
            raw: d(a.raw.pages, b.raw.pages),
            raw_bytes: d(a.bytes_in, b.bytes_in),
            wire_bytes: d(a.bytes_out, b.bytes_out),
            record_bytes: d(record_bytes(a), record_bytes(b)),
            block_zero: d(a.block_zero, b.block_zero),
            block_ref: d(a.block_ref, b.block_ref),
            block_literal: d(a.block_literal, b.block_literal),
            block_delta: d(a.block_delta, b.block_delta),
            cache_hits: d(a.cache_hits, b.cache_hits),
            delta_uses: d(a.delta_uses, b.delta_uses),
            frames: d(a.frames, b.frames),
            frames_lz4: d(a.frames_lz4, b.frames_lz4),
            encode_ns: 0,
            decode_ns: 0,
        }
    }

    /// Wire bytes in percent of raw bytes; `None` when nothing was sent.
    pub fn ratio_percent(&self) -> Option<f64> {
        (self.raw_bytes > 0).then(|| self.wire_bytes as f64 * 100.0 / self.raw_bytes as f64)
    }

    /// Page bytes encoded per second of encoder time, in MB/s.
    pub fn encode_mb_s(&self) -> Option<f64> {
        mb_s(self.raw_bytes, self.encode_ns)
    }

    /// Page bytes decoded per second of decoder time, in MB/s.
    pub fn decode_mb_s(&self) -> Option<f64> {
        mb_s(self.raw_bytes, self.decode_ns)
    }
}

fn record_bytes(s: &EncoderStats) -> u64 {
    s.zero.bytes + s.dup.bytes + s.raw.bytes + s.delta.bytes + s.blocks.bytes
}

fn mb_s(bytes: u64, ns: u64) -> Option<f64> {
    (bytes > 0 && ns > 0).then(|| bytes as f64 * 1e3 / ns as f64)
}

impl AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.pages += o.pages;
        self.zero += o.zero;
        self.dup += o.dup;
        self.blocks += o.blocks;
        self.delta += o.delta;
        self.raw += o.raw;
        self.raw_bytes += o.raw_bytes;
        self.wire_bytes += o.wire_bytes;
        self.record_bytes += o.record_bytes;
        self.block_zero += o.block_zero;
        self.block_ref += o.block_ref;
        self.block_literal += o.block_literal;
        self.block_delta += o.block_delta;
        self.cache_hits += o.cache_hits;
        self.delta_uses += o.delta_uses;
        self.frames += o.frames;
        self.frames_lz4 += o.frames_lz4;
        self.encode_ns += o.encode_ns;
        self.decode_ns += o.decode_ns;
    }
}

/// One row of the report: a pass, or the total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassReport {
    /// The pass number (0 = first full pass); `None` for the total.
    pub pass: Option<usize>,
    #[serde(flatten)]
    pub counts: Counts,
    pub ratio_percent: Option<f64>,
    pub encode_mb_s: Option<f64>,
    pub decode_mb_s: Option<f64>,
}

impl PassReport {
    /// A row for `counts`, with the derived figures filled in.
    pub fn new(pass: Option<usize>, counts: Counts) -> Self {
        PassReport {
            pass,
            ratio_percent: counts.ratio_percent(),
            encode_mb_s: counts.encode_mb_s(),
            decode_mb_s: counts.decode_mb_s(),
            counts,
        }
    }
}

/// The codec configuration a replay ran with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ConfigReport {
    pub page_size: u32,
    pub blocks_per_page: u8,
    pub cache_pages: u32,
    pub cache_bytes: u64,
    pub delta_threshold: u32,
    pub frame_bytes: u32,
    pub lz4: bool,
    pub stream_id: u32,
}

impl From<&Config> for ConfigReport {
    fn from(c: &Config) -> Self {
        ConfigReport {
            page_size: c.page_size,
            blocks_per_page: c.blocks_per_page,
            cache_pages: c.cache_pages,
            cache_bytes: c.cache_len() as u64,
            delta_threshold: c.delta_threshold,
            frame_bytes: c.frame_bytes,
            lz4: c.lz4,
            stream_id: c.stream_id,
        }
    }
}

/// Everything a replay measured. Only a replay that verified produces one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    /// What was replayed.
    pub source: String,
    pub page_size: usize,
    pub mem_bytes: usize,
    pub snapshots: usize,
    pub interval_ms: Option<u64>,
    pub config: ConfigReport,
    /// How the decoder kept the pages its stream refers to: "in place" or "cache copy".
    pub decoder: String,
    /// The decoder's storage in bytes (one stream's).
    pub decoder_storage_bytes: usize,
    /// Every page delivered matched the source, and after every pass the destination image
    /// matched the snapshot.
    pub verified: bool,
    pub passes: Vec<PassReport>,
    pub total: PassReport,
}

impl ReplayReport {
    /// Writes the report as pretty-printed JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write the JSON report to {}", path.display()))
    }

    /// The report as an aligned text table followed by the block and frame totals.
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let _ = writeln!(s, "source: {}", self.source);
        let _ = writeln!(
            s,
            "config: page {} B, {} blocks/page, cache {} pages ({} MiB), delta threshold {} B, frames {} KiB, LZ4 {}",
            c.page_size,
            c.blocks_per_page,
            c.cache_pages,
            c.cache_bytes >> 20,
            c.delta_threshold,
            c.frame_bytes / 1024,
            if c.lz4 { "on" } else { "off" },
        );
        let _ = writeln!(
            s,
            "decoder: {}, {} KiB of storage",
            self.decoder,
            self.decoder_storage_bytes.div_ceil(1024)
        );
        s.push('\n');

        let header = [
            "pass", "pages", "zero", "dup", "blocks", "delta", "raw", "raw MiB", "wire MiB",
            "wire/raw", "enc MB/s", "dec MB/s",
        ];
        let mut rows: Vec<Vec<String>> = Vec::new();
        for p in self.passes.iter().chain(std::iter::once(&self.total)) {
            let k = &p.counts;
            rows.push(vec![
                p.pass
                    .map_or_else(|| "total".to_string(), |i| i.to_string()),
                k.pages.to_string(),
                k.zero.to_string(),
                k.dup.to_string(),
                k.blocks.to_string(),
                k.delta.to_string(),
                k.raw.to_string(),
                mib(k.raw_bytes),
                mib(k.wire_bytes),
                p.ratio_percent
                    .map_or_else(|| "-".to_string(), |r| format!("{r:.1}%")),
                opt(p.encode_mb_s),
                opt(p.decode_mb_s),
            ]);
        }
        let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
        for r in &rows {
            for (w, cell) in widths.iter_mut().zip(r) {
                *w = (*w).max(cell.len());
            }
        }
        let line = |cells: &mut dyn Iterator<Item = &str>| {
            let mut l = String::new();
            for (i, (cell, w)) in cells.zip(&widths).enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                let _ = write!(l, "{cell:>w$}");
            }
            l
        };
        let _ = writeln!(s, "{}", line(&mut header.iter().copied()));
        let rule: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
        let _ = writeln!(s, "{}", "-".repeat(rule));
        let last = rows.len() - 1;
        for (i, r) in rows.iter().enumerate() {
            if i == last {
                let _ = writeln!(s, "{}", "-".repeat(rule));
            }
            let _ = writeln!(s, "{}", line(&mut r.iter().map(String::as_str)));
        }

        let t = &self.total.counts;
        s.push('\n');
        let _ = writeln!(
            s,
            "blocks inside BLOCKS records: zero {}, ref {}, literal {}, delta {}",
            t.block_zero, t.block_ref, t.block_literal, t.block_delta
        );
        let _ = writeln!(
            s,
            "cache hits {} (duplicate pages + block references), pages using a delta {}",
            t.cache_hits, t.delta_uses
        );
        let _ = writeln!(
            s,
            "frames {} ({} LZ4-compressed); record bytes before LZ4 {} MiB",
            t.frames,
            t.frames_lz4,
            mib(t.record_bytes)
        );
        let _ = writeln!(
            s,
            "verified: {}",
            if self.verified {
                "every page delivered matched the source; the destination matched every snapshot"
            } else {
                "NO"
            }
        );
        s
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1u64 << 20) as f64)
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReplayReport {
        let a = Counts {
            pages: 10,
            zero: 4,
            raw: 6,
            raw_bytes: 40960,
            wire_bytes: 25000,
            encode_ns: 1_000_000,
            decode_ns: 500_000,
            frames: 1,
            ..Counts::default()
        };
        let b = Counts::default();
        let mut t = a;
        t += b;
        ReplayReport {
            source: "test".into(),
            page_size: 4096,
            mem_bytes: 40960,
            snapshots: 2,
            interval_ms: None,
            config: ConfigReport::from(&Config::DEFAULT),
            decoder: "in place".into(),
            decoder_storage_bytes: 364_552,
            verified: true,
            passes: vec![PassReport::new(Some(0), a), PassReport::new(Some(1), b)],
            total: PassReport::new(None, t),
        }
    }

    #[test]
    fn derived_figures() {
        let r = sample();
        let p = &r.passes[0];
        assert!((p.ratio_percent.unwrap() - 61.035).abs() < 0.01);
        assert!((p.encode_mb_s.unwrap() - 40.96).abs() < 0.01);
        assert!((p.decode_mb_s.unwrap() - 81.92).abs() < 0.01);
        assert_eq!(r.passes[1].ratio_percent, None);
    }

    #[test]
    fn table_is_aligned() {
        let text = sample().table();
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("pass"))
            .take(6)
            .collect();
        assert_eq!(rows.len(), 6);
        let w = rows[0].len();
        assert!(rows.iter().all(|r| r.len() == w), "{text}");
        assert!(text.contains("total"));
    }

    #[test]
    fn json_has_the_fields() {
        let v: serde_json::Value = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["passes"][0]["pages"], 10);
        assert_eq!(v["total"]["wire_bytes"], 25000);
        assert!(v["total"]["ratio_percent"].is_f64());
        assert_eq!(v["passes"][1]["ratio_percent"], serde_json::Value::Null);
        assert_eq!(v["config"]["lz4"], true);
    }
}
