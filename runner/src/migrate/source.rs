//! The source side: the hello, pre-copy over the guest's dirty log, the stop policy
//! (optionally gated by a group), stop-and-copy with the state blobs, and the switchover.
//!
//! Failure rule: until the source commits, its VM is the one that counts: any error (link
//! down, destination gone, refusing or not ready within the pause's deadline) leaves the
//! source VM running, resuming it if it was paused, and returns the error. Once committed
//! the source never resumes on its own: it resumes only when the destination says the guest
//! did not start there (in its reply or in answer to a status query on a new connection),
//! and when it cannot learn that, it stays paused and returns [`OutcomeUnknown`].

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use pagewire::policy::{Decision, IterationReport, PolicyKind, PolicyParams, StopPolicy};
use pagewire::{Config, Features};

use super::compress::{thread_cpu_time, Compression, Window};
use super::deadlines::{Deadline, Deadlines};
use super::guest::SourceGuest;
use super::lanes::{lane_config, split, LaneWorker};
use super::pages_out::{PageCounts, PagesOut};
use super::policy::Codec;
use super::progress::MigrationProgress;
use super::report::{IterationRow, MigrationReport};
use super::session::{
    self, DestMessage, Hello, LaneHello, PauseInfo, Reply, SourceMessage, Status, StatusQuery,
    BLOB_CHUNK, BLOB_PAUSE, BLOB_VCPU, MAX_LANES,
};
use crate::encoders::{EncoderChoice, StreamEncoder};
use crate::net::{Link, Waits};

/// A group's say on when this VM stops (Synchronized Arrival); called after the VM's own
/// policy, once per iteration.
pub trait Gate {
    /// `own` is this VM's policy decision; the answer is final for this iteration, with a
    /// word for the report ("continue", "hold", "stop").
    fn decide(&mut self, own: Decision, r: &IterationReport) -> Result<(Decision, &'static str)>;
}

/// Opens a new connection to the destination: a committed source whose link failed asks
/// there whether the guest started.
pub trait Redial {
    /// A fresh link to the same destination, connected and authenticated.
    fn redial(&mut self) -> Result<Box<dyn Link>>;
    /// A link for one more lane of the migration: as [`Redial::redial`], on the same
    /// (shaped) wire as the first.
    fn open_lane(&mut self) -> Result<Box<dyn Link>> {
        self.redial()
    }
}

/// A committed migration whose outcome the source could not learn: its VM stays paused,
/// because the guest may already run at the destination.
#[derive(Debug, Clone)]
pub struct OutcomeUnknown {
    /// The migration's id.
    pub migration_id: u64,
    /// What failed: the link, then every status query.
    pub why: String,
}

impl std::fmt::Display for OutcomeUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OUTCOME UNKNOWN for migration {:016x}: the source VM stays paused and is not \
             resumed, because the guest may already run at the destination; check on the \
             destination host whether `pagewire receive` logged \"migration {:016x} started\" \
             (or the guest runs there): if so, the guest lives on there; if not, nothing runs \
             it any more and it must be started again from its last good state ({})",
            self.migration_id, self.migration_id, self.why
        )
    }
}

impl std::error::Error for OutcomeUnknown {}

/// Longest wait between two status queries.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long an abort may take to go out on a link that failed.
const ABORT_GRACE: Duration = Duration::from_secs(1);

/// How to migrate.
pub struct SourceOptions {
    /// Base codec configuration (cache size etc.).
    pub config: Config,
    /// Codec on or off.
    pub codec: Codec,
    /// Stop policy.
    pub policy: PolicyKind,
    /// LZ4 on the frames: auto (by the measured CPU headroom), always, never; or zstd over
    /// the whole stream. With the codec off there is no LZ4 (zstd still applies).
    pub compression: Compression,
    /// Free text for the report and the hello.
    pub label: String,
    /// Who encodes: this process, or the offload firmware. Either way the stream is the
    /// same; a firmware failure fails the migration (the source VM keeps running).
    pub encoder: EncoderChoice,
    /// How long to wait for the destination.
    pub deadlines: Deadlines,
    /// Lanes: encoders on threads and connections of their own, pages split by pfn
    /// (`lanes`). 1 to [`MAX_LANES`].
    pub lanes: u32,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            config: Config::DEFAULT,
            codec: Codec::On,
            policy: PolicyKind::SmartStop,
            compression: Compression::Auto,
            label: String::from("vm"),
            encoder: EncoderChoice::InProcess,
            deadlines: Deadlines::default(),
            lanes: 1,
        }
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

/// Migrates the running `guest` over `link`; `redial` (if any) opens a new connection for
/// a status query when the link fails after the commit. On success the source guest is left
/// paused (the destination's copy runs; the caller drops this one). On error the source
/// guest runs, except after an [`OutcomeUnknown`]: then it stays paused.
pub fn migrate_out<L: Link>(
    guest: &mut dyn SourceGuest,
    link: &mut L,
    opts: &SourceOptions,
    gate: Option<&mut dyn Gate>,
    redial: Option<&mut dyn Redial>,
    progress: &mut dyn MigrationProgress,
) -> Result<MigrationReport> {
    let r = run(guest, link, opts, gate, redial, progress);
    if let Err(e) = &r {
        // The destination did not start the guest: never leave the source dead. With the
        // outcome unknown it may run there: then the source must not run too.
        if e.downcast_ref::<OutcomeUnknown>().is_none() && !guest.is_running() {
            guest
                .resume()
                .context("resuming the source VM after a failed migration")?;
        }
    }
    r
}

fn run<L: Link>(
    guest: &mut dyn SourceGuest,
    link: &mut L,
    opts: &SourceOptions,
    gate: Option<&mut dyn Gate>,
    mut redial: Option<&mut dyn Redial>,
    progress: &mut dyn MigrationProgress,
) -> Result<MigrationReport> {
    let d = &opts.deadlines;
    let id = session::new_migration_id()?;
    ensure!(
        (1..=MAX_LANES).contains(&opts.lanes),
        "--lanes {} is out of range: 1 to {MAX_LANES}",
        opts.lanes
    );
    let (cfg, features, enc) = start_encoder(opts, progress)?;
    let mut policy = opts
        .policy
        .build(&PolicyParams::new(guest.pages(), u64::from(cfg.page_size)));
    link.set_waits(Waits::idle(d.progress))?;
    let mut out = Outgoing::new(link, cfg, enc, opts, guest.page_size())?;
    let (iterations, to_send) = out
        .say_hello(guest, opts, id)
        .and_then(|()| {
            let again = redial.as_mut().map(|r| &mut **r as &mut dyn Redial);
            out.open_lanes(guest, opts, id, cfg, features, again)
        })
        .and_then(|()| out.precopy(guest, &mut policy, gate, progress))
        .map_err(|e| d.explain(Deadline::Progress, e))?;
    let stopped = out
        .stop_and_copy(guest, to_send, iterations, progress)
        .map_err(|e| d.explain(Deadline::Switchover, e))?;
    let (reply, acked, outcome_from) = out.switchover(&stopped, id, redial, progress)?;
    out.last_row(iterations, &stopped, acked, progress);
    let mut report = out.report(&*guest, opts, iterations, stopped, reply, acked);
    report.migration_id = format!("{id:016x}");
    report.outcome_from = outcome_from.into();
    Ok(report)
}

/// Starts lane 0's encoder for the options' codec and compression settings; returns the
/// migration's configuration (before it is split among lanes) and features.
fn start_encoder(
    opts: &SourceOptions,
    progress: &mut dyn MigrationProgress,
) -> Result<(Config, Features, Box<dyn StreamEncoder>)> {
    let (mut cfg, features) = opts.codec.stages().apply(opts.config);
    cfg.lz4 &= opts.compression.frames_may_use_lz4();
    if let EncoderChoice::Firmware(_) = opts.encoder {
        ensure!(
            opts.lanes == 1,
            "the offload firmware encodes one stream: use --lanes 1 with --encoder firmware"
        );
        progress.note("starting the offload firmware");
    }
    let enc = opts
        .encoder
        .start_with(lane_config(cfg, opts.lanes, 0), features)
        .context("starting the encoder")?;
    Ok((cfg, features, enc))
}

/// What one pre-copy iteration sent, and when.
struct Sent {
    /// Pages the guest dirtied meanwhile: the next iteration's.
    dirty: Vec<u64>,
    report: IterationReport,
    started: Instant,
    elapsed: Duration,
    cpu_at_start: Duration,
    counts: PageCounts,
}

/// The stop-and-copy, once the END record is out.
struct Stopped {
    pause: Instant,
    /// The pause ends by then, the destination ready or not.
    deadline: Instant,
    pages: u64,
    counts: PageCounts,
    digest: String,
}

/// A migration on its way out: lane 0 (the session's link and its encoder), the other
/// lanes, and what went over them.
struct Outgoing<'l, L: Link> {
    pages: PagesOut<'l, L>,
    /// Lanes 1.., if any.
    lanes: Vec<LaneWorker>,
    /// Their wire bytes and `auto` windows, as they last said.
    lane_wire_bytes: Vec<u64>,
    lane_windows: Vec<Vec<Window>>,
    /// LZ4 as the stream started.
    lz4: bool,
    start: Instant,
    start_unix_us: u64,
    stream_bytes: u64,
    pages_sent: u64,
    rows: Vec<IterationRow>,
    deadlines: Deadlines,
}

impl<'l, L: Link> Outgoing<'l, L> {
    fn new(
        link: &'l mut L,
        cfg: Config,
        enc: Box<dyn StreamEncoder>,
        opts: &SourceOptions,
        page_size: usize,
    ) -> Result<Self> {
        Ok(Outgoing {
            pages: PagesOut::new(
                link,
                lane_config(cfg, opts.lanes, 0),
                enc,
                opts.compression,
                page_size,
            )?,
            lanes: Vec::new(),
            lane_wire_bytes: Vec::new(),
            lane_windows: Vec::new(),
            lz4: cfg.lz4,
            start: Instant::now(),
            start_unix_us: session::unix_us(),
            stream_bytes: 0,
            pages_sent: 0,
            rows: Vec::new(),
            deadlines: opts.deadlines,
        })
    }

    /// Says what is coming, then starts a fresh dirty log (iteration 1 sends everything
    /// anyway).
    fn say_hello(
        &mut self,
        guest: &mut dyn SourceGuest,
        opts: &SourceOptions,
        migration_id: u64,
    ) -> Result<()> {
        let chunked = self.pages.chunked();
        session::write_hello(
            &mut self.pages.w,
            &Hello {
                mem_bytes: guest.mem_bytes(),
                vcpus: guest.vcpus(),
                page_size: guest.page_size() as u32,
                label: opts.label.clone(),
                migration_id,
                stream_compression: chunked.then(|| pagewire_stream_zstd::NAME.into()),
                lanes: opts.lanes,
            },
        )
        .context("sending the hello (is the destination listening?)")?;
        guest.take_dirty()?;
        Ok(())
    }

    /// Opens lanes 1.. (if the options ask for more than one) on new connections, each
    /// with its own encoder on its own thread.
    fn open_lanes(
        &mut self,
        guest: &dyn SourceGuest,
        opts: &SourceOptions,
        migration_id: u64,
        cfg: Config,
        features: Features,
        redial: Option<&mut dyn Redial>,
    ) -> Result<()> {
        if opts.lanes == 1 {
            return Ok(());
        }
        let (Some(redial), Some(reader)) = (redial, guest.page_reader()) else {
            bail!(
                "--lanes {}: this source can open only one connection or read its guest \
                 from one thread; use --lanes 1",
                opts.lanes
            );
        };
        for lane in 1..opts.lanes {
            let mut link = redial
                .open_lane()
                .with_context(|| format!("opening lane {lane}"))?;
            session::write_lane_hello(&mut link, &LaneHello { migration_id, lane })
                .with_context(|| format!("opening lane {lane}"))?;
            self.lanes.push(LaneWorker::start(
                lane,
                link,
                lane_config(cfg, opts.lanes, lane),
                features,
                opts.compression,
                reader.clone(),
                guest.page_size(),
            )?);
        }
        self.lane_wire_bytes = vec![0; self.lanes.len()];
        self.lane_windows = vec![Vec::new(); self.lanes.len()];
        Ok(())
    }

    /// Lanes in all.
    fn lane_count(&self) -> u32 {
        self.lanes.len() as u32 + 1
    }

    /// Waits for every other lane to finish its job; adds up what they sent.
    fn join_lanes(&mut self) -> Result<PageCounts> {
        let waiting = Instant::now();
        let mut c = PageCounts::default();
        let mut first_err = None;
        for (i, lane) in self.lanes.iter().enumerate() {
            match lane.wait() {
                Ok(done) => {
                    c += done.counts;
                    self.lane_wire_bytes[i] = done.wire_bytes;
                    self.lane_windows[i] = done.windows;
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        self.pages.set_aside(waiting.elapsed());
        match first_err {
            Some(e) => Err(e),
            None => Ok(c),
        }
    }

    /// Iterates until the policy (and the group) says stop. Returns the iterations done
    /// and the pages dirtied during the last one.
    fn precopy(
        &mut self,
        guest: &mut dyn SourceGuest,
        policy: &mut dyn StopPolicy,
        mut gate: Option<&mut dyn Gate>,
        progress: &mut dyn MigrationProgress,
    ) -> Result<(u32, Vec<u64>)> {
        let mut to_send: Vec<u64> = (0..guest.pages()).collect();
        let mut iteration = 1u32;
        loop {
            let sent = self.iteration(guest, iteration, &to_send, progress)?;
            let (decision, word) = decide(policy, gate.as_deref_mut(), &sent.report)?;
            let r = &sent.report;
            let row = IterationRow {
                iteration,
                pages_sent: r.pages_sent,
                pages_dirtied: r.pages_dirtied,
                pages_remaining: r.pages_remaining,
                bytes: r.bytes_sent,
                seconds: sent.elapsed.as_secs_f64(),
                start_s: (sent.started - self.start).as_secs_f64(),
                cpu_s: thread_cpu_time()
                    .saturating_sub(sent.cpu_at_start)
                    .as_secs_f64(),
                lz4_pages: sent.counts.lz4_pages,
                zstd_pages: sent.counts.zstd_pages,
                plain_pages: sent.counts.plain_pages,
                group: word,
            };
            progress.iteration_done(&row);
            self.rows.push(row);
            self.stream_bytes += r.bytes_sent;
            self.pages_sent += r.pages_sent;
            to_send = sent.dirty;
            if decision == Decision::StopAndCopy {
                return Ok((iteration, to_send));
            }
            iteration += 1;
        }
    }

    /// Sends one pre-copy iteration on every lane, waits for every lane's acknowledgement
    /// and reads the dirty log.
    fn iteration(
        &mut self,
        guest: &mut dyn SourceGuest,
        iteration: u32,
        to_send: &[u64],
        progress: &mut dyn MigrationProgress,
    ) -> Result<Sent> {
        let t0 = Instant::now();
        let cpu0 = thread_cpu_time();
        progress.iteration_started(iteration, to_send.len() as u64);
        let mut parts = split(to_send, self.lane_count()).into_iter();
        let mine = parts.next().unwrap_or_default();
        for (lane, pfns) in self.lanes.iter().zip(parts) {
            lane.iteration(iteration, pfns, Waits::idle(self.deadlines.progress))?;
        }
        let mine_len = mine.len() as u64;
        let sent_here = self
            .pages
            .send_pages(&mine, &mut |pfn, page| guest.read_page(pfn, page), progress)
            .and_then(|mut c| {
                progress.note("waiting for the destination's acknowledgement");
                c.bytes += self.pages.end_iteration(iteration)?;
                Ok(c)
            });
        // every lane is heard from before an error is returned, so none is left mid-job
        let joined = self.join_lanes();
        let mut counts = sent_here?;
        counts += joined?;
        progress.pages_sent(to_send.len() as u64 - mine_len);
        let dirty = guest.take_dirty()?;
        let elapsed = t0.elapsed();
        let report = IterationReport {
            iteration,
            pages_sent: to_send.len() as u64,
            pages_dirtied: dirty.len() as u64,
            pages_remaining: dirty.len() as u64,
            bytes_sent: counts.bytes,
            elapsed_us: elapsed.as_micros() as u64,
            bandwidth_bytes_per_s: (counts.bytes as f64 / elapsed.as_secs_f64().max(1e-6)) as u64,
        };
        Ok(Sent {
            dirty,
            report,
            started: t0,
            elapsed,
            cpu_at_start: cpu0,
            counts,
        })
    }

    /// Pauses the guest, sends the pages still dirty (every lane its own), the pause
    /// information and the state blobs on lane 0, and ends every lane's stream.
    fn stop_and_copy(
        &mut self,
        guest: &mut dyn SourceGuest,
        to_send: Vec<u64>,
        iterations: u32,
        progress: &mut dyn MigrationProgress,
    ) -> Result<Stopped> {
        progress.note("stop-and-copy");
        let pause = Instant::now();
        let pause_unix_us = session::unix_us();
        guest.pause().context("pausing the source VM")?;
        let mut last = guest.take_dirty()?;
        last.extend_from_slice(&to_send);
        last.sort_unstable();
        last.dedup();
        // the pause is bounded: the last pages' time at the pace so far, plus the margin
        let budget = self.final_copy_time(last.len() as u64) + self.deadlines.switchover;
        let deadline = pause + budget;
        let waits = Waits {
            idle: Some(budget),
            until: Some(deadline),
        };
        self.pages.w.inner.set_waits(waits)?;
        progress.iteration_started(iterations + 1, last.len() as u64);
        let mut parts = split(&last, self.lane_count()).into_iter();
        let mine = parts.next().unwrap_or_default();
        for (lane, pfns) in self.lanes.iter().zip(parts) {
            lane.last(pfns, waits)?;
        }
        let sent_here = self
            .pages
            .send_last(&mine, &mut |pfn, page| guest.read_page(pfn, page));
        let joined = self.join_lanes();
        let mut counts = sent_here?;
        counts += joined?;
        let digest = format!("{:032x}", guest.memory_digest()?);
        let info = PauseInfo {
            digest: digest.clone(),
            pause_unix_us,
            iterations,
        };
        counts.bytes += self.send_blob(
            BLOB_PAUSE,
            &serde_json::to_vec(&info)?,
            "sending the pause information",
        )?;
        for (i, state) in guest.save_state()?.iter().enumerate() {
            counts.bytes += self.send_blob(BLOB_VCPU + i as u32, state, "sending vCPU state")?;
        }
        self.pages.enc.finish(&mut self.pages.out)?;
        counts.bytes += self.pages.send_out("sending the end of the stream")?;
        self.pages.finish_link("sending the end of the stream")?;
        self.stream_bytes += counts.bytes;
        self.pages_sent += last.len() as u64;
        Ok(Stopped {
            pause,
            deadline,
            pages: last.len() as u64,
            counts,
            digest,
        })
    }

    /// What sending `pages` more takes at the pace of the pre-copy (acknowledgements
    /// included, so it errs long).
    fn final_copy_time(&self, pages: u64) -> Duration {
        let per_page = self.start.elapsed().as_secs_f64() / self.pages_sent.max(1) as f64;
        Duration::from_secs_f64((per_page * pages as f64).min(1e6))
    }

    /// Sends `data` as blobs tagged `tag` on lane 0; returns the bytes written.
    fn send_blob(&mut self, tag: u32, data: &[u8], what: &'static str) -> Result<u64> {
        append_blob_pieces(self.pages.enc.as_mut(), tag, data, &mut self.pages.out)?;
        self.pages.send_out(what)
    }

    /// The switchover: waits (within the pause's deadline) for the destination to be
    /// ready, commits, and learns that the guest started there: from the reply, or from a
    /// status query on a new connection when the reply is lost. Returns the destination's
    /// reply, the time since the pause, and where the outcome came from.
    fn switchover(
        &mut self,
        stopped: &Stopped,
        id: u64,
        redial: Option<&mut dyn Redial>,
        progress: &mut dyn MigrationProgress,
    ) -> Result<(Reply, Duration, &'static str)> {
        let d = self.deadlines;
        progress.note("waiting for the destination");
        let ready = session::read_message(self.pages.w.inner);
        let late = Instant::now() > stopped.deadline;
        match ready {
            Ok(DestMessage::Ready) if !late => {}
            Ok(DestMessage::Ready) => {
                let why = "the destination was ready only after the pause's deadline";
                self.abort(why);
                bail!("{why} (--switchover-timeout): the migration is abandoned");
            }
            Ok(DestMessage::Reply(r)) => bail!(
                "the destination refused the migration: {}",
                r.error.unwrap_or_else(|| "no reason given".into())
            ),
            Ok(DestMessage::Ack(n)) => {
                bail!("unexpected acknowledgement of iteration {n} at the end")
            }
            Err(e) => {
                self.abort("the source stopped waiting for ready");
                return Err(d.explain(
                    Deadline::Switchover,
                    e.context("the destination did not say ready: the migration is abandoned"),
                ));
            }
        }
        // From the commit on the source never resumes on its own.
        progress.note("committing");
        self.pages.w.inner.set_waits(Waits {
            idle: Some(d.switchover),
            until: Some(Instant::now() + d.switchover),
        })?;
        let heard = session::write_message(&mut self.pages.w, &SourceMessage::Commit)
            .context("sending the commit")
            .and_then(|()| {
                session::read_message(self.pages.w.inner)
                    .context("waiting for the destination's reply")
            });
        let lost = match heard {
            Ok(DestMessage::Reply(r)) if r.ok => {
                let acked = stopped.pause.elapsed();
                let _ = session::write_message(&mut self.pages.w, &SourceMessage::Done);
                return Ok((r, acked, "reply"));
            }
            Ok(DestMessage::Reply(r)) => bail!(
                "the destination did not start the guest: {}",
                r.error.unwrap_or_else(|| "no reason given".into())
            ),
            Ok(other) => anyhow::anyhow!("unexpected {other:?} after the commit"),
            Err(e) => d.explain(Deadline::Switchover, e),
        };
        progress.note("asking the destination whether the guest started");
        match ask_status(redial, id, &d) {
            Ok(Status::Started(r)) => Ok((r, stopped.pause.elapsed(), "status query")),
            Ok(Status::Aborted(why)) => bail!(
                "the destination did not start the guest ({why}); it said so when asked after: \
                 {lost:#}"
            ),
            Ok(Status::Unknown) => bail!(
                "the destination knows no migration {id:016x}, so nothing of it runs there; \
                 asked after: {lost:#}"
            ),
            Err(e) => Err(anyhow::Error::new(OutcomeUnknown {
                migration_id: id,
                why: format!("{lost:#}; then {e:#}"),
            })),
        }
    }

    /// Tells the destination not to start the guest, if the link still carries it.
    fn abort(&mut self, why: &str) {
        let _ = self
            .pages
            .w
            .inner
            .set_waits(Waits::until(Instant::now() + ABORT_GRACE));
        let _ = session::write_message(&mut self.pages.w, &SourceMessage::Abort(why.into()));
    }

    /// The stop-and-copy's row, closed by the reply.
    fn last_row(
        &mut self,
        iterations: u32,
        stopped: &Stopped,
        acked: Duration,
        progress: &mut dyn MigrationProgress,
    ) {
        let row = IterationRow {
            iteration: iterations + 1,
            pages_sent: stopped.pages,
            pages_dirtied: 0,
            pages_remaining: 0,
            bytes: stopped.counts.bytes,
            seconds: acked.as_secs_f64(),
            start_s: (stopped.pause - self.start).as_secs_f64(),
            cpu_s: 0.0,
            lz4_pages: stopped.counts.lz4_pages,
            zstd_pages: stopped.counts.zstd_pages,
            plain_pages: stopped.counts.plain_pages,
            group: None,
        };
        progress.iteration_done(&row);
        self.rows.push(row);
    }

    fn report(
        self,
        guest: &dyn SourceGuest,
        opts: &SourceOptions,
        iterations: u32,
        stopped: Stopped,
        reply: Reply,
        acked: Duration,
    ) -> MigrationReport {
        MigrationReport {
            label: opts.label.clone(),
            mem_bytes: guest.mem_bytes(),
            vcpus: guest.vcpus(),
            policy: opts.policy.name().into(),
            codec: opts.codec.name().into(),
            encoder: opts.encoder.name().into(),
            auto_windows: self.pages.windows().to_vec(),
            lanes: self.lane_count(),
            lane_auto_windows: self.lane_windows,
            compression: match opts.compression {
                Compression::Zstd { .. } | Compression::Plain => opts.compression.describe(),
                c if self.lz4 => c.name().into(),
                _ => Compression::None.name().into(),
            },
            iterations,
            start_unix_us: self.start_unix_us,
            total_s: self.start.elapsed().as_secs_f64(),
            downtime_s: reply.downtime_us as f64 / 1e6,
            downtime_at_source_s: acked.as_secs_f64(),
            dest_finish_s: reply.finish_us as f64 / 1e6,
            stream_bytes: self.stream_bytes,
            wire_bytes: self.pages.w.bytes + self.lane_wire_bytes.iter().sum::<u64>(),
            pages_sent: self.pages_sent,
            digest: stopped.digest,
            rows: self.rows,
            migration_id: String::new(),
            outcome_from: String::new(),
        }
    }
}

/// Asks the destination, on new connections, whether migration `id`'s guest started there:
/// up to `status_attempts` times, waiting longer between attempts.
fn ask_status(redial: Option<&mut dyn Redial>, id: u64, d: &Deadlines) -> Result<Status> {
    let Some(redial) = redial else {
        bail!("there is no way to reach the destination again");
    };
    let attempts = d.status_attempts.max(1);
    let mut backoff = Duration::from_millis(250);
    let mut last = anyhow::anyhow!("no status query was made");
    for attempt in 1..=attempts {
        if attempt > 1 {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        match ask_once(redial, id, d) {
            Ok(status) => return Ok(status),
            Err(e) => last = e.context(format!("status query {attempt} of {attempts} failed")),
        }
    }
    Err(last)
}

/// One status query on a new connection.
fn ask_once(redial: &mut dyn Redial, id: u64, d: &Deadlines) -> Result<Status> {
    let mut link = redial.redial()?;
    link.set_waits(Waits {
        idle: Some(d.switchover),
        until: Some(Instant::now() + d.switchover),
    })?;
    session::write_status_query(&mut link, &StatusQuery { migration_id: id })?;
    session::read_message(&mut link).map_err(|e| d.explain(Deadline::Switchover, e))
}

/// This VM's own policy decides, then the group (if any) has its say; returns the
/// decision and the group's word for the report.
fn decide<'g>(
    policy: &mut dyn StopPolicy,
    gate: Option<&mut (dyn Gate + 'g)>,
    report: &IterationReport,
) -> Result<(Decision, Option<&'static str>)> {
    let own = policy.decide(report);
    Ok(match gate {
        Some(g) => {
            let (d, word) = g.decide(own, report)?;
            (d, Some(word))
        }
        None => (own, None),
    })
}
