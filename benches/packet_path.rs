//! Packet-path benchmark (#16 point 5), run in the lab by scripts/bench-packets.sh: new-connection latency, connection rate and echo throughput to one ClusterIP with 10 and with 10,000 Services programmed, per iptables backend, as ratios from one boot.
//!
//! IPVS's service table is shared by every network namespace (256 buckets up
//! to kernel 7.0), so the two sizes cannot be measured side by side: each
//! backend's namespace measures 10 Services, grows to 10,000, measures, and
//! shrinks back to 10 and measures again; the ratio is against the mean of
//! the two small runs, whose spread shows the noise.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::traffic::{Conn, node_yaml, ready, tcp_service, topology};

const VIP: &str = "10.96.0.10:80";
const CONNECTIONS: usize = 2_000;
const ECHO_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy)]
struct Figures {
    p50_us: f64,
    p99_us: f64,
    conns_per_s: f64,
    echo_mib_s: f64,
}

/// Filler Services: `n` ClusterIPs in 10.97.0.0/16 with 10 endpoints each
/// (addresses no pod has: only the table sizes matter).
fn fillers(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let ip = format!("10.97.{}.{}", i / 250, i % 250 + 1);
        let eps: String = (1..=10)
            .map(|e| {
                let k = i * 10 + e;
                format!(
                    "- addresses: [10.{}.{}.{}]\n  conditions: {{ready: true}}\n",
                    128 + k / 65536,
                    k / 256 % 256,
                    k % 256
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{}---",
            tcp_service(&format!("f{i}"), &ip, "", "", &eps)
        );
    }
    out
}

fn program(dir: &std::path::Path, fill: usize) -> Duration {
    std::fs::write(dir.join("fill.yaml"), fillers(fill)).unwrap();
    let t = Instant::now();
    common::kube_ipvs(&[
        "--conntrack-max-per-core=0",
        "sync-once",
        "--manifests",
        dir.to_str().unwrap(),
    ]);
    t.elapsed()
}

/// `CONNECTIONS` connections in turn (connect, greeting, reset), then one
/// connection echoing `ECHO_BYTES` in 1 KiB lines.
fn measure() -> Figures {
    let mut lat = Vec::with_capacity(CONNECTIONS);
    let start = Instant::now();
    for _ in 0..CONNECTIONS {
        let t = Instant::now();
        let c = Conn::open(VIP, Duration::from_secs(5)).expect("connection to the ClusterIP");
        lat.push(t.elapsed());
        c.reset();
    }
    let conns_per_s = CONNECTIONS as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;

    let mut s = TcpStream::connect(VIP).expect("echo connection");
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut greeting = String::new();
    r.read_line(&mut greeting).unwrap();
    let line = "x".repeat(1023) + "\n";
    let lines = ECHO_BYTES / line.len();
    let t = Instant::now();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let line = line.clone();
        std::thread::spawn(move || {
            for _ in 0..lines {
                w.write_all(line.as_bytes()).unwrap();
            }
        })
    };
    let mut got = String::new();
    for _ in 0..lines {
        got.clear();
        r.read_line(&mut got).unwrap();
    }
    writer.join().unwrap();
    let echo_mib_s = (ECHO_BYTES as f64 / (1 << 20) as f64) / t.elapsed().as_secs_f64();
    let _ = s.flush();
    Figures {
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        conns_per_s,
        echo_mib_s,
    }
}

fn run(backend: &str, large: usize) -> String {
    common::netns();
    if backend == "legacy" {
        // kube-ipvs writes to the backend the node already uses (more rules wins).
        common::sh("iptables-legacy -A FORWARD -s 192.0.2.1/32 -j RETURN");
    }
    let t = topology("b", 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-node.yaml"), node_yaml()).unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        tcp_service("web", "10.96.0.10", "", "", &ready(&[1], "lab-node")),
    )
    .unwrap();
    let sync_small = program(dir.path(), 9);
    let small1 = measure();
    let sync_large = program(dir.path(), large - 1);
    let services = common::sh("ipvsadm -Sn | grep -c '^-A'");
    assert_eq!(
        services.trim(),
        large.to_string(),
        "IPVS services programmed"
    );
    let big = measure();
    let sync_back = program(dir.path(), 9);
    let small2 = measure();
    let saved = common::sh(&format!(
        "iptables-{backend}-save -t nat | grep -c KUBE- || true"
    ));
    assert!(
        saved.trim().parse::<usize>().unwrap_or(0) > 0,
        "kube-ipvs's rules are not in iptables-{backend}"
    );
    drop(t);
    let mean = |f: fn(&Figures) -> f64| (f(&small1) + f(&small2)) / 2.0;
    let row = |name: &str, f: fn(&Figures) -> f64, fmt: fn(f64) -> String| {
        format!(
            "| {backend} | {name} | {} / {} | {} | {:.2}× |\n",
            fmt(f(&small1)),
            fmt(f(&small2)),
            fmt(f(&big)),
            f(&big) / mean(f)
        )
    };
    let us = |v: f64| format!("{v:.0} µs");
    let mut out = String::new();
    out += &row("connect p50", |f| f.p50_us, us);
    out += &row("connect p99", |f| f.p99_us, us);
    out += &row("connections/s", |f| f.conns_per_s, |v| format!("{v:.0}"));
    out += &row("echo MiB/s", |f| f.echo_mib_s, |v| format!("{v:.1}"));
    eprintln!(
        "{backend}: sync-once 10: {:.1} s, grow to {large}: {:.1} s, back to 10: {:.1} s",
        sync_small.as_secs_f64(),
        sync_large.as_secs_f64(),
        sync_back.as_secs_f64()
    );
    out
}

fn main() {
    // `cargo bench` passes --bench; only the lab run (bench-packets.sh) measures.
    if std::env::var("KUBE_IPVS_KERNEL_TESTS").as_deref() != Ok("1") {
        eprintln!("packet_path: runs in the lab: scripts/bench-packets.sh");
        return;
    }
    let large: usize = std::env::var("KUBE_IPVS_BENCH_SERVICES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let have = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    println!(
        "| backend | figure | 10 Services (before / after) | {large} Services | {large} vs 10 |\n|---|---|---|---|---|"
    );
    for backend in ["nft", "legacy"] {
        if !have(&format!("iptables-{backend}")) {
            println!("| {backend} | not installed | | | |");
            continue;
        }
        let b = backend.to_string();
        let rows = std::thread::spawn(move || run(&b, large))
            .join()
            .expect("benchmark run");
        print!("{rows}");
    }
}
