//! Table-driven tests of the model, one group per feature.

use std::net::{IpAddr, SocketAddr};

use ipvs_netlink::ipvs::{Family, Protocol, Scheduler, ServiceFlags, ServiceKey};
use serde_json::{Value, json};

use super::config::{NodePortAddresses, ProxyConfig};
use super::contribution::{Contribution, contribution};
use super::input::{ParsedService, parse_service, parse_slice};
use super::node::NodeInfo;
use super::testutil::{node, service, service_full, slice};
use crate::state::{IpsetEntry, SetKind, SetName};

type Ep<'a> = (&'a str, bool, bool, bool, &'a str);

const READY_REMOTE: fn(&str) -> Ep<'_> = |ip| (ip, true, true, false, "node-b");
const READY_LOCAL: fn(&str) -> Ep<'_> = |ip| (ip, true, true, false, "node-a");

fn build(
    svc: &k8s_openapi::api::core::v1::Service,
    slices: &[k8s_openapi::api::discovery::v1::EndpointSlice],
    node: &NodeInfo,
    cfg: &ProxyConfig,
) -> Contribution {
    let ParsedService::Proxied(input) = parse_service(svc, cfg) else {
        panic!("service ignored")
    };
    let parsed: Vec<_> = slices
        .iter()
        .filter_map(|s| parse_slice(s, &node.name))
        .collect();
    let refs: Vec<_> = parsed.iter().collect();
    contribution(&input, &refs, node, cfg)
}

fn simple(spec: Value, eps: &[Ep<'_>]) -> Contribution {
    let svc = service("ns", "web", spec);
    let sl = slice("ns", "web-1", "web", "IPv4", &[("http", 8080, "TCP")], eps);
    build(&svc, &[sl], &node(), &ProxyConfig::default())
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(s: &str) -> ServiceKey {
    ServiceKey::Tcp(sa(s))
}

fn vs(c: &Contribution, k: ServiceKey) -> &super::contribution::VirtualServer {
    c.virtual_servers
        .iter()
        .find(|v| v.service.key == k)
        .unwrap_or_else(|| panic!("no VS {k}: {:?}", keys(c)))
}

fn keys(c: &Contribution) -> Vec<String> {
    let mut v: Vec<String> = c
        .virtual_servers
        .iter()
        .map(|v| v.service.key.to_string())
        .collect();
    v.sort();
    v
}

fn dests(c: &Contribution, k: ServiceKey) -> Vec<SocketAddr> {
    vs(c, k).destinations.iter().map(|d| d.addr).collect()
}

fn has(c: &Contribution, kind: SetKind, fam: Family, e: IpsetEntry) -> bool {
    c.entries.contains(&(SetName::new(kind, fam), e))
}

fn port80() -> Value {
    json!([{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}])
}

// ---- ClusterIP ---------------------------------------------------------------

#[test]
fn cluster_ip_basic() {
    let c = simple(
        json!({"clusterIP": "10.96.0.10", "ports": port80()}),
        &[READY_REMOTE("10.244.1.5"), READY_LOCAL("10.244.0.5")],
    );
    assert_eq!(keys(&c), vec!["TCP 10.96.0.10:80"]);
    assert_eq!(
        dests(&c, tcp("10.96.0.10:80")),
        vec![sa("10.244.0.5:8080"), sa("10.244.1.5:8080")]
    );
    let v = vs(&c, tcp("10.96.0.10:80"));
    assert_eq!(v.service.scheduler, Scheduler::RoundRobin);
    assert!(v.destinations.iter().all(|d| d.weight == 1));
    assert_eq!(c.addresses, vec![ip("10.96.0.10")]);
    assert!(has(
        &c,
        SetKind::ClusterIp,
        Family::Inet,
        IpsetEntry::IpPort(ip("10.96.0.10"), Protocol::Tcp, 80)
    ));
    assert!(has(
        &c,
        SetKind::IpvsIps,
        Family::Inet,
        IpsetEntry::Ip(ip("10.96.0.10"))
    ));
    // Hairpin only for the local endpoint.
    assert!(has(
        &c,
        SetKind::LoopBack,
        Family::Inet,
        IpsetEntry::IpPortIp(ip("10.244.0.5"), Protocol::Tcp, 8080, ip("10.244.0.5"))
    ));
    assert!(!has(
        &c,
        SetKind::LoopBack,
        Family::Inet,
        IpsetEntry::IpPortIp(ip("10.244.1.5"), Protocol::Tcp, 8080, ip("10.244.1.5"))
    ));
    assert!(c.warnings.is_empty());
}

#[test]
fn cluster_ip_multi_port_matches_ports_by_name() {
    let svc = service(
        "ns",
        "web",
        json!({"clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "nope", "port": 9999, "protocol": "TCP"},
        ]}),
    );
    let sl = slice(
        "ns",
        "web-1",
        "web",
        "IPv4",
        &[("http", 8080, "TCP"), ("dns", 5353, "UDP")],
        &[READY_REMOTE("10.244.1.5")],
    );
    let c = build(&svc, &[sl], &node(), &ProxyConfig::default());
    assert_eq!(
        keys(&c),
        vec![
            "TCP 10.96.0.10:80",
            "TCP 10.96.0.10:9999",
            "UDP 10.96.0.10:53"
        ]
    );
    assert_eq!(dests(&c, tcp("10.96.0.10:80")), vec![sa("10.244.1.5:8080")]);
    assert_eq!(
        dests(&c, ServiceKey::Udp(sa("10.96.0.10:53"))),
        vec![sa("10.244.1.5:5353")]
    );
    // A port name with no endpoint port: a service with no real servers.
    assert!(dests(&c, tcp("10.96.0.10:9999")).is_empty());
}

#[test]
fn dual_stack_cluster_ips() {
    let svc = service(
        "ns",
        "web",
        json!({"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10", "fd00:96::10"], "ports": port80()}),
    );
    let v4 = slice(
        "ns",
        "web-4",
        "web",
        "IPv4",
        &[("http", 8080, "TCP")],
        &[READY_REMOTE("10.244.1.5")],
    );
    let v6 = slice(
        "ns",
        "web-6",
        "web",
        "IPv6",
        &[("http", 8080, "TCP")],
        &[READY_REMOTE("fd00:244::5")],
    );
    let c = build(&svc, &[v4, v6], &node(), &ProxyConfig::default());
    assert_eq!(dests(&c, tcp("10.96.0.10:80")), vec![sa("10.244.1.5:8080")]);
    assert_eq!(
        dests(&c, tcp("[fd00:96::10]:80")),
        vec![sa("[fd00:244::5]:8080")]
    );
    assert!(has(
        &c,
        SetKind::ClusterIp,
        Family::Inet6,
        IpsetEntry::IpPort(ip("fd00:96::10"), Protocol::Tcp, 80)
    ));
    assert_eq!(
        SetName::new(SetKind::ClusterIp, Family::Inet6).name(),
        "KUBE-6-CLUSTER-IP"
    );
    // A v4-only proxy ignores the v6 family.
    let cfg = ProxyConfig {
        families: vec![Family::Inet],
        ..Default::default()
    };
    let v4 = slice(
        "ns",
        "web-4",
        "web",
        "IPv4",
        &[("http", 8080, "TCP")],
        &[READY_REMOTE("10.244.1.5")],
    );
    let c = build(&svc, &[v4], &node(), &cfg);
    assert_eq!(keys(&c), vec!["TCP 10.96.0.10:80"]);
}

#[test]
fn ignored_services() {
    let cfg = ProxyConfig::default();
    let cases: Vec<(&str, k8s_openapi::api::core::v1::Service)> = vec![
        (
            "headless",
            service("ns", "h", json!({"clusterIP": "None", "ports": port80()})),
        ),
        (
            "external name",
            service(
                "ns",
                "e",
                json!({"type": "ExternalName", "externalName": "x.example"}),
            ),
        ),
        (
            "other proxy",
            service_full(json!({"metadata": {"namespace": "ns", "name": "o",
                "labels": {"service.kubernetes.io/service-proxy-name": "other"}},
                "spec": {"clusterIP": "10.96.0.1", "ports": port80()}})),
        ),
        (
            "no cluster ip",
            service("ns", "n", json!({"ports": port80()})),
        ),
        (
            "garbage cluster ip",
            service(
                "ns",
                "g",
                json!({"clusterIP": "10.96.0.300", "ports": port80()}),
            ),
        ),
        (
            "no spec",
            service_full(json!({"metadata": {"namespace": "ns", "name": "x"}})),
        ),
    ];
    for (name, svc) in cases {
        assert!(
            matches!(parse_service(&svc, &cfg), ParsedService::Ignored(_)),
            "{name}"
        );
    }
}

#[test]
fn invalid_fields_warn_and_never_panic() {
    let svc = service(
        "ns",
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "externalIPs": ["bogus", "1.2.3.4"],
        "ports": [
          {"name": "a", "port": 0},
          {"name": "b", "port": 70000},
          {"name": "c", "port": 80, "protocol": "ICMP"},
          {"name": "d", "port": 81, "nodePort": -5},
          {"name": "e", "port": 82},
          {"name": "f", "port": 82},
        ]}),
    );
    let ParsedService::Proxied(p) = parse_service(&svc, &ProxyConfig::default()) else {
        panic!()
    };
    assert_eq!(p.ports.len(), 2);
    assert_eq!(p.ports[0].node_port, None);
    assert_eq!(p.external_ips, vec![ip("1.2.3.4")]);
    assert_eq!(p.warnings.len(), 6, "{:?}", p.warnings);
    // Slices with bad data: wrong family address, missing port, FQDN type.
    let mut sl = slice(
        "ns",
        "s",
        "web",
        "IPv4",
        &[("e", 8080, "TCP")],
        &[
            ("fd00::1", true, true, false, ""),
            ("nonsense", true, true, false, ""),
        ],
    );
    assert!(parse_slice(&sl, "node-a").unwrap().endpoints.is_empty());
    sl.address_type = "FQDN".into();
    assert!(parse_slice(&sl, "node-a").is_none());
    sl.metadata.labels = None;
    assert!(parse_slice(&sl, "node-a").is_none());
}

// ---- NodePort -----------------------------------------------------------------

#[test]
fn node_port_on_every_node_address_per_protocol() {
    let mut n = node();
    n.addresses.push(ip("203.0.113.10"));
    let svc = service(
        "ns",
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "nodePort": 30080, "protocol": "TCP"},
            {"name": "dns", "port": 53, "nodePort": 30053, "protocol": "UDP"},
            {"name": "s", "port": 99, "nodePort": 30099, "protocol": "SCTP"},
        ]}),
    );
    let sl = slice(
        "ns",
        "w",
        "web",
        "IPv4",
        &[("http", 8080, "TCP"), ("dns", 53, "UDP"), ("s", 99, "SCTP")],
        &[READY_REMOTE("10.244.1.5")],
    );
    let c = build(&svc, &[sl], &n, &ProxyConfig::default());
    for k in [
        "TCP 192.168.0.10:30080",
        "TCP 203.0.113.10:30080",
        "UDP 192.168.0.10:30053",
        "SCTP 203.0.113.10:30099",
    ] {
        assert!(keys(&c).contains(&k.to_string()), "{k}: {:?}", keys(&c));
    }
    assert_eq!(
        dests(&c, tcp("192.168.0.10:30080")),
        vec![sa("10.244.1.5:8080")]
    );
    assert!(has(
        &c,
        SetKind::NodePortTcp,
        Family::Inet,
        IpsetEntry::Port(30080)
    ));
    assert!(has(
        &c,
        SetKind::NodePortUdp,
        Family::Inet,
        IpsetEntry::Port(30053)
    ));
    assert!(has(
        &c,
        SetKind::NodePortSctp,
        Family::Inet,
        IpsetEntry::IpPort(ip("192.168.0.10"), Protocol::Sctp, 30099)
    ));
    assert!(has(
        &c,
        SetKind::NodePortSctp,
        Family::Inet,
        IpsetEntry::IpPort(ip("203.0.113.10"), Protocol::Sctp, 30099)
    ));
    assert!(!has(
        &c,
        SetKind::NodePortLocalTcp,
        Family::Inet,
        IpsetEntry::Port(30080)
    ));
    // Node addresses are never bound on kube-ipvs0.
    assert_eq!(c.addresses, vec![ip("10.96.0.10")]);
}

#[test]
fn node_port_addresses_primary_and_cidrs() {
    let mut n = node();
    n.addresses.push(ip("203.0.113.10"));
    let svc = service(
        "ns",
        "web",
        json!({"type": "NodePort", "clusterIP": "10.96.0.10",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
    );
    let table: Vec<(NodePortAddresses, Vec<&str>)> = vec![
        (
            NodePortAddresses::Primary,
            vec!["TCP 10.96.0.10:80", "TCP 192.168.0.10:30080"],
        ),
        (
            NodePortAddresses::Cidrs(vec!["203.0.113.0/24".parse().unwrap()]),
            vec!["TCP 10.96.0.10:80", "TCP 203.0.113.10:30080"],
        ),
        (
            NodePortAddresses::Cidrs(vec!["198.51.100.0/24".parse().unwrap()]),
            vec!["TCP 10.96.0.10:80"],
        ),
    ];
    for (npa, want) in table {
        let cfg = ProxyConfig {
            node_port_addresses: npa.clone(),
            ..Default::default()
        };
        let c = build(&svc, &[], &n, &cfg);
        assert_eq!(keys(&c), want, "{npa:?}");
        // No node address at all → no bitmap member either.
        let has_np = has(
            &c,
            SetKind::NodePortTcp,
            Family::Inet,
            IpsetEntry::Port(30080),
        );
        assert_eq!(has_np, want.len() == 2, "{npa:?}");
    }
}

#[test]
fn cluster_ip_type_ignores_node_port_field() {
    let svc = service(
        "ns",
        "web",
        json!({"clusterIP": "10.96.0.10",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
    );
    let c = build(&svc, &[], &node(), &ProxyConfig::default());
    assert_eq!(keys(&c), vec!["TCP 10.96.0.10:80"]);
}

// ---- externalIPs and LoadBalancer -------------------------------------------------

#[test]
fn external_ips_bound_unless_node_address() {
    let c = simple(
        json!({"clusterIP": "10.96.0.10", "externalIPs": ["198.51.100.7", "192.168.0.10"], "ports": port80()}),
        &[READY_REMOTE("10.244.1.5")],
    );
    assert!(keys(&c).contains(&"TCP 198.51.100.7:80".to_string()));
    assert!(keys(&c).contains(&"TCP 192.168.0.10:80".to_string()));
    assert_eq!(c.addresses, vec![ip("10.96.0.10"), ip("198.51.100.7")]);
    assert!(has(
        &c,
        SetKind::ExternalIp,
        Family::Inet,
        IpsetEntry::IpPort(ip("198.51.100.7"), Protocol::Tcp, 80)
    ));
    assert!(!has(
        &c,
        SetKind::IpvsIps,
        Family::Inet,
        IpsetEntry::Ip(ip("192.168.0.10"))
    ));
}

fn lb(spec_extra: Value, ingress: Value) -> k8s_openapi::api::core::v1::Service {
    let mut spec = json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10",
        "ports": [{"name": "http", "port": 80, "nodePort": 30080}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), spec_extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    service_full(
        json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec,
        "status": {"loadBalancer": {"ingress": ingress}}}),
    )
}

#[test]
fn load_balancer_ingress_and_ip_mode_proxy() {
    let svc = lb(
        json!({}),
        json!([{"ip": "203.0.113.50"}, {"ip": "203.0.113.51", "ipMode": "Proxy"}, {"hostname": "lb.example"}]),
    );
    let c = build(&svc, &[], &node(), &ProxyConfig::default());
    assert!(keys(&c).contains(&"TCP 203.0.113.50:80".to_string()));
    assert!(!keys(&c).iter().any(|k| k.contains("203.0.113.51")));
    assert!(c.addresses.contains(&ip("203.0.113.50")));
    assert!(has(
        &c,
        SetKind::LoadBalancer,
        Family::Inet,
        IpsetEntry::IpPort(ip("203.0.113.50"), Protocol::Tcp, 80)
    ));
    assert!(!has(
        &c,
        SetKind::LoadBalancerFw,
        Family::Inet,
        IpsetEntry::IpPort(ip("203.0.113.50"), Protocol::Tcp, 80)
    ));
    assert!(c.no_node_access.is_empty());
}

#[test]
fn load_balancer_source_ranges_table() {
    let lbip = ip("203.0.113.50");
    // (ranges, allows node → SOURCE-IP entry, else no-node-access rule)
    let cases: Vec<(Vec<&str>, bool)> = vec![
        (vec!["10.0.0.0/8"], false),
        (vec!["10.0.0.0/8", "192.168.0.0/24"], true),
        (vec!["fd00::/8"], false),
    ];
    for (ranges, node_allowed) in cases {
        let svc = lb(
            json!({"loadBalancerSourceRanges": ranges}),
            json!([{"ip": "203.0.113.50"}]),
        );
        let c = build(&svc, &[], &node(), &ProxyConfig::default());
        assert!(has(
            &c,
            SetKind::LoadBalancerFw,
            Family::Inet,
            IpsetEntry::IpPort(lbip, Protocol::Tcp, 80)
        ));
        for r in ranges.iter().filter(|r| !r.contains(':')) {
            let cidr = r.parse().unwrap();
            assert!(
                has(
                    &c,
                    SetKind::LoadBalancerSourceCidr,
                    Family::Inet,
                    IpsetEntry::IpPortNet(lbip, Protocol::Tcp, 80, cidr)
                ),
                "{r}"
            );
        }
        let src_ip = has(
            &c,
            SetKind::LoadBalancerSourceIp,
            Family::Inet,
            IpsetEntry::IpPortIp(lbip, Protocol::Tcp, 80, lbip),
        );
        assert_eq!(src_ip, node_allowed, "{ranges:?}");
        assert_eq!(c.no_node_access.is_empty(), node_allowed, "{ranges:?}");
    }
    // Invalid range: warned, the rest kept.
    let svc = lb(
        json!({"loadBalancerSourceRanges": ["nope", " 10.0.0.0/8 "]}),
        json!([{"ip": "203.0.113.50"}]),
    );
    let c = build(&svc, &[], &node(), &ProxyConfig::default());
    assert_eq!(c.warnings.len(), 1);
}

// ---- traffic policies -------------------------------------------------------------

#[test]
fn external_traffic_policy_local() {
    let mk = |eps: &[Ep<'_>]| {
        let svc = lb(
            json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": 32000, "externalIPs": ["198.51.100.7"]}),
            json!([{"ip": "203.0.113.50"}]),
        );
        let sl = slice("ns", "w", "web", "IPv4", &[("http", 8080, "TCP")], eps);
        build(&svc, &[sl], &node(), &ProxyConfig::default())
    };
    let c = mk(&[READY_REMOTE("10.244.1.5"), READY_LOCAL("10.244.0.5")]);
    let local = vec![sa("10.244.0.5:8080")];
    assert_eq!(dests(&c, tcp("203.0.113.50:80")), local);
    assert_eq!(dests(&c, tcp("198.51.100.7:80")), local);
    assert_eq!(dests(&c, tcp("192.168.0.10:30080")), local);
    // Cluster IP still reaches every endpoint.
    assert_eq!(dests(&c, tcp("10.96.0.10:80")).len(), 2);
    assert!(has(
        &c,
        SetKind::NodePortLocalTcp,
        Family::Inet,
        IpsetEntry::Port(30080)
    ));
    assert!(has(
        &c,
        SetKind::LoadBalancerLocal,
        Family::Inet,
        IpsetEntry::IpPort(ip("203.0.113.50"), Protocol::Tcp, 80)
    ));
    assert!(has(
        &c,
        SetKind::ExternalIpLocal,
        Family::Inet,
        IpsetEntry::IpPort(ip("198.51.100.7"), Protocol::Tcp, 80)
    ));
    assert!(!has(
        &c,
        SetKind::ExternalIp,
        Family::Inet,
        IpsetEntry::IpPort(ip("198.51.100.7"), Protocol::Tcp, 80)
    ));
    assert!(has(
        &c,
        SetKind::HealthCheckNodePort,
        Family::Inet,
        IpsetEntry::Port(32000)
    ));
    assert_eq!(
        c.health.map(|h| (h.node_port, h.local_endpoints)),
        Some((32000, 1))
    );

    // No local endpoint: external traffic has no real servers (dropped), unlike upstream.
    let c = mk(&[READY_REMOTE("10.244.1.5")]);
    assert!(dests(&c, tcp("203.0.113.50:80")).is_empty());
    assert!(dests(&c, tcp("192.168.0.10:30080")).is_empty());
    assert_eq!(dests(&c, tcp("10.96.0.10:80")).len(), 1);
    assert_eq!(c.health.map(|h| h.local_endpoints), Some(0));
}

#[test]
fn internal_traffic_policy_local() {
    let c = simple(
        json!({"clusterIP": "10.96.0.10", "internalTrafficPolicy": "Local", "ports": port80()}),
        &[READY_REMOTE("10.244.1.5"), READY_LOCAL("10.244.0.5")],
    );
    assert_eq!(dests(&c, tcp("10.96.0.10:80")), vec![sa("10.244.0.5:8080")]);
    let c = simple(
        json!({"clusterIP": "10.96.0.10", "internalTrafficPolicy": "Local", "ports": port80()}),
        &[READY_REMOTE("10.244.1.5")],
    );
    assert!(dests(&c, tcp("10.96.0.10:80")).is_empty());
}

#[test]
fn terminating_endpoints_used_when_none_ready() {
    let c = simple(
        json!({"clusterIP": "10.96.0.10", "ports": port80()}),
        &[
            ("10.244.1.5", false, true, true, "node-b"),
            ("10.244.1.6", false, false, true, "node-b"),
        ],
    );
    assert_eq!(dests(&c, tcp("10.96.0.10:80")), vec![sa("10.244.1.5:8080")]);
}

// ---- affinity and scheduler -------------------------------------------------------

#[test]
fn session_affinity_client_ip() {
    let table = vec![
        (json!({"sessionAffinity": "ClientIP"}), Some(10800)),
        (
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
            Some(60),
        ),
        (json!({"sessionAffinity": "None"}), None),
    ];
    for (extra, timeout) in table {
        let mut spec = json!({"clusterIP": "10.96.0.10", "ports": port80()});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        let c = simple(spec, &[]);
        let s = &vs(&c, tcp("10.96.0.10:80")).service;
        assert_eq!(
            s.flags.contains(ServiceFlags::PERSISTENT),
            timeout.is_some()
        );
        assert_eq!(s.timeout, timeout.unwrap_or(0));
        assert_eq!(s.netmask, 32);
    }
}

#[test]
fn scheduler_annotations_table() {
    let cfg = ProxyConfig::default();
    // (annotations, scheduler, flags, warnings)
    let cases: Vec<(Value, &str, ServiceFlags, usize)> = vec![
        (json!({}), "rr", ServiceFlags::empty(), 0),
        (
            json!({"kube-ipvs.io/scheduler": "wlc"}),
            "wlc",
            ServiceFlags::empty(),
            0,
        ),
        (
            json!({"kube-ipvs.io/scheduler": "bogus"}),
            "rr",
            ServiceFlags::empty(),
            1,
        ),
        (
            json!({"kube-ipvs.io/scheduler": "sh", "kube-ipvs.io/scheduler-flags": "sh-port,sh-fallback"}),
            "sh",
            ServiceFlags::SH_PORT | ServiceFlags::SH_FALLBACK,
            0,
        ),
        (
            json!({"kube-ipvs.io/scheduler": "rr", "kube-ipvs.io/scheduler-flags": "sh-port"}),
            "rr",
            ServiceFlags::empty(),
            1,
        ),
        (
            json!({"kube-ipvs.io/scheduler-flags": "wat"}),
            "rr",
            ServiceFlags::empty(),
            1,
        ),
        (
            json!({"kube-ipvs.io/scheduler": "mh"}),
            "mh",
            ServiceFlags::MH_PORT | ServiceFlags::MH_FALLBACK,
            0,
        ),
        (
            json!({"kube-ipvs.io/scheduler": "mh", "kube-ipvs.io/scheduler-flags": "mh-fallback"}),
            "mh",
            ServiceFlags::MH_FALLBACK,
            0,
        ),
    ];
    for (ann, sched, flags, warns) in cases {
        let svc = service_full(
            json!({"metadata": {"namespace": "ns", "name": "web", "annotations": ann},
            "spec": {"clusterIP": "10.96.0.10", "ports": port80()}}),
        );
        let c = build(&svc, &[], &node(), &cfg);
        let s = &vs(&c, tcp("10.96.0.10:80")).service;
        assert_eq!(s.scheduler.name(), sched, "{ann}");
        assert_eq!(s.flags, flags, "{ann}");
        assert_eq!(c.warnings.len(), warns, "{ann}: {:?}", c.warnings);
    }
    // Global default applies when no annotation.
    let cfg = ProxyConfig {
        scheduler: Scheduler::LeastConnection,
        ..Default::default()
    };
    let c = build(
        &service(
            "ns",
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": port80()}),
        ),
        &[],
        &node(),
        &cfg,
    );
    assert_eq!(
        vs(&c, tcp("10.96.0.10:80")).service.scheduler,
        Scheduler::LeastConnection
    );
}

// ---- exclusions and topology ------------------------------------------------------

#[test]
fn services_inside_exclude_cidrs_are_programmed() {
    // Upstream uses excludeCIDRs only to keep its cleanup away; it still
    // programs Services there, and so must we (issue #13, 10b).
    let cfg = ProxyConfig {
        exclude_cidrs: vec!["198.51.100.0/24".parse().unwrap()],
        ..Default::default()
    };
    let svc = service(
        "ns",
        "web",
        json!({"clusterIP": "10.96.0.10", "externalIPs": ["198.51.100.7"], "ports": port80()}),
    );
    let c = build(&svc, &[], &node(), &cfg);
    assert_eq!(keys(&c), vec!["TCP 10.96.0.10:80", "TCP 198.51.100.7:80"]);
    assert!(c.addresses.contains(&ip("198.51.100.7")));
    assert!(has(
        &c,
        SetKind::ExternalIp,
        Family::Inet,
        IpsetEntry::IpPort(ip("198.51.100.7"), Protocol::Tcp, 80)
    ));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

// ---- virtual-server cap -------------------------------------------------------

fn no_cap() -> ProxyConfig {
    ProxyConfig {
        max_virtual_servers_per_service: 0,
        ..Default::default()
    }
}

#[test]
fn the_count_equals_the_virtual_servers_made() {
    // Shared addresses and ports are counted once, as they are made once.
    let lb = |spec: Value, ingress: Value| {
        service_full(
            json!({"metadata": {"namespace": "ns", "name": "web"}, "spec": spec,
                            "status": {"loadBalancer": {"ingress": ingress}}}),
        )
    };
    let two_ports = json!([{"name": "http", "port": 80, "nodePort": 30080},
                           {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053}]);
    let cases = [
        service(
            "ns",
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": port80()}),
        ),
        service(
            "ns",
            "web",
            json!({"clusterIP": "10.96.0.10", "ports": two_ports,
                   "externalIPs": ["10.96.0.10", "198.51.100.7", "fd00::7"]}),
        ),
        lb(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.0.10", "ports": two_ports,
                   "externalIPs": ["198.51.100.7"]}),
            json!([{"ip": "198.51.100.7"}, {"ip": "203.0.113.1"}]),
        ),
        // A node address as externalIP with a port equal to its nodePort: one VS.
        lb(
            json!({"type": "NodePort", "clusterIP": "10.96.0.10", "ipFamilies": ["IPv4", "IPv6"],
                   "clusterIPs": ["10.96.0.10", "fd00:96::10"],
                   "ports": [{"name": "http", "port": 30080, "nodePort": 30080},
                             {"name": "alt", "port": 8080, "nodePort": 30080}],
                   "externalIPs": ["192.168.0.10", "fd00:1::10"]}),
            json!([]),
        ),
    ];
    for svc in &cases {
        let ParsedService::Proxied(input) = parse_service(svc, &no_cap()) else {
            panic!("ignored")
        };
        let c = contribution(&input, &[], &node(), &no_cap());
        assert_eq!(
            super::contribution::count_virtual_servers(&input, &node(), &no_cap()),
            c.virtual_servers.len() as u64,
            "{:?}",
            keys(&c)
        );
    }
}

#[test]
fn a_service_over_the_cap_contributes_nothing_but_the_refusal() {
    let cfg = ProxyConfig {
        max_virtual_servers_per_service: 5,
        ..Default::default()
    };
    let svc = |ext: &[&str]| {
        service(
            "ns",
            "web",
            json!({"clusterIP": "10.96.0.10", "externalIPs": ext, "ports": [
                {"name": "a", "port": 80}, {"name": "b", "port": 81}]}),
        )
    };
    // 2 ports × 3 addresses = 6 > 5.
    let c = build(&svc(&["198.51.100.1", "198.51.100.2"]), &[], &node(), &cfg);
    assert!(c.virtual_servers.is_empty() && c.addresses.is_empty() && c.entries.is_empty());
    let r = c.refused.expect("refused");
    assert_eq!(r.label(), "too_many_virtual_servers");
    assert_eq!(
        r,
        super::contribution::Refusal::TooManyVirtualServers { count: 6, cap: 5 }
    );
    let w = c.warnings.join("\n");
    assert!(
        w.contains("needs 6 IPVS virtual servers") && w.contains("=5"),
        "{w}"
    );
    // At the cap: programmed.
    let c = build(&svc(&["198.51.100.1"]), &[], &node(), &cfg);
    assert_eq!(c.virtual_servers.len(), 4);
    assert_eq!(c.refused, None);
}

#[test]
fn ten_million_virtual_servers_are_refused_without_being_made() {
    // 10,000 ports × (1 + 1,000 externalIPs): counted, never built (building
    // them would take gigabytes and many seconds).
    let ports: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("p{i}"), "port": 10_000 + i}))
        .collect();
    let ext: Vec<String> = (0..1_000)
        .map(|j| format!("203.0.{}.{}", j >> 8, j & 0xff))
        .collect();
    let svc = service(
        "ns",
        "huge",
        json!({"clusterIP": "10.96.0.10", "externalIPs": ext, "ports": ports}),
    );
    let cfg = ProxyConfig::default();
    let start = std::time::Instant::now();
    let c = build(&svc, &[], &node(), &cfg);
    assert!(c.virtual_servers.is_empty());
    assert_eq!(
        c.refused,
        Some(super::contribution::Refusal::TooManyVirtualServers {
            count: 10_010_000,
            cap: cfg.max_virtual_servers_per_service
        })
    );
    // Generous bound for a debug build on a loaded machine; made, they took minutes.
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn many_ports_resolve_their_slice_ports_by_name() {
    // Each Service port finds its own slice port through the index.
    let n = 300u16;
    let ports: Vec<Value> = (0..n)
        .map(|i| json!({"name": format!("p{i}"), "port": 1_000 + i}))
        .collect();
    let svc = service(
        "ns",
        "web",
        json!({"clusterIP": "10.96.0.10", "ports": ports}),
    );
    let sp: Vec<(String, u16)> = (0..n)
        .rev()
        .map(|i| (format!("p{i}"), 20_000 + i))
        .collect();
    let sp_ref: Vec<(&str, u16, &str)> = sp.iter().map(|(s, p)| (s.as_str(), *p, "TCP")).collect();
    let sl = slice(
        "ns",
        "web-1",
        "web",
        "IPv4",
        &sp_ref,
        &[READY_REMOTE("10.244.1.5")],
    );
    let c = build(&svc, &[sl], &node(), &ProxyConfig::default());
    assert_eq!(c.virtual_servers.len(), n as usize);
    for i in [0, 7, n - 1] {
        assert_eq!(
            dests(&c, tcp(&format!("10.96.0.10:{}", 1_000 + i))),
            vec![sa(&format!("10.244.1.5:{}", 20_000 + i))]
        );
    }
}

#[test]
fn topology_hints_filter_cluster_endpoints() {
    let svc = service(
        "ns",
        "web",
        json!({"clusterIP": "10.96.0.10", "ports": port80()}),
    );
    let sl: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
        "metadata": {"namespace": "ns", "name": "w", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [
            {"addresses": ["10.244.0.5"], "zone": "zone-a", "hints": {"forZones": [{"name": "zone-a"}]}},
            {"addresses": ["10.244.1.5"], "zone": "zone-b", "hints": {"forZones": [{"name": "zone-b"}]}},
        ],
    }))
    .unwrap();
    let c = build(&svc, &[sl], &node(), &ProxyConfig::default());
    assert_eq!(dests(&c, tcp("10.96.0.10:80")), vec![sa("10.244.0.5:8080")]);
}

#[test]
fn duplicate_endpoints_across_slices_once() {
    let svc = service(
        "ns",
        "web",
        json!({"clusterIP": "10.96.0.10", "ports": port80()}),
    );
    let a = slice(
        "ns",
        "w1",
        "web",
        "IPv4",
        &[("http", 8080, "TCP")],
        &[READY_REMOTE("10.244.1.5")],
    );
    let b = slice(
        "ns",
        "w2",
        "web",
        "IPv4",
        &[("http", 8080, "TCP")],
        &[READY_REMOTE("10.244.1.5"), READY_REMOTE("10.244.1.6")],
    );
    let c = build(&svc, &[a, b], &node(), &ProxyConfig::default());
    assert_eq!(dests(&c, tcp("10.96.0.10:80")).len(), 2);
}

mod no_panic {
    //! Arbitrary field values never panic the model.

    use super::*;
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("10.96.0.1".to_string()),
            Just("fd00::1".to_string()),
            Just("None".to_string()),
            Just("".to_string()),
            Just("10.0.0.0/8".to_string()),
            Just("::/0".to_string()),
            "[0-9a-f.:/]{0,20}",
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_fields(
            ty in prop_oneof![Just("ClusterIP"), Just("NodePort"), Just("LoadBalancer"), Just("ExternalName"), Just("x")],
            cips in prop::collection::vec(text(), 0..3),
            ext in prop::collection::vec(text(), 0..3),
            ranges in prop::collection::vec(text(), 0..3),
            ports in prop::collection::vec((any::<i32>(), any::<i32>(), prop_oneof![Just("TCP"), Just("UDP"), Just("SCTP"), Just("X")]), 0..4),
            eps in prop::collection::vec((text(), any::<Option<bool>>(), any::<Option<bool>>()), 0..4),
            sport in any::<i32>(),
            fam in prop_oneof![Just("IPv4"), Just("IPv6"), Just("FQDN")],
            hc in any::<i32>(),
            timeout in any::<i32>(),
        ) {
            let ports: Vec<Value> = ports.iter().enumerate().map(|(i, (p, np, proto))| json!({"name": format!("p{}", i % 2), "port": p, "nodePort": np, "protocol": proto})).collect();
            let svc = service_full(json!({"metadata": {"namespace": "ns", "name": "web"},
                "spec": {"type": ty, "clusterIP": cips.first().cloned().unwrap_or_default(), "clusterIPs": cips,
                         "externalIPs": ext, "loadBalancerSourceRanges": ranges, "ports": ports,
                         "externalTrafficPolicy": "Local", "healthCheckNodePort": hc,
                         "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}}},
                "status": {"loadBalancer": {"ingress": [{"ip": ext.first().cloned().unwrap_or_default()}]}}}));
            let endpoints: Vec<Value> = eps.iter().map(|(a, r, t)| json!({"addresses": [a], "conditions": {"ready": r, "terminating": t}, "nodeName": "node-a"})).collect();
            let sl: k8s_openapi::api::discovery::v1::EndpointSlice = serde_json::from_value(json!({
                "metadata": {"namespace": "ns", "name": "w", "labels": {"kubernetes.io/service-name": "web"}},
                "addressType": fam, "ports": [{"name": "p0", "port": sport}, {"name": "p1", "port": sport}], "endpoints": endpoints})).unwrap();
            let cfg = ProxyConfig::default();
            if let ParsedService::Proxied(input) = parse_service(&svc, &cfg) {
                let parsed: Vec<_> = parse_slice(&sl, "node-a").into_iter().collect();
                let refs: Vec<_> = parsed.iter().collect();
                let c = contribution(&input, &refs, &node(), &cfg);
                for (set, e) in &c.entries {
                    prop_assert!(e.fits(set));
                }
            }
        }
    }
}
