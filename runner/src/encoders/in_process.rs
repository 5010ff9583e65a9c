//! The codec's encoder in this process.

use std::mem::ManuallyDrop;

use anyhow::Result;
use pagewire::{Config, CopyPages, Encoder, EncoderStats, Features};

use super::stream::StreamEncoder;
use crate::buffer::zeroed;

/// The codec's [`Encoder`] over storage this struct owns.
pub struct InProcessEncoder {
    /// Borrows `storage`; dropped before it (see `Drop`).
    enc: ManuallyDrop<Encoder<'static>>,
    /// From `Box::into_raw`, freed in `Drop`.
    storage: *mut [u8],
    out: Vec<u8>,
    /// The features it was built with, for when plain pages end.
    features: Features,
}

impl InProcessEncoder {
    /// An encoder for `cfg` with every feature on.
    pub fn new(cfg: Config) -> Result<Self> {
        Self::with_features(cfg, Features::ALL)
    }

    /// An encoder for `cfg` and `features`.
    pub fn with_features(cfg: Config, features: Features) -> Result<Self> {
        let storage = zeroed(cfg.encoder_storage_len(), "encoder storage")?;
        let storage = Box::into_raw(storage.into_boxed_slice());
        // SAFETY: `storage` is a live, exclusively owned heap allocation that is freed only
        // in `Drop`, after the encoder that borrows it is gone; the reference is the only
        // access to it meanwhile.
        let mem: &'static mut [u8] = unsafe { &mut *storage };
        let mut enc = match Encoder::new(cfg, mem) {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: from `Box::into_raw` above; the failed `new` kept no reference.
                drop(unsafe { Box::from_raw(storage) });
                return Err(e.into());
            }
        };
        enc.set_features(features);
        Ok(InProcessEncoder {
            enc: ManuallyDrop::new(enc),
            storage,
            out: vec![0u8; cfg.max_output_len()],
            features,
        })
    }
}

impl Drop for InProcessEncoder {
    fn drop(&mut self) {
        // SAFETY: the encoder goes first, then the storage it borrowed, which came from
        // `Box::into_raw` in `new` and is freed exactly once, here.
        unsafe {
            ManuallyDrop::drop(&mut self.enc);
            drop(Box::from_raw(self.storage));
        }
    }
}

impl StreamEncoder for InProcessEncoder {
    fn encode_page(&mut self, pfn: u64, page: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let n = self.enc.encode_page(pfn, page, &mut self.out)?;
        out.extend_from_slice(&self.out[..n]);
        Ok(())
    }

    fn append_blob(&mut self, tag: u32, data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let n = self.enc.append_blob(tag, data, &mut self.out)?;
        out.extend_from_slice(&self.out[..n]);
        Ok(())
    }

    fn end_iteration(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let n = self.enc.end_iteration(&mut self.out)?;
        out.extend_from_slice(&self.out[..n]);
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        let n = self.enc.finish(&mut self.out)?;
        out.extend_from_slice(&self.out[..n]);
        Ok(())
    }

    fn stats(&self) -> EncoderStats {
        *self.enc.stats()
    }

    fn set_lz4(&mut self, on: bool) -> bool {
        self.enc.set_lz4(on)
    }

    fn lz4(&self) -> bool {
        self.enc.lz4()
    }

    fn set_plain(&mut self, on: bool) -> bool {
        self.enc
            .set_features(if on { Features::NONE } else { self.features });
        self.enc.features() == Features::NONE
    }

    fn send_plain_pages(
        &mut self,
        pfns: &[u64],
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
        _page: &mut [u8],
        send: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut rest = pfns;
        while !rest.is_empty() {
            let mut pages = ReadInto {
                pfns: rest,
                read: &mut *read,
                failed: None,
            };
            let b = self
                .enc
                .encode_plain_pages_copied(&mut pages, &mut self.out)?;
            if let Some(e) = pages.failed {
                return Err(e);
            }
            send(&self.out[..b.written])?;
            rest = &rest[b.pages..];
        }
        Ok(())
    }
}

/// Pages read by the caller's `read` straight into their records; the first failed read is
/// kept (the batch it spoiled is then not sent).
struct ReadInto<'a> {
    pfns: &'a [u64],
    read: &'a mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    failed: Option<anyhow::Error>,
}

impl CopyPages for ReadInto<'_> {
    fn count(&self) -> usize {
        self.pfns.len()
    }

    fn pfn(&self, i: usize) -> u64 {
        self.pfns[i]
    }

    fn copy_page(&mut self, i: usize, dst: &mut [u8]) {
        if self.failed.is_none() {
            if let Err(e) = (self.read)(self.pfns[i], dst) {
                self.failed = Some(e);
            }
        }
    }
}
