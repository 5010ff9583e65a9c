//! The replay itself: the passes, the fallback to the in-process encoder, the counters.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pagewire::{Config, DecodeMode, EncoderStats};

use super::receiver::{Destination, Receiver};
use super::report::{ConfigReport, Counts, PassReport, ReplayReport};
use super::verify::verify_pass;
use crate::buffer::zeroed;
use crate::encoders::{EncoderChoice, FirmwareFailure, InProcessEncoder, StreamEncoder};
use crate::host_memory::Budget;
use crate::series::SnapshotSource;

/// Told how a replay advances (the command line draws a progress bar with it).
pub trait ReplayProgress {
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
impl ReplayProgress for () {}

/// Replays `source` through an encoder and decoder configured by `cfg`, verifying every
/// pass. Returns the measurements, or an error naming the pass and pfn of the first
/// mismatch (a [`VerifyError`](super::VerifyError) inside the `anyhow::Error`).
pub fn replay(
    source: &mut dyn SnapshotSource,
    cfg: Config,
    progress: &mut dyn ReplayProgress,
) -> Result<ReplayReport> {
    replay_with(
        source,
        cfg,
        DecodeMode::InPlace,
        &EncoderChoice::InProcess,
        false,
        progress,
    )
}

/// [`replay`] with the decoder in `mode` and the encoder `choice`. With `fallback`, a firmware failure in a pass
/// switches to the in-process encoder: a new stream (next stream id) sends that pass again
/// and the rest, to a new decoder, as a real destination would.
pub fn replay_with(
    source: &mut dyn SnapshotSource,
    cfg: Config,
    mode: DecodeMode,
    choice: &EncoderChoice,
    fallback: bool,
    progress: &mut dyn ReplayProgress,
) -> Result<ReplayReport> {
    let (pages, passes) = check_series(source, &cfg)?;
    let (ps, mem) = (source.page_size(), source.mem_bytes());

    let dec_len = cfg.decoder_storage_len_for(mode);
    let mut dec_mem = zeroed(dec_len, "decoder storage")?;
    // a fallback stream needs a fresh decoder: its storage is set aside up front
    let can_fall_back = fallback && matches!(choice, EncoderChoice::Firmware(_));
    let mut spare_mem = match can_fall_back {
        true => zeroed(dec_len, "the fallback decoder's storage")?,
        false => Vec::new(),
    };
    let enc = choice.start(cfg)?;
    let mut run = Run {
        cfg,
        enc,
        rx: Receiver::new(mode, &mut dec_mem),
        can_fall_back,
        spare: Some(&mut spare_mem[..]),
        dest: Destination::new(zeroed(mem, "the destination image")?, ps),
        stream_start_bytes: 0,
        total: Counts::default(),
    };
    let mut prev = zeroed(mem, "the previous snapshot")?;
    let mut cur = zeroed(mem, "the current snapshot")?;

    // grows pass by pass: a series of many passes needs no reservation up front
    let mut rows = Vec::new();
    for pass in 0..passes {
        source
            .read(pass, &mut cur)
            .with_context(|| format!("reading snapshot {pass}"))?;
        let to_send = pages_to_send(pass, pages, ps, &prev, &cur);
        progress.pass_started(pass, passes, to_send.len());
        let row = run.pass(pass, pass + 1 == passes, &to_send, &cur, progress)?;
        progress.pass_done(&row);
        rows.push(row);
        std::mem::swap(&mut prev, &mut cur);
    }
    run.check_counters()?;

    Ok(ReplayReport {
        source: source.describe(),
        page_size: ps,
        mem_bytes: mem,
        snapshots: passes,
        interval_ms: source.interval_ms(),
        config: ConfigReport::from(&cfg),
        decoder: match mode {
            DecodeMode::InPlace => "in place",
            DecodeMode::CacheCopy => "cache copy",
        }
        .into(),
        decoder_storage_bytes: dec_len,
        verified: true,
        passes: rows,
        total: PassReport::new(None, run.total),
    })
}

/// The large buffers a replay of `passes` snapshots of `mem_bytes` holds at once (the series'
/// own memory aside), for a check against the host's memory before anything is allocated
/// (`host_memory::Budget::check`).
pub fn memory_budget(
    cfg: &Config,
    mode: DecodeMode,
    mem_bytes: usize,
    passes: usize,
    choice: &EncoderChoice,
    fallback: bool,
) -> Budget {
    let pages = mem_bytes / (cfg.page_size as usize).max(1);
    let firmware = matches!(choice, EncoderChoice::Firmware(_));
    let mut b = Budget::new();
    b.add_len("the encoder's storage", cfg.encoder_storage_len())
        .add_len("the decoder's storage", cfg.decoder_storage_len_for(mode))
        .add_len("the destination image", mem_bytes)
        .add_len("the previous snapshot", mem_bytes)
        .add_len("the current snapshot", mem_bytes)
        // the pass's page list and the destination's list of delivered pages
        .add_len("the page lists", pages.saturating_mul(2 * size_of::<u64>()))
        .add_len("the report", passes.saturating_mul(size_of::<PassReport>()));
    if fallback && firmware {
        b.add_len("the fallback encoder's storage", cfg.encoder_storage_len())
            .add_len(
                "the fallback decoder's storage",
                cfg.decoder_storage_len_for(mode),
            );
    }
    b
}

/// Checks that `source` and `cfg` fit together; returns (pages, passes).
fn check_series(source: &dyn SnapshotSource, cfg: &Config) -> Result<(usize, usize)> {
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
    Ok((mem / ps, passes))
}

/// Pass 0 sends every page; every later pass the pages that differ from the snapshot before.
fn pages_to_send(pass: usize, pages: usize, ps: usize, prev: &[u8], cur: &[u8]) -> Vec<u64> {
    if pass == 0 {
        (0..pages as u64).collect()
    } else {
        (0..pages)
            .filter(|&p| prev[p * ps..(p + 1) * ps] != cur[p * ps..(p + 1) * ps])
            .map(|p| p as u64)
            .collect()
    }
}

/// A replay in progress: the encoder, the receiving end, and the counters so far.
struct Run<'a> {
    cfg: Config,
    enc: Box<dyn StreamEncoder>,
    rx: Receiver<'a>,
    /// A firmware failure switches to the in-process encoder.
    can_fall_back: bool,
    /// Decoder storage for the fallback stream, until it is taken.
    spare: Option<&'a mut [u8]>,
    dest: Destination,
    /// Wire bytes before the current stream began (a fallback starts a new one).
    stream_start_bytes: u64,
    total: Counts,
}

impl Run<'_> {
    /// Sends, receives and verifies one pass; a firmware failure falls back (when allowed)
    /// and sends the pass again.
    fn pass(
        &mut self,
        pass: usize,
        last: bool,
        to_send: &[u64],
        cur: &[u8],
        progress: &mut dyn ReplayProgress,
    ) -> Result<PassReport> {
        let mut before = self.enc.stats();
        let mut dec_before = self.rx.time;
        self.dest.delivered.clear();
        let sent = self.send(pass, last, to_send, cur);
        let enc_time = match sent {
            Ok(t) => t,
            Err(e) if self.can_fall_back && e.downcast_ref::<FirmwareFailure>().is_some() => {
                progress.fell_back(pass, &format!("{e:#}"));
                self.fall_back(pass)?;
                before = EncoderStats::default();
                dec_before = Duration::ZERO;
                self.send(pass, last, to_send, cur)?
            }
            Err(e) => return Err(e),
        };

        verify_pass(pass, last, to_send, cur, &self.dest, &self.rx)?;

        let mut counts = Counts::between(&before, &self.enc.stats());
        counts.encode_ns = enc_time.as_nanos() as u64;
        counts.decode_ns = (self.rx.time - dec_before).as_nanos() as u64;
        self.total += counts;
        Ok(PassReport::new(Some(pass), counts))
    }

    fn send(&mut self, pass: usize, last: bool, to_send: &[u64], cur: &[u8]) -> Result<Duration> {
        send_pass(
            self.enc.as_mut(),
            pass,
            last,
            to_send,
            cur,
            &mut self.rx,
            &mut self.dest,
        )
    }

    /// Replaces the failed firmware by the in-process encoder: a new stream (next stream
    /// id) to a new decoder, from `pass` on.
    fn fall_back(&mut self, pass: usize) -> Result<()> {
        let cfg = Config {
            stream_id: self.cfg.stream_id.wrapping_add(1),
            ..self.cfg
        };
        self.enc = Box::new(InProcessEncoder::new(cfg)?);
        let mem = self
            .spare
            .take()
            .context("a second fallback is not possible")?;
        self.rx = Receiver::new(self.rx.mode, mem);
        self.dest.delivered.clear();
        self.dest.iterations.truncate(pass);
        self.dest.iteration_base = pass as u64;
        self.stream_start_bytes = self.total.wire_bytes;
        Ok(())
    }

    /// The encoder's and the decoder's counters agree with each other and with the passes.
    fn check_counters(&self) -> Result<()> {
        let dec_pages = self.rx.decoder.as_ref().map_or(0, |d| d.stats().pages);
        let stream_bytes = self.total.wire_bytes - self.stream_start_bytes;
        let enc = self.enc.stats();
        if dec_pages != enc.pages() || stream_bytes != enc.bytes_out {
            bail!(
                "counters disagree: encoder {} pages / {} bytes out, decoder {} pages, passes add up to {} bytes",
                enc.pages(),
                enc.bytes_out,
                dec_pages,
                self.total.wire_bytes
            );
        }
        Ok(())
    }
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
}
