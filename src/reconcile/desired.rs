//! The desired node state as the refcounted sum of per-Service contributions,
//! so one Service's change is applied as a delta without touching the others.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipvs_netlink::ipvs::{Family, ServiceKey};

use crate::model::contribution::{Contribution, HealthCheck, NoNodeAccess, VirtualServer};
use crate::model::input::{Seniority, SvcId};
use crate::state::ipset::{IpsetEntry, SetName};

/// Keys whose desired value may have changed since the last plan.
#[derive(Debug, Default)]
pub struct Touched {
    pub vs: HashSet<ServiceKey>,
    pub addresses: HashSet<IpAddr>,
    pub entries: HashSet<(SetName, IpsetEntry)>,
    /// Families whose no-node-access list (and so iptables payload) changed.
    pub iptables: HashSet<Family>,
}

impl Touched {
    pub fn is_empty(&self) -> bool {
        self.vs.is_empty()
            && self.addresses.is_empty()
            && self.entries.is_empty()
            && self.iptables.is_empty()
    }
}

/// Sum of all contributions.
#[derive(Debug, Default)]
pub struct Aggregate {
    /// Every Service that wants a key, oldest first (see `claim_order`); two
    /// Services can claim one external IP:port.
    vs: HashMap<ServiceKey, Vec<(SvcId, Arc<VirtualServer>)>>,
    /// Age of each Service with a contribution, for ordering claims.
    seniority: HashMap<SvcId, Seniority>,
    addresses: HashMap<IpAddr, u32>,
    entries: HashMap<(SetName, IpsetEntry), u32>,
    no_node_access: BTreeMap<NoNodeAccess, u32>,
    health: HashMap<SvcId, HealthCheck>,
}

fn inc<K: std::hash::Hash + Eq>(m: &mut HashMap<K, u32>, k: K) -> bool {
    let c = m.entry(k).or_insert(0);
    *c += 1;
    *c == 1
}

fn dec<K: std::hash::Hash + Eq + Clone>(m: &mut HashMap<K, u32>, k: &K) -> bool {
    match m.get_mut(k) {
        Some(c) if *c > 1 => {
            *c -= 1;
            false
        }
        Some(_) => {
            m.remove(k);
            true
        }
        None => false,
    }
}

/// Claim order: the older Service first (creationTimestamp, then uid;
/// missing ones count as newest), `namespace/name` only as the last resort.
/// Never the name first: a newer Service must not take over an address:port
/// another Service already uses (CVE-2020-8554).
fn claim_order(seniority: &HashMap<SvcId, Seniority>, a: &SvcId, b: &SvcId) -> Ordering {
    let (x, y) = (seniority.get(a), seniority.get(b));
    x.zip(y)
        .map_or(Ordering::Equal, |(x, y)| x.cmp(y))
        .then_with(|| a.cmp(b))
}

impl Aggregate {
    pub fn add(&mut self, id: &SvcId, c: &Contribution, t: &mut Touched) {
        if !c.virtual_servers.is_empty() {
            self.seniority.insert(id.clone(), c.seniority.clone());
        }
        let seniority = &self.seniority;
        for v in &c.virtual_servers {
            let owners = self.vs.entry(v.service.key).or_default();
            let pos = owners.partition_point(|(o, _)| claim_order(seniority, o, id).is_lt());
            owners.insert(pos, (id.clone(), v.clone()));
            t.vs.insert(v.service.key);
        }
        for a in &c.addresses {
            if inc(&mut self.addresses, *a) {
                t.addresses.insert(*a);
            }
        }
        for e in &c.entries {
            if inc(&mut self.entries, *e) {
                t.entries.insert(*e);
            }
        }
        for n in &c.no_node_access {
            let cnt = self.no_node_access.entry(*n).or_insert(0);
            *cnt += 1;
            if *cnt == 1 {
                t.iptables.insert(Family::of(&n.0));
            }
        }
        if let Some(h) = c.health {
            self.health.insert(id.clone(), h);
        }
    }

    pub fn remove(&mut self, id: &SvcId, c: &Contribution, t: &mut Touched) {
        for v in &c.virtual_servers {
            let k = v.service.key;
            if let Some(owners) = self.vs.get_mut(&k) {
                if let Some(i) = owners.iter().position(|(o, _)| o == id) {
                    owners.remove(i);
                }
                if owners.is_empty() {
                    self.vs.remove(&k);
                }
            }
            t.vs.insert(k);
        }
        for a in &c.addresses {
            if dec(&mut self.addresses, a) {
                t.addresses.insert(*a);
            }
        }
        for e in &c.entries {
            if dec(&mut self.entries, e) {
                t.entries.insert(*e);
            }
        }
        for n in &c.no_node_access {
            if let Some(cnt) = self.no_node_access.get_mut(n) {
                *cnt -= 1;
                if *cnt == 0 {
                    self.no_node_access.remove(n);
                    t.iptables.insert(Family::of(&n.0));
                }
            }
        }
        if c.health.is_some() {
            self.health.remove(id);
        }
        self.seniority.remove(id);
    }

    /// The age a Service's claims are ordered by.
    pub fn seniority(&self, id: &SvcId) -> Option<&Seniority> {
        self.seniority.get(id)
    }

    /// The virtual server for a key: the claim of the oldest Service wins
    /// (`claim_order`), so a conflict resolves the same way on every node.
    pub fn effective(&self, key: &ServiceKey) -> Option<&VirtualServer> {
        self.vs.get(key).and_then(|o| o.first()).map(|(_, v)| &**v)
    }

    /// The Service whose claim on `key` is programmed (see `effective`).
    pub fn owner(&self, key: &ServiceKey) -> Option<&SvcId> {
        self.vs.get(key).and_then(|o| o.first()).map(|(id, _)| id)
    }

    /// Keys more than one Service claims, with every claim, the winner first.
    pub fn conflicts(&self) -> impl Iterator<Item = (&ServiceKey, &[(SvcId, Arc<VirtualServer>)])> {
        self.vs
            .iter()
            .filter(|(_, o)| o.len() > 1)
            .map(|(k, o)| (k, o.as_slice()))
    }

    pub fn keys(&self) -> impl Iterator<Item = &ServiceKey> {
        self.vs.keys()
    }

    pub fn has_address(&self, a: &IpAddr) -> bool {
        self.addresses.contains_key(a)
    }

    pub fn addresses(&self) -> impl Iterator<Item = &IpAddr> {
        self.addresses.keys()
    }

    pub fn has_entry(&self, e: &(SetName, IpsetEntry)) -> bool {
        self.entries.contains_key(e)
    }

    pub fn entries(&self) -> impl Iterator<Item = &(SetName, IpsetEntry)> {
        self.entries.keys()
    }

    pub fn no_node_access(&self, family: Family) -> impl Iterator<Item = &NoNodeAccess> {
        self.no_node_access
            .keys()
            .filter(move |n| Family::of(&n.0) == family)
    }

    pub fn health(&self) -> &HashMap<SvcId, HealthCheck> {
        &self.health
    }
}
