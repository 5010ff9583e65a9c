//! A workload's programs from Debian's packages: the packages named and what they depend
//! on (first alternatives, `Depends` and `Pre-Depends` only), downloaded with
//! `apt-get download` and unpacked with dpkg-deb into one folder that the initramfs carries
//! whole. Packages that only serve dpkg's maintainer scripts (perl, debconf, adduser, ...)
//! are left out with what they pull in: nothing runs those scripts in the guest.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::debian::apt;
use super::process::{find_in_path, run};

/// Never unpacked: installation machinery, not needed to run the programs.
const LEFT_OUT: &[&str] = &[
    "adduser",
    "cdebconf",
    "debconf",
    "dpkg",
    "init-system-helpers",
    "install-info",
    "lsb-base",
    "passwd",
    "perl",
    "perl-base",
    "perl-modules-5.36",
    "sysvinit-utils",
    "tar",
    "usr-is-merged",
    "usrmerge",
];

/// What the guest does not need of a package's files (tar patterns): documentation, and
/// the large parts of the toolchain that a plain `gcc -O2` build never runs (link-time
/// optimisation, the sanitizers' and profilers' runtimes, static C libraries, gold, dwp),
/// which would otherwise double the compile guest's initramfs.
const EXCLUDED: &[&str] = &[
    "*lto-dump*",
    "*/lto1",
    "*san.so*",
    "*san.a",
    "*/gprofng*",
    "*libgprofng*",
    "*ld.gold",
    "*-dwp",
    "*/libc.a",
    "*/libm-2.*.a",
    "*/libmvec.a",
    "./usr/share/doc",
    "./usr/share/man",
    "./usr/share/info",
    "./usr/share/locale",
    "./usr/share/lintian",
    "./usr/share/bug",
];

/// Unpacks `packages` and their dependencies into `root` (replaced if it exists), unless
/// `root` holds a `.complete` file naming the same packages. Working files go beside
/// `root`; several processes may build at once (the last rename wins).
pub fn unpack_closure(packages: &[&str], root: &Path) -> Result<(), String> {
    let marker = root.join(".complete");
    let want = format!("{}\n{}\n", packages.join(" "), EXCLUDED.join(" "));
    if fs::read_to_string(&marker).is_ok_and(|m| m == want) {
        return Ok(());
    }
    for tool in ["apt-get", "apt-cache", "dpkg-deb", "tar"] {
        if find_in_path(tool).is_none() {
            return Err(format!(
                "the workload's packages need {tool} (Debian), not found on PATH"
            ));
        }
    }
    let closure = match closure(packages) {
        Ok(c) => c,
        Err(_) => {
            apt(&["update", "-qq"], None, Duration::from_secs(180))?;
            closure(packages)?
        }
    };
    let parent = root.parent().unwrap_or(Path::new("."));
    let work = parent.join(format!("unpack.{}", std::process::id()));
    // `ignore`: a leftover from an earlier run may or may not exist.
    let _ = fs::remove_dir_all(&work);
    let result = download_and_unpack(&closure, &work).and_then(|()| {
        fs::write(work.join("root/.complete"), &want).map_err(|e| e.to_string())?;
        // `ignore`: an older tree may or may not be there.
        let _ = fs::remove_dir_all(root);
        fs::rename(work.join("root"), root).map_err(|e| e.to_string())
    });
    // `ignore`: best-effort cleanup of the download folder.
    let _ = fs::remove_dir_all(&work);
    result.map_err(|e| format!("cannot unpack {} from Debian: {e}", packages.join(", ")))
}

fn download_and_unpack(closure: &BTreeSet<String>, work: &Path) -> Result<(), String> {
    let debs = work.join("debs");
    let root = work.join("root");
    for d in [&debs, &root] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let mut args = vec!["download"];
    args.extend(closure.iter().map(String::as_str));
    apt(&args, Some(&debs), Duration::from_secs(600))?;
    let mut files: Vec<_> = fs::read_dir(&debs)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    files.sort();
    if files.len() < closure.len() {
        return Err(format!(
            "apt-get download gave {} of {} packages",
            files.len(),
            closure.len()
        ));
    }
    let excludes: String = EXCLUDED
        .iter()
        .map(|e| format!(" --exclude='{e}'"))
        .collect();
    let script =
        format!("dpkg-deb --fsys-tarfile \"$1\" | tar -x --no-same-owner -C \"$2\"{excludes}");
    for deb in files {
        run(
            Command::new("sh")
                .args(["-c", &script, "sh"])
                .arg(&deb)
                .arg(&root),
            Duration::from_secs(120),
        )
        .map_err(|e| format!("cannot unpack {}: {e}", deb.display()))?;
    }
    Ok(())
}

/// `packages` and everything they depend on, but [`LEFT_OUT`].
fn closure(packages: &[&str]) -> Result<BTreeSet<String>, String> {
    let mut seen: BTreeSet<String> = packages.iter().map(|p| p.to_string()).collect();
    let mut frontier: Vec<String> = seen.iter().cloned().collect();
    while !frontier.is_empty() {
        let out = run(
            Command::new("apt-cache")
                .args([
                    "depends",
                    "--no-recommends",
                    "--no-suggests",
                    "--no-conflicts",
                    "--no-breaks",
                    "--no-replaces",
                    "--no-enhances",
                ])
                .args(&frontier),
            Duration::from_secs(60),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        frontier = first_alternatives(&text)
            .into_iter()
            .filter(|d| !LEFT_OUT.contains(&d.as_str()) && seen.insert(d.clone()))
            .collect();
    }
    Ok(seen)
}

/// The packages that `apt-cache depends` output says are needed: each `Depends` or
/// `PreDepends` line, of a group of alternatives (` |Depends:` continues a group) the
/// first; a virtual package (`<name>`) stands for the first package providing it.
fn first_alternatives(text: &str) -> Vec<String> {
    let mut needed = Vec::new();
    let mut in_group = false;
    let mut want_provider = false;
    for line in text.lines() {
        if want_provider {
            if line.starts_with("    ") {
                needed.push(line.trim().to_string());
                want_provider = false;
                continue;
            }
            want_provider = false;
        }
        let alt = line.starts_with("  |") || line.starts_with(" |");
        let trimmed = line.trim_start().trim_start_matches('|');
        let dep = trimmed
            .strip_prefix("Depends:")
            .or_else(|| trimmed.strip_prefix("PreDepends:"));
        let Some(dep) = dep.map(str::trim) else {
            in_group = false;
            continue;
        };
        if !in_group {
            if dep.starts_with('<') {
                want_provider = true;
            } else {
                needed.push(dep.to_string());
            }
        }
        in_group = alt;
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_alternative_and_a_virtual_packages_provider_are_taken() {
        let text = "gcc-12\n  Depends: cpp-12\n |Depends: libgcc-s1\n  Depends: libgcc1\n  \
                    Depends: <libc-dev>\n    libc6-dev\n    libmusl-dev\n  PreDepends: zlib1g\n  \
                    Recommends: nothing\nlibc6\n  Depends: libgcc-s1\n";
        assert_eq!(
            first_alternatives(text),
            ["cpp-12", "libgcc-s1", "libc6-dev", "zlib1g", "libgcc-s1"]
        );
    }
}
