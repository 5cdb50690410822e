//! Prometheus metrics: upstream's `kubeproxy_*` names plus `kube_ipvs_*`, rendered as text for /metrics.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::discovery::v1::EndpointSlice;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;

/// Set by the EndpointSlice controller on every slice change it triggers.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Content type of `Metrics::encode`: the Prometheus text format, what
/// upstream's handler serves unless the scraper asks for OpenMetrics.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of `Metrics::encode_openmetrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum TrafficPolicy {
    internal,
    external,
}

/// `ip_family` and `traffic_policy` of the no-local-endpoints gauge, as upstream.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrafficPolicyLabel {
    pub ip_family: &'static str,
    pub traffic_policy: TrafficPolicy,
}

/// `ip_family` ("IPv4", "IPv6") of the per-family sync metrics: upstream
/// runs one proxier per family and labels their metrics so (1.30+).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpFamilyLabel {
    pub ip_family: &'static str,
}

/// `code` of the health endpoints' answer counters ("200", "503").
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

type SyncHistogram = Family<IpFamilyLabel, Histogram, fn() -> Histogram>;

/// Upstream SyncProxyRulesLatency: ExponentialBuckets(0.001, 2, 15).
fn sync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// `reason` of `kube_ipvs_service_failures_total` (see `FailureReason::label`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// `resource` of the watch metrics: services, endpointslices or nodes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: &'static str,
}

/// `resource` and `reason` of `kube_ipvs_watch_errors_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchErrorLabel {
    pub resource: &'static str,
    pub reason: &'static str,
}

type GaugeF64 = Gauge<f64, AtomicU64>;
type CounterF64 = Counter<f64, AtomicU64>;

/// `part` of `kube_ipvs_verification_read_seconds_total`: ipvs, sets,
/// addresses or iptables.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabel {
    pub part: &'static str,
}

/// All metrics of the proxy. Cheap atomics; share it behind an `Arc`.
/// Counters are registered without `_total`: the encoder appends it.
pub struct Metrics {
    registry: Registry,
    /// The families served; the per-family metrics are set for each (one
    /// sync programs them all, so they share its duration and times).
    families: std::sync::RwLock<Vec<&'static str>>,
    pub sync_duration: SyncHistogram,
    pub last_sync_timestamp: Family<IpFamilyLabel, GaugeF64>,
    pub last_queued_timestamp: Family<IpFamilyLabel, GaugeF64>,
    pub proxy_healthz_total: Family<CodeLabel, Counter>,
    pub proxy_livez_total: Family<CodeLabel, Counter>,
    /// Labelled by the family of the slice whose change it measures, as
    /// each of upstream's family proxiers observes its own slices.
    pub network_programming_duration: Family<IpFamilyLabel, Histogram, fn() -> Histogram>,
    pub endpoint_changes_total: Counter,
    pub service_changes_total: Counter,
    pub endpoint_changes_pending: Gauge,
    pub service_changes_pending: Gauge,
    pub no_local_endpoints: Family<TrafficPolicyLabel, Gauge>,
    pub iptables_restore_failures_total: Counter,
    pub netlink_operations_total: Counter,
    pub netlink_batches_total: Counter,
    pub drift_repairs_total: Counter,
    pub draining_real_servers: Gauge,
    pub last_verification_timestamp: GaugeF64,
    pub verification_read_seconds_total: Family<PartLabel, CounterF64>,
    pub verification_cpu_seconds_total: CounterF64,
    pub service_failures_total: Family<ReasonLabel, Counter>,
    pub failing_services: Gauge,
    pub held_lists_total: Counter,
    pub watch_bookmarks_total: Family<ResourceLabel, Counter>,
    pub watch_errors_total: Family<WatchErrorLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Upstream NetworkProgrammingLatency buckets: 0.25 s, 0.5 s, 1..59 s,
/// 60..115 s by 5, 2..5 min by 30 s.
fn network_programming_buckets() -> impl Iterator<Item = f64> {
    linear_buckets(0.25, 0.25, 2)
        .chain(linear_buckets(1.0, 1.0, 59))
        .chain(linear_buckets(60.0, 5.0, 12))
        .chain(linear_buckets(120.0, 30.0, 7))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            families: std::sync::RwLock::new(Vec::new()),
            sync_duration: Family::new_with_constructor(sync_histogram),
            last_sync_timestamp: Family::default(),
            last_queued_timestamp: Family::default(),
            proxy_healthz_total: Family::default(),
            proxy_livez_total: Family::default(),
            network_programming_duration: Family::new_with_constructor(|| {
                Histogram::new(network_programming_buckets())
            }),
            endpoint_changes_total: Counter::default(),
            service_changes_total: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
            service_changes_pending: Gauge::default(),
            no_local_endpoints: Family::default(),
            iptables_restore_failures_total: Counter::default(),
            netlink_operations_total: Counter::default(),
            netlink_batches_total: Counter::default(),
            drift_repairs_total: Counter::default(),
            draining_real_servers: Gauge::default(),
            last_verification_timestamp: GaugeF64::default(),
            verification_read_seconds_total: Family::default(),
            verification_cpu_seconds_total: CounterF64::default(),
            service_failures_total: Family::default(),
            failing_services: Gauge::default(),
            held_lists_total: Counter::default(),
            watch_bookmarks_total: Family::default(),
            watch_errors_total: Family::default(),
        };
        let r = &mut registry;
        r.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync_timestamp.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued_timestamp.clone(),
        );
        r.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            m.proxy_healthz_total.clone(),
        );
        r.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            m.proxy_livez_total.clone(),
        );
        r.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.network_programming_duration.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            m.endpoint_changes_total.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes_total.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules Endpoint changes",
            m.endpoint_changes_pending.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_changes_pending.clone(),
        );
        // A gauge despite the name, as upstream.
        r.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of services with a Local traffic policy and no endpoints",
            m.no_local_endpoints.clone(),
        );
        r.register(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            m.iptables_restore_failures_total.clone(),
        );
        r.register(
            "kube_ipvs_netlink_operations",
            "IPVS, ipset and address operations sent over netlink",
            m.netlink_operations_total.clone(),
        );
        r.register(
            "kube_ipvs_netlink_batches",
            "Netlink batches (sendmsg calls) sent",
            m.netlink_batches_total.clone(),
        );
        r.register(
            "kube_ipvs_drift_repairs",
            "Kernel objects found different from the applied state and repaired",
            m.drift_repairs_total.clone(),
        );
        r.register(
            "kube_ipvs_draining_real_servers",
            "Real servers at weight 0 waiting for their connections to end",
            m.draining_real_servers.clone(),
        );
        r.register(
            "kube_ipvs_last_verification_timestamp_seconds",
            "The last time the kernel state was verified against the applied state",
            m.last_verification_timestamp.clone(),
        );
        r.register(
            "kube_ipvs_verification_read_seconds",
            "Time the kernel reads of the verifications took, by part (ipvs, sets, addresses, iptables)",
            m.verification_read_seconds_total.clone(),
        );
        r.register(
            "kube_ipvs_verification_cpu_seconds",
            "CPU time of the verifications (the syncing thread's, plus the iptables-save and iptables-restore they ran)",
            m.verification_cpu_seconds_total.clone(),
        );
        r.register(
            "kube_ipvs_service_failures",
            "Services the kernel refused to program (one per Service and attempt), by reason",
            m.service_failures_total.clone(),
        );
        r.register(
            "kube_ipvs_failing_services",
            "Services refused by the kernel and waiting for a retry with backoff",
            m.failing_services.clone(),
        );
        r.register(
            "kube_ipvs_held_lists",
            "Complete Service lists held because they lacked default/kubernetes or would delete more than half of the Services",
            m.held_lists_total.clone(),
        );
        r.register(
            "kube_ipvs_watch_bookmarks",
            "Bookmarks received on the API watches, by resource (proof the API server's watch cache keeps them current)",
            m.watch_bookmarks_total.clone(),
        );
        r.register(
            "kube_ipvs_watch_errors",
            "API watch and list failures, by resource and reason (expired is 410 Gone, followed by a re-list)",
            m.watch_errors_total.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The exposition in OpenMetrics text (ends with `# EOF`).
    pub fn encode_openmetrics(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }

    /// The exposition in the Prometheus text format 0.0.4.
    pub fn encode(&self) -> String {
        to_prometheus_text(&self.encode_openmetrics())
    }

    /// `encode_openmetrics` or `encode` as the scraper's Accept header asks,
    /// with the content type to send.
    pub fn negotiate(&self, accept: Option<&str>) -> (&'static str, String) {
        if wants_openmetrics(accept) {
            (OPENMETRICS_CONTENT_TYPE, self.encode_openmetrics())
        } else {
            (CONTENT_TYPE, self.encode())
        }
    }

    /// A sync finished successfully at `now` after `took`.
    /// The families served ("IPv4", "IPv6"), before the first sync.
    pub fn set_families(&self, families: Vec<&'static str>) {
        *self.families.write().unwrap_or_else(|e| e.into_inner()) = families;
    }

    fn families(&self) -> Vec<&'static str> {
        self.families
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn sync_done(&self, took: Duration, now: SystemTime) {
        for ip_family in self.families() {
            let l = IpFamilyLabel { ip_family };
            self.sync_duration
                .get_or_create(&l)
                .observe(took.as_secs_f64());
            self.last_sync_timestamp
                .get_or_create(&l)
                .set(unix_seconds(now));
        }
    }

    /// A change was queued (upstream sets this when a run is requested).
    /// `n` bookmarks arrived on the watch of `resource`.
    pub fn watch_bookmark(&self, resource: &'static str, n: u64) {
        self.watch_bookmarks_total
            .get_or_create(&ResourceLabel { resource })
            .inc_by(n);
    }

    /// A watch of `resource` failed for `reason` (`watch::observe::error_reason`).
    pub fn watch_error(&self, resource: &'static str, reason: &'static str) {
        self.watch_errors_total
            .get_or_create(&WatchErrorLabel { resource, reason })
            .inc();
    }

    pub fn queued(&self, now: SystemTime) {
        for ip_family in self.families() {
            self.last_queued_timestamp
                .get_or_create(&IpFamilyLabel { ip_family })
                .set(unix_seconds(now));
        }
    }

    /// One answer of /healthz (`livez` false) or /livez, by status code.
    pub fn health_answer(&self, livez: bool, code: u16) {
        let code = if code == 200 { "200" } else { "503" };
        let f = if livez {
            &self.proxy_livez_total
        } else {
            &self.proxy_healthz_total
        };
        f.get_or_create(&CodeLabel { code }).inc();
    }

    pub fn set_pending(&self, services: usize, endpoints: usize) {
        self.service_changes_pending.set(services as i64);
        self.endpoint_changes_pending.set(endpoints as i64);
    }

    /// Services per family with a Local (internal, external) traffic policy
    /// and no local endpoint.
    pub fn set_no_local_endpoints(&self, by_family: &[(&'static str, usize, usize)]) {
        for &(ip_family, internal, external) in by_family {
            for (p, n) in [
                (TrafficPolicy::internal, internal),
                (TrafficPolicy::external, external),
            ] {
                self.no_local_endpoints
                    .get_or_create(&TrafficPolicyLabel {
                        ip_family,
                        traffic_policy: p,
                    })
                    .set(n as i64);
            }
        }
    }

    /// Observes the time from a slice's trigger to `now`, the moment its change
    /// is programmed. Like upstream, trigger times before `start` (a restart
    /// replaying old slices) or in the future (clock skew) are ignored.
    pub fn observe_network_programming(
        &self,
        trigger: SystemTime,
        ip_family: &'static str,
        now: SystemTime,
        start: SystemTime,
    ) {
        if trigger < start {
            return;
        }
        if let Ok(d) = now.duration_since(trigger) {
            self.network_programming_duration
                .get_or_create(&IpFamilyLabel { ip_family })
                .observe(d.as_secs_f64());
        }
    }
}

/// Rewrites prometheus-client's OpenMetrics text (the only format it writes)
/// as Prometheus text 0.0.4: a counter's HELP and TYPE name its `_total`
/// sample, and there is no `# UNIT` or `# EOF`. Samples are the same.
fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether an Accept header prefers OpenMetrics over the text format, as
/// Prometheus' content negotiation: the supported media range with the
/// highest q wins, the earlier on a tie; no header means text.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let mut best: Option<(f32, bool)> = None;
    for range in accept.unwrap_or_default().split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(Some(1.0), |(_, v)| v.trim().parse::<f32>().ok());
        let Some(q) = q.filter(|q| *q > 0.0) else {
            continue;
        };
        let openmetrics = match media.as_str() {
            "application/openmetrics-text" => true,
            "text/plain" | "text/*" | "*/*" => false,
            _ => continue,
        };
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, openmetrics));
        }
    }
    best.is_some_and(|(_, om)| om)
}

/// Seconds since the Unix epoch (0 for times before it).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The slice's `last-change-trigger-time` annotation (RFC 3339), if present and valid.
pub fn last_change_trigger_time(slice: &EndpointSlice) -> Option<SystemTime> {
    let v = slice
        .metadata
        .annotations
        .as_ref()?
        .get(LAST_CHANGE_TRIGGER_TIME)?;
    let ts: k8s_openapi::jiff::Timestamp = v.parse().ok()?;
    Some(SystemTime::from(ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn exposition_has_upstream_and_own_names() {
        let m = Metrics::new();
        m.set_families(vec!["IPv4"]);
        m.sync_done(
            Duration::from_millis(3),
            UNIX_EPOCH + Duration::from_secs(1000),
        );
        m.queued(UNIX_EPOCH + Duration::from_secs(999));
        m.endpoint_changes_total.inc();
        m.service_changes_total.inc_by(2);
        m.set_pending(4, 5);
        m.set_no_local_endpoints(&[("IPv4", 1, 2)]);
        m.netlink_operations_total.inc_by(10);
        m.verification_read_seconds_total
            .get_or_create(&PartLabel { part: "sets" })
            .inc_by(0.5);
        m.verification_cpu_seconds_total.inc_by(1.5);
        let text = m.encode_openmetrics();
        for name in [
            // The client puts `le` first; label order means nothing to Prometheus.
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\",ip_family=\"IPv4\"} 0",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\",ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_duration_seconds_count{ip_family=\"IPv4\"} 1",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"} 1000.0",
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family=\"IPv4\"} 999.0",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 1",
            "kube_ipvs_verification_read_seconds_total{part=\"sets\"} 0.5",
            "kube_ipvs_verification_cpu_seconds_total 1.5",
            "kubeproxy_sync_proxy_rules_service_changes_total 2",
            "kubeproxy_sync_proxy_rules_service_changes_pending 4",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending 5",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"} 1",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"} 2",
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total 0",
            "kube_ipvs_netlink_operations_total 10",
            "kube_ipvs_netlink_batches_total 0",
            "kube_ipvs_drift_repairs_total 0",
            "kube_ipvs_draining_real_servers 0",
            "kube_ipvs_last_verification_timestamp_seconds 0",
            "# EOF",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
        assert!(!text.contains("_total_total"));
    }

    #[test]
    fn prometheus_text_is_the_default_format() {
        let m = Metrics::new();
        m.endpoint_changes_total.inc();
        m.set_families(vec!["IPv4", "IPv6"]);
        m.set_no_local_endpoints(&[("IPv6", 0, 3)]);
        m.sync_done(Duration::from_millis(3), UNIX_EPOCH);
        let text = m.encode();
        let om = m.encode_openmetrics();
        for line in [
            "# HELP kubeproxy_sync_proxy_rules_endpoint_changes_total Cumulative proxy rules Endpoint changes.",
            "# TYPE kubeproxy_sync_proxy_rules_endpoint_changes_total counter",
            "# TYPE kube_ipvs_netlink_operations_total counter",
            "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge",
            "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram",
            "# TYPE kubeproxy_sync_proxy_rules_no_local_endpoints_total gauge",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv6\",traffic_policy=\"external\"} 3",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(
            !text.contains("# TYPE kubeproxy_sync_proxy_rules_endpoint_changes counter"),
            "{text}"
        );
        // OpenMetrics names the counter family without _total and ends with # EOF.
        assert!(om.contains("# TYPE kubeproxy_sync_proxy_rules_endpoint_changes counter\n"));
        assert_eq!(om.lines().last(), Some("# EOF"));
        // The samples are the same in both.
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(&text), samples(&om));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("# TYPE ")).count(),
            om.lines().filter(|l| l.starts_with("# TYPE ")).count()
        );
    }

    #[test]
    fn accept_header_negotiation() {
        // What Prometheus 2.x/3.x sends by default.
        let prom = "application/openmetrics-text;version=1.0.0;q=0.5,\
                    application/openmetrics-text;version=0.0.1;q=0.4,\
                    text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert!(wants_openmetrics(Some(prom)));
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text; version=1.0.0"
        )));
        for accept in [
            None,
            Some(""),
            Some("*/*"),
            Some("text/plain;version=0.0.4"),
            Some("application/openmetrics-text;q=0"),
            Some("application/openmetrics-text;q=0.1, text/plain;q=0.5"),
            Some("text/plain, application/openmetrics-text"),
            Some("application/json"),
            Some("application/openmetrics-text;q=bogus"),
        ] {
            assert!(!wants_openmetrics(accept), "{accept:?}");
        }
        let m = Metrics::new();
        assert_eq!(m.negotiate(Some(prom)).0, OPENMETRICS_CONTENT_TYPE);
        assert_eq!(m.negotiate(None).0, CONTENT_TYPE);
        assert!(m.negotiate(None).0.starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn network_programming_buckets_match_upstream() {
        let b: Vec<f64> = network_programming_buckets().collect();
        assert_eq!(b.len(), 2 + 59 + 12 + 7);
        assert_eq!(&b[..4], &[0.25, 0.5, 1.0, 2.0]);
        assert_eq!(b[61], 60.0);
        assert_eq!(*b.last().unwrap(), 300.0);
    }

    fn slice_with(annotation: Option<&str>) -> EndpointSlice {
        let mut s = EndpointSlice::default();
        if let Some(a) = annotation {
            s.metadata.annotations = Some(BTreeMap::from([(
                LAST_CHANGE_TRIGGER_TIME.to_string(),
                a.to_string(),
            )]));
        }
        s
    }

    #[test]
    fn trigger_time_annotation() {
        let t = last_change_trigger_time(&slice_with(Some("2024-05-01T10:00:00Z"))).unwrap();
        assert_eq!(unix_seconds(t), 1_714_557_600.0);
        let t = last_change_trigger_time(&slice_with(Some("2024-05-01T10:00:00.5Z"))).unwrap();
        assert_eq!(unix_seconds(t), 1_714_557_600.5);
        assert_eq!(last_change_trigger_time(&slice_with(None)), None);
        assert_eq!(
            last_change_trigger_time(&slice_with(Some("yesterday"))),
            None
        );
        assert_eq!(last_change_trigger_time(&slice_with(Some(""))), None);
    }

    #[test]
    fn network_programming_observation() {
        let m = Metrics::new();
        let start = UNIX_EPOCH + Duration::from_secs(100);
        let now = UNIX_EPOCH + Duration::from_secs(200);
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        m.observe_network_programming(at(199), "IPv4", now, start);
        m.observe_network_programming(at(197), "IPv6", now, start);
        m.observe_network_programming(at(50), "IPv4", now, start);
        m.observe_network_programming(at(300), "IPv4", now, start);
        let text = m.encode();
        // Labelled by family, as upstream's (1.30+).
        for sample in [
            "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"} 1",
            "kubeproxy_network_programming_duration_seconds_sum{ip_family=\"IPv4\"} 1.0",
            "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv6\"} 1",
            "kubeproxy_network_programming_duration_seconds_sum{ip_family=\"IPv6\"} 3.0",
        ] {
            assert!(text.contains(sample), "{sample} in\n{text}");
        }
    }
}
