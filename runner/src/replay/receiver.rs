//! The decoding end of a replay: a decoder built from the stream header, fed the encoder's
//! output as it comes, writing pages into a destination image and noting what arrived.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use pagewire::{Decoder, Sink, HEADER_LEN};

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
}

impl Sink for Destination {
    fn page(&mut self, pfn: u64, data: &[u8]) {
        let ps = self.page_size;
        let at = usize::try_from(pfn)
            .ok()
            .and_then(|p| p.checked_mul(ps))
            .filter(|&at| at + ps <= self.image.len() && data.len() == ps);
        match at {
            Some(at) => {
                self.image[at..at + ps].copy_from_slice(data);
                self.delivered.push(pfn);
            }
            None => {
                self.bad.get_or_insert((pfn, data.len()));
            }
        }
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
    storage: Option<&'a mut [u8]>,
    pub(super) decoder: Option<Decoder<'a>>,
    pub(super) pending: Vec<u8>,
    pub(super) time: Duration,
}

impl<'a> Receiver<'a> {
    pub(super) fn new(storage: &'a mut [u8]) -> Self {
        Receiver {
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
            let r = Decoder::from_header(data, storage);
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
        let mut d = Destination {
            image: vec![0; 8192],
            page_size: 4096,
            delivered: Vec::new(),
            iterations: Vec::new(),
            iteration_base: 0,
            ended: false,
            bad: None,
        };
        d.page(1, &[1; 4096]);
        d.page(2, &[1; 4096]);
        d.page(u64::MAX, &[1; 4096]);
        assert_eq!(d.delivered, [1]);
        assert_eq!(d.bad, Some((2, 4096)));
    }
}
