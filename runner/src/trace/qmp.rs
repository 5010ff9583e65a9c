//! A small client for QMP, the QEMU Machine Protocol: JSON lines over a unix socket (or TCP).
//!
//! Enough for `pagewire trace capture`: read the greeting, enter command mode with
//! `qmp_capabilities`, then run one command at a time and return its `return` value. QEMU
//! interleaves asynchronous events (`{"event": "STOP", ...}`) with replies; they are set
//! aside with QEMU's own timestamps ([`Qmp::take_events`]), the most recent [`EVENTS_KEPT`].
//! Every read has a deadline, so a QEMU that hangs or dies never hangs the tool: after a
//! timeout or a lost connection the client refuses further commands, because the reply it
//! waited for may still arrive and be mistaken for the next one.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

/// Default deadline for one command's reply (and for the greeting).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Events kept until taken: a session nobody asks for events keeps only the latest.
pub const EVENTS_KEPT: usize = 256;

/// An asynchronous event, as QEMU stamped it.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    /// `STOP`, `RESUME`, `MIGRATION`, ...
    pub name: String,
    /// When QEMU emitted it (its `timestamp`, wall clock), if it said.
    pub at: Option<SystemTime>,
    /// Its `data`, or null.
    pub data: Value,
}

impl QmpEvent {
    /// The event in `msg`, if it is one.
    fn from_message(msg: &Value) -> Option<Self> {
        let name = msg.get("event")?.as_str()?.to_string();
        let ts = msg.get("timestamp");
        let at = ts.and_then(|t| {
            let secs = t.get("seconds")?.as_u64()?;
            let micros = t.get("microseconds")?.as_u64()?;
            SystemTime::UNIX_EPOCH.checked_add(Duration::from_micros(
                secs.checked_mul(1_000_000)?.checked_add(micros)?,
            ))
        });
        let data = msg.get("data").cloned().unwrap_or(Value::Null);
        Some(QmpEvent { name, at, data })
    }

    /// A `MIGRATION` event with this status.
    pub fn is_migration(&self, status: &str) -> bool {
        self.name == "MIGRATION" && self.data["status"] == status
    }
}

/// Where QEMU listens: `-qmp unix:PATH,server=on,wait=off` or `-qmp tcp:HOST:PORT,server=on,wait=off`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QmpAddr {
    /// A unix socket path.
    Unix(PathBuf),
    /// `HOST:PORT`.
    Tcp(String),
}

impl QmpAddr {
    /// `tcp:HOST:PORT`, `unix:PATH`, or a plain socket path.
    pub fn parse(s: &str) -> Self {
        if let Some(hp) = s.strip_prefix("tcp:") {
            QmpAddr::Tcp(hp.to_string())
        } else {
            QmpAddr::Unix(PathBuf::from(s.strip_prefix("unix:").unwrap_or(s)))
        }
    }
}

impl fmt::Display for QmpAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QmpAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            QmpAddr::Tcp(hp) => write!(f, "tcp:{hp}"),
        }
    }
}

/// What went wrong talking to QEMU.
#[derive(Debug)]
#[non_exhaustive]
pub enum QmpError {
    /// The socket could not be opened.
    Connect { addr: String, source: io::Error },
    /// QEMU answered the command with an error.
    Command {
        command: String,
        class: String,
        desc: String,
    },
    /// QEMU closed the connection (it exited, or was killed).
    Closed { waiting_for: String },
    /// No complete reply within the deadline.
    Timeout {
        waiting_for: String,
        after: Duration,
    },
    /// Reading or writing the socket failed.
    Io {
        waiting_for: String,
        source: io::Error,
    },
    /// QEMU sent something that is not QMP.
    Protocol { detail: String },
    /// An earlier timeout or lost connection left the stream in an unknown state.
    Unusable { cause: String },
}

impl QmpError {
    /// True when the connection to QEMU is gone or unusable, as opposed to QEMU refusing a
    /// command: the caller cannot talk to this QEMU again.
    pub fn is_connection_lost(&self) -> bool {
        !matches!(self, QmpError::Command { .. })
    }
}

impl fmt::Display for QmpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QmpError::Connect { addr, source } => write!(
                f,
                "cannot connect to QMP at {addr}: {source} (start QEMU with \
                 -qmp {addr},server=on,wait=off)"
            ),
            QmpError::Command {
                command,
                class,
                desc,
            } => write!(f, "QMP command {command} failed: {class}: {desc}"),
            QmpError::Closed { waiting_for } => write!(
                f,
                "QEMU closed the QMP connection while pagewire waited for {waiting_for} \
                 (did QEMU exit?)"
            ),
            QmpError::Timeout { waiting_for, after } => write!(
                f,
                "no reply from QEMU for {waiting_for} within {:.1} s (is QEMU hung, or is \
                 another client connected? QEMU serves one QMP client at a time)",
                after.as_secs_f64()
            ),
            QmpError::Io {
                waiting_for,
                source,
            } => write!(
                f,
                "QMP connection failed while waiting for {waiting_for}: {source}"
            ),
            QmpError::Protocol { detail } => write!(f, "QMP protocol error: {detail}"),
            QmpError::Unusable { cause } => write!(
                f,
                "the QMP connection is unusable after an earlier failure ({cause})"
            ),
        }
    }
}

/// The messages already include the underlying I/O error, so there is no separate source
/// (which `{:#}` would print twice).
impl std::error::Error for QmpError {}

/// A byte stream whose reads can time out: unix or TCP socket.
trait Conn: Read + Write + Send {
    fn set_timeout(&self, t: Duration) -> io::Result<()>;
    fn close(&self);
}

impl Conn for UnixStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }

    fn close(&self) {
        // `ignore`: a socket the peer already closed has nothing left to shut down.
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Conn for TcpStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_read_timeout(Some(t))?;
        self.set_write_timeout(Some(t))
    }

    fn close(&self) {
        // `ignore`: a socket the peer already closed has nothing left to shut down.
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

/// A QMP session in command mode.
pub struct Qmp {
    conn: BufReader<Box<dyn Conn>>,
    timeout: Duration,
    next_id: u64,
    greeting: Value,
    broken: Option<String>,
    events: VecDeque<QmpEvent>,
}

impl fmt::Debug for Qmp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Qmp")
            .field("timeout", &self.timeout)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities (none), waiting at most
    /// `timeout` for each reply. `timeout` is also the default for later commands.
    pub fn connect(addr: &QmpAddr, timeout: Duration) -> Result<Self, QmpError> {
        let connect_err = |source| QmpError::Connect {
            addr: addr.to_string(),
            source,
        };
        let conn: Box<dyn Conn> = match addr {
            QmpAddr::Unix(path) => Box::new(UnixStream::connect(path).map_err(connect_err)?),
            QmpAddr::Tcp(hp) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                let mut found = None;
                for sa in hp.to_socket_addrs().map_err(connect_err)? {
                    match TcpStream::connect_timeout(&sa, timeout) {
                        Ok(s) => {
                            found = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                Box::new(found.ok_or_else(|| connect_err(last))?)
            }
        };
        let mut qmp = Qmp {
            conn: BufReader::new(conn),
            timeout,
            next_id: 1,
            greeting: Value::Null,
            broken: None,
            events: VecDeque::new(),
        };
        let greeting = qmp.read_message("the QMP greeting", timeout)?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol {
                detail: format!("expected the QMP greeting, got {greeting}"),
            });
        }
        qmp.greeting = greeting;
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// The events read since the last call, oldest first. QEMU's events arrive with the
    /// replies: only those read while a command waited for its reply are here.
    pub fn take_events(&mut self) -> Vec<QmpEvent> {
        self.events.drain(..).collect()
    }

    /// The greeting QEMU sent (`{"QMP": {"version": ..., "capabilities": [...]}}`).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// Runs `command` with optional `arguments` and returns its `return` value, waiting at
    /// most the connection's default timeout.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value, QmpError> {
        self.execute_within(command, arguments, self.timeout)
    }

    /// As [`Qmp::execute`], with its own deadline (for slow commands such as `pmemsave`).
    pub fn execute_within(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        if let Some(cause) = &self.broken {
            return Err(QmpError::Unusable {
                cause: cause.clone(),
            });
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(args) = arguments {
            msg["arguments"] = args;
        }
        let what = format!("the reply to {command}");
        let mut line = msg.to_string();
        line.push('\n');
        let sent = self
            .conn
            .get_ref()
            .set_timeout(timeout)
            .and_then(|()| self.conn.get_mut().write_all(line.as_bytes()))
            .and_then(|()| self.conn.get_mut().flush());
        if let Err(e) = sent {
            return Err(self.fail(io_error(&what, timeout, e)));
        }
        loop {
            let reply = self.read_message(&what, timeout)?;
            if let Some(event) = QmpEvent::from_message(&reply) {
                if self.events.len() == EVENTS_KEPT {
                    self.events.pop_front();
                }
                self.events.push_back(event);
                continue;
            }
            if reply.get("event").is_some() {
                continue;
            }
            if reply.get("id").and_then(Value::as_u64) != Some(id) {
                let detail = format!("{what} (id {id}) expected, got {reply}");
                return Err(self.fail(QmpError::Protocol { detail }));
            }
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = reply.get("error") {
                let field = |k| {
                    err.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string()
                };
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            let detail = format!("{what}: neither return nor error in {reply}");
            return Err(self.fail(QmpError::Protocol { detail }));
        }
    }

    /// Reads one JSON message (one line), within `timeout` from now.
    fn read_message(&mut self, what: &str, timeout: Duration) -> Result<Value, QmpError> {
        if let Some(cause) = &self.broken {
            return Err(QmpError::Unusable {
                cause: cause.clone(),
            });
        }
        let deadline = Instant::now() + timeout;
        let mut line = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.fail(QmpError::Timeout {
                    waiting_for: what.to_string(),
                    after: timeout,
                }));
            }
            if let Err(e) = self.conn.get_ref().set_timeout(left) {
                return Err(self.fail(io_error(what, timeout, e)));
            }
            match self.conn.read_until(b'\n', &mut line) {
                Ok(0) => {
                    return Err(self.fail(QmpError::Closed {
                        waiting_for: what.to_string(),
                    }))
                }
                Ok(_) if line.ends_with(b"\n") => break,
                // End of stream after a partial line: the next read reports the close.
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.fail(io_error(what, timeout, e))),
            }
        }
        serde_json::from_slice(&line).map_err(|e| {
            let detail = format!(
                "{what}: not JSON ({e}): {}",
                String::from_utf8_lossy(&line).trim_end()
            );
            self.fail(QmpError::Protocol { detail })
        })
    }

    /// Closes the connection now, so that QEMU (which serves one QMP client at a time)
    /// accepts a new one while this value still exists; later commands fail as unusable.
    pub fn close(&mut self) {
        self.conn.get_ref().close();
        if self.broken.is_none() {
            self.broken = Some("the connection was closed".into());
        }
    }

    /// Marks the session unusable and passes the error on.
    fn fail(&mut self, e: QmpError) -> QmpError {
        self.broken = Some(e.to_string());
        e
    }
}

/// Timeouts surface as WouldBlock or TimedOut depending on the platform.
fn io_error(what: &str, timeout: Duration, e: io::Error) -> QmpError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => QmpError::Timeout {
            waiting_for: what.to_string(),
            after: timeout,
        },
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted => QmpError::Closed {
            waiting_for: what.to_string(),
        },
        _ => QmpError::Io {
            waiting_for: what.to_string(),
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::thread;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

    /// A fake QEMU on a unix socket: sends the greeting, then answers each command line with
    /// `reply(command, id)` (lines, written as given; `None` closes the connection).
    fn fake_qemu(
        reply: impl Fn(&str, u64) -> Option<Vec<String>> + Send + 'static,
    ) -> (tempfile::TempDir, QmpAddr, thread::JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            writeln!(s, "{GREETING}").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let msg: Value = serde_json::from_str(&line).unwrap();
                let cmd = msg["execute"].as_str().unwrap().to_string();
                let id = msg["id"].as_u64().unwrap();
                line.clear();
                match reply(&cmd, id) {
                    Some(lines) => {
                        for l in lines {
                            // `ignore`: the client may have given up already.
                            let _ = s.write_all(l.as_bytes());
                        }
                    }
                    None => return,
                }
            }
        });
        (dir, QmpAddr::Unix(path), handle)
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(
            QmpAddr::parse("tcp:127.0.0.1:4444"),
            QmpAddr::Tcp("127.0.0.1:4444".into())
        );
        assert_eq!(
            QmpAddr::parse("unix:/tmp/q"),
            QmpAddr::Unix("/tmp/q".into())
        );
        assert_eq!(QmpAddr::parse("q.sock"), QmpAddr::Unix("q.sock".into()));
    }

    #[test]
    fn sets_events_aside_and_returns_results_and_errors() {
        let (_d, addr, h) = fake_qemu(|cmd, id| {
            Some(match cmd {
                "qmp_capabilities" => vec![format!("{{\"return\": {{}}, \"id\": {id}}}\n")],
                "stop" => vec![
                    "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\n"
                        .into(),
                    // A reply split over two writes.
                    format!("{{\"return\": {{}}, \"id\""),
                    format!(": {id}}}\n"),
                ],
                "query-memory-size-summary" => vec![format!(
                    "{{\"return\": {{\"base-memory\": 134217728}}, \"id\": {id}}}\n"
                )],
                _ => vec![format!(
                    "{{\"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"The command {cmd} has not been found\"}}, \"id\": {id}}}\n"
                )],
            })
        });
        let mut q = Qmp::connect(&addr, Duration::from_secs(5)).unwrap();
        assert_eq!(q.greeting()["QMP"]["version"]["qemu"]["minor"], 2);
        assert_eq!(q.execute("stop", None).unwrap(), json!({}));
        // the event was set aside with QEMU's timestamp
        let events = q.take_events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].name, "STOP");
        assert_eq!(
            events[0].at,
            Some(SystemTime::UNIX_EPOCH + Duration::from_micros(1_000_002))
        );
        assert!(q.take_events().is_empty());
        let mem = q.execute("query-memory-size-summary", None).unwrap();
        assert_eq!(mem["base-memory"], 134217728);
        let e = q.execute("nope", Some(json!({"x": 1}))).unwrap_err();
        assert!(!e.is_connection_lost());
        assert_eq!(
            e.to_string(),
            "QMP command nope failed: CommandNotFound: The command nope has not been found"
        );
        // A refused command leaves the session usable.
        assert_eq!(q.execute("stop", None).unwrap(), json!({}));
        drop(q);
        h.join().unwrap();
    }

    #[test]
    fn a_silent_qemu_times_out_and_the_session_stays_closed() {
        let (_d, addr, h) = fake_qemu(|cmd, id| {
            Some(match cmd {
                "qmp_capabilities" => vec![format!("{{\"return\": {{}}, \"id\": {id}}}\n")],
                _ => vec![],
            })
        });
        let mut q = Qmp::connect(&addr, Duration::from_secs(5)).unwrap();
        let t = Instant::now();
        let e = q
            .execute_within("stop", None, Duration::from_millis(200))
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(matches!(e, QmpError::Timeout { .. }), "{e}");
        assert!(e.is_connection_lost());
        let e = q.execute("cont", None).unwrap_err();
        assert!(matches!(e, QmpError::Unusable { .. }), "{e}");
        drop(q);
        h.join().unwrap();
    }

    #[test]
    fn a_vanishing_qemu_is_named() {
        let (_d, addr, h) = fake_qemu(|cmd, id| match cmd {
            "qmp_capabilities" => Some(vec![format!("{{\"return\": {{}}, \"id\": {id}}}\n")]),
            _ => None,
        });
        let mut q = Qmp::connect(&addr, Duration::from_secs(5)).unwrap();
        let e = q.execute("pmemsave", None).unwrap_err();
        assert!(matches!(e, QmpError::Closed { .. }), "{e}");
        assert!(e.to_string().contains("did QEMU exit?"), "{e}");
        h.join().unwrap();
    }

    #[test]
    fn a_closed_session_frees_qemu_and_refuses_commands() {
        let (_d, addr, h) = fake_qemu(|cmd, id| match cmd {
            "qmp_capabilities" => Some(vec![format!("{{\"return\": {{}}, \"id\": {id}}}\n")]),
            _ => None,
        });
        let mut q = Qmp::connect(&addr, Duration::from_secs(5)).unwrap();
        q.close();
        // The fake QEMU sees the end of its connection while `q` still exists.
        h.join().unwrap();
        let e = q.execute("query-status", None).unwrap_err();
        assert!(matches!(e, QmpError::Unusable { .. }), "{e}");
    }

    #[test]
    fn no_socket_says_how_to_start_qemu() {
        let d = tempfile::tempdir().unwrap();
        let addr = QmpAddr::Unix(d.path().join("none.sock"));
        let e = Qmp::connect(&addr, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("server=on,wait=off"), "{e}");
    }
}
