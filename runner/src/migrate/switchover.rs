//! The destination's one decision per migration: start the guest (the source committed) or
//! abort (it did not, or it asked before its commit arrived). The decision is made once,
//! under one lock, and is the answer to every later status query, so the source and the
//! destination never both run the guest (`docs/RUNNER.md`, *Switchover*).

use std::collections::VecDeque;
use std::sync::Mutex;

use anyhow::{bail, Result};

use super::session::{Reply, Status};

/// Migrations remembered (a receiver serves one at a time; this keeps the answers to late
/// status queries about earlier attempts).
const REMEMBERED: usize = 64;

/// Where one migration stands at the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Arriving, or ready and waiting for the commit.
    Pending,
    /// The guest was started.
    Started(Reply),
    /// It never started and never will.
    Aborted(String),
}

#[derive(Debug)]
struct Entry {
    id: u64,
    state: State,
    /// The source has learned the outcome (it said done, or asked).
    told: bool,
}

/// The outcomes of the migrations a destination has seen.
#[derive(Debug, Default)]
pub struct Outcomes {
    book: Mutex<VecDeque<Entry>>,
}

impl Outcomes {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers migration `id`; an id seen before is refused (a replayed session).
    pub fn begin(&self, id: u64) -> Result<()> {
        let mut book = self.lock();
        if book.iter().any(|e| e.id == id) {
            bail!("migration {id:016x} was seen here before: refused");
        }
        if book.len() == REMEMBERED {
            book.pop_front();
        }
        book.push_back(Entry {
            id,
            state: State::Pending,
            told: false,
        });
        Ok(())
    }

    /// Runs `start` (which starts the guest) unless migration `id` was aborted; both under
    /// the lock, so a status query sees the migration either before the decision or after
    /// the guest runs. A failed `start` aborts it.
    pub fn start(&self, id: u64, start: impl FnOnce() -> Result<Reply>) -> Result<Reply> {
        let mut book = self.lock();
        let Some(e) = book.iter_mut().find(|e| e.id == id) else {
            bail!("migration {id:016x} is not known here");
        };
        match &e.state {
            State::Pending => {}
            State::Aborted(why) => bail!("migration {id:016x} was aborted before: {why}"),
            State::Started(_) => bail!("migration {id:016x} has already started"),
        }
        match start() {
            Ok(reply) => {
                e.state = State::Started(reply.clone());
                Ok(reply)
            }
            Err(err) => {
                e.state = State::Aborted(format!("the guest did not start: {err:#}"));
                Err(err)
            }
        }
    }

    /// Aborts migration `id` unless it started; returns where it ends up.
    pub fn abort(&self, id: u64, why: &str) -> Status {
        let mut book = self.lock();
        match book.iter_mut().find(|e| e.id == id) {
            Some(e) => {
                if e.state == State::Pending {
                    e.state = State::Aborted(why.to_string());
                }
                status_of(&e.state)
            }
            None => Status::Unknown,
        }
    }

    /// The answer to a source's status query. A migration still pending is aborted first:
    /// the source asks only once it has stopped waiting, and a commit that arrives after
    /// the answer must not start the guest.
    pub fn query(&self, id: u64) -> Status {
        let mut book = self.lock();
        match book.iter_mut().find(|e| e.id == id) {
            Some(e) => {
                if e.state == State::Pending {
                    e.state = State::Aborted(
                        "the source asked for the outcome before its commit arrived".into(),
                    );
                }
                e.told = true;
                status_of(&e.state)
            }
            None => Status::Unknown,
        }
    }

    /// Notes that the source has heard the outcome of migration `id`.
    pub fn mark_told(&self, id: u64) {
        if let Some(e) = self.lock().iter_mut().find(|e| e.id == id) {
            e.told = true;
        }
    }

    /// True once the source has heard the outcome of migration `id`.
    pub fn told(&self, id: u64) -> bool {
        self.lock().iter().any(|e| e.id == id && e.told)
    }
}

fn status_of(s: &State) -> Status {
    match s {
        State::Pending => Status::Unknown,
        State::Started(r) => Status::Started(r.clone()),
        State::Aborted(why) => Status::Aborted(why.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<Reply> {
        Ok(Reply {
            ok: true,
            ..Reply::default()
        })
    }

    #[test]
    fn the_decision_is_made_once() {
        let o = Outcomes::default();
        o.begin(1).unwrap();
        assert!(o.begin(1).is_err(), "a replayed id");
        assert!(o.start(1, ok).unwrap().ok);
        // started: an abort, a second start and a query all see it started
        assert!(matches!(o.abort(1, "late"), Status::Started(_)));
        assert!(o.start(1, ok).is_err());
        assert!(!o.told(1));
        assert!(matches!(o.query(1), Status::Started(_)));
        assert!(o.told(1));
        assert_eq!(o.query(99), Status::Unknown);
    }

    #[test]
    fn a_query_before_the_commit_aborts_and_the_commit_then_starts_nothing() {
        let o = Outcomes::default();
        o.begin(2).unwrap();
        assert!(matches!(o.query(2), Status::Aborted(_)));
        let mut started = false;
        let e = o
            .start(2, || {
                started = true;
                ok()
            })
            .unwrap_err();
        assert!(!started, "{e}");
        assert!(format!("{e}").contains("aborted"), "{e}");
    }

    #[test]
    fn a_failed_start_is_an_abort() {
        let o = Outcomes::default();
        o.begin(3).unwrap();
        assert!(o.start(3, || bail!("KVM said no")).is_err());
        match o.query(3) {
            Status::Aborted(why) => assert!(why.contains("KVM said no"), "{why}"),
            s => panic!("{s:?}"),
        }
    }
}
