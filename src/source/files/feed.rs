//! Feeding the manifests into the change trackers: a first load as a complete list of every kind, a refresh as watch events.

use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Node;
use kube::Resource;
use kube::runtime::watcher::Event;

use super::cache::{Changes, ManifestFiles};
use crate::changes::{Eligibility, Events, Hooks, ObjKey, Sources, feed};
use crate::health;
use crate::source::manifests::{ManifestError, Manifests};

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
