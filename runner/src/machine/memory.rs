//! Guest memory of two QEMUs compared byte for byte through `pmemsave`.
//!
//! What is compared: guest *physical* memory over the ranges where the machine maps its
//! main RAM block `pc.ram` (the `ram-below-4g` and, for large guests, `ram-above-4g`
//! aliases in QEMU's memory tree), read as the guest CPU sees it. For the 128 MiB guest that
//! is one range, `[0, 128 MiB)`. Within it, 0xA0000-0xBFFFF reads the legacy VGA/SMRAM
//! window and 0xC0000-0xFFFFF reads RAM or the BIOS copy as the chipset's PAM registers
//! (migrated device state) say, identically on both sides. ROM blocks (`pc.bios`,
//! option ROMs, ACPI tables) and device state are not compared. Both machines must be
//! paused: the source after its migration completed, the destination (`-S`) after its
//! incoming migration and before `cont`.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::json;
use xxhash_rust::xxh3::Xxh3;

use super::migration::run_state;
use crate::trace::qmp::Qmp;

/// Pages are compared (and a difference reported) in this size.
pub const PAGE: u64 = 4096;

/// A range of guest physical memory backed by main RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RamRange {
    /// QEMU's name for the mapping, e.g. `ram-below-4g`.
    pub name: String,
    /// Guest physical address.
    pub start: u64,
    pub length: u64,
}

/// The main-RAM ranges of a machine, from `info mtree` (human monitor), lowest first.
pub fn ram_ranges(qmp: &mut Qmp) -> Result<Vec<RamRange>> {
    let tree = qmp.execute(
        "human-monitor-command",
        Some(json!({ "command-line": "info mtree" })),
    )?;
    let tree = tree.as_str().context("info mtree returned no text")?;
    let ranges = parse_ram_ranges(tree);
    ensure!(
        !ranges.is_empty(),
        "QEMU's memory tree maps no ram-below-4g or ram-above-4g alias of pc.ram"
    );
    Ok(ranges)
}

/// The `ram-below-4g` / `ram-above-4g` aliases in an `info mtree` text, each once.
pub fn parse_ram_ranges(tree: &str) -> Vec<RamRange> {
    let mut out: Vec<RamRange> = Vec::new();
    for line in tree.lines() {
        let line = line.trim();
        let Some((span, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some(name) = ["ram-below-4g", "ram-above-4g"]
            .into_iter()
            .find(|n| rest.contains(&format!("alias {n} @pc.ram ")))
        else {
            continue;
        };
        let Some((a, b)) = span.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(last)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let r = RamRange {
            name: name.to_string(),
            start,
            length: last - start + 1,
        };
        if last >= start && !out.contains(&r) {
            out.push(r);
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

/// The main RAM of one machine, saved to files (one per range).
#[derive(Debug, Clone)]
pub struct MemoryDump {
    pub ranges: Vec<(RamRange, PathBuf)>,
}

impl MemoryDump {
    /// Deletes the files.
    pub fn remove(&self) {
        for (_, p) in &self.ranges {
            // `ignore`: best effort; a missing file is already gone.
            let _ = fs::remove_file(p);
        }
    }
}

/// `pmemsave`s each range of a paused machine into `dir/<label>-<i>.raw`.
pub fn save_ram(qmp: &mut Qmp, dir: &Path, label: &str) -> Result<MemoryDump> {
    let state = run_state(qmp)?;
    ensure!(
        matches!(state.as_str(), "paused" | "postmigrate"),
        "{label}: guest memory is compared only while the machine is paused, and it is {state}"
    );
    let mut dump = MemoryDump { ranges: Vec::new() };
    for (i, r) in ram_ranges(qmp)?.into_iter().enumerate() {
        let path = dir.join(format!("{label}-{i}.raw"));
        let name = path.to_str().context("the dump folder is not UTF-8")?;
        qmp.execute_within(
            "pmemsave",
            Some(json!({ "val": r.start, "size": r.length, "filename": name })),
            Duration::from_secs(60 + r.length / 50_000_000),
        )?;
        let len = fs::metadata(&path)
            .with_context(|| format!("pmemsave reported done but wrote no {}", path.display()))?
            .len();
        ensure!(
            len == r.length,
            "pmemsave wrote {len} bytes to {}, not {}",
            path.display(),
            r.length
        );
        dump.ranges.push((r, path));
    }
    Ok(dump)
}

/// The result of comparing two machines' RAM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub bytes: u64,
    pub differing_pages: u64,
    /// Guest physical address of the first page that differs.
    pub first_difference: Option<u64>,
    /// xxh3-64 of all ranges in order, at each side.
    pub source_digest: u64,
    pub destination_digest: u64,
}

impl Comparison {
    pub fn equal(&self) -> bool {
        self.differing_pages == 0
    }
}

/// Compares two dumps page by page; the ranges must be the same.
pub fn compare(source: &MemoryDump, destination: &MemoryDump) -> Result<Comparison> {
    let layout = |d: &MemoryDump| d.ranges.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>();
    if layout(source) != layout(destination) {
        bail!(
            "the machines map RAM differently: {:?} and {:?}",
            layout(source),
            layout(destination)
        );
    }
    let mut c = Comparison {
        bytes: 0,
        differing_pages: 0,
        first_difference: None,
        source_digest: 0,
        destination_digest: 0,
    };
    let (mut hs, mut hd) = (Xxh3::new(), Xxh3::new());
    let (mut ps, mut pd) = (vec![0u8; PAGE as usize], vec![0u8; PAGE as usize]);
    for ((r, a), (_, b)) in source.ranges.iter().zip(&destination.ranges) {
        let open = |p: &Path| -> Result<BufReader<File>> {
            Ok(BufReader::with_capacity(
                1 << 20,
                File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            ))
        };
        let (mut fa, mut fb) = (open(a)?, open(b)?);
        let mut offset = 0;
        while offset < r.length {
            let n = PAGE.min(r.length - offset) as usize;
            fa.read_exact(&mut ps[..n])?;
            fb.read_exact(&mut pd[..n])?;
            hs.update(&ps[..n]);
            hd.update(&pd[..n]);
            if ps[..n] != pd[..n] {
                c.differing_pages += 1;
                c.first_difference.get_or_insert(r.start + offset);
            }
            offset += n as u64;
        }
        c.bytes += r.length;
    }
    c.source_digest = hs.digest();
    c.destination_digest = hd.digest();
    Ok(c)
}

/// Saves both paused machines' RAM into `dir`, compares it, and deletes the files unless
/// they differ (then they stay for a look).
pub fn compare_machines(source: &mut Qmp, destination: &mut Qmp, dir: &Path) -> Result<Comparison> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let a = save_ram(source, dir, "source")?;
    let b = save_ram(destination, dir, "destination");
    let b = match b {
        Ok(b) => b,
        Err(e) => {
            a.remove();
            return Err(e);
        }
    };
    let c = compare(&a, &b);
    if c.as_ref().map_or(true, Comparison::equal) {
        a.remove();
        b.remove();
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTREE: &str = "address-space: memory
  0000000000000000-ffffffffffffffff (prio 0, i/o): system
    0000000000000000-0000000007ffffff (prio 0, ram): alias ram-below-4g @pc.ram 0000000000000000-0000000007ffffff
    00000000000a0000-00000000000bffff (prio 1, i/o): alias smram-region @pci 00000000000a0000-00000000000bffff
    0000000100000000-000000017fffffff (prio 0, ram): alias ram-above-4g @pc.ram 00000000c0000000-000000013fffffff
address-space: cpu-memory-0
    0000000000000000-0000000007ffffff (prio 0, ram): alias ram-below-4g @pc.ram 0000000000000000-0000000007ffffff
memory-region: pc.ram
  0000000000000000-0000000007ffffff (prio 0, ram): pc.ram
";

    #[test]
    fn finds_each_main_ram_alias_once() {
        let r = parse_ram_ranges(MTREE);
        assert_eq!(
            r,
            [
                RamRange {
                    name: "ram-below-4g".into(),
                    start: 0,
                    length: 128 << 20
                },
                RamRange {
                    name: "ram-above-4g".into(),
                    start: 1 << 32,
                    length: 2 << 30
                },
            ]
        );
        assert!(parse_ram_ranges("garbage\n- (x): alias ram-below-4g @pc.ram ").is_empty());
    }

    #[test]
    fn compare_names_the_first_differing_page() {
        let d = tempfile::tempdir().unwrap();
        let range = |start, length| RamRange {
            name: "r".into(),
            start,
            length,
        };
        let write = |name: &str, bytes: &[u8]| {
            let p = d.path().join(name);
            fs::write(&p, bytes).unwrap();
            p
        };
        let low: Vec<u8> = (0..3 * PAGE).map(|i| i as u8).collect();
        let high = vec![7u8; 2 * PAGE as usize];
        let mut high2 = high.clone();
        high2[PAGE as usize + 5] ^= 1;
        let a = MemoryDump {
            ranges: vec![
                (range(0, 3 * PAGE), write("a0", &low)),
                (range(1 << 32, 2 * PAGE), write("a1", &high)),
            ],
        };
        let same = MemoryDump {
            ranges: vec![
                (range(0, 3 * PAGE), write("b0", &low)),
                (range(1 << 32, 2 * PAGE), write("b1", &high)),
            ],
        };
        let c = compare(&a, &same).unwrap();
        assert!(c.equal());
        assert_eq!(c.source_digest, c.destination_digest);
        assert_eq!(c.bytes, 5 * PAGE);
        let differs = MemoryDump {
            ranges: vec![
                (range(0, 3 * PAGE), write("c0", &low)),
                (range(1 << 32, 2 * PAGE), write("c1", &high2)),
            ],
        };
        let c = compare(&a, &differs).unwrap();
        assert!(!c.equal());
        assert_eq!(c.differing_pages, 1);
        assert_eq!(c.first_difference, Some((1 << 32) + PAGE));
        assert_ne!(c.source_digest, c.destination_digest);
        let other_layout = MemoryDump {
            ranges: vec![(range(0, 3 * PAGE), write("d0", &low))],
        };
        assert!(compare(&a, &other_layout).is_err());
    }
}
