//! The cheap periodic verification's IPVS reading (#17): `/proc/net/ip_vs` merged with what kube-ipvs applied, for the fields /proc does not show.
//!
//! /proc shows every service's scheduler, persistence (timeout and netmask)
//! and real servers (address, forwarding method, weight, connections). It
//! does not show scheduler flags, thresholds, tunnel settings or the
//! persistence engine: those are taken from the applied state, and a rolling
//! slice of services is read exactly over netlink each period
//! ([`exact_slice`]), so drift there is found within [`VERIFY_SLICES`] periods.
//!
//! Measured at 10,000 × 10 in the lab (README), IPVS this way costs about
//! 2.5 s and each family's `iptables-save` about 0.8 s, while our sets and
//! kube-ipvs0's addresses cost 0.1 s each. So a periodic verification reads
//! the sets and addresses every time, and one costly part in turn
//! ([`parts`]): IPVS, then each served family's iptables. Every part is read
//! within [`cycle`] periods, and every service exactly within
//! `cycle × VERIFY_SLICES` periods.

use std::hash::{Hash, Hasher};

use ipvs_netlink::ipvs::proc::ProcService;
use ipvs_netlink::ipvs::{Destination, Family, ServiceFlags, ServiceKey};

use crate::state::{KService, KernelParts};

/// A periodic verification reads 1/VERIFY_SLICES of the services exactly;
/// every service is read exactly within VERIFY_SLICES periods (5 min at the
/// default syncPeriod of 30 s).
pub const VERIFY_SLICES: u64 = 10;

/// How many verifications read every part once: IPVS, then the iptables
/// of each of `families`.
pub const fn cycle(families: &[Family]) -> u64 {
    1 + families.len() as u64
}

/// Which parts verification `round` reads: the sets and addresses always,
/// and in turn IPVS or one of `families`' iptables. IPVS's exact slice is
/// then the one of [`exact_slice`]`(key, round / cycle(families))`.
pub fn parts(round: u64, families: &[Family]) -> KernelParts {
    let turn = round % cycle(families);
    let mut p = KernelParts {
        ipvs: turn == 0,
        sets: true,
        addresses: true,
        iptables: [false; 2],
    };
    if let Some(f) = turn.checked_sub(1).and_then(|i| families.get(i as usize)) {
        p.set_iptables(*f, true);
    }
    p
}

/// Whether `key` is in the slice read exactly in verification `round`.
pub fn exact_slice(key: &ServiceKey, round: u64) -> bool {
    // DefaultHasher::new() has fixed keys: the slice of a key is stable.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish() % VERIFY_SLICES == round % VERIFY_SLICES
}

/// The service `p` shows, with what /proc does not show taken from
/// `applied` (the same service as kube-ipvs last confirmed it). Real servers
/// /proc lists that `applied` lacks get a masquerading real server's
/// defaults for the hidden fields. `hz` converts a persistence timeout from
/// the jiffies /proc prints to seconds.
pub fn merge(key: ServiceKey, p: &ProcService, applied: &KService, hz: u32) -> KService {
    let mut service = applied.service.clone();
    service.key = key;
    service.scheduler = p.scheduler.clone();
    match p.persistence {
        Some((jiffies, netmask)) => {
            service.flags.insert(ServiceFlags::PERSISTENT);
            service.timeout = jiffies / hz.max(1);
            service.netmask = netmask;
        }
        None => service.flags.remove(ServiceFlags::PERSISTENT),
    }
    // /proc prints `ops` for IPv4 services only.
    if key.family() == ipvs_netlink::ipvs::Family::Inet {
        if p.one_packet {
            service.flags.insert(ServiceFlags::ONEPACKET);
        } else {
            service.flags.remove(ServiceFlags::ONEPACKET);
        }
    }
    let mut ks = KService::new(service);
    ks.destinations.reserve_exact(p.destinations.len());
    for d in &p.destinations {
        let mut dest = applied
            .get(&d.addr)
            .copied()
            .unwrap_or_else(|| Destination::masq(d.addr));
        dest.forward = d.forward;
        dest.weight = d.weight;
        ks.destinations.push(dest);
    }
    ks.destinations.sort_by_key(|d| d.addr);
    ks
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_netlink::ipvs::proc::{ProcDestination, ProcServiceId};
    use ipvs_netlink::ipvs::{ForwardMethod, Scheduler, Service};

    fn key() -> ServiceKey {
        ServiceKey::Tcp("10.96.0.10:80".parse().unwrap())
    }

    fn applied() -> KService {
        let mut s = Service::new(key());
        s.scheduler = Scheduler::Maglev;
        s.flags = ServiceFlags::MH_PORT | ServiceFlags::MH_FALLBACK;
        let mut ks = KService::new(s);
        let mut d = Destination::masq("10.244.1.2:8080".parse().unwrap());
        d.upper_threshold = 7;
        ks.destinations.push(d);
        ks
    }

    fn shown(sched: Scheduler, weight: u32, persistence: Option<(u32, u8)>) -> ProcService {
        ProcService {
            id: ProcServiceId::Key(key()),
            scheduler: sched,
            one_packet: false,
            persistence,
            destinations: vec![ProcDestination {
                addr: "10.244.1.2:8080".parse().unwrap(),
                forward: ForwardMethod::Masq,
                weight,
                active_conns: 3,
                inactive_conns: 0,
            }],
        }
    }

    #[test]
    fn unchanged_kernel_merges_to_the_applied_service() {
        let a = applied();
        assert_eq!(merge(key(), &shown(Scheduler::Maglev, 1, None), &a, 250), a);
    }

    #[test]
    fn drift_that_proc_shows_is_seen() {
        let a = applied();
        // A changed scheduler, weight, persistence, a removed or added real server.
        let m = merge(key(), &shown(Scheduler::RoundRobin, 1, None), &a, 250);
        assert_eq!(m.service.scheduler, Scheduler::RoundRobin);
        let m = merge(key(), &shown(Scheduler::Maglev, 0, None), &a, 250);
        assert_eq!(m.destinations[0].weight, 0);
        assert_eq!(m.destinations[0].upper_threshold, 7, "hidden fields kept");
        let m = merge(
            key(),
            &shown(Scheduler::Maglev, 1, Some((60 * 250, 24))),
            &a,
            250,
        );
        assert!(m.service.flags.contains(ServiceFlags::PERSISTENT));
        assert_eq!((m.service.timeout, m.service.netmask), (60, 24));
        let mut none = shown(Scheduler::Maglev, 1, None);
        none.destinations.clear();
        assert!(merge(key(), &none, &a, 250).destinations.is_empty());
        let mut extra = shown(Scheduler::Maglev, 1, None);
        extra.destinations.push(ProcDestination {
            addr: "10.244.9.9:8080".parse().unwrap(),
            forward: ForwardMethod::DirectRoute,
            weight: 4,
            active_conns: 0,
            inactive_conns: 0,
        });
        let m = merge(key(), &extra, &a, 250);
        assert_eq!(m.destinations.len(), 2);
        assert_eq!(m.destinations[1].forward, ForwardMethod::DirectRoute);
        assert_ne!(m, a);
    }

    #[test]
    fn every_part_is_read_once_in_a_cycle_of_rounds() {
        for families in [
            &[Family::Inet][..],
            &[Family::Inet6],
            &[Family::Inet, Family::Inet6],
        ] {
            let n = cycle(families);
            let (mut ipvs, mut ipt) = (0, [0, 0]);
            for round in 7..7 + n {
                let p = parts(round, families);
                assert!(p.sets && p.addresses, "cheap parts every time");
                ipvs += u64::from(p.ipvs);
                for f in families {
                    ipt[usize::from(*f == Family::Inet6)] += u64::from(p.iptables_of(*f));
                }
                let costly =
                    u64::from(p.ipvs) + p.iptables.iter().map(|b| u64::from(*b)).sum::<u64>();
                assert_eq!(costly, 1, "{families:?} round {round}: one costly part");
                assert_eq!(parts(round + n, families), p);
            }
            assert_eq!(ipvs, 1);
            for f in families {
                assert_eq!(ipt[usize::from(*f == Family::Inet6)], 1, "{families:?}");
            }
        }
    }

    #[test]
    fn every_key_is_read_exactly_once_in_a_cycle_of_rounds() {
        for i in 0..500u16 {
            let k = ServiceKey::Udp(format!("10.96.{}.{}:53", i / 250, i % 250).parse().unwrap());
            let rounds: Vec<u64> = (0..VERIFY_SLICES).filter(|r| exact_slice(&k, *r)).collect();
            assert_eq!(rounds.len(), 1, "{k}");
            assert!(exact_slice(&k, rounds[0] + VERIFY_SLICES));
        }
    }
}
