//! The guest's serial console, read as it arrives: heartbeats, ticks, the workload's own
//! checks, and when each line came (recorded on arrival, so the gaps between ticks are what
//! the guest's outside world saw, to the reader thread's wake-up).
//!
//! Bytes come in pieces of any size; a line counts once its newline arrives. Anything that
//! is not a marker (kernel messages, a line cut by a migration, bytes that are not UTF-8)
//! is kept as text and otherwise ignored, except that a `PAGEWIRE-CHECK` line that is not a
//! clean `ok <round>` counts as a failure: a check the watcher cannot read is not a pass.

use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::initramfs::{CHECK, HEARTBEAT, READY, TICK};

/// Longest line kept whole; a longer run without a newline is cut into lines of this size.
pub const MAX_LINE: usize = 4096;

/// One heartbeat (or passed check): the workload round and when its line arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Beat {
    pub round: u64,
    pub at: Instant,
}

/// A `PAGEWIRE-CHECK FAIL` line, or a check line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// The round, when the line says it.
    pub round: Option<u64>,
    /// The whole line as it came.
    pub line: String,
}

/// What one console line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    Ready,
    Heartbeat(u64),
    Tick(u64),
    CheckOk(u64),
    CheckFail(CheckFailure),
    /// Anything else.
    Other,
}

/// Reads one line. Markers are found anywhere in the line, since a line cut by the
/// migration or interleaved with a kernel message may carry bytes before them.
pub fn parse_line(line: &str) -> Mark {
    if let Some(at) = line.find(CHECK.trim_end()) {
        let rest = &line[at + CHECK.trim_end().len()..];
        let mut words = rest.split_whitespace();
        let verdict = words.next();
        let round = words.next().and_then(|w| w.parse::<u64>().ok());
        return match (verdict, round) {
            (Some("ok"), Some(r)) if words.next().is_none() => Mark::CheckOk(r),
            _ => Mark::CheckFail(CheckFailure {
                round,
                line: line.to_string(),
            }),
        };
    }
    if let Some(at) = line.find(HEARTBEAT) {
        let digits = line[at + HEARTBEAT.len()..].trim_end();
        if let Ok(r) = digits.parse::<u64>() {
            return Mark::Heartbeat(r);
        }
    }
    if let Some(at) = line.find(TICK) {
        if let Ok(n) = line[at + TICK.len()..].trim_end().parse::<u64>() {
            return Mark::Tick(n);
        }
    }
    if line.contains(READY) {
        return Mark::Ready;
    }
    Mark::Other
}

/// Splits bytes that arrive in pieces into lines; a carriage return before the newline is
/// dropped, bytes that are not UTF-8 are replaced.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `bytes`, calling `line` with each line completed by them.
    pub fn push(&mut self, bytes: &[u8], mut line: impl FnMut(String)) {
        for &b in bytes {
            if b == b'\n' {
                let mut l = std::mem::take(&mut self.partial);
                if l.last() == Some(&b'\r') {
                    l.pop();
                }
                line(String::from_utf8_lossy(&l).into_owned());
            } else {
                self.partial.push(b);
                if self.partial.len() >= MAX_LINE {
                    line(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned());
                }
            }
        }
    }

    /// The bytes of an unfinished line.
    pub fn pending(&self) -> &[u8] {
        &self.partial
    }
}

/// Everything read so far.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every complete line but the ticks, with its arrival time.
    pub lines: Vec<(Instant, String)>,
    pub ready: Option<Instant>,
    pub heartbeats: Vec<Beat>,
    /// Kept apart from `lines`: 20 a second would bury everything else in an error's tail.
    pub ticks: Vec<Beat>,
    pub checks_ok: Vec<Beat>,
    pub failures: Vec<CheckFailure>,
    /// The console ended (QEMU exited or closed it).
    pub closed: bool,
}

impl Seen {
    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let from = self.lines.len().saturating_sub(n);
        self.lines[from..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why a wait ended without what it waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    Timeout {
        what: String,
        after: Duration,
        tail: String,
    },
    Closed {
        what: String,
        tail: String,
    },
}

impl fmt::Display for WaitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WaitError::Timeout { what, after, tail } => write!(
                f,
                "the guest's console showed no {what} within {:.1} s; its last lines:\n{tail}",
                after.as_secs_f64()
            ),
            WaitError::Closed { what, tail } => write!(
                f,
                "the guest's console ended (QEMU exited) before {what}; its last lines:\n{tail}"
            ),
        }
    }
}

impl std::error::Error for WaitError {}

/// A console being read: cheap to clone, shared between the reader and any watcher.
#[derive(Debug, Clone, Default)]
pub struct Console {
    shared: Arc<(Mutex<(LineSplitter, Seen)>, Condvar)>,
}

impl Console {
    pub fn new() -> Console {
        Console::default()
    }

    /// Takes `bytes` that arrived at `at` (the reader thread calls this).
    pub fn feed(&self, bytes: &[u8], at: Instant) {
        let mut g = self.lock();
        let (splitter, seen) = &mut *g;
        splitter.push(bytes, |line| {
            match parse_line(&line) {
                Mark::Tick(round) => return seen.ticks.push(Beat { round, at }),
                Mark::Ready => seen.ready = seen.ready.or(Some(at)),
                Mark::Heartbeat(round) => seen.heartbeats.push(Beat { round, at }),
                Mark::CheckOk(round) => seen.checks_ok.push(Beat { round, at }),
                Mark::CheckFail(f) => seen.failures.push(f),
                Mark::Other => {}
            }
            seen.lines.push((at, line));
        });
        drop(g);
        self.shared.1.notify_all();
    }

    /// The console ended: waits fail at once from now on.
    pub fn close(&self) {
        self.lock().1.closed = true;
        self.shared.1.notify_all();
    }

    /// Runs `f` on what was seen so far.
    pub fn with<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.lock().1)
    }

    pub fn heartbeats(&self) -> Vec<Beat> {
        self.with(|s| s.heartbeats.clone())
    }

    /// The [`TICK`]s so far: what times a pause (see [`guest_pause`]).
    pub fn ticks(&self) -> Vec<Beat> {
        self.with(|s| s.ticks.clone())
    }

    pub fn last_heartbeat(&self) -> Option<Beat> {
        self.with(|s| s.heartbeats.last().copied())
    }

    pub fn checks_ok(&self) -> Vec<Beat> {
        self.with(|s| s.checks_ok.clone())
    }

    /// Every `PAGEWIRE-CHECK FAIL` (and unreadable check line) so far.
    pub fn failures(&self) -> Vec<CheckFailure> {
        self.with(|s| s.failures.clone())
    }

    /// The whole console text so far.
    pub fn text(&self) -> String {
        self.with(|s| s.tail(usize::MAX))
    }

    /// Waits until `f` returns `Some`, at most `timeout`; `what` names it in the error.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Seen) -> Option<T>,
    ) -> Result<T, WaitError> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if let Some(t) = f(&g.1) {
                return Ok(t);
            }
            if g.1.closed {
                return Err(WaitError::Closed {
                    what: what.to_string(),
                    tail: g.1.tail(20),
                });
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(WaitError::Timeout {
                    what: what.to_string(),
                    after: timeout,
                    tail: g.1.tail(20),
                });
            }
            g = self
                .shared
                .1
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the workload's READY line.
    pub fn wait_ready(&self, timeout: Duration) -> Result<Instant, WaitError> {
        self.wait_for(READY, timeout, |s| s.ready)
    }

    /// Waits until `count` heartbeats have arrived after `after`, and returns them.
    pub fn wait_heartbeats_after(
        &self,
        after: Instant,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Beat>, WaitError> {
        let what = format!("{count} heartbeat(s)");
        self.wait_for(&what, timeout, |s| {
            let new: Vec<Beat> = s
                .heartbeats
                .iter()
                .filter(|b| b.at > after)
                .take(count)
                .copied()
                .collect();
            (new.len() == count).then_some(new)
        })
    }

    fn lock(&self) -> MutexGuard<'_, (LineSplitter, Seen)> {
        // A panicking watcher leaves whole lines behind: the state stays usable.
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The longest time between two heartbeats that arrived one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub before: Beat,
    pub after: Beat,
}

impl Gap {
    pub fn length(&self) -> Duration {
        self.after.at.saturating_duration_since(self.before.at)
    }
}

/// The pause the guest saw across a migration: the source's beats (ticks, or heartbeats for
/// a coarser figure) from the last one before `from` on, then the destination's, in order of
/// arrival; the largest gap between neighbours. `None` with fewer than two beats.
pub fn guest_pause(source: &[Beat], destination: &[Beat], from: Instant) -> Option<Gap> {
    let start = source.iter().rposition(|b| b.at <= from).unwrap_or(0);
    let mut beats: Vec<Beat> = source[start..].to_vec();
    beats.extend_from_slice(destination);
    beats.sort_by_key(|b| b.at);
    beats
        .windows(2)
        .map(|w| Gap {
            before: w[0],
            after: w[1],
        })
        .max_by_key(Gap::length)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_markers_anywhere_in_a_line() {
        assert_eq!(parse_line("PAGEWIRE-HEARTBEAT 17"), Mark::Heartbeat(17));
        assert_eq!(
            parse_line("\0\u{fffd}PAGEWIRE-HEARTBEAT 18 "),
            Mark::Heartbeat(18)
        );
        assert_eq!(parse_line("PAGEWIRE-CHECK ok 9"), Mark::CheckOk(9));
        assert_eq!(parse_line("PAGEWIRE-GUEST-READY"), Mark::Ready);
        assert_eq!(parse_line("PAGEWIRE-HEARTBEAT"), Mark::Other);
        assert_eq!(parse_line("\u{fffd}PAGEWIRE-TICK 412"), Mark::Tick(412));
        assert_eq!(parse_line("PAGEWIRE-TICK 4x"), Mark::Other);
        assert_eq!(parse_line("PAGEWIRE-HEARTBEAT 1x"), Mark::Other);
        assert_eq!(parse_line("[    0.000000] Linux version 6.1"), Mark::Other);
        let fail = "PAGEWIRE-CHECK FAIL 12 w4 from round 4: md5 aa, written bb";
        assert_eq!(
            parse_line(fail),
            Mark::CheckFail(CheckFailure {
                round: Some(12),
                line: fail.into()
            })
        );
        // A check line that is not a clean pass is a failure.
        for odd in [
            "PAGEWIRE-CHECK ok",
            "PAGEWIRE-CHECK ok 3 extra",
            "PAGEWIRE-CHECK o",
        ] {
            assert!(matches!(parse_line(odd), Mark::CheckFail(_)), "{odd}");
        }
    }

    #[test]
    fn lines_split_across_pieces_and_garbage_are_handled() {
        let c = Console::new();
        let t0 = Instant::now();
        let t = |ms| t0 + Duration::from_millis(ms);
        c.feed(b"\xff\xfe garbage\r\nPAGEWIRE-HEART", t(1));
        assert!(c.heartbeats().is_empty(), "half a line is not a heartbeat");
        c.feed(b"BEAT 5\nPAGEWIRE-CHECK ok 6\r\nPAGEWIRE-HE", t(2));
        c.feed(
            b"ARTBEAT 6\nPAGEWIRE-TICK 40\n\n\0\0\nPAGEWIRE-CHECK FAIL 7 w7",
            t(3),
        );
        assert_eq!(
            c.ticks(),
            [Beat {
                round: 40,
                at: t(3)
            }]
        );
        assert_eq!(
            c.heartbeats(),
            [Beat { round: 5, at: t(2) }, Beat { round: 6, at: t(3) }]
        );
        assert_eq!(c.checks_ok(), [Beat { round: 6, at: t(2) }]);
        assert!(c.failures().is_empty(), "the FAIL line is not complete yet");
        c.feed(b" from round -1\n", t(4));
        assert_eq!(c.failures().len(), 1);
        assert_eq!(c.failures()[0].round, Some(7));
        assert!(c
            .text()
            .starts_with("\u{fffd}\u{fffd} garbage\nPAGEWIRE-HEARTBEAT 5"));
        assert!(!c.text().contains("TICK"), "ticks stay out of the text");
        // A flood without newlines is cut, not kept growing.
        c.feed(&vec![b'x'; 3 * MAX_LINE + 5], t(5));
        let longest = c.with(|s| s.lines.iter().map(|(_, l)| l.len()).max().unwrap());
        assert_eq!(longest, MAX_LINE);
        assert_eq!(c.last_heartbeat().unwrap().round, 6);
    }

    #[test]
    fn waits_end_on_arrival_timeout_or_close() {
        let c = Console::new();
        let before = Instant::now();
        let feeder = {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 1..=3 {
                    std::thread::sleep(Duration::from_millis(20));
                    c.feed(
                        format!("PAGEWIRE-HEARTBEAT {i}\n").as_bytes(),
                        Instant::now(),
                    );
                }
            })
        };
        let beats = c
            .wait_heartbeats_after(before, 3, Duration::from_secs(10))
            .unwrap();
        assert_eq!(beats.iter().map(|b| b.round).collect::<Vec<_>>(), [1, 2, 3]);
        feeder.join().unwrap();
        let e = c
            .wait_heartbeats_after(Instant::now(), 1, Duration::from_millis(50))
            .unwrap_err();
        assert!(matches!(e, WaitError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("PAGEWIRE-HEARTBEAT 3"), "{e}");
        c.close();
        let e = c.wait_ready(Duration::from_secs(10)).unwrap_err();
        assert!(matches!(e, WaitError::Closed { .. }), "{e}");
    }

    #[test]
    fn the_pause_spans_the_last_source_and_first_destination_heartbeat() {
        let t0 = Instant::now();
        let b = |round, ms| Beat {
            round,
            at: t0 + Duration::from_millis(ms),
        };
        let source = [b(1, 0), b(2, 100), b(3, 200), b(4, 300)];
        let destination = [b(5, 900), b(6, 1000)];
        let gap = guest_pause(&source, &destination, t0 + Duration::from_millis(150)).unwrap();
        assert_eq!((gap.before.round, gap.after.round), (4, 5));
        assert_eq!(gap.length(), Duration::from_millis(600));
        // Source gaps before `from` do not count.
        let source = [b(1, 0), b(2, 5000), b(3, 5100)];
        let gap = guest_pause(&source, &[b(4, 5300)], t0 + Duration::from_millis(5050)).unwrap();
        assert_eq!((gap.before.round, gap.after.round), (3, 4));
        assert!(guest_pause(&[b(1, 0)], &[], t0).is_none());
    }
}
