//! Synchronized Arrival across processes: `pagewire coordinator` holds a
//! [`SynchronizedArrival`] group per name; every `send --group NAME` reports each iteration
//! to it and migrates on until the group says stop.
//!
//! The coordinator takes the same mutual TLS as `receive` (it holds the receiver's
//! certificate; only the sender's certificate may join), on the accept loop of
//! [`super::listen`]: handshakes under a deadline, bounded connections, EMFILE survived. A
//! line is at most [`MAX_LINE`] bytes (a longer one closes its connection), a member silent
//! for longer than the idle deadline is dropped, and there are at most [`MAX_GROUPS`]
//! groups; a group whose members have all left is forgotten.
//!
//! The protocol is one JSON object per line over TLS. The sender opens with
//! `{"join":{"group":"web","name":"vm-a","members":2}}` and gets `{"joined":ID}`; then per
//! iteration `{"report":{...IterationReport...},"own":"continue"|"stop"}`, answered by
//! `{"decision":"continue"|"hold"|"stop"}`. A closed connection leaves the group, so a
//! failed sender never holds the others back. A group is created with all `members` slots
//! taken, so nobody is let go before every member has joined and become ready (or was held
//! `max_hold` iterations).

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pagewire::policy::{Decision, GroupDecision, IterationReport, SynchronizedArrival};
use rustls::{ClientConfig, ServerConfig};
use serde::{Deserialize, Serialize};

use super::deadline::{connect_by, Link, Waits};
use super::listen::{self, ListenOptions, Server, Service};
use super::tls;

/// Largest group.
pub const MAX_MEMBERS: usize = 16;
/// Most groups at once.
pub const MAX_GROUPS: usize = 64;
/// Longest line either way (a report is about 300 bytes).
pub const MAX_LINE: usize = 4096;

/// Joining a group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Join {
    /// Group name.
    pub group: String,
    /// This member's name (for logs).
    pub name: String,
    /// How many members the group has.
    pub members: usize,
}

/// Sender to coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Request {
    Join(Join),
    Report {
        report: IterationReport,
        own: String,
    },
}

/// Coordinator to sender.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Joined(usize),
    Decision(String),
    Error(String),
}

struct Group {
    arrival: SynchronizedArrival<MAX_MEMBERS>,
    members: usize,
    next: usize,
    /// Members connected now.
    connected: usize,
}

/// The coordinator's state: groups by name.
#[derive(Default)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
}

impl Coordinator {
    fn join(&self, j: &Join) -> Result<usize> {
        if j.members == 0 || j.members > MAX_MEMBERS {
            bail!("a group has 1 to {MAX_MEMBERS} members");
        }
        let mut g = self.groups.lock().map_err(|_| anyhow!("poisoned"))?;
        if !g.contains_key(&j.group) && g.len() >= MAX_GROUPS {
            bail!("{MAX_GROUPS} groups are under way here: try again once one has finished");
        }
        let group = g.entry(j.group.clone()).or_insert_with(|| {
            let mut arrival = SynchronizedArrival::new();
            for _ in 0..j.members {
                arrival.join();
            }
            Group {
                arrival,
                members: j.members,
                next: 0,
                connected: 0,
            }
        });
        if group.members != j.members {
            bail!(
                "group {} has {} members, not {}",
                j.group,
                group.members,
                j.members
            );
        }
        if group.next >= group.members {
            bail!("group {} is full", j.group);
        }
        group.next += 1;
        group.connected += 1;
        Ok(group.next - 1)
    }

    fn report(&self, group: &str, id: usize, own: Decision, r: &IterationReport) -> GroupDecision {
        let mut g = match self.groups.lock() {
            Ok(g) => g,
            Err(_) => return GroupDecision::StopAndCopy,
        };
        match g.get_mut(group) {
            Some(gr) => gr.arrival.report(id, own, r),
            None => GroupDecision::StopAndCopy,
        }
    }

    fn leave(&self, group: &str, id: usize) {
        if let Ok(mut g) = self.groups.lock() {
            let done = match g.get_mut(group) {
                Some(gr) => {
                    gr.arrival.leave(id);
                    gr.connected = gr.connected.saturating_sub(1);
                    gr.connected == 0 || (gr.next >= gr.members && gr.arrival.all_ready())
                }
                None => false,
            };
            // forget a finished or deserted group so its name can be used again
            if done {
                g.remove(group);
            }
        }
    }

    /// Serves one sender until it disconnects, goes silent for `idle`, or sends a line
    /// longer than `max_line`. The join comes under the link's current waits (the
    /// handshake deadline).
    pub fn serve_conn(&self, link: Box<dyn Link>, idle: Duration, max_line: usize) -> Result<()> {
        let mut r = BufReader::new(link);
        let mut joined: Option<(String, usize)> = None;
        let res = (|| -> Result<()> {
            while let Some(line) = read_line(&mut r, max_line)? {
                let resp = self.answer(&line, &mut joined);
                if joined.is_some() {
                    r.get_mut().set_waits(Waits::idle(idle))?;
                }
                r.get_mut().write_all(line_of(&resp)?.as_bytes())?;
                r.get_mut().flush()?;
            }
            Ok(())
        })();
        if let Some((g, id)) = joined {
            self.leave(&g, id);
        }
        res
    }

    /// The answer to one request line.
    fn answer(&self, line: &str, joined: &mut Option<(String, usize)>) -> Response {
        match serde_json::from_str::<Request>(line) {
            Ok(Request::Join(j)) if joined.is_none() => match self.join(&j) {
                Ok(id) => {
                    *joined = Some((j.group.clone(), id));
                    Response::Joined(id)
                }
                Err(e) => Response::Error(e.to_string()),
            },
            Ok(Request::Report { report, own }) => match joined {
                Some((g, id)) => {
                    let own = if own == "stop" {
                        Decision::StopAndCopy
                    } else {
                        Decision::Continue
                    };
                    let d = self.report(g, *id, own, &report);
                    Response::Decision(decision_word(d).into())
                }
                None => Response::Error("join a group first".into()),
            },
            Ok(Request::Join(_)) => Response::Error("already joined".into()),
            Err(e) => Response::Error(format!("bad request: {e}")),
        }
    }
}

/// Reads one line of at most `max` bytes; `None` at the end of the stream.
fn read_line<R: BufRead>(r: &mut R, max: usize) -> Result<Option<String>> {
    let mut buf = Vec::new();
    r.by_ref()
        .take(max as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if buf.is_empty() {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if buf.len() > max {
            bail!("a line longer than {max} bytes: closed");
        }
        bail!("the connection ended inside a line");
    }
    Ok(Some(
        String::from_utf8(buf).context("a line that is not UTF-8")?,
    ))
}

/// One message as one line, written in one call (no Nagle stall between its parts).
fn line_of<T: Serialize>(m: &T) -> Result<String> {
    let mut s = serde_json::to_string(m)?;
    s.push('\n');
    Ok(s)
}

fn decision_word(d: GroupDecision) -> &'static str {
    match d {
        GroupDecision::Continue => "continue",
        GroupDecision::Hold => "hold",
        GroupDecision::StopAndCopy => "stop",
    }
}

/// How the coordinator serves.
#[derive(Clone)]
pub struct CoordinatorConfig {
    /// Mutual TLS (`None`: plain TCP, for tests of the protocol itself).
    pub tls: Option<Arc<ServerConfig>>,
    /// Connections at once, and the handshake deadline.
    pub listen: ListenOptions,
    /// A member silent this long is dropped (an iteration of a large VM on a slow link can
    /// take many minutes).
    pub idle: Duration,
    /// Longest line.
    pub max_line: usize,
    /// Where refusals and pauses are reported (stderr by default).
    pub log: Arc<dyn Fn(&str) + Send + Sync>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            tls: None,
            listen: ListenOptions::default(),
            idle: Duration::from_secs(3600),
            max_line: MAX_LINE,
            log: Arc::new(|what| {
                let _ = writeln!(io::stderr(), "coordinator: {what}");
            }),
        }
    }
}

/// The coordinator on the accept loop.
struct Desk {
    coordinator: Coordinator,
    cfg: CoordinatorConfig,
}

impl Service for Desk {
    fn serve(&self, link: Box<dyn Link>, peer: SocketAddr) {
        if let Err(e) = self
            .coordinator
            .serve_conn(link, self.cfg.idle, self.cfg.max_line)
        {
            (self.cfg.log)(&format!("{peer}: {e:#}"));
        }
    }

    fn refused(&self, peer: Option<SocketAddr>, why: &str) {
        match peer {
            Some(p) => (self.cfg.log)(&format!("refused {p}: {why}")),
            None => (self.cfg.log)(why),
        }
    }
}

/// Serves senders on `listener` until the returned server is stopped.
pub fn serve(listener: TcpListener, cfg: CoordinatorConfig) -> Result<Server> {
    let desk = Arc::new(Desk {
        coordinator: Coordinator::default(),
        cfg: cfg.clone(),
    });
    listen::serve(listener, cfg.tls, cfg.listen, desk).context("starting the coordinator")
}

/// A sender's connection to the coordinator (the live layer makes it the migration's
/// `Gate`).
pub struct GroupGate {
    link: BufReader<Box<dyn Link>>,
}

impl GroupGate {
    /// Connects (over mutual TLS unless `tls` is `None`) and joins group `group` of
    /// `members` members as `name`; connecting and every answer must come within `timeout`.
    pub fn join(
        addr: &str,
        tls: Option<Arc<ClientConfig>>,
        timeout: Duration,
        group: &str,
        name: &str,
        members: usize,
    ) -> Result<Self> {
        let by = Instant::now() + timeout;
        let s = connect_by(addr, by)
            .with_context(|| format!("connecting to the coordinator {addr}"))?;
        s.set_nodelay(true)?;
        let mut link: Box<dyn Link> = Box::new(super::TimedTcp::new(s, Waits::until(by)));
        if let Some(t) = tls {
            link = Box::new(
                tls::connect(link, t)
                    .with_context(|| format!("TLS with the coordinator {addr}"))?,
            );
        }
        link.set_waits(Waits::idle(timeout))?;
        let mut g = GroupGate {
            link: BufReader::new(link),
        };
        let req = Request::Join(Join {
            group: group.into(),
            name: name.into(),
            members,
        });
        match g.ask(&req)? {
            Response::Joined(_) => Ok(g),
            Response::Error(e) => bail!("the coordinator refused: {e}"),
            other => bail!("unexpected answer from the coordinator: {other:?}"),
        }
    }

    fn ask(&mut self, req: &Request) -> Result<Response> {
        let w = self.link.get_mut();
        w.write_all(line_of(req)?.as_bytes())
            .and_then(|()| w.flush())
            .context("talking to the coordinator")?;
        match read_line(&mut self.link, MAX_LINE).context("no answer from the coordinator")? {
            Some(line) => Ok(serde_json::from_str(&line)?),
            None => bail!("the coordinator closed the connection"),
        }
    }
}

impl GroupGate {
    /// Reports an iteration with this member's own decision `own`; returns the group's
    /// decision and its word for the report ("continue", "hold", "stop").
    pub fn decide(
        &mut self,
        own: Decision,
        r: &IterationReport,
    ) -> Result<(Decision, &'static str)> {
        let req = Request::Report {
            report: *r,
            own: if own == Decision::StopAndCopy {
                "stop"
            } else {
                "continue"
            }
            .into(),
        };
        match self.ask(&req)? {
            Response::Decision(d) => Ok(match d.as_str() {
                "stop" => (Decision::StopAndCopy, "stop"),
                "hold" => (Decision::Continue, "hold"),
                _ => (Decision::Continue, "continue"),
            }),
            Response::Error(e) => bail!("the coordinator refused: {e}"),
            other => bail!("unexpected answer from the coordinator: {other:?}"),
        }
    }
}
