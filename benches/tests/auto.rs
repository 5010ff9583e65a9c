//! `--compress auto` in the harness: the runner's rule on the real encoder over a modelled
//! link decodes back to every page, climbs to zstd where the link is the bottleneck and
//! steps down to stored frames, then plain pages, where the encoder is.

use pagewire_benches::auto;
use pagewire_benches::PageSet;

#[test]
fn auto_climbs_on_a_slow_link_and_steps_down_on_a_fast_one() {
    // 32 MiB: the first pass alone is two measurement windows of 4096 pages
    let set = PageSet::synthetic(32, 3, 1).unwrap();
    let raw = (set.pages_in(0..3) * set.page_size) as u64;

    // 100 Mbit/s: each window waits far longer for the link than it encodes
    let slow = auto::run(&set, 12.5e6, 1).unwrap();
    assert_eq!(slow.raw_bytes, raw);
    assert_eq!(slow.changes[0].1, "lz4", "{slow:?}");
    assert!(
        slow.changes.iter().any(|(_, s)| s.starts_with("zstd")),
        "{slow:?}"
    );
    // modelled time is at least the link's time for the bytes sent
    assert!(slow.seconds >= slow.wire_bytes as f64 / 12.5e6, "{slow:?}");
    // scored as the rows are: the longer of the CPU's time and the link's for every byte,
    // which the windowed model (overlap within a window only) never beats
    let link = slow.wire_bytes as f64 / 12.5e6;
    assert_eq!(
        slow.overlapped_seconds,
        slow.cpu_seconds.max(link),
        "{slow:?}"
    );
    assert!(
        slow.overlapped_seconds <= slow.seconds * (1.0 + 1e-9),
        "{slow:?}"
    );
    assert!(slow.windowed_gb_s <= slow.gb_s * (1.0 + 1e-9), "{slow:?}");

    // 100 Gbit/s: the encoder is the bottleneck, LZ4 goes
    let fast = auto::run(&set, 12.5e9, 1).unwrap();
    assert_eq!(
        fast.changes.get(1).map(|c| c.1.as_str()),
        Some("stored"),
        "{fast:?}"
    );
    // ... and then the cache: pages go whole (PLAIN records)
    assert_eq!(
        fast.changes.get(2).map(|c| c.1.as_str()),
        Some("plain"),
        "{fast:?}"
    );
    assert!(fast.seconds >= fast.cpu_seconds, "{fast:?}");
    // CPU-bound: both scores are the CPU's
    assert_eq!(fast.overlapped_seconds, fast.cpu_seconds, "{fast:?}");
    // plain pages carry more bytes than zstd on the same pages
    assert!(fast.wire_bytes > slow.wire_bytes, "{fast:?} {slow:?}");
    assert!(slow.gb_s > 0.0 && fast.gb_s > slow.gb_s);
}

#[test]
fn two_lanes_carry_every_page_each_on_half_the_link() {
    let set = PageSet::synthetic(32, 3, 1).unwrap();
    let raw = (set.pages_in(0..3) * set.page_size) as u64;
    let one = auto::run(&set, 12.5e6, 1).unwrap();
    let two = auto::run(&set, 12.5e6, 2).unwrap();
    // every page went, and decoded back, on one lane or the other
    assert_eq!(two.raw_bytes, raw);
    // each lane had half the link: the slowest lane took at least its bytes' time there
    assert!(
        two.seconds >= two.wire_bytes as f64 / 2.0 / 12.5e6,
        "{two:?}"
    );
    // on a slow link lanes do not make the link faster: about the time of one lane
    assert!(two.seconds > 0.8 * one.seconds, "{two:?} {one:?}");
    // scored as the rows are, the slowest lane: on its half of the link at least the
    // time the lanes' bytes take on the whole link
    assert!(
        two.overlapped_seconds >= two.wire_bytes as f64 / 12.5e6 * (1.0 - 1e-9),
        "{two:?}"
    );
}
