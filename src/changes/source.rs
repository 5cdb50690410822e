//! One watched kind's tracker and its list state: re-lists replace state only when complete, and suspicious Service lists are held.

use std::collections::HashSet;
use std::sync::Arc;

use kube::runtime::watcher::Event;

use super::tracked::{ObjKey, ParseContext, Tracked, key_of};
use super::tracker::{Change, ChangeTracker};

/// One watched kind: its tracker and its list state.
#[derive(Debug)]
pub struct Source<K: Tracked> {
    ctx: Arc<ParseContext>,
    tracker: ChangeTracker<ObjKey, K::Value>,
    /// Keys seen since the last `Init`; Some while a (re-)list is running.
    relist: Option<HashSet<ObjKey>>,
    synced: bool,
    /// Holds suspicious Service lists (see `ListGuard`); None for other kinds.
    guard: Option<ListGuard>,
}

/// The Service every cluster has; a list without it is not the cluster's.
pub const KUBERNETES_SERVICE: (&str, &str) = ("default", "kubernetes");

/// Holds a complete Service list that looks wrong until a second list agrees.
///
/// A list is suspicious when it lacks `default/kubernetes` (the API server
/// creates and repairs it; no real cluster lists without it) or would delete
/// more than half of the Services kube-ipvs tracks. Such a list deletes
/// nothing (and, as a first list, does not let the first sync run) until the
/// next complete list, which the watch asks for `CONFIRM_AFTER` later: if
/// that one is suspicious too, two consistent reads agree and the deletions
/// go ahead; if not, the first was a glitch. While the API server cannot be
/// reached the hold lasts, so nothing is ever deleted on the word of one
/// list. Upstream has no such guard: an empty list deletes every service.
#[derive(Debug, Default)]
pub struct ListGuard {
    /// A suspicious list is waiting for a second one.
    holding: bool,
}

/// How long after a held list the next one is requested.
pub const CONFIRM_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

impl ListGuard {
    /// Whether a complete list of `seen` keys, deleting `gone` of the
    /// `tracked` ones, may take effect now; false holds it.
    fn admit(&mut self, seen: &HashSet<ObjKey>, gone: usize, tracked: usize) -> bool {
        let (ns, name) = KUBERNETES_SERVICE;
        let kubernetes = ObjKey {
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        let suspicious = !seen.contains(&kubernetes) || gone * 2 > tracked && gone > 0;
        if !suspicious {
            self.holding = false;
            return true;
        }
        if self.holding {
            tracing::warn!(
                services = seen.len(),
                deleting = gone,
                "a second Service list confirms the suspicious one; applying it"
            );
            self.holding = false;
            return true;
        }
        tracing::warn!(
            services = seen.len(),
            deleting = gone,
            of = tracked,
            kubernetes_listed = seen.contains(&kubernetes),
            "holding a suspicious Service list (no default/kubernetes, or deleting more than half); deleting nothing until the next list, asked for in {}s, agrees",
            CONFIRM_AFTER.as_secs()
        );
        self.holding = true;
        false
    }
}

/// What one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handled {
    /// The event carried an object (counts in `*_changes_total`).
    pub counted: bool,
    /// The pending changes changed.
    pub changed: bool,
    /// This event completed the first full list.
    pub first_sync: bool,
    /// This event completed a list that `ListGuard` holds.
    pub held: bool,
}

impl<K: Tracked> Source<K> {
    pub fn new(ctx: Arc<ParseContext>) -> Self {
        Source {
            ctx,
            tracker: ChangeTracker::default(),
            relist: None,
            synced: false,
            guard: None,
        }
    }

    /// Complete lists from now on pass a `ListGuard` (API Services).
    pub fn guard_lists(&mut self) {
        self.guard.get_or_insert_with(ListGuard::default);
    }

    /// Folds one watcher event in. A re-list (after an error or a 410 Gone)
    /// replaces state only at `InitDone`, deleting just the objects the full
    /// list no longer has; an interrupted re-list deletes nothing.
    pub fn handle(&mut self, event: Event<K>) -> Handled {
        let mut h = Handled::default();
        match event {
            Event::Init => self.relist = Some(HashSet::new()),
            Event::InitApply(obj) => {
                let k = key_of(&obj);
                if let Some(seen) = &mut self.relist {
                    seen.insert(k.clone());
                }
                h.counted = true;
                h.changed = self.tracker.apply(k, obj.value(&self.ctx));
            }
            Event::Apply(obj) => {
                h.counted = true;
                h.changed = self.tracker.apply(key_of(&obj), obj.value(&self.ctx));
            }
            Event::Delete(obj) => {
                h.counted = true;
                h.changed = self.tracker.delete(key_of(&obj));
            }
            Event::InitDone => {
                // Without a preceding Init this is not a complete list.
                if let Some(seen) = self.relist.take() {
                    let tracked = self.tracker.keys();
                    let gone: Vec<ObjKey> = tracked
                        .iter()
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    if let Some(g) = &mut self.guard
                        && !g.admit(&seen, gone.len(), tracked.len())
                    {
                        h.held = true;
                        return h;
                    }
                    for k in gone {
                        h.changed |= self.tracker.delete(k);
                    }
                    h.first_sync = !self.synced;
                    self.synced = true;
                }
            }
        }
        h
    }

    pub fn synced(&self) -> bool {
        self.synced
    }

    pub fn pending(&self) -> usize {
        self.tracker.pending()
    }

    pub fn get(&self, key: &ObjKey) -> Option<&K::Value> {
        self.tracker.get(key)
    }

    pub fn drain(&mut self) -> Vec<(ObjKey, Change<K::Value>)> {
        self.tracker.drain()
    }
}
