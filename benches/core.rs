//! Benchmarks of the pure proxier core: full builds, one-change syncs, memory.
//!
//! Besides criterion's report, `main` prints the per-change cost at 10,000 and
//! 50,000 Services and their ratio (work per change must not grow with N), and
//! the bytes held by the model at 10,000 × 10 (counted by a global allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube_ipvs::model::{NodeInfo, ProxyConfig};
use kube_ipvs::reconcile::Proxier;

/// Counts live heap bytes so the model's footprint can be measured.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const EPS: u32 = 10;

fn ip4(base: u8, n: u32) -> String {
    format!(
        "10.{}.{}.{}",
        base as u32 + (n >> 16),
        (n >> 8) & 0xff,
        n & 0xff
    )
}

fn service(i: u32) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc-{i}")),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(ip4(96, i)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The slice of Service `i`; `shift` replaces the last endpoint (one change).
fn slice(i: u32, shift: bool) -> EndpointSlice {
    let endpoints = (0..EPS)
        .map(|j| {
            let n = i * EPS + j + if shift && j == EPS - 1 { 1 << 22 } else { 0 };
            Endpoint {
                addresses: vec![ip4(128, n)],
                conditions: Some(EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                }),
                node_name: Some(format!("node-{}", j % 50)),
                ..Default::default()
            }
        })
        .collect();
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("bench".into()),
            name: Some(format!("svc-{i}-abcde")),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/service-name".to_string(),
                format!("svc-{i}"),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        endpoints,
    }
}

fn node() -> NodeInfo {
    NodeInfo {
        name: "node-0".into(),
        addresses: vec!["192.168.0.10".parse().unwrap()],
        primary: vec!["192.168.0.10".parse().unwrap()],
        zone: None,
    }
}

struct Objects {
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
}

fn objects(n: u32) -> Objects {
    Objects {
        services: (0..n).map(service).collect(),
        slices: (0..n).map(|i| slice(i, false)).collect(),
    }
}

fn build(o: &Objects) -> Proxier {
    let mut p = Proxier::new(ProxyConfig::default(), node());
    for s in &o.services {
        p.upsert_service(s);
    }
    for s in &o.slices {
        p.upsert_slice(s);
    }
    let plan = p.sync(0);
    assert!(plan.internal_errors.is_empty());
    black_box(plan.ops.len());
    p
}

/// Alternates one endpoint of Service 7 and syncs; returns the time per change.
fn endpoint_change(p: &mut Proxier, iters: u64, now: &mut u64) -> Duration {
    let a = slice(7, true);
    let b = slice(7, false);
    let start = Instant::now();
    for k in 0..iters {
        p.upsert_slice(if k % 2 == 0 { &a } else { &b });
        *now += 1;
        black_box(p.sync(*now));
    }
    start.elapsed()
}

/// Adds one Service (with its slice) and syncs; the removal is not timed.
fn service_add(p: &mut Proxier, n: u32, iters: u64, now: &mut u64) -> Duration {
    let svc = service(n + 1);
    let sl = slice(n + 1, false);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        *now += 1;
        let start = Instant::now();
        p.upsert_service(&svc);
        p.upsert_slice(&sl);
        black_box(p.sync(*now));
        total += start.elapsed();
        p.delete_service("bench", &format!("svc-{}", n + 1));
        p.delete_slice("bench", &format!("svc-{}-abcde", n + 1));
        black_box(p.sync(*now));
    }
    total
}

fn median_us(mut f: impl FnMut() -> Duration, rounds: usize) -> f64 {
    let mut v: Vec<f64> = (0..rounds).map(|_| f().as_secs_f64() * 1e6).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn benches(c: &mut Criterion, sizes: &[u32]) {
    let mut g = c.benchmark_group("build_from_scratch");
    g.sample_size(10);
    for &n in sizes {
        let o = objects(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &o, |b, o| {
            b.iter_batched(|| (), |_| build(o), BatchSize::PerIteration)
        });
    }
    g.finish();

    let mut g = c.benchmark_group("one_change");
    for &n in sizes.iter().filter(|n| **n >= 10_000) {
        let o = objects(n);
        let mut p = build(&o);
        drop(o);
        let mut now = 0;
        g.bench_function(BenchmarkId::new("endpoint", n), |b| {
            b.iter_custom(|iters| endpoint_change(&mut p, iters, &mut now))
        });
        g.bench_function(BenchmarkId::new("service_add", n), |b| {
            b.iter_custom(|iters| service_add(&mut p, n, iters, &mut now))
        });
    }
    g.finish();
}

fn scaling_report(sizes: &[u32]) {
    let mut rows = Vec::new();
    for &n in sizes.iter().filter(|n| **n >= 10_000) {
        let o = objects(n);
        let mut p = build(&o);
        drop(o);
        let mut now = 1_000;
        let ep = median_us(|| endpoint_change(&mut p, 200, &mut now) / 200, 15);
        let add = median_us(|| service_add(&mut p, n, 200, &mut now) / 200, 15);
        println!("one change at N={n}: endpoint {ep:.1} µs, service add {add:.1} µs");
        rows.push((n, ep, add));
    }
    if let [(n1, e1, a1), .., (n2, e2, a2)] = rows[..] {
        println!(
            "ratio N={n2}/N={n1}: endpoint {:.2}, service add {:.2} (target ≤ 1.5)",
            e2 / e1,
            a2 / a1
        );
    }
}

fn memory_report() {
    let o = objects(10_000);
    let mb = |b: isize| b as f64 / 1e6;
    let before = LIVE.load(Ordering::Relaxed);
    let mut p = Proxier::new(ProxyConfig::default(), node());
    for s in &o.services {
        p.upsert_service(s);
    }
    for s in &o.slices {
        p.upsert_slice(s);
    }
    let inputs = LIVE.load(Ordering::Relaxed);
    let plan = p.sync(0);
    drop(plan);
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "model memory at 10,000 × {EPS}: {:.1} MB (inputs {:.1} MB + desired/applied {:.1} MB; target < 50 MB)",
        mb(after - before),
        mb(inputs - before),
        mb(after - inputs)
    );
    drop(p);
}

fn main() {
    // `KUBE_IPVS_BENCH_QUICK=1` skips the 50,000 size (CI smoke runs).
    let quick = std::env::var_os("KUBE_IPVS_BENCH_QUICK").is_some();
    let sizes: &[u32] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 50_000]
    };
    memory_report();
    scaling_report(sizes);
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, sizes);
    c.final_summary();
}
