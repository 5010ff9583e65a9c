//! Chooses zstd's level on the tunnel's link while the migration runs, from where the zstd
//! thread spends its time: waiting for the link means the CPU has time for a stronger
//! level (fewer bytes on the bottleneck); compressing all the time, waiting neither for the
//! link nor for the codec's next piece, means zstd is the bottleneck, so a faster level. No fixed level is right everywhere: on the 2-core
//! demo machine level 3 beat level 1 and level 6 at 100 Mbit/s, while a faster link or a
//! busier machine wants a faster level (`docs/TUNNEL.md`, *Link compression*).

use std::time::Duration;

use serde::Serialize;

/// Levels `auto` moves between: zstd's fast levels at the bottom (faster than level 1 and
/// still compressing), and a top past which zstd gains little for its CPU on pages.
pub const AUTO_LEVELS: std::ops::RangeInclusive<i32> = -5..=9;

/// Where `auto` starts: level 1, as QEMU's multifd.
pub const AUTO_START: i32 = 1;

/// How long one measurement runs before a decision.
pub const WINDOW: Duration = Duration::from_millis(200);

/// Windows a level that proved too slow stays barred, so that `auto` does not swing back
/// and forth between two levels.
const BARRED_WINDOWS: u32 = 10;

/// The share of a window zstd must wait for the link before a stronger level is tried.
const LINK_BOUND: f64 = 0.35;
/// ... and the share it may at most be busy compressing.
const ROOM_TO_GROW: f64 = 0.5;
/// The share of a window zstd compresses above which it is the bottleneck.
const ZSTD_BOUND: f64 = 0.85;

/// Where the zstd thread's time went during one window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Wall time of the window.
    pub wall: Duration,
    /// Time the zstd thread was blocked handing its output to the link.
    pub link: Duration,
    /// Time the zstd thread waited for the codec's next piece.
    pub idle: Duration,
}

/// Why the level changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// zstd waited for the link: room for a stronger level.
    LinkBound,
    /// zstd compressed without pause: a faster level.
    ZstdBound,
}

/// One change of level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LevelChange {
    /// Seconds since the stream started.
    pub at_s: f64,
    pub level: i32,
    pub reason: Reason,
}

/// The decisions, window by window.
#[derive(Debug, Clone)]
pub struct LevelTuner {
    level: i32,
    /// The lowest level found too slow, and for how many more windows it stays barred.
    barred: Option<(i32, u32)>,
}

impl Default for LevelTuner {
    fn default() -> Self {
        LevelTuner {
            level: AUTO_START,
            barred: None,
        }
    }
}

impl LevelTuner {
    /// A tuner that starts at `level` (clamped to [`AUTO_LEVELS`]).
    pub fn starting_at(level: i32) -> Self {
        LevelTuner {
            level: level.clamp(*AUTO_LEVELS.start(), *AUTO_LEVELS.end()),
            barred: None,
        }
    }

    /// The level in use.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Looks at one window; returns the new level and why, when it changes.
    pub fn decide(&mut self, w: &Window) -> Option<(i32, Reason)> {
        if w.wall.is_zero() {
            return None;
        }
        let share = |d: Duration| d.as_secs_f64() / w.wall.as_secs_f64();
        if let Some((_, left)) = &mut self.barred {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.barred = None;
            }
        }
        let link = share(w.link);
        let busy = 1.0 - link - share(w.idle);
        // one level up costs zstd 1.3-1.6x the CPU: go up only while that still fits
        let link_bound = link > LINK_BOUND && busy < ROOM_TO_GROW;
        let zstd_bound = busy > ZSTD_BOUND;
        let next = if zstd_bound && self.level > *AUTO_LEVELS.start() {
            self.barred = Some((self.level, BARRED_WINDOWS));
            (self.level - 1, Reason::ZstdBound)
        } else if link_bound
            && self.level < *AUTO_LEVELS.end()
            && self.barred.is_none_or(|(l, _)| self.level + 1 < l)
        {
            (self.level + 1, Reason::LinkBound)
        } else {
            return None;
        };
        // zstd has no level 0 (it means "the default"): step over it
        let level = match next.0 {
            0 if next.1 == Reason::ZstdBound => -1,
            0 => 1,
            l => l,
        };
        self.level = level;
        Some((level, next.1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 200 ms window: `link_ms` waiting for the link, `idle_ms` for the codec.
    fn window(link_ms: u64, idle_ms: u64) -> Window {
        Window {
            wall: Duration::from_millis(200),
            link: Duration::from_millis(link_ms),
            idle: Duration::from_millis(idle_ms),
        }
    }

    #[test]
    fn a_slow_link_raises_the_level_to_the_top_and_no_further() {
        let mut t = LevelTuner::default();
        let mut levels = Vec::new();
        for _ in 0..20 {
            if let Some((l, r)) = t.decide(&window(150, 0)) {
                assert_eq!(r, Reason::LinkBound);
                levels.push(l);
            }
        }
        assert_eq!(levels, (2..=9).collect::<Vec<_>>());
    }

    #[test]
    fn a_busy_zstd_lowers_the_level_past_zero_into_the_fast_levels() {
        let mut t = LevelTuner::default();
        let mut levels = Vec::new();
        for _ in 0..20 {
            if let Some((l, r)) = t.decide(&window(10, 5)) {
                assert_eq!(r, Reason::ZstdBound);
                levels.push(l);
            }
        }
        assert_eq!(levels, vec![-1, -2, -3, -4, -5]);
    }

    #[test]
    fn a_level_found_too_slow_is_not_tried_again_at_once() {
        let mut t = LevelTuner::default();
        assert_eq!(t.decide(&window(150, 0)), Some((2, Reason::LinkBound)));
        assert_eq!(t.decide(&window(120, 0)), Some((3, Reason::LinkBound)));
        // level 3 is too slow for this machine
        assert_eq!(t.decide(&window(10, 10)), Some((2, Reason::ZstdBound)));
        // the link waits again at level 2, but 3 stays barred for a while
        for _ in 0..BARRED_WINDOWS - 1 {
            assert_eq!(t.decide(&window(150, 0)), None);
        }
        assert_eq!(t.decide(&window(150, 0)), Some((3, Reason::LinkBound)));
        // zstd busy 60 % of the time: no room for a stronger level, no need for a faster one
        assert_eq!(t.decide(&window(80, 0)), None);
        // the codec is the bottleneck (zstd mostly idle): nothing to gain either way
        assert_eq!(t.decide(&window(20, 160)), None);
        assert_eq!(t.level(), 3);
    }
}
