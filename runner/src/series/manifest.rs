//! The snapshot series folder: `manifest.json` and the raw snapshot files it lists.
//!
//! ```json
//! { "page_size": 4096, "mem_bytes": 134217728, "interval_ms": 2000,
//!   "snapshots": ["snap-000.raw", "snap-001.raw"] }
//! ```
//!
//! Other fields (`workload`, `description`, ...) are optional and kept when known.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::SnapshotSource;

/// File name of the manifest inside a series folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The fields of `manifest.json` that a replay reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Manifest {
    /// Page size in bytes.
    pub page_size: u64,
    /// Bytes of guest memory in each snapshot file.
    pub mem_bytes: u64,
    /// Guest running time between snapshots, in milliseconds.
    pub interval_ms: u64,
    /// Snapshot file names, relative to the folder, in order.
    pub snapshots: Vec<String>,
    /// What ran in the guest, if the manifest says.
    #[serde(default)]
    pub workload: Option<String>,
    /// A longer description, if the manifest says.
    #[serde(default)]
    pub description: Option<String>,
}

/// The largest `manifest.json` read: a list of 100,000 snapshots takes about 3 MB.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Opens `path` for reading if it is a regular file. The open does not block (a FIFO
/// planted there would wait for a writer forever), and the check is made on the file that
/// was opened, so it cannot be swapped in between.
fn open_regular(path: &Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    Ok(f)
}

/// The text of a manifest: a regular file of at most [`MAX_MANIFEST_BYTES`].
fn read_manifest(path: &Path) -> Result<String> {
    let f = open_regular(path)?;
    let mut text = String::new();
    f.take(MAX_MANIFEST_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        bail!(
            "{} is larger than {} MiB: not a series manifest",
            path.display(),
            MAX_MANIFEST_BYTES >> 20
        );
    }
    Ok(text)
}

/// A checked snapshot series folder.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    dir: PathBuf,
    manifest: Manifest,
    page_size: usize,
    mem_bytes: usize,
}

impl SnapshotDir {
    /// Reads and checks `dir/manifest.json`: required fields present, sizes consistent, every
    /// snapshot file present and exactly `mem_bytes` long.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = read_manifest(&path).with_context(|| {
            format!(
                "cannot read {} (a snapshot series folder needs a {MANIFEST_FILE})",
                path.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid series manifest", path.display()))?;
        let m = &manifest;
        let here = path.display();
        if m.page_size == 0 {
            bail!("{here}: page_size is 0");
        }
        let page_size = usize::try_from(m.page_size)
            .with_context(|| format!("{here}: page_size {} is too large", m.page_size))?;
        let mem_bytes = usize::try_from(m.mem_bytes).with_context(|| {
            format!(
                "{here}: mem_bytes {} does not fit this machine's address space",
                m.mem_bytes
            )
        })?;
        if mem_bytes == 0 {
            bail!("{here}: mem_bytes is 0");
        }
        if mem_bytes % page_size != 0 {
            bail!(
                "{here}: mem_bytes {} is not a multiple of page_size {}",
                m.mem_bytes,
                m.page_size
            );
        }
        if m.snapshots.is_empty() {
            bail!("{here}: the snapshots list is empty");
        }
        for (i, name) in m.snapshots.iter().enumerate() {
            let file = dir.join(name);
            let meta = std::fs::metadata(&file).with_context(|| {
                format!(
                    "{here}: snapshot {i} ({name}) not found as {}",
                    file.display()
                )
            })?;
            if !meta.is_file() {
                bail!(
                    "{here}: snapshot {i} ({name}) at {} is not a regular file",
                    file.display()
                );
            }
            if meta.len() != m.mem_bytes {
                bail!(
                    "{here}: snapshot {i} ({name}) is {} bytes, but mem_bytes is {}",
                    meta.len(),
                    m.mem_bytes
                );
            }
        }
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
            manifest,
            page_size,
            mem_bytes,
        })
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of snapshot `i`.
    pub fn snapshot_path(&self, i: usize) -> PathBuf {
        self.dir.join(&self.manifest.snapshots[i])
    }
}

impl SnapshotSource for SnapshotDir {
    fn describe(&self) -> String {
        let what = self
            .manifest
            .workload
            .as_deref()
            .unwrap_or("snapshot series");
        format!(
            "{what} ({}, {} snapshots of {} MiB, every {} ms)",
            self.dir.display(),
            self.manifest.snapshots.len(),
            self.mem_bytes >> 20,
            self.manifest.interval_ms
        )
    }

    fn page_size(&self) -> usize {
        self.page_size
    }

    fn mem_bytes(&self) -> usize {
        self.mem_bytes
    }

    fn snapshots(&self) -> usize {
        self.manifest.snapshots.len()
    }

    fn interval_ms(&self) -> Option<u64> {
        Some(self.manifest.interval_ms)
    }

    fn read(&mut self, i: usize, buf: &mut [u8]) -> Result<()> {
        let path = self.snapshot_path(i);
        let mut f =
            open_regular(&path).with_context(|| format!("cannot open {}", path.display()))?;
        f.read_exact(buf).with_context(|| {
            format!(
                "cannot read {} bytes of snapshot {i} from {}",
                buf.len(),
                path.display()
            )
        })?;
        let mut probe = [0u8; 1];
        if f.read(&mut probe)? != 0 {
            bail!(
                "snapshot {i} ({}) grew beyond mem_bytes {} while being read",
                path.display(),
                self.mem_bytes
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, manifest: &str, files: &[(&str, usize)]) {
        std::fs::write(dir.join(MANIFEST_FILE), manifest).unwrap();
        for (name, len) in files {
            std::fs::write(dir.join(name), vec![0u8; *len]).unwrap();
        }
    }

    fn err(dir: &Path) -> String {
        format!("{:#}", SnapshotDir::open(dir).unwrap_err())
    }

    #[test]
    fn accepts_a_good_folder() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            r#"{"page_size":4096,"mem_bytes":8192,"interval_ms":5,"snapshots":["a","b"],"extra":1}"#,
            &[("a", 8192), ("b", 8192)],
        );
        let d = SnapshotDir::open(t.path()).unwrap();
        assert_eq!(d.snapshots(), 2);
        assert_eq!(d.page_size(), 4096);
        let mut buf = vec![1u8; 8192];
        let mut d = d;
        d.read(1, &mut buf).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }

    #[test]
    fn names_what_is_wrong() {
        let t = tempfile::tempdir().unwrap();
        assert!(err(t.path()).contains("manifest.json"));
        write(
            t.path(),
            r#"{"mem_bytes":8192,"interval_ms":5,"snapshots":["a"]}"#,
            &[("a", 8192)],
        );
        assert!(err(t.path()).contains("missing field `page_size`"));
        write(
            t.path(),
            r#"{"page_size":4096,"mem_bytes":8192,"interval_ms":5,"snapshots":["a","nope"]}"#,
            &[],
        );
        let e = err(t.path());
        assert!(e.contains("snapshot 1 (nope) not found"), "{e}");
        write(
            t.path(),
            r#"{"page_size":4096,"mem_bytes":8192,"interval_ms":5,"snapshots":["a","b"]}"#,
            &[("b", 4096)],
        );
        let e = err(t.path());
        assert!(e.contains("is 4096 bytes, but mem_bytes is 8192"), "{e}");
        write(
            t.path(),
            r#"{"page_size":4096,"mem_bytes":6000,"interval_ms":5,"snapshots":["a"]}"#,
            &[],
        );
        assert!(err(t.path()).contains("not a multiple of page_size"));
        write(
            t.path(),
            r#"{"page_size":4096,"mem_bytes":8192,"interval_ms":5,"snapshots":[]}"#,
            &[],
        );
        assert!(err(t.path()).contains("snapshots list is empty"));
    }
}
