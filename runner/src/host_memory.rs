//! How much more memory this process may have, and a budget of large allocations checked
//! against it up front.
//!
//! Each large buffer is allocated with a probe (`buffer::zeroed`), but a probe sees only
//! itself: under overcommit every allocation of a 4 GiB series succeeds alone, and the
//! process is OOM-killed without a word once the third is touched. So a command first adds
//! up everything it will hold ([`Budget`]) and compares the sum with [`headroom`]: the least
//! of
//!
//! * `MemAvailable` from `/proc/meminfo` (what the kernel can give without swapping);
//! * the memory cgroup's limit minus its usage, for the process's cgroup and every ancestor
//!   (cgroup v2 `memory.max` - `memory.current`, v1 `memory.limit_in_bytes` -
//!   `memory.usage_in_bytes`);
//! * the address-space limit (`RLIMIT_AS`, `ulimit -v`) minus the address space already
//!   mapped (`VmSize`).
//!
//! A source that cannot be read counts as no limit; the others still apply.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// Bytes kept free for everything a budget does not list (small vectors, thread stacks,
/// the allocator's own slack).
pub const RESERVE: u64 = 64 << 20;

/// Parts of a budget named in its error; the rest are summed up.
const LISTED: usize = 5;

/// Limits at or beyond this are "no limit" (cgroup v1 writes 2^63 rounded down to a page).
const UNLIMITED: u64 = 1 << 60;

/// Memory this process may still have, and what bounds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headroom {
    /// Bytes.
    pub bytes: u64,
    /// What sets the bound, for messages: "MemAvailable", "the memory cgroup /x (limit
    /// 6144 MiB)", "the address-space limit (ulimit -v: 1024 MiB)"; "no known limit" when
    /// nothing could be read.
    pub bound: String,
}

impl Headroom {
    fn unknown() -> Self {
        Headroom {
            bytes: u64::MAX,
            bound: "no known limit".into(),
        }
    }

    /// Keeps the smaller of the two.
    fn min(self, other: Option<Headroom>) -> Headroom {
        match other {
            Some(o) if o.bytes < self.bytes => o,
            _ => self,
        }
    }
}

impl fmt::Display for Headroom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (bound by {})", mib(self.bytes), self.bound)
    }
}

/// `bytes` as people read it: "1536 MiB".
pub fn mib(bytes: u64) -> String {
    if bytes == u64::MAX {
        "unlimited".into()
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

/// The memory this process may still have now (see the module documentation).
pub fn headroom() -> Headroom {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok();
    let status = std::fs::read_to_string("/proc/self/status").ok();
    let rlimit_as = address_space_limit();
    Headroom::unknown()
        .min(meminfo.as_deref().and_then(mem_available))
        .min(
            cgroups
                .as_deref()
                .and_then(|c| cgroup_headroom(Path::new("/"), c)),
        )
        .min(rlimit_as.and_then(|l| address_space_headroom(l, status.as_deref()?)))
}

/// `MemAvailable` from the text of `/proc/meminfo`.
fn mem_available(meminfo: &str) -> Option<Headroom> {
    let kib = meminfo_field(meminfo, "MemAvailable:")?;
    Some(Headroom {
        bytes: kib.saturating_mul(1024),
        bound: "MemAvailable in /proc/meminfo".into(),
    })
}

/// A `Name:   123 kB` field of `/proc/meminfo` or `/proc/self/status`, in KiB.
fn meminfo_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// The soft `RLIMIT_AS`, if any.
fn address_space_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut r) } == 0;
    (ok && r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur)
}

/// What an address-space limit of `limit` bytes leaves, given `/proc/self/status` (its
/// `VmSize`).
fn address_space_headroom(limit: u64, status: &str) -> Option<Headroom> {
    if limit >= UNLIMITED {
        return None;
    }
    let used = meminfo_field(status, "VmSize:")?.saturating_mul(1024);
    Some(Headroom {
        bytes: limit.saturating_sub(used),
        bound: format!("the address-space limit (ulimit -v: {})", mib(limit)),
    })
}

/// The tightest memory cgroup bound over the process's cgroup and its ancestors, from the
/// text of `/proc/self/cgroup`; `root` is `/` (tests give a folder that mimics it).
fn cgroup_headroom(root: &Path, proc_cgroup: &str) -> Option<Headroom> {
    let mut best: Option<Headroom> = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (mounts, limit_file, usage_file): (&[&str], _, _) = if controllers.is_empty() {
            (
                &["sys/fs/cgroup", "sys/fs/cgroup/unified"],
                "memory.max",
                "memory.current",
            )
        } else if controllers.split(',').any(|c| c == "memory") {
            (
                &["sys/fs/cgroup/memory"],
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            )
        } else {
            continue;
        };
        for mount in mounts {
            let base = root.join(mount);
            for dir in ancestors(&base, path) {
                let Some(limit) = read_number(&dir.join(limit_file)) else {
                    continue;
                };
                if limit >= UNLIMITED {
                    continue;
                }
                let usage = read_number(&dir.join(usage_file)).unwrap_or(0);
                let shown = dir.strip_prefix(&base).unwrap_or(&dir);
                let h = Headroom {
                    bytes: limit.saturating_sub(usage),
                    bound: format!(
                        "the memory cgroup /{} (limit {}, {} in use)",
                        shown.display(),
                        mib(limit),
                        mib(usage)
                    ),
                };
                best = Some(match best {
                    Some(b) if b.bytes <= h.bytes => b,
                    _ => h,
                });
            }
        }
    }
    best
}

/// `base/path` and each of its ancestors up to `base` itself.
fn ancestors(base: &Path, path: &str) -> Vec<PathBuf> {
    let mut dirs = vec![base.to_path_buf()];
    let mut dir = base.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != "..") {
        dir.push(part);
        dirs.push(dir.clone());
    }
    dirs
}

/// A number in a cgroup file; "max" (v2's "no limit") reads as `u64::MAX`.
fn read_number(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let t = text.trim();
    if t == "max" {
        return Some(u64::MAX);
    }
    t.parse().ok()
}

/// The large allocations a command will hold at once, by name.
#[derive(Debug, Clone, Default)]
pub struct Budget {
    items: Vec<(String, u64)>,
}

impl Budget {
    /// An empty budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` held for `what` ("the destination image").
    pub fn add(&mut self, what: impl Into<String>, bytes: u64) -> &mut Self {
        self.items.push((what.into(), bytes));
        self
    }

    /// Adds `bytes` (a `usize` size) held for `what`.
    pub fn add_len(&mut self, what: impl Into<String>, bytes: usize) -> &mut Self {
        self.add(what, u64::try_from(bytes).unwrap_or(u64::MAX))
    }

    /// Adds everything in `other`.
    pub fn extend(&mut self, other: Budget) -> &mut Self {
        self.items.extend(other.items);
        self
    }

    /// What the budget holds, by name.
    pub fn items(&self) -> &[(String, u64)] {
        &self.items
    }

    /// The sum (saturating).
    pub fn total(&self) -> u64 {
        self.items
            .iter()
            .fold(0u64, |t, (_, b)| t.saturating_add(*b))
    }

    /// Checks the budget against [`headroom`]; the error lists what the budget holds and
    /// says to `lower` ("--synthetic-mib or --cache-mib").
    pub fn check(&self, lower: &str) -> Result<()> {
        self.check_against(&headroom(), lower)
    }

    /// [`Budget::check`] against a given headroom.
    pub fn check_against(&self, room: &Headroom, lower: &str) -> Result<()> {
        let total = self.total();
        if total.saturating_add(RESERVE) <= room.bytes {
            return Ok(());
        }
        // the largest parts by name; what is below a MiB goes with the reserve
        let mut items: Vec<&(String, u64)> =
            self.items.iter().filter(|(_, b)| *b >= 1 << 20).collect();
        items.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
        let mut list = items
            .iter()
            .take(LISTED)
            .map(|(what, b)| format!("{what} {}", mib(*b)))
            .collect::<Vec<_>>()
            .join(", ");
        if items.len() > LISTED {
            let rest = items[LISTED..]
                .iter()
                .fold(0u64, |t, (_, b)| t.saturating_add(*b));
            list += &format!(", {} smaller parts {}", items.len() - LISTED, mib(rest));
        }
        bail!(
            "this needs {} of memory ({list}, plus {} for the rest), but this process can have \
             only {room}; lower {lower}",
            mib(total),
            mib(RESERVE)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_available_and_the_address_space_limit() {
        let meminfo = "MemTotal:       24683784 kB\nMemFree:        17698760 kB\nMemAvailable:   23323088 kB\n";
        let h = mem_available(meminfo).unwrap();
        assert_eq!(h.bytes, 23_323_088 * 1024);
        assert!(h.bound.contains("MemAvailable"));
        assert!(mem_available("MemTotal: 5 kB\n").is_none());
        let status = "Name:\tpagewire\nVmPeak:\t  300000 kB\nVmSize:\t  204800 kB\n";
        let h = address_space_headroom(1 << 30, status).unwrap();
        assert_eq!(h.bytes, (1 << 30) - 200 * (1 << 20));
        assert!(h.bound.contains("ulimit -v: 1024 MiB"), "{}", h.bound);
        assert!(address_space_headroom(u64::MAX, status).is_none());
        // the real machine: some headroom, never zero for a test process
        assert!(headroom().bytes > 0);
    }

    fn write(root: &Path, file: &str, text: &str) {
        let p = root.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_cgroup_v2_limits_of_the_group_and_its_ancestors() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        write(root, "sys/fs/cgroup/memory.max", "max\n");
        write(root, "sys/fs/cgroup/jobs/memory.max", "6442450944\n");
        write(root, "sys/fs/cgroup/jobs/memory.current", "1073741824\n");
        write(root, "sys/fs/cgroup/jobs/pw/memory.max", "max\n");
        write(root, "sys/fs/cgroup/jobs/pw/memory.current", "4096\n");
        let h = cgroup_headroom(root, "0::/jobs/pw\n").unwrap();
        assert_eq!(h.bytes, 5 << 30);
        assert!(h.bound.contains("/jobs (limit 6144 MiB"), "{}", h.bound);
        // a tighter limit deeper down wins
        write(root, "sys/fs/cgroup/jobs/pw/memory.max", "2147483648\n");
        assert_eq!(
            cgroup_headroom(root, "0::/jobs/pw\n").unwrap().bytes,
            (2 << 30) - 4096
        );
        // no limit anywhere: no bound
        assert!(cgroup_headroom(root, "0::/other\n").is_none());
    }

    #[test]
    fn reads_cgroup_v1_memory_controller() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        write(
            root,
            "sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            root,
            "sys/fs/cgroup/memory/box/memory.limit_in_bytes",
            "1073741824\n",
        );
        write(
            root,
            "sys/fs/cgroup/memory/box/memory.usage_in_bytes",
            "536870912\n",
        );
        let text = "9:name=systemd:/\n4:memory:/box\n1:cpu:/\n0::/\n";
        let h = cgroup_headroom(root, text).unwrap();
        assert_eq!(h.bytes, 512 << 20);
        assert!(h.bound.contains("memory cgroup /box"), "{}", h.bound);
        assert!(cgroup_headroom(root, "4:memory:/\n").is_none());
    }

    #[test]
    fn a_budget_over_the_headroom_names_its_parts_and_what_to_lower() {
        let mut b = Budget::new();
        b.add("the destination image", 4 << 30)
            .add_len("the current snapshot", 4 << 30)
            .add("nothing", 0)
            .add("crumbs", 1000);
        assert_eq!(b.total(), (8 << 30) + 1000);
        let room = Headroom {
            bytes: 6 << 30,
            bound: "the memory cgroup /x".into(),
        };
        let e = b
            .check_against(&room, "--synthetic-mib")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 8192 MiB"), "{e}");
        assert!(e.contains("the destination image 4096 MiB"), "{e}");
        assert!(
            e.contains("only 6144 MiB (bound by the memory cgroup /x)"),
            "{e}"
        );
        assert!(e.ends_with("lower --synthetic-mib"), "{e}");
        assert!(!e.contains("nothing") && !e.contains("crumbs"), "{e}");
        for i in 0..6 {
            b.add(format!("part {i}"), 2 << 20);
        }
        let e = b.check_against(&room, "x").unwrap_err().to_string();
        assert!(e.contains("part 2 2 MiB, 3 smaller parts 6 MiB"), "{e}");
        let room = Headroom {
            bytes: 9 << 30,
            bound: "MemAvailable".into(),
        };
        b.check_against(&room, "x").unwrap();
        b.add("overflow", u64::MAX);
        assert_eq!(b.total(), u64::MAX);
        assert!(b.check_against(&room, "x").is_err());
    }
}
