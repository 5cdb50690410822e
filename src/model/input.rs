//! Kubernetes objects → compact, validated inputs (invalid parts become warnings).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipvs_netlink::ipvs::{Family, Protocol, Scheduler, ServiceFlags};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;

use super::config::{Cidr, ProxyConfig};

/// `namespace/name` of a Service; cheap to clone, ordered for tie-breaks.
pub type SvcId = Arc<str>;

/// Services and slices carrying this label belong to another proxy.
pub const PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// EndpointSlice → Service link.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Per-Service scheduler override, e.g. `wrr`.
pub const SCHEDULER_ANNOTATION: &str = "kube-ipvs.io/scheduler";
/// Per-Service scheduler flags, e.g. `sh-port,sh-fallback`.
pub const SCHEDULER_FLAGS_ANNOTATION: &str = "kube-ipvs.io/scheduler-flags";
/// Default ClientIP affinity timeout (3 hours, as the API defaults it).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

pub fn svc_id(namespace: &str, name: &str) -> SvcId {
    Arc::from(format!("{namespace}/{name}"))
}

/// A Service's age: when two Services claim one virtual server, the older
/// keeps it (creationTimestamp, then uid), as the CVE-2020-8554 advice asks
/// for first-come ownership. A missing field sorts last (treated as newest),
/// so only Services without either fall back to their `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Seniority {
    pub created: Option<Timestamp>,
    pub uid: Option<Arc<str>>,
}

/// `None` after every `Some`.
fn present_first<T: Ord>(a: &Option<T>, b: &Option<T>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

impl Ord for Seniority {
    /// Older first.
    fn cmp(&self, other: &Self) -> Ordering {
        present_first(&self.created, &other.created)
            .then_with(|| present_first(&self.uid, &other.uid))
    }
}

impl PartialOrd for Seniority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Seniority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.created {
            Some(t) => write!(f, "created {t}"),
            None => f.write_str("no creationTimestamp"),
        }
    }
}

/// One Service port as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PortSpec {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
}

/// A Service the proxy programs, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInput {
    pub ports: Vec<PortSpec>,
    /// At most one per family, in spec order.
    pub cluster_ips: Vec<IpAddr>,
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer ingress IPs (not ipMode Proxy).
    pub lb_ips: Vec<IpAddr>,
    pub lb_source_ranges: Vec<Cidr>,
    /// externalTrafficPolicy Local on an externally reachable Service.
    pub external_local: bool,
    pub internal_local: bool,
    pub health_check_node_port: Option<u16>,
    /// ClientIP affinity timeout in seconds.
    pub affinity_timeout: Option<u32>,
    pub scheduler: Scheduler,
    pub sched_flags: ServiceFlags,
    pub warnings: Vec<String>,
    /// creationTimestamp and uid: who wins a conflict.
    pub seniority: Seniority,
}

/// Result of reading a Service.
// Not boxed: `Proxied` is the common case and is moved into an `Arc` at
// once; a box would add an allocation per Service read.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedService {
    /// Not ours to program (headless, ExternalName, other proxy, no cluster IP).
    Ignored(&'static str),
    Proxied(ServiceInput),
}

fn parse_protocol(p: Option<&str>) -> Option<Protocol> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Protocol::Tcp),
        "UDP" => Some(Protocol::Udp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// Scheduler names we accept in the annotation (the kernel's in-tree set).
fn parse_scheduler(name: &str) -> Option<Scheduler> {
    match Scheduler::from_name(name) {
        Scheduler::Other(n) if n == "twos" => Some(Scheduler::Other(n)),
        Scheduler::Other(_) => None,
        s => Some(s),
    }
}

/// Parses `sh-port,sh-fallback`-style flags; they must belong to the scheduler.
fn parse_sched_flags(s: &str, sched: &Scheduler) -> Result<ServiceFlags, String> {
    let mut flags = ServiceFlags::empty();
    for tok in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (owner, flag) = match tok {
            "sh-fallback" => (Some(Scheduler::SourceHashing), ServiceFlags::SH_FALLBACK),
            "sh-port" => (Some(Scheduler::SourceHashing), ServiceFlags::SH_PORT),
            "mh-fallback" => (Some(Scheduler::Maglev), ServiceFlags::MH_FALLBACK),
            "mh-port" => (Some(Scheduler::Maglev), ServiceFlags::MH_PORT),
            "flag-1" => (None, ServiceFlags::SCHED1),
            "flag-2" => (None, ServiceFlags::SCHED2),
            "flag-3" => (None, ServiceFlags::SCHED3),
            other => return Err(format!("unknown scheduler flag {other:?}")),
        };
        if let Some(owner) = owner
            && &owner != sched
        {
            return Err(format!(
                "scheduler flag {tok:?} needs scheduler {owner}, not {sched}"
            ));
        }
        flags.insert(flag);
    }
    Ok(flags)
}

/// Flags a scheduler gets unless annotated otherwise. For mh: mh-port, as
/// upstream sets, so that sources are hashed with their port; and
/// mh-fallback, which upstream does not set. mh keeps a real server at weight
/// 0 (draining: a terminating endpoint, or a removed one with connections) in
/// its lookup table (ip_vs_mh.c builds it from `last_weight`, so draining
/// moves no other flow), and without mh-fallback a new flow hashed to it
/// finds no destination and is refused (kubernetes #138688); with it the
/// flow goes to the next server of its preference list
/// (tests/kernel_maglev.rs shows both on every kernel of the matrix).
fn default_flags(sched: &Scheduler) -> ServiceFlags {
    if *sched == Scheduler::Maglev {
        ServiceFlags::MH_PORT | ServiceFlags::MH_FALLBACK
    } else {
        ServiceFlags::empty()
    }
}

/// The Service on the node's default scheduler, because the one it asks for
/// is not available on this node (its module is missing: the kernel answers
/// ENOENT). Its scheduler flags belong to the missing scheduler, so they go too.
pub fn with_default_scheduler(svc: &ServiceInput, cfg: &ProxyConfig) -> ServiceInput {
    let mut s = svc.clone();
    s.warnings.push(format!(
        "scheduler {} is not available on this node (the kernel has no ip_vs_{} module); using the node's default scheduler {} until kube-ipvs restarts",
        svc.scheduler, svc.scheduler, cfg.scheduler
    ));
    s.scheduler = cfg.scheduler.clone();
    s.sched_flags = default_flags(&cfg.scheduler);
    s
}

/// Scheduler + flags for a Service: annotations override the global default;
/// an invalid value is reported and the default used.
fn scheduler_for(
    ann: Option<&std::collections::BTreeMap<String, String>>,
    cfg: &ProxyConfig,
    warnings: &mut Vec<String>,
) -> (Scheduler, ServiceFlags) {
    let mut sched = cfg.scheduler.clone();
    if let Some(name) = ann.and_then(|a| a.get(SCHEDULER_ANNOTATION)) {
        match parse_scheduler(name.trim()) {
            Some(s) => sched = s,
            None => warnings.push(format!(
                "invalid {SCHEDULER_ANNOTATION} {name:?}; using {}",
                cfg.scheduler
            )),
        }
    }
    let default_flags = default_flags(&sched);
    let flags = match ann.and_then(|a| a.get(SCHEDULER_FLAGS_ANNOTATION)) {
        Some(s) => match parse_sched_flags(s, &sched) {
            Ok(f) => f,
            Err(e) => {
                warnings.push(format!(
                    "invalid {SCHEDULER_FLAGS_ANNOTATION}: {e}; ignored"
                ));
                default_flags
            }
        },
        None => default_flags,
    };
    (sched, flags)
}

/// Reads a Service. Never panics; anything malformed is skipped with a warning.
pub fn parse_service(svc: &Service, cfg: &ProxyConfig) -> ParsedService {
    let meta = &svc.metadata;
    if meta.name.is_none() {
        return ParsedService::Ignored("no name");
    }
    if meta
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(PROXY_NAME_LABEL))
    {
        return ParsedService::Ignored("handled by another proxy (service-proxy-name label)");
    }
    let Some(spec) = svc.spec.as_ref() else {
        return ParsedService::Ignored("no spec");
    };
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if ty == "ExternalName" {
        return ParsedService::Ignored("ExternalName");
    }
    let raw_ips: Vec<&str> = match &spec.cluster_ips {
        Some(v) if !v.is_empty() => v.iter().map(String::as_str).collect(),
        _ => spec.cluster_ip.as_deref().into_iter().collect(),
    };
    if raw_ips.contains(&"None") {
        return ParsedService::Ignored("headless");
    }
    let mut warnings = Vec::new();
    let mut cluster_ips: Vec<IpAddr> = Vec::new();
    for s in raw_ips.iter().filter(|s| !s.is_empty()) {
        match s.parse::<IpAddr>() {
            Ok(ip) if !cluster_ips.iter().any(|c| Family::of(c) == Family::of(&ip)) => {
                cluster_ips.push(ip)
            }
            Ok(ip) => warnings.push(format!("second clusterIP {ip} of one family ignored")),
            Err(_) => warnings.push(format!("invalid clusterIP {s:?}")),
        }
    }
    if cluster_ips.is_empty() {
        return ParsedService::Ignored("no valid cluster IP");
    }
    let node_ports_allowed = ty == "NodePort" || ty == "LoadBalancer";
    let mut ports: Vec<PortSpec> = Vec::new();
    // Sets, not scans: a Service may list thousands of ports or addresses.
    let mut port_seen: HashSet<(Protocol, u16)> = HashSet::new();
    for p in spec.ports.iter().flatten() {
        let Some(protocol) = parse_protocol(p.protocol.as_deref()) else {
            warnings.push(format!(
                "port {}: unsupported protocol {:?}",
                p.port, p.protocol
            ));
            continue;
        };
        let Some(port) = port_u16(p.port) else {
            warnings.push(format!("invalid port {}", p.port));
            continue;
        };
        if !port_seen.insert((protocol, port)) {
            warnings.push(format!("duplicate port {port}/{protocol:?} ignored"));
            continue;
        }
        let node_port = if node_ports_allowed {
            match p.node_port {
                Some(np) => {
                    let v = port_u16(np);
                    if v.is_none() {
                        warnings.push(format!("invalid nodePort {np}"));
                    }
                    v
                }
                None => None,
            }
        } else {
            None
        };
        ports.push(PortSpec {
            name: p.name.clone().unwrap_or_default(),
            protocol,
            port,
            node_port,
        });
    }
    let mut external_ips = Vec::new();
    let mut ip_seen: HashSet<IpAddr> = HashSet::new();
    for s in spec.external_ips.iter().flatten() {
        match s.trim().parse::<IpAddr>() {
            Ok(ip) if ip_seen.insert(ip) => external_ips.push(ip),
            Ok(_) => {}
            Err(_) => warnings.push(format!("invalid externalIP {s:?}")),
        }
    }
    let mut lb_ips = Vec::new();
    let mut lb_source_ranges = Vec::new();
    ip_seen.clear();
    let mut range_seen: HashSet<Cidr> = HashSet::new();
    if ty == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref());
        for ing in ingress.into_iter().flatten() {
            // ipMode Proxy: the LB proxies itself, so traffic must not be short-circuited (KEP-1860).
            if ing.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            let Some(s) = ing.ip.as_deref() else { continue };
            match s.parse::<IpAddr>() {
                Ok(ip) if ip_seen.insert(ip) => lb_ips.push(ip),
                Ok(_) => {}
                Err(_) => warnings.push(format!("invalid load balancer ingress IP {s:?}")),
            }
        }
        for s in spec.load_balancer_source_ranges.iter().flatten() {
            match s.parse::<Cidr>() {
                Ok(c) if range_seen.insert(c) => lb_source_ranges.push(c),
                Ok(_) => {}
                Err(_) => warnings.push(format!("invalid loadBalancerSourceRange {s:?}")),
            }
        }
    }
    let externally_reachable = node_ports_allowed || !external_ips.is_empty();
    let external_local =
        externally_reachable && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let health_check_node_port = if ty == "LoadBalancer" && external_local {
        spec.health_check_node_port.and_then(port_u16)
    } else {
        None
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| (1..=86400).contains(t))
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let (scheduler, sched_flags) = scheduler_for(meta.annotations.as_ref(), cfg, &mut warnings);
    ParsedService::Proxied(ServiceInput {
        ports,
        cluster_ips,
        external_ips,
        lb_ips,
        lb_source_ranges,
        external_local,
        internal_local,
        health_check_node_port,
        affinity_timeout,
        scheduler,
        sched_flags,
        warnings,
        seniority: Seniority {
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
            uid: meta.uid.as_deref().map(Arc::from),
        },
    })
}

/// One port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// One endpoint of a slice with its conditions resolved (API defaults applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointInput {
    pub ip: IpAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// On this node (`nodeName` equals ours).
    pub local: bool,
    /// Zone hints; `None` when the endpoint has none.
    pub zone_hints: Option<Box<[Box<str>]>>,
}

/// An EndpointSlice reduced to what the proxy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceInput {
    pub service: SvcId,
    pub family: Family,
    pub ports: Vec<SlicePort>,
    pub endpoints: Vec<EndpointInput>,
}

/// Reads an EndpointSlice; `None` if it names no Service or is FQDN-typed.
/// Endpoints use their first address, as upstream does.
pub fn parse_slice(slice: &EndpointSlice, node_name: &str) -> Option<SliceInput> {
    let labels = slice.metadata.labels.as_ref()?;
    if labels.contains_key(PROXY_NAME_LABEL) {
        return None;
    }
    let svc = labels.get(SERVICE_NAME_LABEL)?;
    let ns = slice.metadata.namespace.as_deref().unwrap_or("");
    let family = match slice.address_type.as_str() {
        "IPv4" => Family::Inet,
        "IPv6" => Family::Inet6,
        _ => return None,
    };
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some(SlicePort {
                name: p.name.clone().unwrap_or_default(),
                protocol: parse_protocol(p.protocol.as_deref())?,
                port: port_u16(p.port?)?,
            })
        })
        .collect();
    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    endpoints.extend(slice.endpoints.iter().filter_map(|e| {
        let ip: IpAddr = e.addresses.first()?.parse().ok()?;
        if Family::of(&ip) != family {
            return None;
        }
        let c = e.conditions.as_ref();
        // API semantics: nil ready = true, nil serving = ready, nil terminating = false.
        let ready = c.and_then(|c| c.ready).unwrap_or(true);
        let serving = c.and_then(|c| c.serving).unwrap_or(ready);
        let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
        let zone_hints = e
            .hints
            .as_ref()
            .and_then(|h| h.for_zones.as_ref())
            .filter(|z| !z.is_empty())
            .map(|z| z.iter().map(|z| Box::from(z.name.as_str())).collect());
        Some(EndpointInput {
            ip,
            ready,
            serving,
            terminating,
            local: !node_name.is_empty() && e.node_name.as_deref() == Some(node_name),
            zone_hints,
        })
    }));
    Some(SliceInput {
        service: svc_id(ns, svc),
        family,
        ports,
        endpoints,
    })
}
