//! Change trackers (kube-proxy's ServiceChangeTracker / EndpointsChangeTracker): per-key (previous, current) pairs, no-ops dropped, drained as a batch.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

/// One coalesced change: the state the sync loop last saw, and the newest one.
/// `None` means absent (created from nothing, or deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<V> {
    pub previous: Option<V>,
    pub current: Option<V>,
}

/// Tracks objects of one kind. It keeps the state last handed to the sync
/// loop (the baseline), so callers feed plain "now it is X" / "it is gone"
/// events, as a watch delivers them, and still get (previous, current) pairs.
///
/// Upstream keeps `items[name] = {previous, current}`, keeps `previous` from
/// the first event, replaces `current`, and deletes the item when they are
/// equal again; this does the same against the baseline.
#[derive(Debug, Clone)]
pub struct ChangeTracker<K, V> {
    baseline: HashMap<K, V>,
    pending: HashMap<K, Option<V>>,
    total: u64,
}

impl<K, V> Default for ChangeTracker<K, V> {
    fn default() -> Self {
        ChangeTracker {
            baseline: HashMap::new(),
            pending: HashMap::new(),
            total: 0,
        }
    }
}

impl<K: Eq + Hash + Clone, V: PartialEq + Clone> ChangeTracker<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `key` is now `current` (None = deleted). Returns true when
    /// the pending set changed (the caller then queues a sync). Every call
    /// counts in `total`, as upstream's `*_changes_total` counts every event.
    pub fn update(&mut self, key: K, current: Option<V>) -> bool {
        self.total += 1;
        let same_as_baseline = match (&current, self.baseline.get(&key)) {
            (None, None) => true,
            (Some(c), Some(b)) => c == b,
            _ => false,
        };
        match self.pending.entry(key) {
            Entry::Occupied(mut e) => {
                if same_as_baseline {
                    // Back to where the sync loop left it: the change vanishes.
                    e.remove();
                    true
                } else if *e.get() == current {
                    false
                } else {
                    e.insert(current);
                    true
                }
            }
            Entry::Vacant(e) => {
                if same_as_baseline {
                    false
                } else {
                    e.insert(current);
                    true
                }
            }
        }
    }

    pub fn apply(&mut self, key: K, value: V) -> bool {
        self.update(key, Some(value))
    }

    pub fn delete(&mut self, key: K) -> bool {
        self.update(key, None)
    }

    /// Takes every pending change; the baseline moves to the current states.
    pub fn drain(&mut self) -> Vec<(K, Change<V>)> {
        let mut out = Vec::with_capacity(self.pending.len());
        for (k, current) in std::mem::take(&mut self.pending) {
            let previous = match &current {
                Some(c) => self.baseline.insert(k.clone(), c.clone()),
                None => self.baseline.remove(&k),
            };
            out.push((k, Change { previous, current }));
        }
        out
    }

    /// The newest known state of `key` (pending if any, else the baseline).
    pub fn get(&self, key: &K) -> Option<&V> {
        match self.pending.get(key) {
            Some(p) => p.as_ref(),
            None => self.baseline.get(key),
        }
    }

    /// Keys whose newest state is present.
    pub fn keys(&self) -> Vec<K> {
        let mut keys: Vec<K> = self
            .baseline
            .keys()
            .filter(|k| !matches!(self.pending.get(*k), Some(None)))
            .cloned()
            .collect();
        keys.extend(
            self.pending
                .iter()
                .filter(|(k, v)| v.is_some() && !self.baseline.contains_key(*k))
                .map(|(k, _)| k.clone()),
        );
        keys
    }

    /// Changes waiting for the next sync (`*_changes_pending`).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Events seen since start (`*_changes_total`).
    pub fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type T = ChangeTracker<&'static str, u32>;

    fn sorted(mut v: Vec<(&'static str, Change<u32>)>) -> Vec<(&'static str, Change<u32>)> {
        v.sort_by_key(|x| x.0);
        v
    }

    fn ch(previous: Option<u32>, current: Option<u32>) -> Change<u32> {
        Change { previous, current }
    }

    #[test]
    fn coalesces_per_key() {
        let mut t = T::new();
        assert!(t.apply("a", 1));
        assert!(t.apply("a", 2));
        assert!(t.apply("a", 3));
        assert!(t.apply("b", 7));
        assert_eq!(t.pending(), 2);
        assert_eq!(t.total(), 4);
        assert_eq!(
            sorted(t.drain()),
            vec![("a", ch(None, Some(3))), ("b", ch(None, Some(7)))]
        );
        assert_eq!(t.pending(), 0);
        assert!(t.drain().is_empty());
    }

    #[test]
    fn update_back_to_original_vanishes() {
        let mut t = T::new();
        t.apply("a", 1);
        t.drain();
        assert!(t.apply("a", 2));
        assert!(t.apply("a", 1));
        assert_eq!(t.pending(), 0);
        assert!(t.drain().is_empty());
        // Create then delete before a sync: nothing to do.
        assert!(t.apply("b", 5));
        assert!(t.delete("b"));
        assert_eq!(t.pending(), 0);
        // Delete then re-create identical: nothing to do.
        assert!(t.delete("a"));
        assert!(t.apply("a", 1));
        assert!(t.drain().is_empty());
        assert_eq!(t.total(), 7);
    }

    #[test]
    fn no_op_updates_are_dropped() {
        let mut t = T::new();
        t.apply("a", 1);
        t.drain();
        assert!(!t.apply("a", 1));
        assert!(!t.delete("zzz"));
        assert_eq!(t.pending(), 0);
        assert!(t.apply("a", 2));
        assert!(
            !t.apply("a", 2),
            "repeating the pending state changes nothing"
        );
    }

    #[test]
    fn previous_is_the_last_drained_state() {
        let mut t = T::new();
        t.apply("a", 1);
        t.drain();
        t.apply("a", 2);
        t.apply("a", 3);
        assert_eq!(t.drain(), vec![("a", ch(Some(1), Some(3)))]);
        t.delete("a");
        assert_eq!(t.drain(), vec![("a", ch(Some(3), None))]);
        assert_eq!(t.get(&"a"), None);
    }

    #[test]
    fn get_and_keys_see_pending_state() {
        let mut t = T::new();
        t.apply("a", 1);
        t.apply("b", 2);
        t.drain();
        t.delete("a");
        t.apply("c", 3);
        t.apply("b", 4);
        assert_eq!(t.get(&"a"), None);
        assert_eq!(t.get(&"b"), Some(&4));
        let mut k = t.keys();
        k.sort();
        assert_eq!(k, vec!["b", "c"]);
    }
}
