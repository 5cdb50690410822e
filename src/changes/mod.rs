//! Change tracking: watched objects become pending changes, batched for the proxier (kube-proxy's change trackers).
//!
//! Every source (the API watch, the manifests) feeds events through
//! [`feed`]; the sync loop takes a [`Batch`] and applies it to the proxier.
//! A change travels source → here → proxier → apply and never comes back up.

pub mod source;
pub mod tracked;
pub mod tracker;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use prometheus_client::metrics::counter::Counter;

use crate::health::{ProxyHealth, node_eligible};
use crate::metrics::Metrics;
use crate::model::config::ProxyConfig;
use crate::model::contribution::{FAMILY_NAMES, family_slot};
use crate::model::node::NodeInfo;
use crate::reconcile::Proxier;
use crate::runner::Trigger;

pub use source::{CONFIRM_AFTER, Handled, KUBERNETES_SERVICE, ListGuard, Source};
pub use tracked::{ObjKey, ParseContext, Tracked, TrackedService, TrackedSlice, key_of, normalize};
pub use tracker::{Change, ChangeTracker};

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

    /// Trigger times of the changed slices of this proxy, with their
    /// family ("IPv4", "IPv6"), for the network programming latency
    /// observed once the sync that applies them succeeds.
    pub fn trigger_times(&self) -> Vec<(SystemTime, &'static str)> {
        self.slices
            .iter()
            .filter_map(|(_, c)| {
                let s = c.current.as_ref()?;
                let family = s.input.as_ref()?.family;
                Some((s.trigger?, FAMILY_NAMES[family_slot(family)]))
            })
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
    pub fn node_eligible(&self, node_name: &str) -> bool {
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
        let metrics = Arc::new(Metrics::new());
        metrics.set_families(vec!["IPv4"]);
        Hooks {
            trigger: Trigger::new(),
            metrics,
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
        trigger_times: &[(SystemTime, &'static str)],
        process_start: SystemTime,
    ) {
        let now = SystemTime::now();
        self.metrics.sync_done(took, now);
        for (t, family) in trigger_times {
            self.metrics
                .observe_network_programming(*t, family, now, process_start);
        }
        self.health.updated();
        if self.trigger.is_pending() {
            self.health.queued_update();
        }
    }
}

/// Events of every kind, fed together: an API watch sends one kind at a
/// time, a manifests load all three.
#[derive(Debug, Default)]
pub struct Events {
    pub services: Vec<Event<Service>>,
    pub slices: Vec<Event<EndpointSlice>>,
    pub nodes: Vec<Event<Node>>,
}

impl Events {
    pub fn services(services: Vec<Event<Service>>) -> Self {
        Events {
            services,
            ..Default::default()
        }
    }

    pub fn slices(slices: Vec<Event<EndpointSlice>>) -> Self {
        Events {
            slices,
            ..Default::default()
        }
    }

    pub fn nodes(nodes: Vec<Event<Node>>) -> Self {
        Events {
            nodes,
            ..Default::default()
        }
    }
}

/// Where /healthz's node eligibility comes from after a feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility<'a> {
    /// It stays as it was.
    Keep,
    /// As given (the manifests' newest Node of this node's name).
    Set(bool),
    /// From the tracked Node of this name (the API watch of this Node).
    Tracked(&'a str),
}

/// What one feed did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fed {
    /// The pending changes changed.
    pub changed: bool,
    /// A first full list completed.
    pub first_sync: bool,
    /// A complete list is held (see `ListGuard`); its source asks for another.
    pub held: bool,
}

/// The sources' lock; a panic while holding it leaves them usable.
pub fn lock(s: &Mutex<Sources>) -> MutexGuard<'_, Sources> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Folds `events` into `sources` and reports them to the hooks: each event
/// carrying an object counts in `*_changes_total` (Services and slices), the
/// pending gauges follow, held lists are counted, and a sync is queued when
/// something changed once every source is ready (before that, only the
/// last first list triggers).
pub fn feed(
    sources: &Mutex<Sources>,
    hooks: &Hooks,
    events: Events,
    eligibility: Eligibility,
) -> Fed {
    let mut s = lock(sources);
    let m = &hooks.metrics;
    let mut fed = Fed::default();
    fold(
        &mut s.services,
        events.services,
        Some(&m.service_changes_total),
        m,
        &mut fed,
    );
    fold(
        &mut s.slices,
        events.slices,
        Some(&m.endpoint_changes_total),
        m,
        &mut fed,
    );
    fold(&mut s.node, events.nodes, None, m, &mut fed);
    m.set_pending(s.services.pending(), s.slices.pending());
    match eligibility {
        Eligibility::Keep => {}
        Eligibility::Set(e) => hooks.health.set_node_eligible(e),
        // Until the Node list is complete, its absence means nothing: stay
        // eligible. kube-proxy reads its Node before it serves /healthz at
        // all, so it never answers 503 for a Node it has not looked up.
        Eligibility::Tracked(name) if s.node.synced() => {
            hooks.health.set_node_eligible(s.node_eligible(name))
        }
        Eligibility::Tracked(_) => {}
    }
    if s.ready() && (fed.changed || fed.first_sync) {
        drop(s);
        hooks.queue();
    }
    fed
}

fn fold<K: Tracked>(
    source: &mut Source<K>,
    events: Vec<Event<K>>,
    changes: Option<&Counter>,
    metrics: &Metrics,
    fed: &mut Fed,
) {
    for ev in events {
        let h = source.handle(ev);
        if h.counted
            && let Some(c) = changes
        {
            c.inc();
        }
        if h.held {
            metrics.held_lists_total.inc();
        }
        fed.changed |= h.changed;
        fed.first_sync |= h.first_sync;
        fed.held |= h.held;
    }
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

    // One event at a time, as the API watch feeds them.
    fn feed_one<K>(
        s: &Mutex<Sources>,
        h: &Hooks,
        evs: Vec<Event<K>>,
        wrap: fn(Vec<Event<K>>) -> Events,
        eligibility: Eligibility,
    ) {
        for e in evs {
            feed(s, h, wrap(vec![e]), eligibility);
        }
    }
    fn feed_services(s: &Mutex<Sources>, h: &Hooks, evs: Vec<Event<Service>>) {
        feed_one(s, h, evs, Events::services, Eligibility::Keep);
    }
    fn feed_slices(s: &Mutex<Sources>, h: &Hooks, evs: Vec<Event<EndpointSlice>>) {
        feed_one(s, h, evs, Events::slices, Eligibility::Keep);
    }
    fn feed_node(s: &Mutex<Sources>, h: &Hooks, evs: Vec<Event<Node>>) {
        feed_one(s, h, evs, Events::nodes, Eligibility::Tracked("node-a"));
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
            &[(SystemTime::now(), "IPv6")],
            SystemTime::UNIX_EPOCH,
        );
        let text = h.metrics.encode();
        assert!(
            text.contains(
                "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1"
            )
        );
        assert!(text.contains(
            "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv6\"} 1"
        ));
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
        assert_eq!(b.trigger_times()[0].1, "IPv4");
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
