//! What this host can give a new guest: the memory available now (`MemAvailable`) and,
//! inside a memory cgroup (v2 or v1), the room left under its limit; the smaller wins.

use std::path::Path;

/// Bytes of memory this process could still get, or `None` where the host does not say.
pub fn memory_available() -> Option<u64> {
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_available(&m));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_room(&c, Path::new("/sys/fs/cgroup")));
    match (host, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `MemAvailable` of a `/proc/meminfo`, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The room under this process's memory cgroup limit (`cgroup` is `/proc/self/cgroup`;
/// `root` where the cgroup file systems are mounted); `None` without a limit.
fn cgroup_room(cgroup: &str, root: &Path) -> Option<u64> {
    let read = |p: &Path| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            // v2: "max" (no limit) does not parse
            let dir = root.join(path);
            if let (Some(max), Some(cur)) = (
                read(&dir.join("memory.max")),
                read(&dir.join("memory.current")),
            ) {
                return Some(max.saturating_sub(cur));
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            // v1: the group's own folder, or the root of a container's view
            for dir in [root.join("memory").join(path), root.join("memory")] {
                if let (Some(limit), Some(used)) = (
                    read(&dir.join("memory.limit_in_bytes")),
                    read(&dir.join("memory.usage_in_bytes")),
                ) {
                    // "no limit" is a number near 2^63
                    return (limit < 1 << 60).then(|| limit.saturating_sub(used));
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_available() {
        let m = "MemTotal:       24000000 kB\nMemFree: 1 kB\nMemAvailable:   22455404 kB\n";
        assert_eq!(meminfo_available(m), Some(22455404 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
        assert!(memory_available().is_some(), "this host says nothing");
    }

    #[test]
    fn reads_cgroup_limits_v2_and_v1() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("job")).unwrap();
        std::fs::write(r.join("job/memory.max"), "1073741824\n").unwrap();
        std::fs::write(r.join("job/memory.current"), "73741824\n").unwrap();
        assert_eq!(cgroup_room("0::/job\n", r), Some(1_000_000_000));
        std::fs::write(r.join("job/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_room("0::/job\n", r), None);

        std::fs::create_dir_all(r.join("memory")).unwrap();
        std::fs::write(r.join("memory/memory.limit_in_bytes"), "2000\n").unwrap();
        std::fs::write(r.join("memory/memory.usage_in_bytes"), "500\n").unwrap();
        assert_eq!(cgroup_room("4:memory:/some/where\n", r), Some(1500));
        std::fs::write(
            r.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(cgroup_room("4:memory:/some/where\n", r), None);
    }
}
