//! Endpoint merging (all slices of a Service) and selection (KEP-1669, topology hints).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use ipvs_netlink::ipvs::Family;

use super::input::{EndpointInput, PortSpec, SliceInput};

/// One endpoint of one Service port after merging every slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedEndpoint<'a> {
    pub addr: SocketAddr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub local: bool,
    pub zone_hints: Option<&'a [Box<str>]>,
}

impl MergedEndpoint<'_> {
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// Endpoints of `port` in `family`, deduplicated by address:port across slices.
/// A duplicate (an endpoint moving between slices) keeps the most available
/// conditions, so a transient double listing never drops it. Sorted by address.
pub fn merge<'a>(
    slices: impl IntoIterator<Item = &'a SliceInput>,
    port: &PortSpec,
    family: Family,
) -> Vec<MergedEndpoint<'a>> {
    merge_resolved(
        slices
            .into_iter()
            .filter(|s| s.family == family)
            .filter_map(|s| Some((s, target_port(s, port)?))),
    )
}

/// The slice's port for a Service port. Ports are matched by name and
/// protocol; a port name with no slice port simply has no endpoints.
pub fn target_port(slice: &SliceInput, port: &PortSpec) -> Option<u16> {
    slice
        .ports
        .iter()
        .find(|p| p.name == port.name && p.protocol == port.protocol)
        .map(|p| p.port)
}

/// `merge` over slices whose target port is already resolved (a Service with
/// many ports resolves them through an index, not a scan per port).
pub fn merge_resolved<'a>(
    slices: impl IntoIterator<Item = (&'a SliceInput, u16)>,
) -> Vec<MergedEndpoint<'a>> {
    let mut out: Vec<MergedEndpoint<'a>> = Vec::new();
    let mut index: HashMap<SocketAddr, usize> = HashMap::new();
    for (slice, target) in slices {
        for e in &slice.endpoints {
            let addr = SocketAddr::new(e.ip, target);
            let m = merged(e, addr);
            match index.get(&addr) {
                Some(&i) => {
                    let o = &mut out[i];
                    o.ready |= m.ready;
                    o.serving |= m.serving;
                    o.terminating &= m.terminating;
                    o.local |= m.local;
                    if o.zone_hints.is_none() {
                        o.zone_hints = m.zone_hints;
                    }
                }
                None => {
                    index.insert(addr, out.len());
                    out.push(m);
                }
            }
        }
    }
    out.sort_by_key(|e| e.addr);
    out
}

fn merged(e: &EndpointInput, addr: SocketAddr) -> MergedEndpoint<'_> {
    MergedEndpoint {
        addr,
        ready: e.ready,
        serving: e.serving,
        terminating: e.terminating,
        local: e.local,
        zone_hints: e.zone_hints.as_deref(),
    }
}

/// Endpoints chosen for cluster-wide and node-local traffic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    pub cluster: Vec<SocketAddr>,
    pub local: Vec<SocketAddr>,
    /// Any endpoint exists at all (even unready).
    pub any: bool,
}

/// Topology hints are used only when every ready endpoint carries zone hints
/// and at least one names our zone (upstream `canUseTopology`).
fn use_topology(eps: &[MergedEndpoint<'_>], zone: Option<&str>) -> bool {
    let Some(zone) = zone else { return false };
    let mut has_zone = false;
    for e in eps.iter().filter(|e| e.ready) {
        match e.zone_hints {
            None => return false,
            Some(h) => has_zone |= h.iter().any(|z| &**z == zone),
        }
    }
    has_zone
}

/// Upstream `CategorizeEndpoints`: ready endpoints (zone-filtered when usable);
/// if none is ready, serving+terminating ones (KEP-1669). Local: the same rule
/// restricted to this node, without topology.
pub fn select(eps: &[MergedEndpoint<'_>], zone: Option<&str>) -> Selection {
    let topo = use_topology(eps, zone);
    let in_zone = |e: &MergedEndpoint<'_>| {
        !topo
            || e.zone_hints
                .is_some_and(|h| h.iter().any(|z| Some(&**z) == zone))
    };
    let mut cluster: Vec<SocketAddr> = eps
        .iter()
        .filter(|e| e.ready && in_zone(e))
        .map(|e| e.addr)
        .collect();
    if cluster.is_empty() {
        cluster = eps
            .iter()
            .filter(|e| e.serving_terminating())
            .map(|e| e.addr)
            .collect();
    }
    let mut local: Vec<SocketAddr> = eps
        .iter()
        .filter(|e| e.local && e.ready)
        .map(|e| e.addr)
        .collect();
    if local.is_empty() {
        local = eps
            .iter()
            .filter(|e| e.local && e.serving_terminating())
            .map(|e| e.addr)
            .collect();
    }
    Selection {
        cluster,
        local,
        any: !eps.is_empty(),
    }
}

/// Addresses of endpoints on this node (hairpin set KUBE-LOOP-BACK).
pub fn local_ips<'a>(eps: &'a [MergedEndpoint<'a>]) -> impl Iterator<Item = (IpAddr, u16)> + 'a {
    eps.iter()
        .filter(|e| e.local)
        .map(|e| (e.addr.ip(), e.addr.port()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::input::{SlicePort, svc_id};
    use ipvs_netlink::ipvs::Protocol;

    fn ep(ip: &str, ready: bool, serving: bool, term: bool, local: bool) -> EndpointInput {
        EndpointInput {
            ip: ip.parse().unwrap(),
            ready,
            serving,
            terminating: term,
            local,
            zone_hints: None,
        }
    }

    fn slice(port: u16, eps: Vec<EndpointInput>) -> SliceInput {
        SliceInput {
            service: svc_id("ns", "s"),
            family: Family::Inet,
            ports: vec![SlicePort {
                name: "http".into(),
                protocol: Protocol::Tcp,
                port,
            }],
            endpoints: eps,
        }
    }

    fn http() -> PortSpec {
        PortSpec {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
        }
    }

    fn addrs(v: &[&str]) -> Vec<SocketAddr> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn merge_dedups_across_slices_keeping_best_conditions() {
        let a = slice(8080, vec![ep("10.0.0.1", false, false, true, false)]);
        let b = slice(
            8080,
            vec![
                ep("10.0.0.1", true, true, false, false),
                ep("10.0.0.2", true, true, false, true),
            ],
        );
        let m = merge([&a, &b], &http(), Family::Inet);
        assert_eq!(m.len(), 2);
        assert!(m[0].ready && !m[0].terminating);
        let s = select(&m, None);
        assert_eq!(s.cluster, addrs(&["10.0.0.1:8080", "10.0.0.2:8080"]));
        assert_eq!(s.local, addrs(&["10.0.0.2:8080"]));
    }

    #[test]
    fn merge_ignores_other_family_and_unmatched_port_names() {
        let mut a = slice(8080, vec![ep("10.0.0.1", true, true, false, false)]);
        a.ports[0].name = "other".into();
        assert!(merge([&a], &http(), Family::Inet).is_empty());
        let b = slice(8080, vec![ep("10.0.0.1", true, true, false, false)]);
        assert!(merge([&b], &http(), Family::Inet6).is_empty());
    }

    #[test]
    fn selection_table() {
        struct Case {
            name: &'static str,
            eps: Vec<EndpointInput>,
            cluster: &'static [&'static str],
            local: &'static [&'static str],
        }
        let cases = vec![
            Case {
                name: "ready only",
                eps: vec![
                    ep("10.0.0.1", true, true, false, false),
                    ep("10.0.0.2", false, false, false, false),
                ],
                cluster: &["10.0.0.1:80"],
                local: &[],
            },
            Case {
                name: "no ready: serving+terminating fallback (KEP-1669)",
                eps: vec![
                    ep("10.0.0.1", false, true, true, true),
                    ep("10.0.0.2", false, false, true, false),
                    ep("10.0.0.3", false, true, false, false),
                ],
                cluster: &["10.0.0.1:80"],
                local: &["10.0.0.1:80"],
            },
            Case {
                name: "ready wins over terminating",
                eps: vec![
                    ep("10.0.0.1", false, true, true, false),
                    ep("10.0.0.2", true, true, false, false),
                ],
                cluster: &["10.0.0.2:80"],
                local: &[],
            },
            Case {
                name: "local fallback independent of cluster",
                eps: vec![
                    ep("10.0.0.1", true, true, false, false),
                    ep("10.0.0.2", false, true, true, true),
                ],
                cluster: &["10.0.0.1:80"],
                local: &["10.0.0.2:80"],
            },
            Case {
                name: "nothing",
                eps: vec![],
                cluster: &[],
                local: &[],
            },
        ];
        for c in cases {
            let s = SliceInput {
                ports: vec![SlicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 80,
                }],
                ..slice(80, c.eps)
            };
            let m = merge([&s], &http(), Family::Inet);
            let sel = select(&m, None);
            assert_eq!(sel.cluster, addrs(c.cluster), "{}", c.name);
            assert_eq!(sel.local, addrs(c.local), "{}", c.name);
        }
    }

    #[test]
    fn topology_hints_only_when_all_ready_have_them() {
        let hinted = |ip: &str, zone: &str| EndpointInput {
            zone_hints: Some(vec![Box::from(zone)].into_boxed_slice()),
            ..ep(ip, true, true, false, false)
        };
        let s = slice(80, vec![hinted("10.0.0.1", "a"), hinted("10.0.0.2", "b")]);
        let m = merge([&s], &PortSpec { port: 80, ..http() }, Family::Inet);
        assert_eq!(select(&m, Some("a")).cluster, addrs(&["10.0.0.1:80"]));
        // Zone not hinted anywhere: all endpoints.
        assert_eq!(select(&m, Some("c")).cluster.len(), 2);
        // No node zone: all endpoints.
        assert_eq!(select(&m, None).cluster.len(), 2);
        // One ready endpoint lacks hints: topology off.
        let s2 = slice(
            80,
            vec![
                hinted("10.0.0.1", "a"),
                ep("10.0.0.3", true, true, false, false),
            ],
        );
        let m2 = merge([&s2], &http(), Family::Inet);
        assert_eq!(select(&m2, Some("a")).cluster.len(), 2);
    }
}
