//! The self-test: the firmware plays the host too. It sets up a region in its own memory,
//! submits the built-in page set through the submission ring, serves it with the same
//! [`Device`] the real host talks to, and digests the stream it collects from the
//! completions. A host test computes the same digest with the in-process encoder.

use core::sync::atomic::AtomicU32;

use pagewire::offload::layout::flags;
use pagewire::offload::{Device, Host, OffloadError, RegionParams};
use pagewire::{Config, Features};

use crate::pageset::{self, Op};

/// The codec configuration of the self-test: a 256 KiB cache (64 pages) and 8 KiB frames,
/// the size of a small NIC core's budget.
pub const CONFIG: Config = Config {
    page_size: pageset::PAGE_SIZE as u32,
    blocks_per_page: 4,
    cache_pages: 64,
    delta_threshold: 2048,
    frame_bytes: 8192,
    lz4: true,
    stream_id: 0x5157_4657, // "WFWQ"
};

/// Ring sizes of the self-test: small rings, two page slots, the smallest output area.
pub const PARAMS: RegionParams = RegionParams {
    sq_entries: 8,
    cq_entries: 8,
    page_slots: 2,
    out_area_len: 32768,
};

/// Words of the self-test's region.
pub const REGION_WORDS: usize = PARAMS.region_len(&CONFIG) / 4;

/// What the self-test saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// CRC-32C of the whole stream.
    pub crc32c: u32,
    /// Stream length in bytes.
    pub bytes: u64,
    /// Pages encoded.
    pub pages: u64,
    /// Frames written.
    pub frames: u64,
}

/// Runs the built-in page set through `words` (at least [`REGION_WORDS`]) with a device
/// over `storage`, `page` and `out` (sized for [`CONFIG`]); `scratch` holds one page for the
/// host side.
pub fn run(
    words: &[AtomicU32],
    storage: &mut [u8],
    page: &mut [u8],
    out: &mut [u8],
    scratch: &mut [u8],
) -> Result<Digest, OffloadError> {
    let header = PARAMS.header(&CONFIG, Features::ALL)?;
    let mut host = Host::create(words, &header)?;
    let mut dev = Device::attach(words, storage, page, out)?;
    let mut crc = pagewire::CRC32C.digest();
    let mut bytes = 0u64;
    let mut i = 0;
    while let Some(op) = pageset::op(i) {
        loop {
            let ok = match op {
                Op::Page { pfn, pass } => {
                    pageset::fill_page(pfn, pass, scratch);
                    host.submit_page(pfn, &scratch[..pageset::PAGE_SIZE])?
                }
                Op::Blob => {
                    pageset::fill_blob(scratch);
                    host.submit_blob(pageset::BLOB_TAG, &scratch[..pageset::BLOB_LEN])?
                }
                Op::EndIteration => host.submit_op(flags::END_ITERATION)?,
                Op::Finish => host.submit_op(flags::FINISH)?,
            };
            if ok {
                break;
            }
            dev.poll()?;
            bytes += collect(&mut host, &mut crc, scratch)?;
        }
        i += 1;
    }
    while host.outstanding() > 0 {
        dev.poll()?;
        bytes += collect(&mut host, &mut crc, scratch)?;
    }
    let stats = host.stats();
    Ok(Digest {
        crc32c: crc.finalize(),
        bytes,
        pages: stats.pages(),
        frames: stats.frames,
    })
}

/// Takes every published completion, digesting its stream bytes a page-sized piece at a
/// time through `buf`.
fn collect(
    host: &mut Host<'_>,
    crc: &mut crc::Digest<'static, u32, crc::Table<16>>,
    buf: &mut [u8],
) -> Result<u64, OffloadError> {
    let mut n = 0;
    while let Some(c) = host.peek_completion()? {
        if c.status != pagewire::offload::layout::status::OK {
            return Err(OffloadError::BadCompletion(
                "the self-test's own descriptor was rejected",
            ));
        }
        let mut done = 0u32;
        while done < c.out_len {
            let take = (c.out_len - done).min(buf.len() as u32);
            let piece = pagewire::offload::Completion {
                out_offset: c.out_offset + done,
                out_len: take,
                ..c
            };
            host.read_output(&piece, &mut buf[..take as usize]);
            crc.update(&buf[..take as usize]);
            done += take;
        }
        n += u64::from(c.out_len);
        host.release(&c);
    }
    Ok(n)
}
