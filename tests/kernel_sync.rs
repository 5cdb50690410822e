//! Kernel tests of the one-shot commands: sync-once from the example manifests, idempotence, deltas, diff, cleanup.

mod common;

use common::{kube_ipvs, netns, sh, try_kube_ipvs, try_sh};
use kube_ipvs::state::KernelParts;

/// Observations here read every part of the kernel.
const ALL: KernelParts = KernelParts::ALL;

fn changes(summary: &str) -> usize {
    let line = summary
        .lines()
        .find(|l| l.contains(" changes, "))
        .unwrap_or_else(|| panic!("no summary line in:\n{summary}"));
    line.split_whitespace().next().unwrap().parse().unwrap()
}

fn has_lines(text: &str, lines: &[&str]) {
    for l in lines {
        assert!(
            text.lines().any(|t| t.trim() == *l),
            "missing `{l}` in:\n{text}"
        );
    }
}

/// The node's own address lives on an ordinary link, as on a real node.
fn node_link() {
    sh(
        "ip link add lab0 type dummy && ip addr add 192.168.100.10/24 dev lab0 && ip link set lab0 up",
    );
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn sync_once_programs_the_kernel_and_converges() {
    netns();
    let _serial = common::ipvs_serial();
    node_link();
    // Foreign state planted first: never adopted, never touched.
    sh("ipvsadm -A -t 192.0.2.1:80 -s wrr && ipvsadm -a -t 192.0.2.1:80 -r 192.0.2.2:80 -m -w 3");
    sh("ipset create FOREIGN hash:ip && ipset add FOREIGN 192.0.2.9");
    let dir = common::example_manifests();
    let path = dir.path().to_str().unwrap();

    let out = kube_ipvs(&["sync-once", "--manifests", path]);
    assert!(
        out.contains("kernel state equals the desired state"),
        "{out}"
    );
    assert!(changes(&out) > 20, "{out}");

    let ipvs = sh("ipvsadm -Sn");
    has_lines(&ipvs, common::EXAMPLE_IPVS);
    has_lines(
        &ipvs,
        &[
            "-A -t 192.0.2.1:80 -s wrr",
            "-a -t 192.0.2.1:80 -r 192.0.2.2:80 -m -w 3",
        ],
    );
    has_lines(
        &sh("ipset save"),
        &[
            "add KUBE-CLUSTER-IP 10.96.0.53,udp:53",
            "add KUBE-CLUSTER-IP 10.96.0.10,tcp:80",
            "add KUBE-NODE-PORT-TCP 30080",
            "add KUBE-LOOP-BACK 10.244.2.1,tcp:8080,10.244.2.1",
            "add FOREIGN 192.0.2.9",
        ],
    );
    let ipt = sh("iptables-save");
    has_lines(
        &ipt,
        &[
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
            "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING",
        ],
    );
    assert!(ipt.contains("--match-set KUBE-CLUSTER-IP"), "{ipt}");
    let addrs = sh("ip -o addr show dev kube-ipvs0");
    for a in [
        "10.96.0.10/32",
        "10.96.0.20/32",
        "10.96.0.30/32",
        "10.96.0.53/32",
    ] {
        assert!(addrs.contains(a), "{a} not on kube-ipvs0:\n{addrs}");
    }
    let link = sh("ip -d link show kube-ipvs0");
    assert!(
        link.contains("NOARP") && link.contains("state DOWN") && link.contains("dummy"),
        "{link}"
    );
    assert_eq!(sh("sysctl -n net.ipv4.vs.conntrack").trim(), "1");

    // Nothing changed: no writes at all, in both command forms.
    let out = kube_ipvs(&["sync-once", "--manifests", path]);
    assert_eq!(changes(&out), 0, "{out}");
    let out = kube_ipvs(&["--manifests", path, "--sync-once"]);
    assert_eq!(changes(&out), 0, "{out}");
    assert_eq!(sh("ipvsadm -Sn"), ipvs);
    let out = kube_ipvs(&["diff", "--manifests", path]);
    assert_eq!(out.trim(), "kernel state equals the desired state");

    // Scale web: 10.244.1.3 goes, 10.244.1.4 comes; only that delta is written.
    let web = dir.path().join("web.yaml");
    let text = std::fs::read_to_string(&web).unwrap();
    std::fs::write(&web, text.replace("10.244.1.3", "10.244.1.4")).unwrap();
    let out = kube_ipvs(&["sync-once", "--manifests", path]);
    let applied: Vec<&str> = out.lines().filter(|l| l.starts_with("applied: ")).collect();
    assert!(
        applied.iter().all(|l| l.contains("10.244.1.")),
        "writes beyond the delta:\n{out}"
    );
    // Add .4, drain .3 to weight 0, delete it (no connections): three writes.
    assert_eq!(changes(&out), 3, "{out}");
    let ipvs = sh("ipvsadm -Sn");
    assert!(ipvs.contains("-r 10.244.1.4:8080 -m -w 1"), "{ipvs}");
    assert!(!ipvs.contains("10.244.1.3"), "{ipvs}");
    assert_eq!(changes(&kube_ipvs(&["sync-once", "--manifests", path])), 0);

    // Drift is shown by diff and repaired by the next sync.
    sh(
        "ipvsadm -d -t 10.96.0.10:80 -r 10.244.1.1:8080 && ip addr del 10.96.0.53/32 dev kube-ipvs0",
    );
    // A rule edited in place: same rule count, different rule.
    sh("iptables -t nat -R KUBE-MARK-MASQ 1 -j MARK --or-mark 0x8000");
    let out = kube_ipvs(&["diff", "--manifests", path]);
    has_lines(
        &out,
        &[
            "+ ipvs -a -t 10.96.0.10:80 -r 10.244.1.1:8080 -m -w 1",
            "+ address 10.96.0.53 on kube-ipvs0",
        ],
    );
    assert!(
        out.lines().any(|l| l.starts_with("+ iptables: our chains")),
        "{out}"
    );
    let out = kube_ipvs(&["sync-once", "--manifests", path]);
    assert_eq!(changes(&out), 3, "{out}");
    assert!(
        sh("iptables-save -t nat").contains("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000")
    );

    // The DNS service goes: its UDP flows are deleted per former endpoint.
    std::fs::remove_file(dir.path().join("dns.yaml")).unwrap();
    let out = kube_ipvs(&["sync-once", "--manifests", path]);
    has_lines(
        &out,
        &[
            "applied: delete service UDP 10.96.0.53:53",
            "applied: conntrack delete udp orig-dst 10.96.0.53:53 reply-src 10.244.3.1",
            "applied: conntrack delete udp orig-dst 10.96.0.53:53 reply-src 10.244.3.2",
        ],
    );
    assert!(!sh("ipvsadm -Sn").contains("10.96.0.53"));
    assert!(!sh("ip -o addr show dev kube-ipvs0").contains("10.96.0.53"));

    // Cleanup: ours gone, foreign kept.
    let out = kube_ipvs(&["--cleanup"]);
    assert!(out.contains("removed: "), "{out}");
    let ipvs = sh("ipvsadm -Sn");
    assert_eq!(
        ipvs.trim(),
        "-A -t 192.0.2.1:80 -s wrr\n-a -t 192.0.2.1:80 -r 192.0.2.2:80 -m -w 3",
        "{ipvs}"
    );
    let sets = sh("ipset list -n");
    assert_eq!(sets.trim(), "FOREIGN", "{sets}");
    assert!(
        !try_sh("ip link show kube-ipvs0").0,
        "kube-ipvs0 left behind"
    );
    let ipt = sh("iptables-save");
    assert!(!ipt.contains("KUBE-"), "{ipt}");
    assert!(sh("ip -o addr show dev lab0").contains("192.168.100.10/24"));
    // A second cleanup has nothing left to do and succeeds.
    let out = kube_ipvs(&["--cleanup"]);
    assert!(out.contains("nothing of kube-ipvs was left"), "{out}");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn plan_never_touches_the_kernel_and_bad_manifests_are_named() {
    netns();
    let _serial = common::ipvs_serial();
    let dir = common::example_manifests();
    let path = dir.path().to_str().unwrap();
    let out = kube_ipvs(&["plan", "--manifests", path]);
    has_lines(
        &out,
        &[
            "-A -t 10.96.0.30:443 -s rr -p 3600",
            "add KUBE-CLUSTER-IP 10.96.0.53,udp:53",
            "10.96.0.53/32",
            "*nat",
        ],
    );
    assert_eq!(sh("ipvsadm -Sn"), "");
    assert!(!try_sh("ip link show kube-ipvs0").0);
    assert_eq!(sh("ipset list -n"), "");

    std::fs::write(
        dir.path().join("zz-bad.yaml"),
        "kind: Service\nspec: {ports: 3}\n",
    )
    .unwrap();
    let (success, _, err) = try_kube_ipvs(&["sync-once", "--manifests", path]);
    assert!(!success);
    assert!(
        err.contains("zz-bad.yaml: document 0: invalid Service"),
        "{err}"
    );
    assert_eq!(sh("ipvsadm -Sn"), "", "nothing applied from bad manifests");
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn apply_reports_each_op_and_a_failure_stops_nothing_else() {
    use std::collections::BTreeMap;

    use ipvs_netlink::ipvs::{Destination, Family, Protocol, Service, ServiceKey};
    use kube_ipvs::apply::Applier;
    use kube_ipvs::state::ipset::{IpsetEntry, SetKind, SetName};
    use kube_ipvs::state::{IpvsOp, Op};

    netns();
    let _serial = common::ipvs_serial();
    let mut a = Applier::new();
    assert!(a.setup().unwrap(), "kube-ipvs0 created");
    assert!(!a.setup().unwrap(), "kube-ipvs0 already right");

    let k1 = ServiceKey::Tcp("10.96.1.1:80".parse().unwrap());
    let k2 = ServiceKey::Udp("10.96.1.2:53".parse().unwrap());
    let missing = ServiceKey::Tcp("10.96.9.9:80".parse().unwrap());
    let d1 = Destination::masq("10.244.0.1:8080".parse().unwrap());
    let d2 = Destination::masq("10.244.0.2:53".parse().unwrap());
    let cip = SetName::new(SetKind::ClusterIp, Family::Inet);
    let e1 = IpsetEntry::IpPort("10.96.1.1".parse().unwrap(), Protocol::Tcp, 80);
    let e2 = IpsetEntry::IpPort("10.96.1.2".parse().unwrap(), Protocol::Udp, 53);
    let bad = IpsetEntry::Port(1);
    let (a1, a2) = ("10.96.1.1".parse().unwrap(), "10.96.1.2".parse().unwrap());
    let ops = vec![
        Op::CreateSet(cip),
        Op::Ipvs(IpvsOp::AddService(Service::new(k1))),
        Op::Ipvs(IpvsOp::AddDestination(k1, d1)),
        Op::Ipvs(IpvsOp::AddDestination(missing, d1)),
        Op::Ipvs(IpvsOp::AddService(Service::new(k2))),
        Op::Ipvs(IpvsOp::AddDestination(k2, d2)),
        Op::IpsetAdd(cip, e1),
        Op::IpsetAdd(cip, bad),
        Op::IpsetAdd(cip, e2),
        Op::AddAddress(a1),
        Op::AddAddress(a2),
    ];
    let r = a.apply(&ops);
    let failed: Vec<&Op> = r.failed.iter().map(|(op, _)| op).collect();
    assert_eq!(failed, [&ops[3], &ops[7]], "{:?}", r.failed);
    let msg = r.failed[0].1.to_string();
    assert!(msg.contains("10.96.9.9:80"), "{msg}");
    assert_eq!(r.applied, ops.len() - 2);
    // One sendmsg per batch (set create, IPVS, members + their retry, addresses),
    // plus the IPVS and ipset clients' family lookups.
    assert!(r.netlink.sendmsg_calls <= 8, "{:?}", r.netlink);
    assert!(r.netlink.messages_sent >= 9, "{:?}", r.netlink);

    let sysctls = BTreeMap::from([("net.ipv4.vs.conntrack".to_string(), String::new())]);
    let obs = a.observe(&sysctls, &BTreeMap::new(), None, ALL).unwrap();
    // The periodic verification's quick reading (/proc/net/ip_vs merged with
    // what was applied, nothing read exactly) sees the same kernel.
    let never = |_: &ipvs_netlink::ipvs::ServiceKey| false;
    let quick = a
        .observe(
            &sysctls,
            &BTreeMap::new(),
            Some(kube_ipvs::apply::observe::QuickIpvs {
                applied: &obs.state.services,
                exact: &never,
            }),
            ALL,
        )
        .unwrap();
    assert_eq!(
        quick.state, obs.state,
        "/proc reading differs from netlink's"
    );
    let s = &obs.state;
    // And with what /proc prints differently: persistence (timeouts in
    // jiffies, IPv6 netmasks byte-swapped), one-packet, scheduler flags and
    // thresholds (not shown), forwarding methods, IPv6, SCTP and a firewall
    // mark (no family shown). The first quick reading learns HZ from a
    // persistent service it reads exactly; the second uses it.
    common::sh_stdin(
        "ipvsadm -R",
        "-A -u 10.96.2.1:53 -s rr -p 10800\n\
         -a -u 10.96.2.1:53 -r 10.244.0.3:53 -m -w 1\n\
         -A -t 10.96.2.2:443 -s sh -b sh-port -p 60 -M 255.255.255.0\n\
         -a -t 10.96.2.2:443 -r 10.244.0.4:443 -g -w 5 -x 100 -y 10\n\
         -A -u 10.96.2.3:53 -s rr -o\n\
         -A -t [fd00:96::2]:80 -s wrr -p 3600\n\
         -a -t [fd00:96::2]:80 -r [fd00:10:244::5]:8080 -m -w 0\n\
         -A --sctp-service 10.96.2.4:7777 -s mh -b mh-fallback,mh-port\n\
         -a --sctp-service 10.96.2.4:7777 -r 10.244.0.6:9090 -i -w 2\n\
         -A -f 42 -s wlc\n",
    );
    let full = a.observe(&sysctls, &BTreeMap::new(), None, ALL).unwrap();
    for round in ["learning HZ", "with HZ"] {
        let quick = a
            .observe(
                &sysctls,
                &BTreeMap::new(),
                Some(kube_ipvs::apply::observe::QuickIpvs {
                    applied: &full.state.services,
                    exact: &never,
                }),
                ALL,
            )
            .unwrap();
        for (k, want) in &full.state.services {
            assert_eq!(
                quick.state.services.get(k),
                Some(want),
                "{round}: /proc reading of {k} differs from netlink's"
            );
        }
        assert_eq!(quick.state, full.state, "{round}");
    }
    for k in full
        .state
        .services
        .keys()
        .filter(|k| !s.services.contains_key(k))
    {
        common::sh(&format!("ipvsadm -D {}", ipvsadm_key(k)));
    }
    assert_eq!(s.services[&k1].destinations, vec![d1]);
    assert_eq!(s.services[&k2].destinations, vec![d2]);
    assert!(!s.services.contains_key(&missing));
    assert_eq!(s.sets[&cip], [e1, e2].into_iter().collect());
    assert_eq!(s.addresses, [a1, a2].into_iter().collect());
    // Connection counts are kept for busy real servers only; idle ones read as 0.
    assert!(obs.conns.is_empty(), "{:?}", obs.conns);
    assert_eq!(
        kube_ipvs::apply::Observation::conns_of(&obs.conns, &k1, &d1.addr),
        kube_ipvs::state::ConnCounts::default()
    );
    assert_eq!(
        s.sysctls.get("net.ipv4.vs.conntrack").map(String::as_str),
        Some("0")
    );
    // Re-applying what is there is confirmed, not an error (adoption-safe).
    let again = a.apply(&[
        Op::CreateSet(cip),
        Op::IpsetAdd(cip, e1),
        Op::AddAddress(a1),
    ]);
    assert!(again.is_ok(), "{:?}", again.failed);
}

/// `-t ADDR`, `-u ADDR`, `--sctp-service ADDR` or `-f MARK` for ipvsadm.
fn ipvsadm_key(k: &ipvs_netlink::ipvs::ServiceKey) -> String {
    use ipvs_netlink::ipvs::ServiceKey;
    match k {
        ServiceKey::Tcp(a) => format!("-t {a}"),
        ServiceKey::Udp(a) => format!("-u {a}"),
        ServiceKey::Sctp(a) => format!("--sctp-service {a}"),
        ServiceKey::FwMark { mark, family } => match family {
            ipvs_netlink::ipvs::Family::Inet6 => format!("-f {mark} -6"),
            _ => format!("-f {mark}"),
        },
    }
}
