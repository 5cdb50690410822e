//! The `--manifests` source: one full load, then an inotify watch (plus a slow poll) that re-reads only changed files and feeds only their objects.
//!
//! One endpoint change must cost the same at 10 services as at 10,000, so a
//! change never re-reads or re-feeds the whole directory: each file keeps its
//! stamp and the keys of its objects, and a change to a file yields the
//! objects it added, changed or removed. When several files hold an object
//! with the same key, the last file by name wins, as in a full load.

pub mod cache;
pub mod feed;
pub mod scanner;
pub mod stamp;
pub mod watcher;

pub use cache::{Changes, LOAD_CHUNK, ManifestFiles, load};
pub use feed::{feed_changes, feed_manifests, load_and_feed};
pub use stamp::{KnownStamps, Scanned, Stamp, StampChanges, is_manifest, scan, stale};
pub use watcher::{POLL_WITH_INOTIFY, POLL_WITHOUT_INOTIFY, Wanted, watch};

#[cfg(test)]
mod tests;
