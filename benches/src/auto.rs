//! `--compress auto` on a page set over a modelled link: the runner's own rule
//! ([`Chooser`]: its windows, and its checks that close a window early to climb) and
//! stages (plain pages, LZ4 frames, zstd chunks from `pagewire_stream_zstd`) on the real
//! encoder, fed the sending thread's measured CPU time. Only the link is a model: a
//! window of `B` bytes occupies it for `B / rate` seconds, and the window lasts as long as
//! the slower of the two (the sender waits for a full link, or the link for the sender; one
//! window of buffering between them), at a check as far as it has come. By that clock the
//! link has carried every byte it was given, so its backlog at a check is 0 (the runner's
//! links tell theirs, `net::Link::backlog`): a window in which the sender was busy may step
//! down at any check. Every pass is decoded and checked.
//!
//! Those windowed clocks drive the rule. The run is scored as the harness scores every other
//! row, raw bytes over the longer of the sender's CPU time and the link's time for all its
//! bytes (`gb_s`), so that `auto` and the rows it is held against share one model; the
//! windowed figure, stricter (sender and link overlap only within a window), is kept beside
//! it (`windowed_gb_s`).
//!
//! With N lanes, the pages split as `pagewire send --lanes N` splits them (page `pfn` on
//! lane `pfn % N`), each lane a thread with its own encoder, `auto` and decoder, and a
//! link of its own of 1/N of the rate (a shared link would give an idle lane's share to
//! the other: an even split is the cautious model). The run lasts as long as its slowest
//! lane.

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use pagewire::{Config, DecodeMode, Decoder, Encoder, Features, MemoryImage};
use pagewire_runner::migrate::compress::{thread_cpu_time, Chooser};
use pagewire_runner::migrate::{AutoStage, Stage};
use pagewire_stream_zstd::{ZstdIn, ZstdOut};
use serde::Serialize;

use crate::codecs::{touched, touched_empty};
use crate::PageSet;

/// What `auto` did over one link.
#[derive(Debug, Clone, Serialize)]
pub struct AutoRun {
    /// Page bytes sent.
    pub raw_bytes: u64,
    /// Bytes on the link.
    pub wire_bytes: u64,
    /// Modelled seconds: per window, the longer of the sender's CPU time and the link's.
    pub seconds: f64,
    /// The longer of the sender's CPU time and the link's time for all its bytes: the
    /// model the other rows are scored by (`min(encode speed, link / ratio)`). With lanes,
    /// the slowest lane's.
    pub overlapped_seconds: f64,
    /// The sender's CPU seconds.
    pub cpu_seconds: f64,
    /// GB/s of memory moved as the other rows are scored: raw bytes over
    /// `overlapped_seconds`.
    pub gb_s: f64,
    /// GB/s of memory moved on the windowed model: raw bytes over `seconds`. Lower: the
    /// sender and the link overlap only within a window.
    pub windowed_gb_s: f64,
    /// The stage it started with, then each change: the window it came after, the stage.
    pub changes: Vec<(u64, String)>,
}

impl AutoRun {
    /// Both GB/s figures from the seconds.
    fn score(&mut self) {
        let raw = self.raw_bytes as f64;
        self.gb_s = raw / self.overlapped_seconds.max(1e-12) / 1e9;
        self.windowed_gb_s = raw / self.seconds.max(1e-12) / 1e9;
    }

    /// "lz4, zstd:1 after window 1, ...".
    pub fn describe(&self) -> String {
        self.changes
            .iter()
            .enumerate()
            .map(|(i, (w, s))| {
                if i == 0 {
                    s.clone()
                } else {
                    format!("{s} after {w}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The window being measured: the clocks and the link buffer where it opened.
struct Open {
    /// The encoding thread's CPU time when it opened.
    cpu0: Duration,
    /// Where it starts in the link buffer, and its bytes in earlier passes' buffers.
    wire_at: usize,
    earlier: usize,
}

impl Open {
    /// Its modelled length so far: the longer of the sender's CPU time (`cpu` now) and
    /// the link's time for its bytes (`link` the buffer now).
    fn wall(&self, cpu: Duration, link: &[u8], bytes_per_s: f64) -> Duration {
        let bytes = self.earlier + link.len() - self.wire_at;
        (cpu - self.cpu0).max(Duration::from_secs_f64(bytes as f64 / bytes_per_s))
    }
}

/// Runs `auto` over every pass of `set` on a link of `bytes_per_s`, in `lanes` lanes.
pub fn run(set: &PageSet, bytes_per_s: f64, lanes: usize) -> Result<AutoRun> {
    if lanes <= 1 {
        return run_passes(set, &set.passes, bytes_per_s);
    }
    let split: Vec<_> = (0..lanes).map(|l| set.lane_passes(l, lanes)).collect();
    let share = bytes_per_s / lanes as f64;
    let runs = std::thread::scope(|s| {
        let hs: Vec<_> = split
            .iter()
            .map(|passes| s.spawn(move || run_passes(set, passes, share)))
            .collect();
        hs.into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("a lane panicked"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    let mut all = AutoRun {
        raw_bytes: runs.iter().map(|r| r.raw_bytes).sum(),
        wire_bytes: runs.iter().map(|r| r.wire_bytes).sum(),
        seconds: runs.iter().map(|r| r.seconds).fold(0.0, f64::max),
        overlapped_seconds: runs
            .iter()
            .map(|r| r.overlapped_seconds)
            .fold(0.0, f64::max),
        cpu_seconds: runs.iter().map(|r| r.cpu_seconds).sum(),
        gb_s: 0.0,
        windowed_gb_s: 0.0,
        changes: runs[0].changes.clone(),
    };
    all.score();
    Ok(all)
}

/// Runs `auto` over `passes` (pages of `set`) on a link of `bytes_per_s`.
fn run_passes(set: &PageSet, passes: &[Vec<(u64, usize)>], bytes_per_s: f64) -> Result<AutoRun> {
    let ps = set.page_size;
    let cfg = Config {
        page_size: ps as u32,
        ..Config::DEFAULT
    };
    let mut estore = touched(cfg.encoder_storage_len());
    let mut enc = Encoder::new(cfg, &mut estore)?;
    let mut dstore = touched(cfg.decoder_storage_len_for(DecodeMode::CacheCopy));
    let mut dec = Decoder::new(cfg, DecodeMode::CacheCopy, &mut dstore)?;
    let mut mem = vec![1u8; set.mem_bytes];
    let mut out = vec![0u8; cfg.max_output_len()];
    // the runner's rule, windows and early checks included, on modelled clocks: the
    // encoding thread's CPU time spent encoding, and the link's time per window
    let mut chooser = Chooser::starting_at(AutoStage::default(), Duration::ZERO, Duration::ZERO);
    let mut zout = ZstdOut::new(None)?;
    let mut zin = ZstdIn::new()?;
    // as the other rows' output: mapped before it is measured, emptied after each pass
    let mut link = touched_empty(set.stream_room());
    let mut stream_len = 0usize;
    let apply = |stage: Stage, enc: &mut Encoder, zout: &mut ZstdOut, link: &mut Vec<u8>| {
        enc.set_lz4(stage == Stage::Lz4);
        enc.set_features(match stage {
            Stage::Plain => Features::NONE,
            _ => Features::ALL,
        });
        zout.set_level(link, stage.zstd_level())
    };
    apply(chooser.stage(), &mut enc, &mut zout, &mut link)?;
    let mut run = AutoRun {
        raw_bytes: 0,
        wire_bytes: 0,
        seconds: 0.0,
        overlapped_seconds: 0.0,
        cpu_seconds: 0.0,
        gb_s: 0.0,
        windowed_gb_s: 0.0,
        changes: vec![(0, chooser.stage().name())],
    };
    let mut w = Open {
        cpu0: Duration::ZERO,
        wire_at: 0,
        earlier: 0,
    };
    // the modelled wall clock where the open window started, and the CPU time so far
    let mut wall0 = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    let n = passes.len();
    for (i, pass) in passes.iter().enumerate() {
        let mut mark = thread_cpu_time();
        let mut rest = &pass[..];
        while !rest.is_empty() {
            // plain pages in bulk up to the next check, as the runner sends them; the
            // other stages page by page
            let take = match chooser.stage() {
                Stage::Plain => rest.len().min(chooser.pages_to_check() as usize),
                _ => 1,
            };
            let now;
            (now, rest) = rest.split_at(take);
            if take == 1 {
                let (pfn, off) = now[0];
                let k = enc.encode_page(pfn, set.page(off), &mut out)?;
                zout.write(&mut link, &out[..k])?;
                stream_len += k;
                chooser.bytes_out(k as u64);
            } else {
                let batch: Vec<(u64, &[u8])> =
                    now.iter().map(|&(pfn, off)| (pfn, set.page(off))).collect();
                let mut b = &batch[..];
                while !b.is_empty() {
                    let done = enc.encode_plain_pages(b, &mut out)?;
                    zout.write(&mut link, &out[..done.written])?;
                    stream_len += done.written;
                    chooser.bytes_out(done.written as u64);
                    b = &b[done.pages..];
                }
            }
            if chooser.count_pages(take as u64) {
                cpu += thread_cpu_time() - mark;
                let wall = wall0 + w.wall(cpu, &link, bytes_per_s);
                let before = chooser.stage();
                // the model has no buffers: by the window's clock the link has taken every
                // byte it was given, so the backlog is 0
                if let Some(next) = chooser.check(wall, cpu, Some(0)) {
                    run.seconds += (wall - wall0).as_secs_f64();
                    run.cpu_seconds += (cpu - w.cpu0).as_secs_f64();
                    wall0 = wall;
                    w = Open {
                        cpu0: cpu,
                        wire_at: link.len(),
                        earlier: 0,
                    };
                    if next != before {
                        apply(next, &mut enc, &mut zout, &mut link)?;
                        run.changes
                            .push((chooser.windows.len() as u64, next.name()));
                    }
                }
                mark = thread_cpu_time();
            }
        }
        let k = enc.end_iteration(&mut out)?;
        zout.write(&mut link, &out[..k])?;
        stream_len += k;
        if i + 1 == n {
            let k = enc.finish(&mut out)?;
            zout.write(&mut link, &out[..k])?;
            stream_len += k;
            zout.finish(&mut link)?;
        } else {
            zout.flush(&mut link)?;
        }
        cpu += thread_cpu_time() - mark;
        // the destination's side, left out of the sender's CPU time: the pass's chunks
        // give back exactly its stream, which decodes to its pages
        let mut got = vec![0u8; stream_len];
        let mut r = &link[..];
        zin.reader(&mut r)
            .read_exact(&mut got)
            .context("auto: the link's chunks")?;
        if i + 1 == n {
            zin.expect_end(&mut r)?;
        }
        if !r.is_empty() {
            bail!(
                "auto: pass {i}: {} bytes on the link after its stream",
                r.len()
            );
        }
        let mut input = &got[..];
        if i == 0 {
            ensure!(
                Config::from_header(input)? == cfg,
                "auto: the stream's header is not its configuration"
            );
            input = &input[pagewire::HEADER_LEN..];
        }
        let used = dec.decode(input, &mut MemoryImage::new(&mut mem, ps))?;
        if used != input.len() {
            bail!(
                "auto: pass {i}: {} bytes left undecoded",
                input.len() - used
            );
        }
        for &(pfn, off) in pass {
            let at = pfn as usize * ps;
            if mem[at..at + ps] != *set.page(off) {
                bail!("auto: pass {i}: page {pfn} differs after decoding");
            }
        }
        stream_len = 0;
        run.raw_bytes += (pass.len() * ps) as u64;
        // the buffer is emptied; the window keeps count of its bytes
        run.wire_bytes += link.len() as u64;
        w.earlier += link.len() - w.wire_at;
        w.wire_at = 0;
        link.clear();
    }
    // the last window, still open
    run.seconds += w.wall(cpu, &link, bytes_per_s).as_secs_f64();
    run.cpu_seconds += (cpu - w.cpu0).as_secs_f64();
    run.overlapped_seconds = run.cpu_seconds.max(run.wire_bytes as f64 / bytes_per_s);
    run.score();
    Ok(run)
}
