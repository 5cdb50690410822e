//! Kernel tests with real traffic through IPVS: pods in their own network
//! namespaces behind veth pairs, client namespaces for external traffic, and
//! `kube-ipvs sync-once` programming the node between them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::traffic::{
    CLIENT_IP, Conn, NODE_IP, TIMEOUT, annotated, ask, ask_from, node_side_ip, node_side_of,
    node_yaml, pod_ip, ready, spread, tcp_service, terminating, topology, with_lb_ingress,
};
use common::{netns, sh};

const EXTERNAL_IP: &str = "192.168.200.10";
const LB_IP: &str = "192.168.200.20";
const LOCAL_LB_IP: &str = "192.168.200.30";
const KEEP_EXTERNAL_IP: &str = "192.168.200.11";
const KEEP_LB_IP: &str = "192.168.200.40";

/// A ClusterIP Service on port 80 with ready endpoints on this node.
fn service(name: &str, ip: &str, extra_spec: &str, port_extra: &str, pods: &[usize]) -> String {
    tcp_service(name, ip, extra_spec, port_extra, &ready(pods, "lab-node"))
}

/// The wrr Service; pod 3 terminating (still serving) when `pod3_terminating`.
fn wrr(pod3_terminating: bool) -> String {
    let eps = if pod3_terminating {
        ready(&[1, 2], "lab-node") + &terminating(3, "lab-node")
    } else {
        ready(&[1, 2, 3], "lab-node")
    };
    annotated(
        &tcp_service("weighted", "10.96.0.90", "", "", &eps),
        "kube-ipvs.io/scheduler",
        "wrr",
    )
}

fn manifests() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let w = |f: &str, s: String| std::fs::write(d.path().join(f), s).unwrap();
    w("00-node.yaml", node_yaml());
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
        annotated(
            &service("hashed", "10.96.0.60", "", "", &[1, 2, 3]),
            "kube-ipvs.io/scheduler",
            "sh",
        ),
    );
    w(
        "external.yaml",
        service(
            "external",
            "10.96.0.70",
            &format!("  externalIPs: [{EXTERNAL_IP}]\n"),
            "",
            &[1, 2, 3],
        ),
    );
    // Only the first client's subnet may use the load balancer.
    w(
        "ranged.yaml",
        with_lb_ingress(
            &service(
                "ranged",
                "10.96.0.80",
                "  type: LoadBalancer\n  loadBalancerSourceRanges: [192.168.100.0/24]\n",
                "    nodePort: 30082\n",
                &[1, 2, 3],
            ),
            LB_IP,
        ),
    );
    w("weighted.yaml", wrr(false));
    w(
        "least.yaml",
        annotated(
            &service("least", "10.96.0.100", "", "", &[1, 2, 3]),
            "kube-ipvs.io/scheduler",
            "lc",
        ),
    );
    // externalTrafficPolicy Local with local endpoints, on an external IP
    // and a load-balancer IP.
    w(
        "keep.yaml",
        with_lb_ingress(
            &service(
                "keep",
                "10.96.0.120",
                &format!(
                    "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  externalIPs: [{KEEP_EXTERNAL_IP}]\n"
                ),
                "    nodePort: 30084\n",
                &[1, 2, 3],
            ),
            KEEP_LB_IP,
        ),
    );
    // externalTrafficPolicy Local with every endpoint on another node.
    w(
        "remote.yaml",
        with_lb_ingress(
            &tcp_service(
                "remote",
                "10.96.0.110",
                "  type: LoadBalancer\n  externalTrafficPolicy: Local\n",
                "    nodePort: 30083\n",
                &ready(&[1, 2, 3], "other-node"),
            ),
            LOCAL_LB_IP,
        ),
    );
    d
}

fn sync_once(dir: &Path) {
    let dir = dir.to_str().expect("a UTF-8 path");
    common::kube_ipvs(&["sync-once", "--manifests", dir]);
}

fn even(seen: &BTreeMap<String, usize>, pods: &[&str], total: usize) -> bool {
    let share = total / pods.len();
    seen.len() == pods.len()
        && pods.iter().all(|p| {
            seen.get(*p)
                .is_some_and(|n| (share.saturating_sub(1)..=share + 1).contains(n))
        })
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn real_traffic_through_ipvs() {
    netns();
    let _serial = common::ipvs_serial();
    let t = topology("t", 3);
    common::traffic::serve_node(9999);
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
        even(&seen, &["pod1", "pod2", "pod3"], 30),
        format!("rr over 30 connections: {seen:?}"),
    );

    // ClusterIP from a pod: not masqueraded (the backend sees the pod's own
    // address), except when it lands on the caller itself (hairpin).
    let mut from_pod: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..6 {
        match ask_from(t.pod(1), "10.96.0.10:80") {
            Ok((pod, peer)) => {
                let want = if pod == "pod1" {
                    node_side_ip(1)
                } else {
                    pod_ip(1)
                };
                check(
                    peer == want,
                    format!("pod1 → ClusterIP: {pod} saw source {peer}, expected {want}"),
                );
                *from_pod.entry(pod).or_default() += 1;
            }
            Err(e) => check(false, format!("pod1 → ClusterIP: {e:?}")),
        }
    }
    check(
        from_pod.len() == 3,
        format!("pod1 → ClusterIP over 6: {from_pod:?}"),
    );

    // Hairpin: pod1 reaches itself through a service whose only endpoint it is.
    match ask_from(t.pod(1), "10.96.0.50:80") {
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

    // externalIP and LB IP with externalTrafficPolicy Local: source kept.
    for addr in [KEEP_EXTERNAL_IP, KEEP_LB_IP] {
        match ask_from(&t.client, &format!("{addr}:80")) {
            Ok((pod, peer)) => check(
                peer == CLIENT_IP,
                format!("client → {addr} (Local): {pod} saw source {peer}"),
            ),
            Err(e) => check(false, format!("client → {addr} (Local): {e:?}")),
        }
    }

    // externalIP (Cluster policy) from the client: answered, masqueraded.
    let mut ext: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..3 {
        match ask_from(&t.client, &format!("{EXTERNAL_IP}:80")) {
            Ok((pod, peer)) => {
                check(
                    peer == node_side_of(&pod),
                    format!("client → externalIP: {pod} saw source {peer}"),
                );
                *ext.entry(pod).or_default() += 1;
            }
            Err(e) => check(false, format!("client → externalIP: {e:?}")),
        }
    }

    // loadBalancerSourceRanges: the first client's subnet is allowed, the
    // second client's is not; the second client reaches a NodePort (control).
    let allowed = ask_from(&t.client, &format!("{LB_IP}:80"));
    check(
        allowed
            .as_ref()
            .is_ok_and(|(pod, peer)| *peer == node_side_of(pod)),
        format!("allowed client → LB IP: {allowed:?}"),
    );
    let control = ask_from(&t.client2, &format!("{NODE_IP}:30080"));
    check(
        control.is_ok(),
        format!("client2 → NodePort (control): {control:?}"),
    );
    let denied = ask_from(&t.client2, &format!("{LB_IP}:80"));
    check(
        denied.is_err(),
        format!("client2 outside loadBalancerSourceRanges → LB IP must fail: {denied:?}"),
    );

    // externalTrafficPolicy Local with no endpoint on this node: external
    // traffic is dropped (NodePort and LB IP), cluster traffic still served.
    let remote_np = ask_from(&t.client, &format!("{NODE_IP}:30083"));
    check(
        remote_np.is_err(),
        format!("client → NodePort (Local, no local endpoint) must fail: {remote_np:?}"),
    );
    let remote_lb = ask_from(&t.client, &format!("{LOCAL_LB_IP}:80"));
    check(
        remote_lb.is_err(),
        format!("client → LB IP (Local, no local endpoint) must fail: {remote_lb:?}"),
    );
    let remote_cip = spread(None, "10.96.0.110:80", 3);
    check(
        remote_cip.keys().all(|k| k.starts_with("pod")),
        format!("node → ClusterIP (Local policy, remote endpoints): {remote_cip:?}"),
    );

    // sessionAffinity ClientIP: every connection lands on the same pod.
    let sticky = spread(None, "10.96.0.30:80", 10);
    check(
        sticky.len() == 1 && sticky.keys().all(|k| k.starts_with("pod")),
        format!("ClientIP affinity: {sticky:?}"),
    );

    // The scheduler annotation: source hashing sends one client to one pod.
    let hashed = spread(None, "10.96.0.60:80", 10);
    check(
        hashed.len() == 1 && hashed.keys().all(|k| k.starts_with("pod")),
        format!("scheduler sh: {hashed:?}"),
    );
    let scheduler = sh("ipvsadm -Ln -t 10.96.0.60:80");
    check(
        scheduler.lines().any(|l| l.contains("10.96.0.60:80 sh")),
        format!("scheduler annotation not applied:\n{scheduler}"),
    );

    // lc: with connections held open on two pods, new connections all go to
    // the idle third (rr would cycle through all three).
    let held: Vec<_> = (0..2)
        .map(|_| Conn::open("10.96.0.100:80", TIMEOUT))
        .collect();
    let busy: Vec<String> = held
        .iter()
        .filter_map(|c| c.as_ref().ok().map(|c| c.pod.clone()))
        .collect();
    let least = spread(None, "10.96.0.100:80", 5);
    check(
        busy.len() == 2
            && busy[0] != busy[1]
            && least.len() == 1
            && least
                .keys()
                .all(|k| k.starts_with("pod") && !busy.contains(k)),
        format!(
            "lc: held {:?}, then 5 new connections went to {least:?}",
            held.iter()
                .map(|c| c.as_ref().map(|c| &c.pod))
                .collect::<Vec<_>>()
        ),
    );
    drop(held);

    // wrr: equal weights spread evenly; the kernel runs wrr.
    let weighted = spread(None, "10.96.0.90:80", 30);
    check(
        even(&weighted, &["pod1", "pod2", "pod3"], 30),
        format!("wrr over 30 connections: {weighted:?}"),
    );
    let wrr_list = sh("ipvsadm -Ln -t 10.96.0.90:80");
    check(
        wrr_list.lines().any(|l| l.contains("10.96.0.90:80 wrr")),
        format!("wrr annotation not applied:\n{wrr_list}"),
    );

    // KUBE-IPVS-FILTER: a node port that is no service port is not reachable
    // on a ClusterIP, though it is on the node's own address.
    let direct = ask_from(t.pod(2), &format!("{}:9999", node_side_ip(2)));
    check(
        direct.is_ok(),
        format!("pod2 → node:9999 (control): {direct:?}"),
    );
    let via_vip = ask_from(t.pod(2), "10.96.0.10:9999");
    check(
        via_vip.is_err(),
        format!("pod2 → ClusterIP:9999 must be refused: {via_vip:?}"),
    );
    let from_client = ask_from(&t.client, "10.96.0.10:9999");
    check(
        from_client.is_err(),
        format!("client → ClusterIP:9999 must be refused: {from_client:?}"),
    );

    // wrr with pod3 terminating: it keeps its open connection at weight 0
    // and gets no new ones; pods 1 and 2 share them evenly.
    let mut on_pod3 = None;
    for _ in 0..6 {
        match Conn::open("10.96.0.90:80", TIMEOUT) {
            Ok(c) if c.pod == "pod3" => {
                on_pod3 = Some(c);
                break;
            }
            Ok(_) => {}
            Err(e) => check(false, format!("node → wrr service: {e:?}")),
        }
    }
    std::fs::write(dir.path().join("weighted.yaml"), wrr(true)).unwrap();
    sync_once(dir.path());
    let saved = sh("ipvsadm -Sn");
    let rs = |i: usize, w: u8| format!("-a -t 10.96.0.90:80 -r {}:8080 -m -w {w}", pod_ip(i));
    check(
        saved.contains(&rs(3, 0)) && saved.contains(&rs(1, 1)) && saved.contains(&rs(2, 1)),
        format!("pod3 terminating: expected weight 0 for it, 1 for the others:\n{saved}"),
    );
    let after = spread(None, "10.96.0.90:80", 20);
    check(
        even(&after, &["pod1", "pod2"], 20),
        format!("wrr with pod3 at weight 0, 20 new connections: {after:?}"),
    );
    let kept = on_pod3.as_mut().map(|c| c.exchange("still there"));
    check(
        kept == Some(Ok("pod3".into())),
        format!("the connection held on pod3 while it terminates: {kept:?}"),
    );

    eprintln!(
        "rr {seen:?}; pod1 → ClusterIP {from_pod:?}; NodePort {np:?}; externalIP {ext:?}; \
         LB allowed {allowed:?}, denied {denied:?}; ETP Local remote: NodePort {remote_np:?}, \
         LB {remote_lb:?}, ClusterIP {remote_cip:?}; affinity {sticky:?}; sh {hashed:?}; \
         lc held {busy:?} → {least:?}; wrr {weighted:?}, pod3 at weight 0 {after:?}; \
         filter: direct {direct:?}, pod → VIP {via_vip:?}, client → VIP {from_client:?}"
    );
    assert!(
        fails.is_empty(),
        "traffic checks failed:\n{}",
        fails.join("\n")
    );
    drop(t);
}
