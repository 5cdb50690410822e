//! Kernel test with real IPv6 and dual-stack traffic through IPVS: the IPv4 scenarios of kernel_traffic over IPv6, a dual-stack Service answering each family from its own pods, and the kernel checked against the plan with ipvsadm -Sn, ipset save and ip6tables-save.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::kernel::{iptables_rules, planned_iptables};
use common::traffic::{
    CLIENT_IP6, CLIENT2_IP6, NODE_IP, NODE_IP6, ask, ask_from, dual_tcp_service, node_side_ip,
    node_side_ip6, node_yaml_dual, pod_number, ready, ready6, spread, tcp_service6, topology,
    with_lb_ingress,
};
use common::{netns, sh};

const EXTERNAL_IP6: &str = "fd00:200::10";
const LB_IP6: &str = "fd00:200::20";
const KEEP_EXTERNAL_IP6: &str = "fd00:200::11";
const KEEP_LB_IP6: &str = "fd00:200::40";
/// The dual-stack Service's ClusterIPs and node port: IPv4 to pods 1 and 2,
/// IPv6 to pod 3, so an answer names the family's own pods.
const DUAL_IP4: &str = "10.96.1.10";
const DUAL_IP6: &str = "fd00:96::100";
const DUAL_NODE_PORT: u16 = 30190;

/// "[ip]:port" for an IPv6 address, "ip:port" for IPv4.
fn at(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The node's IPv6 end of the named pod's veth: a masqueraded source.
fn node_side6_of(pod: &str) -> String {
    node_side_ip6(pod_number(pod))
}

/// An IPv6 ClusterIP Service on port 80 with ready endpoints on this node.
fn service6(name: &str, ip: &str, extra_spec: &str, port_extra: &str, pods: &[usize]) -> String {
    tcp_service6(name, ip, extra_spec, port_extra, &ready6(pods, "lab-node"))
}

fn manifests() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let w = |f: &str, s: String| std::fs::write(d.path().join(f), s).unwrap();
    w("00-node.yaml", node_yaml_dual());
    w(
        "web.yaml",
        service6("web6", "fd00:96::10", "", "", &[1, 2, 3]),
    );
    w("self.yaml", service6("self6", "fd00:96::50", "", "", &[1]));
    w(
        "sticky.yaml",
        service6(
            "sticky6",
            "fd00:96::30",
            "  sessionAffinity: ClientIP\n",
            "",
            &[1, 2, 3],
        ),
    );
    w(
        "shop.yaml",
        service6(
            "shop6",
            "fd00:96::20",
            "  type: NodePort\n",
            "    nodePort: 30180\n",
            &[1, 2, 3],
        ),
    );
    w(
        "local.yaml",
        service6(
            "local6",
            "fd00:96::40",
            "  type: NodePort\n  externalTrafficPolicy: Local\n",
            "    nodePort: 30181\n",
            &[1, 2, 3],
        ),
    );
    w(
        "external.yaml",
        service6(
            "external6",
            "fd00:96::70",
            &format!("  externalIPs: [{EXTERNAL_IP6}]\n"),
            "",
            &[1, 2, 3],
        ),
    );
    // Only the first client's subnet may use the load balancer.
    w(
        "ranged.yaml",
        with_lb_ingress(
            &service6(
                "ranged6",
                "fd00:96::80",
                "  type: LoadBalancer\n  loadBalancerSourceRanges: [\"fd00:192:168:100::/64\"]\n",
                "    nodePort: 30182\n",
                &[1, 2, 3],
            ),
            LB_IP6,
        ),
    );
    // externalTrafficPolicy Local on an external IP and a load-balancer IP.
    w(
        "keep.yaml",
        with_lb_ingress(
            &service6(
                "keep6",
                "fd00:96::120",
                &format!(
                    "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  externalIPs: [\"{KEEP_EXTERNAL_IP6}\"]\n"
                ),
                "    nodePort: 30184\n",
                &[1, 2, 3],
            ),
            KEEP_LB_IP6,
        ),
    );
    w(
        "dual.yaml",
        dual_tcp_service(
            "dual",
            DUAL_IP4,
            DUAL_IP6,
            "  type: NodePort\n",
            &format!("    nodePort: {DUAL_NODE_PORT}\n"),
            &ready(&[1, 2], "lab-node"),
            &ready6(&[3], "lab-node"),
        ),
    );
    d
}

fn only_pods(seen: &BTreeMap<String, usize>, pods: &[&str]) -> bool {
    seen.len() == pods.len() && pods.iter().all(|p| seen.contains_key(*p))
}

/// The lines of one section of `kube-ipvs plan` output ("# IPVS (ipvsadm -Sn)" …).
fn plan_section<'a>(plan: &'a str, header: &str) -> Vec<&'a str> {
    let mut lines = plan.lines().skip_while(|l| *l != header).skip(1);
    let mut out = Vec::new();
    for l in lines.by_ref() {
        // A section header; the payload section's own "# iptables" and
        // "# ip6tables" separators belong to it.
        if l.starts_with("# ") && !matches!(l, "# iptables" | "# ip6tables") {
            break;
        }
        if !l.is_empty() {
            out.push(l);
        }
    }
    out
}

fn sorted<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = lines.into_iter().map(String::from).collect();
    v.sort();
    v
}

/// The kernel, read with the standard tools, holds what `kube-ipvs plan`
/// says for these manifests: IPVS, set members, and the rules of both
/// families. Returns the differences.
fn kernel_matches_plan(dir: &Path) -> Vec<String> {
    let plan = common::kube_ipvs(&["plan", "--manifests", dir.to_str().unwrap()]);
    let mut fails = Vec::new();
    let ipvs = sh("ipvsadm -Sn");
    let want = sorted(plan_section(&plan, "# IPVS (ipvsadm -Sn)"));
    let have = sorted(ipvs.lines());
    if want != have {
        fails.push(format!(
            "ipvsadm -Sn differs from the plan:\nwant {want:#?}\nhave {have:#?}"
        ));
    }
    let members = |lines: Vec<&str>| -> BTreeSet<String> {
        lines
            .into_iter()
            .filter(|l| l.starts_with("add KUBE-"))
            .map(String::from)
            .collect()
    };
    let want = members(plan_section(&plan, "# ipsets (ipset save)"));
    let saved = sh("ipset save");
    let have = members(saved.lines().collect());
    if want != have {
        fails.push(format!(
            "ipset save members differ from the plan: missing {:?}, extra {:?}",
            want.difference(&have).collect::<Vec<_>>(),
            have.difference(&want).collect::<Vec<_>>()
        ));
    }
    if !want.iter().any(|m| m.contains("fd00:96::10,tcp:80")) {
        fails.push(format!(
            "no IPv6 ClusterIP member in the planned sets: {want:?}"
        ));
    }
    let want =
        planned_iptables(&plan_section(&plan, "# iptables-restore --noflush payloads").join("\n"));
    let mut have = iptables_rules("iptables", &sh("iptables-save"));
    let v6 = sh("ip6tables-save");
    have.extend(iptables_rules("ip6tables", &v6));
    for key in want.keys().chain(have.keys()).collect::<BTreeSet<_>>() {
        if want.get(key) != have.get(key) {
            fails.push(format!(
                "{key:?}: planned {:#?}, the kernel has {:#?}",
                want.get(key),
                have.get(key)
            ));
        }
    }
    if !v6.contains("KUBE-6-") {
        fails.push(format!("ip6tables-save matches no IPv6 set:\n{v6}"));
    }
    fails
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn real_ipv6_and_dual_stack_traffic_through_ipvs() {
    netns();
    let _serial = common::ipvs_serial();
    let t = topology("s", 3);
    let dir = manifests();
    common::kube_ipvs(&["sync-once", "--manifests", dir.path().to_str().unwrap()]);
    let mut fails: Vec<String> = Vec::new();
    let mut check = |ok: bool, msg: String| {
        if !ok {
            fails.push(msg);
        }
    };

    // ClusterIP from the node: rr over the three pods, the node's source
    // masqueraded to an address the pod can answer.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..9 {
        match ask(&at("fd00:96::10", 80)) {
            Ok((pod, peer)) => {
                check(
                    peer == node_side6_of(&pod),
                    format!("node → ClusterIP: {pod} saw source {peer}"),
                );
                *seen.entry(pod).or_default() += 1;
            }
            Err(e) => check(false, format!("node → ClusterIP: {e:?}")),
        }
    }
    check(
        seen.len() == 3 && seen.values().all(|n| *n == 3),
        format!("rr over 9 IPv6 connections: {seen:?}"),
    );

    // ClusterIP from a pod: the backend sees the pod's own address, except
    // when the connection lands on the caller (hairpin, masqueraded).
    let mut from_pod: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..6 {
        match ask_from(t.pod(1), &at("fd00:96::10", 80)) {
            Ok((pod, peer)) => {
                let want = if pod == "pod1" {
                    node_side_ip6(1)
                } else {
                    common::traffic::pod_ip6(1)
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
    let hairpin = ask_from(t.pod(1), &at("fd00:96::50", 80));
    check(
        hairpin
            .as_ref()
            .is_ok_and(|(pod, peer)| pod == "pod1" && *peer == node_side_ip6(1)),
        format!("hairpin over IPv6: {hairpin:?}"),
    );

    // NodePort (Cluster) from the client: answered by every pod, masqueraded.
    let mut np: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..6 {
        match ask_from(&t.client, &at(NODE_IP6, 30180)) {
            Ok((pod, peer)) => {
                check(
                    peer == node_side6_of(&pod),
                    format!("client → NodePort: {pod} saw source {peer}"),
                );
                *np.entry(pod).or_default() += 1;
            }
            Err(e) => check(false, format!("client → NodePort: {e:?}")),
        }
    }
    check(np.len() == 3, format!("IPv6 NodePort over 6: {np:?}"));

    // externalTrafficPolicy Local: the client's address is kept, on the
    // node port, the external IP and the load-balancer IP.
    for addr in [
        at(NODE_IP6, 30181),
        at(KEEP_EXTERNAL_IP6, 80),
        at(KEEP_LB_IP6, 80),
    ] {
        let r = ask_from(&t.client, &addr);
        check(
            r.as_ref().is_ok_and(|(_, peer)| peer == CLIENT_IP6),
            format!("client → {addr} (Local): {r:?}, expected source {CLIENT_IP6}"),
        );
    }

    // externalIP (Cluster policy) from the client: answered, masqueraded.
    let ext = ask_from(&t.client, &at(EXTERNAL_IP6, 80));
    check(
        ext.as_ref()
            .is_ok_and(|(pod, peer)| *peer == node_side6_of(pod)),
        format!("client → externalIP: {ext:?}"),
    );

    // loadBalancerSourceRanges: the first client's /64 is allowed, the
    // second client's is not, though it reaches a node port (control).
    let allowed = ask_from(&t.client, &at(LB_IP6, 80));
    check(
        allowed
            .as_ref()
            .is_ok_and(|(pod, peer)| *peer == node_side6_of(pod)),
        format!("allowed client → LB IP: {allowed:?}"),
    );
    let control = ask_from(&t.client2, &at(NODE_IP6, 30180));
    check(
        control.is_ok(),
        format!("client2 → NodePort (control): {control:?}"),
    );
    let denied = ask_from(&t.client2, &at(LB_IP6, 80));
    check(
        denied.is_err(),
        format!(
            "client2 ({CLIENT2_IP6}) outside loadBalancerSourceRanges → LB IP must fail: {denied:?}"
        ),
    );

    // sessionAffinity ClientIP over IPv6.
    let sticky = spread(None, &at("fd00:96::30", 80), 8);
    check(
        sticky.len() == 1 && sticky.keys().all(|k| k.starts_with("pod")),
        format!("ClientIP affinity over IPv6: {sticky:?}"),
    );

    // Dual-stack: each family's ClusterIP and node port answer from that
    // family's endpoints only.
    let cases = [
        (None, at(DUAL_IP4, 80), &["pod1", "pod2"][..]),
        (None, at(DUAL_IP6, 80), &["pod3"][..]),
        (
            Some(t.client.as_str()),
            at(NODE_IP, DUAL_NODE_PORT),
            &["pod1", "pod2"][..],
        ),
        (
            Some(t.client.as_str()),
            at(NODE_IP6, DUAL_NODE_PORT),
            &["pod3"][..],
        ),
    ];
    let mut dual = Vec::new();
    for (ns, addr, pods) in cases {
        let got = spread(ns, &addr, 4);
        check(
            only_pods(&got, pods),
            format!("dual-stack {addr}: answered by {got:?}, expected exactly {pods:?}"),
        );
        dual.push((addr, got));
    }
    // The IPv4 side masquerades as before (control for the shared topology).
    let v4 = ask(&at(DUAL_IP4, 80));
    check(
        v4.as_ref()
            .is_ok_and(|(pod, peer)| *peer == node_side_ip(pod_number(pod))),
        format!("dual-stack IPv4 from the node: {v4:?}"),
    );

    // What the kernel holds, by the standard tools, is what was planned.
    fails.extend(kernel_matches_plan(dir.path()));

    eprintln!(
        "rr {seen:?}; pod1 → ClusterIP {from_pod:?}; hairpin {hairpin:?}; NodePort {np:?}; \
         externalIP {ext:?}; LB allowed {allowed:?}, denied {denied:?}; affinity {sticky:?}; \
         dual-stack {dual:?}"
    );
    assert!(
        fails.is_empty(),
        "IPv6 traffic checks failed:\n{}",
        fails.join("\n")
    );
    drop(t);
}
