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
