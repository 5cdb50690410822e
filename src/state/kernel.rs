//! Node state as a plain value — desired, last applied, or observed — and a
//! strict in-memory kernel that applies plan operations the way the kernel would.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipvs_netlink::ipvs::{
    Destination, Family, ForwardMethod, Service, ServiceFlags, ServiceKey, Timeouts,
};

use super::ipset::{IpsetEntry, SetName};
use super::op::{IpvsOp, Op};

/// A virtual service with its real servers (sorted by address, unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KService {
    pub service: Service,
    pub destinations: Vec<Destination>,
}

impl KService {
    pub fn new(service: Service) -> Self {
        KService {
            service,
            destinations: Vec::new(),
        }
    }

    pub fn find(&self, addr: &SocketAddr) -> Result<usize, usize> {
        self.destinations.binary_search_by(|d| d.addr.cmp(addr))
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<&Destination> {
        self.find(addr).ok().map(|i| &self.destinations[i])
    }
}

/// Connection counts of a real server as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnCounts {
    pub active: u32,
    pub inactive: u32,
}

/// Node state: IPVS, kube-ipvs0 addresses, our ipsets, our iptables payloads,
/// sysctls and IPVS timeouts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelState {
    pub services: HashMap<ServiceKey, KService>,
    /// Addresses bound on kube-ipvs0.
    pub addresses: HashSet<IpAddr>,
    /// Our sets (by name) and their members.
    pub sets: HashMap<SetName, HashSet<IpsetEntry>>,
    pub iptables: BTreeMap<Family, Arc<str>>,
    pub sysctls: BTreeMap<String, String>,
    pub timeouts: Option<Timeouts>,
}

/// Which parts of the kernel an observation read. A part not read is taken
/// to be as last applied (the periodic verification reads the costly ones in
/// turn, #17); sysctls and IPVS timeouts are always read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelParts {
    /// The IPVS table (and the real servers' connection counts).
    pub ipvs: bool,
    /// Our ipsets' members.
    pub sets: bool,
    /// kube-ipvs0's addresses.
    pub addresses: bool,
    /// Our iptables chains and jumps, per family: [IPv4, IPv6].
    pub iptables: [bool; 2],
}

/// By default an observation reads everything.
impl Default for KernelParts {
    fn default() -> Self {
        Self::ALL
    }
}

impl KernelParts {
    pub const ALL: KernelParts = KernelParts {
        ipvs: true,
        sets: true,
        addresses: true,
        iptables: [true; 2],
    };

    /// Whether `family`'s iptables were read.
    pub fn iptables_of(&self, family: Family) -> bool {
        self.iptables[usize::from(family == Family::Inet6)]
    }

    /// Marks `family`'s iptables read or not.
    pub fn set_iptables(&mut self, family: Family, read: bool) {
        self.iptables[usize::from(family == Family::Inet6)] = read;
    }
}

/// Why the strict kernel refused an operation (mirrors EEXIST / ENOENT / EINVAL).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    #[error("service {0} already exists")]
    ServiceExists(ServiceKey),
    #[error("service {0} does not exist")]
    NoService(ServiceKey),
    #[error("real server {1} of {0} already exists")]
    DestinationExists(ServiceKey, SocketAddr),
    #[error("real server {1} of {0} does not exist")]
    NoDestination(ServiceKey, SocketAddr),
    #[error("real server {1} has another family than {0} without tunnelling")]
    FamilyMismatch(ServiceKey, SocketAddr),
    #[error("address {0} already bound")]
    AddressExists(IpAddr),
    #[error("address {0} not bound")]
    NoAddress(IpAddr),
    #[error("set {0} already exists")]
    SetExists(SetName),
    #[error("set {0} does not exist")]
    NoSet(SetName),
    #[error("entry {1} already in {0}")]
    EntryExists(SetName, IpsetEntry),
    #[error("entry {1} not in {0}")]
    NoEntry(SetName, IpsetEntry),
    #[error("entry {1} does not fit set {0}")]
    BadEntry(SetName, IpsetEntry),
}

impl KernelState {
    /// Applies one operation, refusing exactly what the kernel refuses:
    /// adding what exists, deleting or editing what does not.
    pub fn apply(&mut self, op: &Op) -> Result<(), KernelError> {
        match op {
            Op::Sysctl { key, value } => {
                self.sysctls.insert(key.clone(), value.clone());
            }
            Op::SetTimeouts(t) => {
                let cur = self.timeouts.get_or_insert_with(Timeouts::default);
                // 0 leaves a timeout unchanged, as IP_VS_SO_SET_TIMEOUT does.
                if t.tcp != 0 {
                    cur.tcp = t.tcp;
                }
                if t.tcp_fin != 0 {
                    cur.tcp_fin = t.tcp_fin;
                }
                if t.udp != 0 {
                    cur.udp = t.udp;
                }
            }
            Op::CreateSet(s) => {
                if self.sets.contains_key(s) {
                    return Err(KernelError::SetExists(*s));
                }
                self.sets.insert(*s, HashSet::new());
            }
            Op::IpsetAdd(s, e) => {
                let set = self.sets.get_mut(s).ok_or(KernelError::NoSet(*s))?;
                if !e.fits(s) {
                    return Err(KernelError::BadEntry(*s, *e));
                }
                if !set.insert(*e) {
                    return Err(KernelError::EntryExists(*s, *e));
                }
            }
            Op::IpsetDel(s, e) => {
                let set = self.sets.get_mut(s).ok_or(KernelError::NoSet(*s))?;
                if !set.remove(e) {
                    return Err(KernelError::NoEntry(*s, *e));
                }
            }
            Op::AddAddress(a) => {
                if !self.addresses.insert(*a) {
                    return Err(KernelError::AddressExists(*a));
                }
            }
            Op::DelAddress(a) => {
                if !self.addresses.remove(a) {
                    return Err(KernelError::NoAddress(*a));
                }
            }
            Op::IptablesRestore { family, payload } => {
                self.iptables.insert(*family, payload.clone());
            }
            Op::Conntrack(_) => {}
            Op::Ipvs(op) => self.apply_ipvs(op)?,
        }
        Ok(())
    }

    fn apply_ipvs(&mut self, op: &IpvsOp) -> Result<(), KernelError> {
        match op {
            IpvsOp::AddService(s) => {
                if self.services.contains_key(&s.key) {
                    return Err(KernelError::ServiceExists(s.key));
                }
                self.services.insert(s.key, KService::new(s.clone()));
            }
            IpvsOp::EditService(s) => {
                let k = self
                    .services
                    .get_mut(&s.key)
                    .ok_or(KernelError::NoService(s.key))?;
                k.service = s.clone();
            }
            IpvsOp::DeleteService(key) => {
                self.services
                    .remove(key)
                    .ok_or(KernelError::NoService(*key))?;
            }
            IpvsOp::AddDestination(key, d) => {
                let k = self
                    .services
                    .get_mut(key)
                    .ok_or(KernelError::NoService(*key))?;
                if d.family() != key.family() && d.forward != ForwardMethod::Tunnel {
                    return Err(KernelError::FamilyMismatch(*key, d.addr));
                }
                match k.find(&d.addr) {
                    Ok(_) => return Err(KernelError::DestinationExists(*key, d.addr)),
                    Err(i) => {
                        // Grow by a quarter, not double: tens of thousands of
                        // small real-server lists dominate the model's memory.
                        let v = &mut k.destinations;
                        if v.len() == v.capacity() {
                            v.reserve_exact((v.len() / 4).max(1));
                        }
                        v.insert(i, *d)
                    }
                }
            }
            IpvsOp::EditDestination(key, d) => {
                let k = self
                    .services
                    .get_mut(key)
                    .ok_or(KernelError::NoService(*key))?;
                let i = k
                    .find(&d.addr)
                    .map_err(|_| KernelError::NoDestination(*key, d.addr))?;
                k.destinations[i] = *d;
            }
            IpvsOp::DeleteDestination(key, addr) => {
                let k = self
                    .services
                    .get_mut(key)
                    .ok_or(KernelError::NoService(*key))?;
                let i = k
                    .find(addr)
                    .map_err(|_| KernelError::NoDestination(*key, *addr))?;
                k.destinations.remove(i);
            }
        }
        Ok(())
    }

    /// Applies a whole plan, stopping at the first refusal.
    pub fn apply_all<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a Op>,
    ) -> Result<(), KernelError> {
        ops.into_iter().try_for_each(|op| self.apply(op))
    }

    /// `ipvsadm -Sn` text, services and real servers sorted for stable output.
    pub fn ipvsadm_save(&self) -> String {
        let mut keys: Vec<&ServiceKey> = self.services.keys().collect();
        keys.sort();
        let mut s = String::new();
        for k in keys {
            let ks = &self.services[k];
            let svc = &ks.service;
            let target = ipvsadm_target(k);
            let _ = write!(s, "-A {target} -s {}", svc.scheduler);
            let sched_flags = sched_flag_names(svc);
            if !sched_flags.is_empty() {
                let _ = write!(s, " -b {}", sched_flags.join(","));
            }
            if svc.flags.contains(ServiceFlags::PERSISTENT) {
                let _ = write!(s, " -p {}", svc.timeout);
                if svc.netmask != k.family().max_prefix() {
                    let _ = write!(s, " -M {}", svc.netmask);
                }
            }
            s.push('\n');
            for d in &ks.destinations {
                let m = match d.forward {
                    ForwardMethod::Masq => "-m",
                    ForwardMethod::DirectRoute | ForwardMethod::Local => "-g",
                    ForwardMethod::Tunnel => "-i",
                    ForwardMethod::Bypass => "-b",
                };
                let _ = writeln!(s, "-a {target} -r {} {m} -w {}", d.addr, d.weight);
            }
        }
        s
    }

    /// `ipset save` text for our sets (sorted for stable output).
    pub fn ipset_save(&self) -> String {
        let mut names: Vec<&SetName> = self.sets.keys().collect();
        names.sort();
        let mut s = String::new();
        for n in names {
            let _ = writeln!(s, "{}", n.create_line());
            let mut entries: Vec<&IpsetEntry> = self.sets[n].iter().collect();
            entries.sort();
            for e in entries {
                let _ = writeln!(s, "add {n} {e}");
            }
        }
        s
    }

    /// The iptables payloads, IPv4 then IPv6, each headed by a comment line.
    pub fn iptables_save(&self) -> String {
        let mut s = String::new();
        for (f, p) in &self.iptables {
            let _ = writeln!(
                s,
                "# {}",
                if *f == Family::Inet {
                    "iptables"
                } else {
                    "ip6tables"
                }
            );
            s.push_str(p);
        }
        s
    }
}

fn ipvsadm_target(k: &ServiceKey) -> String {
    match k {
        ServiceKey::Tcp(a) => format!("-t {a}"),
        ServiceKey::Udp(a) => format!("-u {a}"),
        ServiceKey::Sctp(a) => format!("--sctp-service {a}"),
        ServiceKey::FwMark { mark, .. } => format!("-f {mark}"),
    }
}

fn sched_flag_names(svc: &Service) -> Vec<&'static str> {
    let f = svc.flags;
    let pre = match svc.scheduler.name() {
        "sh" => "sh",
        "mh" => "mh",
        _ => "",
    };
    let mut v = Vec::new();
    if f.contains(ServiceFlags::SCHED1) {
        v.push(match pre {
            "sh" => "sh-fallback",
            "mh" => "mh-fallback",
            _ => "flag-1",
        });
    }
    if f.contains(ServiceFlags::SCHED2) {
        v.push(match pre {
            "sh" => "sh-port",
            "mh" => "mh-port",
            _ => "flag-2",
        });
    }
    if f.contains(ServiceFlags::SCHED3) {
        v.push("flag-3");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ipset::SetKind;
    use ipvs_netlink::ipvs::Protocol;

    fn key() -> ServiceKey {
        ServiceKey::Tcp("10.96.0.1:80".parse().unwrap())
    }

    #[test]
    fn strict_like_the_kernel() {
        let mut k = KernelState::default();
        let svc = Service::new(key());
        let d = Destination::masq("10.0.0.1:8080".parse().unwrap());
        assert!(
            k.apply(&Op::Ipvs(IpvsOp::AddDestination(key(), d)))
                .is_err()
        );
        k.apply(&Op::Ipvs(IpvsOp::AddService(svc.clone()))).unwrap();
        assert_eq!(
            k.apply(&Op::Ipvs(IpvsOp::AddService(svc))),
            Err(KernelError::ServiceExists(key()))
        );
        k.apply(&Op::Ipvs(IpvsOp::AddDestination(key(), d)))
            .unwrap();
        assert!(
            k.apply(&Op::Ipvs(IpvsOp::AddDestination(key(), d)))
                .is_err()
        );
        let d6 = Destination::masq("[fd00::1]:80".parse().unwrap());
        assert!(matches!(
            k.apply(&Op::Ipvs(IpvsOp::AddDestination(key(), d6))),
            Err(KernelError::FamilyMismatch(..))
        ));
        k.apply(&Op::Ipvs(IpvsOp::DeleteDestination(key(), d.addr)))
            .unwrap();
        assert!(
            k.apply(&Op::Ipvs(IpvsOp::DeleteDestination(key(), d.addr)))
                .is_err()
        );
        assert!(
            k.apply(&Op::Ipvs(IpvsOp::EditDestination(key(), d)))
                .is_err()
        );
        k.apply(&Op::Ipvs(IpvsOp::DeleteService(key()))).unwrap();
        assert!(k.apply(&Op::Ipvs(IpvsOp::DeleteService(key()))).is_err());

        let a: IpAddr = "10.96.0.1".parse().unwrap();
        k.apply(&Op::AddAddress(a)).unwrap();
        assert!(k.apply(&Op::AddAddress(a)).is_err());
        k.apply(&Op::DelAddress(a)).unwrap();
        assert!(k.apply(&Op::DelAddress(a)).is_err());

        let set = SetName::new(SetKind::ClusterIp, Family::Inet);
        let e = IpsetEntry::IpPort(a, Protocol::Tcp, 80);
        assert!(k.apply(&Op::IpsetAdd(set, e)).is_err());
        k.apply(&Op::CreateSet(set)).unwrap();
        assert!(k.apply(&Op::CreateSet(set)).is_err());
        k.apply(&Op::IpsetAdd(set, e)).unwrap();
        assert!(k.apply(&Op::IpsetAdd(set, e)).is_err());
        assert!(k.apply(&Op::IpsetAdd(set, IpsetEntry::Port(1))).is_err());
        k.apply(&Op::IpsetDel(set, e)).unwrap();
        assert!(k.apply(&Op::IpsetDel(set, e)).is_err());
    }

    #[test]
    fn ipvsadm_save_format() {
        let mut k = KernelState::default();
        let mut svc = Service::new(key());
        svc.flags = ServiceFlags::PERSISTENT;
        svc.timeout = 10800;
        k.apply(&Op::Ipvs(IpvsOp::AddService(svc))).unwrap();
        let d = Destination::masq("10.0.0.1:8080".parse().unwrap());
        k.apply(&Op::Ipvs(IpvsOp::AddDestination(key(), d)))
            .unwrap();
        assert_eq!(
            k.ipvsadm_save(),
            "-A -t 10.96.0.1:80 -s rr -p 10800\n-a -t 10.96.0.1:80 -r 10.0.0.1:8080 -m -w 1\n"
        );
    }
}
