//! `pagewire tunnel demo --disk`: builds the disk guest (a root disk of real Debian
//! content), runs [`pagewire_runner::tunnel::demo::run_disk_demo`] and prints its table.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use pagewire_runner::machine::{disk_guest, Workload};
use pagewire_runner::net::Shape;
use pagewire_runner::tunnel::demo::{
    run_disk_demo, DiskDemo, DiskDemoConfig, DiskMethod, TunnelCodec,
};

/// What `tunnel demo` passes on for `--disk`.
pub struct DiskDemoArgs {
    pub shape: Shape,
    pub codec: TunnelCodec,
    pub timeout: Duration,
    pub guest_cache: PathBuf,
    pub work_dir: Option<PathBuf>,
    pub methods: Vec<String>,
    pub disk_mib: u64,
    pub content: Workload,
    pub json: bool,
}

/// Rounds the guest runs at the destination (rewriting 128 KiB of its disk each) before
/// it goes back.
const ROUNDS_BEFORE_WAY_BACK: usize = 8;

pub fn run(a: &DiskDemoArgs) -> Result<()> {
    let all = [
        DiskMethod::Qemu,
        DiskMethod::PagewireNoCodec,
        DiskMethod::Pagewire,
        DiskMethod::PagewireWayBack,
    ];
    let methods: Vec<DiskMethod> = if a.methods.is_empty() {
        all.to_vec()
    } else {
        a.methods
            .iter()
            .map(|name| {
                all.into_iter()
                    .find(|m| m.name() == name)
                    .with_context(|| format!("no disk method {name:?}: see --help"))
            })
            .collect::<Result<_>>()?
    };
    if methods.contains(&DiskMethod::PagewireWayBack) && !methods.contains(&DiskMethod::Pagewire) {
        bail!("pagewire-way-back is the way back of a pagewire run: name both");
    }
    let tmp;
    let work_dir = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&work_dir)?;
    let quiet = a.json;
    if !quiet {
        eprintln!(
            "tunnel demo --disk: building a {} MiB root disk with the {} packages",
            a.disk_mib, a.content
        );
    }
    let pristine = work_dir.join("pristine.raw");
    let image = disk_guest::build(&a.guest_cache, a.content, &pristine, a.disk_mib)
        .map_err(|e| anyhow!("cannot build the disk guest: {e}"))?;
    let cfg = DiskDemoConfig {
        image,
        shape: a.shape,
        codec: a.codec,
        work_dir: work_dir.clone(),
        timeout: a.timeout,
        rounds_before_way_back: ROUNDS_BEFORE_WAY_BACK,
    };
    let demo = run_disk_demo(&methods, &cfg, &mut |line| {
        if !quiet {
            eprintln!("tunnel demo --disk: {line}");
        }
    })?;
    let verified = demo.runs.iter().all(|r| r.verified);
    if a.json {
        let j = serde_json::json!({
            "link": { "rate_bytes_per_s": a.shape.rate, "delay_ms": a.shape.delay.as_millis() as u64 },
            "disk_bytes": a.disk_mib << 20,
            "verified": verified,
            "demo": demo,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        print!("{}", table(a, &demo));
    }
    if !verified {
        bail!("not every run was verified at the destination");
    }
    Ok(())
}

fn table(a: &DiskDemoArgs, demo: &DiskDemo) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let mut t = format!("link {}; disk {} MiB\n", a.shape.describe(), a.disk_mib);
    t += &format!(
        "{:<26} {:>8} {:>8} {:>9} {:>11} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>9}\n",
        "method",
        "used MB",
        "zstd MB",
        "to send MB",
        "disk phase s",
        "total s",
        "downtime",
        "pause ms",
        "disk MB",
        "mem MB",
        "wire MB",
        "verified"
    );
    for r in &demo.runs {
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
        t += &format!(
            "{:<26} {:>8.1} {:>8.1} {:>9.1} {:>11.1} {:>8.1} {:>9} {:>9} {:>8.1} {:>8.1} {:>8.1} {:>9}\n",
            r.method,
            mb(r.used_bytes),
            mb(r.zstd_used_bytes),
            mb(r.differing_bytes),
            r.disk_phase_s,
            r.total_s,
            opt(r.downtime_ms.map(|d| d as f64)),
            opt(r.guest_pause_ms),
            mb(r.disk_wire_bytes),
            mb(r.memory_wire_bytes),
            mb(r.disk_wire_bytes + r.memory_wire_bytes),
            if r.verified { "yes" } else { "NO" }
        );
        if let Some(e) = &r.error {
            t += &format!("  {}: {e}\n", r.method);
        }
    }
    t
}
