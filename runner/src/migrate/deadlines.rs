//! How long either side of a migration waits for the other, and the errors that say which
//! wait expired and what to change. Nothing waits for ever: a stalled pre-copy ends with
//! the source running, and the source's pause is bounded (see `docs/RUNNER.md`, *Deadlines*).

use std::time::Duration;

use crate::net::is_timeout;

/// The deadlines of a migration (both sides take the same struct).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Connecting, the TLS handshake and the hello: a peer that does not get that far
    /// within this time is cut off.
    pub handshake: Duration,
    /// Longest wait with no byte moving while the stream flows (pre-copy, and the stream
    /// at the destination): a stalled link or peer fails the migration after this long.
    pub progress: Duration,
    /// The switchover's margin: the source's pause lasts at most the time its last pages
    /// need at the rate measured so far plus this; the destination waits this long for the
    /// source's commit, and the source this long for the destination's "started".
    pub switchover: Duration,
    /// Status queries a committed source makes, on new connections, when it did not hear
    /// whether the guest started at the destination.
    pub status_attempts: u32,
}

impl Default for Deadlines {
    /// 10 s for the handshake, 30 s of no progress, a 10 s switchover margin, 5 status
    /// queries (how these were chosen: `docs/RUNNER.md`, *Deadlines*).
    fn default() -> Self {
        Deadlines {
            handshake: Duration::from_secs(10),
            progress: Duration::from_secs(30),
            switchover: Duration::from_secs(10),
            status_attempts: 5,
        }
    }
}

/// Which deadline a wait was under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// Connecting, TLS, the hello.
    Handshake,
    /// The stream flowing.
    Progress,
    /// The pause and the switchover.
    Switchover,
}

impl Deadlines {
    /// `e` with a first line naming the deadline, when it is an expired wait; else `e`.
    pub fn explain(&self, which: Deadline, e: anyhow::Error) -> anyhow::Error {
        if !is_timeout(&e) {
            return e;
        }
        let what = match which {
            Deadline::Handshake => format!(
                "the handshake deadline expired: the peer did not connect, authenticate and \
                 say hello within {} (--handshake-timeout)",
                secs(self.handshake)
            ),
            Deadline::Progress => format!(
                "the progress deadline expired: no byte moved for {} (the link or the peer \
                 stalled; --progress-timeout raises it for a link that slow)",
                secs(self.progress)
            ),
            Deadline::Switchover => format!(
                "the switchover deadline expired: the other side did not answer within {} \
                 (--switchover-timeout; the source's pause may also take the time its last \
                 pages need)",
                secs(self.switchover)
            ),
        };
        e.context(what)
    }
}

/// "1.5 s".
pub fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_expired_waits_are_named() {
        let d = Deadlines::default();
        let timeout =
            anyhow::Error::new(std::io::Error::new(std::io::ErrorKind::TimedOut, "no byte"))
                .context("sending pages");
        let e = format!("{:#}", d.explain(Deadline::Progress, timeout));
        assert!(e.starts_with("the progress deadline expired"), "{e}");
        assert!(
            e.contains("--progress-timeout") && e.contains("sending pages"),
            "{e}"
        );
        let other = anyhow::anyhow!("bad frame");
        let e = format!("{:#}", d.explain(Deadline::Progress, other));
        assert_eq!(e, "bad frame");
    }
}
