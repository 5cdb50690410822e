//! The live swap between upstream kube-proxy v1.37.2 (IPVS mode) and kube-ipvs, both ways, under traffic: no connection reset, no new connection failed, no UDP lost, no IPVS service recreated, and kube-ipvs writes nothing to IPVS, ipsets or links at takeover.
//!
//! The node is this test's network namespace, with the lab uplink to the real
//! apiserver and two pods on veths (tests/common/traffic.rs). Traffic runs
//! from the node: a long-lived TCP connection, a UDP stream every 20 ms, and
//! a new TCP connection every 100 ms, to the ClusterIP and the NodePort in
//! turn. kube-proxy stops as a DaemonSet swap stops it (SIGKILL, no cleanup);
//! kube-ipvs stops with SIGTERM, which leaves the kernel as it is.

mod common;

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{Lab, load, unload};
use common::daemon::{Daemon, http_get, metric_in};
use common::gen_cluster::{NODE, node_object};
use common::traffic::{Conn, TCP_PORT, UDP_PORT, ask, pod_ip, topology};
use common::upstream::{HEALTHZ, METRICS, Which, has_synced, start, write_config};
use serde_json::{Value, json};

#[path = "../examples/lab/uplink.rs"]
mod uplink;
use uplink::{NODE_IP, NODE_IP6, uplink};

const NS: &str = "swap-lab";
const TCP_VIP: &str = "10.96.210.10";
const UDP_VIP: &str = "10.96.210.53";
const NODE_PORT: u16 = 31990;

fn objects() -> Vec<Value> {
    let endpoints: Vec<Value> = [1, 2]
        .iter()
        .map(
            |&i| json!({"addresses": [pod_ip(i)], "nodeName": NODE, "conditions": {"ready": true}}),
        )
        .collect();
    let slice = |svc: &str, proto: &str, port: u16| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
               "metadata": {"name": format!("{svc}-1"), "namespace": NS,
                            "labels": {"kubernetes.io/service-name": svc,
                                       "endpointslice.kubernetes.io/managed-by": "kube-ipvs-lab"}},
               "addressType": "IPv4",
               "ports": [{"name": "p", "protocol": proto, "port": port}],
               "endpoints": endpoints})
    };
    vec![
        node_object(NODE_IP, NODE_IP6),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "swap-tcp", "namespace": NS},
               "spec": {"type": "NodePort", "clusterIP": TCP_VIP,
                        "ports": [{"name": "p", "protocol": "TCP", "port": 80,
                                   "targetPort": TCP_PORT, "nodePort": NODE_PORT}]}}),
        slice("swap-tcp", "TCP", TCP_PORT),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "swap-udp", "namespace": NS},
               "spec": {"clusterIP": UDP_VIP,
                        "ports": [{"name": "p", "protocol": "UDP", "port": 53, "targetPort": UDP_PORT}]}}),
        slice("swap-udp", "UDP", UDP_PORT),
    ]
}

#[derive(Default, Debug)]
struct Stats {
    long_exchanges: u64,
    new_ok: u64,
    errors: Vec<String>,
    udp_sent: u64,
    udp_received: u64,
}

/// The three kinds of traffic, from threads in the node's namespace.
struct Traffic {
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start() -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let mut threads = Vec::new();
        let mut conn = Conn::open(&format!("{TCP_VIP}:80"), Duration::from_secs(5))
            .expect("the long-lived connection opens");
        let (s, st) = (stop.clone(), stats.clone());
        threads.push(std::thread::spawn(move || {
            let mut n = 0u64;
            while !s.load(Ordering::Relaxed) {
                n += 1;
                match conn.exchange(&format!("m{n}")) {
                    Ok(_) => st.lock().unwrap().long_exchanges += 1,
                    Err(e) => {
                        st.lock()
                            .unwrap()
                            .errors
                            .push(format!("long-lived connection: {e}"));
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }));
        let (s, st) = (stop.clone(), stats.clone());
        threads.push(std::thread::spawn(move || {
            let targets = [format!("{TCP_VIP}:80"), format!("{NODE_IP}:{NODE_PORT}")];
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                let t = &targets[i % 2];
                i += 1;
                match ask(t) {
                    Ok(_) => st.lock().unwrap().new_ok += 1,
                    Err(e) => st
                        .lock()
                        .unwrap()
                        .errors
                        .push(format!("new connection to {t}: {e:?}")),
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
        let sock = UdpSocket::bind("0.0.0.0:0").expect("UDP client");
        sock.connect(format!("{UDP_VIP}:53")).expect("UDP connect");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let rx = sock.try_clone().unwrap();
        let (s, st) = (stop.clone(), stats.clone());
        threads.push(std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if sock.send(b"ping").is_ok() {
                    st.lock().unwrap().udp_sent += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
        let (s, st) = (stop.clone(), stats.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            // Keeps reading until 3 s pass without an answer after the stop:
            // late answers under a loaded emulator still count.
            let mut quiet_since: Option<Instant> = None;
            loop {
                if rx.recv(&mut buf).is_ok() {
                    st.lock().unwrap().udp_received += 1;
                    quiet_since = None;
                } else if s.load(Ordering::Relaxed) {
                    let q = *quiet_since.get_or_insert_with(Instant::now);
                    if q.elapsed() > Duration::from_secs(3) {
                        return;
                    }
                }
            }
        }));
        Traffic {
            stop,
            stats,
            threads,
        }
    }

    /// (errors so far, a one-line summary).
    fn check(&self) -> (Vec<String>, String) {
        let s = self.stats.lock().unwrap();
        (
            s.errors.clone(),
            format!(
                "{} exchanges on the long-lived connection, {} new connections, UDP {} sent / {} answered",
                s.long_exchanges, s.new_ok, s.udp_sent, s.udp_received
            ),
        )
    }

    fn finish(self) -> Stats {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("traffic thread");
        }
        Arc::try_unwrap(self.stats).unwrap().into_inner().unwrap()
    }
}

/// Per virtual server, the connections IPVS has scheduled since it was
/// created (`ipvsadm -Ln --stats`): a service deleted and created again
/// starts from 0.
fn conns_per_service() -> Vec<(String, u64)> {
    common::try_sh("ipvsadm -Ln --stats")
        .1
        .lines()
        .filter(|l| l.starts_with("TCP") || l.starts_with("UDP"))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((format!("{} {}", w[0], w[1]), w.get(2)?.parse().ok()?))
        })
        .collect()
}

fn assert_not_recreated(before: &[(String, u64)], after: &[(String, u64)], when: &str) {
    for (vs, n) in before {
        let m = after.iter().find(|(v, _)| v == vs).map(|(_, m)| *m);
        assert!(
            m.is_some_and(|m| m >= *n),
            "{when}: virtual server {vs} had {n} connections and now {m:?}: deleted and created again"
        );
    }
}

fn wait(d: &mut Daemon, which: Which) {
    d.wait_for("the first sync", || has_synced(which));
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn swapping_kube_proxy_and_kube_ipvs_under_traffic_disturbs_nothing() {
    let _serial = common::ipvs_serial();
    common::netns();
    uplink().expect("an uplink to the host");
    let _pods = topology("sw", 2);
    let Lab {
        rt,
        admin,
        admin_kubeconfig: admin_kc,
        kube_ipvs_kubeconfig: sa_kc,
        kube_proxy,
    } = Lab::connect();
    let objs = objects();
    rt.block_on(load(&admin, &objs));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), NODE, &admin_kc, "", "30s");

    // kube-proxy programs the node, and traffic starts.
    let mut up = start(
        Which::Upstream,
        &kube_proxy,
        &config,
        &sa_kc,
        dir.path().join("kube-proxy.log"),
    );
    wait(&mut up, Which::Upstream);
    up.wait_for("the test's virtual servers", || {
        let s = common::try_sh("ipvsadm -Sn").1;
        s.contains(&format!("-A -t {TCP_VIP}:80")) && s.contains(&format!("-A -u {UDP_VIP}:53"))
    });
    let traffic = Traffic::start();
    std::thread::sleep(Duration::from_secs(3));
    let (errors, summary) = traffic.check();
    assert!(
        errors.is_empty(),
        "traffic failed under kube-proxy alone: {errors:?}"
    );
    eprintln!("under kube-proxy: {summary}");

    // What kube-ipvs would change, from its read-only diff.
    let (ok, diff, err) = common::run(
        common::KUBE_IPVS,
        &[
            "--config",
            config.to_str().unwrap(),
            "--kubeconfig",
            &sa_kc,
            "diff",
        ],
        "",
    );
    assert!(ok, "kube-ipvs diff failed: {err}");
    eprintln!("kube-ipvs diff against kube-proxy's node:\n{diff}");
    // Exactly the README's intended differences: kube-ipvs's static iptables
    // payload (rules for empty sets too) and IPv6 forwarding; nothing else.
    for l in diff.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            l.starts_with("+ iptables: our chains and jumps")
                || l.starts_with("+ ip6tables: our chains and jumps")
                || l == "+ sysctl net.ipv6.conf.all.forwarding=1"
                || l == "- sysctl net.ipv6.conf.all.forwarding=0",
            "kube-ipvs would change more than the intended differences at takeover: {l}\n{diff}"
        );
    }
    let ipvs_before = common::try_sh("ipvsadm -Sn").1;
    let conns = conns_per_service();

    // The swap: kube-proxy goes without cleanup, kube-ipvs takes over.
    up.kill9();
    let t0 = Instant::now();
    let mut ours = start(
        Which::KubeIpvs,
        common::KUBE_IPVS,
        &config,
        &sa_kc,
        dir.path().join("kube-ipvs.log"),
    );
    wait(&mut ours, Which::KubeIpvs);
    eprintln!(
        "kube-ipvs ready {:.1} s after its start",
        t0.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let metrics = http_get(METRICS, "/metrics")
        .map(|(_, m)| m)
        .unwrap_or_default();
    let netlink_ops = metric_in(&metrics, "kube_ipvs_netlink_operations_total").unwrap_or(f64::NAN);
    assert_eq!(
        netlink_ops,
        0.0,
        "kube-ipvs wrote to IPVS, ipsets or links at takeover; its diff was:\n{diff}\nlog:\n{}",
        ours.log()
    );
    assert_eq!(
        common::try_sh("ipvsadm -Sn").1,
        ipvs_before,
        "IPVS changed at takeover"
    );
    let conns2 = conns_per_service();
    assert_not_recreated(&conns, &conns2, "kube-proxy → kube-ipvs");
    let (errors, summary) = traffic.check();
    assert!(
        errors.is_empty(),
        "traffic failed at the swap to kube-ipvs: {errors:?}"
    );
    eprintln!("after the swap to kube-ipvs: {summary}");
    assert_eq!(
        http_get(HEALTHZ, "/healthz").map(|(c, _)| c),
        Some(200),
        "kube-ipvs unhealthy after takeover"
    );

    // And back: kube-ipvs stops (SIGTERM leaves the kernel), kube-proxy returns.
    ours.terminate();
    let mut up = start(
        Which::Upstream,
        &kube_proxy,
        &config,
        &sa_kc,
        dir.path().join("kube-proxy-2.log"),
    );
    wait(&mut up, Which::Upstream);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        common::try_sh("ipvsadm -Sn").1,
        ipvs_before,
        "IPVS changed when kube-proxy returned"
    );
    assert_not_recreated(&conns2, &conns_per_service(), "kube-ipvs → kube-proxy");
    let stats = traffic.finish();
    eprintln!("final: {stats:?}");
    assert!(
        stats.errors.is_empty(),
        "traffic failed at the swap back: {:?}",
        stats.errors
    );
    assert!(
        stats.long_exchanges > 20 && stats.new_ok > 50,
        "too little traffic: {stats:?}"
    );
    // Every datagram answered: the kernel forwarded throughout.
    assert_eq!(
        stats.udp_sent, stats.udp_received,
        "UDP datagrams lost: {stats:?}"
    );
    up.kill9();
    rt.block_on(unload(&admin, &objs));
}
