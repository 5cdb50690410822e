//! Reading the kernel back: the IPVS table with connection counts, our sets, kube-ipvs0's addresses, sysctls, timeouts and our iptables.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipvs_netlink::ipvs::proc::ProcServiceId;
use ipvs_netlink::ipvs::{DestinationEntry, Family, ServiceEntry, ServiceKey};

use super::{Applier, DUMMY_LINK, ObserveError, convert, quick};
use crate::iptables::iptables_in_sync;
use crate::state::{ConnCounts, KService, KernelParts, KernelState, SetName};

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
    /// Which parts were read (the others are empty in `state`).
    pub read: KernelParts,
    /// How long each part took to read.
    pub took: ReadTimes,
}

/// Time spent reading each part of the kernel in one observation.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadTimes {
    /// IPVS (with the timeouts).
    pub ipvs: Duration,
    pub sets: Duration,
    pub addresses: Duration,
    pub iptables: Duration,
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

/// What a quick IPVS reading needs: the services as kube-ipvs applied them
/// (for the fields /proc does not show) and which to read exactly anyway.
#[derive(Clone, Copy)]
pub struct QuickIpvs<'a> {
    pub applied: &'a HashMap<ServiceKey, KService>,
    pub exact: &'a dyn Fn(&ServiceKey) -> bool,
}

/// Records a service read over netlink, with its real servers' connection counts.
fn insert_service(obs: &mut Observation, s: ServiceEntry, dests: Vec<DestinationEntry>) {
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
}

impl Applier {
    /// Reads what the kernel holds: the IPVS table (with connection counts),
    /// our sets' members, kube-ipvs0's addresses, the IPVS timeouts, the
    /// current values of the sysctls named by `sysctls`' keys (the ones the
    /// planner manages; its values are not used), and whether our iptables chains and jumps match `want_iptables`
    /// (a family whose chains match is reported holding that payload; one that
    /// differs is left out, so the planner restores it).
    ///
    /// With `quick`, IPVS is read from `/proc/net/ip_vs` in one pass instead
    /// of a netlink request per service (see [`super::quick`]). Only the
    /// parts in `read` are read (sysctls and IPVS timeouts always are).
    pub fn observe(
        &mut self,
        sysctls: &BTreeMap<String, String>,
        want_iptables: &BTreeMap<Family, Arc<str>>,
        quick: Option<QuickIpvs<'_>>,
        read: KernelParts,
    ) -> Result<Observation, ObserveError> {
        let unavailable = |(what, reason)| ObserveError::Unavailable { what, reason };
        let mut obs = Observation {
            read,
            ..Observation::default()
        };
        let start = Instant::now();
        let mut hz = self.hz;
        let ipvs = self.ipvs().map_err(unavailable)?;
        match quick {
            _ if !read.ipvs => {}
            // One service at a time: the whole table with its statistics would
            // be a second copy of the state while it is converted.
            None => ipvs
                .table_each(|s, dests| insert_service(&mut obs, s, dests))
                .map_err(ObserveError::Ipvs)?,
            Some(q) => {
                // (key, persistence timeout in jiffies if /proc showed one).
                let mut exact: Vec<(ServiceKey, Option<u32>)> = Vec::new();
                ipvs_netlink::ipvs::proc::read_each(|p| match p.id {
                    ProcServiceId::Key(key) => {
                        let jiffies = p.persistence.map(|(j, _)| j);
                        match q.applied.get(&key) {
                            // A persistent service needs HZ to read its timeout.
                            Some(a) if !(q.exact)(&key) && (jiffies.is_none() || hz.is_some()) => {
                                for d in &p.destinations {
                                    if d.active_conns > 0 || d.inactive_conns > 0 {
                                        let counts = ConnCounts {
                                            active: d.active_conns,
                                            inactive: d.inactive_conns,
                                        };
                                        obs.conns.insert((key, d.addr), counts);
                                    }
                                }
                                let ks = quick::merge(key, &p, a, hz.unwrap_or(1));
                                obs.state.services.insert(key, ks);
                            }
                            _ => exact.push((key, jiffies)),
                        }
                    }
                    // /proc does not say a firewall mark's family: ask for both.
                    ProcServiceId::FwMark(mark) => exact.extend(
                        [Family::Inet, Family::Inet6]
                            .map(|family| (ServiceKey::FwMark { mark, family }, None)),
                    ),
                })
                .map_err(ObserveError::Ipvs)?;
                // Not ours (foreign services), new to us, persistent before HZ
                // is known, or in this round's slice: read exactly. One gone
                // since the /proc read is absent.
                for (key, jiffies) in exact {
                    if let Some(s) = ipvs.service(&key).map_err(ObserveError::Ipvs)? {
                        if let (Some(j), t) = (jiffies, s.service.timeout)
                            && t > 0
                            && hz.is_none()
                        {
                            hz = Some(j / t);
                        }
                        let dests = ipvs.destinations(&key).map_err(ObserveError::Ipvs)?;
                        insert_service(&mut obs, s, dests);
                    }
                }
            }
        }
        obs.state.timeouts = ipvs.timeouts().ok();
        self.hz = hz;
        obs.took.ipvs = start.elapsed();

        if read.sets {
            let start = Instant::now();
            self.observe_sets(&mut obs)?;
            obs.took.sets = start.elapsed();
        }
        if read.addresses {
            let start = Instant::now();
            let rtnl = self.rtnl().map_err(unavailable)?;
            if let Some(link) = rtnl.link(DUMMY_LINK).map_err(ObserveError::Link)? {
                let addrs = rtnl.addresses(link.index).map_err(ObserveError::Link)?;
                obs.state.addresses = addrs.into_iter().map(|a| a.addr).collect();
            }
            obs.took.addresses = start.elapsed();
        }

        for key in sysctls.keys() {
            if let Ok(v) = self.sysctl.get(key) {
                obs.state.sysctls.insert(key.clone(), v);
            }
        }

        if read.iptables != [false; 2] {
            let start = Instant::now();
            for (family, payload) in want_iptables {
                if read.iptables_of(*family) && self.iptables_match(*family, payload) {
                    obs.state.iptables.insert(*family, payload.clone());
                }
            }
            obs.took.iptables = start.elapsed();
        }
        Ok(obs)
    }

    /// Reads our sets' members into `obs`.
    fn observe_sets(&mut self, obs: &mut Observation) -> Result<(), ObserveError> {
        let sets = self
            .ipset()
            .map_err(|(what, reason)| ObserveError::Unavailable { what, reason })?
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
        Ok(())
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
