//! ipvsadm-compatible text: `-Ln`/`--stats`/`--rate` listings, `-Sn` rules, and the `-R` restore parser.
//!
//! The output reproduces ipvsadm 1.31 byte for byte so that it can serve as an
//! oracle against the real tool. Two quirks matter for that:
//!
//! * ipvsadm sorts services and real servers with glibc's `qsort` (a merge
//!   sort on glibc 2.36) and comparators that subtract unsigned values into an
//!   `int`. The comparison wraps (10.0.0.0/8 compares *greater* than
//!   192.168.0.0/16), so the order is not a total order and depends on the order
//!   the kernel dumped the entries in. [`order`] replays exactly that merge, so
//!   the input must be in kernel dump order, as the netlink client returns it.
//! * Numbers are printed with C's `%d` in places, so firewall mark 4294967295
//!   prints as `-1`.

mod format;
mod kernel;
mod order;
mod restore;

pub use format::{ListFormat, list, save};
pub use kernel::{ApplyFailure, RestoreTarget, apply_restore, read_table};
pub use order::{sort_destinations, sort_services};
pub use restore::{Command, ParseError, RestoreLine, parse_restore};

use ipvs_netlink::ipvs::{DestinationEntry, ServiceEntry};

/// A service with its real servers, as the kernel reports them.
pub type TableEntry = (ServiceEntry, Vec<DestinationEntry>);

#[cfg(test)]
mod golden {
    //! Output captured from ipvsadm 1.31 on Debian's 6.1 kernel after `ipvsadm -R < corpus.txt`.

    use super::*;
    use ipvs_netlink::ipvs::{Info, Stats};

    /// The corpus as the kernel held it, in the kernel's dump order (`--nosort`).
    fn table() -> Vec<TableEntry> {
        let mut table: Vec<TableEntry> = Vec::new();
        for l in parse_restore(include_str!("golden/corpus.txt")).expect("corpus parses") {
            match l.command {
                Command::AddService(service) => table.push((
                    ServiceEntry {
                        service,
                        stats: Stats::default(),
                    },
                    Vec::new(),
                )),
                Command::AddDestination(key, destination) => {
                    let entry = table
                        .iter_mut()
                        .find(|(s, _)| s.service.key == key)
                        .expect("service exists");
                    entry.1.push(DestinationEntry {
                        destination,
                        active_conns: 0,
                        inactive_conns: 0,
                        persist_conns: 0,
                        stats: Stats::default(),
                    });
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // Rearrange into the dump order ipvsadm --nosort showed.
        let name = |e: &TableEntry| {
            format::list_name(&e.0.service.key)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        include_str!("golden/dump-order.txt")
            .lines()
            .map(|want| {
                table
                    .iter()
                    .find(|e| name(e) == want.trim())
                    .unwrap_or_else(|| panic!("{want} not in corpus"))
                    .clone()
            })
            .collect()
    }

    const INFO: Info = Info {
        version: 0x010201,
        conn_table_size: 4096,
    };

    #[test]
    fn save_matches_ipvsadm() {
        assert_eq!(save(&table()), include_str!("golden/save.txt"));
    }

    #[test]
    fn list_variants_match_ipvsadm() {
        let t = table();
        for (format, exact, want) in [
            (ListFormat::Plain, false, include_str!("golden/list.txt")),
            (
                ListFormat::Stats,
                false,
                include_str!("golden/list-stats.txt"),
            ),
            (
                ListFormat::Rate,
                false,
                include_str!("golden/list-rate.txt"),
            ),
            (
                ListFormat::Stats,
                true,
                include_str!("golden/list-exact-stats.txt"),
            ),
            (
                ListFormat::Thresholds,
                false,
                include_str!("golden/list-thresholds.txt"),
            ),
            (
                ListFormat::PersistentConn,
                false,
                include_str!("golden/list-persistent-conn.txt"),
            ),
            (
                ListFormat::TunInfo,
                false,
                include_str!("golden/list-tun-info.txt"),
            ),
        ] {
            assert_eq!(
                list(&INFO, &t, format, exact),
                want,
                "{format:?} exact={exact}"
            );
        }
    }

    #[test]
    fn saved_rules_parse_back_to_the_same_table() {
        let t = table();
        let again = parse_restore(&save(&t)).expect("saved rules parse");
        let services: Vec<_> = again
            .iter()
            .filter_map(|l| match &l.command {
                Command::AddService(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        for (e, _) in &t {
            assert!(services.contains(&e.service), "{:?} lost", e.service);
        }
        assert_eq!(services.len(), t.len());
    }
}

#[cfg(test)]
mod roundtrip {
    //! Property: every table that ipvsadm syntax can express restores from its own save.

    use super::*;
    use ipvs_netlink::ipvs::{
        Destination, Family, ForwardMethod, Scheduler, Service, ServiceFlags, ServiceKey, Stats,
        TunnelChecksum, TunnelType,
    };
    use proptest::prelude::*;
    use std::net::{IpAddr, SocketAddr};

    fn ip(v6: bool) -> impl Strategy<Value = IpAddr> {
        if v6 {
            any::<u128>()
                .prop_map(|a| IpAddr::from(a.to_be_bytes()))
                .boxed()
        } else {
            any::<u32>()
                .prop_map(|a| IpAddr::from(a.to_be_bytes()))
                .boxed()
        }
    }

    fn service() -> impl Strategy<Value = Service> {
        let sched = prop::sample::select(vec![
            "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf",
        ]);
        (
            any::<bool>(),
            0..4u8,
            any::<u32>(),
            any::<u16>(),
            sched,
            proptest::option::of(1..=restore::MAX_PERSISTENCE),
            0..=128u8,
            any::<bool>(),
            any::<bool>(),
            0..8u32,
        )
            .prop_flat_map(
                |(v6, kind, mark, port, sched, persist, mask, pe, ops, sflags)| {
                    ip(v6).prop_map(move |addr| {
                        let family = if v6 { Family::Inet6 } else { Family::Inet };
                        // Port 0 is only legal for persistent services.
                        let port = if persist.is_none() && port == 0 {
                            1
                        } else {
                            port
                        };
                        let sa = SocketAddr::new(addr, port);
                        let key = match kind {
                            0 => ServiceKey::Tcp(sa),
                            1 => ServiceKey::Udp(sa),
                            2 => ServiceKey::Sctp(sa),
                            _ => ServiceKey::FwMark {
                                mark: mark.max(1),
                                family,
                            },
                        };
                        let mut s = Service::new(key);
                        s.scheduler = Scheduler::from_name(sched);
                        if let Some(t) = persist {
                            s.flags.insert(ServiceFlags::PERSISTENT);
                            s.timeout = t;
                            // The mask is saved only with persistence; IPv6 prefixes start at 1.
                            s.netmask = match family {
                                Family::Inet => mask % 33,
                                Family::Inet6 => mask.max(1),
                            };
                        }
                        if pe {
                            s.pe_name = Some("sip".into());
                        }
                        if ops && matches!(key, ServiceKey::Udp(_) | ServiceKey::FwMark { .. }) {
                            s.flags.insert(ServiceFlags::ONEPACKET);
                        }
                        for (bit, flag) in [
                            ServiceFlags::SCHED1,
                            ServiceFlags::SCHED2,
                            ServiceFlags::SCHED3,
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            if sflags & (1 << bit) != 0 {
                                s.flags.insert(flag);
                            }
                        }
                        s
                    })
                },
            )
    }

    fn destination(key: ServiceKey) -> impl Strategy<Value = Destination> {
        (
            any::<bool>(),
            0..3u8,
            any::<u16>(),
            0..=65535u32,
            0..3u8,
            1..=65535u16,
            0..3u8,
        )
            .prop_flat_map(move |(other_family, fwd, port, weight, tt, tport, csum)| {
                let forward = [
                    ForwardMethod::Masq,
                    ForwardMethod::DirectRoute,
                    ForwardMethod::Tunnel,
                ][usize::from(fwd)];
                // Only tunnel servers may be of the other family.
                let v6 = (key.family() == Family::Inet6)
                    ^ (other_family && forward == ForwardMethod::Tunnel);
                ip(v6).prop_map(move |addr| {
                    let port = match key.addr() {
                        Some(sa) if forward != ForwardMethod::Masq => sa.port(),
                        _ => port,
                    };
                    let mut d = Destination::masq(SocketAddr::new(addr, port));
                    d.forward = forward;
                    d.weight = weight;
                    if forward == ForwardMethod::Tunnel {
                        d.tunnel_type =
                            [TunnelType::IpIp, TunnelType::Gue, TunnelType::Gre][usize::from(tt)];
                        match d.tunnel_type {
                            TunnelType::IpIp => {}
                            TunnelType::Gue => {
                                d.tunnel_port = tport;
                                d.tunnel_checksum = [
                                    TunnelChecksum::NoChecksum,
                                    TunnelChecksum::Checksum,
                                    TunnelChecksum::RemoteChecksum,
                                ][usize::from(csum)];
                            }
                            TunnelType::Gre => {
                                d.tunnel_checksum = if csum == 1 {
                                    TunnelChecksum::Checksum
                                } else {
                                    TunnelChecksum::NoChecksum
                                };
                            }
                        }
                    }
                    d
                })
            })
    }

    fn entry() -> impl Strategy<Value = TableEntry> {
        service().prop_flat_map(|s| {
            let key = s.key;
            prop::collection::vec(destination(key), 0..4).prop_map(move |dests| {
                (
                    ServiceEntry {
                        service: s.clone(),
                        stats: Stats::default(),
                    },
                    dests
                        .into_iter()
                        .map(|destination| DestinationEntry {
                            destination,
                            active_conns: 0,
                            inactive_conns: 0,
                            persist_conns: 0,
                            stats: Stats::default(),
                        })
                        .collect(),
                )
            })
        })
    }

    proptest! {
        #[test]
        fn save_then_parse_gives_the_same_table(e in entry()) {
            let text = save(std::slice::from_ref(&e));
            let lines = parse_restore(&text).map_err(|errs| {
                TestCaseError::fail(format!("{text}\n{errs:?}"))
            })?;
            let mut it = lines.into_iter().map(|l| l.command);
            prop_assert_eq!(it.next(), Some(Command::AddService(e.0.service.clone())), "{}", text);
            let mut want: Vec<Destination> = e.1.iter().map(|d| d.destination).collect();
            let mut got: Vec<Destination> = it
                .map(|c| match c {
                    Command::AddDestination(k, d) if k == e.0.service.key => Ok(d),
                    other => Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                })
                .collect::<Result<_, _>>()?;
            let k = |d: &Destination| d.addr;
            want.sort_by_key(k);
            got.sort_by_key(k);
            prop_assert_eq!(got, want, "{}", text);
        }
    }
}
