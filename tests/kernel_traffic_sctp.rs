//! Kernel test with real SCTP associations through IPVS: ClusterIP and NodePort, and an endpoint removed while associations are open (its own ends with its conntrack entries, as upstream's; the others live on).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::traffic::{
    CLIENT_IP, Conn, NODE_IP, SCTP_PORT, SCTP_SERVICE_PORT, TIMEOUT, in_ns, node_side_of,
    node_yaml, pod_ip, pod_number, ready, sctp_service, serve_sctp, topology,
};
use common::{netns, sh, try_sh};

const VIP: &str = "10.96.5.10";
const NODE_PORT: u16 = 30300;

fn manifest(pods: &[usize]) -> String {
    sctp_service(
        "assoc",
        VIP,
        "  type: NodePort\n",
        &format!("    nodePort: {NODE_PORT}\n"),
        &ready(pods, "lab-node"),
    )
}

fn sync_once(dir: &Path) {
    common::kube_ipvs(&["sync-once", "--manifests", dir.to_str().unwrap()]);
}

/// Opens `n` associations to `addr` from the node's address (or from
/// namespace `ns`, the client's); counts them per answering pod, failures as
/// "error <kind>".
fn associations(ns: Option<&str>, addr: &str, n: usize) -> (Vec<Conn>, BTreeMap<String, usize>) {
    let mut conns = Vec::new();
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let r = match ns {
            Some(ns) => {
                let a = addr.to_string();
                in_ns(ns, move || Conn::open_sctp(CLIENT_IP, &a, TIMEOUT))
            }
            None => Conn::open_sctp(NODE_IP, addr, TIMEOUT),
        };
        match r {
            Ok(c) => {
                *seen.entry(c.pod.clone()).or_default() += 1;
                conns.push(c);
            }
            Err(e) => *seen.entry(format!("error {e:?}")).or_default() += 1,
        }
    }
    (conns, seen)
}

/// conntrack's SCTP flows to the VIP answered by pod `i`.
fn flows_of(i: usize) -> usize {
    let (ok, out, err) = try_sh(&format!(
        "conntrack -L -p sctp --orig-dst {VIP} --reply-src {} 2>/dev/null",
        pod_ip(i)
    ));
    assert!(ok, "conntrack -L failed: {err}");
    out.lines().filter(|l| l.contains(&pod_ip(i))).count()
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn real_sctp_associations_through_ipvs() {
    netns();
    let _serial = common::ipvs_serial();
    // SCTP sockets need the protocol module; IPVS's SCTP support is built
    // into ip_vs, the sockets' is not.
    sh("modprobe sctp");
    let t = topology("a", 3);
    for i in 1..=3 {
        serve_sctp(&t, i);
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-node.yaml"), node_yaml()).unwrap();
    std::fs::write(dir.path().join("assoc.yaml"), manifest(&[1, 2, 3])).unwrap();
    sync_once(dir.path());
    let saved = sh("ipvsadm -Sn");
    let mut fails: Vec<String> = Vec::new();
    let mut check = |ok: bool, msg: String| {
        if !ok {
            fails.push(msg);
        }
    };
    check(
        saved.contains(&format!(
            "-A --sctp-service {VIP}:{SCTP_SERVICE_PORT} -s rr"
        )) && saved.contains(&format!(
            "-a --sctp-service {VIP}:{SCTP_SERVICE_PORT} -r {}:{SCTP_PORT} -m -w 1",
            pod_ip(1)
        )),
        format!("the SCTP service in ipvsadm -Sn:\n{saved}"),
    );

    // ClusterIP from the node (bound to its address): rr spreads six
    // associations two by two, each echoing. The pod sees the node's
    // address: a source the pod can answer is not masqueraded (no
    // clusterCIDR, no masqueradeAll), as upstream.
    let vip = format!("{VIP}:{SCTP_SERVICE_PORT}");
    let (mut open, seen) = associations(None, &vip, 6);
    check(
        seen.len() == 3 && seen.values().all(|n| *n == 2),
        format!("rr over 6 SCTP associations: {seen:?}"),
    );
    for c in &mut open {
        let (pod, peer) = (c.pod.clone(), c.peer.clone());
        check(
            peer == NODE_IP,
            format!("node → SCTP ClusterIP: {pod} saw source {peer}, expected {NODE_IP}"),
        );
        let echoed = c.exchange("hello");
        check(
            echoed.as_deref() == Ok(pod.as_str()),
            format!("echo on the association to {pod}: {echoed:?}"),
        );
    }

    // NodePort from the client: answered, masqueraded.
    let (np_open, np) = associations(Some(&t.client), &format!("{NODE_IP}:{NODE_PORT}"), 3);
    check(
        np.len() == 3 && np.keys().all(|k| k.starts_with("pod")),
        format!("client → SCTP NodePort over 3: {np:?}"),
    );
    for c in &np_open {
        check(
            c.peer == node_side_of(&c.pod),
            format!("client → SCTP NodePort: {} saw source {}", c.pod, c.peer),
        );
    }
    drop(np_open);

    // Pod 1 leaves the slice while two associations to it and four to the
    // others are open. As upstream (no graceful termination for SCTP or UDP:
    // nothing marks an association's end to IPVS), its real server goes at
    // once, with its conntrack entries; the next packet of its associations
    // meets no destination and IPVS expires them (expire_nodest_conn).
    let before = flows_of(1);
    check(
        before >= 2,
        format!(
            "conntrack lists {before} SCTP flows to pod1 while two are open (the check is blind)"
        ),
    );
    // Control: every association still echoes after a while (one that
    // breaks by itself, such as a multi-homed one through NAT, would make
    // the checks below meaningless).
    std::thread::sleep(Duration::from_secs(5));
    for c in &mut open {
        let r = c.exchange("control");
        check(
            r.as_deref() == Ok(c.pod.as_str()),
            format!("control exchange with {} before any change: {r:?}", c.pod),
        );
    }
    std::fs::write(dir.path().join("assoc.yaml"), manifest(&[2, 3])).unwrap();
    sync_once(dir.path());
    let saved = sh("ipvsadm -Sn");
    check(
        !saved.contains(&pod_ip(1)),
        format!("pod1's real server must be gone at once:\n{saved}"),
    );
    let after = flows_of(1);
    check(
        after == 0,
        format!("{after} conntrack SCTP flows to pod1 left after it was removed"),
    );
    let mut ended = Vec::new();
    for c in &mut open {
        let pod = c.pod.clone();
        let r = c.exchange("still there");
        if pod == "pod1" {
            // Ends: dropped, then refused by the node's own stack (ABORT) or unanswered.
            check(
                r.is_err(),
                format!("the association to removed pod1 must end: {r:?}"),
            );
            ended.push(r);
        } else {
            check(
                r.as_deref() == Ok(pod.as_str()),
                format!("the association to {pod} must live on: {r:?}"),
            );
        }
    }
    let (new_open, new) = associations(None, &vip, 6);
    check(
        new.len() == 2 && new.get("pod2") == Some(&3) && new.get("pod3") == Some(&3),
        format!("6 new SCTP associations after pod1 left: {new:?}"),
    );
    drop(new_open);
    std::thread::sleep(Duration::from_millis(100));
    let peers: Vec<usize> = open.iter().map(|c| pod_number(&c.pod)).collect();
    eprintln!(
        "SCTP: rr {seen:?}; NodePort {np:?}; pod1 removed: conntrack flows {before} → {after}, \
         its associations {ended:?}, after {new:?} (open associations on pods {peers:?})"
    );
    assert!(
        fails.is_empty(),
        "SCTP checks failed:\n{}",
        fails.join("\n")
    );
    drop(t);
}
