//! Reconcile tests: minimal plans, ordering, drains, adoption, drift, ownership,
//! and the property that plans carry a strict kernel from any state to desired.

use std::net::{IpAddr, SocketAddr};

use ipvs_netlink::ipvs::{Destination, Family, Scheduler, Service as IpvsService, ServiceKey};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::plan::Plan;
use super::proxier::Proxier;
use crate::model::config::ProxyConfig;
use crate::model::testutil::{node, service, service_full, slice};
use crate::state::{
    ConnCounts, IpsetEntry, IpvsOp, KService, KernelParts, KernelState, Op, SetKind, SetName,
};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(s: &str) -> ServiceKey {
    ServiceKey::Tcp(sa(s))
}

fn web(spec_extra: Value) -> Service {
    let mut spec = json!({"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]});
    for (k, v) in spec_extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    service("ns", "web", spec)
}

fn web_slice(eps: &[&str]) -> EndpointSlice {
    let eps: Vec<(&str, bool, bool, bool, &str)> = eps
        .iter()
        .map(|e| (*e, true, true, false, "node-b"))
        .collect();
    slice("ns", "web-1", "web", "IPv4", &[("http", 8080, "TCP")], &eps)
}

fn proxier() -> Proxier {
    Proxier::new(
        ProxyConfig {
            families: vec![Family::Inet],
            ..Default::default()
        },
        node(),
    )
}

/// Applies a plan to a strict kernel, failing the test on any refusal.
fn apply(k: &mut KernelState, p: &Plan) {
    assert!(p.internal_errors.is_empty(), "{:?}", p.internal_errors);
    if let Err(e) = k.apply_all(&p.ops) {
        panic!("kernel refused: {e}\nplan: {:#?}", p.ops);
    }
}

fn ipvs_ops(p: &Plan) -> Vec<&IpvsOp> {
    p.ops
        .iter()
        .filter_map(|o| match o {
            Op::Ipvs(i) => Some(i),
            _ => None,
        })
        .collect()
}

pub(super) fn no_conns(_: &ServiceKey, _: &SocketAddr) -> Option<ConnCounts> {
    Some(ConnCounts::default())
}

fn busy(_: &ServiceKey, _: &SocketAddr) -> Option<ConnCounts> {
    Some(ConnCounts {
        active: 3,
        inactive: 1,
    })
}

#[test]
fn first_sync_builds_everything_in_safe_order() {
    let mut p = proxier();
    p.upsert_service(&web(json!({})));
    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    let plan = p.sync(0);
    let mut k = KernelState::default();
    apply(&mut k, &plan);
    assert_eq!(k, p.desired_state());
    assert_eq!(&k, p.applied());
    // The address is bound only after its service and all real servers exist;
    // it is marked ours in KUBE-IPVS-IPS before the service is created.
    let pos = |pred: &dyn Fn(&Op) -> bool| plan.ops.iter().position(pred).unwrap();
    let bind = pos(&|o| matches!(o, Op::AddAddress(a) if *a == ip("10.96.0.10")));
    let add_svc = pos(&|o| matches!(o, Op::Ipvs(IpvsOp::AddService(_))));
    let last_dest = plan
        .ops
        .iter()
        .rposition(|o| matches!(o, Op::Ipvs(IpvsOp::AddDestination(..))))
        .unwrap();
    let set_add = pos(&|o| matches!(o, Op::IpsetAdd(s, _) if s.kind != SetKind::IpvsIps));
    let mark = pos(&|o| matches!(o, Op::IpsetAdd(s, _) if s.kind == SetKind::IpvsIps));
    let create = pos(&|o| matches!(o, Op::CreateSet(_)));
    assert!(create < mark && mark < add_svc);
    assert!(add_svc < last_dest && last_dest < set_add && set_add < bind);
    assert!(plan.ops.iter().any(
        |o| matches!(o, Op::Sysctl { key, .. } if key == "net.ipv4.vs.expire_quiescent_template")
    ));
    assert!(
        k.ipvsadm_save()
            .contains("-a -t 10.96.0.10:80 -r 10.244.1.6:8080 -m -w 1")
    );
    // Nothing changed → nothing to do.
    assert!(p.sync(1).is_empty());
    // Re-delivering identical objects is not a change either.
    p.upsert_service(&web(json!({})));
    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    assert!(p.sync(2).is_empty());
}

#[test]
fn endpoint_add_is_one_op_and_tcp_removal_drains() {
    let mut p = proxier();
    let mut k = KernelState::default();
    p.upsert_service(&web(json!({})));
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    apply(&mut k, &p.sync(0));

    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    let plan = p.sync(10);
    assert_eq!(
        plan.ops,
        vec![Op::Ipvs(IpvsOp::AddDestination(
            tcp("10.96.0.10:80"),
            Destination::masq(sa("10.244.1.6:8080"))
        ))]
    );
    apply(&mut k, &plan);

    // Removal: weight 0, not deleted.
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    let plan = p.sync(20);
    let mut drained = Destination::masq(sa("10.244.1.6:8080"));
    drained.weight = 0;
    assert_eq!(
        plan.ops,
        vec![Op::Ipvs(IpvsOp::EditDestination(
            tcp("10.96.0.10:80"),
            drained
        ))]
    );
    apply(&mut k, &plan);
    assert_eq!(p.drains().len(), 1);

    // Busy and young: stays.
    assert!(p.tick(30, busy).is_empty());
    // Idle: deleted.
    let plan = p.tick(40, no_conns);
    assert_eq!(
        plan.ops,
        vec![Op::Ipvs(IpvsOp::DeleteDestination(
            tcp("10.96.0.10:80"),
            sa("10.244.1.6:8080")
        ))]
    );
    apply(&mut k, &plan);
    assert_eq!(k, p.desired_state());
    assert!(p.drains().is_empty());
}

#[test]
fn drain_is_bounded_by_timeout() {
    let mut p = proxier();
    let mut k = KernelState::default();
    p.upsert_service(&web(json!({})));
    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    apply(&mut k, &p.sync(0));
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    apply(&mut k, &p.sync(100));
    let limit = p.config().drain_timeout_secs;
    assert!(p.tick(100 + limit - 1, busy).is_empty());
    // Unknown counts (not observed) never finish a drain early either.
    assert!(p.tick(100 + limit - 1, |_, _| None).is_empty());
    let plan = p.tick(100 + limit, busy);
    assert_eq!(ipvs_ops(&plan).len(), 1);
    apply(&mut k, &plan);
    assert_eq!(k, p.desired_state());
}

#[test]
fn endpoint_returning_during_drain_gets_full_weight() {
    let mut p = proxier();
    let mut k = KernelState::default();
    p.upsert_service(&web(json!({})));
    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    apply(&mut k, &p.sync(0));
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    apply(&mut k, &p.sync(1));
    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    let plan = p.sync(2);
    assert_eq!(
        plan.ops,
        vec![Op::Ipvs(IpvsOp::EditDestination(
            tcp("10.96.0.10:80"),
            Destination::masq(sa("10.244.1.6:8080"))
        ))]
    );
    apply(&mut k, &plan);
    assert!(p.drains().is_empty());
    assert!(p.tick(10_000, no_conns).is_empty());
}

#[test]
fn affinity_with_draining_relies_on_quiescent_template_expiry() {
    // #71809: persistence templates would pin clients to a weight-0 server;
    // expire_quiescent_template=1 makes them expire. We always set it.
    let mut p = proxier();
    p.upsert_service(&web(json!({"sessionAffinity": "ClientIP"})));
    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    let plan = p.sync(0);
    assert!(plan.ops.contains(&Op::Sysctl {
        key: "net.ipv4.vs.expire_quiescent_template".into(),
        value: "1".into()
    }));
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    let plan = p.sync(1);
    assert!(matches!(ipvs_ops(&plan)[..], [IpvsOp::EditDestination(_, d)] if d.weight == 0));
}

#[test]
fn udp_removal_is_immediate_with_conntrack_cleanup() {
    let mut p = proxier();
    let mut k = KernelState::default();
    let svc = service(
        "ns",
        "dns",
        json!({"clusterIP": "10.96.0.53", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
    );
    let sl = |eps: &[&str]| {
        let eps: Vec<_> = eps
            .iter()
            .map(|e| (*e, true, true, false, "node-b"))
            .collect();
        slice("ns", "dns-1", "dns", "IPv4", &[("dns", 53, "UDP")], &eps)
    };
    p.upsert_service(&svc);
    p.upsert_slice(&sl(&["10.244.1.5", "10.244.1.6"]));
    apply(&mut k, &p.sync(0));
    p.upsert_slice(&sl(&["10.244.1.5"]));
    let plan = p.sync(1);
    let key = ServiceKey::Udp(sa("10.96.0.53:53"));
    assert_eq!(plan.ops.len(), 2);
    assert_eq!(
        plan.ops[0],
        Op::Ipvs(IpvsOp::DeleteDestination(key, sa("10.244.1.6:53")))
    );
    assert!(
        matches!(&plan.ops[1], Op::Conntrack(c) if c.endpoint == Some(ip("10.244.1.6")) && c.vip == Some(sa("10.96.0.53:53")))
    );
    apply(&mut k, &plan);
    assert!(p.drains().is_empty());
    // Deleting the Service: address unbound before the service goes; conntrack last.
    p.delete_service("ns", "dns");
    let plan = p.sync(2);
    let unbind = plan
        .ops
        .iter()
        .position(|o| matches!(o, Op::DelAddress(_)))
        .unwrap();
    let del = plan
        .ops
        .iter()
        .position(|o| matches!(o, Op::Ipvs(IpvsOp::DeleteService(_))))
        .unwrap();
    assert!(unbind < del);
    assert!(matches!(plan.ops.last(), Some(Op::Conntrack(_))));
    // The flows go by their reply source: one filter per former endpoint,
    // never a whole-VIP filter the conntrack client cannot express.
    let flows: Vec<_> = plan
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::Conntrack(c) => Some((c.vip, c.endpoint)),
            _ => None,
        })
        .collect();
    assert_eq!(
        flows,
        vec![(Some(sa("10.96.0.53:53")), Some(ip("10.244.1.5")))]
    );
    apply(&mut k, &plan);
    assert_eq!(k, p.desired_state());
}

#[test]
fn service_changes_type_and_family() {
    let mut p = Proxier::new(ProxyConfig::default(), node());
    let mut k = KernelState::default();
    let steps = [
        web(json!({})),
        web(
            json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        ),
        web(
            json!({"type": "NodePort", "clusterIPs": ["10.96.0.10", "fd00:96::10"], "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
        ),
        web(json!({"clusterIPs": ["10.96.0.10", "fd00:96::10"], "sessionAffinity": "ClientIP"})),
        web(json!({"clusterIPs": ["fd00:96::10"], "clusterIP": "fd00:96::10"})),
        web(json!({"clusterIP": "None"})),
        web(json!({"type": "ExternalName", "externalName": "x"})),
        web(json!({})),
    ];
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    p.upsert_slice(&slice(
        "ns",
        "web-6",
        "web",
        "IPv6",
        &[("http", 8080, "TCP")],
        &[("fd00:244::5", true, true, false, "node-a")],
    ));
    for (i, s) in steps.iter().enumerate() {
        p.upsert_service(s);
        let plan = p.sync(i as u64);
        apply(&mut k, &plan);
        apply(&mut k, &p.tick(1_000_000 + i as u64, no_conns));
        assert_eq!(k, p.desired_state(), "step {i}");
    }
    assert!(k.services.contains_key(&tcp("10.96.0.10:80")));
    assert_eq!(k.services.len(), 1);
}

#[test]
fn conflicting_external_ip_owner_is_deterministic() {
    let mut p = proxier();
    let mut k = KernelState::default();
    let a = service(
        "ns",
        "a",
        json!({"clusterIP": "10.96.0.1", "externalIPs": ["198.51.100.7"], "ports": [{"name": "http", "port": 80}]}),
    );
    let b = service_full(
        json!({"metadata": {"namespace": "ns", "name": "b", "annotations": {"kube-ipvs.io/scheduler": "lc"}},
        "spec": {"clusterIP": "10.96.0.2", "externalIPs": ["198.51.100.7"], "ports": [{"name": "http", "port": 80}]}}),
    );
    p.upsert_service(&b);
    p.upsert_service(&a);
    apply(&mut k, &p.sync(0));
    let ext = tcp("198.51.100.7:80");
    assert_eq!(k.services[&ext].service.scheduler, Scheduler::RoundRobin);
    assert!(
        p.warnings()
            .get("ns/b")
            .is_some_and(|w| w.iter().any(|w| w.contains("ns/a")))
    );
    p.delete_service("ns", "a");
    let plan = p.sync(1);
    assert!(
        plan.ops
            .iter()
            .any(|o| matches!(o, Op::Ipvs(IpvsOp::EditService(s)) if s.key == ext))
    );
    // The shared address stays bound throughout.
    assert!(!plan.ops.contains(&Op::DelAddress(ip("198.51.100.7"))));
    apply(&mut k, &plan);
    assert_eq!(k, p.desired_state());
}

#[test]
fn iptables_payload_only_when_rules_change() {
    let mut p = proxier();
    let mut k = KernelState::default();
    p.upsert_service(&web(json!({})));
    let plan = p.sync(0);
    assert_eq!(
        plan.ops
            .iter()
            .filter(|o| matches!(o, Op::IptablesRestore { .. }))
            .count(),
        1
    );
    apply(&mut k, &plan);
    // An LB whose source ranges exclude the node adds an OUT-FILTER rule (#119656).
    let lb = service_full(json!({"metadata": {"namespace": "ns", "name": "lb"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.20", "loadBalancerSourceRanges": ["10.0.0.0/8"],
                 "ports": [{"name": "http", "port": 443, "nodePort": 30443}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.50"}]}}}));
    p.upsert_service(&lb);
    let plan = p.sync(1);
    let payloads: Vec<_> = plan
        .ops
        .iter()
        .filter_map(|o| match o {
            Op::IptablesRestore { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(payloads.len(), 1);
    assert!(payloads[0].contains("--vaddr 203.0.113.50 --vproto tcp --vport 443 -j DROP"));
    apply(&mut k, &plan);
    // Endpoint churn never re-renders.
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    let plan = p.sync(2);
    assert!(
        !plan
            .ops
            .iter()
            .any(|o| matches!(o, Op::IptablesRestore { .. }))
    );
    apply(&mut k, &plan);
    p.delete_service("ns", "lb");
    let plan = p.sync(3);
    assert_eq!(
        plan.ops
            .iter()
            .filter(|o| matches!(o, Op::IptablesRestore { .. }))
            .count(),
        1
    );
    apply(&mut k, &plan);
    assert_eq!(k, p.desired_state());
}

#[test]
fn one_service_change_touches_only_that_service() {
    let mut p = proxier();
    let mut k = KernelState::default();
    for i in 0..200u32 {
        let name = format!("s{i}");
        p.upsert_service(&service("ns", &name, json!({"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1), "ports": [{"name": "http", "port": 80}]})));
        let eps: Vec<String> = (0..5)
            .map(|j| format!("10.244.{}.{}", i % 250, j + 1))
            .collect();
        let eps: Vec<_> = eps
            .iter()
            .map(|e| (e.as_str(), true, true, false, "node-b"))
            .collect();
        p.upsert_slice(&slice(
            "ns",
            &format!("{name}-1"),
            &name,
            "IPv4",
            &[("http", 8080, "TCP")],
            &eps,
        ));
    }
    apply(&mut k, &p.sync(0));
    let eps = [("10.244.7.9", true, true, false, "node-b")];
    p.upsert_slice(&slice(
        "ns",
        "s7-1",
        "s7",
        "IPv4",
        &[("http", 8080, "TCP")],
        &eps,
    ));
    let plan = p.sync(1);
    // 1 add + 5 drains, nothing else.
    assert_eq!(plan.ops.len(), 6, "{:#?}", plan.ops);
    apply(&mut k, &plan);
    apply(&mut k, &p.tick(2, no_conns));
    assert_eq!(k, p.desired_state());
}

// ---- adoption, drift, ownership ----------------------------------------------------------

pub(super) fn keepalived_vs() -> KService {
    let mut s = KService::new(IpvsService::new(tcp("192.168.0.100:80")));
    s.destinations
        .push(Destination::masq(sa("192.168.0.21:80")));
    s
}

#[test]
fn adopt_never_flushes_resets_zero_weights_and_leaves_foreign_alone() {
    let cfg = ProxyConfig {
        families: vec![Family::Inet],
        exclude_cidrs: vec!["10.200.0.0/16".parse().unwrap()],
        ..Default::default()
    };
    // What a previous run left behind, plus foreign state.
    let mut desired_run = Proxier::new(cfg.clone(), node());
    desired_run.upsert_service(&web(json!({})));
    desired_run.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    let mut observed = desired_run.desired_state();
    let key = tcp("10.96.0.10:80");
    for d in &mut observed.services.get_mut(&key).unwrap().destinations {
        d.weight = 0; // left at 0 by a drain in progress (#92019)
    }
    // A stale service of ours (on kube-ipvs0) and a stale NodePort one.
    observed.addresses.insert(ip("10.96.0.99"));
    observed.services.insert(
        tcp("10.96.0.99:80"),
        KService::new(IpvsService::new(tcp("10.96.0.99:80"))),
    );
    observed.services.insert(
        tcp("192.168.0.10:31000"),
        KService::new(IpvsService::new(tcp("192.168.0.10:31000"))),
    );
    // Foreign: keepalived VIP, an excluded service bound on kube-ipvs0, a fwmark service.
    observed
        .services
        .insert(tcp("192.168.0.100:80"), keepalived_vs());
    observed.addresses.insert(ip("10.200.0.5"));
    observed.services.insert(
        tcp("10.200.0.5:443"),
        KService::new(IpvsService::new(tcp("10.200.0.5:443"))),
    );
    let fwm = ServiceKey::FwMark {
        mark: 7,
        family: Family::Inet,
    };
    observed
        .services
        .insert(fwm, KService::new(IpvsService::new(fwm)));

    let mut p = Proxier::new(cfg, node());
    p.upsert_service(&web(json!({})));
    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    let mut kernel = observed.clone();
    let plan = p.adopt(observed.clone(), 0);
    apply(&mut kernel, &plan);
    let ops: Vec<String> = plan.ops.iter().map(|o| o.to_string()).collect();
    // Exactly: two weights reset, two stale services deleted, one stale address unbound.
    assert_eq!(plan.ops.len(), 5, "{ops:#?}");
    assert!(
        kernel.services[&key]
            .destinations
            .iter()
            .all(|d| d.weight == 1)
    );
    assert!(!kernel.services.contains_key(&tcp("10.96.0.99:80")));
    assert!(!kernel.services.contains_key(&tcp("192.168.0.10:31000")));
    // Foreign state untouched.
    assert_eq!(kernel.services[&tcp("192.168.0.100:80")], keepalived_vs());
    assert!(kernel.services.contains_key(&tcp("10.200.0.5:443")));
    assert!(kernel.services.contains_key(&fwm));
    assert!(kernel.addresses.contains(&ip("10.200.0.5")));
    for o in &plan.ops {
        let s = o.to_string();
        assert!(
            !s.contains("192.168.0.100") && !s.contains("10.200.") && !s.contains("FWM"),
            "{s}"
        );
    }
    assert_eq!(p.owned_view(&kernel), p.desired_state());
}

/// An externalIP equal to a node address is never bound and never in
/// KUBE-IPVS-IPS; after a restart with its Service deleted meanwhile, the
/// IPVS service left on the node address must still be recognised as ours.
#[test]
fn a_node_address_service_is_ours_after_a_restart() {
    let node_svc = |p: &mut Proxier| {
        p.upsert_service(&web(json!({"externalIPs": ["192.168.0.10"]})));
        p.upsert_slice(&web_slice(&["10.244.1.5"]));
    };
    let mut first = proxier();
    node_svc(&mut first);
    let mut kernel = KernelState::default();
    apply(&mut kernel, &first.sync(0));
    let vs = tcp("192.168.0.10:80");
    assert!(kernel.services.contains_key(&vs));
    assert!(!kernel.addresses.contains(&ip("192.168.0.10")));
    kernel
        .services
        .insert(tcp("192.168.0.100:80"), keepalived_vs());

    // Restart with the Service gone: the orphan is deleted, foreign state kept.
    let mut p = proxier();
    let plan = p.adopt(kernel.clone(), 0);
    apply(&mut kernel, &plan);
    assert!(!kernel.services.contains_key(&vs), "{:#?}", plan.ops);
    assert_eq!(kernel.services[&tcp("192.168.0.100:80")], keepalived_vs());
    assert_eq!(p.owned_view(&kernel), p.desired_state());

    // Killed between any two operations of the first sync or of the
    // deletion: a restart still finds the service on the node address.
    let mut before = proxier();
    node_svc(&mut before);
    let create = before.sync(0);
    let mut after = proxier();
    node_svc(&mut after);
    let mut k = KernelState::default();
    apply(&mut k, &after.sync(0));
    after.delete_service("ns", "web");
    let delete = after.sync(1);
    for (start, plan) in [(KernelState::default(), &create), (k, &delete)] {
        for cut in 0..=plan.ops.len() {
            let mut k = start.clone();
            k.apply_all(&plan.ops[..cut]).unwrap();
            let mut p = proxier();
            let plan = p.adopt(k.clone(), 0);
            apply(&mut k, &plan);
            assert!(!k.services.contains_key(&vs), "cut {cut}: {:#?}", plan.ops);
            assert_eq!(p.owned_view(&k), p.desired_state(), "cut {cut}");
        }
    }
}

#[test]
fn drift_repair_reports_and_fixes() {
    let mut p = proxier();
    let mut k = KernelState::default();
    p.upsert_service(&web(json!({})));
    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    apply(&mut k, &p.sync(0));
    // Someone deletes a real server, an ipset member and unbinds the address,
    // and adds an unknown real server to our service.
    let key = tcp("10.96.0.10:80");
    let svc = k.services.get_mut(&key).unwrap();
    svc.destinations.remove(0);
    svc.destinations
        .push(Destination::masq(sa("10.244.9.9:8080")));
    k.addresses.remove(&ip("10.96.0.10"));
    let cip = SetName::new(SetKind::ClusterIp, Family::Inet);
    k.sets.get_mut(&cip).unwrap().clear();
    let plan = p.repair(k.clone(), 5);
    assert_eq!(plan.ops.len(), 4, "{:#?}", plan.ops);
    apply(&mut k, &plan);
    apply(&mut k, &p.tick(6, no_conns));
    assert_eq!(k, p.desired_state());
    // Converged: repairing again finds nothing.
    assert!(p.repair(k.clone(), 7).is_empty());
}

#[test]
fn a_repair_from_some_parts_takes_the_others_as_applied() {
    let mut p = proxier();
    let mut k = KernelState::default();
    p.upsert_service(&web(json!({})));
    p.upsert_slice(&web_slice(&["10.244.1.5", "10.244.1.6"]));
    apply(&mut k, &p.sync(0));
    assert!(!k.iptables.is_empty());
    let key = tcp("10.96.0.10:80");
    let cip = SetName::new(SetKind::ClusterIp, Family::Inet);
    // One drift in each part.
    let mut drifted = k.clone();
    drifted
        .services
        .get_mut(&key)
        .unwrap()
        .destinations
        .remove(0);
    drifted.addresses.remove(&ip("10.96.0.10"));
    drifted.sets.get_mut(&cip).unwrap().clear();
    drifted.iptables.clear();
    // An observation that read none of them (what was not read is empty)
    // must not mistake the parts it did not read for drift.
    let none = KernelParts {
        ipvs: false,
        sets: false,
        addresses: false,
        iptables: [false; 2],
    };
    let nothing_read = KernelState {
        sysctls: k.sysctls.clone(),
        timeouts: k.timeouts,
        ..KernelState::default()
    };
    let plan = p.repair_parts(nothing_read, none, 5);
    assert!(plan.is_empty(), "{:#?}", plan.ops);
    // `base` with the parts `read` names as they are in `drifted`.
    let with_read = |mut base: KernelState, read: KernelParts| {
        if read.ipvs {
            base.services = drifted.services.clone();
        }
        if read.sets {
            base.sets = drifted.sets.clone();
        }
        if read.addresses {
            base.addresses = drifted.addresses.clone();
        }
        for f in [Family::Inet, Family::Inet6] {
            if read.iptables_of(f) {
                match drifted.iptables.get(&f) {
                    Some(v) => base.iptables.insert(f, v.clone()),
                    None => base.iptables.remove(&f),
                };
            }
        }
        base
    };
    // Each part, when read, finds its own drift and only it.
    let only = |f: &dyn Fn(&mut KernelParts)| {
        let mut r = none;
        f(&mut r);
        r
    };
    for (read, expect) in [
        (only(&|r| r.ipvs = true), 1),
        (only(&|r| r.sets = true), 1),
        (only(&|r| r.addresses = true), 1),
        (only(&|r| r.set_iptables(Family::Inet, true)), 1),
        (KernelParts::ALL, 4),
    ] {
        // What an observation of `read` holds: the drifted parts it read.
        let seen = with_read(
            KernelState {
                sysctls: drifted.sysctls.clone(),
                timeouts: drifted.timeouts,
                ..KernelState::default()
            },
            read,
        );
        let plan = p.repair_parts(seen, read, 6);
        assert_eq!(plan.ops.len(), expect, "{read:?}: {:#?}", plan.ops);
        // Repaired: the kernel (drifted where read, as applied elsewhere)
        // with the plan applied is the desired state.
        let mut fixed = with_read(k.clone(), read);
        apply(&mut fixed, &plan);
        assert!(p.repair(fixed, 7).is_empty(), "{read:?}");
    }
}

#[test]
fn ipset_members_follow_shared_addresses() {
    // Two ports on one cluster IP: removing one port keeps the address.
    let mut p = proxier();
    let mut k = KernelState::default();
    p.upsert_service(&web(
        json!({"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}),
    ));
    apply(&mut k, &p.sync(0));
    p.upsert_service(&web(json!({})));
    let plan = p.sync(1);
    assert!(!plan.ops.iter().any(|o| matches!(o, Op::DelAddress(_))));
    assert!(plan.ops.contains(&Op::IpsetDel(
        SetName::new(SetKind::ClusterIp, Family::Inet),
        IpsetEntry::IpPort(ip("10.96.0.10"), ipvs_netlink::ipvs::Protocol::Tcp, 443)
    )));
    apply(&mut k, &plan);
    assert_eq!(k, p.desired_state());
}

pub(super) mod property {
    //! Property: from any state A (built from random objects, or a random
    //! kernel), the plans reach exactly the desired state B on a strict kernel.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    pub(crate) struct SvcGen {
        ty: u8,
        dual: bool,
        ports: Vec<(u8, u8)>,
        ext: Option<u8>,
        lb: Option<u8>,
        ranges: bool,
        etp_local: bool,
        itp_local: bool,
        affinity: bool,
        sched: u8,
        eps: Vec<(u8, u8, bool)>,
    }

    pub(crate) fn svc_gen() -> impl Strategy<Value = SvcGen> {
        (
            0u8..3,
            any::<bool>(),
            prop::collection::vec((0u8..3, 0u8..3), 0..3),
            // 3: a node address (never bound).
            prop::option::of(0u8..4),
            prop::option::of(0u8..4),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0u8..4,
            prop::collection::vec((0u8..6, 0u8..4, any::<bool>()), 0..5),
        )
            .prop_map(
                |(ty, dual, ports, ext, lb, ranges, etp_local, itp_local, affinity, sched, eps)| {
                    SvcGen {
                        ty,
                        dual,
                        ports,
                        ext,
                        lb,
                        ranges,
                        etp_local,
                        itp_local,
                        affinity,
                        sched,
                        eps,
                    }
                },
            )
    }

    const PROTOS: [&str; 3] = ["TCP", "UDP", "SCTP"];

    fn objects(i: usize, g: &SvcGen) -> (Service, Vec<EndpointSlice>) {
        let name = format!("s{i}");
        let ty = ["ClusterIP", "NodePort", "LoadBalancer"][g.ty as usize];
        let mut ports: Vec<Value> = Vec::new();
        let mut sports: Vec<(String, u16, &str)> = Vec::new();
        for (n, p) in &g.ports {
            let pname = format!("p{n}");
            if sports.iter().any(|(x, _, _)| *x == pname) {
                continue;
            }
            let proto = PROTOS[*p as usize];
            let port = 80 + *n as u16;
            let mut pj = json!({"name": pname, "port": port, "protocol": proto});
            if ty != "ClusterIP" {
                pj["nodePort"] = json!(30000 + (i as u16) * 10 + *n as u16);
            }
            ports.push(pj);
            sports.push((pname, 8000 + *n as u16, proto));
        }
        let mut cips = vec![format!("10.96.0.{}", i + 1)];
        if g.dual {
            cips.push(format!("fd00:96::{:x}", i + 1));
        }
        let mut spec = json!({"type": ty, "clusterIP": cips[0], "clusterIPs": cips, "ports": ports,
            "externalTrafficPolicy": if g.etp_local { "Local" } else { "Cluster" },
            "internalTrafficPolicy": if g.itp_local { "Local" } else { "Cluster" }});
        if let Some(e) = g.ext {
            // Small pool: services collide on external IPs.
            let ip = if e == 3 {
                "192.168.0.10".to_string()
            } else {
                format!("198.51.100.{e}")
            };
            spec["externalIPs"] = json!([ip]);
        }
        if g.affinity {
            spec["sessionAffinity"] = json!("ClientIP");
        }
        if g.ranges {
            spec["loadBalancerSourceRanges"] = json!(["10.0.0.0/8"]);
        }
        if ty == "LoadBalancer" && g.etp_local {
            spec["healthCheckNodePort"] = json!(32000 + i as u16);
        }
        let sched = ["rr", "wlc", "sh", "bogus"][g.sched as usize];
        let mut v = json!({"metadata": {"namespace": "ns", "name": name, "annotations": {"kube-ipvs.io/scheduler": sched}}, "spec": spec});
        if let Some(l) = g.lb {
            let (v4, v6) = if l == 3 {
                ("192.168.0.10".to_string(), "fd00:1::10".to_string())
            } else {
                (format!("203.0.113.{l}"), format!("2001:db8::{l}"))
            };
            v["status"] = json!({"loadBalancer": {"ingress": [{"ip": v4}, {"ip": v6}]}});
        }
        let svc = service_full(v);
        let pr: Vec<(&str, u16, &str)> = sports
            .iter()
            .map(|(a, b, c)| (a.as_str(), *b, *c))
            .collect();
        let mut slices = Vec::new();
        for (fam, fname) in [("IPv4", "v4"), ("IPv6", "v6")] {
            let ips: Vec<String> = g
                .eps
                .iter()
                .map(|(h, _, _)| {
                    if fam == "IPv4" {
                        format!("10.244.0.{}", h + 1)
                    } else {
                        format!("fd00:244::{}", h + 1)
                    }
                })
                .collect();
            let eps: Vec<(&str, bool, bool, bool, &str)> = g
                .eps
                .iter()
                .zip(&ips)
                .map(|((_, cond, local), ip)| {
                    let (r, s, t) = [
                        (true, true, false),
                        (false, true, true),
                        (false, false, true),
                        (false, false, false),
                    ][*cond as usize];
                    (
                        ip.as_str(),
                        r,
                        s,
                        t,
                        if *local { "node-a" } else { "node-b" },
                    )
                })
                .collect();
            slices.push(slice(
                "ns",
                &format!("{name}-{fname}"),
                &name,
                fam,
                &pr,
                &eps,
            ));
        }
        (svc, slices)
    }

    pub(crate) fn load(p: &mut Proxier, gens: &[SvcGen], prev: usize) {
        for (i, g) in gens.iter().enumerate() {
            let (s, sl) = objects(i, g);
            p.upsert_service(&s);
            for x in &sl {
                p.upsert_slice(x);
            }
        }
        for i in gens.len()..prev {
            p.delete_service("ns", &format!("s{i}"));
            p.delete_slice("ns", &format!("s{i}-v4"));
            p.delete_slice("ns", &format!("s{i}-v6"));
        }
    }

    /// Ops of every phase, told apart by the address they carry.
    fn op_of(kind: u8, n: u16) -> Op {
        let a = IpAddr::from([10, 0, (n >> 8) as u8, n as u8]);
        let key = ServiceKey::Tcp(SocketAddr::new(a, 80));
        let d = Destination::masq(SocketAddr::new(a, 8080));
        match kind % 8 {
            0 => Op::AddAddress(a),
            1 => Op::DelAddress(a),
            2 => Op::Ipvs(IpvsOp::AddService(IpvsService::new(key))),
            3 => Op::Ipvs(IpvsOp::AddDestination(key, d)),
            4 => Op::Ipvs(IpvsOp::DeleteService(key)),
            5 => Op::IpsetAdd(
                SetName::new(SetKind::ClusterIp, Family::Inet),
                IpsetEntry::Ip(a),
            ),
            6 => Op::IpsetAdd(
                SetName::new(SetKind::IpvsIps, Family::Inet),
                IpsetEntry::Ip(a),
            ),
            _ => Op::IpsetDel(
                SetName::new(SetKind::IpvsIps, Family::Inet),
                IpsetEntry::Ip(a),
            ),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        #[test]
        fn order_is_a_stable_sort_by_phase(kinds in proptest::collection::vec(0u8..8, 0..300)) {
            let ops: Vec<Op> = kinds.iter().enumerate().map(|(i, k)| op_of(*k, i as u16)).collect();
            let mut want = ops.clone();
            want.sort_by_key(Op::phase);
            let mut plan = Plan { ops, ..Plan::default() };
            plan.order();
            prop_assert_eq!(plan.ops, want);
        }

        #[test]
        fn incremental_plans_reach_desired(
            a in prop::collection::vec(svc_gen(), 0..6),
            b in prop::collection::vec(svc_gen(), 0..6),
        ) {
            let mut p = Proxier::new(ProxyConfig::default(), node());
            let mut k = KernelState::default();
            load(&mut p, &a, 0);
            let plan = p.sync(0);
            prop_assert!(plan.internal_errors.is_empty(), "{:?}", plan.internal_errors);
            k.apply_all(&plan.ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&k, p.applied());
            load(&mut p, &b, a.len());
            let plan = p.sync(1);
            prop_assert!(plan.internal_errors.is_empty(), "{:?}", plan.internal_errors);
            k.apply_all(&plan.ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let plan = p.tick(10_000, no_conns);
            k.apply_all(&plan.ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&k, p.applied());
            // Same result as building B from scratch.
            let mut fresh = Proxier::new(ProxyConfig::default(), node());
            load(&mut fresh, &b, 0);
            prop_assert_eq!(&k, &fresh.desired_state());
            prop_assert_eq!(k, p.desired_state());
        }

        #[test]
        fn a_sync_killed_after_any_operation_is_finished_by_the_restart(
            a in prop::collection::vec(svc_gen(), 0..6),
            b in prop::collection::vec(svc_gen(), 0..6),
            cut in any::<prop::sample::Index>(),
            reverted in any::<bool>(),
        ) {
            // The kernel as objects `a` left it, plus a foreign service.
            let mut pa = Proxier::new(ProxyConfig::default(), node());
            load(&mut pa, &a, 0);
            let plan = pa.sync(0);
            let mut k = KernelState::default();
            k.apply_all(&plan.ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
            k.services.insert(tcp("192.168.0.100:80"), keepalived_vs());
            // The sync to `b` is killed (kill -9) after any prefix of its operations.
            load(&mut pa, &b, a.len());
            let plan = pa.sync(1);
            let done = cut.index(plan.ops.len() + 1);
            k.apply_all(&plan.ops[..done]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // A new process starts on `b`, or on `a` when the change was reverted meanwhile.
            let objects = if reverted { &a } else { &b };
            let mut p = Proxier::new(ProxyConfig::default(), node());
            load(&mut p, objects, 0);
            let plan = p.adopt(k.clone(), 0);
            prop_assert!(plan.internal_errors.is_empty(), "{:?}", plan.internal_errors);
            k.apply_all(&plan.ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let plan = p.tick(10_000, no_conns);
            k.apply_all(&plan.ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Exactly the desired state and the foreign service: nothing stray.
            let mut want = p.desired_state();
            want.services.insert(tcp("192.168.0.100:80"), keepalived_vs());
            prop_assert_eq!(&k.services, &want.services);
            prop_assert_eq!(&k.addresses, &want.addresses);
            prop_assert_eq!(&k.sets, &want.sets);
        }

        #[test]
        fn adoption_from_any_kernel_state_reaches_desired(
            a in prop::collection::vec(svc_gen(), 0..6),
            b in prop::collection::vec(svc_gen(), 0..6),
            zero_weights in any::<bool>(),
            drop_sets in any::<bool>(),
        ) {
            // Kernel state A: what a run with objects `a` left, perturbed,
            // plus foreign state that must survive.
            let mut pa = Proxier::new(ProxyConfig::default(), node());
            load(&mut pa, &a, 0);
            let mut k = pa.desired_state();
            if zero_weights {
                for s in k.services.values_mut() {
                    for d in &mut s.destinations {
                        d.weight = 0;
                    }
                }
            }
            if drop_sets {
                k.sets.clear();
            }
            k.services.insert(tcp("192.168.0.100:80"), keepalived_vs());
            let mut pb = Proxier::new(ProxyConfig::default(), node());
            load(&mut pb, &b, 0);
            let plan = pb.adopt(k.clone(), 0);
            prop_assert!(plan.internal_errors.is_empty(), "{:?}", plan.internal_errors);
            k.apply_all(&plan.ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let plan = pb.tick(10_000, no_conns);
            k.apply_all(&plan.ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&k.services[&tcp("192.168.0.100:80")], &keepalived_vs());
            prop_assert_eq!(pb.owned_view(&k), pb.desired_state());
            prop_assert!(pb.repair(k.clone(), 20_000).is_empty());
        }
    }
}

#[test]
fn config_sysctls_timeouts_and_node_changes() {
    let mut p = proxier();
    let mut k = KernelState::default();
    p.upsert_service(&web(
        json!({"type": "NodePort", "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
    ));
    apply(&mut k, &p.sync(0));
    assert!(k.timeouts.is_none());
    assert!(!k.sysctls.contains_key("net.ipv4.conf.all.arp_ignore"));
    // strictARP and timeouts: only the global ops, no per-service work.
    let mut cfg = p.config().clone();
    cfg.strict_arp = true;
    cfg.timeouts.tcp = 900;
    p.set_config(cfg);
    let plan = p.sync(1);
    let ops: Vec<String> = plan.ops.iter().map(|o| o.to_string()).collect();
    assert_eq!(
        ops,
        vec![
            "sysctl net.ipv4.conf.all.arp_announce=2",
            "sysctl net.ipv4.conf.all.arp_ignore=1",
            "ipvs timeouts tcp=900 tcpfin=0 udp=0",
        ]
    );
    apply(&mut k, &plan);
    // A new node address gets the NodePort; an old one loses it.
    let mut n = node();
    n.addresses = vec![ip("192.168.0.11")];
    p.set_node(n);
    let plan = p.sync(2);
    apply(&mut k, &plan);
    assert!(k.services.contains_key(&tcp("192.168.0.11:30080")));
    assert!(!k.services.contains_key(&tcp("192.168.0.10:30080")));
    assert_eq!(k, p.desired_state());
}

#[test]
fn slice_moving_between_services_and_deletion() {
    let mut p = proxier();
    let mut k = KernelState::default();
    p.upsert_service(&web(json!({})));
    p.upsert_service(&service(
        "ns",
        "other",
        json!({"clusterIP": "10.96.0.11", "ports": [{"name": "http", "port": 80}]}),
    ));
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    apply(&mut k, &p.sync(0));
    // The slice's service-name label now points at "other".
    let mut moved = web_slice(&["10.244.1.5"]);
    moved
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("kubernetes.io/service-name".into(), "other".into());
    p.upsert_slice(&moved);
    apply(&mut k, &p.sync(1));
    apply(&mut k, &p.tick(10_000, no_conns));
    assert!(k.services[&tcp("10.96.0.10:80")].destinations.is_empty());
    assert_eq!(k.services[&tcp("10.96.0.11:80")].destinations.len(), 1);
    p.delete_slice("ns", "web-1");
    apply(&mut k, &p.sync(2));
    apply(&mut k, &p.tick(20_000, no_conns));
    assert!(k.services[&tcp("10.96.0.11:80")].destinations.is_empty());
    assert_eq!(k, p.desired_state());
}

// ---- conflicts: the older Service keeps the address:port ------------------------------

/// Service `name` on `ip` with externalIP 198.51.100.7 and the given ports,
/// created at `created` (RFC 3339) with `uid`, when given.
fn claimant(
    name: &str,
    ip: &str,
    ports: &[u16],
    created: Option<&str>,
    uid: Option<&str>,
) -> Service {
    let mut meta = json!({"namespace": "ns", "name": name});
    if let Some(t) = created {
        meta["creationTimestamp"] = t.into();
    }
    if let Some(u) = uid {
        meta["uid"] = u.into();
    }
    let ports: Vec<Value> = ports
        .iter()
        .map(|p| json!({"name": format!("p{p}"), "port": p}))
        .collect();
    service_full(json!({"metadata": meta, "spec": {"clusterIP": ip,
        "externalIPs": ["198.51.100.7"], "ports": ports}}))
}

fn claimant_slice(name: &str, ports: &[u16], ep: &str) -> EndpointSlice {
    let names: Vec<String> = ports.iter().map(|p| format!("p{p}")).collect();
    let sp: Vec<(&str, u16, &str)> = names
        .iter()
        .zip(ports)
        .map(|(n, p)| (n.as_str(), 8000 + p, "TCP"))
        .collect();
    slice(
        "ns",
        &format!("{name}-1"),
        name,
        "IPv4",
        &sp,
        &[(ep, true, true, false, "node-b")],
    )
}

fn real_servers(k: &KernelState, key: &ServiceKey) -> Vec<SocketAddr> {
    k.services[key]
        .destinations
        .iter()
        .map(|d| d.addr)
        .collect()
}

#[test]
fn the_older_service_wins_a_conflict_whatever_its_name() {
    let ext80 = tcp("198.51.100.7:80");
    // `a` sorts first by name but is newer; `z` is older. Both insertion orders.
    for a_first in [true, false] {
        let a = claimant(
            "a",
            "10.96.0.1",
            &[80, 443],
            Some("2024-02-01T00:00:00Z"),
            Some("u-a"),
        );
        let z = claimant(
            "z",
            "10.96.0.2",
            &[80],
            Some("2024-01-01T00:00:00Z"),
            Some("u-z"),
        );
        let mut p = proxier();
        let mut k = KernelState::default();
        if a_first {
            p.upsert_service(&a);
            p.upsert_service(&z);
        } else {
            p.upsert_service(&z);
            p.upsert_service(&a);
        }
        p.upsert_slice(&claimant_slice("a", &[80, 443], "10.244.1.5"));
        p.upsert_slice(&claimant_slice("z", &[80], "10.244.2.9"));
        apply(&mut k, &p.sync(0));
        assert_eq!(real_servers(&k, &ext80), vec![sa("10.244.2.9:8080")]);
        // Another port of the same address is no conflict: `a` has it.
        assert_eq!(
            real_servers(&k, &tcp("198.51.100.7:443")),
            vec![sa("10.244.1.5:8443")]
        );
        let w = p.warnings();
        assert!(!w.contains_key("ns/z"), "{w:?}");
        let lost = &w["ns/a"];
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(
            lost[0].contains("198.51.100.7:80")
                && lost[0].contains("older Service ns/z")
                && lost[0].contains("2024-01-01"),
            "{lost:?}"
        );
        // The winner goes: the other takes over with its own endpoints, and
        // the shared address stays bound.
        p.delete_service("ns", "z");
        let plan = p.sync(1);
        assert!(!plan.ops.contains(&Op::DelAddress(ip("198.51.100.7"))));
        apply(&mut k, &plan);
        apply(&mut k, &p.tick(2, no_conns));
        assert_eq!(real_servers(&k, &ext80), vec![sa("10.244.1.5:8080")]);
        assert!(p.warnings().is_empty());
        assert_eq!(k, p.desired_state());
    }
}

#[test]
fn equal_timestamps_let_the_uid_decide_and_a_missing_one_counts_as_newest() {
    let ext80 = tcp("198.51.100.7:80");
    let t = Some("2024-01-01T00:00:00Z");
    let winner_of = |a: Service, b: Service| {
        let mut p = proxier();
        p.upsert_service(&a);
        p.upsert_service(&b);
        p.upsert_slice(&claimant_slice("a", &[80], "10.244.1.1"));
        p.upsert_slice(&claimant_slice("b", &[80], "10.244.1.2"));
        let k = p.desired_state();
        real_servers(&k, &ext80)
    };
    let b_wins = vec![sa("10.244.1.2:8080")];
    // Same timestamp: the smaller uid is older.
    assert_eq!(
        winner_of(
            claimant("a", "10.96.0.1", &[80], t, Some("uid-2")),
            claimant("b", "10.96.0.2", &[80], t, Some("uid-1"))
        ),
        b_wins
    );
    // No timestamp loses to one.
    assert_eq!(
        winner_of(
            claimant("a", "10.96.0.1", &[80], None, Some("uid-1")),
            claimant("b", "10.96.0.2", &[80], t, Some("uid-2"))
        ),
        b_wins
    );
}

// ---- the virtual-server cap --------------------------------------------------------

#[test]
fn a_service_growing_over_the_cap_is_removed_and_back_under_it_returns() {
    let cfg = ProxyConfig {
        families: vec![Family::Inet],
        max_virtual_servers_per_service: 6,
        ..Default::default()
    };
    let with_ext = |ext: &[&str]| {
        service(
            "ns",
            "big",
            json!({"clusterIP": "10.96.0.20", "externalIPs": ext,
                   "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}),
        )
    };
    let mut p = Proxier::new(cfg, node());
    let mut k = KernelState::default();
    p.upsert_service(&web(json!({})));
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    let sets_before = {
        apply(&mut k, &p.sync(0));
        k.clone()
    };
    // 2 ports × 3 addresses = 6: at the cap, programmed.
    p.upsert_service(&with_ext(&["198.51.100.1", "198.51.100.2"]));
    apply(&mut k, &p.sync(1));
    assert_eq!(k.services.len(), 1 + 6);
    assert!(k.addresses.contains(&ip("198.51.100.2")));
    assert_eq!(p.refused().count(), 0);
    // 2 × 4 = 8: refused whole; everything it had goes, `web` stays.
    p.upsert_service(&with_ext(&["198.51.100.1", "198.51.100.2", "198.51.100.3"]));
    apply(&mut k, &p.sync(2));
    apply(&mut k, &p.tick(3, no_conns));
    assert_eq!(k, sets_before);
    let refused: Vec<_> = p
        .refused()
        .map(|(id, r)| (id.to_string(), r.label()))
        .collect();
    assert_eq!(
        refused,
        [("ns/big".to_string(), "too_many_virtual_servers")]
    );
    let w = &p.warnings()["ns/big"];
    assert!(
        w.iter().any(|w| w.contains("needs 8") && w.contains("=6")),
        "{w:?}"
    );
    // Back to 6: programmed again.
    p.upsert_service(&with_ext(&["198.51.100.1", "198.51.100.2"]));
    apply(&mut k, &p.sync(4));
    assert_eq!(k.services.len(), 1 + 6);
    assert_eq!(p.refused().count(), 0);
    assert_eq!(k, p.desired_state());
}

// ---- excludeCIDRs --------------------------------------------------------------------

#[test]
fn exclude_cidrs_keep_only_foreign_services_safe() {
    let cfg = ProxyConfig {
        families: vec![Family::Inet],
        exclude_cidrs: vec!["198.51.100.0/24".parse().unwrap()],
        ..Default::default()
    };
    let ext = tcp("198.51.100.7:80");
    let foreign = tcp("198.51.100.50:443");
    let svc = web(json!({"externalIPs": ["198.51.100.7"]}));
    let mut p = Proxier::new(cfg.clone(), node());
    let mut k = KernelState::default();
    // Someone else's service (keepalived) inside the excluded range, with its
    // address even bound on kube-ipvs0: never adopted.
    k.services
        .insert(foreign, KService::new(IpvsService::new(foreign)));
    k.addresses.insert(ip("198.51.100.50"));
    p.upsert_service(&svc);
    p.upsert_slice(&web_slice(&["10.244.1.5"]));
    let plan = p.adopt(k.clone(), 0);
    apply(&mut k, &plan);
    // Ours inside the range is programmed as any other.
    assert_eq!(real_servers(&k, &ext), vec![sa("10.244.1.5:8080")]);
    assert!(k.addresses.contains(&ip("198.51.100.7")));
    // Deleted in this run: removed, as we know we made it.
    p.delete_service("ns", "web");
    apply(&mut k, &p.sync(1));
    assert!(!k.services.contains_key(&ext));
    assert!(!k.addresses.contains(&ip("198.51.100.7")));
    assert!(k.services.contains_key(&foreign));
    assert!(k.addresses.contains(&ip("198.51.100.50")));

    // After a restart, a leftover of ours in the range is indistinguishable
    // from a foreign one and stays (as upstream's cleanLegacyService).
    k.services.insert(ext, KService::new(IpvsService::new(ext)));
    k.addresses.insert(ip("198.51.100.7"));
    let mut restarted = Proxier::new(cfg, node());
    let plan = restarted.adopt(k.clone(), 10);
    for o in &plan.ops {
        assert!(!o.to_string().contains("198.51.100."), "{o}");
    }
}
