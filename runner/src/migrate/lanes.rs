//! Lanes at the source: the pages of a migration split among N encoders on N threads and
//! N connections, so that a link faster than one core's encoder is filled.
//!
//! Page `pfn` always travels on lane `pfn % N` ([`lane_of`]): each lane's cache and deltas
//! then only ever refer to its own pages, so every lane is an ordinary stream that decodes
//! on its own, in place, into pages no other lane touches. Lane 0 is the session's own
//! connection (hello, acknowledgements, state blobs, switchover) and is encoded on the
//! migration's thread; lanes 1.. are [`LaneWorker`]s, each with a thread that owns its
//! encoder and its connection and is handed one iteration's pages at a time. Every lane
//! ends each iteration and waits for the destination's acknowledgement on its own link;
//! the iteration is over when every lane's is in, and only then is the dirty log read and
//! the stop decided, once, for all lanes.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use pagewire::{Config, Features};

use super::compress::{Compression, Window};
use super::guest::PageRead;
use super::pages_out::{PageCounts, PagesOut};
use super::progress::NoProgress;
use crate::encoders::EncoderChoice;
use crate::net::{Link, Waits};

/// The lane page `pfn` travels on, of `lanes`.
pub fn lane_of(pfn: u64, lanes: u32) -> usize {
    (pfn % u64::from(lanes.max(1))) as usize
}

/// `pfns` split by lane, each part in the order given.
pub fn split(pfns: &[u64], lanes: u32) -> Vec<Vec<u64>> {
    let mut parts =
        vec![Vec::with_capacity(pfns.len() / lanes.max(1) as usize + 1); lanes.max(1) as usize];
    for &pfn in pfns {
        parts[lane_of(pfn, lanes)].push(pfn);
    }
    parts
}

/// The configuration of each of `lanes` lanes' streams: the cache budget split among them
/// (at least one page each), and a stream id of its own, so that frames of one lane are
/// refused on another.
pub fn lane_config(cfg: Config, lanes: u32, lane: u32) -> Config {
    Config {
        cache_pages: (cfg.cache_pages / lanes.max(1)).max(1),
        stream_id: cfg.stream_id.wrapping_add(lane),
        ..cfg
    }
}

/// What a lane is asked to do.
enum Job {
    /// Send iteration `iteration`'s pages, end it and wait for its acknowledgement.
    Iteration {
        iteration: u32,
        pfns: Vec<u64>,
        waits: Waits,
    },
    /// Send the last pages (the guest is paused) and end the stream.
    Last { pfns: Vec<u64>, waits: Waits },
}

/// What a lane did with a job.
pub(super) struct LaneDone {
    pub(super) counts: PageCounts,
    /// Bytes its link carried so far (zstd chunks included).
    pub(super) wire_bytes: u64,
    /// `auto`'s windows so far.
    pub(super) windows: Vec<Window>,
}

/// Lane 1 or more: a thread with its own encoder and connection.
pub(super) struct LaneWorker {
    lane: u32,
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Result<LaneDone>>,
    /// Gives the link back when the lane is done, so that it closes only when the
    /// migration does.
    thread: Option<JoinHandle<Box<dyn Link>>>,
}

impl LaneWorker {
    /// Starts lane `lane` on `link` (its lane hello already sent): a stream of `cfg` with
    /// `features` and `compression`, reading pages through `reader`.
    pub(super) fn start(
        lane: u32,
        mut link: Box<dyn Link>,
        cfg: Config,
        features: Features,
        compression: Compression,
        reader: Arc<dyn PageRead>,
        page_size: usize,
    ) -> Result<Self> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("pagewire-lane-{lane}"))
            .spawn(move || {
                // the encoder and auto's CPU clock belong to this thread
                let r = EncoderChoice::InProcess
                    .start_with(cfg, features)
                    .and_then(|enc| PagesOut::new(&mut *link, cfg, enc, compression, page_size));
                let mut out = match r {
                    Ok(o) => o,
                    Err(e) => {
                        let _ = done_tx.send(Err(e.context("starting the lane's encoder")));
                        drop(job_rx);
                        return link;
                    }
                };
                let mut idle = Instant::now();
                let mut read = |pfn: u64, page: &mut [u8]| reader.read_page(pfn, page);
                while let Ok(job) = job_rx.recv() {
                    // waiting for work is neither the link's time nor the encoder's
                    out.set_aside(idle.elapsed());
                    let (r, last) = match job {
                        Job::Iteration {
                            iteration,
                            pfns,
                            waits,
                        } => (
                            out.w
                                .inner
                                .set_waits(waits)
                                .map_err(anyhow::Error::from)
                                .and_then(|()| {
                                    let mut c =
                                        out.send_pages(&pfns, &mut read, &mut NoProgress)?;
                                    c.bytes += out.end_iteration(iteration)?;
                                    Ok(c)
                                }),
                            false,
                        ),
                        Job::Last { pfns, waits } => (
                            out.w
                                .inner
                                .set_waits(waits)
                                .map_err(anyhow::Error::from)
                                .and_then(|()| {
                                    let mut c = out.send_last(&pfns, &mut read)?;
                                    out.enc.finish(&mut out.out)?;
                                    c.bytes += out.send_out("ending the lane's stream")?;
                                    out.finish_link("ending the lane's stream")?;
                                    Ok(c)
                                }),
                            true,
                        ),
                    };
                    let failed = r.is_err();
                    let _ = done_tx.send(r.map(|counts| LaneDone {
                        counts,
                        wire_bytes: out.w.bytes,
                        windows: out.windows().to_vec(),
                    }));
                    if failed || last {
                        break;
                    }
                    idle = Instant::now();
                }
                drop(out);
                link
            })
            .context("starting a lane's thread")?;
        Ok(LaneWorker {
            lane,
            jobs,
            done,
            thread: Some(thread),
        })
    }

    /// Hands the lane iteration `iteration`'s pages.
    pub(super) fn iteration(&self, iteration: u32, pfns: Vec<u64>, waits: Waits) -> Result<()> {
        self.give(Job::Iteration {
            iteration,
            pfns,
            waits,
        })
    }

    /// Hands the lane its last pages.
    pub(super) fn last(&self, pfns: Vec<u64>, waits: Waits) -> Result<()> {
        self.give(Job::Last { pfns, waits })
    }

    fn give(&self, job: Job) -> Result<()> {
        self.jobs
            .send(job)
            .map_err(|_| anyhow!("lane {} has stopped", self.lane))
    }

    /// Waits for the lane to finish its job.
    pub(super) fn wait(&self) -> Result<LaneDone> {
        self.done
            .recv()
            .map_err(|_| anyhow!("lane {} stopped without a word", self.lane))?
            .with_context(|| format!("lane {}", self.lane))
    }
}

impl Drop for LaneWorker {
    /// A lane that is done closes its link; one still at work (the migration failed) is
    /// left to run into its link's deadline.
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_split_by_pfn_modulo_lanes_and_keep_their_order() {
        let parts = split(&[0, 1, 2, 3, 4, 7, 9], 2);
        assert_eq!(parts, vec![vec![0, 2, 4], vec![1, 3, 7, 9]]);
        assert_eq!(split(&[5, 3], 1), vec![vec![5, 3]]);
        assert_eq!(lane_of(10, 3), 1);
    }

    #[test]
    fn lanes_share_the_cache_budget_and_differ_in_stream_id() {
        let cfg = Config::DEFAULT;
        let a = lane_config(cfg, 2, 0);
        let b = lane_config(cfg, 2, 1);
        assert_eq!(a.cache_pages + b.cache_pages, cfg.cache_pages);
        assert_ne!(a.stream_id, b.stream_id);
        assert_eq!(lane_config(cfg, 1, 0), cfg);
    }
}
