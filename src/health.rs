//! HTTP endpoints: /metrics, /healthz and /livez (upstream ProxyHealthServer) and per-Service health-check node ports (ServiceHealthServer).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use ipvs_netlink::ipvs::Family;
use k8s_openapi::api::core::v1::Node;
use tokio::net::{TcpListener, TcpSocket};

pub use crate::http::HttpServer;
use crate::http::{HEALTH_CHECK_PORT_LIMITS, HEALTHZ_LIMITS, METRICS_LIMITS, serve};
use crate::metrics::Metrics;
use crate::model::config::{NodePortAddresses, ProxyConfig};
use crate::model::contribution::HealthCheck;
use crate::model::input::SvcId;
use crate::model::node::NodeInfo;

/// Upstream default bind addresses.
pub const DEFAULT_HEALTHZ_BIND: &str = "0.0.0.0:10256";
pub const DEFAULT_METRICS_BIND: &str = "127.0.0.1:10249";
/// Taint the cluster autoscaler puts on a node it is about to remove.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

#[derive(Debug, Default)]
struct HealthState {
    last_updated: Option<SystemTime>,
    oldest_queued: Option<SystemTime>,
    node_eligible: bool,
    /// When the sync loop started: upstream's proxiers mark themselves
    /// updated then, "in case Sync() never succeeds" (ipvs/proxier.go
    /// SyncLoop), so `status` has their families from the start.
    started: Option<SystemTime>,
    /// The families served ("IPv4", "IPv6"): upstream's `status` has one
    /// entry per family proxier that has synced.
    families: Vec<&'static str>,
}

/// What the sync loop reports: changes queued, rules applied. Upstream
/// ProxyHealthServer: healthy while nothing is queued, or while the oldest
/// queued change is younger than the timeout (2 × syncPeriod).
pub struct ProxyHealth {
    state: Mutex<HealthState>,
    timeout: Duration,
    clock: Clock,
    /// Where /healthz and /livez answers are counted (upstream's
    /// `kubeproxy_proxy_healthz_total` / `_livez_total`).
    answers: std::sync::OnceLock<Arc<crate::metrics::Metrics>>,
}

impl std::fmt::Debug for ProxyHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyHealth")
            .field("state", &self.state)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One answer of the health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthStatus {
    pub healthy: bool,
    pub last_updated: Option<SystemTime>,
    pub current_time: SystemTime,
    pub node_eligible: bool,
    /// The sync loop's start (see `HealthState::started`).
    pub started: Option<SystemTime>,
}

impl ProxyHealth {
    pub fn new(sync_period: Duration) -> Self {
        Self::with_clock(sync_period, Arc::new(SystemTime::now))
    }

    pub fn with_clock(sync_period: Duration, clock: Clock) -> Self {
        ProxyHealth {
            state: Mutex::new(HealthState {
                node_eligible: true,
                ..Default::default()
            }),
            timeout: sync_period.saturating_mul(2),
            clock,
            answers: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthState> {
        // A panic elsewhere must not take the health endpoint down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A change was queued; only the oldest unapplied one counts.
    pub fn queued_update(&self) {
        let now = (self.clock)();
        self.lock().oldest_queued.get_or_insert(now);
    }

    /// Rules were applied: everything queued so far is done.
    pub fn updated(&self) {
        let now = (self.clock)();
        let mut s = self.lock();
        s.last_updated = Some(now);
        s.oldest_queued = None;
    }

    /// The sync loop starts: the families count as updated now, as
    /// upstream's do (the first sync has not succeeded, so not ready).
    pub fn loop_started(&self) {
        let now = (self.clock)();
        self.lock().started = Some(now);
    }

    /// Counts every /healthz and /livez answer in `m`, by status code.
    pub fn count_answers_in(&self, m: Arc<crate::metrics::Metrics>) {
        let _ = self.answers.set(m);
    }

    /// The families this proxy serves, for the per-family `status` of the
    /// health answers.
    pub fn set_families(&self, families: Vec<&'static str>) {
        self.lock().families = families;
    }

    /// /healthz fails (but /livez does not) while the node is being deleted,
    /// so load balancers drain it first (upstream KEP-3836).
    pub fn set_node_eligible(&self, eligible: bool) {
        self.lock().node_eligible = eligible;
    }

    /// Ready for the pod's readinessProbe (`/readyz`): a first sync has
    /// succeeded and the proxy is healthy. Upstream has no such endpoint;
    /// its /healthz is 200 while starting up, before any rule is written.
    pub fn ready(&self) -> bool {
        let s = self.status();
        s.healthy && s.last_updated.is_some()
    }

    pub fn status(&self) -> HealthStatus {
        let now = (self.clock)();
        let s = self.lock();
        let healthy = match s.oldest_queued {
            None => true,
            Some(q) => now.duration_since(q).unwrap_or_default() < self.timeout,
        };
        HealthStatus {
            healthy,
            last_updated: s.last_updated,
            current_time: now,
            node_eligible: s.node_eligible,
            started: s.started,
        }
    }
}

/// Whether a Node should receive load-balancer traffic: not being deleted and
/// not tainted for removal by the cluster autoscaler.
pub fn node_eligible(node: &Node) -> bool {
    if node.metadata.deletion_timestamp.is_some() {
        return false;
    }
    !node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT))
}

/// RFC 3339 in UTC; a time that was never set renders as Go's zero time.
fn rfc3339(t: Option<SystemTime>) -> String {
    t.and_then(|t| k8s_openapi::jiff::Timestamp::try_from(t).ok())
        .map(|ts| ts.to_string())
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string())
}

type Resp = Response<Full<Bytes>>;

fn response(status: StatusCode, content_type: &'static str, body: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn not_found() -> Resp {
    response(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found\n".into(),
    )
}

/// Upstream's ProxyHealth JSON (pkg/proxy/healthcheck/proxy_health.go):
/// `lastUpdated` is the current time while healthy (kept from older
/// releases, where it was the last sync loop run), `healthy` leaves node
/// eligibility out, and `status` has an entry per family once it synced.
fn health_response(health: &ProxyHealth, with_node: bool) -> Resp {
    let s = health.status();
    let ok = s.healthy && (!with_node || s.node_eligible);
    let last = if ok {
        Some(s.current_time)
    } else {
        s.last_updated
    };
    let mut body = serde_json::json!({
        "lastUpdated": rfc3339(last),
        "currentTime": rfc3339(Some(s.current_time)),
        "healthy": s.healthy,
    });
    if with_node {
        body["nodeEligible"] = s.node_eligible.into();
    }
    let family_updated = s.last_updated.or(s.started);
    if family_updated.is_some() {
        let families = health.lock().families.clone();
        let status: serde_json::Map<String, serde_json::Value> = families
            .into_iter()
            .map(|f| {
                (
                    f.to_string(),
                    serde_json::json!({"lastUpdated": rfc3339(family_updated), "healthy": s.healthy}),
                )
            })
            .collect();
        if !status.is_empty() {
            body["status"] = status.into();
        }
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if let Some(m) = health.answers.get() {
        m.health_answer(!with_node, status.as_u16());
    }
    response(status, "application/json", body.to_string())
}

/// 200 once the first sync succeeded (and while healthy), else 503.
fn ready_response(health: &ProxyHealth) -> Resp {
    let (status, body) = if health.ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no successful sync yet, or the last one is overdue\n",
        )
    };
    response(status, "text/plain; charset=utf-8", body.into())
}

/// `/healthz` (node eligibility included), `/livez` and `/readyz` on healthzBindAddress.
pub async fn healthz_server(addr: SocketAddr, health: Arc<ProxyHealth>) -> io::Result<HttpServer> {
    let listener = bind(addr)?;
    serve(listener, HEALTHZ_LIMITS, move |req| {
        match req.uri().path() {
            "/healthz" => health_response(&health, true),
            "/livez" => health_response(&health, false),
            "/readyz" => ready_response(&health),
            _ => not_found(),
        }
    })
}

/// `/metrics` (plus `/healthz`, `/livez` and `/proxyMode`, as upstream's
/// metrics server) on metricsBindAddress.
pub async fn metrics_server(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<ProxyHealth>,
) -> io::Result<HttpServer> {
    let listener = TcpListener::bind(addr).await?;
    serve(listener, METRICS_LIMITS, move |req| {
        match req.uri().path() {
            "/metrics" => {
                let accept = req
                    .headers()
                    .get(hyper::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let (content_type, body) = metrics.negotiate(accept);
                response(StatusCode::OK, content_type, body)
            }
            "/healthz" => health_response(&health, true),
            "/livez" => health_response(&health, false),
            "/proxyMode" => response(StatusCode::OK, "text/plain; charset=utf-8", "ipvs".into()),
            _ => not_found(),
        }
    })
}

/// The Service a health-check node port answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceEntry {
    id: SvcId,
    local_endpoints: usize,
}

/// Where health-check node ports listen, as upstream: on the
/// nodePortAddresses (`primary`: the node's primary IPs; CIDRs: the node's
/// addresses inside them), or on every address (0.0.0.0 and ::) when unset.
pub fn health_check_addresses(cfg: &ProxyConfig, node: &NodeInfo) -> Vec<IpAddr> {
    if cfg.node_port_addresses == NodePortAddresses::All {
        return vec![Ipv4Addr::UNSPECIFIED.into(), Ipv6Addr::UNSPECIFIED.into()];
    }
    [Family::Inet, Family::Inet6]
        .into_iter()
        .filter(|f| cfg.serves(*f))
        .flat_map(|f| node.node_port_ips(cfg, f))
        .collect()
}

/// Accept queue length of the healthz and health-check listeners.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr`. An IPv6 socket is IPv6-only, so that `::`
/// and `0.0.0.0` can both hold the same port.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        let s = TcpSocket::new_v6()?;
        nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::Ipv6V6Only, &true)
            .map_err(io::Error::from)?;
        s
    };
    sock.set_reuseaddr(true)?;
    sock.bind(addr)?;
    // A flood's reconnects arrive in bursts; a SYN dropped on a full accept
    // queue costs a prober a 1 s retransmit. The kernel caps this at
    // net.core.somaxconn (4096 by default since Linux 5.4).
    sock.listen(LISTEN_BACKLOG)
}

/// Listeners of the health-check node ports, and the addresses they use.
#[derive(Debug, Default)]
struct Listeners {
    bind: Vec<IpAddr>,
    by_port: HashMap<u16, Vec<HttpServer>>,
}

/// One listener per healthCheckNodePort (Services with
/// externalTrafficPolicy Local) and address; load balancers probe it to find
/// the nodes with local endpoints. Upstream answers 200 when the Service has
/// local endpoints and the proxy itself is healthy, else 503.
#[derive(Debug)]
pub struct ServiceHealthServer {
    proxy: Arc<ProxyHealth>,
    services: Arc<RwLock<HashMap<u16, ServiceEntry>>>,
    /// Async mutex: `sync` holds it across binds and closes.
    listeners: tokio::sync::Mutex<Listeners>,
}

impl ServiceHealthServer {
    pub fn new(proxy: Arc<ProxyHealth>) -> Self {
        ServiceHealthServer {
            proxy,
            services: Arc::default(),
            listeners: tokio::sync::Mutex::default(),
        }
    }

    /// Ports currently listened on.
    pub async fn ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .listeners
            .lock()
            .await
            .by_port
            .keys()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    /// Makes the listeners match `checks` (the proxier's `health_checks()`)
    /// on the addresses `bind` (`health_check_addresses`): counts are updated
    /// in place, new ports opened, vanished ports closed, and everything
    /// reopened when the addresses change. A port that cannot be bound on
    /// any address is logged and tried again next sync.
    pub async fn sync(&self, bind: &[IpAddr], checks: &HashMap<SvcId, HealthCheck>) {
        // Sorted so that two Services claiming one port resolve the same way
        // every time (the API server prevents it; a stale view may not).
        let by_id: BTreeMap<&SvcId, &HealthCheck> = checks.iter().collect();
        let mut want: HashMap<u16, ServiceEntry> = HashMap::new();
        for (id, hc) in by_id {
            if hc.node_port == 0 {
                continue;
            }
            want.entry(hc.node_port).or_insert(ServiceEntry {
                id: id.clone(),
                local_endpoints: hc.local_endpoints,
            });
        }
        *self.services.write().unwrap_or_else(|e| e.into_inner()) = want.clone();
        let mut l = self.listeners.lock().await;
        let mut close: Vec<HttpServer> = Vec::new();
        if l.bind != bind {
            l.bind = bind.to_vec();
            close.extend(l.by_port.drain().flat_map(|(_, v)| v));
        }
        let gone: Vec<u16> = l
            .by_port
            .keys()
            .filter(|p| !want.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            close.extend(l.by_port.remove(&p).into_iter().flatten());
        }
        // Closed before binding: a rebind may reuse the same port.
        for srv in close {
            srv.close().await;
        }
        for &port in want.keys() {
            if l.by_port.contains_key(&port) {
                continue;
            }
            let mut servers = Vec::new();
            for ip in bind {
                match self.listen(SocketAddr::new(*ip, port)) {
                    Ok(s) => servers.push(s),
                    Err(e) => {
                        tracing::warn!(error = %e, ip = %ip, port, "cannot open health check node port")
                    }
                }
            }
            if !servers.is_empty() {
                l.by_port.insert(port, servers);
            }
        }
    }

    /// Connections open on all health-check node ports now.
    pub async fn open_connections(&self) -> usize {
        let l = self.listeners.lock().await;
        l.by_port
            .values()
            .flatten()
            .map(HttpServer::open_connections)
            .sum()
    }

    fn listen(&self, addr: SocketAddr) -> io::Result<HttpServer> {
        let listener = bind(addr)?;
        let services = self.services.clone();
        let proxy = self.proxy.clone();
        let port = addr.port();
        serve(listener, HEALTH_CHECK_PORT_LIMITS, move |_req| {
            let entry = services
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&port)
                .cloned();
            let Some(e) = entry else {
                return not_found();
            };
            let healthy = proxy.status().healthy;
            let (ns, name) = e.id.split_once('/').unwrap_or(("", &e.id));
            let body = serde_json::json!({
                "service": {"namespace": ns, "name": name},
                "localEndpoints": e.local_endpoints,
                "serviceProxyHealthy": healthy,
            });
            let status = if e.local_endpoints > 0 && healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let mut r = response(status, "application/json", body.to_string());
            r.headers_mut()
                .insert("x-load-balancing-endpoints", e.local_endpoints.into());
            r
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, Taint};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// GET over a fresh connection; returns (status, headers+body text, body).
    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        get_with(addr, path, "").await
    }

    /// `get` with extra header lines (each ending in \r\n).
    async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.unwrap();
        let status = buf[9..12].parse().unwrap();
        let body = buf.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, buf, body)
    }

    fn fake_clock() -> (Arc<Mutex<SystemTime>>, Clock) {
        let t = Arc::new(Mutex::new(
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        ));
        let c = t.clone();
        (t, Arc::new(move || *c.lock().unwrap()))
    }

    fn advance(t: &Mutex<SystemTime>, secs: u64) {
        *t.lock().unwrap() += Duration::from_secs(secs);
    }

    fn local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    #[test]
    fn health_semantics() {
        let (t, clock) = fake_clock();
        let h = ProxyHealth::with_clock(Duration::from_secs(30), clock);
        assert!(
            h.status().healthy,
            "healthy while starting up, nothing queued"
        );
        h.queued_update();
        advance(&t, 59);
        assert!(h.status().healthy);
        h.queued_update(); // the oldest queued change counts
        advance(&t, 1);
        assert!(!h.status().healthy, "queued 60 s = 2 × syncPeriod ago");
        h.updated();
        assert!(h.status().healthy);
        assert_eq!(h.status().last_updated, Some(*t.lock().unwrap()));
        advance(&t, 3600);
        assert!(h.status().healthy, "no queued change: healthy however old");
    }

    #[tokio::test]
    async fn healthz_and_livez_over_http() {
        let (t, clock) = fake_clock();
        let h = Arc::new(ProxyHealth::with_clock(Duration::from_secs(30), clock));
        let srv = healthz_server(local(), h.clone()).await.unwrap();
        let a = srv.local_addr();

        let (code, raw, body) = get(a, "/healthz").await;
        assert_eq!(code, 200, "{raw}");
        assert_eq!(
            get(a, "/readyz").await.0,
            503,
            "not ready before the first sync"
        );
        assert!(
            raw.to_ascii_lowercase()
                .contains("content-type: application/json")
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        // Upstream's fields: lastUpdated is "now" while healthy, and there is
        // no per-family status before a family has synced.
        assert_eq!(v["lastUpdated"], "2023-11-14T22:13:20Z");
        assert_eq!(v["currentTime"], "2023-11-14T22:13:20Z");
        assert_eq!(v["nodeEligible"], true);
        assert_eq!(v["healthy"], true);
        assert!(v.get("status").is_none(), "{v}");
        h.set_families(vec!["IPv4", "IPv6"]);
        h.loop_started();
        let v: serde_json::Value = serde_json::from_str(&get(a, "/livez").await.2).unwrap();
        assert_eq!(
            v["status"]["IPv4"]["lastUpdated"], "2023-11-14T22:13:20Z",
            "{v}"
        );
        assert_eq!(get(a, "/readyz").await.0, 503, "started is not synced");

        h.queued_update();
        advance(&t, 61);
        let (code, _, body) = get(a, "/healthz").await;
        assert_eq!(code, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["healthy"], false);
        assert_eq!(v["lastUpdated"], "0001-01-01T00:00:00Z", "never synced");
        assert_eq!(get(a, "/livez").await.0, 503);
        assert_eq!(get(a, "/readyz").await.0, 503);
        h.updated();
        assert_eq!(get(a, "/readyz").await.0, 200, "ready after a sync");
        let (code, _, body) = get(a, "/livez").await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["lastUpdated"], "2023-11-14T22:14:21Z");
        assert!(v.get("nodeEligible").is_none());
        assert_eq!(v["status"]["IPv6"]["healthy"], true);
        assert_eq!(v["status"]["IPv4"]["lastUpdated"], "2023-11-14T22:14:21Z");

        // A node being deleted fails /healthz only.
        h.set_node_eligible(false);
        assert_eq!(get(a, "/healthz").await.0, 503);
        assert_eq!(get(a, "/livez").await.0, 200);
        assert_eq!(get(a, "/nope").await.0, 404);
    }

    #[tokio::test]
    async fn metrics_over_http() {
        let m = Arc::new(Metrics::new());
        m.drift_repairs_total.inc();
        m.set_families(vec!["IPv4"]);
        m.sync_done(Duration::from_millis(2), SystemTime::now());
        let h = Arc::new(ProxyHealth::new(Duration::from_secs(30)));
        let srv = metrics_server(local(), m, h).await.unwrap();
        let (code, raw, body) = get(srv.local_addr(), "/metrics").await;
        assert_eq!(code, 200);
        // Prometheus text 0.0.4 unless OpenMetrics is asked for, as upstream.
        assert!(
            raw.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{raw}"
        );
        assert!(body.contains("# TYPE kube_ipvs_drift_repairs_total counter\n"));
        assert!(!body.contains("# EOF"), "{body}");
        assert!(body.contains("kube_ipvs_drift_repairs_total 1"), "{body}");
        let (code, raw, body) = get_with(
            srv.local_addr(),
            "/metrics",
            "Accept: application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3\r\n",
        )
        .await;
        assert_eq!(code, 200);
        assert!(
            raw.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{raw}"
        );
        assert!(body.contains("# TYPE kube_ipvs_drift_repairs counter\n"));
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(body.contains("kube_ipvs_drift_repairs_total 1"), "{body}");
        assert!(body.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket"));
        assert_eq!(get(srv.local_addr(), "/proxyMode").await.2, "ipvs");
        assert_eq!(get(srv.local_addr(), "/healthz").await.0, 200);
    }

    async fn free_port() -> u16 {
        TcpListener::bind(local())
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn hc(node_port: u16, local_endpoints: usize) -> HealthCheck {
        HealthCheck {
            node_port,
            local_endpoints,
        }
    }

    #[tokio::test]
    async fn service_health_node_ports() {
        let (t, clock) = fake_clock();
        let proxy = Arc::new(ProxyHealth::with_clock(Duration::from_secs(30), clock));
        let s = ServiceHealthServer::new(proxy.clone());
        let (p1, p2) = (free_port().await, free_port().await);
        let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let bind: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap()];

        let mut checks = HashMap::from([
            (SvcId::from("default/web"), hc(p1, 2)),
            (SvcId::from("kube-system/dns"), hc(p2, 0)),
        ]);
        s.sync(&bind, &checks).await;
        let mut want = vec![p1, p2];
        want.sort_unstable();
        assert_eq!(s.ports().await, want);

        let (code, raw, body) = get(addr(p1), "/").await;
        assert_eq!(code, 200, "{raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains("x-load-balancing-endpoints: 2")
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["service"]["namespace"], "default");
        assert_eq!(v["service"]["name"], "web");
        assert_eq!(v["localEndpoints"], 2);
        let (code, _, body) = get(addr(p2), "/anything").await;
        assert_eq!(code, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["service"]["name"], "dns");
        assert_eq!(v["localEndpoints"], 0);

        // Counts change in place; a port that vanished stops listening.
        checks.insert("kube-system/dns".into(), hc(p2, 1));
        checks.remove("default/web");
        s.sync(&bind, &checks).await;
        assert_eq!(s.ports().await, vec![p2]);
        assert_eq!(get(addr(p2), "/").await.0, 200);
        assert!(TcpStream::connect(addr(p1)).await.is_err());

        // An unhealthy proxy makes every service port fail.
        proxy.queued_update();
        advance(&t, 120);
        let (code, _, body) = get(addr(p2), "/").await;
        assert_eq!(code, 503);
        assert!(body.contains("\"serviceProxyHealthy\":false"));
    }

    /// Whether something accepts TCP connections on `addr`.
    async fn listening(addr: SocketAddr) -> bool {
        TcpStream::connect(addr).await.is_ok()
    }

    fn ipv6_loopback() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }

    #[tokio::test]
    async fn health_check_ports_bind_like_upstream() {
        let proxy = Arc::new(ProxyHealth::new(Duration::from_secs(30)));
        let s = ServiceHealthServer::new(proxy);
        let p = free_port().await;
        let checks = HashMap::from([(SvcId::from("default/web"), hc(p, 1))]);
        let at = |ip: &str| SocketAddr::new(ip.parse().unwrap(), p);

        // nodePortAddresses unset: every address, IPv4 and IPv6.
        let cfg = ProxyConfig::default();
        let all = health_check_addresses(&cfg, &crate::model::testutil::node());
        assert_eq!(all, vec![IpAddr::from([0u8; 4]), IpAddr::from([0u16; 8])]);
        s.sync(&all, &checks).await;
        assert_eq!(s.ports().await, vec![p]);
        let (code, _, body) = get(at("127.0.0.1"), "/").await;
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["localEndpoints"], 1);
        assert_eq!(v["serviceProxyHealthy"], true);
        assert!(listening(at("127.0.0.2")).await, "not on every address");
        if ipv6_loopback() {
            assert_eq!(get(at("::1"), "/").await.0, 200, "not on ::");
        }

        // Specific addresses: only those, and the switch rebinds the same port.
        s.sync(&["127.0.0.2".parse().unwrap()], &checks).await;
        assert_eq!(get(at("127.0.0.2"), "/").await.0, 200);
        assert!(!listening(at("127.0.0.1")).await, "still on 0.0.0.0");
        if ipv6_loopback() {
            assert!(!listening(at("::1")).await, "still on ::");
        }
        // And back to everything.
        s.sync(&all, &checks).await;
        assert_eq!(get(at("127.0.0.1"), "/").await.0, 200);
    }

    #[test]
    fn health_check_addresses_follow_node_port_addresses() {
        use crate::model::config::Cidr;
        let node = crate::model::testutil::node(); // 192.168.0.10, fd00:1::10
        let dual = |npa| ProxyConfig {
            families: vec![Family::Inet, Family::Inet6],
            node_port_addresses: npa,
            ..Default::default()
        };
        let ips = |v: &[&str]| -> Vec<IpAddr> { v.iter().map(|s| s.parse().unwrap()).collect() };
        assert_eq!(
            health_check_addresses(&dual(NodePortAddresses::Primary), &node),
            ips(&["192.168.0.10", "fd00:1::10"])
        );
        let cidr: Cidr = "192.168.0.0/16".parse().unwrap();
        assert_eq!(
            health_check_addresses(&dual(NodePortAddresses::Cidrs(vec![cidr])), &node),
            ips(&["192.168.0.10"])
        );
        let single = ProxyConfig {
            families: vec![Family::Inet],
            node_port_addresses: NodePortAddresses::Primary,
            ..Default::default()
        };
        assert_eq!(
            health_check_addresses(&single, &node),
            ips(&["192.168.0.10"])
        );
    }

    #[test]
    fn node_eligibility() {
        let mut n = Node::default();
        assert!(node_eligible(&n));
        n.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: TO_BE_DELETED_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert!(!node_eligible(&n));
        n.spec = None;
        n.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert!(!node_eligible(&n));
    }
}
