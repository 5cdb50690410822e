//! Reading the kernel back: the IPVS table with connection counts, our sets, kube-ipvs0's addresses, sysctls, timeouts and our iptables.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use ipvs_netlink::ipvs::{Family, ServiceKey};

use super::{Applier, DUMMY_LINK, ObserveError, convert};
use crate::iptables::iptables_in_sync;
use crate::state::{ConnCounts, KService, KernelState, SetName};

/// What the kernel holds, plus per real server connection counts (for drains).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub state: KernelState,
    /// Connection counts of the real servers that have connections; every
    /// other one observed had none (`conns_of`). Idle ones are not listed:
    /// at 10,000 Services that is 100,000 entries, ~9 MB, for nothing.
    pub conns: HashMap<(ServiceKey, SocketAddr), ConnCounts>,
    /// Members of our sets the model cannot represent (left alone).
    pub foreign_members: usize,
}

impl Observation {
    /// The connection counts of an observed real server (zero when it had none).
    pub fn conns_of(
        conns: &HashMap<(ServiceKey, SocketAddr), ConnCounts>,
        k: &ServiceKey,
        a: &SocketAddr,
    ) -> ConnCounts {
        conns.get(&(*k, *a)).copied().unwrap_or_default()
    }
}

impl Applier {
    /// Reads what the kernel holds: the IPVS table (with connection counts),
    /// our sets' members, kube-ipvs0's addresses, the IPVS timeouts, the
    /// current values of the sysctls named by `sysctls`' keys (the ones the
    /// planner manages; its values are not used), and whether our iptables chains and jumps match `want_iptables`
    /// (a family whose chains match is reported holding that payload; one that
    /// differs is left out, so the planner restores it).
    pub fn observe(
        &mut self,
        sysctls: &BTreeMap<String, String>,
        want_iptables: &BTreeMap<Family, Arc<str>>,
    ) -> Result<Observation, ObserveError> {
        let unavailable = |(what, reason)| ObserveError::Unavailable { what, reason };
        let mut obs = Observation::default();
        let ipvs = self.ipvs().map_err(unavailable)?;
        // One service at a time: the whole table with its statistics would
        // be a second copy of the state while it is converted.
        ipvs.table_each(|s, dests| {
            let key = s.service.key;
            let mut ks = KService::new(s.service);
            ks.destinations.reserve_exact(dests.len());
            for d in dests {
                if d.active_conns > 0 || d.inactive_conns > 0 {
                    let counts = ConnCounts {
                        active: d.active_conns,
                        inactive: d.inactive_conns,
                    };
                    obs.conns.insert((key, d.destination.addr), counts);
                }
                ks.destinations.push(d.destination);
            }
            ks.destinations.sort_by_key(|d| d.addr);
            obs.state.services.insert(key, ks);
        })
        .map_err(ObserveError::Ipvs)?;
        obs.state.timeouts = ipvs.timeouts().ok();

        let sets = self
            .ipset()
            .map_err(unavailable)?
            .list(None)
            .map_err(ObserveError::Ipset)?;
        for set in sets {
            let Some(name) = SetName::from_name(set.name()) else {
                continue;
            };
            let members = obs.state.sets.entry(name).or_default();
            for m in &set.members {
                match convert::from_entry(&m.entry) {
                    Some(e) => {
                        members.insert(e);
                    }
                    None => obs.foreign_members += 1,
                }
            }
        }

        let rtnl = self.rtnl().map_err(unavailable)?;
        if let Some(link) = rtnl.link(DUMMY_LINK).map_err(ObserveError::Link)? {
            let addrs = rtnl.addresses(link.index).map_err(ObserveError::Link)?;
            obs.state.addresses = addrs.into_iter().map(|a| a.addr).collect();
        }

        for key in sysctls.keys() {
            if let Ok(v) = self.sysctl.get(key) {
                obs.state.sysctls.insert(key.clone(), v);
            }
        }

        for (family, payload) in want_iptables {
            if self.iptables_match(*family, payload) {
                obs.state.iptables.insert(*family, payload.clone());
            }
        }
        Ok(obs)
    }

    /// Whether our chains hold exactly the rules of `payload` (in order, after
    /// [`normalize_rule`]) and every jump is there.
    fn iptables_match(&mut self, family: Family, payload: &str) -> bool {
        let Ok(saved) = self.iptables(family).save() else {
            return false;
        };
        iptables_in_sync(payload, &saved)
    }
}
