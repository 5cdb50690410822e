//! 5,000 idle and slowloris connections against healthz and a health-check node port: a fresh prober is still answered within 1 s, a manifest change still reaches the plan, and file descriptors and memory stay bounded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube_ipvs::changes::{Hooks, Sources};
use kube_ipvs::health::{ProxyHealth, ServiceHealthServer, healthz_server};
use kube_ipvs::http::{HEALTH_CHECK_PORT_LIMITS, HEALTHZ_LIMITS, raise_open_files_limit};
use kube_ipvs::metrics::Metrics;
use kube_ipvs::model::contribution::HealthCheck;
use kube_ipvs::model::node::NodeInfo;
use kube_ipvs::reconcile::Proxier;
use kube_ipvs::runner::Trigger;
use kube_ipvs::source::files;
use kube_ipvs::source::synthetic::Cluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// Attacking connections, split evenly between the two ports; on each port
/// half are idle (connect, send nothing) and half slowloris (a header byte
/// every second).
const ATTACKERS: usize = 5_000;
/// An attacker whose connection was closed reconnects after this, so the
/// pressure lasts for the whole test.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// How long the probes run once the flood is in place.
const PROBING: Duration = Duration::from_secs(10);
/// The requirement: a fresh client's /healthz answers within this.
const PROBE_BOUND: Duration = Duration::from_secs(1);
const MIB: u64 = 1 << 20;

#[derive(Default)]
struct Flood {
    connects: AtomicUsize,
    /// Attacker sockets open now (each one file descriptor of this process).
    held: AtomicUsize,
    closed_by_server: AtomicUsize,
}

async fn attacker(
    addr: SocketAddr,
    slow: bool,
    flood: Arc<Flood>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        // Counted from the socket's creation: a connect waiting on a full
        // backlog holds a file descriptor too.
        let Ok(sock) = TcpSocket::new_v4() else {
            tokio::time::sleep(RECONNECT_AFTER).await;
            continue;
        };
        flood.held.fetch_add(1, Relaxed);
        let Ok(mut s) = sock.connect(addr).await else {
            flood.held.fetch_sub(1, Relaxed);
            tokio::time::sleep(RECONNECT_AFTER).await;
            continue;
        };
        flood.connects.fetch_add(1, Relaxed);
        let mut buf = [0u8; 512];
        let header = b"GET /healthz HTTP/1.1\r\nX-Slow: ";
        let mut sent = 0;
        let closed = loop {
            tokio::select! {
                _ = stop.changed() => break false,
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => break true,
                    Ok(_) => {}
                },
                () = tokio::time::sleep(Duration::from_secs(1)), if slow => {
                    let b = header.get(sent).copied().unwrap_or(b'a');
                    sent += 1;
                    if s.write_all(&[b]).await.is_err() {
                        break true;
                    }
                }
            }
        };
        drop(s);
        flood.held.fetch_sub(1, Relaxed);
        if !closed {
            return;
        }
        flood.closed_by_server.fetch_add(1, Relaxed);
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// GET `path` over a fresh connection: (status, time to the full answer).
async fn probe(addr: SocketAddr, path: &str) -> (u16, Duration) {
    let start = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    })
    .await;
    let took = start.elapsed();
    let status = match answer {
        Ok(Ok(out)) => out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0),
        _ => 0,
    };
    (status, took)
}

fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").unwrap().count() as u64
}

/// A field of /proc/self/status in bytes (VmRSS, VmHWM).
fn status_bytes(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn lock(s: &Mutex<Sources>) -> std::sync::MutexGuard<'_, Sources> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_flood_leaves_probes_answered_and_manifests_flowing() {
    let (_, limit) = raise_open_files_limit().unwrap();
    assert!(
        limit >= 2 * ATTACKERS as u64,
        "the open files hard limit ({limit}) is too low for this test: raise it (ulimit -Hn)"
    );

    // The --manifests source, watched as the daemon does.
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::new(20, 2, "n").unwrap();
    cluster.write(dir.path()).unwrap();
    let health = Arc::new(ProxyHealth::new(Duration::from_secs(30)));
    let hooks = || Hooks {
        trigger: Trigger::new(),
        metrics: Arc::new(Metrics::new()),
        health: health.clone(),
    };
    let sources = Arc::new(Mutex::new(Sources::new(Default::default(), "n")));
    let (f, _) = files::load_and_feed(dir.path(), &sources, &hooks(), "n").unwrap();
    let first = lock(&sources).take_batch().expect("every file listed");
    let mut proxier = Proxier::new(Default::default(), NodeInfo::from_node(&Default::default()));
    first.apply_to(&mut proxier, NodeInfo::from_node);
    assert!(!proxier.sync(0).ops.is_empty());
    let h = hooks();
    let watcher = tokio::spawn(files::watch(f, sources.clone(), h.clone(), "n".into()));

    // healthz and one health-check node port, on loopback.
    let healthz = healthz_server("127.0.0.1:0".parse().unwrap(), health.clone())
        .await
        .unwrap();
    let hc = ServiceHealthServer::new(health.clone());
    let hc_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let checks = HashMap::from([(
        kube_ipvs::model::input::SvcId::from("default/web"),
        HealthCheck {
            node_port: hc_port,
            local_endpoints: 1,
        },
    )]);
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    hc.sync(&[loopback], &checks).await;
    let hc_addr = SocketAddr::new(loopback, hc_port);
    assert_eq!(probe(healthz.local_addr(), "/healthz").await.0, 200);
    assert_eq!(probe(hc_addr, "/").await.0, 200);
    let base_fds = open_fds();
    let base_rss = status_bytes("VmRSS:");

    let flood = Arc::new(Flood::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..ATTACKERS {
        let addr = if i % 2 == 0 {
            healthz.local_addr()
        } else {
            hc_addr
        };
        let slow = (i / 2) % 2 == 1;
        tasks.push(tokio::spawn(attacker(
            addr,
            slow,
            flood.clone(),
            stop_rx.clone(),
        )));
    }
    let start = Instant::now();
    while flood.connects.load(Relaxed) < ATTACKERS {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "only {} of {ATTACKERS} attackers connected",
            flood.connects.load(Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let flood_up = start.elapsed();

    // Probe both ports every 200 ms; halfway, change a manifest.
    let mut latencies = Vec::new();
    let (mut max_fds, mut max_server_fds, mut max_rss) = (0u64, 0u64, 0u64);
    let (mut max_open_healthz, mut max_open_hc, mut max_held) = (0, 0, 0);
    let new_ip = Cluster::endpoint_ip(7, 9).to_string();
    let mut changed_at: Option<Instant> = None;
    let mut reached_plan: Option<Duration> = None;
    let probing = Instant::now();
    while probing.elapsed() < PROBING || reached_plan.is_none() {
        assert!(
            probing.elapsed() < PROBING + Duration::from_secs(30),
            "the manifest change did not reach the plan within 30 s of the flood"
        );
        let (code, took) = probe(healthz.local_addr(), "/healthz").await;
        assert_eq!(code, 200, "healthz during the flood (after {took:?})");
        assert!(took < PROBE_BOUND, "healthz took {took:?} during the flood");
        latencies.push(took);
        let (code, took) = probe(hc_addr, "/").await;
        assert_eq!(
            code, 200,
            "health-check port during the flood (after {took:?})"
        );
        assert!(
            took < PROBE_BOUND,
            "health-check port took {took:?} during the flood"
        );
        latencies.push(took);

        if changed_at.is_none() && probing.elapsed() >= PROBING / 2 {
            let eps = cluster.replace_endpoint(7, 0, 9).unwrap();
            cluster.write_service(dir.path(), 7, &eps).unwrap();
            changed_at = Some(Instant::now());
        }
        if let Some(at) = changed_at
            && reached_plan.is_none()
            && h.trigger.is_pending()
        {
            let batch = lock(&sources).take_batch().unwrap();
            batch.apply_to(&mut proxier, NodeInfo::from_node);
            let plan = proxier.sync(1);
            assert!(
                plan.ops.iter().any(|op| op.to_string().contains(&new_ip)),
                "the plan lacks the new endpoint {new_ip}: {:?}",
                plan.ops.iter().map(ToString::to_string).collect::<Vec<_>>()
            );
            reached_plan = Some(at.elapsed());
        }

        let fds = open_fds();
        let held = flood.held.load(Relaxed) as u64;
        max_fds = max_fds.max(fds);
        max_server_fds = max_server_fds.max(fds.saturating_sub(held));
        max_held = max_held.max(held);
        max_rss = max_rss.max(status_bytes("VmRSS:"));
        max_open_healthz = max_open_healthz.max(healthz.open_connections());
        max_open_hc = max_open_hc.max(hc.open_connections().await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    stop_tx.send(true).unwrap();
    for t in tasks {
        let _ = t.await;
    }
    watcher.abort();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "flood: {ATTACKERS} attackers connected in {flood_up:?}; {} connects, {} closed by the servers, \
         {} of them evicted by healthz's cap",
        flood.connects.load(Relaxed),
        flood.closed_by_server.load(Relaxed),
        healthz.evicted_connections(),
    );
    println!(
        "probes: {} fresh GETs, p50 {:?}, p99 {:?}, max {:?} (bound {PROBE_BOUND:?})",
        latencies.len(),
        p(0.5),
        p(0.99),
        latencies.last().unwrap()
    );
    println!(
        "open connections on the servers: healthz max {max_open_healthz} (cap {}), health-check port max {max_open_hc} (cap {})",
        HEALTHZ_LIMITS.max_connections, HEALTH_CHECK_PORT_LIMITS.max_connections
    );
    println!(
        "fds: {base_fds} before, {max_fds} max with {max_held} attacker sockets at most; \
         server side (all fds less the attackers') max {max_server_fds}"
    );
    println!(
        "VmRSS: {:.1} MiB before, {:.1} MiB max during the flood (attackers' 5,000 sockets and tasks included)",
        base_rss as f64 / MIB as f64,
        max_rss as f64 / MIB as f64
    );
    println!(
        "manifest change reached the plan {:?} after the write",
        reached_plan.unwrap()
    );

    // Admitted connections never pass the cap; evicted ones (already shut
    // down) count until their task is dropped, on a worker's next turn.
    assert!(max_open_healthz <= 2 * HEALTHZ_LIMITS.max_connections);
    assert!(max_open_hc <= 2 * HEALTH_CHECK_PORT_LIMITS.max_connections);
    // Everything but the attackers' own sockets: two per admitted server
    // connection (the socket and the accept loop's duplicate), plus
    // evicted ones not yet dropped and the probes in flight.
    let caps = (HEALTHZ_LIMITS.max_connections + HEALTH_CHECK_PORT_LIMITS.max_connections) as u64;
    assert!(
        max_server_fds <= base_fds + 2 * caps + 256,
        "server-side fds grew to {max_server_fds} (base {base_fds}, caps {caps})"
    );
    assert!(
        max_rss <= base_rss + 256 * MIB,
        "VmRSS grew from {base_rss} to {max_rss}"
    );
    assert!(
        healthz.evicted_connections() > 0,
        "the flood never reached the cap"
    );
}
