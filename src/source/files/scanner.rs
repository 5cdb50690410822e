//! The safety-net re-scan thread: at nice 19, it compares every file's stamp with its copy of the cache's and reports only stale files.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::cache::ManifestFiles;
use super::stamp::{Stamp, StampChanges, scan, stale};

/// Starts the safety-net thread: every `poll` it re-scans the files,
/// compares their stamps with its copy of the cache's (kept current by what
/// the watcher sends), and sends the watcher only the stale files. All of it
/// runs there at the lowest CPU priority: at 10,000 files under TCG, a scan
/// (or only its comparison) on the watcher's thread held up a change served
/// meanwhile by up to ~100 ms.
///
/// `report` gets each scan's stale files, or why a scan could not tell;
/// it returns false once nobody listens, which ends the thread.
pub fn start_scanner(
    files: &ManifestFiles,
    poll: Duration,
    report: impl Fn(Result<BTreeSet<PathBuf>, String>) -> bool + Send + 'static,
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
                if !report(found) {
                    return;
                }
            }
        })?;
    Ok(learnt)
}

/// Folds the watcher's stamp changes into the scanner's copy.
pub(super) fn learn(known: &mut HashMap<PathBuf, Stamp>, changes: StampChanges) {
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
