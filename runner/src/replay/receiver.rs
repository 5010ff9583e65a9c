//! The decoding end of a replay: a decoder built from the stream header, fed the encoder's
//! output as it comes, writing pages into a destination image and noting what arrived.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use pagewire::{DecodeMode, Decoder, HEADER_LEN};

/// The destination: a memory image the decoder writes into, and what arrived.
pub struct Destination {
    pub(super) image: Vec<u8>,
    pub(super) page_size: usize,
    pub(super) delivered: Vec<u64>,
    pub(super) iterations: Vec<u64>,
    /// Iterations of earlier streams (a fallback stream counts from 0 again).
    pub(super) iteration_base: u64,
    pub(super) ended: bool,
    pub(super) bad: Option<(u64, usize)>,
}

impl Destination {
    /// An empty destination over `image`.
    pub(super) fn new(image: Vec<u8>, page_size: usize) -> Self {
        Destination {
            image,
            page_size,
            delivered: Vec::new(),
            iterations: Vec::new(),
            iteration_base: 0,
            ended: false,
            bad: None,
        }
    }
    /// Where page `pfn` lies in the image, if it does.
    fn range(&self, pfn: u64) -> Option<std::ops::Range<usize>> {
        let ps = self.page_size;
        let at = usize::try_from(pfn)
            .ok()
            .and_then(|p| p.checked_mul(ps))
            .filter(|&at| at + ps <= self.image.len())?;
        Some(at..at + ps)
    }

    /// [`Destination::range`], or the error that also marks the stream bad.
    fn range_or_bad(&mut self, pfn: u64) -> pagewire::Result<std::ops::Range<usize>> {
        match self.range(pfn) {
            Some(r) => Ok(r),
            None => {
                self.bad.get_or_insert((pfn, self.page_size));
                Err(pagewire::Error::PfnOutOfRange { pfn })
            }
        }
    }
}

/// The image is the destination's memory: the decoder writes each page straight into it
/// and, in place, reads the pages its cache refers to from it.
impl pagewire::Destination for Destination {
    fn page_mut(&mut self, pfn: u64) -> pagewire::Result<&mut [u8]> {
        let r = self.range_or_bad(pfn)?;
        Ok(&mut self.image[r])
    }

    fn page(&self, pfn: u64) -> pagewire::Result<&[u8]> {
        match self.range(pfn) {
            Some(r) => Ok(&self.image[r]),
            None => Err(pagewire::Error::PfnOutOfRange { pfn }),
        }
    }

    fn page_pair(&mut self, from: u64, to: u64) -> pagewire::Result<(&[u8], &mut [u8])> {
        let r = pagewire::page_pair_in(&mut self.image, self.page_size, from, to);
        if let Err(pagewire::Error::PfnOutOfRange { pfn }) = r {
            self.bad.get_or_insert((pfn, self.page_size));
        }
        r
    }

    fn page_done(&mut self, pfn: u64) {
        self.delivered.push(pfn);
    }

    fn iteration_end(&mut self, iteration: u64) {
        self.iterations.push(iteration + self.iteration_base);
    }

    fn end_of_stream(&mut self) {
        self.ended = true;
    }
}

/// The receiving end: decoder (built from the stream header), bytes not yet decoded, and
/// the time spent in decoder calls.
pub struct Receiver<'a> {
    pub(super) mode: DecodeMode,
    storage: Option<&'a mut [u8]>,
    pub(super) decoder: Option<Decoder<'a>>,
    pub(super) pending: Vec<u8>,
    pub(super) time: Duration,
}

impl<'a> Receiver<'a> {
    /// A receiver that decodes in `mode` over `storage`
    /// (`decoder_storage_len_for(mode)` bytes).
    pub(super) fn new(mode: DecodeMode, storage: &'a mut [u8]) -> Self {
        Receiver {
            mode,
            storage: Some(storage),
            decoder: None,
            pending: Vec::new(),
            time: Duration::ZERO,
        }
    }

    /// Decodes every complete frame of `pending + bytes`; keeps the rest.
    pub(super) fn feed(&mut self, bytes: &[u8], dest: &mut Destination) -> Result<()> {
        let mut buf = std::mem::take(&mut self.pending);
        let mut data: &[u8] = if buf.is_empty() {
            bytes
        } else {
            buf.extend_from_slice(bytes);
            &buf
        };
        if self.decoder.is_none() {
            if data.len() < HEADER_LEN {
                self.pending = data.to_vec();
                return Ok(());
            }
            let storage = self
                .storage
                .take()
                .ok_or_else(|| anyhow!("decoder storage already used"))?;
            let t = Instant::now();
            let r = Decoder::from_header(data, self.mode, storage);
            self.time += t.elapsed();
            let (dec, used) = r.context("the decoder rejected the stream header")?;
            self.decoder = Some(dec);
            data = &data[used..];
        }
        let dec = self.decoder.as_mut().ok_or_else(|| anyhow!("no decoder"))?;
        let t = Instant::now();
        let r = dec.decode(data, dest);
        self.time += t.elapsed();
        let used = r.context("the decoder rejected the stream")?;
        self.pending = data[used..].to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_rejects_pages_outside_memory() {
        use pagewire::Destination as _;
        let mut d = Destination {
            image: vec![0; 8192],
            page_size: 4096,
            delivered: Vec::new(),
            iterations: Vec::new(),
            iteration_base: 0,
            ended: false,
            bad: None,
        };
        d.page_mut(1).unwrap().fill(1);
        d.page_done(1);
        assert_eq!(
            d.page_mut(2).err(),
            Some(pagewire::Error::PfnOutOfRange { pfn: 2 })
        );
        assert!(d.page_mut(u64::MAX).is_err());
        assert_eq!(d.delivered, [1]);
        assert_eq!(d.bad, Some((2, 4096)));
        assert!(d.image[4096..].iter().all(|&b| b == 1));
    }
}
