//! Test builders: Kubernetes objects from compact JSON.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::node::NodeInfo;

pub fn service(ns: &str, name: &str, spec: Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .expect("valid Service json")
}

/// A ClusterIP Service default/`name` on `ip`, one TCP port 80 named http.
pub fn cluster_ip_service(name: &str, ip: &str) -> Service {
    service(
        "default",
        name,
        json!({"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
               "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}),
    )
}

pub fn service_full(v: Value) -> Service {
    serde_json::from_value(v).expect("valid Service json")
}

/// A slice of `svc` with one port `(name, port, protocol)` and endpoints given
/// as `(ip, ready, serving, terminating, node)`.
pub fn slice(
    ns: &str,
    name: &str,
    svc: &str,
    family: &str,
    ports: &[(&str, u16, &str)],
    eps: &[(&str, bool, bool, bool, &str)],
) -> EndpointSlice {
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto}))
        .collect();
    let eps: Vec<Value> = eps
        .iter()
        .map(|(ip, r, s, t, node)| {
            json!({"addresses": [ip], "conditions": {"ready": r, "serving": s, "terminating": t}, "nodeName": node})
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": family,
        "ports": ports,
        "endpoints": eps,
    }))
    .expect("valid EndpointSlice json")
}

pub fn node_obj() -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "node-a", "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": "192.168.0.10"},
            {"type": "InternalIP", "address": "fd00:1::10"},
        ]},
    }))
    .expect("valid Node json")
}

pub fn node() -> NodeInfo {
    NodeInfo::from_node(&node_obj())
}
