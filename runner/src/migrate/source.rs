//! The source side: pre-copy over KVM's dirty log, the stop policy (optionally gated by a
//! group), stop-and-copy, and the wait for the destination's reply.
//!
//! Failure rule: until the destination replies that its VM runs, the source VM is the one
//! that counts. Any error before that (link down, destination gone or refusing) leaves the
//! source VM running, resuming it if it was already paused, and returns the error.

use std::io::{Read, Write};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pagewire::policy::{Decision, IterationReport, PolicyParams, StopPolicy};
use pagewire::Config;

use super::compress::{thread_cpu_time, Chooser, Compression};
use super::policy::{Codec, Policy};
use super::report::{IterationRow, MigrationReport};
use super::wire::{self, DestMessage, Hello, PauseInfo, Reply, BLOB_CHUNK, BLOB_PAUSE, BLOB_VCPU};
use crate::encoders::{EncoderChoice, StreamEncoder};
use crate::vmm::{Vm, PAGE_SIZE};

/// A group's say on when this VM stops (Synchronized Arrival); called after the VM's own
/// policy, once per iteration.
pub trait Gate {
    /// `own` is this VM's policy decision; the answer is final for this iteration, with a
    /// word for the report ("continue", "hold", "stop").
    fn decide(&mut self, own: Decision, r: &IterationReport) -> Result<(Decision, &'static str)>;
}

/// Hears about progress (for a progress bar).
pub trait Progress {
    /// Iteration `iteration` starts with `pages` to send.
    fn iteration_started(&mut self, _iteration: u32, _pages: u64) {}
    /// `n` more pages of the current iteration were sent.
    fn pages_sent(&mut self, _n: u64) {}
    /// An iteration (or the stop-and-copy) finished.
    fn iteration_done(&mut self, _row: &IterationRow) {}
    /// Something else is happening ("stop-and-copy", "waiting for the destination").
    fn note(&mut self, _what: &str) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;
impl Progress for NoProgress {}

/// How to migrate.
pub struct SourceOptions {
    /// Base codec configuration (cache size etc.).
    pub config: Config,
    /// Codec on or off.
    pub codec: Codec,
    /// Stop policy.
    pub policy: Policy,
    /// LZ4 on the frames: auto (by the measured CPU headroom), always, never. With the codec
    /// off there is none.
    pub compression: Compression,
    /// Free text for the report and the hello.
    pub label: String,
    /// Who encodes: this process, or the offload firmware. Either way the stream is the
    /// same; a firmware failure fails the migration (the source VM keeps running).
    pub encoder: EncoderChoice,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            config: Config::DEFAULT,
            codec: Codec::On,
            policy: Policy::SmartStop,
            compression: Compression::Auto,
            label: String::from("vm"),
            encoder: EncoderChoice::InProcess,
        }
    }
}

/// Counts bytes written through it.
struct Counted<'a, W: Write> {
    inner: &'a mut W,
    bytes: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Appends `data` as blobs of at most [`BLOB_CHUNK`] bytes, all tagged `tag` (the
/// destination joins them).
fn append_blob_pieces(
    enc: &mut dyn StreamEncoder,
    tag: u32,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    for piece in data.chunks(BLOB_CHUNK) {
        enc.append_blob(tag, piece, out)?;
    }
    Ok(())
}

/// Writes what the encoder produced and empties the buffer.
fn send_out<W: Write>(w: &mut W, out: &mut Vec<u8>, what: &'static str) -> Result<u64> {
    w.write_all(out).context(what)?;
    let n = out.len() as u64;
    out.clear();
    Ok(n)
}

/// Waits for the destination's acknowledgement of iteration `n`; a refusal arrives instead
/// when the destination gave up.
fn wait_ack<R: Read>(r: &mut R, n: u64) -> Result<()> {
    match wire::read_message(r)
        .context("no acknowledgement from the destination (link down or destination gone)")?
    {
        DestMessage::Ack(got) if got == n => Ok(()),
        DestMessage::Ack(got) => bail!("acknowledgement of iteration {got}, expected {n}"),
        DestMessage::Reply(Reply { error, .. }) => bail!(
            "the destination refused the migration: {}",
            error.unwrap_or_else(|| "no reason given".into())
        ),
    }
}

/// Migrates the running `vm` over `link`. On success the source VM is left paused (the
/// destination's copy runs; the caller drops this one). On error the source VM runs.
pub fn migrate_out<L: Read + Write>(
    vm: &mut Vm,
    link: &mut L,
    opts: &SourceOptions,
    gate: Option<&mut dyn Gate>,
    progress: &mut dyn Progress,
) -> Result<MigrationReport> {
    let r = run(vm, link, opts, gate, progress);
    if r.is_err() && !vm.is_running() {
        // Never leave the source dead: the destination did not confirm.
        vm.start()
            .context("resuming the source VM after a failed migration")?;
    }
    r
}

fn run<L: Read + Write>(
    vm: &mut Vm,
    link: &mut L,
    opts: &SourceOptions,
    mut gate: Option<&mut dyn Gate>,
    progress: &mut dyn Progress,
) -> Result<MigrationReport> {
    let (mut cfg, features) = opts.codec.apply(opts.config);
    cfg.lz4 &= opts.compression != Compression::None;
    if let EncoderChoice::Firmware(_) = opts.encoder {
        progress.note("starting the offload firmware");
    }
    let mut enc = opts
        .encoder
        .start_with(cfg, features)
        .context("starting the encoder")?;
    let mut out = Vec::with_capacity(cfg.max_output_len());
    // LZ4 starts on wherever the stream allows it; `auto` may switch it per window
    let mut auto = (opts.compression == Compression::Auto && cfg.lz4).then(Chooser::default);
    let mem = vm.memory().clone();
    let pages = mem.pages() as u64;
    let mut policy = opts
        .policy
        .build(&PolicyParams::new(pages, u64::from(cfg.page_size)));

    let start = Instant::now();
    let start_unix_us = wire::unix_us();
    let mut w = Counted {
        inner: link,
        bytes: 0,
    };
    wire::write_hello(
        &mut w,
        &Hello {
            mem_bytes: mem.len() as u64,
            vcpus: vm.vcpu_count() as u32,
            page_size: PAGE_SIZE as u32,
            label: opts.label.clone(),
        },
    )
    .context("sending the hello (is the destination listening?)")?;
    vm.take_dirty()?; // start a fresh dirty log: iteration 1 sends everything anyway
    let mut page = vec![0u8; PAGE_SIZE];
    let mut to_send: Vec<u64> = (0..pages).collect();
    let mut rows = Vec::new();
    let mut stream_bytes = 0u64;
    let mut pages_sent = 0u64;
    let mut iteration = 1u32;
    loop {
        let t0 = Instant::now();
        let cpu0 = thread_cpu_time();
        progress.iteration_started(iteration, to_send.len() as u64);
        let mut bytes = 0u64;
        let mut lz4_pages = 0u64;
        for (k, &pfn) in to_send.iter().enumerate() {
            mem.read_page(pfn, &mut page);
            enc.encode_page(pfn, &page, &mut out)?;
            bytes += send_out(&mut w, &mut out, "sending pages")?;
            lz4_pages += u64::from(enc.lz4());
            if let Some(on) = auto.as_mut().and_then(Chooser::page_sent) {
                enc.set_lz4(on);
            }
            if k % 256 == 255 {
                progress.pages_sent(256);
            }
        }
        progress.pages_sent(to_send.len() as u64 % 256);
        enc.end_iteration(&mut out)?;
        bytes += send_out(&mut w, &mut out, "sending pages")?;
        w.flush().context("sending pages")?;
        progress.note("waiting for the destination's acknowledgement");
        wait_ack(w.inner, u64::from(iteration - 1))?;
        let dirty = vm.take_dirty()?;
        let elapsed = t0.elapsed();
        let report = IterationReport {
            iteration,
            pages_sent: to_send.len() as u64,
            pages_dirtied: dirty.len() as u64,
            pages_remaining: dirty.len() as u64,
            bytes_sent: bytes,
            elapsed_us: elapsed.as_micros() as u64,
            bandwidth_bytes_per_s: (bytes as f64 / elapsed.as_secs_f64().max(1e-6)) as u64,
        };
        let own = policy.decide(&report);
        let (decision, word) = match gate.as_deref_mut() {
            Some(g) => {
                let (d, word) = g.decide(own, &report)?;
                (d, Some(word))
            }
            None => (own, None),
        };
        let row = IterationRow {
            iteration,
            pages_sent: report.pages_sent,
            pages_dirtied: report.pages_dirtied,
            pages_remaining: report.pages_remaining,
            bytes,
            seconds: elapsed.as_secs_f64(),
            start_s: (t0 - start).as_secs_f64(),
            cpu_s: thread_cpu_time().saturating_sub(cpu0).as_secs_f64(),
            lz4_pages,
            group: word,
        };
        progress.iteration_done(&row);
        rows.push(row);
        stream_bytes += bytes;
        pages_sent += report.pages_sent;
        to_send = dirty;
        if decision == Decision::StopAndCopy {
            break;
        }
        iteration += 1;
    }

    // Stop-and-copy.
    progress.note("stop-and-copy");
    let pause = Instant::now();
    let pause_unix_us = wire::unix_us();
    vm.pause().context("pausing the source VM")?;
    let mut last = vm.take_dirty()?;
    last.extend_from_slice(&to_send);
    last.sort_unstable();
    last.dedup();
    progress.iteration_started(iteration + 1, last.len() as u64);
    let lz4_pages = if enc.lz4() { last.len() as u64 } else { 0 };
    let mut bytes = 0u64;
    for &pfn in &last {
        mem.read_page(pfn, &mut page);
        enc.encode_page(pfn, &page, &mut out)?;
        bytes += send_out(&mut w, &mut out, "sending the last pages")?;
    }
    let digest = format!("{:032x}", mem.digest());
    let info = PauseInfo {
        digest: digest.clone(),
        pause_unix_us,
        iterations: iteration,
    };
    append_blob_pieces(
        enc.as_mut(),
        BLOB_PAUSE,
        &serde_json::to_vec(&info)?,
        &mut out,
    )?;
    bytes += send_out(&mut w, &mut out, "sending the pause information")?;
    for (i, s) in vm.save_state()?.iter().enumerate() {
        append_blob_pieces(enc.as_mut(), BLOB_VCPU + i as u32, &s.to_bytes(), &mut out)?;
        bytes += send_out(&mut w, &mut out, "sending vCPU state")?;
    }
    enc.finish(&mut out)?;
    bytes += send_out(&mut w, &mut out, "sending the end of the stream")?;
    w.flush().context("sending the end of the stream")?;
    stream_bytes += bytes;
    pages_sent += last.len() as u64;
    progress.note("waiting for the destination");
    let reply = match wire::read_message(w.inner)
        .context("no reply from the destination (link down or destination gone)")?
    {
        DestMessage::Reply(r) => r,
        DestMessage::Ack(n) => bail!("unexpected acknowledgement of iteration {n} at the end"),
    };
    let acked = pause.elapsed();
    if !reply.ok {
        bail!(
            "the destination refused the migration: {}",
            reply.error.unwrap_or_else(|| "no reason given".into())
        );
    }
    let row = IterationRow {
        iteration: iteration + 1,
        pages_sent: last.len() as u64,
        pages_dirtied: 0,
        pages_remaining: 0,
        bytes,
        seconds: acked.as_secs_f64(),
        start_s: (pause - start).as_secs_f64(),
        cpu_s: 0.0,
        lz4_pages,
        group: None,
    };
    progress.iteration_done(&row);
    rows.push(row);
    Ok(MigrationReport {
        label: opts.label.clone(),
        mem_bytes: mem.len() as u64,
        vcpus: vm.vcpu_count() as u32,
        policy: opts.policy.name().into(),
        codec: opts.codec.name().into(),
        encoder: opts.encoder.name().into(),
        lz4_windows: auto.map(|a| a.windows).unwrap_or_default(),
        compression: if cfg.lz4 {
            opts.compression.name()
        } else {
            Compression::None.name()
        }
        .into(),
        iterations: iteration,
        start_unix_us,
        total_s: start.elapsed().as_secs_f64(),
        downtime_s: reply.downtime_us as f64 / 1e6,
        downtime_at_source_s: acked.as_secs_f64(),
        dest_finish_s: reply.finish_us as f64 / 1e6,
        stream_bytes,
        wire_bytes: w.bytes,
        pages_sent,
        digest,
        rows,
    })
}
