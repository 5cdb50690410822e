//! One very large Service (ports × external IPs virtual servers): planning must cost in proportion to it.
//!
//! Issue #13: one Service with 1,000 ports and 100 externalIPs (101,000 virtual
//! servers) took 11.4 s to plan, because of a linear duplicate scan per virtual
//! server. Besides criterion's report, `main` prints the cost per virtual server
//! at ~1k, ~10k and ~100k virtual servers (grown along ports, then along
//! external IPs) and the ratio largest/smallest, which must stay near 1.
//!
//! `KUBE_IPVS_BIG_SERVICE_MANIFEST=FILE` writes the 1,000-port × 100-externalIP
//! case (Node, Service, EndpointSlice as a JSON `List`) for `kube-ipvs plan
//! --manifests FILE --node node-0` and exits.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_ipvs::model::{NodeInfo, ProxyConfig};
use kube_ipvs::reconcile::Proxier;

const NODE_IP: &str = "192.168.0.10";

/// A ClusterIP Service with `ports` TCP ports and `ext` externalIPs:
/// `ports × (1 + ext)` virtual servers.
fn service(ports: u32, ext: u32) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some("big".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            ports: Some(
                (0..ports)
                    .map(|i| ServicePort {
                        name: Some(format!("p{i}")),
                        port: 10_000 + i as i32,
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            external_ips: Some(
                (0..ext)
                    .map(|j| format!("203.0.{}.{}", j >> 8, j & 0xff))
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Its slice: every port, two endpoints (one on this node); `shift` moves
/// the remote endpoint (one change that touches every virtual server).
fn slice(ports: u32, shift: bool) -> EndpointSlice {
    let ep = |ip: &str, node: &str| Endpoint {
        addresses: vec![ip.into()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        node_name: Some(node.into()),
        ..Default::default()
    };
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some("big-abcde".into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                "big".to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(
            (0..ports)
                .map(|i| EndpointPort {
                    name: Some(format!("p{i}")),
                    port: Some(20_000 + i as i32),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect(),
        ),
        endpoints: vec![
            ep("10.244.0.2", "node-0"),
            ep(if shift { "10.244.1.3" } else { "10.244.1.2" }, "node-1"),
        ],
    }
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-0".into(),
        addresses: vec![NODE_IP.parse().unwrap()],
        primary: vec![NODE_IP.parse().unwrap()],
        zone: None,
    }
}

struct Case {
    ports: u32,
    ext: u32,
    svc: Service,
    slice: EndpointSlice,
}

impl Case {
    fn new(ports: u32, ext: u32) -> Self {
        Case {
            ports,
            ext,
            svc: service(ports, ext),
            slice: slice(ports, false),
        }
    }

    fn virtual_servers(&self) -> u32 {
        self.ports * (1 + self.ext)
    }

    fn label(&self) -> String {
        format!("{}x{}", self.ports, self.ext)
    }
}

/// The configuration the bench plans with: no cap, so the largest case is planned.
fn config() -> ProxyConfig {
    ProxyConfig {
        max_virtual_servers_per_service: 0,
        ..Default::default()
    }
}

/// Reads the Service and its slice and plans the node from scratch.
fn plan(c: &Case) -> Proxier {
    let mut p = Proxier::new(config(), node());
    p.upsert_service(&c.svc);
    p.upsert_slice(&c.slice);
    let plan = p.sync(0);
    assert!(plan.internal_errors.is_empty());
    black_box(plan.ops.len());
    p
}

/// Moves one endpoint (every virtual server changes) and syncs; time per change.
fn change(p: &mut Proxier, ports: u32, iters: u64, now: &mut u64) -> Duration {
    let (a, b) = (slice(ports, true), slice(ports, false));
    let start = Instant::now();
    for k in 0..iters {
        p.upsert_slice(if k % 2 == 0 { &a } else { &b });
        *now += 1;
        black_box(p.sync(*now));
    }
    start.elapsed()
}

/// The fastest of `rounds` runs: on a machine shared with other builds the
/// minimum is the least disturbed estimate of the work itself.
fn best_secs(mut f: impl FnMut() -> Duration, rounds: usize) -> f64 {
    (0..rounds)
        .map(|_| f().as_secs_f64())
        .fold(f64::INFINITY, f64::min)
}

/// Times one plan from scratch; dropping the result is not timed.
fn timed_plan(c: &Case) -> Duration {
    let t = Instant::now();
    let p = plan(c);
    let d = t.elapsed();
    drop(p);
    d
}

/// ~1k, ~10k, ~100k virtual servers, grown along ports and along external IPs.
fn axes() -> [(&'static str, [Case; 3]); 2] {
    [
        (
            "ports",
            [
                Case::new(10, 100),
                Case::new(100, 100),
                Case::new(1_000, 100),
            ],
        ),
        (
            "external IPs",
            [Case::new(100, 9), Case::new(100, 99), Case::new(100, 999)],
        ),
    ]
}

fn scaling_report() {
    for (axis, cases) in axes() {
        let mut rows = Vec::new();
        for c in &cases {
            let n = f64::from(c.virtual_servers());
            let rounds = match c.virtual_servers() {
                n if n > 50_000 => 7,
                n if n > 5_000 => 15,
                _ => 41,
            };
            let full = best_secs(|| timed_plan(c), rounds);
            let mut p = plan(c);
            let mut now = 0;
            let ch = best_secs(|| change(&mut p, c.ports, 2, &mut now) / 2, rounds);
            let (full_ns, ch_ns) = (full * 1e9 / n, ch * 1e9 / n);
            println!(
                "big service {} ({} VSs, along {axis}): plan {:.1} ms ({full_ns:.0} ns/VS), endpoint change {:.1} ms ({ch_ns:.0} ns/VS)",
                c.label(),
                c.virtual_servers(),
                full * 1e3,
                ch * 1e3
            );
            rows.push((full_ns, ch_ns));
        }
        if let [(f1, c1), (f10, c10), (f100, c100)] = rows[..] {
            println!(
                "per-VS cost ratio along {axis}: ~100k/~1k plan {:.2}, endpoint change {:.2}; \
                 ~100k/~10k plan {:.2}, endpoint change {:.2} (linear: ≈ 1)",
                f100 / f1,
                c100 / c1,
                f100 / f10,
                c100 / c10
            );
        }
    }
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("big_service_plan");
    g.sample_size(10);
    for (_, cases) in axes() {
        for case in &cases {
            g.bench_with_input(
                BenchmarkId::from_parameter(case.label()),
                case,
                |b, case| b.iter_batched(|| (), |_| plan(case), BatchSize::PerIteration),
            );
        }
    }
    g.finish();
}

/// The case as a manifest for `kube-ipvs plan`.
fn write_manifest(path: &str) {
    let node = Node {
        metadata: ObjectMeta {
            name: Some("node-0".into()),
            ..Default::default()
        },
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: NODE_IP.into(),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut items = vec![
        serde_json::to_value(&node).unwrap(),
        serde_json::to_value(service(1_000, 100)).unwrap(),
        serde_json::to_value(slice(1_000, false)).unwrap(),
    ];
    items[0]["apiVersion"] = "v1".into();
    items[0]["kind"] = "Node".into();
    items[1]["apiVersion"] = "v1".into();
    items[1]["kind"] = "Service".into();
    items[2]["apiVersion"] = "discovery.k8s.io/v1".into();
    items[2]["kind"] = "EndpointSlice".into();
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    std::fs::write(path, serde_json::to_vec_pretty(&list).unwrap())
        .unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
    println!("wrote {path}: 1,000 ports × 100 externalIPs (101,000 virtual servers)");
}

fn main() {
    if let Ok(path) = std::env::var("KUBE_IPVS_BIG_SERVICE_MANIFEST") {
        write_manifest(&path);
        return;
    }
    scaling_report();
    // No plots: criterion's plotters backend needs a system font.
    let mut c = Criterion::default().without_plots().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
