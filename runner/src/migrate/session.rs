//! The session around the codec stream: a hello before it (what VM is coming), blobs inside
//! it (pause information, vCPU states), and the switchover after it.
//!
//! Source to destination: `PWM1`, then a length-prefixed JSON [`Hello`], then the pagewire
//! stream (header, frames) ending with its END record, then [`SourceMessage`]s. Destination
//! to source: a length-prefixed JSON [`DestMessage`] per pre-copy iteration (an
//! acknowledgement: the source reads the dirty log only once the iteration arrived, as a
//! real link forces it to), then the switchover: the destination, everything checked and
//! restored but not started, says [`DestMessage::Ready`]; the source answers
//! [`SourceMessage::Commit`] (from then on it never resumes on its own) or
//! [`SourceMessage::Abort`]; the destination starts the guest only on the commit and says so
//! in its [`Reply`]; the source closes with [`SourceMessage::Done`]. A committed source that
//! hears nothing asks on a new connection: `PWQ1`, a [`StatusQuery`], answered by a
//! [`Status`]. The states and every transition: `docs/RUNNER.md`, *Switchover*. A hello
//! with `lanes > 1` is followed by one more connection per lane, each opened with `PWL1`
//! and a [`LaneHello`], carrying that lane's pagewire stream and its acknowledgements
//! (`docs/RUNNER.md`, *Lanes*).
//! A length prefix is 4 bytes little-endian; messages are at most [`MAX_MESSAGE`] bytes.
//!
//! A blob longer than [`BLOB_CHUNK`] (a vCPU state with its XSAVE area is about 5 KiB)
//! travels as consecutive blobs of the same tag, at most [`BLOB_CHUNK`] bytes each, that
//! the destination joins: the offload firmware's ring carries one page per blob.

use std::io::{Read, Write};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

/// Opens every migration session.
pub const MAGIC: &[u8; 4] = b"PWM1";
/// Opens a status query.
pub const STATUS_MAGIC: &[u8; 4] = b"PWQ1";
/// Opens one more lane of a migration whose hello said `lanes > 1`.
pub const LANE_MAGIC: &[u8; 4] = b"PWL1";
/// Most lanes a migration may have.
pub const MAX_LANES: u32 = 16;
/// Largest control message.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Largest piece of a blob in the stream (one page).
pub const BLOB_CHUNK: usize = 4096;
/// Largest blob the destination joins from pieces.
pub const MAX_BLOB: usize = 1 << 20;

/// Blob tag of the [`PauseInfo`].
pub const BLOB_PAUSE: u32 = 1;
/// Blob tag of vCPU `i`'s state is `BLOB_VCPU + i`.
pub const BLOB_VCPU: u32 = 0x100;

/// What the source announces before the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Guest memory in bytes.
    pub mem_bytes: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest page size.
    pub page_size: u32,
    /// Free text for logs (workload name, host).
    pub label: String,
    /// Random: names this migration in status queries and logs.
    pub migration_id: u64,
    /// What compresses the stream on the link besides the codec: `None`, or `"zstd"`
    /// (`pagewire_stream_zstd`).
    #[serde(default)]
    pub stream_compression: Option<String>,
    /// Lanes: this connection is lane 0; lanes 1.. come on connections of their own, each
    /// opened by a [`LaneHello`]. Page `pfn` travels on lane `pfn % lanes`.
    #[serde(default = "one_lane")]
    pub lanes: u32,
}

fn one_lane() -> u32 {
    1
}

/// Opens lane `lane` (1 or more) of migration `migration_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneHello {
    /// The migration's [`Hello::migration_id`].
    pub migration_id: u64,
    /// Which lane.
    pub lane: u32,
}

/// Carried in a blob after the last pages, while the VM is paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseInfo {
    /// XXH3-128 of all guest memory at the pause, hex.
    pub digest: String,
    /// Wall-clock time of the pause, microseconds since the Unix epoch (downtime is
    /// measured against the destination's clock: exact on one host, NTP-accurate across).
    pub pause_unix_us: u64,
    /// Pre-copy iterations before the pause.
    pub iterations: u32,
}

/// The destination's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Reply {
    /// True once the VM runs at the destination.
    pub ok: bool,
    /// Why not, when `ok` is false.
    pub error: Option<String>,
    /// Wall-clock time the destination's vCPUs were started.
    pub resumed_unix_us: u64,
    /// `resumed_unix_us - pause_unix_us`.
    pub downtime_us: u64,
    /// Time the destination spent after the END record (digest check, restore, start).
    pub finish_us: u64,
    /// Stream bytes the destination decoded.
    pub stream_bytes: u64,
}

/// What the destination sends back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DestMessage {
    /// Iteration `n` (0-based, as in the stream) has arrived in full.
    Ack(u64),
    /// Everything arrived, checked out and is restored; the guest starts on the commit.
    Ready,
    /// The end: the VM runs here, or why not (and then it never will).
    Reply(Reply),
}

/// What the source sends after the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceMessage {
    /// Start the guest: the source will not resume its copy on its own.
    Commit,
    /// Do not start it: the source resumes its copy.
    Abort(String),
    /// The source has heard the reply.
    Done,
}

/// A committed source's question, on a new connection, when the reply did not come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusQuery {
    /// The [`Hello::migration_id`] asked about.
    pub migration_id: u64,
}

/// The destination's answer to a [`StatusQuery`]: final once given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// The guest runs here; the source's copy must not.
    Started(Reply),
    /// It never started here and never will (why).
    Aborted(String),
    /// This destination knows no such migration: nothing of it runs here.
    Unknown,
}

/// What a connection to the destination is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opening {
    /// A migration (its hello).
    Migration(Hello),
    /// A status query.
    Status(StatusQuery),
    /// One more lane of a migration.
    Lane(LaneHello),
}

/// Writes a length-prefixed JSON message.
pub fn write_message<T: Serialize, W: Write>(w: &mut W, msg: &T) -> Result<()> {
    let body = serde_json::to_vec(msg)?;
    ensure!(body.len() <= MAX_MESSAGE, "control message too large");
    w.write_all(&(body.len() as u32).to_le_bytes())?;
    w.write_all(&body)?;
    w.flush()?;
    Ok(())
}

/// Reads a length-prefixed JSON message.
pub fn read_message<T: for<'de> Deserialize<'de>, R: Read>(r: &mut R) -> Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    ensure!(
        len <= MAX_MESSAGE,
        "control message of {len} bytes is too large"
    );
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body).context("malformed control message")
}

/// Writes the magic and the hello.
pub fn write_hello<W: Write>(w: &mut W, h: &Hello) -> Result<()> {
    w.write_all(MAGIC)?;
    write_message(w, h)
}

/// Reads and checks the magic and the hello.
pub fn read_hello<R: Read>(r: &mut R) -> Result<Hello> {
    match read_opening(r)? {
        Opening::Migration(h) => Ok(h),
        Opening::Status(_) => bail!("a status query where a migration was expected"),
        Opening::Lane(_) => bail!("a lane where a migration was expected"),
    }
}

/// Reads what a new connection is for: a migration's hello or a status query.
pub fn read_opening<R: Read>(r: &mut R) -> Result<Opening> {
    let mut m = [0u8; 4];
    r.read_exact(&mut m).context("reading the session magic")?;
    match &m {
        MAGIC => Ok(Opening::Migration(read_message(r)?)),
        STATUS_MAGIC => Ok(Opening::Status(read_message(r)?)),
        LANE_MAGIC => Ok(Opening::Lane(read_message(r)?)),
        _ => bail!("not a pagewire migration session (magic {m:02x?})"),
    }
}

/// Writes the magic of a status query and the query.
pub fn write_status_query<W: Write>(w: &mut W, q: &StatusQuery) -> Result<()> {
    w.write_all(STATUS_MAGIC)?;
    write_message(w, q)
}

/// Writes the magic of a lane and its hello.
pub fn write_lane_hello<W: Write>(w: &mut W, h: &LaneHello) -> Result<()> {
    w.write_all(LANE_MAGIC)?;
    write_message(w, h)
}

/// A fresh random migration id (from the kernel's random source).
pub fn new_migration_id() -> Result<u64> {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for a migration id")?;
    Ok(u64::from_le_bytes(b))
}

/// Microseconds since the Unix epoch.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_input_is_refused() {
        let h = Hello {
            stream_compression: None,
            lanes: 2,
            mem_bytes: 64 << 20,
            vcpus: 2,
            page_size: 4096,
            label: "t".into(),
            migration_id: new_migration_id().unwrap(),
        };
        let mut buf = Vec::new();
        write_hello(&mut buf, &h).unwrap();
        assert_eq!(read_hello(&mut &buf[..]).unwrap(), h);
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert!(read_hello(&mut &bad[..]).is_err());
        assert!(read_hello(&mut &buf[..buf.len() - 1]).is_err());
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&(u32::MAX).to_le_bytes());
        assert!(read_hello(&mut &huge[..]).is_err());
        assert_ne!(new_migration_id().unwrap(), h.migration_id);
    }

    #[test]
    fn a_status_query_opens_its_own_kind_of_connection() {
        let q = StatusQuery { migration_id: 7 };
        let mut buf = Vec::new();
        write_status_query(&mut buf, &q).unwrap();
        assert_eq!(read_opening(&mut &buf[..]).unwrap(), Opening::Status(q));
        assert!(read_hello(&mut &buf[..]).is_err(), "not a migration");
        let l = LaneHello {
            migration_id: 7,
            lane: 1,
        };
        let mut buf = Vec::new();
        write_lane_hello(&mut buf, &l).unwrap();
        assert_eq!(read_opening(&mut &buf[..]).unwrap(), Opening::Lane(l));
        assert!(read_hello(&mut &buf[..]).is_err(), "not a migration");
    }

    #[test]
    fn a_hello_without_lanes_means_one() {
        let h: Hello = serde_json::from_str(
            r#"{"mem_bytes":1,"vcpus":1,"page_size":4096,"label":"","migration_id":1}"#,
        )
        .unwrap();
        assert_eq!(h.lanes, 1);
    }
}
