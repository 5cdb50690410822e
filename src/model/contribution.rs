//! One Service's share of the node state: virtual servers, addresses, ipset members.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipvs_netlink::ipvs::{Destination, Family, Protocol, Service, ServiceFlags, ServiceKey};

use super::config::ProxyConfig;
use super::endpoints::{MergedEndpoint, local_ips, merge_resolved, select};
use super::input::{PortSpec, Seniority, ServiceInput, SliceInput};
use super::node::NodeInfo;
use crate::state::{IpsetEntry, SetKind, SetName};

/// A desired IPVS virtual service with its real servers (sorted by address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    pub service: Service,
    pub destinations: Arc<[Destination]>,
}

/// Health-check node port of an externalTrafficPolicy=Local LoadBalancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    pub node_port: u16,
    /// Distinct local endpoints (the HTTP health server answers 200 when > 0).
    pub local_endpoints: usize,
}

/// Load-balancer IP:port the node itself must not reach (sourceRanges exclude
/// the node; upstream #119656 renders one DROP rule each in KUBE-IPVS-OUT-FILTER).
pub type NoNodeAccess = (IpAddr, Protocol, u16);

/// Everything one Service adds to the node; the aggregate is the sum of these.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Contribution {
    pub virtual_servers: Vec<Arc<VirtualServer>>,
    /// Addresses to bind on kube-ipvs0 (sorted, unique).
    pub addresses: Vec<IpAddr>,
    /// ipset members (sorted, unique).
    pub entries: Vec<(SetName, IpsetEntry)>,
    pub health: Option<HealthCheck>,
    pub no_node_access: Vec<NoNodeAccess>,
    pub warnings: Vec<String>,
    /// Per family (IPv4, IPv6), as upstream's per-family proxiers count.
    pub no_local_endpoints: [NoLocalEndpoints; 2],
    /// Why the Service contributes nothing at all, if it was refused.
    pub refused: Option<Refusal>,
    /// The Service's age, which decides conflicts over a virtual server.
    pub seniority: Seniority,
}

/// Why a whole Service is refused (it then contributes nothing); typed so
/// the daemon can count refusals per reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More virtual servers than `--max-virtual-servers-per-service` allows.
    TooManyVirtualServers { count: u64, cap: u64 },
}

impl Refusal {
    /// A stable metric label for the reason.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::TooManyVirtualServers { .. } => "too_many_virtual_servers",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooManyVirtualServers { count, cap } => write!(
                f,
                "needs {count} IPVS virtual servers on this node, more than \
                 --max-virtual-servers-per-service={cap}; not programmed \
                 (reduce its ports or addresses, or raise the cap)"
            ),
        }
    }
}

/// Upstream's name of each family, by [`family_slot`].
pub const FAMILY_NAMES: [&str; 2] = ["IPv4", "IPv6"];

/// A family's slot in per-family arrays: 0 IPv4, 1 IPv6.
pub fn family_slot(f: Family) -> usize {
    match f {
        Family::Inet => 0,
        Family::Inet6 => 1,
    }
}

/// A Local traffic policy left without a local endpoint while usable
/// endpoints exist elsewhere (upstream's
/// `kubeproxy_sync_proxy_rules_no_local_endpoints_total`, per Service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoLocalEndpoints {
    /// internalTrafficPolicy Local: cluster IP traffic has nowhere to go.
    pub internal: bool,
    /// externalTrafficPolicy Local: external traffic is dropped on this node.
    pub external: bool,
}

fn node_port_sets(p: Protocol) -> (SetKind, SetKind) {
    match p {
        Protocol::Tcp => (SetKind::NodePortTcp, SetKind::NodePortLocalTcp),
        Protocol::Udp => (SetKind::NodePortUdp, SetKind::NodePortLocalUdp),
        Protocol::Sctp => (SetKind::NodePortSctp, SetKind::NodePortLocalSctp),
    }
}

fn dests(addrs: &[SocketAddr]) -> Arc<[Destination]> {
    addrs.iter().map(|a| Destination::masq(*a)).collect()
}

struct Builder {
    out: Contribution,
    /// Keys already made: a hash lookup per virtual server keeps the
    /// Service's cost linear in ports × addresses (a scan was quadratic).
    seen: HashSet<ServiceKey>,
}

impl Builder {
    fn vs(&mut self, svc: &ServiceInput, key: ServiceKey, destinations: &Arc<[Destination]>) {
        if !self.seen.insert(key) {
            return;
        }
        let mut service = Service::new(key);
        service.scheduler = svc.scheduler.clone();
        service.flags = svc.sched_flags;
        if let Some(t) = svc.affinity_timeout {
            // ClientIP affinity = IPVS persistence per client address.
            service.flags.insert(ServiceFlags::PERSISTENT);
            service.timeout = t;
        }
        self.out.virtual_servers.push(Arc::new(VirtualServer {
            service,
            destinations: destinations.clone(),
        }));
    }

    fn bind(&mut self, ip: IpAddr) {
        self.out.addresses.push(ip);
        self.entry(SetKind::IpvsIps, IpsetEntry::Ip(ip));
    }

    fn entry(&mut self, kind: SetKind, e: IpsetEntry) {
        let fam = e.family().unwrap_or(Family::Inet);
        self.entry_in(SetName::new(kind, fam), e);
    }

    fn entry_in(&mut self, set: SetName, e: IpsetEntry) {
        if e.fits(&set) {
            self.out.entries.push((set, e));
        }
    }
}

/// The virtual servers `contribution` makes for a Service, counted from
/// its ports and addresses without making them: the cap refuses a
/// 10-million-VS Service in time linear in its spec, not in that product.
pub fn count_virtual_servers(svc: &ServiceInput, node: &NodeInfo, cfg: &ProxyConfig) -> u64 {
    let mut n = 0u64;
    for &cip in &svc.cluster_ips {
        let fam = Family::of(&cip);
        if !cfg.serves(fam) {
            continue;
        }
        // Every Service port on every distinct address of the family.
        let vips: HashSet<IpAddr> = std::iter::once(cip)
            .chain(svc.external_ips.iter().copied())
            .chain(svc.lb_ips.iter().copied())
            .filter(|ip| Family::of(ip) == fam)
            .collect();
        n += svc.ports.len() as u64 * vips.len() as u64;
        // Every distinct NodePort on every selected node address, except
        // one that coincides with a Service port on an address above.
        let node_ips = node.node_port_ips(cfg, fam);
        let node_ports: HashSet<(Protocol, u16)> = svc
            .ports
            .iter()
            .filter_map(|p| Some((p.protocol, p.node_port?)))
            .collect();
        n += node_ports.len() as u64 * node_ips.len() as u64;
        let shared = node_ips.iter().filter(|ip| vips.contains(ip)).count() as u64;
        if shared > 0 {
            let taken: HashSet<(Protocol, u16)> =
                svc.ports.iter().map(|p| (p.protocol, p.port)).collect();
            n -= shared * node_ports.intersection(&taken).count() as u64;
        }
    }
    n
}

/// The slices of one family by Service port (name, protocol), each with its
/// target port, in slice order; the first matching slice port counts, as upstream.
type PortIndex<'a> = HashMap<(&'a str, Protocol), Vec<(&'a SliceInput, u16)>>;

fn port_index<'a>(slices: &[&'a SliceInput], fam: Family) -> PortIndex<'a> {
    let mut idx: PortIndex<'a> = HashMap::new();
    for &s in slices.iter().filter(|s| s.family == fam) {
        for p in &s.ports {
            let v = idx.entry((p.name.as_str(), p.protocol)).or_default();
            if !v.last().is_some_and(|(l, _)| std::ptr::eq(*l, s)) {
                v.push((s, p.port));
            }
        }
    }
    idx
}

/// Computes one Service's contribution. `slices` are all its EndpointSlices.
/// A Service over `max_virtual_servers_per_service` contributes nothing but
/// its warnings and the refusal.
pub fn contribution(
    svc: &ServiceInput,
    slices: &[&SliceInput],
    node: &NodeInfo,
    cfg: &ProxyConfig,
) -> Contribution {
    let count = count_virtual_servers(svc, node, cfg);
    let cap = cfg.max_virtual_servers_per_service;
    let mut warnings = svc.warnings.clone();
    if cap > 0 && count > cap {
        let r = Refusal::TooManyVirtualServers { count, cap };
        warnings.push(r.to_string());
        return Contribution {
            warnings,
            refused: Some(r),
            seniority: svc.seniority.clone(),
            ..Default::default()
        };
    }
    let mut b = Builder {
        out: Contribution {
            warnings,
            seniority: svc.seniority.clone(),
            virtual_servers: Vec::with_capacity(usize::try_from(count).unwrap_or(0)),
            ..Default::default()
        },
        seen: HashSet::with_capacity(usize::try_from(count).unwrap_or(0)),
    };
    let mut local_eps: Vec<IpAddr> = Vec::new();
    for &cip in &svc.cluster_ips {
        let fam = Family::of(&cip);
        if !cfg.serves(fam) {
            continue;
        }
        let node_ips = node.node_port_ips(cfg, fam);
        let by_port = port_index(slices, fam);
        for port in &svc.ports {
            let resolved = by_port.get(&(port.name.as_str(), port.protocol));
            let eps: Vec<MergedEndpoint<'_>> =
                merge_resolved(resolved.into_iter().flatten().copied());
            let sel = select(&eps, node.zone.as_deref());
            local_eps.extend(sel.local.iter().map(|a| a.ip()));
            // Upstream counts only when some endpoint is usable somewhere
            // (`hasAnyEndpoints`): the cluster selection is then non-empty.
            if sel.local.is_empty() && !sel.cluster.is_empty() {
                let n = &mut b.out.no_local_endpoints[family_slot(fam)];
                n.internal |= svc.internal_local;
                n.external |= svc.external_local;
            }
            per_port(&mut b, svc, port, cip, &node_ips, node, &eps, &sel);
        }
    }
    if let Some(hc) = svc.health_check_node_port {
        local_eps.sort();
        local_eps.dedup();
        b.out.health = Some(HealthCheck {
            node_port: hc,
            local_endpoints: local_eps.len(),
        });
    }
    let mut out = b.out;
    out.addresses.sort();
    out.addresses.dedup();
    out.entries.sort();
    out.entries.dedup();
    out.no_node_access.sort();
    out.no_node_access.dedup();
    out
}

#[allow(clippy::too_many_arguments)]
fn per_port(
    b: &mut Builder,
    svc: &ServiceInput,
    port: &PortSpec,
    cip: IpAddr,
    node_ips: &[IpAddr],
    node: &NodeInfo,
    eps: &[MergedEndpoint<'_>],
    sel: &super::endpoints::Selection,
) {
    let fam = Family::of(&cip);
    let proto = port.protocol;
    let cluster = dests(&sel.cluster);
    let local = dests(&sel.local);
    // internalTrafficPolicy Local: cluster IP traffic only to this node's endpoints.
    let internal = if svc.internal_local { &local } else { &cluster };
    // externalTrafficPolicy Local: only local endpoints, and none → no real
    // servers, so external traffic is dropped as the Service spec requires.
    // Upstream IPVS mode instead falls back to all endpoints (#97081), which
    // forwards external traffic to remote pods without preserving the source.
    let external = if svc.external_local { &local } else { &cluster };

    // Cluster IP.
    b.vs(
        svc,
        ServiceKey::new(proto, SocketAddr::new(cip, port.port)),
        internal,
    );
    b.bind(cip);
    b.entry(
        SetKind::ClusterIp,
        IpsetEntry::IpPort(cip, proto, port.port),
    );

    // Hairpin: a local endpoint reaching itself through the service is masqueraded.
    for (ip, p) in local_ips(eps) {
        b.entry(SetKind::LoopBack, IpsetEntry::IpPortIp(ip, proto, p, ip));
    }

    // External IPs: bound unless already an address of this node.
    for &eip in svc.external_ips.iter().filter(|ip| Family::of(ip) == fam) {
        b.vs(
            svc,
            ServiceKey::new(proto, SocketAddr::new(eip, port.port)),
            external,
        );
        if !node.has_address(&eip) {
            b.bind(eip);
        }
        let kind = if svc.external_local {
            SetKind::ExternalIpLocal
        } else {
            SetKind::ExternalIp
        };
        b.entry(kind, IpsetEntry::IpPort(eip, proto, port.port));
    }

    // LoadBalancer ingress.
    for &lb in svc.lb_ips.iter().filter(|ip| Family::of(ip) == fam) {
        b.vs(
            svc,
            ServiceKey::new(proto, SocketAddr::new(lb, port.port)),
            external,
        );
        if !node.has_address(&lb) {
            b.bind(lb);
        }
        b.entry(
            SetKind::LoadBalancer,
            IpsetEntry::IpPort(lb, proto, port.port),
        );
        if svc.external_local {
            b.entry(
                SetKind::LoadBalancerLocal,
                IpsetEntry::IpPort(lb, proto, port.port),
            );
        }
        if !svc.lb_source_ranges.is_empty() {
            b.entry(
                SetKind::LoadBalancerFw,
                IpsetEntry::IpPort(lb, proto, port.port),
            );
            let mut allow_node = false;
            for r in svc.lb_source_ranges.iter().filter(|r| r.family() == fam) {
                b.entry(
                    SetKind::LoadBalancerSourceCidr,
                    IpsetEntry::IpPortNet(lb, proto, port.port, *r),
                );
                allow_node |= node
                    .addresses
                    .iter()
                    .chain(node.primary.iter())
                    .any(|ip| r.contains(ip));
            }
            if allow_node {
                // Node-IP exception: node traffic to the LB IP has the LB IP as source.
                b.entry(
                    SetKind::LoadBalancerSourceIp,
                    IpsetEntry::IpPortIp(lb, proto, port.port, lb),
                );
            } else {
                // #119656: the node's own traffic skips INPUT; drop it in OUTPUT.
                b.out.no_node_access.push((lb, proto, port.port));
            }
        }
    }

    // NodePort on every selected node address.
    if let Some(np) = port.node_port {
        for &nip in node_ips {
            b.vs(
                svc,
                ServiceKey::new(proto, SocketAddr::new(nip, np)),
                external,
            );
        }
        let (all, loc) = node_port_sets(proto);
        if proto == Protocol::Sctp {
            // SCTP uses hash:ip,port with one member per node address.
            for &nip in node_ips {
                b.entry(all, IpsetEntry::IpPort(nip, proto, np));
                if svc.external_local {
                    b.entry(loc, IpsetEntry::IpPort(nip, proto, np));
                }
            }
        } else if !node_ips.is_empty() {
            b.entry_in(SetName::new(all, fam), IpsetEntry::Port(np));
            if svc.external_local {
                b.entry_in(SetName::new(loc, fam), IpsetEntry::Port(np));
            }
        }
    }

    if let Some(hc) = svc.health_check_node_port {
        b.entry_in(
            SetName::new(SetKind::HealthCheckNodePort, fam),
            IpsetEntry::Port(hc),
        );
    }
}
