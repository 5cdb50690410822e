//! The per-file cache of a manifests path: each file's stamp and object keys, so a refresh yields only the objects that changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;

use super::stamp::{KnownStamps, Stamp, StampChanges, is_manifest, scan, stale, stamp};
use crate::changes::{ObjKey, key_of};
use crate::source::manifests::{self, ManifestError, Manifests};

/// Files read (in parallel) and handed over at a time by the first load.
pub const LOAD_CHUNK: usize = 512;
/// Loads a file, or every `.yaml`/`.yml`/`.json` file of a directory (sorted
/// by name, not recursive), as the daemon's first load does.
pub fn load(path: &Path) -> Result<Manifests, ManifestError> {
    ManifestFiles::load(path).map(|(_, m)| m)
}

/// The keys of one file's objects, per kind.
#[derive(Debug, Default, Clone)]
struct FileKeys {
    services: Vec<ObjKey>,
    slices: Vec<ObjKey>,
    nodes: Vec<ObjKey>,
}

impl FileKeys {
    fn of(m: &Manifests) -> Self {
        FileKeys {
            services: m.services.iter().map(key_of).collect(),
            slices: m.slices.iter().map(key_of).collect(),
            nodes: m.nodes.iter().map(key_of).collect(),
        }
    }
}

#[derive(Debug)]
pub(super) struct Cached {
    stamp: Stamp,
    keys: FileKeys,
}

/// Which files hold an object with a given key (the last one by name wins).
type Index = HashMap<ObjKey, Holders>;

/// The files holding one key, sorted and distinct: almost always one, so a
/// short Vec of shared paths (a BTreeSet leaf alone would take ~300 bytes
/// per key, megabytes at 10,000 Services).
#[derive(Debug, Default)]
struct Holders(Vec<Arc<Path>>);

impl Holders {
    fn insert(&mut self, path: &Arc<Path>) {
        if let Err(i) = self.0.binary_search_by(|p| (**p).cmp(&**path)) {
            self.0.insert(i, path.clone());
        }
    }

    fn remove(&mut self, path: &Path) {
        if let Ok(i) = self.0.binary_search_by(|p| (**p).cmp(path)) {
            self.0.remove(i);
        }
    }

    fn last(&self) -> Option<&Arc<Path>> {
        self.0.last()
    }
}

/// The objects added or changed (`Some`) and removed (`None`) by one refresh,
/// with what went wrong on the way.
#[derive(Debug, Default)]
pub struct Changes {
    pub services: Vec<(ObjKey, Option<Service>)>,
    pub slices: Vec<(ObjKey, Option<EndpointSlice>)>,
    pub nodes: Vec<(ObjKey, Option<Node>)>,
    /// Files read again (changed or new).
    pub reloaded: usize,
    /// Files gone.
    pub removed: usize,
    /// Skipped documents of the files read (unknown kinds), one line each.
    pub warnings: Vec<String>,
    /// Files or paths that could not be read; their previous objects stay.
    pub errors: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty() && self.nodes.is_empty()
    }
}

/// What one file is now.
enum Update {
    Gone,
    Loaded(Stamp, Manifests),
    /// Unreadable or invalid: keep the objects, remember the stamp so the
    /// poll does not retry until the file changes again.
    Failed(Option<Stamp>, String),
}

/// The per-file cache of a manifests path (a file or a directory, not recursive).
#[derive(Debug)]
pub struct ManifestFiles {
    root: PathBuf,
    is_dir: bool,
    pub(super) files: BTreeMap<PathBuf, Cached>,
    /// Stamps of new files that failed to load, so the poll retries them only once they change.
    failed: HashMap<PathBuf, Stamp>,
    /// Stamps learnt or forgotten since [`ManifestFiles::take_stamp_changes`],
    /// for the re-scan thread's copy (`None`: forget the file, so it is retried).
    stamp_changes: StampChanges,
    services: Index,
    slices: Index,
    nodes: Index,
}

impl ManifestFiles {
    /// Loads every file as [`load`] does (any invalid file is an error),
    /// returning the cache and the objects in file order.
    pub fn load(path: &Path) -> Result<(Self, Manifests), ManifestError> {
        let mut all = Manifests::default();
        let files = Self::load_each(path, |m| all.append(m))?;
        Ok((files, all))
    }

    /// `load`, handing the objects to `each` [`LOAD_CHUNK`] files at a time
    /// (in file order), so a large directory is never held in memory whole.
    pub fn load_each(path: &Path, mut each: impl FnMut(Manifests)) -> Result<Self, ManifestError> {
        let read_err = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let is_dir = std::fs::metadata(path).map_err(read_err)?.is_dir();
        let mut files = ManifestFiles {
            root: path.to_path_buf(),
            is_dir,
            files: BTreeMap::new(),
            failed: HashMap::new(),
            stamp_changes: Vec::new(),
            services: Index::new(),
            slices: Index::new(),
            nodes: Index::new(),
        };
        // Symlinks to directories are listed; a load reads regular files only.
        let mut paths: Vec<PathBuf> = scan(path, is_dir)
            .map_err(read_err)?
            .into_iter()
            .filter_map(|(p, st)| st.map(|_| p))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(ManifestError::Empty {
                path: path.to_path_buf(),
            });
        }
        for chunk in paths.chunks(LOAD_CHUNK) {
            let mut objs = Manifests::default();
            for (p, loaded) in chunk.iter().zip(read_all(chunk)) {
                let (st, m) = loaded?;
                let keys = FileKeys::of(&m);
                files.index(p, keys.clone());
                files.files.insert(p.clone(), Cached { stamp: st, keys });
                objs.append(m);
            }
            each(objs);
        }
        Ok(files)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_dir(&self) -> bool {
        self.is_dir
    }

    /// Number of manifest files cached.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Compares every file's stamp with the cache and reloads what differs
    /// (what the re-scan thread does in the daemon, on one thread).
    pub fn rescan(&mut self) -> Changes {
        match stale(&self.root, scan(&self.root, self.is_dir), &*self) {
            Ok(paths) => self.refresh(&paths),
            Err(e) => refused(e),
        }
    }

    /// A copy of the known stamps ([`KnownStamps`]), for the scanner thread
    /// to start from; the watcher's own re-scan looks in the cache in place.
    pub fn stamps(&self) -> HashMap<PathBuf, Stamp> {
        let loaded = self.files.iter().map(|(p, c)| (p.clone(), c.stamp));
        let failed = self.failed.iter().map(|(p, st)| (p.clone(), *st));
        loaded.chain(failed).collect()
    }

    /// The stamps learnt (`Some`) or forgotten (`None`) since the last call.
    pub fn take_stamp_changes(&mut self) -> StampChanges {
        std::mem::take(&mut self.stamp_changes)
    }

    /// Reloads the named files (inotify events), whatever their stamps say:
    /// an in-place rewrite within one mtime tick keeps size, mtime and inode.
    pub fn refresh(&mut self, paths: &BTreeSet<PathBuf>) -> Changes {
        let updates: Vec<(PathBuf, Update)> = paths
            .iter()
            .filter(|p| {
                if self.is_dir {
                    is_manifest(p)
                } else {
                    **p == self.root
                }
            })
            .map(|p| (p.clone(), reload(p)))
            .collect();
        let gone = updates
            .iter()
            .filter(|(p, u)| matches!(u, Update::Gone) && self.files.contains_key(p))
            .count();
        let added = updates
            .iter()
            .filter(|(p, u)| !matches!(u, Update::Gone) && !self.files.contains_key(p))
            .count();
        if gone > 0 && self.files.len() + added == gone {
            return refused(format!("{}: no manifest files", self.root.display()));
        }
        self.apply(updates)
    }

    fn index(&mut self, path: &Path, keys: FileKeys) {
        let path: Arc<Path> = Arc::from(path);
        for (index, keys) in [
            (&mut self.services, keys.services),
            (&mut self.slices, keys.slices),
            (&mut self.nodes, keys.nodes),
        ] {
            for k in keys {
                index.entry(k).or_default().insert(&path);
            }
        }
    }

    fn unindex(&mut self, path: &Path, keys: &FileKeys) {
        for (index, keys) in [
            (&mut self.services, &keys.services),
            (&mut self.slices, &keys.slices),
            (&mut self.nodes, &keys.nodes),
        ] {
            for k in keys {
                if let Some(files) = index.get_mut(k) {
                    files.remove(path);
                }
            }
        }
    }

    /// Folds file updates into the cache and resolves every key they touched.
    fn apply(&mut self, updates: Vec<(PathBuf, Update)>) -> Changes {
        let mut out = Changes::default();
        let mut touched = FileKeys::default();
        let mut fresh: HashMap<PathBuf, Manifests> = HashMap::new();
        for (p, u) in updates {
            match u {
                Update::Gone => {
                    self.stamp_changes.push((p.clone(), None));
                    self.failed.remove(&p);
                    if let Some(old) = self.files.remove(&p) {
                        self.unindex(&p, &old.keys);
                        extend(&mut touched, old.keys);
                        out.removed += 1;
                    }
                }
                Update::Failed(st, e) => {
                    out.errors.push(e);
                    self.stamp_changes.push((p.clone(), st));
                    match (self.files.get_mut(&p), st) {
                        (Some(c), Some(st)) => c.stamp = st,
                        (None, Some(st)) => {
                            self.failed.insert(p, st);
                        }
                        _ => {}
                    }
                }
                Update::Loaded(st, mut m) => {
                    self.stamp_changes.push((p.clone(), Some(st)));
                    self.failed.remove(&p);
                    let keys = FileKeys::of(&m);
                    if let Some(old) = self.files.remove(&p) {
                        self.unindex(&p, &old.keys);
                        extend(&mut touched, old.keys);
                    }
                    self.index(&p, keys.clone());
                    extend(&mut touched, keys.clone());
                    out.warnings.append(&mut m.warnings);
                    out.reloaded += 1;
                    self.files.insert(p.clone(), Cached { stamp: st, keys });
                    fresh.insert(p, m);
                }
            }
        }
        let mut reread = Reread::new(&fresh);
        out.services = resolve(&mut self.services, touched.services, &mut reread, |m| {
            &m.services
        });
        out.slices = resolve(&mut self.slices, touched.slices, &mut reread, |m| &m.slices);
        out.nodes = resolve(&mut self.nodes, touched.nodes, &mut reread, |m| &m.nodes);
        out.errors.append(&mut reread.errors);
        out
    }
}

pub(super) fn refused(error: String) -> Changes {
    Changes {
        errors: vec![format!("{error}; keeping the previous objects")],
        ..Default::default()
    }
}

fn extend(into: &mut FileKeys, keys: FileKeys) {
    into.services.extend(keys.services);
    into.slices.extend(keys.slices);
    into.nodes.extend(keys.nodes);
}

/// Stamps and parses `paths` on every CPU (parsing dominates a first load of
/// thousands of files), returning the results in order.
fn read_all(paths: &[PathBuf]) -> Vec<Result<(Stamp, Manifests), ManifestError>> {
    let one = |p: &PathBuf| {
        let st = stamp(p).ok().flatten().ok_or_else(|| ManifestError::Read {
            path: p.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
        Ok((st, read(p)?))
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || paths.len() < 64 {
        return paths.iter().map(one).collect();
    }
    let chunk = paths.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(one).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn read(path: &Path) -> Result<Manifests, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut m = Manifests::default();
    manifests::load_str(&text, path, &mut m)?;
    Ok(m)
}

fn reload(path: &Path) -> Update {
    let st = match stamp(path) {
        Ok(Some(st)) => st,
        // No longer a file (a directory named *.yaml is not read either).
        Ok(None) => return Update::Gone,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Update::Gone,
        Err(e) => return Update::Failed(None, format!("cannot read {}: {e}", path.display())),
    };
    match read(path) {
        Ok(m) => Update::Loaded(st, m),
        Err(ManifestError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Update::Gone
        }
        Err(e) => Update::Failed(Some(st), e.to_string()),
    }
}

/// The objects of files read in this refresh, and of unchanged files that
/// must be read again because they now win a key (rare: duplicate keys).
struct Reread<'a> {
    fresh: &'a HashMap<PathBuf, Manifests>,
    extra: HashMap<PathBuf, Option<Manifests>>,
    errors: Vec<String>,
}

impl<'a> Reread<'a> {
    fn new(fresh: &'a HashMap<PathBuf, Manifests>) -> Self {
        Reread {
            fresh,
            extra: HashMap::new(),
            errors: Vec::new(),
        }
    }

    fn get(&mut self, path: &Path) -> Option<&Manifests> {
        if let Some(m) = self.fresh.get(path) {
            return Some(m);
        }
        if !self.extra.contains_key(path) {
            let m = match read(path) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.errors.push(e.to_string());
                    None
                }
            };
            self.extra.insert(path.to_path_buf(), m);
        }
        self.extra.get(path).and_then(Option::as_ref)
    }
}

/// The newest state of each touched key: the winning file's last object
/// with that key, or None when no file holds it any more.
fn resolve<K: Resource + Clone>(
    index: &mut Index,
    touched: Vec<ObjKey>,
    reread: &mut Reread<'_>,
    of_kind: fn(&Manifests) -> &Vec<K>,
) -> Vec<(ObjKey, Option<K>)> {
    let touched: BTreeSet<ObjKey> = touched.into_iter().collect();
    let mut out = Vec::with_capacity(touched.len());
    for key in touched {
        let winner = index.get(&key).and_then(|files| files.last()).cloned();
        let Some(winner) = winner else {
            index.remove(&key);
            out.push((key, None));
            continue;
        };
        let obj = reread
            .get(&winner)
            .and_then(|m| of_kind(m).iter().rev().find(|o| key_of(*o) == key))
            .cloned();
        // An unreadable winner leaves the key as the trackers last saw it.
        if let Some(obj) = obj {
            out.push((key, Some(obj)));
        }
    }
    out
}

/// A path is in `files` or in `failed`, never both (`apply`).
impl KnownStamps for ManifestFiles {
    fn stamp(&self, path: &Path) -> Option<Stamp> {
        self.files
            .get(path)
            .map(|c| c.stamp)
            .or_else(|| self.failed.get(path).copied())
    }

    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.keys().chain(self.failed.keys())
    }
}
