//! The long-running proxy: sources (API watches or a manifests path) feed the sync loop, which adopts, applies, verifies and repairs kernel state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use kube::Resource;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use tokio::time::Instant;

use crate::apply::observe::QuickIpvs;
use crate::apply::quick;
use crate::apply::{Applier, ApplyReport, Observation, Part};
use crate::changes::{Batch, Hooks, ObjKey, Sources, lock};
use crate::config::{Settings, VerifyRead};
use crate::health::{self, ProxyHealth, ServiceHealthServer};
use crate::metrics::{Metrics, PartLabel, ReasonLabel, unix_seconds};
use crate::model::contribution::{FAMILY_NAMES, family_slot};
use crate::model::input::SvcId;
use crate::model::node::NodeInfo;
use crate::node;
use crate::reconcile::{Plan, Proxier, Settled};
use crate::runner::{RunReason, Runner, RunnerConfig};
use crate::source::files::{self, ManifestFiles};
use crate::source::manifests::Manifests;
use crate::state::{KernelParts, Op};
use crate::watch;

/// Runs the proxy until SIGTERM/SIGINT. Objects come from the API server
/// (`settings.kubeconfig`, else in-cluster) or, with `manifests`, from files.
pub fn run(settings: Settings, manifests: Option<PathBuf>) -> Result<()> {
    crate::heap::tune();
    // Before any socket: the HTTP listeners' caps assume the hard limit.
    match crate::http::raise_open_files_limit() {
        Ok((old, new)) => {
            tracing::debug!(old, new, "open files soft limit raised to the hard limit")
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open files limit; keeping the current one")
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let res = rt.block_on(run_async(settings, manifests));
    // Watch tasks may sit in backoff sleeps; do not wait for them.
    rt.shutdown_timeout(Duration::from_secs(1));
    res
}

/// Drift repairs logged one per line; a larger drift (someone flushed IPVS)
/// is summarised, not logged 100,000 times.
const LOGGED_REPAIRS: usize = 100;

/// Writes from which a sync hands its freed memory back (`heap`).
const LARGE_SYNC: usize = 10_000;

/// Warning Events being posted at once. Past it a new one is dropped and
/// logged, never queued: a slow or unreachable API server must not hold up
/// the sync loop nor pile up tasks.
const EVENT_POSTS_IN_FLIGHT: usize = 8;
/// One Event post gives up after this (kube's client has no default timeout
/// for a request whose connection hangs).
const EVENT_POST_TIMEOUT: Duration = Duration::from_secs(10);

/// Trigger times kept across failed syncs. The network-programming metric
/// observes each one once the sync succeeds; while syncs keep failing they
/// would otherwise grow with every EndpointSlice change. Past the cap the
/// oldest are kept: they carry the largest latencies, which the metric's
/// tail must show, and the newest are dropped (counted in the log).
const MAX_TRIGGER_TIMES: usize = 10_000;

/// Where objects come from, resolved before anything touches the kernel (a
/// bad kubeconfig or manifests path fails without side effects).
enum Input {
    Api(kube::Client),
    /// The manifests, already fed to the sources; this node's Node objects.
    Files(Box<ManifestFiles>, Manifests),
}

async fn input(
    settings: &Settings,
    manifests: Option<PathBuf>,
    sources: &Mutex<Sources>,
    hooks: &Hooks,
    node_name: &str,
) -> Result<Input> {
    if let Some(path) = manifests {
        let started = std::time::Instant::now();
        let (files, m) = files::load_and_feed(&path, sources, hooks, node_name)?;
        for w in &m.warnings {
            tracing::warn!("{w}");
        }
        // Where a first sync's time goes starts here (#17 point 3).
        tracing::info!(
            files = files.len(),
            ms = started.elapsed().as_millis() as u64,
            "loaded the manifests"
        );
        return Ok(Input::Files(Box::new(files), m));
    }
    let client = watch::client(settings.kubeconfig.as_deref(), Some(hooks.metrics.clone())).await?;
    Ok(Input::Api(client))
}

async fn run_async(settings: Settings, manifests: Option<PathBuf>) -> Result<()> {
    let node_name = node::node_name(settings.hostname_override.as_deref()).ok_or_else(|| {
        anyhow!("cannot determine the node name: set --hostname-override or NODE_NAME")
    })?;
    let shutdown = shutdown_signal()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(ProxyHealth::new(settings.sync_period));
    let mut runner = Runner::new(RunnerConfig::new(
        settings.min_sync_period,
        settings.sync_period,
    ));
    let hooks = Hooks {
        trigger: runner.trigger(),
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let sources = Arc::new(Mutex::new(Sources::new(settings.proxy.clone(), &node_name)));
    let input = input(&settings, manifests, &sources, &hooks, &node_name).await?;
    // The objects of the first load are parsed and gone: return their pages.
    crate::heap::release_free_memory();
    // Each setting written is logged where it is written.
    node::host_setup(&settings)?;

    let _metrics_srv = health::metrics_server(
        settings.metrics_bind_address,
        metrics.clone(),
        health.clone(),
    )
    .await
    .with_context(|| {
        format!(
            "cannot serve metrics on {} (--metrics-bind-address)",
            settings.metrics_bind_address
        )
    })?;
    let _healthz_srv = health::healthz_server(settings.healthz_bind_address, health.clone())
        .await
        .with_context(|| {
            format!(
                "cannot serve healthz on {} (--healthz-bind-address)",
                settings.healthz_bind_address
            )
        })?;

    let node = match &input {
        Input::Files(_, m) => node::node_info(&node_name, m, node::local_addresses),
        // The Node list (awaited before the first sync) fills this in.
        Input::Api(_) => NodeInfo {
            name: node_name.clone(),
            addresses: Vec::new(),
            primary: Vec::new(),
            zone: None,
        },
    };
    let recorder = match &input {
        Input::Api(client) => Some(recorder(client.clone(), &node_name)),
        Input::Files(..) => None,
    };
    let _watch = match input {
        Input::Api(client) => {
            tracing::info!(node = %node_name, "watching the API server");
            tokio::spawn(watch::watch_all(
                client,
                node_name.clone(),
                sources.clone(),
                hooks.clone(),
            ))
        }
        Input::Files(f, m) => {
            tracing::info!(
                node = %node_name,
                path = %f.root().display(),
                files = f.len(),
                "serving from manifests"
            );
            drop(m);
            tokio::spawn(files::watch(
                *f,
                sources.clone(),
                hooks.clone(),
                node_name.clone(),
            ))
        }
    };
    // Aborting the source task on exit stops watching; kernel state stays.
    let _watch = AbortOnDrop(_watch);

    let svc_health = ServiceHealthServer::new(health.clone());
    let posts = Arc::new(tokio::sync::Semaphore::new(EVENT_POSTS_IN_FLIGHT));
    let mut warned = std::collections::BTreeSet::new();
    let mut d = Daemon::new(Proxier::new(settings.proxy.clone(), node), hooks);
    d.verify_read = settings.verify_read;
    // Upstream labels sync metrics and health status per family proxier.
    let families: Vec<&'static str> = d
        .proxier
        .config()
        .families
        .iter()
        .map(|&f| FAMILY_NAMES[family_slot(f)])
        .collect();
    metrics.set_families(families.clone());
    health.set_families(families);
    health.count_answers_in(metrics.clone());
    health.loop_started();
    tokio::pin!(shutdown);
    loop {
        let reason = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = runner.wait() => r,
        };
        let taken = lock(&sources).take_batch();
        if taken.is_some() {
            // The batch holds every pending change now (upstream's pending
            // gauges fall to 0 when its proxier takes the changes).
            metrics.set_pending(0, 0);
        }
        let Some(batch) = taken else {
            // Not every source has listed yet: programming now would delete
            // what the missing objects describe.
            runner.finished(true);
            continue;
        };
        // Netlink and iptables calls block; the HTTP servers run on the
        // runtime's workers, this loop on the main thread.
        let ok = d.sync(reason, batch);
        runner.finished(ok);
        runner.wake_at(d.next_retry());
        let bind = health::health_check_addresses(d.proxier.config(), d.proxier.node());
        svc_health.sync(&bind, d.proxier.health_checks()).await;
        for (id, w) in new_warnings(&mut warned, d.proxier.warnings()) {
            tracing::warn!(service = %id, "{w}");
            let Some(rec) = &recorder else { continue };
            let Some((ns, name)) = id.split_once('/') else {
                continue;
            };
            let key = ObjKey {
                namespace: ns.to_string(),
                name: name.to_string(),
            };
            let tracked = lock(&sources).services.get(&key).cloned();
            if let Some(svc) = tracked {
                let rec = rec.clone();
                // Posting must not hold up the sync loop; failures are logged.
                let posted = spawn_bounded(&posts, EVENT_POST_TIMEOUT, async move {
                    if let Err(e) = publish_warning(&rec, &key, svc.uid.as_deref(), &w).await {
                        tracing::debug!(error = %e, "cannot post the warning Event");
                    }
                });
                if !posted {
                    tracing::debug!(service = %id, "{EVENT_POSTS_IN_FLIGHT} Events already being posted; this warning is only logged");
                }
            }
        }
    }
    tracing::info!("shutting down; kernel state left in place");
    Ok(())
}

/// Spawns `fut` (cut off after `timeout`) if one of `slots` is free, and
/// says whether it did; never waits for a slot.
fn spawn_bounded(
    slots: &Arc<tokio::sync::Semaphore>,
    timeout: Duration,
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) -> bool {
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        return false;
    };
    tokio::spawn(async move {
        if tokio::time::timeout(timeout, fut).await.is_err() {
            tracing::debug!(?timeout, "posting an Event timed out");
        }
        drop(permit);
    });
    true
}

/// Appends `new` to `kept`, keeping at most `max` (the oldest); returns how
/// many were dropped.
fn keep_oldest<T: Ord>(kept: &mut Vec<T>, new: Vec<T>, max: usize) -> usize {
    kept.extend(new);
    if kept.len() <= max {
        return 0;
    }
    let dropped = kept.len() - max;
    kept.sort_unstable();
    kept.truncate(max);
    dropped
}

/// An Event recorder reporting as `kube-ipvs` on this node.
pub fn recorder(client: kube::Client, node_name: &str) -> Recorder {
    Recorder::new(
        client,
        Reporter {
            controller: "kube-ipvs".into(),
            instance: Some(node_name.to_string()),
        },
    )
}

/// Warnings not reported yet; forgets those gone, so one that comes back
/// is reported again.
pub fn new_warnings(
    seen: &mut BTreeSet<(SvcId, String)>,
    current: BTreeMap<SvcId, Vec<String>>,
) -> Vec<(SvcId, String)> {
    let now: BTreeSet<(SvcId, String)> = current
        .into_iter()
        .flat_map(|(id, ws)| ws.into_iter().map(move |w| (id.clone(), w)))
        .collect();
    let fresh = now.difference(seen).cloned().collect();
    *seen = now;
    fresh
}

/// Posts `warning` as a Warning Event regarding `svc` (events.k8s.io/v1).
pub async fn publish_warning(
    rec: &Recorder,
    svc: &ObjKey,
    uid: Option<&str>,
    warning: &str,
) -> Result<(), kube::Error> {
    let ev = KubeEvent {
        type_: EventType::Warning,
        reason: "ServiceRejected".into(),
        note: Some(warning.chars().take(1000).collect()),
        action: "Program".into(),
        secondary: None,
    };
    let reference = ObjectReference {
        api_version: Some(Service::api_version(&()).into()),
        kind: Some(Service::kind(&()).into()),
        namespace: Some(svc.namespace.clone()),
        name: Some(svc.name.clone()),
        uid: uid.map(str::to_string),
        ..Default::default()
    };
    rec.publish(&ev, &reference).await
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers SIGTERM/SIGINT handling now (a signal during start-up is not
/// lost) and returns a future completing on the first of them.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// CPU seconds so far of this thread and of the children it waited for
/// (iptables-save and iptables-restore): the cost of a sync run is the
/// difference across it, since runs happen on one thread (0 if unreadable).
fn verification_cpu() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let secs = |who| {
        getrusage(who).map_or(0.0, |u| {
            let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
            t(u.user_time()) + t(u.system_time())
        })
    };
    secs(UsageWho::RUSAGE_THREAD) + secs(UsageWho::RUSAGE_CHILDREN)
}

/// Whether a run reads the kernel first: the first sync adopts, periodic
/// runs verify, and a retry repairs whatever the failed run left behind.
pub fn observes(adopted: bool, reason: RunReason) -> bool {
    !adopted || matches!(reason, RunReason::Periodic | RunReason::Retry)
}

/// Connections per real server, as the last observation counted them.
type Conns = std::collections::HashMap<
    (ipvs_netlink::ipvs::ServiceKey, std::net::SocketAddr),
    crate::state::ConnCounts,
>;

/// The sync loop's state: the proxier, the kernel clients and the hooks.
struct Daemon {
    proxier: Proxier,
    applier: Applier,
    hooks: Hooks,
    adopted: bool,
    process_start: SystemTime,
    clock: Instant,
    /// Trigger times of slices not yet programmed by a successful sync.
    trigger_times: Vec<(SystemTime, &'static str)>,
    /// How periodic verifications read IPVS, and how many have read it
    /// quickly (which rolling slice is read exactly: `apply::quick`).
    verify_read: VerifyRead,
    verify_round: u64,
}

/// Kernel writes that failed, logged one per line.
fn log_failures(report: &ApplyReport) {
    for (op, e) in &report.failed {
        tracing::warn!(%op, error = %e, "kernel operation failed; the next run repairs it");
    }
    for (op, why) in &report.skipped {
        tracing::debug!(%op, why, "operation skipped");
    }
}

impl Daemon {
    fn new(proxier: Proxier, hooks: Hooks) -> Self {
        Daemon {
            proxier,
            applier: Applier::new(),
            hooks,
            adopted: false,
            process_start: SystemTime::now(),
            clock: Instant::now(),
            trigger_times: Vec::new(),
            verify_read: VerifyRead::default(),
            verify_round: 0,
        }
    }

    /// Seconds on a monotonic clock (drain start times).
    fn now(&self) -> u64 {
        self.clock.elapsed().as_secs()
    }

    /// One run; true when everything applied.
    fn sync(&mut self, reason: RunReason, batch: Batch) -> bool {
        let start = std::time::Instant::now();
        let span = tracing::info_span!(
            "sync",
            ?reason,
            ops = tracing::field::Empty,
            failed = tracing::field::Empty,
            repairs = tracing::field::Empty,
            ms = tracing::field::Empty,
        );
        let _enter = span.enter();
        let dropped = keep_oldest(
            &mut self.trigger_times,
            batch.trigger_times(),
            MAX_TRIGGER_TIMES,
        );
        if dropped > 0 {
            tracing::debug!(
                dropped,
                kept = MAX_TRIGGER_TIMES,
                "syncs keep failing: newest trigger times not kept for the network-programming metric"
            );
        }
        batch.apply_to(&mut self.proxier, NodeInfo::from_node);
        let now = self.now();
        self.proxier.retry_due(now);
        let verify = observes(self.adopted, reason);
        let cpu_start = verify.then(verification_cpu);

        let mut conns = None;
        let plan: Plan = if verify {
            match self.observe_plan(now, reason) {
                Ok((plan, c)) => {
                    conns = c;
                    plan
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the kernel state; retrying");
                    return false;
                }
            }
        } else {
            self.proxier.sync(now)
        };
        for e in &plan.internal_errors {
            tracing::error!(error = %e, "planner inconsistency (a bug); the next run repairs");
        }
        let planned = start.elapsed();
        let mut report = self.applier.apply(&plan.ops);
        let mut settled = self.proxier.settle(&plan.ops, &report.refusals(), now);
        // Drains: idle real servers (counts from this run's observation) or
        // timed-out ones (every run) are removed now.
        let tick = self.proxier.tick(now, |k, a| {
            conns
                .as_ref()
                .map(|c: &Conns| Observation::conns_of(c, k, a))
        });
        let internal = plan.internal_errors.len() + tick.internal_errors.len();
        let tick_report = self.applier.apply(&tick.ops);
        let more = self.proxier.settle(&tick.ops, &tick_report.refusals(), now);
        settled.node += more.node;
        settled.services.extend(more.services);
        report.merge(tick_report);
        log_failures(&report);
        self.record(&report);
        self.charge(&settled);

        // One Service's refusal is that Service's: the node is fine unless
        // a refusal is the node's (see `reconcile::blame`).
        let ok = settled.node == 0 && internal == 0;
        if settled.replan {
            // A scheduler fallback: program it now, not at the next change.
            self.hooks.trigger.run();
        }
        // A kernel read or a large plan leaves megabytes of freed pages.
        let heap = std::time::Instant::now();
        if verify || report.writes() >= LARGE_SYNC {
            crate::heap::release_free_memory();
        }
        let took = start.elapsed();
        if report.writes() >= LARGE_SYNC {
            let ms = |d: Duration| d.as_millis() as u64;
            let t = |p| ms(report.took.get(p));
            tracing::info!(
                read_and_plan_ms = ms(planned),
                ipvs_ms = t(Part::Ipvs),
                ipsets_ms = t(Part::Ipsets),
                addresses_ms = t(Part::Addresses),
                iptables_ms = t(Part::Iptables),
                other_ms = t(Part::Other),
                heap_release_ms = ms(heap.elapsed()),
                "where a large sync's time went"
            );
        }
        if let Some(c) = cpu_start {
            let spent = (verification_cpu() - c).max(0.0);
            self.hooks
                .metrics
                .verification_cpu_seconds_total
                .inc_by(spent);
        }
        span.record("ops", report.writes());
        span.record("failed", report.failed.len());
        span.record("repairs", if verify { plan.ops.len() } else { 0 });
        span.record("ms", took.as_millis() as u64);
        if ok {
            self.hooks
                .sync_succeeded(took, &self.trigger_times, self.process_start);
            self.trigger_times.clear();
            if verify {
                self.hooks
                    .metrics
                    .last_verification_timestamp
                    .set(unix_seconds(SystemTime::now()));
            }
        }
        if report.writes() > 0 || !ok {
            tracing::info!(
                changes = report.writes(),
                failed = report.failed.len(),
                ms = took.as_millis() as u64,
                "synced"
            );
        } else {
            tracing::debug!(ms = took.as_millis() as u64, "synced; nothing to change");
        }
        ok
    }

    /// Reads the kernel and plans from it: adoption on the first sync,
    /// drift repair afterwards. Returns the plan and connection counts.
    fn observe_plan(&mut self, now: u64, reason: RunReason) -> Result<(Plan, Option<Conns>)> {
        // Recreates kube-ipvs0 if someone deleted it.
        if self.applier.setup()? {
            tracing::info!("set up {}", crate::apply::DUMMY_LINK);
        }
        let sysctls = self.proxier.managed_sysctls();
        let want = self.proxier.desired_iptables();
        // Periodic verifications read IPVS cheaply (#17); adoption and
        // retries read every service exactly.
        // The costly parts in turn (IPVS, each family's iptables), the
        // cheap ones every time: see `apply::quick`.
        let families: Vec<_> = want.keys().copied().collect();
        let round = self.verify_round;
        let ipvs_round = round / quick::cycle(&families);
        let exact = move |k: &ipvs_netlink::ipvs::ServiceKey| quick::exact_slice(k, ipvs_round);
        let cheap =
            self.adopted && reason == RunReason::Periodic && self.verify_read == VerifyRead::Proc;
        let mut read = if cheap {
            self.verify_round += 1;
            quick::parts(round, &families)
        } else {
            KernelParts::ALL
        };
        // Draining real servers leave when their connections are gone: while
        // any wait, every verification reads IPVS for their counts (as
        // upstream checks them every minute, rsCheckDeleteInterval).
        read.ipvs |= !self.proxier.drains().is_empty();
        let quick = cheap.then(|| QuickIpvs {
            applied: &self.proxier.applied().services,
            exact: &exact,
        });
        let Observation {
            state, conns, took, ..
        } = self.applier.observe(&sysctls, &want, quick, read)?;
        // Without IPVS read there are no connection counts (and no drains).
        let conns = read.ipvs.then_some(conns);
        let m = &self.hooks.metrics;
        for (part, t) in [
            ("ipvs", took.ipvs),
            ("sets", took.sets),
            ("addresses", took.addresses),
            ("iptables", took.iptables),
        ] {
            m.verification_read_seconds_total
                .get_or_create(&PartLabel { part })
                .inc_by(t.as_secs_f64());
        }
        tracing::debug!(
            ipvs_ms = took.ipvs.as_millis() as u64,
            sets_ms = took.sets.as_millis() as u64,
            addresses_ms = took.addresses.as_millis() as u64,
            iptables_ms = took.iptables.as_millis() as u64,
            "read the kernel"
        );
        let plan = if self.adopted {
            let plan = self.proxier.repair_parts(state, read, now);
            let repairs = plan.ops.len();
            if repairs > 0 {
                for op in plan.ops.iter().take(LOGGED_REPAIRS) {
                    tracing::warn!(repair = %op, "kernel state drifted; repairing");
                }
                if repairs > LOGGED_REPAIRS {
                    tracing::warn!(
                        more = repairs - LOGGED_REPAIRS,
                        "kernel state drifted; repairing further differences (not listed)"
                    );
                }
                self.hooks
                    .metrics
                    .drift_repairs_total
                    .inc_by(repairs as u64);
            }
            plan
        } else {
            // Never flush: what is already right stays, traffic is not disturbed.
            let plan = self.proxier.adopt(state, now);
            tracing::info!(
                differences = plan.ops.len(),
                "adopted the existing kernel state"
            );
            self.adopted = true;
            plan
        };
        Ok((plan, conns))
    }

    /// Counts and logs the Services charged with a refusal in this run, and
    /// those the model refused (their warning becomes an Event).
    fn charge(&mut self, settled: &Settled) {
        let m = &self.hooks.metrics;
        for reason in self.proxier.take_model_refusals() {
            m.service_failures_total
                .get_or_create(&ReasonLabel { reason })
                .inc();
        }
        for (id, reason) in &settled.services {
            tracing::warn!(service = %id, reason = reason.label(), "the kernel refused this Service; retrying it with backoff");
            m.service_failures_total
                .get_or_create(&ReasonLabel {
                    reason: reason.label(),
                })
                .inc();
        }
        m.failing_services
            .set(self.proxier.failing().count() as i64);
    }

    /// When the next Service retry is due, on the runner's clock.
    fn next_retry(&self) -> Option<Instant> {
        let due = self.proxier.next_retry()?;
        self.clock.checked_add(Duration::from_secs(due))
    }

    fn record(&self, report: &ApplyReport) {
        let m = &self.hooks.metrics;
        m.netlink_operations_total
            .inc_by(report.netlink.messages_sent);
        m.netlink_batches_total.inc_by(report.netlink.sendmsg_calls);
        let ipt = report
            .failed
            .iter()
            .filter(|(op, _)| matches!(op, Op::IptablesRestore { .. }))
            .count();
        m.iptables_restore_failures_total.inc_by(ipt as u64);
        m.draining_real_servers
            .set(self.proxier.drains().len() as i64);
        let by_family = self.proxier.no_local_endpoints_by_family();
        let served: Vec<(&'static str, usize, usize)> = self
            .proxier
            .config()
            .families
            .iter()
            .map(|&f| {
                let slot = family_slot(f);
                let (i, e) = by_family[slot];
                (FAMILY_NAMES[slot], i, e)
            })
            .collect();
        m.set_no_local_endpoints(&served);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testutil;
    use crate::model::testutil::cluster_ip_service as svc;
    use serde_json::json;

    #[test]
    fn warnings_are_reported_once_each() {
        let mut seen = BTreeSet::new();
        let w = |v: &[(&str, &str)]| {
            let mut m: BTreeMap<SvcId, Vec<String>> = BTreeMap::new();
            for (id, t) in v {
                m.entry(SvcId::from(*id)).or_default().push(t.to_string());
            }
            m
        };
        assert_eq!(new_warnings(&mut seen, w(&[("ns/a", "bad ip")])).len(), 1);
        assert!(new_warnings(&mut seen, w(&[("ns/a", "bad ip")])).is_empty());
        let n = new_warnings(&mut seen, w(&[("ns/a", "bad ip"), ("ns/b", "x")]));
        assert_eq!(n, vec![(SvcId::from("ns/b"), "x".to_string())]);
        assert!(new_warnings(&mut seen, w(&[])).is_empty());
        assert_eq!(
            new_warnings(&mut seen, w(&[("ns/a", "bad ip")])).len(),
            1,
            "came back"
        );
    }

    #[test]
    fn trigger_times_are_capped_keeping_the_oldest() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut kept = Vec::new();
        assert_eq!(keep_oldest(&mut kept, vec![t(5), t(3)], 3), 0);
        assert_eq!(keep_oldest(&mut kept, vec![t(9), t(1), t(7)], 3), 2);
        assert_eq!(kept, vec![t(1), t(3), t(5)]);
        // Failed syncs forever: still bounded.
        for i in 0..100 {
            keep_oldest(&mut kept, vec![t(100 + i); 50], 3);
        }
        assert_eq!(kept, vec![t(1), t(3), t(5)]);
    }

    #[tokio::test]
    async fn event_posts_are_bounded_and_never_wait() {
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let hang = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|done| *done).await;
        };
        assert!(spawn_bounded(
            &slots,
            Duration::from_secs(60),
            hang(rx.clone())
        ));
        assert!(spawn_bounded(
            &slots,
            Duration::from_secs(60),
            hang(rx.clone())
        ));
        assert!(
            !spawn_bounded(&slots, Duration::from_secs(60), hang(rx.clone())),
            "a third post while two hang is dropped"
        );
        tx.send(true).unwrap();
        let start = std::time::Instant::now();
        while slots.available_permits() < 2 {
            assert!(start.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A post that hangs past the timeout frees its slot too.
        assert!(spawn_bounded(
            &slots,
            Duration::from_millis(50),
            std::future::pending()
        ));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(slots.available_permits(), 2);
    }

    #[test]
    fn which_runs_read_the_kernel() {
        assert!(observes(false, RunReason::Triggered), "first sync adopts");
        assert!(!observes(true, RunReason::Triggered));
        assert!(observes(true, RunReason::Periodic));
        assert!(observes(true, RunReason::Retry));
        assert!(
            !observes(true, RunReason::Backoff),
            "a Service retry trusts the applied state"
        );
    }

    #[tokio::test]
    async fn an_https_kubeconfig_gives_a_client() {
        // Building the TLS client needs a rustls crypto provider compiled in.
        let d = tempfile::tempdir().unwrap();
        let kc = d.path().join("kubeconfig");
        std::fs::write(
            &kc,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{name: k, cluster: {server: \"https://127.0.0.1:6443\"}}]\n\
             contexts: [{name: c, context: {cluster: k, user: u}}]\n\
             users: [{name: u, user: {token: t}}]\n",
        )
        .unwrap();
        let s = Settings {
            kubeconfig: Some(kc),
            ..crate::config::ConfigValues::default().resolve().unwrap()
        };
        assert!(matches!(input_alone(&s, None).await, Ok(Input::Api(_))));
    }

    /// A fake API server: answers lists from `lists` (by path prefix) and
    /// holds watch requests open; records every request line.
    async fn fake_api(
        lists: Vec<(&'static str, String)>,
    ) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = l.accept().await else {
                    return;
                };
                let lists = lists.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let line = text.lines().next().unwrap_or_default().to_string();
                    log.lock().unwrap().push(line.clone());
                    if line.contains("watch=true") {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or_default();
                    let body = lists
                        .iter()
                        .find(|(p, _)| path.starts_with(p))
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = c.write_all(resp.as_bytes()).await;
                });
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn api_watches_gate_the_first_sync_on_every_list() {
        let list = |kind: &str, items: serde_json::Value| {
            json!({"kind": kind, "apiVersion": "v1",
                   "metadata": {"resourceVersion": "5"}, "items": items})
            .to_string()
        };
        let mut node = serde_json::to_value(testutil::node_obj()).unwrap();
        node["metadata"]["name"] = "node-a".into();
        let (addr, seen) = fake_api(vec![
            (
                "/api/v1/services",
                list(
                    "ServiceList",
                    json!([serde_json::to_value(svc("a", "10.0.0.1")).unwrap()]),
                ),
            ),
            (
                "/apis/discovery.k8s.io/v1/endpointslices",
                list("EndpointSliceList", json!([])),
            ),
            ("/api/v1/nodes", list("NodeList", json!([node]))),
        ])
        .await;
        let d = tempfile::tempdir().unwrap();
        let kc = d.path().join("kubeconfig");
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
                 clusters: [{{name: k, cluster: {{server: \"http://{addr}\"}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: k, user: u}}}}]\n\
                 users: [{{name: u, user: {{}}}}]\n"
            ),
        )
        .unwrap();
        let s = Settings {
            kubeconfig: Some(kc),
            ..crate::config::ConfigValues::default().resolve().unwrap()
        };
        let sources = Arc::new(Mutex::new(Sources::new(s.proxy.clone(), "node-a")));
        let h = Hooks::for_tests();
        let Ok(Input::Api(client)) = input(&s, None, &sources, &h, "node-a").await else {
            panic!("no API client")
        };
        let task = AbortOnDrop(tokio::spawn(watch::watch_all(
            client,
            "node-a".into(),
            sources.clone(),
            h.clone(),
        )));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !h.trigger.is_pending() {
            assert!(
                std::time::Instant::now() < deadline,
                "no sync queued; requests: {:?}",
                seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b = lock(&sources).take_batch().expect("every list complete");
        assert_eq!(b.services.len(), 1);
        assert!(b.node.is_some());
        drop(task);
        let reqs = seen.lock().unwrap().join("\n");
        assert!(
            reqs.contains("fieldSelector=metadata.name%3Dnode-a"),
            "{reqs}"
        );
        assert!(
            reqs.contains("labelSelector=%21service.kubernetes.io"),
            "{reqs}"
        );
    }

    async fn input_alone(s: &Settings, manifests: Option<PathBuf>) -> Result<Input> {
        let sources = Mutex::new(Sources::new(s.proxy.clone(), "node-a"));
        input(s, manifests, &sources, &Hooks::for_tests(), "node-a").await
    }

    #[tokio::test]
    async fn bad_inputs_fail_before_the_kernel_is_touched() {
        let s = Settings {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            ..crate::config::ConfigValues::default().resolve().unwrap()
        };
        let e = input_alone(&s, None).await.err().unwrap();
        assert!(
            format!("{e:#}").contains("/nonexistent/kubeconfig"),
            "{e:#}"
        );
        let e = input_alone(&s, Some("/nonexistent/manifests".into()))
            .await
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("/nonexistent/manifests"), "{e:#}");
    }
}
