//! Seeded random cluster states covering every Service feature a proxy reads, for differential tests against upstream kube-proxy.
//!
//! The same seed gives the same objects on every machine (XorShift from
//! `rand_xorshift`, whose output is fixed by its algorithm), so a difference
//! found by CI is reproduced with `scripts/compare-upstream.sh --seed N`.

use rand::{RngExt, SeedableRng};
use rand_xorshift::XorShiftRng;
use serde_json::{Value, json};

/// The Node both proxies run as in differential tests; the generator's
/// endpoints name it or another node.
pub const NODE: &str = "parity-node";
/// The Node's zone, for topology hints.
pub const ZONE: &str = "zone-a";

/// The Node both proxies run as, in [`ZONE`], with the node addresses given
/// (the lab uplink's: examples/lab/uplink.rs).
pub fn node_object(ip4: &str, ip6: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"topology.kubernetes.io/zone": ZONE,
                                              "kubernetes.io/hostname": NODE}},
        "status": {"addresses": [
            {"type": "InternalIP", "address": ip4},
            {"type": "InternalIP", "address": ip6},
            {"type": "Hostname", "address": NODE}]},
    })
}

/// A cluster state: the KubeProxyConfiguration's scheduler and every object.
pub struct Generated {
    pub seed: u64,
    pub scheduler: &'static str,
    pub objects: Vec<Value>,
}

/// IPVS schedulers both proxies accept in `ipvs.scheduler` ("" = rr).
const SCHEDULERS: &[&str] = &["", "rr", "wrr", "lc", "sh", "mh"];

/// `count` Services (and their EndpointSlices) in namespace `parity-SEED`.
pub fn generate(seed: u64, count: usize) -> Generated {
    let mut r = XorShiftRng::seed_from_u64(seed);
    let ns = format!("parity-{seed}");
    let scheduler = SCHEDULERS[r.random_range(0..SCHEDULERS.len())];
    let mut objects = Vec::new();
    for i in 0..count {
        service(&mut r, seed, i, &ns, &mut objects);
    }
    Generated {
        seed,
        scheduler,
        objects,
    }
}

fn pick<'a, T>(r: &mut XorShiftRng, xs: &'a [T]) -> &'a T {
    &xs[r.random_range(0..xs.len())]
}

fn chance(r: &mut XorShiftRng, percent: u32) -> bool {
    r.random_range(0..100) < percent
}

#[derive(Clone, Copy, PartialEq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The `n`th address of a pool; pools: 0 cluster IPs, 1 pods, 2 external IPs, 3 LB IPs.
    fn addr(self, pool: u32, n: u32) -> String {
        match (self, pool) {
            // The apiserver's service ranges (control-plane.sh SERVICE_CIDRS).
            (Family::V4, 0) => format!("10.100.{}.{}", n / 250, n % 250 + 2),
            (Family::V6, 0) => format!("fd00:96::{:x}", n + 2),
            (Family::V4, 1) => format!("10.244.{}.{}", n / 250, n % 250 + 2),
            (Family::V6, 1) => format!("fd00:10:244::{:x}", n + 2),
            (Family::V4, 2) => format!("203.0.113.{}", n % 250 + 2),
            (Family::V6, 2) => format!("2001:db8:e::{:x}", n + 2),
            (Family::V4, _) => format!("198.51.100.{}", n % 250 + 2),
            (Family::V6, _) => format!("2001:db8:b::{:x}", n + 2),
        }
    }

    fn ranges(self) -> &'static [&'static str] {
        match self {
            Family::V4 => &["10.0.0.0/8", "192.168.100.0/24", "203.0.113.7/32"],
            Family::V6 => &["2001:db8::/32", "fd00::/8"],
        }
    }
}

fn service(r: &mut XorShiftRng, seed: u64, i: usize, ns: &str, out: &mut Vec<Value>) {
    let name = format!("s{i}");
    let n = i as u32;
    let families: Vec<Family> = match r.random_range(0..10) {
        0..=5 => vec![Family::V4],
        6..=7 => vec![Family::V6],
        8 => vec![Family::V4, Family::V6],
        _ => vec![Family::V6, Family::V4],
    };
    let kind = *pick(r, &["ClusterIP", "ClusterIP", "NodePort", "LoadBalancer"]);
    let headless = kind == "ClusterIP" && chance(r, 8);
    let protocols: &[&str] = &["TCP", "TCP", "UDP", "SCTP"];
    let nports = r.random_range(1..=3usize);
    let mut ports = Vec::new();
    for p in 0..nports {
        let mut port = json!({
            "name": format!("p{p}"),
            "protocol": *pick(r, protocols),
            "port": 80 + p as u32 * 1000 + r.random_range(0..3u32),
            "targetPort": 8080 + p as u32,
        });
        if kind != "ClusterIP" {
            port["nodePort"] = json!(node_port(seed, n, p as u32));
        }
        ports.push(port);
    }
    let mut spec = json!({
        "type": kind,
        "ports": ports,
        "ipFamilies": families.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "ipFamilyPolicy": if families.len() == 2 { "RequireDualStack" } else { "SingleStack" },
    });
    if headless {
        spec["clusterIP"] = json!("None");
        spec["clusterIPs"] = json!(["None"]);
    } else {
        let ips: Vec<String> = families.iter().map(|f| f.addr(0, n)).collect();
        spec["clusterIP"] = json!(ips[0]);
        spec["clusterIPs"] = json!(ips);
    }
    if !headless && chance(r, 20) {
        let ips: Vec<String> = families.iter().map(|f| f.addr(2, n)).collect();
        spec["externalIPs"] = json!(ips);
    }
    let external = kind != "ClusterIP" || spec.get("externalIPs").is_some();
    if external && chance(r, 40) {
        spec["externalTrafficPolicy"] = json!("Local");
        if kind == "LoadBalancer" {
            // Given, not allocated: the apiserver picks a free port at
            // random, which may be one a later Service of the seed names.
            spec["healthCheckNodePort"] = json!(node_port(seed, n, 3));
        }
    }
    if !headless && chance(r, 20) {
        spec["internalTrafficPolicy"] = json!("Local");
    }
    if !headless && chance(r, 25) {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] =
            json!({"clientIP": {"timeoutSeconds": *pick(r, &[10800, 60, 3600])}});
    }
    if !headless && chance(r, 15) {
        spec["trafficDistribution"] = json!("PreferClose");
    }
    let mut status = None;
    if kind == "LoadBalancer" {
        if chance(r, 50) {
            let mut ranges = Vec::new();
            for f in &families {
                ranges.push(*pick(r, f.ranges()));
            }
            spec["loadBalancerSourceRanges"] = json!(ranges);
        }
        let ingress: Vec<Value> = families
            .iter()
            .map(|f| {
                let mut ing = json!({"ip": f.addr(3, n)});
                match r.random_range(0..3) {
                    0 => {}
                    1 => ing["ipMode"] = json!("VIP"),
                    _ => ing["ipMode"] = json!("Proxy"),
                }
                ing
            })
            .collect();
        status = Some(json!({"loadBalancer": {"ingress": ingress}}));
    }
    let mut labels = serde_json::Map::new();
    if chance(r, 5) {
        labels.insert(
            "service.kubernetes.io/service-proxy-name".into(),
            json!("another-proxy"),
        );
    }
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
    });
    if let Some(s) = status {
        svc["status"] = s;
    }
    let slice_ports: Vec<Value> = ports_of(&svc)
        .into_iter()
        .map(|(pname, proto, target)| json!({"name": pname, "protocol": proto, "port": target}))
        .collect();
    out.push(svc);
    for f in &families {
        let eps: Vec<Value> = (0..r.random_range(0..=5u32))
            .map(|e| endpoint(r, *f, n * 8 + e))
            .collect();
        out.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-{}", f.name().to_lowercase()), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "kube-ipvs-lab"}},
            "addressType": f.name(),
            "ports": slice_ports,
            "endpoints": eps,
        }));
    }
}

/// Service `n`'s node port `slot` (0–2 its ports, 3 its health check):
/// unique in the cluster, so seeds loaded together never collide, and
/// every one is given, so the apiserver allocates none at random.
fn node_port(seed: u64, n: u32, slot: u32) -> u32 {
    30000 + (seed as u32 % 8) * 300 + n * 4 + slot
}

/// (name, protocol, targetPort) of a generated Service's ports.
fn ports_of(svc: &Value) -> Vec<(String, String, u64)> {
    svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["protocol"].as_str().unwrap().to_string(),
                p["targetPort"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// One endpoint: ready, or terminating and still serving (or not), here or
/// on another node, in this zone or another, with zone hints at times.
fn endpoint(r: &mut XorShiftRng, f: Family, n: u32) -> Value {
    let (ready, serving, terminating) = match r.random_range(0..10) {
        0..=6 => (true, true, false),
        7 => (false, true, true),
        8 => (false, false, true),
        _ => (false, false, false),
    };
    let local = chance(r, 40);
    let zone = if chance(r, 70) { ZONE } else { "zone-b" };
    let mut e = json!({
        "addresses": [f.addr(1, n)],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "nodeName": if local { NODE } else { "other-node" },
        "zone": zone,
    });
    if chance(r, 30) {
        e["hints"] = json!({"forZones": [{"name": *pick(r, &[ZONE, "zone-b"])}]});
    }
    e
}
