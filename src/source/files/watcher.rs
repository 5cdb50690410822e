//! The inotify watch of a manifests path: events become re-reads of the files they name, served on a thread of their own.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};

use super::cache::{Changes, ManifestFiles, refused};
use super::feed::feed_changes;
use super::scanner::start_scanner;
use super::stamp::is_manifest;
use crate::changes::{Hooks, Sources};

/// How often the path is re-scanned in full while inotify watches it (a
/// safety net for what inotify cannot see, e.g. a replaced parent directory).
/// Every 5 min: at 10,000 files a re-scan took 0.67 s of CPU in the lab, which
/// every 30 s was most of an idle daemon's cost outside its verifications
/// (#17 point 7).
pub const POLL_WITH_INOTIFY: Duration = Duration::from_secs(300);
/// How often the path is re-scanned when inotify is unavailable.
pub const POLL_WITHOUT_INOTIFY: Duration = Duration::from_secs(1);

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
    let report = move |found| tx.send(Msg::Stale(found)).is_ok();
    let learnt = match start_scanner(&files, poll, report) {
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

/// Logs what a refresh found and feeds its changes.
pub(super) fn publish(
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
