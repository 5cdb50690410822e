//! The iptables-restore payload (nat + filter) of upstream IPVS mode, per family.
//!
//! Rules reference ipsets rather than services, so the payload depends only on
//! the config and on the rare no-node-access LB entries (#119656): it is rendered
//! again only when those change, never per endpoint. Unlike upstream, rules for
//! empty sets are kept (an empty set matches nothing), which keeps the payload
//! stable while sets fill and empty.

use std::fmt::Write;

use ipvs_netlink::ipvs::Family;

use super::config::ProxyConfig;
use super::contribution::NoNodeAccess;
use crate::iptables::{FILTER_CHAINS, NAT_CHAINS};
use crate::state::ipset::{SetKind, SetName, proto_name};

/// Renders the iptables-restore payload for one family.
/// `no_node_access` must be sorted (the caller keeps it in a BTreeSet).
pub fn render<'a>(
    cfg: &ProxyConfig,
    family: Family,
    no_node_access: impl IntoIterator<Item = &'a NoNodeAccess>,
) -> String {
    let set = |k: SetKind| SetName::new(k, family).name();
    let mark = cfg.masquerade_mark();
    let mut s = String::with_capacity(4096);
    let w = &mut s;
    // writeln! into a String cannot fail.
    let _ = writeln!(w, "*nat");
    for c in NAT_CHAINS {
        let _ = writeln!(w, ":{c} - [0:0]");
    }
    let lo = match family {
        Family::Inet => "127.0.0.0/8",
        Family::Inet6 => "::1/128",
    };
    let _ = writeln!(w, "-A KUBE-SERVICES -s {lo} -j RETURN");
    let _ = writeln!(
        w,
        "-A KUBE-POSTROUTING -m comment --comment \"{}\" -m set --match-set {} dst,dst,src -j MASQUERADE",
        SetKind::LoopBack.comment(),
        set(SetKind::LoopBack)
    );
    let _ = writeln!(
        w,
        "-A KUBE-SERVICES -m comment --comment \"{}\" -m set --match-set {} dst,dst -j KUBE-LOAD-BALANCER",
        SetKind::LoadBalancer.comment(),
        set(SetKind::LoadBalancer)
    );
    let _ = writeln!(
        w,
        "-A KUBE-LOAD-BALANCER -m comment --comment \"{}\" -m set --match-set {} dst,dst -j RETURN",
        SetKind::LoadBalancerLocal.comment(),
        set(SetKind::LoadBalancerLocal)
    );
    for (p, all, loc, m) in [
        (
            "tcp",
            SetKind::NodePortTcp,
            SetKind::NodePortLocalTcp,
            "dst",
        ),
        (
            "udp",
            SetKind::NodePortUdp,
            SetKind::NodePortLocalUdp,
            "dst",
        ),
        (
            "sctp",
            SetKind::NodePortSctp,
            SetKind::NodePortLocalSctp,
            "dst,dst",
        ),
    ] {
        let _ = writeln!(
            w,
            "-A KUBE-NODE-PORT -p {p} -m comment --comment \"{}\" -m set --match-set {} {m} -j RETURN",
            loc.comment(),
            set(loc)
        );
        let _ = writeln!(
            w,
            "-A KUBE-NODE-PORT -p {p} -m comment --comment \"{}\" -m set --match-set {} {m} -j KUBE-MARK-MASQ",
            all.comment(),
            set(all)
        );
    }
    // Cluster IP masquerade: masqueradeAll, else detect-local by cluster CIDR,
    // else upstream's src,dst match for node-originated VIP-sourced traffic.
    let cip = format!(
        "-A KUBE-SERVICES -m comment --comment \"{}\" -m set --match-set {}",
        SetKind::ClusterIp.comment(),
        set(SetKind::ClusterIp)
    );
    if cfg.masquerade_all {
        let _ = writeln!(w, "{cip} dst,dst -j KUBE-MARK-MASQ");
    } else if let Some(cidr) = cfg.cluster_cidr(family) {
        let _ = writeln!(w, "{cip} dst,dst ! -s {cidr} -j KUBE-MARK-MASQ");
    } else {
        let _ = writeln!(w, "{cip} src,dst -j KUBE-MARK-MASQ");
    }
    for (kind, masq) in [
        (SetKind::ExternalIp, true),
        (SetKind::ExternalIpLocal, false),
    ] {
        let base = format!(
            "-A KUBE-SERVICES -m comment --comment \"{}\" -m set --match-set {} dst,dst",
            kind.comment(),
            set(kind)
        );
        if masq {
            let _ = writeln!(w, "{base} -j KUBE-MARK-MASQ");
        }
        // Off-machine traffic (not from a bridge, not local) and traffic to
        // local-looking external IPs is accepted into IPVS.
        let _ = writeln!(
            w,
            "{base} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
        );
        let _ = writeln!(w, "{base} -m addrtype --dst-type LOCAL -j ACCEPT");
    }
    let _ = writeln!(
        w,
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT"
    );
    let _ = writeln!(w, "-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ");
    let _ = writeln!(
        w,
        "-A KUBE-SERVICES -m set --match-set {} dst,dst -j ACCEPT",
        set(SetKind::ClusterIp)
    );
    let _ = writeln!(
        w,
        "-A KUBE-SERVICES -m set --match-set {} dst,dst -j ACCEPT",
        set(SetKind::LoadBalancer)
    );
    let _ = writeln!(
        w,
        "-A KUBE-POSTROUTING -m mark ! --mark {mark:#x}/{mark:#x} -j RETURN"
    );
    // Clear the mark so a re-traversing packet is not masqueraded twice.
    let _ = writeln!(w, "-A KUBE-POSTROUTING -j MARK --xor-mark {mark:#x}");
    // Fully random source ports, as kube-proxy does whenever iptables has the
    // option (1.6.2+, every supported distribution; the image ships 1.8):
    // without it, SNAT of many flows from one pod can collide on a port and
    // drop the SYN (kubernetes #76699).
    let _ = writeln!(
        w,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    let _ = writeln!(w, "-A KUBE-MARK-MASQ -j MARK --or-mark {mark:#x}");
    let _ = writeln!(w, "COMMIT");

    let _ = writeln!(w, "*filter");
    for c in FILTER_CHAINS {
        let _ = writeln!(w, ":{c} - [0:0]");
    }
    let _ = writeln!(
        w,
        "-A KUBE-PROXY-FIREWALL -m comment --comment \"{}\" -m set --match-set {} dst,dst -j KUBE-SOURCE-RANGES-FIREWALL",
        SetKind::LoadBalancerFw.comment(),
        set(SetKind::LoadBalancerFw)
    );
    let _ = writeln!(
        w,
        "-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment \"{}\" -m set --match-set {} dst,dst,src -j RETURN",
        SetKind::LoadBalancerSourceCidr.comment(),
        set(SetKind::LoadBalancerSourceCidr)
    );
    let _ = writeln!(
        w,
        "-A KUBE-SOURCE-RANGES-FIREWALL -m comment --comment \"{}\" -m set --match-set {} dst,dst,src -j RETURN",
        SetKind::LoadBalancerSourceIp.comment(),
        set(SetKind::LoadBalancerSourceIp)
    );
    let _ = writeln!(w, "-A KUBE-SOURCE-RANGES-FIREWALL -j DROP");
    // #119656: the node's own traffic to a LB IP never crosses INPUT; with IPVS
    // both source and virtual address are the LB IP.
    for (ip, p, port) in no_node_access {
        let _ = writeln!(
            w,
            "-A KUBE-IPVS-OUT-FILTER -s {ip} -m ipvs --vaddr {ip} --vproto {} --vport {port} -j DROP",
            proto_name(*p)
        );
    }
    let _ = writeln!(
        w,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark:#x}/{mark:#x} -j ACCEPT"
    );
    let _ = writeln!(
        w,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    let _ = writeln!(
        w,
        "-A KUBE-NODE-PORT -m comment --comment \"{}\" -m set --match-set {} dst -j ACCEPT",
        SetKind::HealthCheckNodePort.comment(),
        set(SetKind::HealthCheckNodePort)
    );
    // #72236: new connections to host ports via a service IP are rejected.
    for (k, m) in [
        (SetKind::LoadBalancer, "dst,dst"),
        (SetKind::ClusterIp, "dst,dst"),
        (SetKind::ExternalIp, "dst,dst"),
        (SetKind::ExternalIpLocal, "dst,dst"),
        (SetKind::HealthCheckNodePort, "dst"),
    ] {
        let _ = writeln!(
            w,
            "-A KUBE-IPVS-FILTER -m set --match-set {} {m} -j RETURN",
            set(k)
        );
    }
    let _ = writeln!(
        w,
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT",
        set(SetKind::IpvsIps)
    );
    let _ = writeln!(w, "COMMIT");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_netlink::ipvs::Protocol;

    #[test]
    fn masquerade_modes() {
        let mut cfg = ProxyConfig::default();
        let none = render(&cfg, Family::Inet, []);
        assert!(none.contains("KUBE-CLUSTER-IP src,dst -j KUBE-MARK-MASQ"));
        cfg.cluster_cidrs = vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:244::/56".parse().unwrap(),
        ];
        let det = render(&cfg, Family::Inet, []);
        assert!(det.contains("KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"));
        let det6 = render(&cfg, Family::Inet6, []);
        assert!(det6.contains("KUBE-6-CLUSTER-IP dst,dst ! -s fd00:244::/56 -j KUBE-MARK-MASQ"));
        assert!(det6.contains("-s ::1/128 -j RETURN"));
        cfg.masquerade_all = true;
        let all = render(&cfg, Family::Inet, []);
        assert!(all.contains("KUBE-CLUSTER-IP dst,dst -j KUBE-MARK-MASQ"));
        cfg.masquerade_bit = 3;
        assert!(render(&cfg, Family::Inet, []).contains("--or-mark 0x8"));
    }

    #[test]
    fn ipvs_filter_and_out_filter() {
        let cfg = ProxyConfig::default();
        let e = ("203.0.113.7".parse().unwrap(), Protocol::Tcp, 443u16);
        let s = render(&cfg, Family::Inet, [&e]);
        assert!(s.contains("-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT"));
        assert!(s.contains("-A KUBE-IPVS-OUT-FILTER -s 203.0.113.7 -m ipvs --vaddr 203.0.113.7 --vproto tcp --vport 443 -j DROP"));
        assert_eq!(s.matches("COMMIT").count(), 2);
    }
}
