//! The region's geometry: checking a header once (both sides do), and laying out a new one.

use super::error::OffloadError;
use super::layout::{RegionHeader, CONTROL_LEN, ENTRY_BYTES, OFFLOAD_MAGIC, OFFLOAD_VERSION};
use crate::config::Config;
use crate::encoder::Features;

/// Largest ring (entries).
pub const MAX_ENTRIES: u32 = 1 << 16;

/// A header that passed [`Layout::check`]: every offset below is inside the region, the
/// areas do not overlap, and the codec configuration is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The header as read.
    pub header: RegionHeader,
    /// The codec configuration.
    pub config: Config,
    pub(crate) sq_offset: usize,
    pub(crate) sq_entries: u32,
    pub(crate) cq_offset: usize,
    pub(crate) cq_entries: u32,
    pub(crate) page_offset: usize,
    pub(crate) page_len: usize,
    pub(crate) out_offset: usize,
    pub(crate) out_len: u32,
}

/// Output bytes one encoder call may produce, rounded to whole words.
pub(crate) const fn chunk_max(cfg: &Config) -> usize {
    (cfg.max_output_len() + 3) & !3
}

impl Layout {
    /// Checks `h` against a region of `region_len` bytes.
    pub fn check(h: &RegionHeader, region_len: usize) -> Result<Layout, OffloadError> {
        if h.magic != OFFLOAD_MAGIC {
            return Err(OffloadError::BadMagic);
        }
        if h.version != OFFLOAD_VERSION {
            return Err(OffloadError::UnsupportedVersion(h.version));
        }
        let len = h.region_len as usize;
        if len < CONTROL_LEN || len > region_len {
            return Err(OffloadError::RegionTooSmall {
                needed: len.max(CONTROL_LEN),
                given: region_len,
            });
        }
        if h.reserved.iter().any(|&r| r != 0) || h.features & !3 != 0 || h.lz4 > 1 {
            return Err(OffloadError::BadLayout("reserved header field set"));
        }
        let cfg = h.config();
        if h.blocks_per_page > 255 {
            return Err(OffloadError::BadLayout("blocks_per_page out of range"));
        }
        cfg.validate().map_err(OffloadError::Codec)?;
        for (e, what) in [(h.sq_entries, "sq_entries"), (h.cq_entries, "cq_entries")] {
            if e == 0 || e > MAX_ENTRIES || !e.is_power_of_two() {
                return Err(OffloadError::BadLayout(match what {
                    "sq_entries" => "sq_entries must be a power of two from 1 to 65536",
                    _ => "cq_entries must be a power of two from 1 to 65536",
                }));
            }
        }
        if !h.out_area_len.is_power_of_two() || h.out_area_len > 1 << 31 {
            return Err(OffloadError::BadLayout(
                "out_area_len must be a power of two up to 2 GiB",
            ));
        }
        if (h.out_area_len as usize) < 2 * chunk_max(&cfg) {
            return Err(OffloadError::BadLayout(
                "out_area_len must hold two worst-case chunks (2 x Config::max_output_len)",
            ));
        }
        if (h.page_area_len as usize) < cfg.page_size as usize {
            return Err(OffloadError::BadLayout("page_area_len must hold one page"));
        }
        let areas = [
            (h.sq_offset, h.sq_entries as u64 * ENTRY_BYTES as u64),
            (h.cq_offset, h.cq_entries as u64 * ENTRY_BYTES as u64),
            (h.page_area_offset, u64::from(h.page_area_len)),
            (h.out_area_offset, u64::from(h.out_area_len)),
        ];
        for (i, &(off, n)) in areas.iter().enumerate() {
            if off % 8 != 0 || (off as usize) < CONTROL_LEN || u64::from(off) + n > len as u64 {
                return Err(OffloadError::BadLayout(
                    "an area is misaligned, overlaps the control block or leaves the region",
                ));
            }
            for &(o2, n2) in &areas[..i] {
                if u64::from(off) < u64::from(o2) + n2 && u64::from(o2) < u64::from(off) + n {
                    return Err(OffloadError::BadLayout("two areas overlap"));
                }
            }
        }
        Ok(Layout {
            header: *h,
            config: cfg,
            sq_offset: h.sq_offset as usize,
            sq_entries: h.sq_entries,
            cq_offset: h.cq_offset as usize,
            cq_entries: h.cq_entries,
            page_offset: h.page_area_offset as usize,
            page_len: h.page_area_len as usize,
            out_offset: h.out_area_offset as usize,
            out_len: h.out_area_len,
        })
    }

    /// Bytes of the page area.
    pub fn page_area_len(&self) -> usize {
        self.page_len
    }

    /// Bytes of the output area.
    pub fn out_area_len(&self) -> usize {
        self.out_len as usize
    }

    /// Entries of the submission ring.
    pub fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// Entries of the completion ring.
    pub fn cq_entries(&self) -> u32 {
        self.cq_entries
    }

    pub(crate) fn sq_entry(&self, index: u32) -> usize {
        self.sq_offset + (index & (self.sq_entries - 1)) as usize * ENTRY_BYTES
    }

    pub(crate) fn cq_entry(&self, index: u32) -> usize {
        self.cq_offset + (index & (self.cq_entries - 1)) as usize * ENTRY_BYTES
    }
}

/// Sizes a host picks for a new region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionParams {
    /// Submission ring entries (power of two).
    pub sq_entries: u32,
    /// Completion ring entries (power of two).
    pub cq_entries: u32,
    /// Page slots in the page area (pages in flight).
    pub page_slots: u32,
    /// Output area bytes (power of two, at least `2 x max_output_len`); 0 picks four
    /// worst-case chunks.
    pub out_area_len: u32,
}

impl RegionParams {
    /// 64 descriptors in flight, 64 page slots, four worst-case chunks of output.
    pub const DEFAULT: RegionParams = RegionParams {
        sq_entries: 64,
        cq_entries: 64,
        page_slots: 64,
        out_area_len: 0,
    };

    /// Output area bytes for `cfg`: as given, or four worst-case chunks.
    const fn out_len(&self, cfg: &Config) -> u64 {
        if self.out_area_len == 0 {
            (4 * chunk_max(cfg)).next_power_of_two() as u64
        } else {
            self.out_area_len as u64
        }
    }

    /// Byte offsets of the areas: (submission ring, completion ring, page area, output
    /// area, end of region).
    const fn offsets(&self, cfg: &Config) -> [u64; 5] {
        let sq = CONTROL_LEN as u64;
        let cq = sq + self.sq_entries as u64 * ENTRY_BYTES as u64;
        let page = (cq + self.cq_entries as u64 * ENTRY_BYTES as u64 + 4095) & !4095;
        let out = page + self.page_slots as u64 * cfg.page_size as u64;
        [sq, cq, page, out, out + self.out_len(cfg)]
    }

    /// Bytes of the region [`RegionParams::header`] lays out, for sizing a static buffer.
    pub const fn region_len(&self, cfg: &Config) -> usize {
        self.offsets(cfg)[4] as usize
    }

    /// The header for `cfg` and `features` with these sizes, laid out back to back after
    /// the control block (page area on a 4 KiB boundary).
    pub fn header(&self, cfg: &Config, features: Features) -> Result<RegionHeader, OffloadError> {
        cfg.validate().map_err(OffloadError::Codec)?;
        let out_len = self.out_len(cfg);
        let [sq_offset, cq_offset, page_offset, out_offset, total] = self.offsets(cfg);
        let page_len = out_offset - page_offset;
        let fit =
            |v: u64| u32::try_from(v).map_err(|_| OffloadError::BadLayout("region over 4 GiB"));
        let mut h = RegionHeader {
            magic: OFFLOAD_MAGIC,
            version: OFFLOAD_VERSION,
            region_len: fit(total)?,
            sq_offset: fit(sq_offset)?,
            sq_entries: self.sq_entries,
            cq_offset: fit(cq_offset)?,
            cq_entries: self.cq_entries,
            page_area_offset: fit(page_offset)?,
            page_area_len: fit(page_len)?,
            out_area_offset: fit(out_offset)?,
            out_area_len: fit(out_len)?,
            ..bytemuck::Zeroable::zeroed()
        };
        h.set_codec(cfg, features);
        Layout::check(&h, total as usize)?;
        Ok(h)
    }
}

impl Default for RegionParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}
