//! File stamps (size, mtime, inode) and the scan that finds which manifest files changed, without reading them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What tells a file's content changed without reading it: size, mtime and
/// inode, taken through symlinks so a rename or a ConfigMap `..data` swap shows.
pub type Stamp = (u64, Option<SystemTime>, u64);

/// None when `path` is not a regular file (after symlinks).
pub fn stamp(path: &Path) -> std::io::Result<Option<Stamp>> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok(m.is_file().then(|| (m.len(), m.modified().ok(), m.ino())))
}

/// The manifest-named entries of `dir`, as the directory is read. The type
/// comes with the listing (no stat per file: at 10,000 files under TCG that
/// alone held up changes for ~100 ms); a symlink is kept and resolved by
/// its stamp, as a file or not.
fn manifest_entries(dir: &Path) -> std::io::Result<impl Iterator<Item = PathBuf> + use<>> {
    Ok(std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .map(|e| e.path())
        .filter(|p| is_manifest(p)))
}

/// One manifest file as a re-scan found it: `None` when it is no longer a
/// regular file.
pub type Scanned = (PathBuf, Option<Stamp>);

/// Lists `root` (a directory, or a single file) and stamps every manifest
/// file: the I/O of a load's listing and of a re-scan, with no access to the
/// cache, so a re-scan can run on a thread of its own.
pub fn scan(root: &Path, is_dir: bool) -> std::io::Result<Vec<Scanned>> {
    if !is_dir {
        return Ok(match stamp(root)? {
            Some(st) => vec![(root.to_path_buf(), Some(st))],
            None => Vec::new(),
        });
    }
    Ok(manifest_entries(root)?
        .map(|p| {
            let st = stamp(&p).ok().flatten();
            (p, st)
        })
        .collect())
}

/// The files a scan of `root` finds different from the `known` stamps:
/// changed, new, no longer regular files, or known but not listed. Reading
/// them decides what they are now. A failed or empty listing is refused
/// (the message says why): the last good objects stay.
pub fn stale(
    root: &Path,
    scanned: std::io::Result<Vec<Scanned>>,
    known: &impl KnownStamps,
) -> Result<BTreeSet<PathBuf>, String> {
    let scanned = scanned.map_err(|e| format!("cannot read {}: {e}", root.display()))?;
    if scanned.is_empty() {
        return Err(format!("{}: no manifest files", root.display()));
    }
    let mut listed = HashSet::with_capacity(scanned.len());
    let mut out = BTreeSet::new();
    for (p, st) in scanned {
        if st.is_none() || known.stamp(&p) != st {
            out.insert(p.clone());
        }
        listed.insert(p);
    }
    out.extend(known.paths().filter(|p| !listed.contains(*p)).cloned());
    Ok(out)
}

/// Stamps the watcher learnt (`Some`) or forgot (`None`), for the scanner's copy.
pub type StampChanges = Vec<(PathBuf, Option<Stamp>)>;

/// The stamp of every file known, loaded or failed: what [`stale`] compares
/// a scan with. The scanner keeps a copy; the watcher looks in its cache.
pub trait KnownStamps {
    fn stamp(&self, path: &Path) -> Option<Stamp>;
    fn paths(&self) -> impl Iterator<Item = &PathBuf>;
}

impl KnownStamps for HashMap<PathBuf, Stamp> {
    fn stamp(&self, path: &Path) -> Option<Stamp> {
        self.get(path).copied()
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.keys()
    }
}

/// Whether `path` names a manifest file (`.yaml`, `.yml` or `.json`).
pub fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}
