//! LZ4 on or off, chosen while migrating. On a slow link LZ4's 2-3x fewer bytes win; on a
//! fast one its compression (about 1 GB/s of pages here) makes the CPU the bottleneck and
//! plain frames move memory faster (`docs/PERFORMANCE.md`, "The best setting depends on the
//! link"). The sender measures, per window of pages, its thread's CPU time against the
//! wall time: the share left is its CPU headroom, time spent waiting for the link (a full
//! socket, the destination's acknowledgements).

use std::time::Duration;

use anyhow::{bail, Result};
use serde::Serialize;

/// How the stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    /// Pick LZ4 on or off per iteration from the measured headroom ([`AutoLz4`]).
    Auto,
    /// LZ4 on every frame where it saves bytes.
    Lz4,
    /// Frames stored.
    None,
    /// zstd at `level` over the whole stream, its window across frames; the frames
    /// themselves stored (`super::link_zstd`). For slow links.
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

    /// Looks a setting up by name: auto, lz4, none, zstd or zstd:LEVEL.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Compression::Auto),
            "lz4" => Ok(Compression::Lz4),
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd {
                level: DEFAULT_ZSTD_LEVEL,
            }),
            _ => match s.strip_prefix("zstd:") {
                Some(l) => {
                    let level: i32 = l
                        .parse()
                        .map_err(|_| anyhow::anyhow!("zstd level {l:?} is not a number"))?;
                    Ok(Compression::Zstd {
                        level: super::link_zstd::check_level(level)?,
                    })
                }
                None => bail!("unknown compression {s:?}: use auto, lz4, none, zstd or zstd:LEVEL"),
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
/// Below this headroom the sending CPU is the bottleneck: try frames without LZ4.
pub const CPU_BOUND: f64 = 0.25;
/// Above this headroom the sender mostly waits for the link: try LZ4.
pub const LINK_BOUND: f64 = 0.5;
/// The other setting must have moved pages this much faster to switch back to it.
pub const HYSTERESIS: f64 = 1.1;

/// One measurement window and what the rule made of it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Window {
    /// Pages sent in the window.
    pub pages: u64,
    /// Wall-clock seconds it took.
    pub seconds: f64,
    /// CPU seconds of the sending thread in it.
    pub cpu_seconds: f64,
    /// LZ4 during the window.
    pub lz4: bool,
    /// LZ4 chosen for what follows.
    pub lz4_next: bool,
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

/// The choice of LZ4 per window: start with it on; leave it when the sender's CPU is the
/// bottleneck, come back when the link is; once both have been seen, the one that moved
/// more pages per second wins a contested switch.
#[derive(Debug, Clone)]
pub struct AutoLz4 {
    on: bool,
    /// Pages per second last seen with LZ4 off (`[0]`) and on (`[1]`).
    rate: [Option<f64>; 2],
}

impl Default for AutoLz4 {
    fn default() -> Self {
        AutoLz4 {
            on: true,
            rate: [None, None],
        }
    }
}

impl AutoLz4 {
    /// LZ4 now.
    pub fn on(&self) -> bool {
        self.on
    }

    /// After a window of `pages` pages that took `seconds`, `cpu_seconds` of them busy on
    /// the sender's CPU: LZ4 for what follows.
    pub fn next(&mut self, pages: u64, seconds: f64, cpu_seconds: f64) -> bool {
        if pages == 0 || seconds <= 0.0 {
            return self.on;
        }
        let rate = pages as f64 / seconds;
        self.rate[usize::from(self.on)] = Some(rate);
        let headroom = 1.0 - (cpu_seconds / seconds).clamp(0.0, 1.0);
        let other = self.rate[usize::from(!self.on)];
        let other_better = other.is_none_or(|r| r > rate * HYSTERESIS);
        let switch = if self.on {
            headroom < CPU_BOUND && other_better
        } else {
            headroom > LINK_BOUND && other_better
        };
        if switch {
            self.on = !self.on;
        }
        self.on
    }
}

/// Feeds [`AutoLz4`] a window at a time while pages go out, and keeps every window.
pub struct Chooser {
    auto: AutoLz4,
    pages: u64,
    wall0: std::time::Instant,
    cpu0: Duration,
    /// Every window measured so far.
    pub windows: Vec<Window>,
}

impl Default for Chooser {
    fn default() -> Self {
        Chooser {
            auto: AutoLz4::default(),
            pages: 0,
            wall0: std::time::Instant::now(),
            cpu0: thread_cpu_time(),
            windows: Vec::new(),
        }
    }
}

impl Chooser {
    /// One more page went out. When that closes a window of [`WINDOW_PAGES`], measures it
    /// and returns LZ4 for what follows.
    pub fn page_sent(&mut self) -> Option<bool> {
        self.pages += 1;
        if self.pages < WINDOW_PAGES {
            return None;
        }
        let (wall, cpu) = (std::time::Instant::now(), thread_cpu_time());
        let w = Window {
            pages: self.pages,
            seconds: (wall - self.wall0).as_secs_f64(),
            cpu_seconds: cpu.saturating_sub(self.cpu0).as_secs_f64(),
            lz4: self.auto.on(),
            lz4_next: false,
        };
        let next = self.auto.next(w.pages, w.seconds, w.cpu_seconds);
        self.windows.push(Window {
            lz4_next: next,
            ..w
        });
        (self.pages, self.wall0, self.cpu0) = (0, wall, cpu);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [Compression::Auto, Compression::Lz4, Compression::None] {
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

    #[test]
    fn a_slow_link_keeps_lz4() {
        let mut a = AutoLz4::default();
        // 10% of the time in the encoder, the rest waiting for the link
        for _ in 0..10 {
            assert!(a.next(30_000, 10.0, 1.0));
        }
    }

    #[test]
    fn a_busy_cpu_drops_lz4_and_stays_off_while_it_is_busy() {
        let mut a = AutoLz4::default();
        assert!(!a.next(30_000, 0.2, 0.19));
        for _ in 0..5 {
            assert!(!a.next(30_000, 0.1, 0.09));
        }
    }

    #[test]
    fn lz4_comes_back_when_the_link_is_the_bottleneck_again_unless_it_was_slower() {
        let mut a = AutoLz4::default();
        assert!(!a.next(30_000, 0.2, 0.19)); // CPU-bound with LZ4: 150k pages/s
                                             // without LZ4 the link became the bottleneck, and it moved fewer pages per second
        assert!(a.next(30_000, 0.4, 0.05));
        // CPU-bound with LZ4 again, but plain frames were slower: stay
        assert!(a.next(30_000, 0.2, 0.19));
        // LZ4 gets much slower (the link got faster?): plain frames were faster
        assert!(!a.next(30_000, 0.5, 0.45));
    }

    #[test]
    fn the_chooser_closes_a_window_every_window_pages() {
        let mut c = Chooser::default();
        let mut closed = 0;
        for _ in 0..3 * WINDOW_PAGES + 5 {
            closed += usize::from(c.page_sent().is_some());
        }
        assert_eq!(closed, 3);
        assert_eq!(c.windows.len(), 3);
        assert!(c
            .windows
            .iter()
            .all(|w| w.pages == WINDOW_PAGES && w.seconds >= 0.0));
    }

    #[test]
    fn empty_windows_change_nothing() {
        let mut a = AutoLz4::default();
        assert!(a.next(0, 0.001, 0.001));
        assert!(a.next(5000, 0.0, 0.0));
        assert_eq!(a.rate, [None, None]);
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
