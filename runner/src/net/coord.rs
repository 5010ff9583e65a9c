//! Synchronized Arrival across processes: `pagewire coordinator` holds a
//! [`SynchronizedArrival`] group per name; every `send --group NAME` reports each iteration
//! to it and migrates on until the group says stop.
//!
//! The protocol is one JSON object per line over TCP. The sender opens with
//! `{"join":{"group":"web","name":"vm-a","members":2}}` and gets `{"joined":ID}`; then per
//! iteration `{"report":{...IterationReport...},"own":"continue"|"stop"}`, answered by
//! `{"decision":"continue"|"hold"|"stop"}`. A closed connection leaves the group, so a
//! failed sender never holds the others back. A group is created with all `members` slots
//! taken, so nobody is let go before every member has joined and become ready (or was held
//! `max_hold` iterations).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use pagewire::policy::{Decision, GroupDecision, IterationReport, SynchronizedArrival};
use serde::{Deserialize, Serialize};

/// Largest group.
pub const MAX_MEMBERS: usize = 16;

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
        let group = g.entry(j.group.clone()).or_insert_with(|| {
            let mut arrival = SynchronizedArrival::new();
            for _ in 0..j.members {
                arrival.join();
            }
            Group {
                arrival,
                members: j.members,
                next: 0,
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
                    gr.next >= gr.members && gr.arrival.all_ready()
                }
                None => false,
            };
            // forget a finished group so its name can be used again
            if done {
                g.remove(group);
            }
        }
    }

    /// Serves one sender until it disconnects.
    pub fn serve_conn(&self, stream: TcpStream) -> Result<()> {
        stream.set_nodelay(true)?;
        let mut w = stream.try_clone()?;
        let mut joined: Option<(String, usize)> = None;
        let r = (|| -> Result<()> {
            for line in BufReader::new(stream).lines() {
                let line = line?;
                let resp = match serde_json::from_str::<Request>(&line) {
                    Ok(Request::Join(j)) if joined.is_none() => match self.join(&j) {
                        Ok(id) => {
                            joined = Some((j.group.clone(), id));
                            Response::Joined(id)
                        }
                        Err(e) => Response::Error(e.to_string()),
                    },
                    Ok(Request::Report { report, own }) => match &joined {
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
                };
                w.write_all(line_of(&resp)?.as_bytes())?;
            }
            Ok(())
        })();
        if let Some((g, id)) = joined {
            self.leave(&g, id);
        }
        r
    }
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

/// Accepts senders forever (one thread each).
pub fn serve(listener: TcpListener) -> Result<()> {
    let c = Arc::new(Coordinator::default());
    for s in listener.incoming() {
        let s = s?;
        let c = c.clone();
        std::thread::spawn(move || {
            let _ = c.serve_conn(s);
        });
    }
    Ok(())
}

/// A sender's connection to the coordinator (the live layer makes it the migration's
/// `Gate`).
pub struct GroupGate {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl GroupGate {
    /// Connects and joins group `group` of `members` members as `name`.
    pub fn join(addr: &str, group: &str, name: &str, members: usize) -> Result<Self> {
        let s = TcpStream::connect(addr)
            .with_context(|| format!("connecting to the coordinator {addr}"))?;
        s.set_nodelay(true)?;
        let mut g = GroupGate {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
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
        self.writer
            .write_all(line_of(req)?.as_bytes())
            .context("talking to the coordinator")?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("the coordinator closed the connection");
        }
        Ok(serde_json::from_str(&line)?)
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
