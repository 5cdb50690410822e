//! API watches (Services, EndpointSlices, this Node) feeding change trackers; nothing is programmed before every first list completes, and errors never flush.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::changes::{Change, ChangeTracker};
use crate::health::{ProxyHealth, node_eligible};
use crate::metrics::{Metrics, last_change_trigger_time};
use crate::model::config::ProxyConfig;
use crate::model::input::{ParsedService, ServiceInput, SliceInput, parse_service, parse_slice};
use crate::model::node::NodeInfo;
use crate::reconcile::Proxier;
use crate::runner::Trigger;

/// Objects with this label belong to another proxy (upstream informer filter).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Set by the EndpointSlice controller on slices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Upstream's label selector, sent with the Service and EndpointSlice lists
/// and watches alike (kube-proxy builds one informer factory with it).
pub const LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";

/// Field selector watching only this node.
pub fn node_selector(node_name: &str) -> String {
    format!("metadata.name={node_name}")
}

/// Namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

fn key_of<K: Resource>(obj: &K) -> ObjKey {
    ObjKey {
        namespace: obj.meta().namespace.clone().unwrap_or_default(),
        name: obj.meta().name.clone().unwrap_or_default(),
    }
}

/// Drops bookkeeping fields that change without changing what the proxy
/// programs, so an update back to an earlier state is recognised as a no-op
/// (and managedFields do not sit in memory).
fn normalize<K: Resource>(mut obj: K) -> K {
    let m = obj.meta_mut();
    m.managed_fields = None;
    m.resource_version = None;
    m.generation = None;
    obj
}

/// What the objects are read against: fixed for the life of the process.
#[derive(Debug, Clone, Default)]
pub struct ParseContext {
    pub cfg: ProxyConfig,
    /// Slices mark endpoints on this node as local when they are read.
    pub node_name: String,
}

/// A watched kind and what its tracker keeps of each object. Services and
/// slices are kept parsed, as upstream's trackers keep processed
/// ServicePorts and endpoints: 10,000 Services' objects take ~75 MB, their
/// parsed forms a fraction, shared with the proxier.
pub trait Tracked: Resource + Clone {
    type Value: PartialEq + Clone + std::fmt::Debug;
    fn value(self, ctx: &ParseContext) -> Self::Value;
}

/// A Service as tracked.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedService {
    /// For the Events that report a rejected Service.
    pub uid: Option<String>,
    /// `None`: not ours to program (headless, ExternalName, another proxy's).
    pub input: Option<Arc<ServiceInput>>,
}

impl Tracked for Service {
    type Value = TrackedService;
    fn value(self, ctx: &ParseContext) -> TrackedService {
        let input = match parse_service(&self, &ctx.cfg) {
            ParsedService::Proxied(i) => Some(Arc::new(i)),
            ParsedService::Ignored(_) => None,
        };
        TrackedService {
            uid: self.metadata.uid,
            input,
        }
    }
}

/// An EndpointSlice as tracked.
#[derive(Debug, Clone)]
pub struct TrackedSlice {
    /// `None`: names no Service, or is not for this proxy.
    pub input: Option<Arc<SliceInput>>,
    /// `endpoints.kubernetes.io/last-change-trigger-time`, for the
    /// network programming latency.
    pub trigger: Option<SystemTime>,
}

/// A new trigger time alone is no change (upstream's endpointSliceCache
/// compares the endpoints, not the annotation).
impl PartialEq for TrackedSlice {
    fn eq(&self, other: &Self) -> bool {
        self.input == other.input
    }
}

impl Tracked for EndpointSlice {
    type Value = TrackedSlice;
    fn value(self, ctx: &ParseContext) -> TrackedSlice {
        TrackedSlice {
            input: parse_slice(&self, &ctx.node_name).map(Arc::new),
            trigger: last_change_trigger_time(&self),
        }
    }
}

/// The Node is one object: kept whole (normalised).
impl Tracked for Node {
    type Value = Arc<Node>;
    fn value(self, _: &ParseContext) -> Arc<Node> {
        Arc::new(normalize(self))
    }
}

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

/// Everything the watches know, shared with the sync loop.
#[derive(Debug)]
pub struct Sources {
    pub services: Source<Service>,
    pub slices: Source<EndpointSlice>,
    pub node: Source<Node>,
}

/// Changes drained for one sync.
#[derive(Debug, Default)]
pub struct Batch {
    pub services: Vec<(ObjKey, Change<TrackedService>)>,
    pub slices: Vec<(ObjKey, Change<TrackedSlice>)>,
    /// The newest Node object, if it changed (a deleted Node is not reported:
    /// the last known addresses stay programmed).
    pub node: Option<Arc<Node>>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty() && self.node.is_none()
    }

    /// Trigger times of the changed slices, for the network programming
    /// latency observed once the sync that applies them succeeds.
    pub fn trigger_times(&self) -> Vec<SystemTime> {
        self.slices
            .iter()
            .filter_map(|(_, c)| c.current.as_ref().and_then(|s| s.trigger))
            .collect()
    }

    /// Feeds the batch into the proxier (slices after services, node first:
    /// the proxier only marks Services dirty, order within a batch is free).
    pub fn apply_to(&self, proxier: &mut Proxier, node_info: impl Fn(&Node) -> NodeInfo) {
        if let Some(n) = &self.node {
            proxier.set_node(node_info(n));
        }
        for (k, c) in &self.services {
            let input = c.current.as_ref().and_then(|s| s.input.clone());
            proxier.set_service(&k.namespace, &k.name, input);
        }
        for (k, c) in &self.slices {
            let input = c.current.as_ref().and_then(|s| s.input.clone());
            proxier.set_slice(&k.namespace, &k.name, input);
        }
    }
}

impl Sources {
    /// Empty sources reading objects against `cfg` on node `node_name`
    /// (the proxier's configuration and node name).
    pub fn new(cfg: ProxyConfig, node_name: &str) -> Self {
        let ctx = Arc::new(ParseContext {
            cfg,
            node_name: node_name.to_string(),
        });
        Sources {
            services: Source::new(ctx.clone()),
            slices: Source::new(ctx.clone()),
            node: Source::new(ctx),
        }
    }

    /// Every source has completed its first full list.
    pub fn ready(&self) -> bool {
        self.services.synced() && self.slices.synced() && self.node.synced()
    }

    /// Pending changes; None until `ready` (programming from a partial view
    /// would delete what the missing objects describe).
    pub fn take_batch(&mut self) -> Option<Batch> {
        if !self.ready() {
            return None;
        }
        let node = self
            .node
            .drain()
            .into_iter()
            .filter_map(|(_, c)| c.current)
            .next_back();
        Some(Batch {
            services: self.services.drain(),
            slices: self.slices.drain(),
            node,
        })
    }

    /// Whether this node currently exists (for /healthz node eligibility).
    fn node_eligible(&self, node_name: &str) -> bool {
        self.node
            .get(&ObjKey {
                namespace: String::new(),
                name: node_name.to_string(),
            })
            .is_some_and(|n| node_eligible(n))
    }
}

/// Where events are reported: the sync trigger, metrics and health.
#[derive(Debug, Clone)]
pub struct Hooks {
    pub trigger: Trigger,
    pub metrics: Arc<Metrics>,
    pub health: Arc<ProxyHealth>,
}

impl Hooks {
    /// Fresh hooks with a 30 s sync period, for tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Hooks {
            trigger: Trigger::new(),
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(ProxyHealth::new(std::time::Duration::from_secs(30))),
        }
    }

    /// Queues a sync; the first queued change since the last sync is
    /// recorded for the metrics and /healthz.
    pub fn queue(&self) {
        if self.trigger.run() {
            self.metrics.queued(SystemTime::now());
            self.health.queued_update();
        }
    }

    /// Records a successful sync that took `took` and applied slices with
    /// `trigger_times` (`Batch::trigger_times`); `process_start` filters
    /// trigger times replayed after a restart. A change queued while the
    /// sync ran stays pending for /healthz.
    pub fn sync_succeeded(
        &self,
        took: std::time::Duration,
        trigger_times: &[SystemTime],
        process_start: SystemTime,
    ) {
        let now = SystemTime::now();
        self.metrics.sync_done(took, now);
        for t in trigger_times {
            self.metrics
                .observe_network_programming(*t, now, process_start);
        }
        self.health.updated();
        if self.trigger.is_pending() {
            self.health.queued_update();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Services,
    Slices,
    Node,
}

fn lock(s: &Mutex<Sources>) -> MutexGuard<'_, Sources> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Folds one event into `sources` and reports it to the hooks; true when
/// it completed a list that is held.
fn on_event<K>(
    sources: &Mutex<Sources>,
    hooks: &Hooks,
    node_name: &str,
    kind: Kind,
    pick: impl Fn(&mut Sources) -> &mut Source<K>,
    event: Event<K>,
) -> bool
where
    K: Tracked,
{
    let mut s = lock(sources);
    let h = pick(&mut s).handle(event);
    if h.counted && kind == Kind::Services {
        hooks.metrics.service_changes_total.inc();
    }
    if h.counted && kind == Kind::Slices {
        hooks.metrics.endpoint_changes_total.inc();
    }
    hooks
        .metrics
        .set_pending(s.services.pending(), s.slices.pending());
    if kind == Kind::Node {
        hooks.health.set_node_eligible(s.node_eligible(node_name));
    }
    if h.first_sync {
        tracing::info!(?kind, "initial list complete");
    }
    if h.held {
        hooks.metrics.held_lists_total.inc();
    }
    // Before every source has listed once, only the last first list triggers.
    if s.ready() && (h.changed || h.first_sync) {
        drop(s);
        hooks.queue();
    }
    h.held
}

/// Runs one watch forever. kube's watcher re-lists after errors (API server
/// down, 410 Gone) and `default_backoff` spaces the retries; errors are only
/// logged here, and state changes only at a completed list.
async fn run_watch<K>(
    api: Api<K>,
    config: watcher::Config,
    sources: Arc<Mutex<Sources>>,
    hooks: Hooks,
    node_name: String,
    kind: Kind,
    pick: fn(&mut Sources) -> &mut Source<K>,
) where
    K: Tracked + Resource<DynamicType = ()> + DeserializeOwned + std::fmt::Debug,
    K: Send + Sync + 'static,
{
    let start = || {
        watcher::watcher(api.clone(), config.clone())
            .default_backoff()
            .boxed()
    };
    let mut stream = start();
    // A held list (see `ListGuard`) asks for a fresh one after a while.
    let mut relist_at: Option<tokio::time::Instant> = None;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = tokio::time::sleep_until(relist_at.unwrap_or_else(tokio::time::Instant::now)), if relist_at.is_some() => {
                relist_at = None;
                tracing::info!(?kind, "asking for a second list to confirm the held one");
                stream = start();
                continue;
            }
        };
        let Some(item) = item else { return };
        match item {
            Ok(ev) => {
                if on_event(&sources, &hooks, &node_name, kind, pick, ev) {
                    relist_at = Some(tokio::time::Instant::now() + CONFIRM_AFTER);
                }
            }
            Err(e) => tracing::warn!(?kind, error = %e, "watch failed; re-listing with backoff"),
        }
    }
}

/// Watches Services, EndpointSlices and this Node until the future is dropped.
/// Lists are consistent reads (kube's default): a re-list after 410 Gone with
/// `resourceVersion=0` could return a lagging cache and resurrect deleted
/// endpoints (client-go also relists with `""` after expiry). API servers
/// with ConsistentListFromCache serve these from their cache anyway.
pub async fn watch_all(
    client: Client,
    node_name: String,
    sources: Arc<Mutex<Sources>>,
    hooks: Hooks,
) {
    // The API server's Service lists pass the guard; manifests are the
    // operator's own files (an emptied directory is their decision).
    lock(&sources).services.guard_lists();
    let svc_cfg = watcher::Config::default().labels(LABEL_SELECTOR);
    let slice_cfg = watcher::Config::default().labels(LABEL_SELECTOR);
    let node_cfg = watcher::Config::default().fields(&node_selector(&node_name));
    tokio::join!(
        run_watch(
            Api::<Service>::all(client.clone()),
            svc_cfg,
            sources.clone(),
            hooks.clone(),
            node_name.clone(),
            Kind::Services,
            |s| &mut s.services,
        ),
        run_watch(
            Api::<EndpointSlice>::all(client.clone()),
            slice_cfg,
            sources.clone(),
            hooks.clone(),
            node_name.clone(),
            Kind::Slices,
            |s| &mut s.slices,
        ),
        run_watch(
            Api::<Node>::all(client),
            node_cfg,
            sources,
            hooks,
            node_name.clone(),
            Kind::Node,
            |s| &mut s.node,
        ),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ProxyConfig;
    use crate::model::testutil;
    use crate::model::testutil::cluster_ip_service as svc;
    use std::time::Duration;

    fn slice(name: &str, svc: &str, ip: &str) -> EndpointSlice {
        testutil::slice(
            "default",
            name,
            svc,
            "IPv4",
            &[("http", 8080, "TCP")],
            &[(ip, true, true, false, "node-a")],
        )
    }

    fn list<K>(objs: Vec<K>) -> Vec<Event<K>> {
        let mut v = vec![Event::Init];
        v.extend(objs.into_iter().map(Event::InitApply));
        v.push(Event::InitDone);
        v
    }

    fn feed_services(s: &Mutex<Sources>, h: &Hooks, evs: Vec<Event<Service>>) {
        for e in evs {
            on_event(s, h, "node-a", Kind::Services, |s| &mut s.services, e);
        }
    }
    fn feed_slices(s: &Mutex<Sources>, h: &Hooks, evs: Vec<Event<EndpointSlice>>) {
        for e in evs {
            on_event(s, h, "node-a", Kind::Slices, |s| &mut s.slices, e);
        }
    }
    fn feed_node(s: &Mutex<Sources>, h: &Hooks, evs: Vec<Event<Node>>) {
        for e in evs {
            on_event(s, h, "node-a", Kind::Node, |s| &mut s.node, e);
        }
    }

    #[test]
    fn selectors_are_upstreams() {
        assert_eq!(
            LABEL_SELECTOR,
            format!("!{SERVICE_PROXY_NAME_LABEL},!{HEADLESS_LABEL}")
        );
        assert_eq!(node_selector("n1"), "metadata.name=n1");
    }

    #[test]
    fn nothing_until_every_first_list_completes() {
        let s = Mutex::new(Sources::new(ProxyConfig::default(), "node-a"));
        let h = Hooks::for_tests();
        feed_services(&s, &h, list(vec![svc("a", "10.0.0.1")]));
        feed_slices(&s, &h, list(vec![slice("a-1", "a", "10.1.0.1")]));
        assert!(!h.trigger.is_pending());
        assert!(lock(&s).take_batch().is_none());
        // The node list starts but is not complete yet.
        feed_node(
            &s,
            &h,
            vec![Event::Init, Event::InitApply(testutil::node_obj())],
        );
        assert!(lock(&s).take_batch().is_none());
        feed_node(&s, &h, vec![Event::InitDone]);
        assert!(h.trigger.is_pending());
        let b = lock(&s).take_batch().unwrap();
        assert_eq!(b.services.len(), 1);
        assert_eq!(b.slices.len(), 1);
        assert!(b.node.is_some());

        let mut p = Proxier::new(ProxyConfig::default(), testutil::node());
        b.apply_to(&mut p, NodeInfo::from_node);
        let plan = p.sync(0);
        assert!(
            plan.ops.iter().any(|o| o.to_string().contains("10.0.0.1")),
            "{:?}",
            plan.ops
        );
    }

    #[test]
    fn suspicious_service_lists_are_held_until_a_second_list_agrees() {
        let s = Mutex::new(Sources::new(ProxyConfig::default(), "node-a"));
        lock(&s).services.guard_lists();
        let h = Hooks::for_tests();
        let k = svc("kubernetes", "10.96.0.1");
        let all = || {
            vec![
                k.clone(),
                svc("a", "10.0.0.1"),
                svc("b", "10.0.0.2"),
                svc("c", "10.0.0.3"),
            ]
        };
        // A first list without default/kubernetes: held, so no first sync.
        feed_services(&s, &h, list(vec![svc("a", "10.0.0.1")]));
        feed_slices(&s, &h, list(vec![]));
        feed_node(&s, &h, list(vec![testutil::node_obj()]));
        assert!(
            lock(&s).take_batch().is_none(),
            "a held first list programs nothing"
        );
        assert_eq!(h.metrics.held_lists_total.get(), 1);
        // The next list is the cluster's: it takes effect.
        feed_services(&s, &h, list(all()));
        assert_eq!(lock(&s).take_batch().unwrap().services.len(), 4);

        // An empty list after an outage: held, nothing deleted.
        feed_services(&s, &h, list(vec![]));
        assert!(lock(&s).take_batch().unwrap().is_empty());
        // The next list disagrees (a glitch): still nothing deleted.
        feed_services(&s, &h, list(all()));
        assert!(lock(&s).take_batch().unwrap().is_empty());
        // Deleting more than half (3 of 4) with kubernetes listed: held ...
        feed_services(&s, &h, list(vec![k.clone()]));
        assert!(lock(&s).take_batch().unwrap().is_empty());
        assert_eq!(h.metrics.held_lists_total.get(), 3);
        // ... until a second list agrees; then the deletions go ahead.
        feed_services(&s, &h, list(vec![k.clone()]));
        assert_eq!(lock(&s).take_batch().unwrap().services.len(), 3);
        // Half or fewer is an ordinary list (1 of 1 would be more than half).
        feed_services(&s, &h, list(vec![k.clone(), svc("d", "10.0.0.4")]));
        lock(&s).take_batch().unwrap();
        feed_services(&s, &h, list(vec![k.clone()]));
        assert_eq!(lock(&s).take_batch().unwrap().services.len(), 1);
        assert_eq!(h.metrics.held_lists_total.get(), 3);
    }

    #[test]
    fn manifests_lists_are_not_guarded() {
        let s = Mutex::new(Sources::new(ProxyConfig::default(), "node-a"));
        let h = Hooks::for_tests();
        feed_services(&s, &h, list(vec![svc("a", "10.0.0.1")]));
        feed_slices(&s, &h, list(vec![]));
        feed_node(&s, &h, list(vec![testutil::node_obj()]));
        assert!(lock(&s).take_batch().is_some());
        feed_services(&s, &h, list(vec![]));
        assert_eq!(lock(&s).take_batch().unwrap().services.len(), 1);
    }

    #[test]
    fn relist_deletes_only_after_complete_list_and_errors_never_flush() {
        let s = Mutex::new(Sources::new(ProxyConfig::default(), "node-a"));
        let h = Hooks::for_tests();
        feed_services(
            &s,
            &h,
            list(vec![svc("a", "10.0.0.1"), svc("b", "10.0.0.2")]),
        );
        feed_slices(&s, &h, list(vec![]));
        feed_node(&s, &h, list(vec![testutil::node_obj()]));
        lock(&s).take_batch().unwrap();

        // Connection lost: the watcher restarts a list that never finishes.
        feed_services(
            &s,
            &h,
            vec![Event::Init, Event::InitApply(svc("a", "10.0.0.1"))],
        );
        let b = lock(&s).take_batch().unwrap();
        assert!(
            b.is_empty(),
            "an interrupted re-list changes nothing: {b:?}"
        );
        // A second, complete re-list: b is gone for real, a is unchanged.
        feed_services(&s, &h, list(vec![svc("a", "10.0.0.1")]));
        let b = lock(&s).take_batch().unwrap();
        assert_eq!(b.services.len(), 1);
        assert_eq!(b.services[0].0.name, "b");
        assert_eq!(b.services[0].1.current, None);
        // A stray InitDone without Init is not a list.
        feed_services(&s, &h, vec![Event::InitDone]);
        assert!(lock(&s).take_batch().unwrap().is_empty());
    }

    #[test]
    fn updates_coalesce_and_count() {
        let s = Mutex::new(Sources::new(ProxyConfig::default(), "node-a"));
        let h = Hooks::for_tests();
        feed_services(&s, &h, list(vec![svc("a", "10.0.0.1")]));
        feed_slices(&s, &h, list(vec![]));
        feed_node(&s, &h, list(vec![testutil::node_obj()]));
        lock(&s).take_batch().unwrap();
        // Update away and back: nothing pending; resourceVersion is not state.
        let mut changed = svc("a", "10.0.0.9");
        changed.metadata.resource_version = Some("7".into());
        let mut back = svc("a", "10.0.0.1");
        back.metadata.resource_version = Some("8".into());
        feed_services(&s, &h, vec![Event::Apply(changed), Event::Apply(back)]);
        assert!(lock(&s).take_batch().unwrap().is_empty());
        for i in 0..100 {
            feed_slices(
                &s,
                &h,
                vec![Event::Apply(slice("a-1", "a", &format!("10.1.0.{i}")))],
            );
        }
        let text = h.metrics.encode();
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_pending 1"),
            "{text}"
        );
        assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 100"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_service_changes_total 3"));
        let b = lock(&s).take_batch().unwrap();
        assert_eq!(b.slices.len(), 1);
    }

    #[test]
    fn sync_succeeded_keeps_changes_queued_meanwhile() {
        let h = Hooks::for_tests();
        h.queue();
        assert!(h.trigger.take_for_test());
        h.queue(); // queued while the sync runs
        h.sync_succeeded(
            Duration::from_millis(5),
            &[SystemTime::now()],
            SystemTime::UNIX_EPOCH,
        );
        let text = h.metrics.encode();
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 1"));
        assert!(text.contains("kubeproxy_network_programming_duration_seconds_count 1"));
        assert!(h.health.status().last_updated.is_some());
        assert!(h.trigger.is_pending());
    }

    #[test]
    fn node_eligibility_follows_the_node() {
        let s = Mutex::new(Sources::new(ProxyConfig::default(), "node-a"));
        let h = Hooks::for_tests();
        feed_node(&s, &h, list(vec![testutil::node_obj()]));
        let mut n = testutil::node_obj();
        n.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert!(h.health.status().node_eligible);
        feed_node(&s, &h, vec![Event::Apply(n)]);
        assert!(!h.health.status().node_eligible);
    }

    #[test]
    fn trigger_times_from_changed_slices() {
        let mut sl = slice("a-1", "a", "10.1.0.1");
        sl.metadata.annotations = Some(
            [(
                crate::metrics::LAST_CHANGE_TRIGGER_TIME.to_string(),
                "2024-05-01T10:00:00Z".to_string(),
            )]
            .into(),
        );
        let b = Batch {
            slices: vec![(
                key_of(&sl),
                Change {
                    previous: None,
                    current: Some(sl.value(&ParseContext::default())),
                },
            )],
            ..Default::default()
        };
        assert_eq!(b.trigger_times().len(), 1);
    }

    #[test]
    fn a_new_trigger_time_alone_is_no_change() {
        let s = Mutex::new(Sources::new(ProxyConfig::default(), "node-a"));
        let h = Hooks::for_tests();
        feed_services(&s, &h, list(vec![]));
        feed_slices(&s, &h, list(vec![slice("a-1", "a", "10.1.0.1")]));
        feed_node(&s, &h, list(vec![testutil::node_obj()]));
        lock(&s).take_batch().unwrap();
        let mut sl = slice("a-1", "a", "10.1.0.1");
        sl.metadata.annotations = Some(
            [(
                crate::metrics::LAST_CHANGE_TRIGGER_TIME.to_string(),
                "2024-05-01T10:00:00Z".to_string(),
            )]
            .into(),
        );
        feed_slices(&s, &h, vec![Event::Apply(sl)]);
        assert!(lock(&s).take_batch().unwrap().is_empty());
    }

    #[test]
    fn slices_are_kept_parsed_against_the_node() {
        let s = Mutex::new(Sources::new(ProxyConfig::default(), "node-a"));
        let h = Hooks::for_tests();
        feed_slices(&s, &h, list(vec![slice("a-1", "a", "10.1.0.1")]));
        let key = ObjKey {
            namespace: "default".into(),
            name: "a-1".into(),
        };
        let tracked = lock(&s).slices.get(&key).cloned().unwrap();
        let input = tracked.input.expect("a slice of Service a");
        assert_eq!(&*input.service, "default/a");
        assert!(input.endpoints[0].local, "{input:?}");
    }
}
