//! How much each of the two QEMU facts behind the harness's XBZRLE row changes its bytes:
//! the cache's age rule (an entry touched in the last two sync rounds is not replaced) and
//! XBZRLE starting only after the first round (the first pass raw, nothing cached). Prints
//! the QEMU stream bytes of the four combinations on the same pages as the harness.
//!
//!     cargo run --release -p pagewire-benches --example xbzrle_rules -- [SNAPSHOT_DIR]
//!
//! "Always replace" (the cache before issue 17) is had from the same cache by starting two
//! new rounds before every page, which leaves no entry young enough to keep its slot.

use pagewire::xbzrle::{XbzrleCache, XbzrlePage, DEFAULT_CACHE_BYTES};
use pagewire_benches::PageSet;

fn main() -> anyhow::Result<()> {
    let set = match std::env::args().nth(1) {
        Some(dir) => PageSet::from_dir(std::path::Path::new(&dir), 8)?,
        None => PageSet::synthetic(64, 8, 1)?,
    };
    let ps = set.page_size;
    println!("{}: 8 passes; QEMU stream bytes / raw page bytes", set.name);
    for (label, age_rule, first_round_raw) in [
        (
            "always replace, first pass cached (the old row)",
            false,
            false,
        ),
        ("age rule, first pass cached", true, false),
        ("always replace, first pass raw", false, true),
        ("age rule, first pass raw (QEMU, the row now)", true, true),
    ] {
        let slots = XbzrleCache::slots_for(DEFAULT_CACHE_BYTES, ps);
        let mut storage = vec![0u8; XbzrleCache::storage_len(slots, ps)];
        let mut cache = XbzrleCache::new(&mut storage, slots, ps).expect("storage sized");
        let mut out = vec![0u8; ps];
        let (mut all, mut later, mut raw_later) = (0, 0, 0);
        for (i, pass) in set.passes.iter().enumerate() {
            if i > 0 {
                cache.sync();
            }
            for &(pfn, off) in pass {
                let page = set.page(off);
                if !age_rule {
                    cache.sync();
                    cache.sync();
                }
                let uncached = first_round_raw && i == 0;
                let sent = if page.iter().all(|&b| b == 0) {
                    if !uncached {
                        cache.insert_zero(pfn);
                    }
                    XbzrlePage::Zero
                } else if uncached {
                    XbzrlePage::Raw
                } else {
                    cache.encode_page(pfn, page, &mut out)
                };
                let bytes = sent.qemu_wire_bytes(ps);
                all += bytes;
                if i > 0 {
                    later += bytes;
                    raw_later += usize::from(sent == XbzrlePage::Raw);
                }
            }
        }
        let percent = |b: usize, pages: usize| b as f64 * 100.0 / (pages * ps) as f64;
        println!(
            "  {label:<50} all {:5.1}%  later {:5.1}%  ({raw_later} later pages raw)",
            percent(all, set.pages_in(0..set.passes.len())),
            percent(later, set.pages_in(1..set.passes.len())),
        );
    }
    Ok(())
}
