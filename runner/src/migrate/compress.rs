//! How much to compress, chosen while migrating. On a slow link the fewest bytes win (zstd
//! over the stream sends a quarter fewer than LZ4 on the frames); on a fast one compression
//! makes the CPU the bottleneck, and stored frames move memory faster (`docs/RUNNER.md`,
//! *Compression*). The sender measures, per window of pages, its thread's CPU time against
//! the wall time: the share left is its CPU headroom, time spent waiting for the link (a
//! full socket, the destination's acknowledgements). `auto` climbs a ladder of stages
//! ([`LADDER`]: plain pages, stored frames, LZ4 frames, zstd 1, zstd 3) while the link is the
//! bottleneck and steps down while the CPU is.

use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

/// How the stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Pick the stage per window of pages from the measured headroom ([`AutoStage`]).
    Auto,
    /// LZ4 on every frame where it saves bytes.
    Lz4,
    /// Frames stored.
    None,
    /// Every page whole past the cache (a zero test, then a PLAIN record: no content
    /// lookup, no deltas), frames stored: `auto`'s lowest stage, for links faster than any
    /// encoding pays on. Needs an encoder that can send plain pages (not the offload
    /// firmware).
    Plain,
    /// zstd at `level` over the whole stream, its window across frames; the frames
    /// themselves stored (`pagewire_stream_zstd`). For slow links.
    Zstd { level: i32 },
}

/// zstd's level unless `zstd:N` says otherwise.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// Its name on the command line (without a zstd level).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Auto => "auto",
            Compression::Lz4 => "lz4",
            Compression::None => "none",
            Compression::Plain => "plain",
            Compression::Zstd { .. } => "zstd",
        }
    }

    /// For reports: the name, and zstd's level.
    pub fn describe(self) -> String {
        match self {
            Compression::Zstd { level } => format!("zstd:{level}"),
            other => other.name().into(),
        }
    }

    /// Looks a setting up by name: auto, lz4, none, plain, zstd or zstd:LEVEL.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Compression::Auto),
            "lz4" => Ok(Compression::Lz4),
            "none" => Ok(Compression::None),
            "plain" => Ok(Compression::Plain),
            "zstd" => Ok(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            }),
            _ => match s.strip_prefix("zstd:") {
                Some(l) => {
                    let level: i32 = l
                        .parse()
                        .map_err(|_| anyhow::anyhow!("zstd level {l:?} is not a number"))?;
                    Ok(Compression::Zstd {
                        level: pagewire_stream_zstd::check_level(level)?,
                    })
                }
                None => bail!(
                    "unknown compression {s:?}: use auto, lz4, none, plain, zstd or zstd:LEVEL"
                ),
            },
        }
    }

    /// Whether the codec's frames may carry LZ4 under this setting (zstd on LZ4's output
    /// gains little: the stream is left to zstd).
    pub fn frames_may_use_lz4(self) -> bool {
        matches!(self, Compression::Auto | Compression::Lz4)
    }
}

/// Pages per measurement window (16 MiB of 4 KiB pages): the first pass adapts after its
/// first window, not after the whole pass.
pub const WINDOW_PAGES: u64 = 4096;
/// Pages between the checks inside a window (4 MiB): a window in which the sender already
/// mostly waits for the link closes at one of them, so that a slow link climbs to fewer
/// bytes after a few MiB instead of 16; and one in which its CPU is the bottleneck closes
/// to step down once it has put out [`EARLY_DESCENT_BYTES`]. The socket's and the shaper's
/// buffers take the first bytes of a link without the sender waiting, which makes a short
/// window look CPU-bound on any link, never link-bound (`docs/PERFORMANCE.md`, *Smaller
/// first windows*): hence the bytes a descent needs.
pub const CHECK_PAGES: u64 = 1024;
/// The waiting share at a check above which a window closes early. Stricter than
/// [`LINK_BOUND`]: a stage up costs 2-4x the CPU per page (LZ4 to zstd 1), which fits only
/// where the sender waits most of the time; at 1 Gbit/s early windows waited 54-74 %, and
/// early climbs at 50 % there only swung between LZ4 and zstd 1.
pub const EARLY_LINK_BOUND: f64 = 0.8;
/// Over a link that cannot tell its backlog, the bytes a window must have put out before a
/// check may close it to step down: four times the 256 KiB the runner's connections let
/// wait unsent (`net::SMALL_UNSENT`), more than that plus a 100 Mbit/s + 20 ms link's
/// bandwidth-delay product. On a link that holds more on its way (1 Gbit/s + 20 ms:
/// 2.5 MB) a descent can still be wrong; the next check then finds the sender waiting and
/// climbs back to the stage that was faster.
pub const EARLY_DESCENT_BYTES: u64 = 1 << 20;
/// Over a link that tells its backlog (`net::Link::backlog`: bytes written and not yet
/// taken by the far end), the most it may have grown over a window, as a share of what the
/// window put out, for the link to count as keeping pace with the sender: a window in
/// which the sender was busy may then step down at any check, however few bytes it put
/// out. Where the backlog grew by more, buffers took the bytes and may hide a slower link,
/// however many bytes went out. Growth, not size: a fast link with a long round trip
/// always holds a bandwidth-delay product in flight.
pub const KEPT_PACE: f64 = 0.25;
/// Below this headroom the sending CPU is the bottleneck: a step down the ladder.
pub const CPU_BOUND: f64 = 0.25;
/// Above this headroom the sender mostly waits for the link: a step up.
pub const LINK_BOUND: f64 = 0.5;
/// A stage seen before must have moved pages this much faster to go back to it.
pub const HYSTERESIS: f64 = 1.1;

/// What compresses the pages of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Pages whole past the cache (PLAIN records: no content lookup, no deltas), frames
    /// stored: the least CPU per page.
    Plain,
    /// Frames stored.
    Stored,
    /// LZ4 on the frames.
    Lz4,
    /// Frames stored, zstd at this level over the stream.
    Zstd(i32),
}

impl Stage {
    /// zstd's level over the stream in this stage, if any.
    pub fn zstd_level(self) -> Option<i32> {
        match self {
            Stage::Zstd(level) => Some(level),
            Stage::Plain | Stage::Stored | Stage::Lz4 => None,
        }
    }

    /// "plain", "stored", "lz4", "zstd:LEVEL".
    pub fn name(self) -> String {
        match self {
            Stage::Plain => "plain".into(),
            Stage::Stored => "stored".into(),
            Stage::Lz4 => "lz4".into(),
            Stage::Zstd(level) => format!("zstd:{level}"),
        }
    }
}

impl Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// The stages `auto` moves between, fewest bytes last. zstd 3 sent 5-7 % fewer bytes than
/// zstd 1 on every demo workload and was faster at 100 Mbit/s; above it zstd costs more CPU
/// than the bytes it saves on pages (the tunnel's measurements, `docs/TUNNEL.md`).
pub const LADDER: [Stage; 5] = [
    Stage::Plain,
    Stage::Stored,
    Stage::Lz4,
    Stage::Zstd(1),
    Stage::Zstd(3),
];

/// Where `auto` starts: LZ4, a middle ground that is right for 1 Gbit/s links.
const START: usize = 2;

/// Extra checks after the stream's first 64 and 256 pages, whatever window they fall in: a
/// slow link makes the sender climb after 256 KiB or 1 MiB of pages instead of 4 MiB, and a
/// link seen to keep pace ([`KEPT_PACE`]) lets a busy sender step down as soon.
pub const FIRST_CHECKS: [u64; 2] = [64, 256];

/// One measurement window and what the rule made of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    /// Pages sent in the window.
    pub pages: u64,
    /// Bytes the encoder put out for them (before zstd, if any).
    pub bytes: u64,
    /// Wall-clock seconds it took.
    pub seconds: f64,
    /// CPU seconds of the sending thread in it.
    pub cpu_seconds: f64,
    /// The stage during the window.
    pub stage: Stage,
    /// The stage chosen for what follows.
    pub stage_next: Stage,
    /// How much the link's backlog (`net::Link::backlog`: bytes written that the link has
    /// not yet carried) grew over the window, if the link could tell.
    pub backlog_growth: Option<i64>,
}

impl Window {
    /// The share of its time the sender spent waiting (for the link, a full socket).
    pub fn waiting(&self) -> f64 {
        1.0 - (self.cpu_seconds / self.seconds.max(1e-9)).clamp(0.0, 1.0)
    }

    /// Whether the link is known to have carried what the window put out, so that a busy
    /// sender in it was not merely filling buffers: the link's backlog grew by at most
    /// [`KEPT_PACE`] of its bytes; or, over a link that cannot tell, it put out
    /// [`EARLY_DESCENT_BYTES`].
    pub fn past_buffers(&self) -> bool {
        match self.backlog_growth {
            Some(g) => self.bytes > 0 && g as f64 <= KEPT_PACE * self.bytes as f64,
            None => self.bytes >= EARLY_DESCENT_BYTES,
        }
    }
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid, exclusively borrowed `ts`;
    // CLOCK_THREAD_CPUTIME_ID exists on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Why a window closes before it is full ([`AutoStage::early`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early {
    /// It goes on.
    No,
    /// To climb: the rule ([`AutoStage::next`]) decides on the window as on a full one.
    Climb,
    /// To step down, without keeping the window's rate ([`AutoStage::step_down_early`]).
    StepDown,
}

/// The choice of stage per window, starting at LZ4. After each window: to a neighbouring
/// stage of the [`LADDER`] that moved pages at least [`HYSTERESIS`] times as fast when last
/// tried (within [`RATE_WINDOWS`]); else on to a neighbour not tried, the way the
/// measurement points: up (fewer bytes) while the sender mostly waits, down while its CPU
/// is the bottleneck. Never down while the sender mostly waits: fewer bytes cannot make a
/// busy link slower, and a rate measured on other memory would say otherwise by chance
/// (a window of text goes faster than one of random bytes at any stage). Never up while
/// its CPU is the bottleneck.
#[derive(Debug, Clone)]
pub struct AutoStage {
    at: usize,
    /// The lowest stage it may take (an encoder that cannot send plain pages).
    lowest: usize,
    /// Windows measured so far.
    windows: u64,
    /// Pages per second last seen at each stage of the ladder, and the window it was.
    rate: [Option<(f64, u64)>; LADDER.len()],
}

/// Windows after which a stage's measured rate is forgotten: memory differs from one
/// stretch to the next (a window of text is sent faster than one of random bytes at any
/// stage), so only recent rates compare stages, not stretches.
const RATE_WINDOWS: u64 = 4;

impl Default for AutoStage {
    fn default() -> Self {
        AutoStage {
            at: START,
            lowest: 0,
            windows: 0,
            rate: [None; LADDER.len()],
        }
    }
}

impl AutoStage {
    /// Never below `lowest` (stages of the [`LADDER`] under LZ4).
    pub fn with_lowest(lowest: Stage) -> Self {
        let lowest = LADDER
            .iter()
            .position(|&s| s == lowest)
            .unwrap_or(0)
            .min(START);
        AutoStage {
            lowest,
            ..AutoStage::default()
        }
    }

    /// The stage now.
    pub fn stage(&self) -> Stage {
        LADDER[self.at]
    }

    /// Whether a window so far (`pages` in `seconds`, `waiting` the share of them spent
    /// waiting) is reason enough to close it at a check, before it is full: to climb where
    /// the sender mostly waits ([`EARLY_LINK_BOUND`]) and the stage above is untried or was
    /// faster; to step down where its CPU is the bottleneck ([`CPU_BOUND`]), the link has
    /// been seen to take what it put out (`past_buffers`: [`EARLY_DESCENT_BYTES`],
    /// [`KEPT_PACE`]) and the stage below is untried or was faster.
    pub fn early(&self, pages: u64, seconds: f64, waiting: f64, past_buffers: bool) -> Early {
        let now = self.windows + 1;
        let rate = pages as f64 / seconds.max(1e-9);
        let worth = |j: usize| {
            self.known_rate(j, now)
                .is_none_or(|r| r > rate * HYSTERESIS)
        };
        if waiting > EARLY_LINK_BOUND && self.at + 1 < LADDER.len() && worth(self.at + 1) {
            Early::Climb
        } else if waiting < CPU_BOUND && past_buffers && self.at > self.lowest && worth(self.at - 1)
        {
            Early::StepDown
        } else {
            Early::No
        }
    }

    /// After a window closed early to step down ([`Early::StepDown`]): the stage below. The
    /// window's rate is not kept. The buffers of a link took some of its bytes without the
    /// sender waiting, so the rate may be the CPU's where the link's would be slower; kept,
    /// it would call the sender back to this stage once the buffers are full (demos
    /// unshaped swung between LZ4 and stored frames that way).
    pub fn step_down_early(&mut self) -> Stage {
        self.windows += 1;
        self.at = self.at.saturating_sub(1).max(self.lowest);
        self.stage()
    }

    /// Pages per second last seen at stage `j`, unless forgotten by window `now`.
    fn known_rate(&self, j: usize, now: u64) -> Option<f64> {
        self.rate[j]
            .filter(|&(_, at)| now - at < RATE_WINDOWS)
            .map(|(r, _)| r)
    }

    /// After a window of `pages` pages that took `seconds`, `cpu_seconds` of them busy on
    /// the sender's CPU: the stage for what follows.
    pub fn next(&mut self, pages: u64, seconds: f64, cpu_seconds: f64) -> Stage {
        if pages == 0 || seconds <= 0.0 {
            return self.stage();
        }
        let rate = pages as f64 / seconds;
        self.windows += 1;
        self.rate[self.at] = Some((rate, self.windows));
        let headroom = 1.0 - (cpu_seconds / seconds).clamp(0.0, 1.0);
        // no step down while the sender mostly waits (fewer bytes cannot be slower on the
        // link), no step up while its CPU is the bottleneck
        let down = self
            .at
            .checked_sub(1)
            .filter(|&j| j >= self.lowest && headroom <= LINK_BOUND);
        let up = (self.at + 1 < LADDER.len())
            .then_some(self.at + 1)
            .filter(|_| headroom >= CPU_BOUND);
        let known = |j: usize| self.known_rate(j, self.windows);
        let better = [down, up]
            .into_iter()
            .flatten()
            .filter(|&j| known(j).is_some_and(|r| r > rate * HYSTERESIS))
            .max_by(|&a, &b| known(a).unwrap_or(0.0).total_cmp(&known(b).unwrap_or(0.0)));
        let untried = |j: Option<usize>| j.filter(|&j| known(j).is_none());
        let explore = if headroom > LINK_BOUND {
            untried(up)
        } else if headroom < CPU_BOUND {
            untried(down)
        } else {
            None
        };
        if let Some(to) = better.or(explore) {
            self.at = to;
        }
        self.stage()
    }
}

/// Feeds [`AutoStage`] a window at a time while pages go out, and keeps every window.
///
/// The clocks are the caller's: [`Chooser::pages_sent`] reads the wall clock and the calling
/// thread's CPU time, as a sender does; [`Chooser::count_page`] and [`Chooser::check`] take
/// them as given, so that the comparison harness runs the same rule on a modelled link.
pub struct Chooser {
    auto: AutoStage,
    pages: u64,
    /// Pages counted since it started, across windows ([`FIRST_CHECKS`]).
    counted: u64,
    /// Bytes put out in the open window ([`Chooser::bytes_out`]).
    bytes: u64,
    /// Where the runner's clocks start ([`Chooser::pages_sent`]).
    started: std::time::Instant,
    /// The clocks when the window opened: wall time, CPU time.
    wall0: Duration,
    cpu0: Duration,
    /// Time of the window spent waiting for acknowledgements, left out of its seconds.
    set_aside: Duration,
    /// The link's backlog when the window opened (0 at the start: nothing written yet).
    backlog0: Option<u64>,
    /// Every window measured so far.
    pub windows: Vec<Window>,
}

impl Default for Chooser {
    fn default() -> Self {
        Chooser::new(AutoStage::default())
    }
}

impl Chooser {
    /// Measures windows for `auto`, its clocks at zero now.
    pub fn new(auto: AutoStage) -> Self {
        Chooser::starting_at(auto, Duration::ZERO, thread_cpu_time())
    }

    /// Measures windows for `auto` on the caller's clocks, which read `wall` and `cpu` now.
    pub fn starting_at(auto: AutoStage, wall: Duration, cpu: Duration) -> Self {
        Chooser {
            auto,
            pages: 0,
            counted: 0,
            bytes: 0,
            started: std::time::Instant::now(),
            wall0: wall,
            cpu0: cpu,
            set_aside: Duration::ZERO,
            backlog0: Some(0),
            windows: Vec::new(),
        }
    }

    /// The stage now.
    pub fn stage(&self) -> Stage {
        self.auto.stage()
    }

    /// Leaves `waited` (an iteration's wait for its acknowledgement) out of the window: a
    /// round trip per iteration says nothing about a stage, and the later iterations, a few
    /// hundred pages each, would otherwise make any stage measured there look slow next to
    /// one measured in the first pass.
    pub fn set_aside(&mut self, waited: Duration) {
        self.set_aside += waited;
    }

    /// The encoder put out `n` more bytes (before zstd): what lets a check close a window to
    /// step down ([`EARLY_DESCENT_BYTES`]). Without it, windows close early only to climb.
    pub fn bytes_out(&mut self, n: u64) {
        self.bytes += n;
    }

    /// One more page went out; true when the clocks are wanted ([`Chooser::check`]): after
    /// [`WINDOW_PAGES`], and at a check every [`CHECK_PAGES`].
    pub fn count_page(&mut self) -> bool {
        self.pages += 1;
        self.counted += 1;
        self.pages >= WINDOW_PAGES
            || self.pages % CHECK_PAGES == 0
            || FIRST_CHECKS.contains(&self.counted)
    }

    /// Pages that may go out before [`Chooser::count_page`] next asks for the clocks: a
    /// batch of plain pages sent in bulk ends there, so the check comes on time.
    pub fn pages_to_check(&self) -> u64 {
        let first = FIRST_CHECKS.iter().find(|&&c| c > self.counted);
        let next = first.map_or(u64::MAX, |c| c - self.counted);
        (WINDOW_PAGES - self.pages)
            .min(CHECK_PAGES - self.pages % CHECK_PAGES)
            .min(next)
    }

    /// `n` more pages went out in one batch of at most [`Chooser::pages_to_check`]: as
    /// [`Chooser::count_page`] for the last of them (only the last can want the clocks).
    pub fn count_pages(&mut self, n: u64) -> bool {
        debug_assert!(n <= self.pages_to_check());
        self.pages += n.saturating_sub(1);
        self.counted += n.saturating_sub(1);
        n > 0 && self.count_page()
    }

    /// `n` more pages went out in one batch. When that closes a window, measures it on the
    /// wall clock and the thread's CPU time, with the link's `backlog` then, and returns the
    /// stage for what follows (see [`Chooser::check`]).
    pub fn pages_sent(&mut self, n: u64, backlog: impl FnOnce() -> Option<u64>) -> Option<Stage> {
        if !self.count_pages(n) {
            return None;
        }
        self.check(self.started.elapsed(), thread_cpu_time(), backlog())
    }

    /// The clocks at a point [`Chooser::count_page`] asked for them, and the link's
    /// `backlog` then (`net::Link::backlog`). Closes the window when it is full, or early
    /// where [`AutoStage::early`] says; then returns the stage for what follows.
    pub fn check(&mut self, wall: Duration, cpu: Duration, backlog: Option<u64>) -> Option<Stage> {
        let growth = backlog
            .zip(self.backlog0)
            .map(|(now, then)| now as i64 - then as i64);
        let full = self.pages >= WINDOW_PAGES;
        let w = Window {
            pages: self.pages,
            bytes: self.bytes,
            seconds: wall
                .saturating_sub(self.wall0)
                .saturating_sub(self.set_aside)
                .as_secs_f64(),
            cpu_seconds: cpu.saturating_sub(self.cpu0).as_secs_f64(),
            stage: self.auto.stage(),
            stage_next: self.auto.stage(),
            backlog_growth: growth,
        };
        let step_down = !full
            && match self
                .auto
                .early(w.pages, w.seconds, w.waiting(), w.past_buffers())
            {
                Early::No => return None,
                e => e == Early::StepDown,
            };
        let next = match step_down {
            true => self.auto.step_down_early(),
            false => self.auto.next(w.pages, w.seconds, w.cpu_seconds),
        };
        self.windows.push(Window {
            stage_next: next,
            ..w
        });
        (self.pages, self.bytes, self.wall0, self.cpu0) = (0, 0, wall, cpu);
        self.set_aside = Duration::ZERO;
        self.backlog0 = backlog;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [
            Compression::Auto,
            Compression::Lz4,
            Compression::None,
            Compression::Plain,
        ] {
            assert_eq!(Compression::parse(c.name()).unwrap(), c);
        }
        let z = Compression::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
        };
        assert_eq!(Compression::parse("zstd").unwrap(), z);
        assert_eq!(Compression::parse(&z.describe()).unwrap(), z);
        assert_eq!(
            Compression::parse("zstd:-5").unwrap(),
            Compression::Zstd { level: -5 }
        );
        for bad in ["zip", "zstd:", "zstd:0", "zstd:99", "zstd:fast"] {
            assert!(Compression::parse(bad).is_err(), "{bad}");
        }
    }

    const Z1: Stage = Stage::Zstd(1);
    const Z3: Stage = Stage::Zstd(3);

    #[test]
    fn a_slow_link_climbs_to_zstd_3_and_stays() {
        let mut a = AutoStage::default();
        assert_eq!(a.stage(), Stage::Lz4);
        // 10% of the time in the encoder, the rest waiting for the link
        assert_eq!(a.next(30_000, 10.0, 1.0), Z1);
        assert_eq!(a.next(30_000, 10.0, 1.5), Z3);
        for _ in 0..10 {
            assert_eq!(a.next(30_000, 10.0, 2.0), Z3);
        }
    }

    #[test]
    fn a_busy_cpu_steps_down_to_plain_pages_and_stays_while_it_is_busy() {
        let mut a = AutoStage::default();
        assert_eq!(a.next(30_000, 0.2, 0.19), Stage::Stored);
        assert_eq!(a.next(30_000, 0.1, 0.09), Stage::Plain);
        for _ in 0..5 {
            assert_eq!(a.next(30_000, 0.05, 0.049), Stage::Plain);
        }
        // an encoder without plain pages stops at stored frames
        let mut b = AutoStage::with_lowest(Stage::Stored);
        assert_eq!(b.next(30_000, 0.2, 0.19), Stage::Stored);
        for _ in 0..5 {
            assert_eq!(b.next(30_000, 0.1, 0.09), Stage::Stored);
        }
    }

    #[test]
    fn a_step_back_needs_the_other_stage_to_have_been_faster() {
        let mut a = AutoStage::default();
        // LZ4 CPU-bound: 150k pages/s
        assert_eq!(a.next(30_000, 0.2, 0.19), Stage::Stored);
        // stored frames: the link became the bottleneck, and fewer pages per second
        assert_eq!(a.next(30_000, 0.4, 0.05), Stage::Lz4);
        // CPU-bound with LZ4 again, but stored frames were slower: stay
        assert_eq!(a.next(30_000, 0.2, 0.19), Stage::Lz4);
        // LZ4 gets much slower (the link got faster?): stored frames were faster
        assert_eq!(a.next(30_000, 0.5, 0.45), Stage::Stored);
    }

    #[test]
    fn zstd_that_makes_the_cpu_the_bottleneck_gives_way_to_a_faster_lz4() {
        let mut a = AutoStage::default();
        // LZ4 waits for the link: 100k pages/s
        assert_eq!(a.next(30_000, 0.3, 0.1), Z1);
        // zstd 1 keeps the CPU busy and moves fewer pages: back to LZ4
        assert_eq!(a.next(30_000, 0.5, 0.45), Stage::Lz4);
        // LZ4 waits again, but zstd 1 was slower: it stays (never down while waiting)
        for _ in 0..3 {
            assert_eq!(a.next(30_000, 0.3, 0.1), Stage::Lz4);
        }
        // until zstd 1's rate is RATE_WINDOWS old: memory may have changed, it is tried again
        assert_eq!(a.next(30_000, 0.3, 0.1), Z1);
        // zstd 1 busy but faster than LZ4 now: it stays
        let mut b = AutoStage::default();
        assert_eq!(b.next(30_000, 0.5, 0.1), Z1);
        assert_eq!(b.next(30_000, 0.3, 0.29), Z1);
    }

    /// A chooser on given clocks, past its first checks ([`FIRST_CHECKS`]).
    fn past_first_checks(auto: AutoStage, wall: Duration, cpu: Duration) -> Chooser {
        let mut c = Chooser::starting_at(auto, wall, cpu);
        c.counted = FIRST_CHECKS[FIRST_CHECKS.len() - 1];
        c
    }

    /// Sends one page at a time on the runner's clocks, the link's backlog unknown.
    fn page_sent(c: &mut Chooser) -> Option<Stage> {
        c.pages_sent(1, || None)
    }

    #[test]
    fn the_chooser_closes_a_window_every_window_pages() {
        // at the top of the ladder, so that no check closes a window early however the
        // test thread is scheduled (no bytes out: no step down)
        let mut c = Chooser::default();
        c.auto.at = LADDER.len() - 1;
        let mut closed = 0;
        for _ in 0..3 * WINDOW_PAGES + 5 {
            closed += usize::from(page_sent(&mut c).is_some());
        }
        assert_eq!(closed, 3);
        assert_eq!(c.windows.len(), 3);
        assert!(c
            .windows
            .iter()
            .all(|w| w.pages == WINDOW_PAGES && w.seconds >= 0.0));
    }

    #[test]
    fn a_window_in_which_the_sender_waits_closes_at_a_check_to_climb() {
        let mut c = Chooser::default();
        for _ in 1..FIRST_CHECKS[0] {
            assert_eq!(page_sent(&mut c), None);
        }
        // the sender waited for the link: the window closes at the stream's first check,
        // one stage up
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(page_sent(&mut c), Some(Z1));
        assert_eq!(c.windows.len(), 1);
        assert_eq!(c.windows[0].pages, FIRST_CHECKS[0]);
        assert!(c.windows[0].waiting() > EARLY_LINK_BOUND);
        // at the top of the ladder there is nothing to climb to: no early windows
        let mut top = Chooser::default();
        top.auto.at = LADDER.len() - 1;
        for _ in 1..FIRST_CHECKS[0] {
            page_sent(&mut top);
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(page_sent(&mut top), None);
    }

    #[test]
    fn the_first_checks_come_early_and_step_down_only_where_the_link_kept_pace() {
        let ms = Duration::from_millis;
        let mut c = Chooser::starting_at(AutoStage::default(), ms(0), ms(0));
        assert_eq!(c.pages_to_check(), FIRST_CHECKS[0]);
        assert!(c.count_pages(FIRST_CHECKS[0]));
        // busy, 100 KiB out, 80 of them still on their way: buffers may be hiding a slow
        // link, and 100 KiB is short of EARLY_DESCENT_BYTES
        c.bytes_out(100 << 10);
        assert_eq!(c.check(ms(2), ms(2), Some(80 << 10)), None);
        // nor does a link that cannot tell its backlog let it step down
        assert_eq!(c.check(ms(2), ms(2), None), None);
        assert_eq!(c.pages_to_check(), FIRST_CHECKS[1] - FIRST_CHECKS[0]);
        assert!(c.count_pages(FIRST_CHECKS[1] - FIRST_CHECKS[0]));
        // busy, 300 KiB out and the link has taken all but 10: it keeps pace, one down
        c.bytes_out(200 << 10);
        assert_eq!(c.check(ms(4), ms(4), Some(10 << 10)), Some(Stage::Stored));
        assert_eq!(c.windows[0].pages, FIRST_CHECKS[1]);
        // the first checks are over: every CHECK_PAGES from here
        assert_eq!(c.pages_to_check(), CHECK_PAGES);
        assert!(!c.count_pages(CHECK_PAGES - 1));
        assert!(c.count_page());
    }

    /// Counts a check's worth of pages (none asks for the clocks before the last), the
    /// encoder's `bytes` out, and hands the check the clocks (`wall`, `cpu` in ms) and
    /// the link's `backlog`.
    fn pages_then_check(
        c: &mut Chooser,
        bytes: u64,
        wall: u64,
        cpu: u64,
        backlog: Option<u64>,
    ) -> Option<Stage> {
        for _ in 1..CHECK_PAGES {
            assert!(!c.count_page());
        }
        c.bytes_out(bytes);
        assert!(c.count_page());
        c.check(
            Duration::from_millis(wall),
            Duration::from_millis(cpu),
            backlog,
        )
    }

    #[test]
    fn a_growing_backlog_holds_a_busy_window_back_and_a_steady_one_does_not() {
        let ms = Duration::from_millis;
        let mut c = past_first_checks(AutoStage::default(), ms(0), ms(0));
        let check_at = |c: &mut Chooser, bytes: u64, t: u64, backlog: u64| {
            pages_then_check(c, bytes, t, t, Some(backlog))
        };
        // busy, 2 MiB out per check, and half of it still waiting: buffers, however many
        // bytes went out; the window goes on until it is full
        for k in 1..WINDOW_PAGES / CHECK_PAGES {
            assert_eq!(check_at(&mut c, 2 << 20, 10 * k, k << 20), None);
        }
        assert_eq!(check_at(&mut c, 2 << 20, 40, 4 << 20), Some(Stage::Stored));
        assert_eq!(c.windows[0].backlog_growth, Some(4 << 20));
        // busy, and the backlog stays about where it was (a long link's bytes in flight):
        // the link keeps pace, one down at the first check
        assert_eq!(
            check_at(&mut c, 1 << 20, 50, (4 << 20) + (1 << 17)),
            Some(Stage::Plain)
        );
        assert_eq!(c.windows[1].backlog_growth, Some(1 << 17));
        assert_eq!(c.windows[1].pages, CHECK_PAGES);
    }

    #[test]
    fn on_given_clocks_a_check_closes_a_window_only_where_the_sender_waited() {
        let ms = Duration::from_millis;
        let mut c = past_first_checks(AutoStage::default(), ms(1000), ms(500));
        for _ in 1..CHECK_PAGES {
            assert!(!c.count_page());
        }
        assert!(c.count_page());
        // busy three quarters of the time: the window goes on
        assert_eq!(c.check(ms(1100), ms(575), None), None);
        for _ in 0..CHECK_PAGES {
            c.count_page();
        }
        // 80 ms busy of 600 since it opened: it closes at the check, one stage up
        assert_eq!(c.check(ms(1600), ms(580), None), Some(Z1));
        let w = c.windows[0];
        assert_eq!(
            (w.pages, w.stage, w.stage_next),
            (2 * CHECK_PAGES, Stage::Lz4, Z1)
        );
        assert!((w.seconds - 0.6).abs() < 1e-9 && (w.cpu_seconds - 0.08).abs() < 1e-9);
        // a full window closes whatever the clocks say, from where the last one closed
        for _ in 0..WINDOW_PAGES - 1 {
            c.count_page();
        }
        assert!(c.count_page());
        assert_eq!(c.check(ms(1700), ms(679), None), Some(Z1));
        let w = c.windows[1];
        assert_eq!(w.pages, WINDOW_PAGES);
        assert!((w.seconds - 0.1).abs() < 1e-9 && (w.cpu_seconds - 0.099).abs() < 1e-9);
    }

    #[test]
    fn a_busy_window_steps_down_at_a_check_past_the_buffers_and_a_wrong_step_is_undone() {
        let ms = Duration::from_millis;
        let mut c = past_first_checks(AutoStage::default(), ms(0), ms(0));
        let pages_then_check = |c: &mut Chooser, bytes: u64, wall: u64, cpu: u64| {
            pages_then_check(c, bytes, wall, cpu, None)
        };
        // LZ4, the CPU busy all along: with 512 KiB out, the buffers may have taken it all
        assert_eq!(pages_then_check(&mut c, 512 << 10, 10, 10), None);
        // with 1 MiB out, one stage down
        assert_eq!(
            pages_then_check(&mut c, 512 << 10, 20, 20),
            Some(Stage::Stored)
        );
        let w = c.windows[0];
        assert_eq!(
            (w.pages, w.bytes, w.stage, w.stage_next),
            (2 * CHECK_PAGES, 1 << 20, Stage::Lz4, Stage::Stored)
        );
        // stored frames: now the sender waits (the buffers are full): back to LZ4 at the
        // first check, LZ4's rate from a window that closed to step down not being kept
        assert_eq!(c.auto.rate[LADDER.len() - 3], None);
        assert_eq!(pages_then_check(&mut c, 2 << 20, 120, 22), Some(Stage::Lz4));
        assert_eq!(c.windows[1].pages, CHECK_PAGES);
        // LZ4 busy again, past the buffers: stored frames were slower, no early step down;
        // and no early step up while busy
        assert_eq!(pages_then_check(&mut c, 1 << 20, 130, 32), None);
        assert_eq!(c.windows.len(), 2);

        // a full LZ4 window, busy (and under 1 MiB out: no early step): stored frames next,
        // LZ4's rate kept (205k pages/s)
        let mut d = past_first_checks(AutoStage::default(), ms(0), ms(0));
        for _ in 0..3 {
            assert_eq!(pages_then_check(&mut d, 128 << 10, 10, 10), None);
        }
        assert_eq!(
            pages_then_check(&mut d, 128 << 10, 20, 20),
            Some(Stage::Stored)
        );
        assert_eq!(d.windows[0].pages, WINDOW_PAGES);
        // stored frames wait for the link at 10k pages/s: LZ4, tried and faster, at once
        assert_eq!(pages_then_check(&mut d, 3 << 20, 120, 22), Some(Stage::Lz4));
        assert_eq!(d.windows[1].pages, CHECK_PAGES);
    }

    #[test]
    fn batches_up_to_the_next_check_end_windows_where_single_pages_would() {
        let mut c = Chooser::default();
        // batches of 64 pages, as the runner sends plain pages, cut at every check: the
        // first checks, then every CHECK_PAGES of a window
        let mut sent = 0;
        let mut ends = Vec::new();
        while c.windows.len() < 3 {
            let n = c.pages_to_check().min(64);
            assert!((1..=CHECK_PAGES).contains(&n));
            if c.count_pages(n) {
                ends.push(c.counted);
                c.check(c.started.elapsed(), thread_cpu_time(), Some(u64::MAX));
            }
            sent += n;
        }
        assert_eq!(&ends[..2], &FIRST_CHECKS);
        // every window closed at a check (early, if this thread was descheduled long
        // enough to look like waiting) or full, never past one
        let mut closed = 0;
        for w in &c.windows {
            let at_first = closed + w.pages;
            assert!(
                (w.pages % CHECK_PAGES == 0 || FIRST_CHECKS.contains(&at_first))
                    && w.pages <= WINDOW_PAGES,
                "{w:?}"
            );
            closed += w.pages;
        }
        assert_eq!(closed, sent);
        assert_eq!(c.pages_to_check() % CHECK_PAGES, 0);
    }

    #[test]
    fn empty_windows_change_nothing() {
        let mut a = AutoStage::default();
        assert_eq!(a.next(0, 0.001, 0.001), Stage::Lz4);
        assert_eq!(a.next(5000, 0.0, 0.0), Stage::Lz4);
        assert_eq!(a.rate, [None; LADDER.len()]);
        assert_eq!(a.windows, 0);
    }

    #[test]
    fn thread_cpu_time_counts_work_not_sleep() {
        let t0 = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(50));
        let slept = thread_cpu_time() - t0;
        let t1 = thread_cpu_time();
        let start = std::time::Instant::now();
        let mut x = 1u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let worked = thread_cpu_time() - t1;
        assert!(
            slept < Duration::from_millis(20),
            "{slept:?} while sleeping"
        );
        assert!(
            worked > Duration::from_millis(10),
            "{worked:?} while working"
        );
    }
}
