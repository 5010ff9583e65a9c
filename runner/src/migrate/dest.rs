//! The destination side: decode the stream into the guest's memory, and only after the END
//! record and a full check (a state for every vCPU, memory digest equal to the source's at
//! the pause) restore the guest's state, say ready, and start it once the source commits.
//! Any error before that, or no commit in time, drops the partial guest unstarted: a
//! half-migrated VM never runs, and neither does one the source may have resumed.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use pagewire::{Config, DecodeMode, Decoder, Destination, FRAME_HEADER_LEN, HEADER_LEN};

use crate::host_memory;
use crate::net::{Link, Waits};

pub use super::arrival::Decoding;
use super::arrival::{Arrivals, GuestDestination, InMemory, LaneMemory, Stream, ThroughStaging};
use super::deadlines::{Deadline, Deadlines};
use super::guest::{DestGuest, GuestBuilder};
use super::session::{self, DestMessage, Hello, PauseInfo, Reply, SourceMessage, MAX_LANES};
use super::switchover::Outcomes;
use pagewire_stream_zstd::{self as link_zstd, ZstdIn};

/// Limits on what a source may ask the destination to build.
#[derive(Debug, Clone, Copy)]
pub struct DestOptions {
    /// Largest guest memory accepted, in bytes; `None`: what this host can hold when the
    /// hello arrives (the guest and the largest cache it may ask for, within
    /// `host_memory::headroom`).
    pub max_mem_bytes: Option<u64>,
    /// Most vCPUs accepted.
    pub max_vcpus: u32,
    /// How long to wait for the source.
    pub deadlines: Deadlines,
}

impl Default for DestOptions {
    fn default() -> Self {
        DestOptions {
            max_mem_bytes: None,
            max_vcpus: 16,
            deadlines: Deadlines::default(),
        }
    }
}

/// The largest decoder cache a stream may ask of a destination whose guest has `mem_bytes`:
/// as much as the guest's memory, or 1 GiB for a smaller guest.
pub fn largest_cache(mem_bytes: u64) -> u64 {
    mem_bytes.max(1 << 30)
}

/// What a destination may have to hold for a guest of `mem_bytes`: its memory and the
/// largest cache its stream may ask for (a sender can make it touch both: duplicate-page
/// records write every page, a cache is allocated whole).
pub fn memory_needed(mem_bytes: u64) -> u64 {
    mem_bytes.saturating_add(largest_cache(mem_bytes))
}

/// Hands the destination the connections of a migration's lanes 1.. (see `lanes`): a
/// receiver that accepts connections implements it.
pub trait LaneLinks {
    /// Lane `lane` of migration `migration_id`, once its connection has arrived (mutual
    /// TLS done, its lane hello read), or an error at `by`.
    fn lane(&self, migration_id: u64, lane: u32, by: Instant) -> Result<Box<dyn Link>>;
}

/// A destination that takes a migration on one connection only.
pub struct OneConnection;

impl LaneLinks for OneConnection {
    fn lane(&self, _: u64, _: u32, _: Instant) -> Result<Box<dyn Link>> {
        bail!("this destination takes a migration on one connection: the source must use --lanes 1")
    }
}

/// A guest that arrived and runs.
pub struct Arrived<G> {
    /// The running guest.
    pub vm: G,
    /// What the source announced.
    pub hello: Hello,
    /// What the destination told the source.
    pub reply: Reply,
    /// Pre-copy iterations the stream carried.
    pub iterations: u64,
    /// How the stream was decoded (in place into the guest's memory, or through a copy).
    pub decoding: Decoding,
    /// The source said it heard the reply. If not, it may still ask (a status query on a
    /// new connection): keep answering for a while.
    pub source_told: bool,
}

/// How long a refusal may take to go out on a link that failed.
const REFUSAL_GRACE: Duration = Duration::from_secs(1);

/// Receives a migration over `link` into a guest from `builder` and starts it once the
/// source has committed. Errors are reported to the source (when the link still works) and
/// returned; the partial guest is dropped without running.
pub fn migrate_in<L: Link, B: GuestBuilder>(
    link: &mut L,
    builder: &B,
    opts: &DestOptions,
) -> Result<Arrived<B::Guest>> {
    let hello = match session::read_hello(link) {
        Ok(h) => h,
        Err(e) => {
            refuse(link, &e);
            return Err(opts.deadlines.explain(Deadline::Handshake, e));
        }
    };
    arrive(
        link,
        hello,
        builder,
        opts,
        &Outcomes::default(),
        &OneConnection,
    )
}

/// Receives the migration whose `hello` was read from `link` (a receiver reads it to tell
/// a migration from a status query), recording its outcome in `outcomes`, which answers
/// the status queries of other connections; the connections of lanes 1.. (if the hello
/// asks for lanes) come from `lanes`.
pub fn arrive<L: Link, B: GuestBuilder>(
    link: &mut L,
    hello: Hello,
    builder: &B,
    opts: &DestOptions,
    outcomes: &Outcomes,
    lanes: &dyn LaneLinks,
) -> Result<Arrived<B::Guest>> {
    let id = hello.migration_id;
    if let Err(e) = outcomes.begin(id) {
        refuse(link, &e);
        return Err(e);
    }
    match receive(link, hello, builder, opts, outcomes, lanes) {
        Ok(a) => Ok(a),
        Err(e) => {
            // whatever failed, this migration never starts here now
            outcomes.abort(id, &format!("{e:#}"));
            refuse(link, &e);
            Err(e)
        }
    }
}

/// Tells the source why not, if the link still carries it.
fn refuse<L: Link>(link: &mut L, e: &anyhow::Error) {
    let _ = link.set_waits(Waits::until(Instant::now() + REFUSAL_GRACE));
    let reply = Reply {
        ok: false,
        error: Some(format!("{e:#}")),
        ..Reply::default()
    };
    let _ = session::write_message(link, &DestMessage::Reply(reply));
}

fn receive<L: Link, B: GuestBuilder>(
    link: &mut L,
    hello: Hello,
    builder: &B,
    opts: &DestOptions,
    outcomes: &Outcomes,
    lanes: &dyn LaneLinks,
) -> Result<Arrived<B::Guest>> {
    let d = &opts.deadlines;
    check_hello(&hello, builder.page_size(), opts)?;
    link.set_waits(Waits::idle(d.progress))?;
    let mut guest = builder.build(hello.mem_bytes, hello.vcpus)?;
    let stream = if hello.lanes > 1 {
        receive_lanes(link, &mut guest, &hello, lanes, d)
    } else {
        receive_stream(link, &mut guest, &hello)
    }
    .map_err(|e| d.explain(Deadline::Progress, e))?;
    let end = Instant::now();
    let pause = check_and_restore(&mut guest, &stream)?;
    let checked = end.elapsed();
    await_commit(link, d).map_err(|e| d.explain(Deadline::Switchover, e))?;
    let reply = outcomes.start(hello.migration_id, || {
        let t = Instant::now();
        guest.start()?;
        let resumed_unix_us = session::unix_us();
        Ok(Reply {
            ok: true,
            error: None,
            resumed_unix_us,
            downtime_us: resumed_unix_us.saturating_sub(pause.pause_unix_us),
            finish_us: (checked + t.elapsed()).as_micros() as u64,
            stream_bytes: stream.bytes,
        })
    })?;
    // The guest runs now, whatever happens to the link: the source learns it from this
    // reply or, when the reply is lost, from a status query.
    let _ = link.set_waits(Waits::until(Instant::now() + d.switchover));
    let _ = session::write_message(link, &DestMessage::Reply(reply.clone()));
    let source_told = matches!(session::read_message(link), Ok(SourceMessage::Done));
    if source_told {
        outcomes.mark_told(hello.migration_id);
    }
    Ok(Arrived {
        vm: guest,
        hello,
        reply,
        iterations: stream.iterations,
        decoding: stream.decoding,
        source_told,
    })
}

/// Says ready and waits, within the switchover margin, for the source's commit.
fn await_commit<L: Link>(link: &mut L, d: &Deadlines) -> Result<()> {
    session::write_message(link, &DestMessage::Ready).context("saying ready to the source")?;
    link.set_waits(Waits {
        idle: Some(d.switchover),
        until: Some(Instant::now() + d.switchover),
    })?;
    match session::read_message(link)
        .context("no commit from the source: this copy is dropped and never runs")?
    {
        SourceMessage::Commit => Ok(()),
        SourceMessage::Abort(why) => bail!("the source abandoned the switchover: {why}"),
        SourceMessage::Done => bail!("the source said done before it committed"),
    }
}

/// Checks the hello against what this destination builds and accepts.
fn check_hello(hello: &Hello, page_size: usize, opts: &DestOptions) -> Result<()> {
    ensure!(
        hello.page_size as usize == page_size,
        "page size {} unsupported (this VMM uses {page_size})",
        hello.page_size
    );
    match opts.max_mem_bytes {
        Some(max) => ensure!(
            hello.mem_bytes <= max,
            "the source's VM has {} MiB of memory, more than the {} MiB this destination \
             accepts (--max-mem-mib)",
            hello.mem_bytes >> 20,
            max >> 20
        ),
        None => {
            let room = host_memory::headroom();
            let needed = memory_needed(hello.mem_bytes).saturating_add(host_memory::RESERVE);
            ensure!(
                needed <= room.bytes,
                "the source's VM has {} MiB of memory and may ask for a {} decoder cache; \
                 this host can hold {room} now: free memory here, or pass --max-mem-mib to \
                 accept more",
                hello.mem_bytes >> 20,
                host_memory::mib(largest_cache(hello.mem_bytes)),
            );
        }
    }
    ensure!(
        hello.vcpus >= 1 && hello.vcpus <= opts.max_vcpus,
        "the source's VM has {} vCPUs; this destination accepts 1 to {}",
        hello.vcpus,
        opts.max_vcpus
    );
    ensure!(
        (1..=MAX_LANES).contains(&hello.lanes),
        "the source asks for {} lanes; this destination takes 1 to {MAX_LANES}",
        hello.lanes
    );
    Incoming::for_hello(hello)?;
    Ok(())
}

/// The stream as it comes off the link: as it is, or through zstd, as the hello says.
struct Incoming {
    zstd: Option<ZstdIn>,
}

impl Incoming {
    fn for_hello(hello: &Hello) -> Result<Self> {
        let zstd = match hello.stream_compression.as_deref() {
            None => None,
            Some(link_zstd::NAME) => Some(ZstdIn::new()?),
            Some(other) => bail!(
                "the source compresses the stream with {other:?}, which this destination does \
                 not know (it knows zstd)"
            ),
        };
        Ok(Incoming { zstd })
    }

    /// Runs `f` on the stream read from `link` (the borrow ends with `f`, so that
    /// acknowledgements can be written between reads).
    fn read<L: Read, T>(
        &mut self,
        link: &mut L,
        f: impl FnOnce(&mut dyn Read) -> Result<T>,
    ) -> Result<T> {
        match &mut self.zstd {
            Some(z) => f(&mut z.reader(link)),
            None => f(link),
        }
    }

    /// After the END record: the compressed stream, if any, must end there too.
    fn end<L: Read>(&mut self, link: &mut L) -> Result<()> {
        match &mut self.zstd {
            Some(z) => Ok(z.expect_end(link)?),
            None => Ok(()),
        }
    }
}

/// Reads the stream header and checks it against the guest: its page size, and a cache
/// the guest's memory bounds.
fn read_stream_header<R: Read + ?Sized>(
    link: &mut R,
    hello: &Hello,
) -> Result<([u8; HEADER_LEN], Config)> {
    let page_size = hello.page_size as usize;
    let mut header = [0u8; HEADER_LEN];
    link.read_exact(&mut header)
        .context("reading the stream header")?;
    let cfg = Config::from_header(&header).map_err(|e| anyhow!("bad stream header: {e}"))?;
    ensure!(
        cfg.page_size as usize == page_size,
        "stream page size {} differs from the VM's {page_size}",
        cfg.page_size
    );
    // The header names the cache size the decoder must allocate: bound it by the VM (all
    // lanes' caches together).
    ensure!(
        (cfg.cache_len() as u64).saturating_mul(u64::from(hello.lanes))
            <= largest_cache(hello.mem_bytes),
        "the stream asks for a {} MiB cache per lane ({} lanes), more than the VM's memory",
        cfg.cache_len() >> 20,
        hello.lanes
    );
    Ok((header, cfg))
}

/// Decodes the stream into `guest` up to its END record, acknowledging every pre-copy
/// iteration as it completes: in place when the guest's memory is at hand as one piece
/// (no copy of the cache is kept), else through a cache copy and [`DestGuest::write_page`].
fn receive_stream<L: Read + Write, G: DestGuest>(
    link: &mut L,
    guest: &mut G,
    hello: &Hello,
) -> Result<Stream> {
    let mut incoming = Incoming::for_hello(hello)?;
    let (header, cfg) = incoming.read(link, |r| read_stream_header(r, hello))?;
    let page_size = hello.page_size as usize;
    let pages = hello.mem_bytes / u64::from(hello.page_size);
    let arrivals = Arrivals::new(pages, hello.vcpus as usize);
    let len = usize::try_from(hello.mem_bytes).context("guest memory too large")?;
    if let Some(mem) = guest.memory_mut().filter(|m| m.len() >= len) {
        let mut dest = InMemory::new(&mut mem[..len], page_size, arrivals);
        let (bytes, decoding) = decode_stream(
            link,
            &mut incoming,
            &header,
            cfg,
            DecodeMode::InPlace,
            &mut dest,
        )?;
        return Ok(dest.into_stream(bytes, decoding));
    }
    let mut dest = ThroughStaging::new(guest, page_size, arrivals);
    let (bytes, decoding) = decode_stream(
        link,
        &mut incoming,
        &header,
        cfg,
        DecodeMode::CacheCopy,
        &mut dest,
    )?;
    Ok(dest.into_stream(bytes, decoding))
}

/// Decodes the streams of every lane at once, each on its own thread and connection, in
/// place into the pages of the guest's memory that are its own (`lanes`); every lane
/// acknowledges its iterations on its own connection. Lane 0 carries the blobs; every lane
/// must end after as many iterations as lane 0.
fn receive_lanes<L: Link, G: DestGuest>(
    link: &mut L,
    guest: &mut G,
    hello: &Hello,
    lanes: &dyn LaneLinks,
    d: &Deadlines,
) -> Result<Stream> {
    let by = Instant::now() + d.handshake;
    let mut others = (1..hello.lanes)
        .map(|lane| {
            let mut l = lanes
                .lane(hello.migration_id, lane, by)
                .with_context(|| format!("waiting for lane {lane}'s connection"))?;
            l.set_waits(Waits::idle(d.progress))?;
            Ok(l)
        })
        .collect::<Result<Vec<_>>>()?;
    let len = usize::try_from(hello.mem_bytes).context("guest memory too large")?;
    let Some(mem) = guest.memory_mut().filter(|m| m.len() >= len) else {
        bail!("lanes decode in place, and this destination's guest memory is not at hand as one piece: the source must use --lanes 1");
    };
    let views = LaneMemory::split(
        &mut mem[..len],
        hello.page_size as usize,
        hello.lanes,
        hello.vcpus as usize,
    );
    let mut links: Vec<&mut dyn Link> = vec![link as &mut dyn Link];
    links.extend(others.iter_mut().map(|l| &mut **l as &mut dyn Link));
    let results: Vec<Result<Stream>> = std::thread::scope(|s| {
        let handles: Vec<_> = links
            .into_iter()
            .zip(views)
            .enumerate()
            .map(|(lane, (mut l, mut view))| {
                s.spawn(move || -> Result<Stream> {
                    let mut incoming = Incoming::for_hello(hello)?;
                    let (header, cfg) = incoming.read(&mut l, |r| read_stream_header(r, hello))?;
                    let (bytes, decoding) = decode_stream(
                        &mut l,
                        &mut incoming,
                        &header,
                        cfg,
                        DecodeMode::InPlace,
                        &mut view,
                    )
                    .map_err(|e| view.explain(e))
                    .with_context(|| format!("lane {lane}"))?;
                    Ok(view.into_stream(bytes, decoding))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a lane's decoder panicked")))
            })
            .collect()
    });
    let mut streams = results.into_iter().collect::<Result<Vec<_>>>()?.into_iter();
    let mut first = streams.next().context("no lanes")?;
    for (lane, s) in streams.enumerate() {
        ensure!(
            s.iterations == first.iterations,
            "lane {} ended after {} iterations, lane 0 after {}",
            lane + 1,
            s.iterations,
            first.iterations
        );
        first.bytes += s.bytes;
        first.decoding.storage_bytes += s.decoding.storage_bytes;
    }
    Ok(first)
}

/// Decodes frames into `dest` in `mode` until the END record, acknowledging each pre-copy
/// iteration as it completes; returns the stream's length in bytes and how it was decoded.
fn decode_stream<L: Read + Write, D: GuestDestination>(
    link: &mut L,
    incoming: &mut Incoming,
    header: &[u8; HEADER_LEN],
    cfg: Config,
    mode: DecodeMode,
    dest: &mut D,
) -> Result<(u64, Decoding)> {
    let decoding = Decoding {
        mode,
        storage_bytes: cfg.decoder_storage_len_for(mode),
    };
    let mut storage = vec![0u8; decoding.storage_bytes];
    let (mut dec, _) = Decoder::from_header(header, mode, &mut storage)
        .map_err(|e| anyhow!("bad stream header: {e}"))?;
    let mut frame = vec![0u8; cfg.max_frame_len()];
    let mut bytes = HEADER_LEN as u64;
    let mut acked = 0u64;
    while !dec.is_complete() {
        bytes += incoming.read(link, |r| decode_frame(r, &mut dec, &mut frame, dest))?;
        dest.check()?;
        while acked < dest.arrivals().iterations {
            session::write_message(link, &DestMessage::Ack(acked))
                .context("acknowledging an iteration")?;
            acked += 1;
        }
    }
    incoming.end(link)?;
    Ok((bytes, decoding))
}

/// Reads one frame from `link` and decodes it into `dest`; returns its length.
pub(crate) fn decode_frame<R: Read + ?Sized, D: Destination>(
    link: &mut R,
    dec: &mut Decoder<'_>,
    frame: &mut [u8],
    dest: &mut D,
) -> Result<u64> {
    link.read_exact(&mut frame[..FRAME_HEADER_LEN])
        .context("the stream ended before its END record")?;
    let len = dec
        .frame_len(&frame[..FRAME_HEADER_LEN])
        .map_err(|e| anyhow!("bad frame: {e}"))?;
    link.read_exact(&mut frame[FRAME_HEADER_LEN..len])
        .context("the stream ended inside a frame")?;
    dec.decode_frame(&frame[..len], dest)
        .map_err(|e| anyhow!("bad frame: {e}"))?;
    Ok(len as u64)
}

/// Checks that everything arrived (pause information, a state for every vCPU, memory equal
/// to the source's at the pause) and restores the guest's state; it starts only on the
/// source's commit. Returns the pause information.
fn check_and_restore<G: DestGuest>(guest: &mut G, stream: &Stream) -> Result<PauseInfo> {
    let pause: PauseInfo = serde_json::from_slice(
        stream
            .blobs
            .pause
            .as_deref()
            .ok_or_else(|| anyhow!("the stream has no pause information"))?,
    )
    .context("malformed pause information")?;
    let states = stream
        .blobs
        .states
        .iter()
        .enumerate()
        .map(|(i, b)| {
            b.clone()
                .ok_or_else(|| anyhow!("the stream has no state for vCPU {i}"))
        })
        .collect::<Result<Vec<_>>>()?;
    // loaded into vCPUs that have not run: nothing runs before the digest matches
    guest.restore_state(&states)?;
    let digest = format!("{:032x}", guest.memory_digest()?);
    ensure!(
        digest == pause.digest,
        "memory digest {digest} differs from the source's {} at the pause",
        pause.digest
    );
    Ok(pause)
}
