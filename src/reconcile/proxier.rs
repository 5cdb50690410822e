//! The incremental proxier core: object events in, minimal ordered plans out.
//!
//! Events only mark Services dirty; `sync` recomputes those Services'
//! contributions, folds the deltas into the refcounted aggregate and diffs only
//! the touched keys against the last applied state. Work per change is
//! proportional to the changed Services, never to the cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipvs_netlink::ipvs::{Destination, Family, Protocol, ServiceKey, Timeouts};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::blame::Failing;
use super::desired::{Aggregate, Touched};
use super::plan::Plan;
use super::undo::Undo;
use crate::model::config::ProxyConfig;
use crate::model::contribution::{Contribution, HealthCheck, Refusal, contribution};
use crate::model::input::{
    ParsedService, Seniority, ServiceInput, SliceInput, SvcId, parse_service, parse_slice, svc_id,
    with_default_scheduler,
};
use crate::model::iptables;
use crate::model::node::NodeInfo;
use crate::model::sysctls::desired_sysctls;
use crate::state::{
    ConnCounts, ConntrackFilter, IpsetEntry, IpvsOp, KService, KernelState, Op, SetKind, SetName,
};

fn timeouts_wanted(t: &Timeouts) -> bool {
    t.tcp != 0 || t.tcp_fin != 0 || t.udp != 0
}

/// Whether `have` already satisfies every non-zero field of `want`.
fn timeouts_ok(want: &Timeouts, have: Option<&Timeouts>) -> bool {
    let Some(h) = have else { return false };
    (want.tcp == 0 || want.tcp == h.tcp)
        && (want.tcp_fin == 0 || want.tcp_fin == h.tcp_fin)
        && (want.udp == 0 || want.udp == h.udp)
}

fn sorted<T: Ord>(set: HashSet<T>) -> Vec<T> {
    let mut v: Vec<T> = set.into_iter().collect();
    v.sort_unstable();
    v
}

/// Why the first Service of a conflict won, for the loser's warning.
fn older_because(winner: Option<&Seniority>, loser: Option<&Seniority>) -> String {
    let (w, l) = (
        winner.cloned().unwrap_or_default(),
        loser.cloned().unwrap_or_default(),
    );
    match (w.created, l.created) {
        (Some(a), Some(b)) if a != b => format!("created {a}, this one {b}"),
        (Some(a), None) => format!("created {a}; this one has no creationTimestamp"),
        (Some(_), Some(_)) if w.uid.is_some() && w.uid != l.uid => {
            "same creationTimestamp; its uid sorts first".to_string()
        }
        _ => "creationTimestamp and uid do not tell; its namespace/name sorts first".to_string(),
    }
}

/// Keeps desired state per Service, the last applied state and drains.
/// One Service's slices by slice key (parsed forms shared with the trackers).
type ServiceSlices = Vec<(Arc<str>, Arc<SliceInput>)>;

#[derive(Debug)]
pub struct Proxier {
    pub(super) cfg: ProxyConfig,
    pub(super) node: NodeInfo,
    pub(super) services: HashMap<SvcId, Arc<ServiceInput>>,
    /// Slices by Service, sorted by slice name (merging is deterministic).
    /// A sorted Vec, not a BTreeMap: most Services have one to three slices
    /// and a BTreeMap leaf alone costs ~1 KB.
    pub(super) slices: HashMap<SvcId, ServiceSlices>,
    pub(super) slice_owner: HashMap<Arc<str>, SvcId>,
    pub(super) contributions: HashMap<SvcId, Contribution>,
    pub(super) agg: Aggregate,
    pub(super) dirty: HashSet<SvcId>,
    pub(super) touched: Touched,
    pub(super) globals_dirty: bool,
    pub(super) applied: KernelState,
    /// Removed TCP real servers at weight 0, with the time draining started.
    pub(super) drains: HashMap<(ServiceKey, SocketAddr), u64>,
    /// Services counted in `no_local_endpoints` (internal, external), kept
    /// up to date as contributions change.
    pub(super) no_local: [(usize, usize); 2],
    /// What the last plan's edits and deletions replaced, by op index.
    pub(super) undo: Vec<(usize, Undo)>,
    /// Schedulers the kernel said it lacks (ENOENT): Services asking for
    /// one use the default instead, until a restart.
    pub(super) missing_schedulers: BTreeSet<ipvs_netlink::ipvs::Scheduler>,
    /// Services the kernel refused, retried with backoff.
    pub(super) failing: HashMap<SvcId, Failing>,
    /// Labels of model refusals not yet counted (`take_model_refusals`).
    pub(super) model_refusals: Vec<&'static str>,
}

impl Proxier {
    pub fn new(cfg: ProxyConfig, node: NodeInfo) -> Self {
        Proxier {
            cfg,
            node,
            services: HashMap::new(),
            slices: HashMap::new(),
            slice_owner: HashMap::new(),
            contributions: HashMap::new(),
            agg: Aggregate::default(),
            dirty: HashSet::new(),
            touched: Touched::default(),
            globals_dirty: true,
            applied: KernelState::default(),
            drains: HashMap::new(),
            no_local: [(0, 0); 2],
            undo: Vec::new(),
            missing_schedulers: BTreeSet::new(),
            failing: HashMap::new(),
            model_refusals: Vec::new(),
        }
    }

    /// The sysctls this configuration manages, with their wanted values: the
    /// keys are what `Applier::observe` reads back.
    pub fn managed_sysctls(&self) -> BTreeMap<String, String> {
        desired_sysctls(&self.cfg)
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.cfg
    }

    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The state the last plans brought the node to (what we believe is applied).
    pub fn applied(&self) -> &KernelState {
        &self.applied
    }

    /// Real servers currently draining, with their start time.
    pub fn drains(&self) -> &HashMap<(ServiceKey, SocketAddr), u64> {
        &self.drains
    }

    pub fn health_checks(&self) -> &HashMap<SvcId, HealthCheck> {
        self.agg.health()
    }

    /// Services with a Local (internal, external) traffic policy and no local
    /// endpoint while others exist, as of the last `sync`/`repair`.
    pub fn no_local_endpoints(&self) -> (usize, usize) {
        let [a, b] = self.no_local;
        (a.0 + b.0, a.1 + b.1)
    }

    /// [`Self::no_local_endpoints`] per family, by `family_slot`.
    pub fn no_local_endpoints_by_family(&self) -> [(usize, usize); 2] {
        self.no_local
    }

    fn count_no_local(&mut self, c: &Contribution, add: bool) {
        let step = |n: &mut usize, on: bool| {
            if on {
                *n = if add { *n + 1 } else { n.saturating_sub(1) };
            }
        };
        for (n, f) in self.no_local.iter_mut().zip(&c.no_local_endpoints) {
            step(&mut n.0, f.internal);
            step(&mut n.1, f.external);
        }
    }

    /// Per-Service warnings: invalid fields, bad annotations, lost key conflicts.
    pub fn warnings(&self) -> BTreeMap<SvcId, Vec<String>> {
        let mut w: BTreeMap<SvcId, Vec<String>> = BTreeMap::new();
        for (id, c) in &self.contributions {
            if !c.warnings.is_empty() {
                w.entry(id.clone())
                    .or_default()
                    .extend(c.warnings.iter().cloned());
            }
        }
        for (id, f) in &self.failing {
            if f.reason == super::FailureReason::KernelRefused {
                w.entry(id.clone()).or_default().push(format!(
                    "the kernel refused {}; kube-ipvs retries with backoff",
                    f.message
                ));
            }
        }
        for (key, owners) in self.agg.conflicts() {
            let winner = &owners[0].0;
            for (loser, _) in &owners[1..] {
                let why = older_because(self.agg.seniority(winner), self.agg.seniority(loser));
                w.entry(loser.clone()).or_default().push(format!(
                    "{key} is already used by the older Service {winner} ({why}); \
                     not programmed for this Service (use another address or port)"
                ));
            }
        }
        w
    }

    /// Services refused whole, with the reason (for a per-reason metric).
    pub fn refused(&self) -> impl Iterator<Item = (&SvcId, &Refusal)> {
        self.contributions
            .iter()
            .filter_map(|(id, c)| c.refused.as_ref().map(|r| (id, r)))
    }

    // ---- events ------------------------------------------------------------

    /// Reads a Service and records it (see `set_service`).
    pub fn upsert_service(&mut self, svc: &Service) {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        let Some(name) = svc.metadata.name.as_deref() else {
            return;
        };
        let input = match parse_service(svc, &self.cfg) {
            ParsedService::Proxied(input) => Some(Arc::new(input)),
            ParsedService::Ignored(_) => None,
        };
        self.set_service(ns, name, input);
    }

    /// Records a parsed Service; `None` (headless, ExternalName, another
    /// proxy's, or deleted) removes it.
    pub fn set_service(&mut self, namespace: &str, name: &str, input: Option<Arc<ServiceInput>>) {
        let id = svc_id(namespace, name);
        match input {
            Some(input) => {
                if self.services.get(&id) != Some(&input) {
                    self.services.insert(id.clone(), input);
                    self.dirty.insert(id);
                }
            }
            None => {
                if self.services.remove(&id).is_some() {
                    self.dirty.insert(id);
                }
            }
        }
    }

    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        self.set_service(namespace, name, None);
    }

    /// Reads an EndpointSlice against this node and records it (see `set_slice`).
    pub fn upsert_slice(&mut self, slice: &EndpointSlice) {
        let ns = slice.metadata.namespace.as_deref().unwrap_or("");
        let Some(name) = slice.metadata.name.as_deref() else {
            return;
        };
        let parsed = parse_slice(slice, &self.node.name).map(Arc::new);
        self.set_slice(ns, name, parsed);
    }

    /// Records a parsed slice (read against this node's name); `None`
    /// (unusable or deleted) removes it.
    pub fn set_slice(&mut self, namespace: &str, name: &str, parsed: Option<Arc<SliceInput>>) {
        let key = svc_id(namespace, name);
        let new_owner = parsed.as_ref().map(|p| p.service.clone());
        // The slice may have moved between Services (label edit) or become unusable.
        if let Some(old) = self.slice_owner.get(&key).cloned()
            && Some(&old) != new_owner.as_ref()
        {
            self.remove_slice_from(&old, &key);
        }
        if let Some(p) = parsed {
            let owner = p.service.clone();
            let per = self.slices.entry(owner.clone()).or_default();
            match per.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) if per[i].1 == p => {}
                Ok(i) => {
                    per[i].1 = p;
                    self.dirty.insert(owner.clone());
                }
                Err(i) => {
                    per.reserve_exact(1);
                    per.insert(i, (key.clone(), p));
                    self.dirty.insert(owner.clone());
                }
            }
            self.slice_owner.insert(key, owner);
        }
    }

    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        self.set_slice(namespace, name, None);
    }

    fn remove_slice_from(&mut self, owner: &SvcId, key: &Arc<str>) {
        self.slice_owner.remove(key);
        if let Some(per) = self.slices.get_mut(owner) {
            if let Ok(i) = per.binary_search_by(|(k, _)| k.cmp(key)) {
                per.remove(i);
                self.dirty.insert(owner.clone());
            }
            if per.is_empty() {
                self.slices.remove(owner);
            }
        }
    }

    /// New node addresses or zone: every Service is recomputed. The node name
    /// must not change (slice locality is resolved when a slice is read).
    pub fn set_node(&mut self, node: NodeInfo) {
        if node != self.node {
            self.node = node;
            self.dirty.extend(self.services.keys().cloned());
            self.dirty.extend(self.contributions.keys().cloned());
        }
    }

    pub fn set_config(&mut self, cfg: ProxyConfig) {
        if cfg != self.cfg {
            self.cfg = cfg;
            self.globals_dirty = true;
            self.dirty.extend(self.services.keys().cloned());
            self.dirty.extend(self.contributions.keys().cloned());
        }
    }

    // ---- planning ----------------------------------------------------------

    fn recompute(&mut self) {
        // take(), not drain(): a full rebuild must not leave a huge empty table behind.
        for id in std::mem::take(&mut self.dirty) {
            if let Some(old) = self.contributions.remove(&id) {
                self.agg.remove(&id, &old, &mut self.touched);
                self.count_no_local(&old, false);
            }
            let Some(svc) = self.services.get(&id) else {
                continue;
            };
            // A refused Service planned again is being retried (see `settle`).
            if let Some(f) = self.failing.get_mut(&id) {
                f.retrying = true;
            }
            let slices: Vec<&SliceInput> = self
                .slices
                .get(&id)
                .map(|m| m.iter().map(|(_, s)| &**s).collect())
                .unwrap_or_default();
            let c = if svc.scheduler != self.cfg.scheduler
                && self.missing_schedulers.contains(&svc.scheduler)
            {
                let fallback = with_default_scheduler(svc, &self.cfg);
                contribution(&fallback, &slices, &self.node, &self.cfg)
            } else {
                contribution(svc, &slices, &self.node, &self.cfg)
            };
            if let Some(r) = &c.refused {
                self.model_refusals.push(r.label());
            }
            self.agg.add(&id, &c, &mut self.touched);
            self.count_no_local(&c, true);
            self.contributions.insert(id, c);
        }
    }

    /// Reasons of the Services refused by the model (see `Refusal`) since
    /// the last call, one per computation: the daemon counts them with the
    /// kernel's refusals in `kube_ipvs_service_failures_total`.
    pub fn take_model_refusals(&mut self) -> Vec<&'static str> {
        std::mem::take(&mut self.model_refusals)
    }

    fn render_iptables(&self, family: Family) -> Arc<str> {
        Arc::from(iptables::render(
            &self.cfg,
            family,
            self.agg.no_node_access(family),
        ))
    }

    /// Plans everything that changed since the last plan. `now` is seconds on
    /// any monotonic clock (drain start times are recorded with it).
    pub fn sync(&mut self, now: u64) -> Plan {
        self.recompute();
        let mut plan = Plan::default();
        let touched = std::mem::take(&mut self.touched);
        if std::mem::take(&mut self.globals_dirty) {
            self.diff_globals(&mut plan);
        } else {
            for f in &touched.iptables {
                self.diff_iptables(*f, &mut plan);
            }
        }
        // Sorted so a plan is deterministic (golden tests, readable logs);
        // the sort is over touched keys only.
        for k in sorted(touched.vs) {
            self.diff_vs(&k, now, &mut plan);
        }
        for a in sorted(touched.addresses) {
            self.diff_address(&a, &mut plan);
        }
        for e in sorted(touched.entries) {
            self.diff_entry(&e, &mut plan);
        }
        self.finish(plan)
    }

    /// Orders the plan and records it as applied, keeping what `confirm`
    /// needs to take back operations the kernel then refuses.
    fn finish(&mut self, mut plan: Plan) -> Plan {
        plan.order();
        self.undo.clear();
        for (i, op) in plan.ops.iter().enumerate() {
            match self.applied.apply_undoable(op) {
                Ok(Some(u)) => self.undo.push((i, u)),
                Ok(None) => {}
                Err(e) => plan.internal_errors.push(format!("{op}: {e}")),
            }
        }
        plan
    }

    fn diff_globals(&mut self, plan: &mut Plan) {
        for (k, v) in desired_sysctls(&self.cfg) {
            if self.applied.sysctls.get(&k) != Some(&v) {
                plan.ops.push(Op::Sysctl { key: k, value: v });
            }
        }
        let t = self.cfg.timeouts;
        if timeouts_wanted(&t) && !timeouts_ok(&t, self.applied.timeouts.as_ref()) {
            plan.ops.push(Op::SetTimeouts(t));
        }
        for s in SetName::all(&self.cfg.families) {
            if !self.applied.sets.contains_key(&s) {
                plan.ops.push(Op::CreateSet(s));
            }
        }
        for f in [Family::Inet, Family::Inet6] {
            if self.cfg.serves(f) {
                self.diff_iptables(f, plan);
            }
        }
    }

    fn diff_iptables(&mut self, family: Family, plan: &mut Plan) {
        if !self.cfg.serves(family) {
            return;
        }
        let want = self.render_iptables(family);
        if self.applied.iptables.get(&family) != Some(&want) {
            plan.ops.push(Op::IptablesRestore {
                family,
                payload: want,
            });
        }
    }

    fn diff_address(&self, a: &IpAddr, plan: &mut Plan) {
        match (self.agg.has_address(a), self.applied.addresses.contains(a)) {
            (true, false) => plan.ops.push(Op::AddAddress(*a)),
            (false, true) => plan.ops.push(Op::DelAddress(*a)),
            _ => {}
        }
    }

    fn diff_entry(&self, e: &(SetName, IpsetEntry), plan: &mut Plan) {
        let have = self
            .applied
            .sets
            .get(&e.0)
            .is_some_and(|s| s.contains(&e.1));
        match (self.agg.has_entry(e), have) {
            (true, false) => plan.ops.push(Op::IpsetAdd(e.0, e.1)),
            (false, true) => plan.ops.push(Op::IpsetDel(e.0, e.1)),
            _ => {}
        }
    }

    /// Diffs one virtual service: desired (aggregate) vs applied, with drains.
    fn diff_vs(&mut self, key: &ServiceKey, now: u64, plan: &mut Plan) {
        let want = self.agg.effective(key);
        let have = self.applied.services.get(key);
        match (want, have) {
            (None, None) => {}
            (Some(w), None) => {
                plan.ops
                    .push(Op::Ipvs(IpvsOp::AddService(w.service.clone())));
                for d in w.destinations.iter() {
                    plan.ops.push(Op::Ipvs(IpvsOp::AddDestination(*key, *d)));
                }
            }
            (None, Some(h)) => {
                plan.ops.push(Op::Ipvs(IpvsOp::DeleteService(*key)));
                for d in &h.destinations {
                    self.drains.remove(&(*key, d.addr));
                }
                // One filter per former endpoint: conntrack filters flows by
                // their reply source, and a whole-VIP delete cannot be expressed.
                if let (Some(p), Some(vip)) = (key.protocol(), key.addr())
                    && p != Protocol::Tcp
                {
                    let eps: BTreeSet<IpAddr> =
                        h.destinations.iter().map(|d| d.addr.ip()).collect();
                    plan.ops.extend(eps.into_iter().map(|ep| {
                        Op::Conntrack(ConntrackFilter {
                            protocol: p,
                            vip: Some(vip),
                            endpoint: Some(ep),
                        })
                    }));
                }
            }
            (Some(w), Some(h)) => {
                if w.service != h.service {
                    plan.ops
                        .push(Op::Ipvs(IpvsOp::EditService(w.service.clone())));
                }
                let (w, h) = (w.destinations.clone(), h.destinations.clone());
                self.diff_destinations(key, &w, &h, now, plan);
            }
        }
    }

    fn diff_destinations(
        &mut self,
        key: &ServiceKey,
        want: &[Destination],
        have: &[Destination],
        now: u64,
        plan: &mut Plan,
    ) {
        let (mut i, mut j) = (0, 0);
        while i < want.len() || j < have.len() {
            let ord = match (want.get(i), have.get(j)) {
                (Some(w), Some(h)) => w.addr.cmp(&h.addr),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match ord {
                std::cmp::Ordering::Less => {
                    plan.ops
                        .push(Op::Ipvs(IpvsOp::AddDestination(*key, want[i])));
                    i += 1;
                }
                std::cmp::Ordering::Equal => {
                    // Covers a drained server coming back (restored to full
                    // weight) and weights left at 0 by a previous run (#92019).
                    if want[i] != have[j] {
                        plan.ops
                            .push(Op::Ipvs(IpvsOp::EditDestination(*key, want[i])));
                    }
                    self.drains.remove(&(*key, want[i].addr));
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Greater => {
                    self.retire(key, &have[j], now, plan);
                    j += 1;
                }
            }
        }
    }

    /// A real server no longer wanted. TCP drains at weight 0 (new connections
    /// go elsewhere, established ones finish); UDP/SCTP have no connection end
    /// to wait for, so they go at once and their conntrack entries with them.
    fn retire(&mut self, key: &ServiceKey, d: &Destination, now: u64, plan: &mut Plan) {
        if key.protocol() == Some(Protocol::Tcp) {
            if d.weight != 0 {
                plan.ops.push(Op::Ipvs(IpvsOp::EditDestination(
                    *key,
                    Destination { weight: 0, ..*d },
                )));
            }
            self.drains.entry((*key, d.addr)).or_insert(now);
        } else {
            plan.ops
                .push(Op::Ipvs(IpvsOp::DeleteDestination(*key, d.addr)));
            self.drains.remove(&(*key, d.addr));
            if let Some(p) = key.protocol() {
                plan.ops.push(Op::Conntrack(ConntrackFilter {
                    protocol: p,
                    vip: key.addr(),
                    endpoint: Some(d.addr.ip()),
                }));
            }
        }
    }

    /// Finishes drains: a draining real server is deleted once it has no
    /// active or inactive connections, or when the drain timeout has passed
    /// (upstream waits forever; inactive connections can pin it, #81308).
    pub fn tick(
        &mut self,
        now: u64,
        conns: impl Fn(&ServiceKey, &SocketAddr) -> Option<ConnCounts>,
    ) -> Plan {
        let mut plan = Plan::default();
        let mut done: Vec<(ServiceKey, SocketAddr)> = self
            .drains
            .iter()
            .filter(|((k, a), since)| {
                now.saturating_sub(**since) >= self.cfg.drain_timeout_secs
                    || conns(k, a).is_some_and(|c| c.active == 0 && c.inactive == 0)
            })
            .map(|(k, _)| *k)
            .collect();
        done.sort();
        for (k, a) in done {
            self.drains.remove(&(k, a));
            if self
                .applied
                .services
                .get(&k)
                .is_some_and(|s| s.get(&a).is_some())
            {
                plan.ops.push(Op::Ipvs(IpvsOp::DeleteDestination(k, a)));
            }
        }
        self.finish(plan)
    }

    // ---- adoption and drift repair -------------------------------------------

    /// Whether an observed virtual service is ours: never firewall-mark
    /// services; otherwise one we want or made, one on a kube-ipvs0 address
    /// or in KUBE-IPVS-IPS (`ours`), a node-address one in the NodePort
    /// range, or a node-address one that is a member of our externalIP or
    /// LoadBalancer sets (`on_node`: an externalIP or LB IP equal to a node
    /// address is never bound, so only those sets name it after a restart).
    /// Anything else (keepalived's VIPs, …) is foreign and left alone.
    /// Inside excludeCIDRs only the first two count: as upstream's
    /// `cleanLegacyService`, a service there that we neither want nor made in
    /// this run is someone else's, whatever address it sits on.
    fn owns_service(
        &self,
        k: &ServiceKey,
        ours: &HashSet<IpAddr>,
        on_node: &HashSet<ServiceKey>,
    ) -> bool {
        let Some(a) = k.addr() else { return false };
        let ip = a.ip();
        if !self.cfg.serves(k.family()) {
            return false;
        }
        if self.agg.effective(k).is_some() || self.applied.services.contains_key(k) {
            return true;
        }
        let (lo, hi) = self.cfg.node_port_range;
        !self.cfg.is_excluded(&ip)
            && (ours.contains(&ip)
                || (self.node.has_address(&ip)
                    && ((lo..=hi).contains(&a.port()) || on_node.contains(k))))
    }

    /// Whether an address on kube-ipvs0 is ours to keep or unbind: inside
    /// excludeCIDRs only one we want or bound in this run.
    fn owns_address(&self, ip: &IpAddr) -> bool {
        !self.cfg.is_excluded(ip) || self.agg.has_address(ip) || self.applied.addresses.contains(ip)
    }

    /// The part of an observed state that is ours to manage.
    pub fn owned_view(&self, observed: &KernelState) -> KernelState {
        self.keep_owned(observed.clone())
    }

    /// `owned_view`, consuming the observation: a 10,000-Service kernel read
    /// is ~9 MB, and a resync should not hold a copy of it.
    fn keep_owned(&self, mut observed: KernelState) -> KernelState {
        // KUBE-IPVS-IPS also names the addresses of services a killed run
        // created but had not bound yet (see `Op::phase`).
        let mut ours = observed.addresses.clone();
        for (set, members) in &observed.sets {
            if set.kind == SetKind::IpvsIps {
                ours.extend(members.iter().filter_map(|e| match e {
                    IpsetEntry::Ip(ip) => Some(*ip),
                    _ => None,
                }));
            }
        }
        // Services on a node address outside the NodePort range: ours when
        // our externalIP / LoadBalancer sets list them (kept there from
        // before the service is created until after it is deleted, see
        // `Op::phase`).
        let mut on_node: HashSet<ServiceKey> = HashSet::new();
        for (set, members) in &observed.sets {
            if set.kind.names_node_services() {
                on_node.extend(members.iter().filter_map(|e| match e {
                    IpsetEntry::IpPort(ip, proto, port) if self.node.has_address(ip) => {
                        Some(ServiceKey::new(*proto, SocketAddr::new(*ip, *port)))
                    }
                    _ => None,
                }));
            }
        }
        observed
            .services
            .retain(|k, _| self.owns_service(k, &ours, &on_node));
        observed.addresses.retain(|a| self.owns_address(a));
        observed
    }

    /// Startup: adopt what the kernel has (never flush), then plan the
    /// difference. Weights left at 0 by a previous run are reset (#92019).
    pub fn adopt(&mut self, observed: KernelState, now: u64) -> Plan {
        self.repair(observed, now)
    }

    /// Drift repair: diff an observed kernel state against desired and plan
    /// the repair: each op is one difference found.
    pub fn repair(&mut self, observed: KernelState, now: u64) -> Plan {
        self.recompute();
        self.touched = Touched::default();
        let owned = self.keep_owned(observed);
        // Keep drains whose real server still exists.
        self.drains.retain(|(k, a), _| {
            owned
                .services
                .get(k)
                .is_some_and(|s: &KService| s.get(a).is_some())
        });
        self.applied = owned;
        let mut plan = Plan::default();
        self.globals_dirty = false;
        self.diff_globals(&mut plan);
        let keys: HashSet<ServiceKey> = self
            .agg
            .keys()
            .chain(self.applied.services.keys())
            .copied()
            .collect();
        for k in sorted(keys) {
            self.diff_vs(&k, now, &mut plan);
        }
        let addrs: HashSet<IpAddr> = self
            .agg
            .addresses()
            .chain(self.applied.addresses.iter())
            .copied()
            .collect();
        for a in sorted(addrs) {
            self.diff_address(&a, &mut plan);
        }
        let mut entries: HashSet<(SetName, IpsetEntry)> = self.agg.entries().copied().collect();
        for (s, es) in &self.applied.sets {
            entries.extend(es.iter().map(|e| (*s, *e)));
        }
        for e in sorted(entries) {
            self.diff_entry(&e, &mut plan);
        }
        self.finish(plan)
    }

    /// The iptables payload per served family, as `desired_state` has it
    /// (without building the rest: the kernel read needs only this).
    pub fn desired_iptables(&mut self) -> BTreeMap<Family, Arc<str>> {
        self.recompute();
        [Family::Inet, Family::Inet6]
            .into_iter()
            .filter(|f| self.cfg.serves(*f))
            .map(|f| (f, self.render_iptables(f)))
            .collect()
    }

    /// The complete desired state as a value (what `applied` converges to once
    /// every drain has finished). Costs O(cluster); for tests and debugging.
    pub fn desired_state(&mut self) -> KernelState {
        self.recompute();
        let mut k = KernelState::default();
        for key in self.agg.keys() {
            if let Some(v) = self.agg.effective(key) {
                k.services.insert(
                    *key,
                    KService {
                        service: v.service.clone(),
                        destinations: v.destinations.to_vec(),
                    },
                );
            }
        }
        k.addresses = self.agg.addresses().copied().collect();
        for s in SetName::all(&self.cfg.families) {
            k.sets.insert(s, HashSet::new());
        }
        for (s, e) in self.agg.entries() {
            k.sets.entry(*s).or_default().insert(*e);
        }
        k.iptables = self.desired_iptables();
        k.sysctls = desired_sysctls(&self.cfg);
        let t = self.cfg.timeouts;
        if timeouts_wanted(&t) {
            k.timeouts = Some(t);
        }
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testutil::{node, service, slice};
    use serde_json::{Value, json};

    fn svc(name: &str, ip: &str, extra: Value) -> Service {
        let mut spec = json!({"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                              "ports": [{"name": "http", "port": 80, "nodePort": 30000}]});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        service("ns", name, spec)
    }

    /// A ready endpoint per `(ip, node)`.
    fn eps(name: &str, on: &[(&str, &str)]) -> EndpointSlice {
        let e: Vec<(&str, bool, bool, bool, &str)> = on
            .iter()
            .map(|(ip, n)| (*ip, true, true, false, *n))
            .collect();
        slice(
            "ns",
            &format!("{name}-1"),
            name,
            "IPv4",
            &[("http", 8080, "TCP")],
            &e,
        )
    }

    #[test]
    fn counts_services_with_a_local_policy_and_no_local_endpoint() {
        let mut p = Proxier::new(
            ProxyConfig {
                families: vec![Family::Inet],
                ..Default::default()
            },
            node(),
        );
        let itp = json!({"internalTrafficPolicy": "Local"});
        let etp = json!({"type": "NodePort", "externalTrafficPolicy": "Local"});
        p.upsert_service(&svc("int", "10.96.0.1", itp.clone()));
        p.upsert_slice(&eps("int", &[("10.244.2.1", "node-b")]));
        p.upsert_service(&svc("ext", "10.96.0.2", etp.clone()));
        p.upsert_slice(&eps("ext", &[("10.244.2.2", "node-b")]));
        // Not counted: a local endpoint; no endpoint at all (upstream's
        // hasAnyEndpoints); ETP Local on a ClusterIP Service (not external).
        p.upsert_service(&svc("has-local", "10.96.0.3", etp.clone()));
        p.upsert_slice(&eps(
            "has-local",
            &[("10.244.1.3", "node-a"), ("10.244.2.3", "node-b")],
        ));
        p.upsert_service(&svc("empty", "10.96.0.4", etp.clone()));
        p.upsert_service(&svc(
            "cluster-ip",
            "10.96.0.5",
            json!({"externalTrafficPolicy": "Local"}),
        ));
        p.upsert_slice(&eps("cluster-ip", &[("10.244.2.5", "node-b")]));
        // A not-ready remote endpoint is not usable either.
        p.upsert_service(&svc("unready", "10.96.0.6", itp.clone()));
        p.upsert_slice(&slice(
            "ns",
            "unready-1",
            "unready",
            "IPv4",
            &[("http", 8080, "TCP")],
            &[("10.244.2.6", false, false, false, "node-b")],
        ));
        p.sync(0);
        assert_eq!(p.no_local_endpoints(), (1, 1));

        // Both policies Local: counted once in each.
        p.upsert_service(&svc(
            "both",
            "10.96.0.7",
            json!({"type": "NodePort", "externalTrafficPolicy": "Local",
                   "internalTrafficPolicy": "Local"}),
        ));
        p.upsert_slice(&eps("both", &[("10.244.2.7", "node-b")]));
        p.sync(0);
        assert_eq!(p.no_local_endpoints(), (2, 2));

        // A local endpoint arrives; a Service goes; counts follow.
        p.upsert_slice(&eps(
            "int",
            &[("10.244.2.1", "node-b"), ("10.244.1.1", "node-a")],
        ));
        p.delete_service("ns", "ext");
        p.sync(0);
        assert_eq!(p.no_local_endpoints(), (1, 1));
        // The local endpoint leaves again; the policy turns Cluster.
        p.upsert_slice(&eps("int", &[("10.244.2.1", "node-b")]));
        p.upsert_service(&svc("both", "10.96.0.7", json!({"type": "NodePort"})));
        p.sync(0);
        assert_eq!(p.no_local_endpoints(), (1, 0));
    }
}
