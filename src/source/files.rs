//! The `--manifests` source: one full load, then an inotify watch (plus a slow poll) that re-reads only changed files and feeds only their objects.
//!
//! One endpoint change must cost the same at 10 services as at 10,000, so a
//! change never re-reads or re-feeds the whole directory: each file keeps its
//! stamp and the keys of its objects, and a change to a file yields the
//! objects it added, changed or removed. When several files hold an object
//! with the same key, the last file by name wins, as in a full load.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use kube::runtime::watcher::Event;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

use crate::changes::{Eligibility, Events, Hooks, ObjKey, Sources, feed, key_of};
use crate::health;
use crate::source::manifests::{self, ManifestError, Manifests};

/// How often the path is re-scanned in full while inotify watches it (a
/// safety net for what inotify cannot see, e.g. a replaced parent directory).
pub const POLL_WITH_INOTIFY: Duration = Duration::from_secs(30);
/// Files read (in parallel) and handed over at a time by the first load.
pub const LOAD_CHUNK: usize = 512;
/// How often the path is re-scanned when inotify is unavailable.
pub const POLL_WITHOUT_INOTIFY: Duration = Duration::from_secs(1);

/// What tells a file's content changed without reading it: size, mtime and
/// inode, taken through symlinks so a rename or a ConfigMap `..data` swap shows.
pub type Stamp = (u64, Option<SystemTime>, u64);

/// None when `path` is not a regular file (after symlinks).
fn stamp(path: &Path) -> std::io::Result<Option<Stamp>> {
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
struct Cached {
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
    files: BTreeMap<PathBuf, Cached>,
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
    /// Loads every file as `manifests::load` does (any invalid file is an
    /// error), returning the cache and the objects in file order.
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

fn refused(error: String) -> Changes {
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

/// An object standing for `key` in a Delete event (only its key is read).
fn tombstone<K: Resource + Default>(key: ObjKey) -> K {
    let mut k = K::default();
    let meta = k.meta_mut();
    meta.name = Some(key.name);
    meta.namespace = Some(key.namespace).filter(|ns| !ns.is_empty());
    k
}

fn as_events<K: Resource + Default>(changes: Vec<(ObjKey, Option<K>)>) -> Vec<Event<K>> {
    changes
        .into_iter()
        .map(|(key, obj)| match obj {
            Some(o) => Event::Apply(o),
            None => Event::Delete(tombstone(key)),
        })
        .collect()
}

/// Feeds one full load of the manifests as a complete list of every source,
/// so objects gone from the files are deleted and unchanged ones are no-ops.
/// Only the Node called `node_name` is kept (the API watch's field selector).
pub fn feed_manifests(sources: &Mutex<Sources>, hooks: &Hooks, node_name: &str, m: Manifests) {
    let mut list = FullList::begin(sources, hooks, node_name);
    list.add(m);
    list.end();
}

/// The daemon's first load: every file read and fed as one complete list of
/// each kind, [`LOAD_CHUNK`] files at a time, so the objects of a large
/// directory are never in memory together (the trackers keep them parsed).
/// Returns the cache, this node's Node objects and the warnings.
pub fn load_and_feed(
    path: &Path,
    sources: &Mutex<Sources>,
    hooks: &Hooks,
    node_name: &str,
) -> Result<(ManifestFiles, Manifests), ManifestError> {
    let mut list = FullList::begin(sources, hooks, node_name);
    let files = ManifestFiles::load_each(path, |m| list.add(m))?;
    let kept = Manifests {
        nodes: list.nodes.clone(),
        warnings: std::mem::take(&mut list.warnings),
        ..Default::default()
    };
    list.end();
    Ok((files, kept))
}

fn listed<K>(objs: Vec<K>) -> Vec<Event<K>> {
    objs.into_iter().map(Event::InitApply).collect()
}

/// A complete list of every kind fed in pieces: Init first, the objects as
/// they come, InitDone (and the Node) at the end. Until `end`, the sources
/// are not ready, so no sync sees a partial list.
struct FullList<'a> {
    sources: &'a Mutex<Sources>,
    hooks: &'a Hooks,
    node_name: &'a str,
    nodes: Vec<Node>,
    warnings: Vec<String>,
}

impl<'a> FullList<'a> {
    fn begin(sources: &'a Mutex<Sources>, hooks: &'a Hooks, node_name: &'a str) -> Self {
        let init = Events {
            services: vec![Event::Init],
            slices: vec![Event::Init],
            nodes: vec![Event::Init],
        };
        feed(sources, hooks, init, Eligibility::Keep);
        FullList {
            sources,
            hooks,
            node_name,
            nodes: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn add(&mut self, m: Manifests) {
        let name = Some(self.node_name);
        self.nodes.extend(
            m.nodes
                .into_iter()
                .filter(|n| n.metadata.name.as_deref() == name),
        );
        self.warnings.extend(m.warnings);
        let objects = Events {
            services: listed(m.services),
            slices: listed(m.slices),
            nodes: Vec::new(),
        };
        feed(self.sources, self.hooks, objects, Eligibility::Keep);
    }

    fn end(self) {
        // Without a Node object the node is assumed eligible (nothing says otherwise).
        let eligibility = self.nodes.last().map_or(Eligibility::Keep, |n| {
            Eligibility::Set(health::node_eligible(n))
        });
        let mut nodes = listed(self.nodes);
        nodes.push(Event::InitDone);
        let done = Events {
            services: vec![Event::InitDone],
            slices: vec![Event::InitDone],
            nodes,
        };
        feed(self.sources, self.hooks, done, eligibility);
    }
}

/// Feeds the objects one refresh changed, as watch events.
pub fn feed_changes(sources: &Mutex<Sources>, hooks: &Hooks, node_name: &str, c: Changes) {
    let nodes: Vec<(ObjKey, Option<Node>)> = c
        .nodes
        .into_iter()
        .filter(|(k, _)| k.name == node_name)
        .collect();
    let eligibility = nodes
        .iter()
        .rev()
        .find_map(|(_, n)| n.as_ref())
        .map_or(Eligibility::Keep, |n| {
            Eligibility::Set(health::node_eligible(n))
        });
    let events = Events {
        services: as_events(c.services),
        slices: as_events(c.slices),
        nodes: as_events(nodes),
    };
    feed(sources, hooks, events, eligibility);
}

/// What a batch of inotify events asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Re-scan every stamp (an event without a usable file name).
    pub rescan: bool,
    /// Re-read these files.
    pub files: BTreeSet<PathBuf>,
}

impl Wanted {
    pub fn is_empty(&self) -> bool {
        !self.rescan && self.files.is_empty()
    }

    /// Adds what one event asks for. Reads (our own included) ask for nothing;
    /// `..`-names are a ConfigMap volume's swap; other names (editor and
    /// atomic-write temporaries) are not manifests and are ignored.
    pub fn add(&mut self, root: &Path, is_dir: bool, event: &notify::Event) {
        if event.need_rescan() {
            self.rescan = true;
            return;
        }
        if let EventKind::Access(a) = event.kind
            && a != AccessKind::Close(AccessMode::Write)
        {
            return;
        }
        for p in &event.paths {
            let Some(name) = p.file_name() else {
                self.rescan = true;
                continue;
            };
            if name.to_string_lossy().starts_with("..") {
                self.rescan = true;
            } else if is_dir {
                if *p == *root {
                    self.rescan = true;
                } else if is_manifest(p) {
                    self.files.insert(root.join(name));
                }
            } else if Some(name) == root.file_name() {
                self.files.insert(root.to_path_buf());
            }
        }
    }
}

/// The directory inotify watches: the root itself, or a single file's parent
/// (a file replaced by rename is a new inode; its directory sees the rename).
fn watched_dir(files: &ManifestFiles) -> PathBuf {
    if files.is_dir() {
        return files.root().to_path_buf();
    }
    match files.root().parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

enum Msg {
    Event(notify::Event),
    /// The files a re-scan found stale, or why it could not tell.
    Stale(Result<BTreeSet<PathBuf>, String>),
    Stop,
}

/// Keeps `files` current and feeds what changes, until the returned future
/// is dropped (the daemon aborts it on exit). File reads run on a thread of
/// their own so a full re-scan never stalls the async runtime.
pub async fn watch(files: ManifestFiles, sources: Arc<Mutex<Sources>>, hooks: Hooks, node: String) {
    let (tx, rx) = std::sync::mpsc::channel();
    struct StopOnDrop(Sender<Msg>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            let _ = self.0.send(Msg::Stop);
        }
    }
    let _stop = StopOnDrop(tx.clone());
    let task =
        tokio::task::spawn_blocking(move || watch_blocking(files, tx, rx, &sources, &hooks, &node));
    let _ = task.await;
}

fn start_inotify(dir: &Path, tx: Sender<Msg>) -> notify::Result<notify::RecommendedWatcher> {
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let ev = res.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "manifests watch error; re-scanning");
            notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan)
        });
        let _ = tx.send(Msg::Event(ev));
    })?;
    w.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(w)
}

fn watch_blocking(
    mut files: ManifestFiles,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    sources: &Mutex<Sources>,
    hooks: &Hooks,
    node: &str,
) {
    let dir = watched_dir(&files);
    let (_inotify, poll) = match start_inotify(&dir, tx.clone()) {
        Ok(w) => (Some(w), POLL_WITH_INOTIFY),
        Err(e) => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the manifests with inotify; polling every {:?}", POLL_WITHOUT_INOTIFY);
            (None, POLL_WITHOUT_INOTIFY)
        }
    };
    // Dropping `learnt` (on return) ends the scanner.
    let learnt = match start_scanner(&files, poll, tx) {
        Ok(learnt) => learnt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the manifests re-scan thread; following inotify events only");
            std::sync::mpsc::channel().0
        }
    };
    loop {
        let mut wanted = Wanted::default();
        let mut stale = Vec::new();
        let Ok(first) = rx.recv() else { return };
        // Take whatever else arrived meanwhile: one refresh for a burst.
        for msg in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match msg {
                Msg::Stop => return,
                Msg::Event(ev) => wanted.add(files.root(), files.is_dir(), &ev),
                Msg::Stale(s) => stale.push(s),
            }
        }
        // Named files first: they are re-read whatever their stamps say.
        if !wanted.files.is_empty() {
            let changes = files.refresh(&wanted.files);
            publish(&files, changes, sources, hooks, node);
        }
        // An event without a usable name (a ConfigMap's `..data` swap, a lost
        // inotify queue) is served now, here, not at the scanner's priority.
        if wanted.rescan {
            let changes = files.rescan();
            publish(&files, changes, sources, hooks, node);
        }
        for s in stale {
            let changes = match s {
                Ok(paths) if paths.is_empty() => continue,
                Ok(paths) => files.refresh(&paths),
                Err(e) => refused(e),
            };
            publish(&files, changes, sources, hooks, node);
        }
        let changes = files.take_stamp_changes();
        if !changes.is_empty() {
            let _ = learnt.send(changes);
        }
    }
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

/// Stamps the watcher learnt (`Some`) or forgot (`None`), for the scanner's copy.
pub type StampChanges = Vec<(PathBuf, Option<Stamp>)>;

/// Starts the safety-net thread: every `poll` it re-scans the files,
/// compares their stamps with its copy of the cache's (kept current by what
/// the watcher sends), and sends the watcher only the stale files. All of it
/// runs there at the lowest CPU priority: at 10,000 files under TCG, a scan
/// (or only its comparison) on the watcher's thread held up a change served
/// meanwhile by up to ~100 ms.
fn start_scanner(
    files: &ManifestFiles,
    poll: Duration,
    tx: Sender<Msg>,
) -> std::io::Result<Sender<StampChanges>> {
    let (learnt, asked) = std::sync::mpsc::channel::<StampChanges>();
    let (root, is_dir, mut known) = (files.root().to_path_buf(), files.is_dir(), files.stamps());
    std::thread::Builder::new()
        .name("manifests-scan".into())
        .spawn(move || {
            lowest_priority();
            let mut next = Instant::now() + poll;
            loop {
                match asked.recv_timeout(next.saturating_duration_since(Instant::now())) {
                    Ok(changes) => {
                        learn(&mut known, changes);
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                let t = Instant::now();
                let scanned = scan(&root, is_dir);
                // What the watcher learnt during the scan.
                while let Ok(changes) = asked.try_recv() {
                    learn(&mut known, changes);
                }
                let found = stale(&root, scanned, &known);
                tracing::debug!(files = known.len(), stale = found.as_ref().map_or(0, BTreeSet::len), took = ?t.elapsed(), "manifests re-scanned");
                next = Instant::now() + poll;
                if tx.send(Msg::Stale(found)).is_err() {
                    return;
                }
            }
        })?;
    Ok(learnt)
}

/// Folds the watcher's stamp changes into the scanner's copy.
fn learn(known: &mut HashMap<PathBuf, Stamp>, changes: StampChanges) {
    for (p, st) in changes {
        match st {
            Some(st) => known.insert(p, st),
            None => known.remove(&p),
        };
    }
}

/// Sets the calling thread's nice value to 19, so it runs only on what CPU
/// the sync loop and the watcher leave.
fn lowest_priority() {
    // Linux keeps the nice value per thread, and `who = 0` names the calling
    // thread (setpriority(2), NOTES). Lowering it needs no privilege.
    // SAFETY: a plain syscall with no pointers.
    let rc = unsafe { nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower the re-scan thread's priority");
    }
}

/// Logs what a refresh found and feeds its changes.
fn publish(
    files: &ManifestFiles,
    changes: Changes,
    sources: &Mutex<Sources>,
    hooks: &Hooks,
    node: &str,
) {
    for w in &changes.warnings {
        tracing::warn!("{w}");
    }
    for e in &changes.errors {
        // Retried on the next change; the last good objects stay programmed.
        tracing::warn!(error = %e, "cannot reload manifests; keeping the previous objects");
    }
    if changes.reloaded + changes.removed > 0 {
        tracing::info!(
            path = %files.root().display(),
            reloaded = changes.reloaded,
            removed = changes.removed,
            "manifests changed"
        );
    }
    if !changes.is_empty() {
        feed_changes(sources, hooks, node, changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::changes::lock;
    use crate::model::testutil;
    use crate::model::testutil::cluster_ip_service as svc;
    use crate::source::synthetic::Cluster;

    fn svc_yaml(name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n"
        )
    }

    fn key(name: &str) -> ObjKey {
        ObjKey {
            namespace: "default".into(),
            name: name.into(),
        }
    }

    /// (name, ClusterIP or None for a deletion) of each service change, sorted.
    fn service_ips(c: &Changes) -> Vec<(String, Option<String>)> {
        let mut v: Vec<_> = c
            .services
            .iter()
            .map(|(k, s)| {
                let ip = s.as_ref().map(|s| {
                    s.spec
                        .as_ref()
                        .and_then(|sp| sp.cluster_ip.clone())
                        .unwrap_or_default()
                });
                (k.name.clone(), ip)
            })
            .collect();
        v.sort();
        v
    }

    fn write_atomically(path: &Path, text: &str) {
        let tmp = path.with_file_name(".tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn manifests_feed_is_a_full_relist() {
        let mut node = testutil::node_obj();
        let name = node.metadata.name.clone().unwrap();
        let s = Mutex::new(Sources::new(Default::default(), &name));
        let h = Hooks::for_tests();
        let mut other = node.clone();
        other.metadata.name = Some("someone-else".into());
        let m = Manifests {
            services: vec![svc("a", "10.0.0.1"), svc("b", "10.0.0.2")],
            nodes: vec![other, node.clone()],
            ..Default::default()
        };
        feed_manifests(&s, &h, &name, m);
        assert!(
            h.trigger.is_pending(),
            "every source listed: first sync queued"
        );
        let b = lock(&s).take_batch().expect("ready after one load");
        assert_eq!(b.services.len(), 2);
        assert_eq!(
            b.node.as_ref().and_then(|n| n.metadata.name.clone()),
            Some(name.clone()),
            "only this node's Node object"
        );

        // Reload without b, same a: only b's deletion is pending.
        let h2 = Hooks::for_tests();
        let m = Manifests {
            services: vec![svc("a", "10.0.0.1")],
            nodes: vec![node.clone()],
            ..Default::default()
        };
        feed_manifests(&s, &h2, &name, m);
        assert!(h2.trigger.is_pending());
        let b = lock(&s).take_batch().unwrap();
        assert_eq!(b.services.len(), 1);
        assert_eq!(b.services[0].0.name, "b");
        assert!(b.services[0].1.current.is_none());
        assert!(b.node.is_none(), "unchanged node");

        // An identical reload queues nothing.
        let h3 = Hooks::for_tests();
        let m = Manifests {
            services: vec![svc("a", "10.0.0.1")],
            nodes: vec![node.clone()],
            ..Default::default()
        };
        feed_manifests(&s, &h3, &name, m);
        assert!(!h3.trigger.is_pending());
        assert!(lock(&s).take_batch().unwrap().is_empty());

        // A node being deleted makes /healthz report it ineligible.
        node.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        feed_manifests(
            &s,
            &h3,
            &name,
            Manifests {
                services: vec![svc("a", "10.0.0.1")],
                nodes: vec![node],
                ..Default::default()
            },
        );
        assert!(!h3.health.status().node_eligible);
    }

    #[test]
    fn changes_feed_only_what_they_carry() {
        let node = testutil::node_obj();
        let name = node.metadata.name.clone().unwrap();
        let s = Mutex::new(Sources::new(Default::default(), &name));
        let m = Manifests {
            services: vec![svc("a", "10.0.0.1"), svc("b", "10.0.0.2")],
            nodes: vec![node],
            ..Default::default()
        };
        feed_manifests(&s, &Hooks::for_tests(), &name, m);
        lock(&s).take_batch().unwrap();

        let h = Hooks::for_tests();
        let c = Changes {
            services: vec![(key("a"), Some(svc("a", "10.0.0.9"))), (key("b"), None)],
            nodes: vec![(
                ObjKey {
                    namespace: String::new(),
                    name: "someone-else".into(),
                },
                None,
            )],
            ..Default::default()
        };
        feed_changes(&s, &h, &name, c);
        assert!(h.trigger.is_pending());
        let mut b = lock(&s).take_batch().unwrap();
        b.services.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(b.services.len(), 2);
        assert!(b.services[0].1.current.is_some() && b.services[1].1.current.is_none());
        assert!(b.node.is_none(), "another node's deletion is not ours");

        // Feeding an object as it already is queues nothing.
        let h = Hooks::for_tests();
        feed_changes(
            &s,
            &h,
            &name,
            Changes {
                services: vec![(key("a"), Some(svc("a", "10.0.0.9")))],
                ..Default::default()
            },
        );
        assert!(!h.trigger.is_pending());
    }

    #[test]
    fn a_change_rereads_only_its_file_and_yields_only_its_objects() {
        let d = tempfile::tempdir().unwrap();
        // Enough files to be parsed in parallel.
        let c = Cluster::new(100, 3, "n").unwrap();
        c.write(d.path()).unwrap();
        let (mut f, m) = ManifestFiles::load(d.path()).unwrap();
        assert_eq!(
            (m.services.len(), m.slices.len(), m.nodes.len()),
            (100, 100, 1)
        );
        assert_eq!(f.len(), 101);
        // In file order, as a sequential load gives them.
        let names: Vec<_> = m
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        assert!(f.rescan().is_empty(), "nothing changed");

        let eps = c.replace_endpoint(7, 1, 9).unwrap();
        let path = c.write_service(d.path(), 7, &eps).unwrap();
        // What inotify reports (the rename's target) and what the poll finds agree.
        let mut by_event = f.refresh(&BTreeSet::from([path]));
        assert_eq!(by_event.reloaded, 1);
        assert_eq!(by_event.slices.len(), 1);
        let (k, slice) = by_event.slices.pop().unwrap();
        assert_eq!(k.name, "svc-00007-1");
        let addrs: Vec<String> = slice
            .unwrap()
            .endpoints
            .into_iter()
            .flat_map(|e| e.addresses)
            .collect();
        assert!(
            addrs.contains(&Cluster::endpoint_ip(7, 9).to_string()),
            "{addrs:?}"
        );
        assert!(
            f.rescan().is_empty(),
            "the event already took the new stamp"
        );

        c.write_service(d.path(), 3, &eps).unwrap();
        let by_poll = f.rescan();
        assert_eq!((by_poll.reloaded, by_poll.slices.len()), (1, 1));
        assert_eq!(
            by_poll.services.len(),
            1,
            "the file's Service is re-fed as it is"
        );
    }

    /// A directory of `n` generated services, loaded into a cache.
    fn cached(n: usize) -> (tempfile::TempDir, Cluster, ManifestFiles) {
        let d = tempfile::tempdir().unwrap();
        let c = Cluster::new(n, 1, "n").unwrap();
        c.write(d.path()).unwrap();
        let (f, _) = ManifestFiles::load(d.path()).unwrap();
        (d, c, f)
    }

    #[test]
    fn a_scan_older_than_the_cache_loses_nothing() {
        let (d, c, mut f) = cached(8);
        // The scanner thread starts from the cache's stamps, lists and stamps...
        let mut known = f.stamps();
        let before = f.len();
        assert_eq!(known.len(), before);
        let scanned = scan(d.path(), true).unwrap();
        assert!(
            stale(d.path(), Ok(scanned.clone()), &known)
                .unwrap()
                .is_empty()
        );
        // ...while the watcher serves a change and a new file.
        let eps = c.replace_endpoint(5, 0, 1).unwrap();
        let changed = c.write_service(d.path(), 5, &eps).unwrap();
        let added = c
            .write_service(d.path(), 8, &c.initial_endpoints(8))
            .unwrap();
        let served = f.refresh(&BTreeSet::from([changed.clone(), added.clone()]));
        assert_eq!((served.reloaded, served.services.len()), (2, 2));
        // The scanner learns the new stamps, then judges its stale listing.
        let learnt = f.take_stamp_changes();
        assert_eq!(learnt.len(), 2);
        learn(&mut known, learnt);
        assert_eq!(known, f.stamps());
        let found = stale(d.path(), Ok(scanned), &known).unwrap();
        assert_eq!(found, BTreeSet::from([changed, added.clone()]));
        // Re-reading them keeps the file the listing missed.
        let late = f.refresh(&found);
        assert!(late.errors.is_empty() && late.removed == 0, "{late:?}");
        assert!(late.services.iter().all(|(_, s)| s.is_some()), "{late:?}");
        assert!(f.files.contains_key(&added));
        let fresh = scan(d.path(), true);
        assert!(stale(d.path(), fresh, &f.stamps()).unwrap().is_empty());
        assert!(f.rescan().is_empty(), "nothing left to do");
        // A listing that failed or found nothing keeps every object.
        assert!(stale(d.path(), Ok(Vec::new()), &known).is_err());
        let gone = d.path().join("gone");
        let e = stale(&gone, scan(&gone, true), &known).unwrap_err();
        assert!(e.starts_with("cannot read"), "{e}");
        assert_eq!(f.len(), before + 1);
    }

    #[test]
    fn the_scanners_copy_keeps_failed_stamps_and_forgets_gone_files() {
        let (d, _, mut f) = cached(2);
        let mut known = f.stamps();
        // A file that is invalid keeps its stamp: retried once it changes.
        let bad = d.path().join("bad.yaml");
        std::fs::write(&bad, "kind: Service\nmetadata: [\n").unwrap();
        let r = f.refresh(&BTreeSet::from([bad.clone()]));
        assert_eq!(r.errors.len(), 1, "{r:?}");
        learn(&mut known, f.take_stamp_changes());
        assert!(known.contains_key(&bad));
        assert!(
            stale(d.path(), scan(d.path(), true), &known)
                .unwrap()
                .is_empty()
        );
        // The cache, looked at in place, agrees with the copy, failed file included.
        assert_eq!(
            KnownStamps::paths(&f).collect::<BTreeSet<_>>(),
            known.keys().collect()
        );
        for (p, st) in &known {
            assert_eq!(KnownStamps::stamp(&f, p), Some(*st), "{}", p.display());
        }
        assert_eq!(KnownStamps::stamp(&f, &d.path().join("none.yaml")), None);
        assert!(
            stale(d.path(), scan(d.path(), true), &f)
                .unwrap()
                .is_empty()
        );
        // Gone: forgotten.
        std::fs::remove_file(&bad).unwrap();
        f.refresh(&BTreeSet::from([bad.clone()]));
        learn(&mut known, f.take_stamp_changes());
        assert!(!known.contains_key(&bad));
        assert_eq!(known, f.stamps());
    }

    #[test]
    fn the_scanner_thread_reports_only_stale_files() {
        let (d, c, mut f) = cached(20);
        let (tx, rx) = std::sync::mpsc::channel();
        let learnt = start_scanner(&f, Duration::from_millis(50), tx).unwrap();
        // The first scan result that satisfies `done`, within 20 s.
        let next_scan = |done: &dyn Fn(&BTreeSet<PathBuf>) -> bool| {
            let start = std::time::Instant::now();
            loop {
                assert!(start.elapsed() < Duration::from_secs(20), "no such scan");
                match rx.recv_timeout(Duration::from_secs(20)) {
                    Ok(Msg::Stale(Ok(found))) if done(&found) => return found,
                    Ok(Msg::Stale(Ok(_))) => {}
                    _ => panic!("no scan result"),
                }
            }
        };
        assert!(next_scan(&|_| true).is_empty(), "nothing changed yet");
        // A change inotify did not report: only a scan finds it.
        let eps = c.replace_endpoint(3, 0, 1).unwrap();
        let p = c.write_service(d.path(), 3, &eps).unwrap();
        let found = next_scan(&|found| !found.is_empty());
        assert_eq!(found, BTreeSet::from([p]));
        // The watcher reads it and passes its stamp on: later scans are clean.
        assert_eq!(f.refresh(&found).slices.len(), 1);
        learnt.send(f.take_stamp_changes()).unwrap();
        next_scan(&|found| found.is_empty());
        // Dropping the watcher's end stops the thread (its sender goes too).
        drop(learnt);
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return,
                Err(RecvTimeoutError::Timeout) => break,
            }
        }
        panic!("the scanner did not stop");
    }

    #[test]
    fn removed_files_and_objects_are_deleted() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.yaml");
        let b = d.path().join("b.yaml");
        std::fs::write(
            &a,
            svc_yaml("a1", "10.0.0.1") + "---\n" + &svc_yaml("a2", "10.0.0.2"),
        )
        .unwrap();
        std::fs::write(&b, svc_yaml("b", "10.0.0.3")).unwrap();
        std::fs::write(d.path().join("notes.txt"), "not a manifest").unwrap();
        let (mut f, _) = ManifestFiles::load(d.path()).unwrap();
        assert_eq!(f.len(), 2);

        write_atomically(&a, &svc_yaml("a1", "10.0.0.1"));
        let c = f.rescan();
        assert_eq!(
            service_ips(&c),
            [("a1".into(), Some("10.0.0.1".into())), ("a2".into(), None)]
        );

        std::fs::remove_file(&b).unwrap();
        let c = f.refresh(&BTreeSet::from([b.clone()]));
        assert_eq!(service_ips(&c), [("b".into(), None)]);
        assert_eq!(c.removed, 1);

        // Removing the last file is refused (a ConfigMap volume mid-swap, a mistake).
        std::fs::remove_file(&a).unwrap();
        let c = f.refresh(&BTreeSet::from([a.clone()]));
        assert!(
            c.is_empty() && c.errors[0].contains("no manifest files"),
            "{c:?}"
        );
        let c = f.rescan();
        assert!(c.is_empty() && c.errors.len() == 1, "{c:?}");
        assert_eq!(f.len(), 1, "a.yaml's objects are kept");
    }

    #[test]
    fn the_last_file_by_name_wins_a_duplicate_key() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.yaml");
        let b = d.path().join("b.yaml");
        std::fs::write(&a, svc_yaml("dup", "10.0.0.1")).unwrap();
        std::fs::write(&b, svc_yaml("dup", "10.0.0.2")).unwrap();
        let (mut f, m) = ManifestFiles::load(d.path()).unwrap();
        assert_eq!(
            m.services.len(),
            2,
            "the full list carries both, in file order"
        );

        // a changes, but b still wins: b's object is the current one.
        write_atomically(&a, &svc_yaml("dup", "10.0.0.7"));
        assert_eq!(
            service_ips(&f.refresh(&BTreeSet::from([a.clone()]))),
            [("dup".into(), Some("10.0.0.2".into()))]
        );
        // b drops it: a's (unchanged, re-read) object takes over rather than a deletion.
        write_atomically(&b, &svc_yaml("other", "10.0.0.3"));
        assert_eq!(
            service_ips(&f.refresh(&BTreeSet::from([b.clone()]))),
            [
                ("dup".into(), Some("10.0.0.7".into())),
                ("other".into(), Some("10.0.0.3".into()))
            ]
        );
    }

    #[test]
    fn an_invalid_file_keeps_its_objects_until_fixed() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.yaml");
        std::fs::write(&a, svc_yaml("a", "10.0.0.1")).unwrap();
        std::fs::write(d.path().join("z.yaml"), svc_yaml("z", "10.0.0.9")).unwrap();
        let (mut f, _) = ManifestFiles::load(d.path()).unwrap();

        write_atomically(&a, "kind: Service\nmetadata: [\n");
        let c = f.rescan();
        assert!(c.is_empty(), "{c:?}");
        assert!(c.errors[0].contains("a.yaml"), "{:?}", c.errors);
        assert!(f.rescan().errors.is_empty(), "not retried until it changes");

        // A new invalid file is reported once too.
        std::fs::write(d.path().join("b.yaml"), "kind: [\n").unwrap();
        assert_eq!(f.rescan().errors.len(), 1);
        assert!(f.rescan().errors.is_empty());

        write_atomically(&a, &svc_yaml("a", "10.0.0.2"));
        assert_eq!(
            service_ips(&f.rescan()),
            [("a".into(), Some("10.0.0.2".into()))]
        );
        // The initial load stays strict: bad input fails before anything runs.
        let e = ManifestFiles::load(d.path()).unwrap_err();
        assert!(e.to_string().contains("b.yaml"), "{e}");
    }

    #[test]
    fn a_single_file_and_a_configmap_swap_are_followed() {
        let d = tempfile::tempdir().unwrap();
        // A ConfigMap volume: files are symlinks through `..data`, swapped atomically.
        let v1 = d.path().join("..v1");
        let v2 = d.path().join("..v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("svc.yaml"), svc_yaml("s", "10.0.0.1")).unwrap();
        std::fs::write(v2.join("svc.yaml"), svc_yaml("s", "10.0.0.2")).unwrap();
        std::os::unix::fs::symlink("..v1", d.path().join("..data")).unwrap();
        let file = d.path().join("svc.yaml");
        std::os::unix::fs::symlink("..data/svc.yaml", &file).unwrap();

        let (mut dir, _) = ManifestFiles::load(d.path()).unwrap();
        let (mut single, _) = ManifestFiles::load(&file).unwrap();
        assert_eq!((dir.len(), single.len()), (1, 1));
        assert!(!single.is_dir());

        std::os::unix::fs::symlink("..v2", d.path().join("..data_tmp")).unwrap();
        std::fs::rename(d.path().join("..data_tmp"), d.path().join("..data")).unwrap();
        let want = [("s".to_string(), Some("10.0.0.2".to_string()))];
        assert_eq!(service_ips(&dir.rescan()), want);
        assert_eq!(service_ips(&single.rescan()), want);

        // The swap's inotify event names `..data`: that asks for a re-scan.
        let ev = notify::Event::new(EventKind::Create(notify::event::CreateKind::Any))
            .add_path(d.path().join("..data"));
        let mut w = Wanted::default();
        w.add(single.root(), false, &ev);
        assert!(w.rescan);
    }

    #[test]
    fn events_ask_for_the_files_they_name() {
        use notify::event::{CreateKind, ModifyKind, RenameMode};
        let root = Path::new("/m");
        let ev = |kind, p: &str| notify::Event::new(kind).add_path(PathBuf::from(p));
        let rename = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let mut w = Wanted::default();
        w.add(root, true, &ev(rename, "/m/a.yaml"));
        w.add(root, true, &ev(rename, "/m/.a.yaml.tmp"));
        w.add(
            root,
            true,
            &ev(EventKind::Create(CreateKind::File), "/m/notes.txt"),
        );
        w.add(
            root,
            true,
            &ev(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "/m/b.yaml",
            ),
        );
        assert_eq!(
            w,
            Wanted {
                rescan: false,
                files: BTreeSet::from([PathBuf::from("/m/a.yaml")]),
            },
            "our own reads and temporary files ask for nothing"
        );
        w.add(
            root,
            true,
            &ev(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/m/b.json",
            ),
        );
        assert!(w.files.contains(Path::new("/m/b.json")));
        assert!(!w.rescan);
        w.add(
            root,
            true,
            &ev(EventKind::Remove(notify::event::RemoveKind::Folder), "/m"),
        );
        assert!(w.rescan, "the directory itself changed");

        let mut w = Wanted::default();
        w.add(
            Path::new("/m/one.yaml"),
            false,
            &ev(rename, "/m/other.yaml"),
        );
        assert!(w.is_empty(), "a single file ignores its neighbours");
        w.add(Path::new("/m/one.yaml"), false, &ev(rename, "/m/one.yaml"));
        assert_eq!(w.files, BTreeSet::from([PathBuf::from("/m/one.yaml")]));
        let mut w = Wanted::default();
        w.add(
            root,
            true,
            &notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan),
        );
        assert!(w.rescan, "a queue overflow re-scans");
    }

    #[test]
    fn directories_named_like_manifests_are_not_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.yaml"), svc_yaml("a", "10.0.0.1")).unwrap();
        std::fs::create_dir(d.path().join("dir.yaml")).unwrap();
        std::os::unix::fs::symlink("dir.yaml", d.path().join("link.yaml")).unwrap();
        let (mut f, m) = ManifestFiles::load(d.path()).unwrap();
        assert_eq!((f.len(), m.services.len()), (1, 1));
        let c = f.rescan();
        assert!(c.is_empty() && c.errors.is_empty(), "{c:?}");
        assert_eq!((c.reloaded, c.removed), (0, 0));
    }

    #[test]
    fn the_first_load_is_fed_in_chunks_as_one_list() {
        let d = tempfile::tempdir().unwrap();
        let n = LOAD_CHUNK + 10;
        let c = Cluster::new(n, 1, "n").unwrap();
        c.write(d.path()).unwrap();
        let s = Mutex::new(Sources::new(Default::default(), "n"));
        let h = Hooks::for_tests();
        let mut chunks = Vec::new();
        let files = ManifestFiles::load_each(d.path(), |m| chunks.push(m.services.len())).unwrap();
        // The node's file sorts first and takes a place in the first chunk.
        assert_eq!(chunks, vec![LOAD_CHUNK - 1, 11], "services per chunk");
        assert_eq!(files.len(), n + 1, "every file cached (and the node's)");

        let (_, kept) = load_and_feed(d.path(), &s, &h, "n").unwrap();
        assert_eq!(kept.nodes.len(), 1, "this node's Node is handed back");
        assert!(kept.services.is_empty() && kept.slices.is_empty());
        assert!(h.trigger.is_pending());
        let b = lock(&s).take_batch().unwrap();
        assert_eq!((b.services.len(), b.slices.len()), (n, n));
        // Every event counts, as the API watch counts them.
        let text = h.metrics.encode();
        assert!(
            text.contains(&format!(
                "kubeproxy_sync_proxy_rules_service_changes_total {n}"
            )),
            "{text}"
        );

        // A bad file after the first chunk: an error naming it, and the
        // sources never become ready (no sync sees the partial list).
        std::fs::write(d.path().join("zzz-bad.yaml"), "kind: [").unwrap();
        let s = Mutex::new(Sources::new(Default::default(), "n"));
        let h = Hooks::for_tests();
        let e = load_and_feed(d.path(), &s, &h, "n").unwrap_err();
        assert!(e.to_string().contains("zzz-bad.yaml"), "{e}");
        assert!(lock(&s).take_batch().is_none());
        assert!(!h.trigger.is_pending());
    }

    #[tokio::test]
    async fn the_watcher_feeds_a_change_without_waiting_for_the_poll() {
        let d = tempfile::tempdir().unwrap();
        let c = Cluster::new(50, 2, "n").unwrap();
        c.write(d.path()).unwrap();
        let sources = Arc::new(Mutex::new(Sources::new(Default::default(), "n")));
        let h = Hooks::for_tests();
        let (f, _) = load_and_feed(d.path(), &sources, &h, "n").unwrap();
        assert_eq!(lock(&sources).take_batch().unwrap().slices.len(), 50);

        // Fresh hooks: the first feed left its trigger pending.
        let h = Hooks::for_tests();
        let task = tokio::spawn(watch(f, sources.clone(), h.clone(), "n".into()));
        let new_ip = Cluster::endpoint_ip(42, 5).to_string();
        let eps = c.replace_endpoint(42, 0, 5).unwrap();
        // The watch is set up on its own thread: rewrite until it reports, well before a poll.
        let start = std::time::Instant::now();
        let batch = loop {
            assert!(
                start.elapsed() < POLL_WITH_INOTIFY / 2,
                "no change fed within {:?}",
                POLL_WITH_INOTIFY / 2
            );
            c.write_service(d.path(), 42, &eps).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            if h.trigger.is_pending() {
                break lock(&sources).take_batch().unwrap();
            }
        };
        assert!(
            batch.services.is_empty(),
            "the unchanged Service is a no-op"
        );
        assert_eq!(batch.slices.len(), 1, "only the changed file's slice");
        let current = batch.slices[0].1.current.as_ref().unwrap();
        let input = current.input.as_ref().expect("a slice of a Service");
        assert!(input.endpoints.iter().any(|e| e.ip.to_string() == new_ip));
        task.abort();
    }

    #[tokio::test]
    async fn the_watcher_follows_a_configmap_swap_at_once() {
        let d = tempfile::tempdir().unwrap();
        let version = |n: u32| {
            let v = d.path().join(format!("..v{n}"));
            std::fs::create_dir(&v).unwrap();
            std::fs::write(v.join("svc.yaml"), svc_yaml("s", &format!("10.0.0.{n}"))).unwrap();
        };
        version(1);
        std::os::unix::fs::symlink("..v1", d.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/svc.yaml", d.path().join("svc.yaml")).unwrap();
        let sources = Arc::new(Mutex::new(Sources::new(Default::default(), "n")));
        let (f, _) = load_and_feed(d.path(), &sources, &Hooks::for_tests(), "n").unwrap();
        assert_eq!(lock(&sources).take_batch().unwrap().services.len(), 1);

        let h = Hooks::for_tests();
        let task = tokio::spawn(watch(f, sources.clone(), h.clone(), "n".into()));
        // Swap `..data` until the watcher reports (its inotify watch starts
        // on its own thread); no event names svc.yaml, so this is the re-scan
        // the swap asks for, well before the periodic one. Every swap is to a
        // new version: swapping back could let the tracker coalesce a late
        // reload and its undo into no change at all.
        let start = std::time::Instant::now();
        let mut n = 1;
        let batch = loop {
            assert!(
                start.elapsed() < POLL_WITH_INOTIFY / 2,
                "the swap was not followed within {:?}",
                POLL_WITH_INOTIFY / 2
            );
            n += 1;
            version(n);
            let tmp = d.path().join("..data_tmp");
            std::os::unix::fs::symlink(format!("..v{n}"), &tmp).unwrap();
            std::fs::rename(&tmp, d.path().join("..data")).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            if h.trigger.is_pending() {
                break lock(&sources).take_batch().unwrap();
            }
        };
        assert_eq!(batch.services.len(), 1, "the Service behind the swap");
        task.abort();
    }
}
