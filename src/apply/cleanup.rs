//! `--cleanup`: removes everything kube-ipvs creates (services it owns, our chains and jumps, our sets, kube-ipvs0) and nothing else.

use std::net::IpAddr;

use ipvs_netlink::ipvs::{Family, ServiceKey};

use ipvs_netlink::ipset;

use super::{Applier, DUMMY_LINK, convert};
use crate::iptables::{IptablesError, JUMPS, owned_chains};
use crate::state::{IpsetEntry, SetKind, SetName};

impl Applier {
    /// Removes everything kube-ipvs creates and nothing else: the IPVS
    /// services `is_ours` accepts, our iptables jumps and chains, our
    /// KUBE-* sets, and kube-ipvs0 with its addresses. Returns one line per
    /// removal; errors are collected, not fatal.
    pub fn cleanup(
        &mut self,
        families: &[Family],
        is_ours: impl Fn(&ServiceKey, &std::collections::HashSet<IpAddr>) -> bool,
    ) -> (Vec<String>, Vec<String>) {
        let (mut done, mut errors) = (Vec::new(), Vec::new());
        // Addresses first: what is bound on kube-ipvs0 decides which services are ours.
        let mut bound = std::collections::HashSet::new();
        match self.rtnl() {
            Ok(rtnl) => {
                if let Ok(Some(link)) = rtnl.link(DUMMY_LINK)
                    && let Ok(a) = rtnl.addresses(link.index)
                {
                    bound = a.into_iter().map(|a| a.addr).collect();
                }
            }
            Err((what, reason)) => errors.push(format!("{what} is unavailable: {reason}")),
        }
        let on_link = bound.len();
        // So are those a killed run marked in KUBE-IPVS-IPS before binding them.
        if let Ok(c) = self.ipset()
            && let Ok(sets) = c.list(None)
        {
            for set in sets {
                if SetName::from_name(set.name()).is_some_and(|n| n.kind == SetKind::IpvsIps) {
                    bound.extend(set.members.iter().filter_map(|m| {
                        match convert::from_entry(&m.entry) {
                            Some(IpsetEntry::Ip(ip)) => Some(ip),
                            _ => None,
                        }
                    }));
                }
            }
        }
        match self.ipvs() {
            Ok(c) => match c.services() {
                Ok(services) => {
                    let ops: Vec<_> = services
                        .iter()
                        .map(|s| s.service.key)
                        .filter(|k| is_ours(k, &bound))
                        .map(ipvs_netlink::ipvs::Operation::DeleteService)
                        .collect();
                    for (op, r) in ops.iter().zip(c.apply(&ops)) {
                        match r {
                            Ok(()) => done.push(op.to_string()),
                            Err(e) => errors.push(format!("{op}: {e}")),
                        }
                    }
                }
                Err(e) => errors.push(format!("cannot read the IPVS table: {e}")),
            },
            Err((what, reason)) => errors.push(format!("{what} is unavailable: {reason}")),
        }
        // Rules go before sets: a set referenced by a rule cannot be destroyed.
        for f in [Family::Inet, Family::Inet6] {
            let ipt = self.iptables(f);
            match ipt.cleanup(&owned_chains(), &JUMPS) {
                Ok(true) => done.push(format!("removed our {} chains and jumps", ipt.binary(""))),
                Ok(false) => {}
                Err(IptablesError::MissingBinary { .. }) if f == Family::Inet6 => {}
                Err(e) => errors.push(format!("iptables cleanup ({f:?}): {e}")),
            }
        }
        match self.ipset() {
            Ok(c) => match c.names() {
                Ok(names) => {
                    let ours: Vec<ipset::Operation> = names
                        .iter()
                        .filter(|n| {
                            SetName::from_name(n).is_some_and(|s| families.contains(&s.family))
                        })
                        .map(|n| ipset::Operation::Destroy(n.clone()))
                        .collect();
                    for (op, r) in ours.iter().zip(c.apply(&ours)) {
                        match r {
                            Ok(()) => done.push(format!("destroyed ipset {}", op.set())),
                            Err(e) => errors.push(format!("destroy ipset {}: {e}", op.set())),
                        }
                    }
                }
                Err(e) => errors.push(format!("cannot list ipsets: {e}")),
            },
            Err((what, reason)) => errors.push(format!("{what} is unavailable: {reason}")),
        }
        if let Ok(rtnl) = self.rtnl() {
            match rtnl.delete_link(DUMMY_LINK) {
                Ok(true) => done.push(format!("deleted {DUMMY_LINK} and its {on_link} addresses")),
                Ok(false) => {}
                Err(e) => errors.push(format!("delete {DUMMY_LINK}: {e}")),
            }
        }
        self.link_index = None;
        (done, errors)
    }
}
