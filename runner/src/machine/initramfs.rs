//! The guest's userland: a newc cpio archive holding busybox and an `/init` whose workload
//! rewrites tmpfs files, checks each file it wrote eight rounds earlier against the md5sum
//! it kept, and reports both on the serial console. The markers below are what
//! [`console`](super::console) parses.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Printed once /init has started the workload.
pub const READY: &str = "PAGEWIRE-GUEST-READY";
/// Each round writes 1 MiB of `pagewire-workload-<round>` lines into `/dev/shm/w<round % 8>`.
pub const WORKLOAD_TEXT: &str = "pagewire-workload-";
/// Then `PAGEWIRE-HEARTBEAT <round>`: the round counter lives in guest memory, so a
/// migrated guest goes on counting where the source stopped.
pub const HEARTBEAT: &str = "PAGEWIRE-HEARTBEAT ";
/// Every 50 ms, from a background loop of its own, `PAGEWIRE-TICK <n>`: the rounds of a
/// busy workload take seconds (a `compile` round ~6 s), far too coarse to time a pause the
/// guest sees across a migration; the ticks time it to ~50 ms.
pub const TICK: &str = "PAGEWIRE-TICK ";
/// From round 9 on, each round first checks the file it is about to overwrite (written
/// eight rounds earlier) and prints `PAGEWIRE-CHECK ok <round>` or
/// `PAGEWIRE-CHECK FAIL <round> <what differed>`.
pub const CHECK: &str = "PAGEWIRE-CHECK ";

/// The shell line that starts the [`TICK`] loop in the background; every workload's /init
/// runs it before its READY line.
macro_rules! ticker {
    () => {
        "( t=0; while :; do t=$((t+1)); echo \"PAGEWIRE-TICK $t\"; sleep 0.05; done ) &\n"
    };
}
pub(super) use ticker;

/// The main loop of a workload that rewrites `$files` files `/dev/shm/<$name>k` in turn:
/// READY, then each round checks the file it is about to overwrite (written `$files` rounds
/// earlier) against the md5sum kept in the shell variable `sum<k>`, runs `$write` (which
/// writes `$f` and leaves its md5sum in `s`), keeps that sum, and prints its heartbeat.
macro_rules! rotating_files {
    ($files:literal, $name:literal, $write:literal) => {
        concat!(
            "echo PAGEWIRE-GUEST-READY\ni=0\nwhile :; do\n  i=$((i+1))\n  k=$((i % ",
            $files,
            "))\n  f=/dev/shm/",
            $name,
            r#"$k
  eval "want=\$sum$k"
  if [ -n "$want" ]; then
    got=$(md5sum < $f)
    got=${got%% *}
    if [ "$got" = "$want" ]; then
      echo "PAGEWIRE-CHECK ok $i"
    else
      echo "PAGEWIRE-CHECK FAIL $i "#,
            $name,
            "$k from round $((i-",
            $files,
            r#")): md5 $got, written $want"
    fi
  fi
"#,
            $write,
            r#"  eval "sum$k=${s%% *}"
  echo "PAGEWIRE-HEARTBEAT $i"
done
"#
        )
    };
}
pub(super) use rotating_files;

/// The md5sum of each file is taken from the bytes as they are written (through `tee`), not
/// read back, and kept in a shell variable: both the file (page cache) and the sum (the
/// shell's heap) live in guest memory, so a migration that damaged either shows as a FAIL.
pub(super) const INIT: &str = concat!(
    r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
mkdir -p /dev/shm
mount -t tmpfs -o size=32m shm /dev/shm
"#,
    ticker!(),
    rotating_files!(
        8,
        "w",
        "  s=$(yes \"pagewire-workload-$i\" | head -c 1048576 | tee $f | md5sum)\n"
    )
);

/// The archive of the `heartbeat` workload: /init, /bin/busybox, the mount points and
/// /dev/console.
pub fn initramfs_cpio(busybox: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_initramfs(&mut out, busybox, INIT, None).expect("writing to a Vec cannot fail");
    out
}

/// Writes an archive holding `init` as /init, busybox, the mount points, /dev/console and,
/// when given, every file, folder and symbolic link under `tree` (packages unpacked there).
pub fn write_initramfs(
    out: &mut impl Write,
    busybox: &[u8],
    init: &str,
    tree: Option<&Path>,
) -> io::Result<()> {
    let mut cpio = Cpio { out, ino: 1 };
    for dir in ["bin", "dev", "proc", "sys", "tmp"] {
        cpio.entry(dir, 0o040755, (0, 0), b"")?;
    }
    cpio.entry("dev/console", 0o020600, (5, 1), b"")?;
    if let Some(root) = tree {
        cpio.tree(root, root)?;
    }
    cpio.entry("bin/busybox", 0o100755, (0, 0), busybox)?;
    cpio.entry("init", 0o100755, (0, 0), init.as_bytes())?;
    cpio.entry("TRAILER!!!", 0, (0, 0), b"")
}

/// A newc cpio archive being written.
struct Cpio<'a, W: Write> {
    out: &'a mut W,
    ino: u32,
}

impl<W: Write> Cpio<'_, W> {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let fields = [
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.ino += 1;
        let mut head = Vec::with_capacity(120 + name.len());
        head.extend_from_slice(b"070701");
        for f in fields {
            write!(head, "{f:08X}")?;
        }
        head.extend_from_slice(name.as_bytes());
        head.push(0);
        head.resize(head.len().next_multiple_of(4), 0);
        self.out.write_all(&head)?;
        self.out.write_all(data)?;
        self.out
            .write_all(&[0; 3][..data.len().next_multiple_of(4) - data.len()])
    }

    /// Everything under `dir`, named relative to `root`, in name order (so the archive is
    /// the same for the same tree). The marker files of the package cache are left out.
    fn tree(&mut self, root: &Path, dir: &Path) -> io::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let name = path
                .strip_prefix(root)
                .map_err(io::Error::other)?
                .to_string_lossy()
                .into_owned();
            if name.starts_with('.') {
                continue;
            }
            let meta = fs::symlink_metadata(&path)?;
            let perm = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&path)?;
                self.entry(&name, 0o120777, (0, 0), target.as_os_str().as_bytes())?;
            } else if meta.is_dir() {
                self.entry(&name, 0o040000 | perm, (0, 0), b"")?;
                self.tree(root, &path)?;
            } else if meta.is_file() {
                self.entry(&name, 0o100000 | perm, (0, 0), &fs::read(&path)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_is_aligned_and_ends_with_the_trailer() {
        let cpio = initramfs_cpio(b"not really busybox");
        assert_eq!(cpio.len() % 4, 0);
        assert!(cpio.starts_with(b"070701"));
        let init = cpio.windows(4).position(|w| w == b"init").unwrap();
        assert!(cpio[init..].starts_with(b"init\0"));
        let trailer = cpio.windows(10).rposition(|w| w == b"TRAILER!!!").unwrap();
        assert!(cpio[trailer + 10..].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_tree_comes_with_its_folders_files_and_links_but_not_its_markers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        fs::write(root.join("usr/lib/libx.so.1"), b"ELF").unwrap();
        std::os::unix::fs::symlink("libx.so.1", root.join("usr/lib/libx.so")).unwrap();
        fs::write(root.join(".complete"), b"marker").unwrap();
        let mut cpio = Vec::new();
        write_initramfs(&mut cpio, b"bb", "#!/bin/busybox sh\n", Some(root)).unwrap();
        let has = |s: &[u8]| cpio.windows(s.len()).any(|w| w == s);
        assert!(has(b"usr/lib\0"));
        assert!(has(b"usr/lib/libx.so.1\0"));
        assert!(has(b"usr/lib/libx.so\0"));
        assert!(has(b"ELF"));
        assert!(!has(b".complete"));
        // the symbolic link's mode
        assert!(has(b"0000A1FF"));
        assert_eq!(cpio.len() % 4, 0);
    }

    #[test]
    fn the_script_prints_the_markers_the_console_parses() {
        for marker in [
            READY,
            WORKLOAD_TEXT,
            HEARTBEAT,
            "PAGEWIRE-CHECK ok",
            "PAGEWIRE-CHECK FAIL",
        ] {
            assert!(INIT.contains(marker), "{marker}");
        }
    }
}
