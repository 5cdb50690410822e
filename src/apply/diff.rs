//! Node states as comparable text lines, and a readable line diff between an expected and an observed state.

use std::collections::HashSet;

use ipvs_netlink::ipvs::Family;

use crate::state::KernelState;

use super::DUMMY_LINK;

/// One line per fact of `s`, prefixed by its kind, in a stable order.
/// Timeouts are rendered only for the fields `only_timeouts` sets (0 = not managed).
fn lines(s: &KernelState, only_timeouts: Option<&ipvs_netlink::ipvs::Timeouts>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    out.extend(s.ipvsadm_save().lines().map(|l| format!("ipvs {l}")));
    out.extend(s.ipset_save().lines().map(|l| format!("ipset {l}")));
    let mut addrs: Vec<_> = s.addresses.iter().collect();
    addrs.sort();
    out.extend(addrs.iter().map(|a| format!("address {a} on {DUMMY_LINK}")));
    for (f, p) in &s.iptables {
        let name = match f {
            Family::Inet => "iptables",
            Family::Inet6 => "ip6tables",
        };
        out.push(format!(
            "{name}: our chains and jumps as rendered ({} payload lines)",
            p.lines().count()
        ));
    }
    out.extend(s.sysctls.iter().map(|(k, v)| format!("sysctl {k}={v}")));
    if let (Some(t), Some(want)) = (s.timeouts, only_timeouts) {
        for (name, have, w) in [
            ("tcp", t.tcp, want.tcp),
            ("tcpfin", t.tcp_fin, want.tcp_fin),
            ("udp", t.udp, want.udp),
        ] {
            if w != 0 {
                out.push(format!("ipvs timeout {name}={have}"));
            }
        }
    }
    out
}

/// `+ line`: expected but missing from the kernel; `- line`: in the kernel
/// (and ours) but not expected. Empty when the two agree.
pub fn diff(expected: &KernelState, actual: &KernelState) -> Vec<String> {
    let t = expected.timeouts;
    let want = lines(expected, t.as_ref());
    let have = lines(actual, t.as_ref());
    let want_set: HashSet<&String> = want.iter().collect();
    let have_set: HashSet<&String> = have.iter().collect();
    let mut out: Vec<String> = want
        .iter()
        .filter(|l| !have_set.contains(l))
        .map(|l| format!("+ {l}"))
        .collect();
    out.extend(
        have.iter()
            .filter(|l| !want_set.contains(l))
            .map(|l| format!("- {l}")),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ipset::{IpsetEntry, SetKind, SetName};
    use crate::state::{IpvsOp, Op};
    use ipvs_netlink::ipvs::{Destination, Protocol, Service, ServiceKey, Timeouts};

    #[test]
    fn diff_names_missing_and_extra_facts() {
        let key = ServiceKey::Tcp("10.96.0.1:80".parse().unwrap());
        let mut want = KernelState::default();
        let set = SetName::new(SetKind::ClusterIp, Family::Inet);
        for op in [
            Op::Ipvs(IpvsOp::AddService(Service::new(key))),
            Op::Ipvs(IpvsOp::AddDestination(
                key,
                Destination::masq("10.0.0.1:8080".parse().unwrap()),
            )),
            Op::CreateSet(set),
            Op::IpsetAdd(
                set,
                IpsetEntry::IpPort("10.96.0.1".parse().unwrap(), Protocol::Tcp, 80),
            ),
            Op::AddAddress("10.96.0.1".parse().unwrap()),
        ] {
            want.apply(&op).unwrap();
        }
        assert!(diff(&want, &want).is_empty());
        let mut have = want.clone();
        have.apply(&Op::Ipvs(IpvsOp::DeleteDestination(
            key,
            "10.0.0.1:8080".parse().unwrap(),
        )))
        .unwrap();
        have.apply(&Op::AddAddress("10.96.0.9".parse().unwrap()))
            .unwrap();
        assert_eq!(
            diff(&want, &have),
            vec![
                "+ ipvs -a -t 10.96.0.1:80 -r 10.0.0.1:8080 -m -w 1".to_string(),
                "- address 10.96.0.9 on kube-ipvs0".to_string(),
            ]
        );
        // Timeouts count only where the expected state manages them.
        want.timeouts = Some(Timeouts {
            tcp: 900,
            tcp_fin: 0,
            udp: 0,
        });
        let mut have = want.clone();
        have.timeouts = Some(Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        });
        assert!(diff(&want, &have).is_empty());
        have.timeouts = Some(Timeouts::default());
        assert_eq!(diff(&want, &have).len(), 2);
    }
}
