//! Replay of a snapshot series through one encoder and one decoder in the same process,
//! verifying every page that arrives.
//!
//! Snapshot 0 is the first migration pass (every page, pfn = offset / page_size); each later
//! snapshot is a pass over the pages that differ from the snapshot before. Every pass ends
//! with `end_iteration`, the last one with `finish`. The decoder writes pages into a
//! destination image; after every pass the delivered pfns must be exactly the pfns sent, in
//! order, and the whole destination image must equal the snapshot. Only the codec calls are
//! timed.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pagewire::{Config, Decoder, EncoderStats, Sink, HEADER_LEN};

use crate::buffer::zeroed;
use crate::encoders::FirmwareFailure;
use crate::encoders::{EncoderChoice, InProcessEncoder, StreamEncoder};
use crate::report::{ConfigReport, Counts, PassReport, ReplayReport};
use crate::series::SnapshotSource;

/// Told how a replay advances (the command line draws a progress bar with it).
pub trait Progress {
    /// A pass starts that will send `pages` pages.
    fn pass_started(&mut self, _pass: usize, _passes: usize, _pages: usize) {}
    /// A pass has been sent, received and verified.
    fn pass_done(&mut self, _row: &PassReport) {}
    /// The firmware failed in `pass`; a new in-process stream sends the pass again.
    fn fell_back(&mut self, pass: usize, why: &str) {
        eprintln!(
            "warning: pass {pass}: {why}; falling back to the in-process encoder (a new stream from pass {pass} on)"
        );
    }
}

/// No progress reporting.
impl Progress for () {}

/// A verification failure: the destination does not hold what the source sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// After `pass`, destination page `pfn` differs from the source snapshot.
    PageMismatch { pass: usize, pfn: u64, sent: bool },
    /// The decoder delivered other pages than the encoder was given.
    WrongPages {
        pass: usize,
        position: usize,
        sent: Option<u64>,
        delivered: Option<u64>,
    },
    /// The decoder delivered a page outside memory or of the wrong length.
    BadDelivery { pass: usize, pfn: u64, len: usize },
    /// Iteration markers or the end of stream did not arrive as sent.
    Stream { pass: usize, what: String },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::PageMismatch { pass, pfn, sent } => write!(
                f,
                "verification failed in pass {pass}: destination page pfn {pfn} differs from the source snapshot ({})",
                if *sent {
                    "the page was sent in this pass"
                } else {
                    "the page was not sent in this pass, so it must be unchanged"
                }
            ),
            VerifyError::WrongPages {
                pass,
                position,
                sent,
                delivered,
            } => {
                let s = sent.map_or_else(|| "nothing".to_string(), |p| format!("pfn {p}"));
                let d = delivered.map_or_else(|| "nothing".to_string(), |p| format!("pfn {p}"));
                write!(
                    f,
                    "verification failed in pass {pass}: page #{position} of the pass was {s} at the source but {d} at the destination"
                )
            }
            VerifyError::BadDelivery { pass, pfn, len } => write!(
                f,
                "verification failed in pass {pass}: the decoder delivered pfn {pfn} with {len} bytes, outside memory or not one page"
            ),
            VerifyError::Stream { pass, what } => {
                write!(f, "verification failed in pass {pass}: {what}")
            }
        }
    }
}

impl std::error::Error for VerifyError {}

/// The destination: a memory image the decoder writes into, and what arrived.
struct Destination {
    image: Vec<u8>,
    page_size: usize,
    delivered: Vec<u64>,
    iterations: Vec<u64>,
    /// Iterations of earlier streams (a fallback stream counts from 0 again).
    iteration_base: u64,
    ended: bool,
    bad: Option<(u64, usize)>,
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
struct Receiver<'a> {
    storage: Option<&'a mut [u8]>,
    decoder: Option<Decoder<'a>>,
    pending: Vec<u8>,
    time: Duration,
}

impl<'a> Receiver<'a> {
    fn new(storage: &'a mut [u8]) -> Self {
        Receiver {
            storage: Some(storage),
            decoder: None,
            pending: Vec::new(),
            time: Duration::ZERO,
        }
    }

    /// Decodes every complete frame of `pending + bytes`; keeps the rest.
    fn feed(&mut self, bytes: &[u8], dest: &mut Destination) -> Result<()> {
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

/// First index where two pfn lists differ.
fn first_difference(a: &[u64], b: &[u64]) -> Option<usize> {
    let n = a.len().min(b.len());
    (0..n)
        .find(|&i| a[i] != b[i])
        .or((a.len() != b.len()).then_some(n))
}

/// Replays `source` through an encoder and decoder configured by `cfg`, verifying every
/// pass. Returns the measurements, or an error naming the pass and pfn of the first
/// mismatch (a [`VerifyError`] inside the `anyhow::Error`).
pub fn replay(
    source: &mut dyn SnapshotSource,
    cfg: Config,
    progress: &mut dyn Progress,
) -> Result<ReplayReport> {
    replay_with(source, cfg, &EncoderChoice::InProcess, false, progress)
}

/// [`replay`] with the encoder `choice`. With `fallback`, a firmware failure in a pass
/// switches to the in-process encoder: a new stream (next stream id) sends that pass again
/// and the rest, to a new decoder, as a real destination would.
pub fn replay_with(
    source: &mut dyn SnapshotSource,
    cfg: Config,
    choice: &EncoderChoice,
    fallback: bool,
    progress: &mut dyn Progress,
) -> Result<ReplayReport> {
    let ps = source.page_size();
    if ps != cfg.page_size as usize {
        bail!(
            "the series has {ps}-byte pages but the codec is configured for {}-byte pages",
            cfg.page_size
        );
    }
    cfg.validate()?;
    let mem = source.mem_bytes();
    if mem == 0 || mem % ps != 0 {
        bail!("memory size {mem} is not a non-zero multiple of the page size {ps}");
    }
    let passes = source.snapshots();
    if passes == 0 {
        bail!("the series has no snapshots");
    }
    let pages = mem / ps;

    let mut dec_mem = zeroed(cfg.decoder_storage_len(), "decoder storage")?;
    // a fallback stream needs a fresh decoder: its storage is set aside up front
    let can_fall_back = fallback && matches!(choice, EncoderChoice::Firmware(_));
    let mut spare_mem = match can_fall_back {
        true => zeroed(cfg.decoder_storage_len(), "the fallback decoder's storage")?,
        false => Vec::new(),
    };
    let mut spare = Some(&mut spare_mem[..]);
    let mut enc = choice.start(cfg)?;
    let mut rx = Receiver::new(&mut dec_mem);
    let mut dest = Destination {
        image: zeroed(mem, "the destination image")?,
        page_size: ps,
        delivered: Vec::new(),
        iterations: Vec::new(),
        iteration_base: 0,
        ended: false,
        bad: None,
    };
    let mut stream_start_bytes = 0;
    let mut prev = zeroed(mem, "the previous snapshot")?;
    let mut cur = zeroed(mem, "the current snapshot")?;

    let mut rows = Vec::with_capacity(passes);
    let mut total = Counts::default();
    for pass in 0..passes {
        source
            .read(pass, &mut cur)
            .with_context(|| format!("reading snapshot {pass}"))?;
        let to_send: Vec<u64> = if pass == 0 {
            (0..pages as u64).collect()
        } else {
            (0..pages)
                .filter(|&p| prev[p * ps..(p + 1) * ps] != cur[p * ps..(p + 1) * ps])
                .map(|p| p as u64)
                .collect()
        };
        progress.pass_started(pass, passes, to_send.len());
        let last = pass + 1 == passes;

        let mut before = enc.stats();
        let mut dec_before = rx.time;
        dest.delivered.clear();
        let sent = send_pass(enc.as_mut(), pass, last, &to_send, &cur, &mut rx, &mut dest);
        let enc_time = match sent {
            Ok(t) => t,
            Err(e) if can_fall_back && e.downcast_ref::<FirmwareFailure>().is_some() => {
                progress.fell_back(pass, &format!("{e:#}"));
                let cfg2 = Config {
                    stream_id: cfg.stream_id.wrapping_add(1),
                    ..cfg
                };
                enc = Box::new(InProcessEncoder::new(cfg2)?);
                let mem = spare.take().context("a second fallback is not possible")?;
                rx = Receiver::new(mem);
                dest.delivered.clear();
                dest.iterations.truncate(pass);
                dest.iteration_base = pass as u64;
                before = EncoderStats::default();
                dec_before = Duration::ZERO;
                stream_start_bytes = total.wire_bytes;
                send_pass(enc.as_mut(), pass, last, &to_send, &cur, &mut rx, &mut dest)?
            }
            Err(e) => return Err(e),
        };

        verify_pass(pass, last, &to_send, &cur, &dest, &rx)?;

        let mut counts = Counts::between(&before, &enc.stats());
        counts.encode_ns = enc_time.as_nanos() as u64;
        counts.decode_ns = (rx.time - dec_before).as_nanos() as u64;
        total += counts;
        let row = PassReport::new(Some(pass), counts);
        progress.pass_done(&row);
        rows.push(row);
        std::mem::swap(&mut prev, &mut cur);
    }

    let dec_pages = rx.decoder.as_ref().map_or(0, |d| d.stats().pages);
    let stream_bytes = total.wire_bytes - stream_start_bytes;
    let enc_pages = enc.stats().pages();
    if dec_pages != enc_pages || stream_bytes != enc.stats().bytes_out {
        bail!(
            "counters disagree: encoder {} pages / {} bytes out, decoder {} pages, passes add up to {} bytes",
            enc.stats().pages(),
            enc.stats().bytes_out,
            dec_pages,
            total.wire_bytes
        );
    }

    Ok(ReplayReport {
        source: source.describe(),
        page_size: ps,
        mem_bytes: mem,
        snapshots: passes,
        interval_ms: source.interval_ms(),
        config: ConfigReport::from(&cfg),
        verified: true,
        passes: rows,
        total: PassReport::new(None, total),
    })
}

/// Sends the pages of one pass (and the end of the stream after the last) through `enc`
/// to the receiver. Returns the time spent in encoder calls.
fn send_pass(
    enc: &mut dyn StreamEncoder,
    pass: usize,
    last: bool,
    to_send: &[u64],
    cur: &[u8],
    rx: &mut Receiver<'_>,
    dest: &mut Destination,
) -> Result<Duration> {
    let ps = dest.page_size;
    let mut out = Vec::new();
    let mut enc_time = Duration::ZERO;
    for &pfn in to_send {
        let at = pfn as usize * ps;
        let t = Instant::now();
        enc.encode_page(pfn, &cur[at..at + ps], &mut out)
            .with_context(|| format!("pass {pass}: encoding pfn {pfn}"))?;
        enc_time += t.elapsed();
        if !out.is_empty() {
            rx.feed(&out, dest)
                .with_context(|| format!("pass {pass}"))?;
            out.clear();
        }
    }
    let t = Instant::now();
    enc.end_iteration(&mut out)
        .with_context(|| format!("pass {pass}: ending the iteration"))?;
    if last {
        enc.finish(&mut out)
            .with_context(|| format!("pass {pass}: finishing the stream"))?;
    }
    enc_time += t.elapsed();
    rx.feed(&out, dest)
        .with_context(|| format!("pass {pass}"))?;
    Ok(enc_time)
}

/// Checks what arrived in `pass` against what was sent and against the snapshot.
fn verify_pass(
    pass: usize,
    last: bool,
    sent: &[u64],
    snapshot: &[u8],
    dest: &Destination,
    rx: &Receiver<'_>,
) -> Result<()> {
    let stream = |what: String| VerifyError::Stream { pass, what };
    if let Some((pfn, len)) = dest.bad {
        return Err(VerifyError::BadDelivery { pass, pfn, len }.into());
    }
    if !rx.pending.is_empty() {
        return Err(stream(format!(
            "{} bytes of encoder output are not a whole frame after the iteration ended",
            rx.pending.len()
        ))
        .into());
    }
    if let Some(i) = first_difference(sent, &dest.delivered) {
        return Err(VerifyError::WrongPages {
            pass,
            position: i,
            sent: sent.get(i).copied(),
            delivered: dest.delivered.get(i).copied(),
        }
        .into());
    }
    if dest.iterations.last() != Some(&(pass as u64)) || dest.iterations.len() != pass + 1 {
        return Err(stream(format!(
            "iteration markers received {:?}, expected 0..={pass}",
            dest.iterations
        ))
        .into());
    }
    if dest.image != snapshot {
        let ps = dest.page_size;
        let pfn = (0..snapshot.len() / ps)
            .find(|&p| dest.image[p * ps..(p + 1) * ps] != snapshot[p * ps..(p + 1) * ps])
            .unwrap_or(0) as u64;
        return Err(VerifyError::PageMismatch {
            pass,
            pfn,
            sent: sent.binary_search(&pfn).is_ok(),
        }
        .into());
    }
    if last {
        let complete = rx.decoder.as_ref().map(|d| d.check_complete());
        if !dest.ended || !matches!(complete, Some(Ok(()))) {
            return Err(stream(format!(
                "the end of stream did not arrive (decoder says {complete:?})"
            ))
            .into());
        }
    } else if dest.ended {
        return Err(stream("end of stream arrived before the last pass".into()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::series::{SyntheticParams, SyntheticSeries};

    /// A source that hands out prepared images.
    struct Images(Vec<Vec<u8>>, usize);

    impl SnapshotSource for Images {
        fn describe(&self) -> String {
            "images".into()
        }
        fn page_size(&self) -> usize {
            self.1
        }
        fn mem_bytes(&self) -> usize {
            self.0[0].len()
        }
        fn snapshots(&self) -> usize {
            self.0.len()
        }
        fn read(&mut self, i: usize, buf: &mut [u8]) -> Result<()> {
            buf.copy_from_slice(&self.0[i]);
            Ok(())
        }
    }

    fn small_cfg() -> Config {
        Config {
            cache_pages: 64,
            ..Config::DEFAULT
        }
    }

    #[test]
    fn sends_only_changed_pages() {
        let ps = 4096;
        let a: Vec<u8> = (0..16 * ps).map(|i| (i / 7) as u8).collect();
        let mut b = a.clone();
        b[5 * ps + 100] ^= 1;
        b[9 * ps] = 42;
        let c = b.clone();
        let mut src = Images(vec![a, b, c], ps);
        let r = replay(&mut src, small_cfg(), &mut ()).unwrap();
        let pages: Vec<u64> = r.passes.iter().map(|p| p.counts.pages).collect();
        assert_eq!(pages, [16, 2, 0]);
        assert_eq!(r.total.counts.pages, 18);
        assert!(r.verified);
        assert!(r.passes[1].counts.delta + r.passes[1].counts.blocks == 2);
    }

    #[test]
    fn synthetic_series_replays() {
        let params = SyntheticParams {
            mem_bytes: 2 << 20,
            snapshots: 3,
            ..SyntheticParams::default()
        };
        let mut s = SyntheticSeries::new(params, 5).unwrap();
        let r = replay(&mut s, Config::DEFAULT, &mut ()).unwrap();
        assert_eq!(r.passes.len(), 3);
        assert!(r.total.ratio_percent.unwrap() < 100.0);
    }

    #[test]
    fn page_size_must_match() {
        let mut src = Images(vec![vec![0; 8192 * 2]], 8192);
        let e = replay(&mut src, small_cfg(), &mut ()).unwrap_err();
        assert!(format!("{e}").contains("8192-byte pages"));
    }

    #[test]
    fn mismatch_names_pass_and_pfn() {
        let e: anyhow::Error = VerifyError::PageMismatch {
            pass: 3,
            pfn: 77,
            sent: true,
        }
        .into();
        let m = format!("{e}");
        assert!(m.contains("pass 3") && m.contains("pfn 77"), "{m}");
        assert_eq!(first_difference(&[1, 2, 3], &[1, 2, 3]), None);
        assert_eq!(first_difference(&[1, 2, 3], &[1, 5, 3]), Some(1));
        assert_eq!(first_difference(&[1, 2], &[1, 2, 3]), Some(2));
    }

    #[test]
    fn verify_catches_a_corrupted_destination() {
        let mut storage = [0u8; 0];
        let rx = Receiver::new(&mut storage);
        let snapshot = vec![7u8; 4 * 4096];
        let mut dest = Destination {
            image: snapshot.clone(),
            page_size: 4096,
            delivered: vec![1, 2],
            iterations: vec![0, 1],
            iteration_base: 0,
            ended: false,
            bad: None,
        };
        verify_pass(1, false, &[1, 2], &snapshot, &dest, &rx).unwrap();

        dest.image[3 * 4096 + 9] = 0;
        let e = verify_pass(1, false, &[1, 2], &snapshot, &dest, &rx).unwrap_err();
        assert_eq!(
            e.downcast_ref::<VerifyError>(),
            Some(&VerifyError::PageMismatch {
                pass: 1,
                pfn: 3,
                sent: false
            })
        );
        dest.image[3 * 4096 + 9] = 7;

        dest.delivered = vec![1, 3];
        let e = verify_pass(1, false, &[1, 2], &snapshot, &dest, &rx).unwrap_err();
        assert!(
            format!("{e}").contains("pfn 2 at the source but pfn 3"),
            "{e}"
        );
        dest.delivered = vec![1, 2];

        // the last pass needs the end of stream
        let e = verify_pass(1, true, &[1, 2], &snapshot, &dest, &rx).unwrap_err();
        assert!(format!("{e}").contains("end of stream"), "{e}");
    }

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
