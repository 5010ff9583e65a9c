//! Profiling aid: runs the harness's `auto` (`benches/src/auto.rs`, one lane) over a series
//! on one modelled link, three times, and prints what it moved and chose each time.
//!
//!     cargo run --release -p pagewire-benches --example auto_profile -- DIR [BYTES_PER_S]
//!
//! `synthetic` for DIR is the built-in series; the link is 100 Gbit/s (12.5e9) unless given.
//! `LANES=N` splits the pages among N lanes, as the harness's two-lane rows do.

use anyhow::Result;
use pagewire_benches::PageSet;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let set = match args.first().map(String::as_str) {
        Some("synthetic") | None => PageSet::synthetic(64, 8, 1)?,
        Some(dir) => PageSet::from_dir(dir.as_ref(), 8)?,
    };
    let rate: f64 = match args.get(1) {
        Some(s) => s.parse()?,
        None => 12.5e9,
    };
    let lanes = match std::env::var("LANES") {
        Ok(n) => n.parse()?,
        Err(_) => 1,
    };
    for _ in 0..3 {
        let r = pagewire_benches::auto::run(&set, rate, lanes)?;
        println!(
            "{:.3} GB/s of memory ({:.3} windowed), {:.4} s modelled, {:.4} s CPU, {} raw bytes, {} on the link; {}",
            r.gb_s,
            r.windowed_gb_s,
            r.seconds,
            r.cpu_seconds,
            r.raw_bytes,
            r.wire_bytes,
            r.describe()
        );
    }
    Ok(())
}
