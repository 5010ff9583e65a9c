//! The receiving side: listen until one migration has arrived (mutual TLS first, every
//! handshake under a deadline, refused strangers logged and forgotten), answer status
//! queries, let the arrived guest run and check itself.
//!
//! A connection opens either a migration (its hello) or a status query. One migration at a
//! time: a second is refused while one arrives or runs. A failed migration (link cut,
//! stalled, refused, not committed) is logged and the receiver listens on. Once the guest
//! runs, the receiver keeps answering status queries until the source has heard the
//! outcome, or for as long as the source may ask.

use std::fmt;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::migrate::session::{self, DestMessage, LaneHello, Opening, Reply, Status};
use crate::migrate::{
    self, arrive, Arrived, Deadline, Deadlines, DestOptions, LaneLinks, Outcomes,
};
use crate::net::listen::{self, ListenOptions, Server, Service, Stopper};
use crate::net::Link;
use crate::vmm::{Vm, Vmm};

/// What happened at the receiver, for its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiveEvent {
    /// A connection that is neither a migration nor a status query, or one not served
    /// (`peer` is `None` when the accept loop itself pauses).
    Refused {
        /// Who.
        peer: Option<SocketAddr>,
        /// Why.
        why: String,
    },
    /// A migration's hello arrived.
    Arriving {
        /// Who sends it.
        peer: SocketAddr,
        /// Its id.
        migration_id: u64,
        /// The source's label.
        label: String,
        /// Guest memory.
        mem_bytes: u64,
    },
    /// A migration failed; nothing of it runs here; the receiver listens on.
    Failed {
        /// Its id.
        migration_id: u64,
        /// Why.
        why: String,
    },
    /// A migration's guest started here.
    Started {
        /// Its id.
        migration_id: u64,
        /// Pause at the source to the start here.
        downtime_us: u64,
    },
    /// A status query was answered.
    Answered {
        /// Who asked.
        peer: SocketAddr,
        /// About which migration.
        migration_id: u64,
        /// "started", "aborted" or "unknown".
        status: &'static str,
    },
}

impl fmt::Display for ReceiveEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiveEvent::Refused {
                peer: Some(peer),
                why,
            } => write!(f, "refused {peer}: {why}; listening on"),
            ReceiveEvent::Refused { peer: None, why } => write!(f, "{why}"),
            ReceiveEvent::Arriving {
                peer,
                migration_id,
                label,
                mem_bytes,
            } => write!(
                f,
                "migration {migration_id:016x} from {peer} arriving ({label}, {} MiB)",
                mem_bytes >> 20
            ),
            ReceiveEvent::Failed { migration_id, why } => write!(
                f,
                "migration {migration_id:016x} failed, nothing of it runs here: {why}; \
                 listening on"
            ),
            ReceiveEvent::Started {
                migration_id,
                downtime_us,
            } => write!(
                f,
                "migration {migration_id:016x} started (downtime {:.1} ms)",
                *downtime_us as f64 / 1e3
            ),
            ReceiveEvent::Answered {
                peer,
                migration_id,
                status,
            } => write!(
                f,
                "status of migration {migration_id:016x} asked by {peer}: {status}"
            ),
        }
    }
}

/// Where the receiver's events go.
pub type EventLog = Arc<dyn Fn(&ReceiveEvent) + Send + Sync>;

/// How to receive.
#[derive(Clone)]
pub struct ReceiveConfig {
    /// Mutual TLS (`None`: plain TCP, for tests of the link itself).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Limits on the incoming VM, and the deadlines.
    pub dest: DestOptions,
    /// How long the arrived VM runs before its self-check and the end of `receive`.
    pub run_after: Duration,
    /// Handshakes at once (when more arrive, the oldest is cut).
    pub max_handshakes: usize,
    /// Where events go (stderr by default).
    pub log: EventLog,
}

impl Default for ReceiveConfig {
    fn default() -> Self {
        ReceiveConfig {
            tls: None,
            dest: DestOptions::default(),
            run_after: Duration::from_secs(2),
            max_handshakes: ListenOptions::default().max_handshakes,
            // never a panic when stderr is gone
            log: Arc::new(|e| {
                let _ = writeln!(std::io::stderr(), "receive: {e}");
            }),
        }
    }
}

impl fmt::Debug for ReceiveConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiveConfig")
            .field("tls", &self.tls.is_some())
            .field("dest", &self.dest)
            .field("run_after", &self.run_after)
            .field("max_handshakes", &self.max_handshakes)
            .finish()
    }
}

/// What the destination saw.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// Who sent it (the source's label).
    pub label: String,
    /// Guest memory.
    pub mem_bytes: u64,
    /// The reply sent to the source (downtime etc.).
    pub reply: migrate::session::Reply,
    /// Pre-copy iterations in the stream.
    pub iterations: u64,
    /// How the stream was decoded: "in place" or "cache copy".
    pub decoder: String,
    /// The decoder's storage in bytes.
    pub decoder_storage_bytes: usize,
    /// Heartbeats heard from the guest at the destination.
    pub heartbeats: u64,
    /// The guest's own check of its memory after running at the destination.
    pub self_check_ok: bool,
    /// The migration's id (hex).
    pub migration_id: String,
}

/// Status queries a receiver serves at once beside the migration.
const SESSIONS: usize = 8;

/// Accepts connections on `listener` until one migration has arrived, runs the VM for
/// `run_after`, lets the guest check itself, and returns what happened. The VM is paused
/// at the end.
pub fn receive_one(listener: &TcpListener, cfg: &ReceiveConfig) -> Result<Received> {
    Receiver::start(listener.try_clone()?, cfg.clone())?.wait()
}

/// A receiver listening in the background.
pub struct Receiver {
    server: Server,
    desk: Arc<Desk>,
    arrived: mpsc::Receiver<Arrived<Vm>>,
}

impl Receiver {
    /// Starts listening on `listener`.
    pub fn start(listener: TcpListener, cfg: ReceiveConfig) -> Result<Self> {
        let (tx, arrived) = mpsc::channel();
        let opts = ListenOptions {
            max_handshakes: cfg.max_handshakes,
            max_sessions: SESSIONS,
            handshake_timeout: cfg.dest.deadlines.handshake,
        };
        let desk = Arc::new(Desk {
            tls: cfg.tls.is_some(),
            cfg: cfg.clone(),
            outcomes: Outcomes::default(),
            busy: Mutex::new(Busy::Free),
            arrived: Mutex::new(tx),
            lanes: Mutex::new(Vec::new()),
            lane_came: Condvar::new(),
        });
        let server = listen::serve(listener, cfg.tls, opts, desk.clone())
            .context("starting the accept loop")?;
        Ok(Receiver {
            server,
            desk,
            arrived,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// A handle that ends [`Receiver::wait`] when no migration is wanted any more.
    pub fn stopper(&self) -> Stopper {
        self.server.stopper()
    }

    /// Waits for a migration to arrive (or a stop), lets its guest run `run_after` and
    /// check itself, answers status queries until the source has heard the outcome (or
    /// may no longer ask), then stops listening. The VM is paused at the end.
    pub fn wait(self) -> Result<Received> {
        let stopper = self.server.stopper();
        let arrived = loop {
            match self.arrived.recv_timeout(Duration::from_millis(50)) {
                Ok(a) => break a,
                Err(mpsc::RecvTimeoutError::Timeout) if !stopper.stopped() => {}
                Err(_) => {
                    self.server.stop();
                    bail!("the receiver was stopped before a migration arrived");
                }
            }
        };
        let id = arrived.hello.migration_id;
        let linger_until = Instant::now() + linger(&self.desk.cfg.dest.deadlines);
        let r = run_arrived(arrived, self.desk.cfg.run_after);
        while !self.desk.outcomes.told(id) && Instant::now() < linger_until && !stopper.stopped() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.server.stop();
        r
    }
}

/// How long a committed source may go on asking for the outcome: its wait for the reply,
/// then every status query (connect and TLS, the answer, the pause before the next).
fn linger(d: &Deadlines) -> Duration {
    let per_query = d.handshake + d.switchover + Duration::from_secs(2);
    d.switchover + per_query * d.status_attempts
}

/// Lets the arrived guest run and check itself; pauses it.
fn run_arrived(arrived: Arrived<Vm>, run_after: Duration) -> Result<Received> {
    let mut vm = arrived.vm;
    let t = Instant::now();
    vm.wait_for(
        Duration::from_secs(30),
        "heartbeats at the destination",
        |m| {
            m.vcpus
                .iter()
                .all(|v| v.heartbeats.load(Ordering::SeqCst) >= 1)
        },
    )?;
    if let Some(rest) = run_after.checked_sub(t.elapsed()) {
        std::thread::sleep(rest);
    }
    let ok = vm.self_check(Duration::from_secs(60))?;
    let heartbeats = vm.monitor().heartbeats();
    vm.pause()?;
    Ok(Received {
        label: arrived.hello.label,
        mem_bytes: arrived.hello.mem_bytes,
        reply: arrived.reply,
        iterations: arrived.iterations,
        decoder: arrived.decoding.mode_name().into(),
        decoder_storage_bytes: arrived.decoding.storage_bytes,
        heartbeats,
        self_check_ok: ok,
        migration_id: format!("{:016x}", arrived.hello.migration_id),
    })
}

/// One migration at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Busy {
    Free,
    Receiving(u64),
    Received(u64),
}

/// Serves the connections: migrations and status queries.
struct Desk {
    tls: bool,
    cfg: ReceiveConfig,
    outcomes: Outcomes,
    busy: Mutex<Busy>,
    arrived: Mutex<mpsc::Sender<Arrived<Vm>>>,
    /// Connections of lanes 1.. of the arriving migration, until it takes them.
    lanes: Mutex<Vec<(LaneHello, Box<dyn Link>)>>,
    lane_came: Condvar,
}

impl Desk {
    fn log(&self, e: ReceiveEvent) {
        (self.cfg.log)(&e);
    }

    fn busy(&self) -> std::sync::MutexGuard<'_, Busy> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the migration `id` unless another is arriving or has arrived.
    fn claim(&self, id: u64) -> Result<()> {
        let mut b = self.busy();
        match *b {
            Busy::Free => {
                *b = Busy::Receiving(id);
                Ok(())
            }
            Busy::Receiving(other) => {
                bail!("busy: migration {other:016x} is arriving here; try again later")
            }
            Busy::Received(other) => bail!("migration {other:016x} already arrived here"),
        }
    }

    fn migration(&self, mut link: Box<dyn Link>, peer: SocketAddr, hello: session::Hello) {
        let id = hello.migration_id;
        if let Err(e) = self.claim(id) {
            let reply = Reply {
                ok: false,
                error: Some(format!("{e:#}")),
                ..Reply::default()
            };
            let _ = session::write_message(&mut link, &DestMessage::Reply(reply));
            self.log(ReceiveEvent::Refused {
                peer: Some(peer),
                why: format!("migration {id:016x}: {e:#}"),
            });
            return;
        }
        self.log(ReceiveEvent::Arriving {
            peer,
            migration_id: id,
            label: hello.label.clone(),
            mem_bytes: hello.mem_bytes,
        });
        let r = arrive(&mut link, hello, &Vmm, &self.cfg.dest, &self.outcomes, self);
        // lanes that came too late or twice are closed with the migration
        self.waiting_lanes().retain(|(l, _)| l.migration_id != id);
        match r {
            Ok(a) => {
                *self.busy() = Busy::Received(id);
                self.log(ReceiveEvent::Started {
                    migration_id: id,
                    downtime_us: a.reply.downtime_us,
                });
                let tx = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
                let _ = tx.send(a);
            }
            Err(e) => {
                *self.busy() = Busy::Free;
                self.log(ReceiveEvent::Failed {
                    migration_id: id,
                    why: format!("{e:#}"),
                });
            }
        }
    }
}

impl Desk {
    fn waiting_lanes(&self) -> std::sync::MutexGuard<'_, Vec<(LaneHello, Box<dyn Link>)>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps a lane's connection for the migration that is arriving, if it is that one's
    /// and not yet here.
    fn lane_arrived(&self, link: Box<dyn Link>, peer: SocketAddr, lane: LaneHello) {
        // the source opens lanes after its hello, but their handshakes may overtake it
        let by = Instant::now() + self.cfg.dest.deadlines.handshake;
        while *self.busy() == Busy::Free && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(5));
        }
        let arriving = *self.busy() == Busy::Receiving(lane.migration_id);
        let mut lanes = self.waiting_lanes();
        if !arriving || lane.lane == 0 || lanes.iter().any(|(l, _)| *l == lane) {
            drop(lanes);
            self.log(ReceiveEvent::Refused {
                peer: Some(peer),
                why: format!(
                    "lane {} of migration {:016x}, which is not arriving here or has it already",
                    lane.lane, lane.migration_id
                ),
            });
            return;
        }
        lanes.push((lane, link));
        self.lane_came.notify_all();
    }
}

impl LaneLinks for Desk {
    fn lane(&self, migration_id: u64, lane: u32, by: Instant) -> Result<Box<dyn Link>> {
        let want = LaneHello { migration_id, lane };
        let mut lanes = self.waiting_lanes();
        loop {
            if let Some(i) = lanes.iter().position(|(l, _)| *l == want) {
                return Ok(lanes.swap_remove(i).1);
            }
            let now = Instant::now();
            if now >= by {
                bail!("lane {lane} did not connect in time (--handshake-timeout)");
            }
            lanes = self
                .lane_came
                .wait_timeout(lanes, by - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Service for Desk {
    fn serve(&self, mut link: Box<dyn Link>, peer: SocketAddr) {
        // still under the handshake deadline
        let opening = session::read_opening(&mut link);
        match opening {
            Err(e) => {
                let e = self.cfg.dest.deadlines.explain(Deadline::Handshake, e);
                let why = if self.tls {
                    format!("{e:#}")
                } else {
                    format!("not a pagewire peer: {e:#}")
                };
                self.log(ReceiveEvent::Refused {
                    peer: Some(peer),
                    why,
                });
            }
            Ok(Opening::Status(q)) => {
                let status = self.outcomes.query(q.migration_id);
                let word = match &status {
                    Status::Started(_) => "started",
                    Status::Aborted(_) => "aborted",
                    Status::Unknown => "unknown",
                };
                let _ = session::write_message(&mut link, &status);
                self.log(ReceiveEvent::Answered {
                    peer,
                    migration_id: q.migration_id,
                    status: word,
                });
            }
            Ok(Opening::Migration(hello)) => self.migration(link, peer, hello),
            Ok(Opening::Lane(lane)) => self.lane_arrived(link, peer, lane),
        }
    }

    fn refused(&self, peer: Option<SocketAddr>, why: &str) {
        self.log(ReceiveEvent::Refused {
            peer,
            why: why.to_string(),
        });
    }
}
