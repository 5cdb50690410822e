//! Kernel tests with real traffic through IPVS: pods in their own network
//! namespaces behind veth pairs, a client namespace for NodePort traffic, and
//! `kube-ipvs sync-once` programming the node between them.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{netns, sh};

const BIN: &str = env!("CARGO_BIN_EXE_kube-ipvs");
const TIMEOUT: Duration = Duration::from_secs(2);
const NODE_IP: &str = "192.168.100.10";
const CLIENT_IP: &str = "192.168.100.2";

/// Pod `i` (1-based) has 10.244.i.2; the node's end of its veth has 10.244.i.1.
fn pod_ip(i: usize) -> String {
    format!("10.244.{i}.2")
}
fn node_side_ip(i: usize) -> String {
    format!("10.244.{i}.1")
}

/// The named namespaces of one test; deleted when dropped.
struct Topology {
    pods: Vec<String>,
    client: String,
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in self.pods.iter().chain(std::iter::once(&self.client)) {
            let _ = common::try_sh(&format!("ip netns delete {n}"));
        }
    }
}

/// Runs `f` on a thread inside the named namespace and returns its result.
fn in_ns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{name}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread in namespace")
}

/// Starts a server in namespace `ns` on 0.0.0.0:`port` answering every
/// connection with "`name` `peer-ip`". The thread lives until the process exits.
fn serve(ns: &str, name: &str, port: u16) {
    let path = format!("/var/run/netns/{ns}");
    let name = name.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
        tx.send(()).unwrap();
        for mut s in l.incoming().flatten() {
            let peer = s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = s.write_all(format!("{name} {peer}\n").as_bytes());
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("server listening");
}

/// Connects to `addr` from the calling thread's namespace; returns
/// (pod name, peer address the pod saw), or the connect error's kind.
fn ask(addr: &str) -> Result<(String, String), std::io::ErrorKind> {
    let a: SocketAddr = addr.parse().unwrap();
    let mut s = TcpStream::connect_timeout(&a, TIMEOUT).map_err(|e| e.kind())?;
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.kind())?;
    let mut w = out.split_whitespace();
    match (w.next(), w.next()) {
        (Some(n), Some(p)) => Ok((n.to_string(), p.to_string())),
        _ => Err(std::io::ErrorKind::InvalidData),
    }
}

fn ask_from(ns: &str, addr: &str) -> Result<(String, String), std::io::ErrorKind> {
    let addr = addr.to_string();
    in_ns(ns, move || ask(&addr))
}

/// Builds the node: 3 pods on veths (10.244.i.0/24 each), a client on
/// 192.168.100.0/24, a server in each pod on 8080 and one on the node's 9999.
fn topology() -> Topology {
    let pid = std::process::id();
    let t = Topology {
        pods: (1..=3).map(|i| format!("kt{pid}p{i}")).collect(),
        client: format!("kt{pid}c"),
    };
    sh("sysctl -qw net.ipv4.ip_forward=1");
    for (k, ns) in t.pods.iter().enumerate() {
        let i = k + 1;
        sh(&format!(
            "ip netns add {ns} && ip link add vp{i} type veth peer name eth0 netns {ns} \
             && ip addr add {node}/24 dev vp{i} && ip link set vp{i} up \
             && ip -n {ns} link set lo up && ip -n {ns} addr add {pod}/24 dev eth0 \
             && ip -n {ns} link set eth0 up && ip -n {ns} route add default via {node}",
            node = node_side_ip(i),
            pod = pod_ip(i),
        ));
        serve(ns, &format!("pod{i}"), 8080);
    }
    let c = &t.client;
    sh(&format!(
        "ip netns add {c} && ip link add vc type veth peer name eth0 netns {c} \
         && ip addr add {NODE_IP}/24 dev vc && ip link set vc up \
         && ip -n {c} link set lo up && ip -n {c} addr add {CLIENT_IP}/24 dev eth0 \
         && ip -n {c} link set eth0 up && ip -n {c} route add default via {NODE_IP}"
    ));
    // A node-local server on a port no service uses.
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9999)).unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"node -\n");
        }
    });
    t
}

fn endpoints(pods: &[usize]) -> String {
    pods.iter()
        .map(|i| {
            format!(
                "- addresses: [{}]\n  nodeName: lab-node\n  conditions: {{ready: true}}\n",
                pod_ip(*i)
            )
        })
        .collect()
}

fn service(name: &str, ip: &str, extra_spec: &str, port_extra: &str, pods: &[usize]) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
spec:
  clusterIP: {ip}
{extra_spec}  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: 8080
{port_extra}---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
{eps}",
        eps = endpoints(pods)
    )
}

fn manifests() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let w = |f: &str, s: String| std::fs::write(d.path().join(f), s).unwrap();
    w(
        "00-node.yaml",
        format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: lab-node\nstatus:\n  addresses:\n  - type: InternalIP\n    address: {NODE_IP}\n"
        ),
    );
    w("web.yaml", service("web", "10.96.0.10", "", "", &[1, 2, 3]));
    w(
        "sticky.yaml",
        service(
            "sticky",
            "10.96.0.30",
            "  sessionAffinity: ClientIP\n",
            "",
            &[1, 2, 3],
        ),
    );
    w(
        "shop.yaml",
        service(
            "shop",
            "10.96.0.20",
            "  type: NodePort\n",
            "    nodePort: 30080\n",
            &[1, 2, 3],
        ),
    );
    w(
        "local.yaml",
        service(
            "local",
            "10.96.0.40",
            "  type: NodePort\n  externalTrafficPolicy: Local\n",
            "    nodePort: 30081\n",
            &[1, 2, 3],
        ),
    );
    w("self.yaml", service("self", "10.96.0.50", "", "", &[1]));
    w(
        "hashed.yaml",
        service("hashed", "10.96.0.60", "", "", &[1, 2, 3]).replacen(
            "  namespace: default\nspec:",
            "  namespace: default\n  annotations:\n    kube-ipvs.io/scheduler: sh\nspec:",
            1,
        ),
    );
    d
}

fn sync_once(dir: &std::path::Path) {
    let out = Command::new(BIN)
        .args(["sync-once", "--manifests"])
        .arg(dir)
        .args(["--hostname-override", "lab-node"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kube-ipvs");
    assert!(
        out.status.success(),
        "sync-once failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The node's end of the named pod's veth: the source a masqueraded
/// connection shows that pod.
fn node_side_of(pod: &str) -> String {
    node_side_ip(pod.trim_start_matches("pod").parse().unwrap())
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn real_traffic_through_ipvs() {
    netns();
    let _serial = common::ipvs_serial();
    let t = topology();
    let dir = manifests();
    sync_once(dir.path());
    let mut fails: Vec<String> = Vec::new();
    let mut check = |ok: bool, msg: String| {
        if !ok {
            fails.push(msg);
        }
    };

    // ClusterIP from the node: rr spreads 30 connections 10/10/10 (±1), and
    // the node's VIP source is masqueraded to an address the pod can answer.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        match ask("10.96.0.10:80") {
            Ok((pod, peer)) => {
                check(
                    peer == node_side_of(&pod),
                    format!("node → ClusterIP: {pod} saw source {peer}"),
                );
                *seen.entry(pod).or_default() += 1;
            }
            Err(e) => check(false, format!("node → ClusterIP: {e:?}")),
        }
    }
    check(
        seen.len() == 3 && seen.values().all(|n| (9..=11).contains(n)),
        format!("rr over 30 connections: {seen:?}"),
    );

    // ClusterIP from a pod: the backend sees the client pod or the node, both answerable.
    for _ in 0..6 {
        match ask_from(&t.pods[0], "10.96.0.10:80") {
            Ok((pod, peer)) => check(
                (pod != "pod1" && peer == pod_ip(1)) || peer == node_side_of(&pod),
                format!("pod1 → ClusterIP: {pod} saw source {peer}"),
            ),
            Err(e) => check(false, format!("pod1 → ClusterIP: {e:?}")),
        }
    }

    // Hairpin: pod1 reaches itself through a service whose only endpoint it is.
    match ask_from(&t.pods[0], "10.96.0.50:80") {
        Ok((pod, peer)) => check(
            pod == "pod1" && peer == node_side_ip(1),
            format!("hairpin: {pod} saw source {peer}"),
        ),
        Err(e) => check(false, format!("hairpin: {e:?}")),
    }

    // NodePort (Cluster) from the client: answered, source masqueraded.
    let mut np: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..6 {
        match ask_from(&t.client, &format!("{NODE_IP}:30080")) {
            Ok((pod, peer)) => {
                check(
                    peer == node_side_of(&pod),
                    format!("client → NodePort: {pod} saw source {peer}"),
                );
                *np.entry(pod).or_default() += 1;
            }
            Err(e) => check(false, format!("client → NodePort: {e:?}")),
        }
    }
    check(np.len() == 3, format!("NodePort rr over 6: {np:?}"));

    // NodePort with externalTrafficPolicy Local: the client's address is kept.
    for _ in 0..3 {
        match ask_from(&t.client, &format!("{NODE_IP}:30081")) {
            Ok((pod, peer)) => check(
                peer == CLIENT_IP,
                format!("client → NodePort (Local): {pod} saw source {peer}"),
            ),
            Err(e) => check(false, format!("client → NodePort (Local): {e:?}")),
        }
    }

    // sessionAffinity ClientIP: every connection lands on the same pod.
    let mut sticky: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        match ask("10.96.0.30:80") {
            Ok((pod, _)) => *sticky.entry(pod).or_default() += 1,
            Err(e) => check(false, format!("node → sticky: {e:?}")),
        }
    }
    check(sticky.len() == 1, format!("ClientIP affinity: {sticky:?}"));

    // The scheduler annotation: source hashing sends one client to one pod.
    let mut hashed: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..10 {
        match ask("10.96.0.60:80") {
            Ok((pod, _)) => *hashed.entry(pod).or_default() += 1,
            Err(e) => check(false, format!("node → sh service: {e:?}")),
        }
    }
    check(hashed.len() == 1, format!("scheduler sh: {hashed:?}"));
    let scheduler = sh("ipvsadm -Ln -t 10.96.0.60:80");
    check(
        scheduler.lines().any(|l| l.contains("10.96.0.60:80 sh")),
        format!("scheduler annotation not applied:\n{scheduler}"),
    );

    // KUBE-IPVS-FILTER: a node port that is no service port is not reachable
    // on a ClusterIP, though it is on the node's own address.
    let direct = ask_from(&t.pods[1], &format!("{}:9999", node_side_ip(2)));
    check(
        direct.is_ok(),
        format!("pod2 → node:9999 (control): {direct:?}"),
    );
    let via_vip = ask_from(&t.pods[1], "10.96.0.10:9999");
    check(
        via_vip.is_err(),
        format!("pod2 → ClusterIP:9999 must be refused: {via_vip:?}"),
    );
    let from_client = ask_from(&t.client, "10.96.0.10:9999");
    check(
        from_client.is_err(),
        format!("client → ClusterIP:9999 must be refused: {from_client:?}"),
    );

    eprintln!(
        "rr {seen:?}; NodePort {np:?}; affinity {sticky:?}; sh {hashed:?}; \
         filter: direct {direct:?}, pod → VIP {via_vip:?}, client → VIP {from_client:?}"
    );
    assert!(
        fails.is_empty(),
        "traffic checks failed:\n{}",
        fails.join("\n")
    );
    drop(t);
}
