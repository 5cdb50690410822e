//! Pure conversions between the model's typed sets/entries and the ipset client's wire types.

use std::net::{IpAddr, SocketAddr};

use ipvs_netlink::conntrack::FlowFilter;
use ipvs_netlink::ipset::{self, Entry, SetSpec};
use ipvs_netlink::ipvs::{Family, Protocol};

use crate::state::ipset::{IpsetEntry, SetName, SetType};
use crate::state::{Cidr, ConntrackFilter};

/// Default hash size and element limit, as upstream creates its sets.
const HASHSIZE: u32 = 1024;
const MAXELEM: u32 = 65536;

fn set_family(f: Family) -> ipset::Family {
    match f {
        Family::Inet => ipset::Family::Inet,
        Family::Inet6 => ipset::Family::Inet6,
    }
}

/// How one of our sets is created (matches [`SetName::create_line`]): as
/// kube-proxy v1.37 creates it, without the comment extension (its members
/// carry no comments), so `ipset save` is the same under either proxy
/// (scripts/compare-upstream.sh).
pub fn set_spec(name: &SetName) -> SetSpec {
    let t = match name.kind.set_type() {
        SetType::BitmapPort => {
            return SetSpec::bitmap_port(0, 65535);
        }
        hash => hash,
    };
    SetSpec {
        hashsize: Some(HASHSIZE),
        maxelem: Some(MAXELEM),
        ..SetSpec::hash(t, set_family(name.family))
    }
}

fn proto(p: Protocol) -> u8 {
    // as_raw is 6 / 17 / 132: always fits.
    p.as_raw() as u8
}

/// The client's entry for a model entry.
pub fn to_entry(e: &IpsetEntry) -> Entry {
    match *e {
        IpsetEntry::Port(p) => Entry::Port(p),
        IpsetEntry::Ip(ip) => Entry::Ip(ip),
        IpsetEntry::IpPort(ip, p, port) => Entry::IpPort {
            ip,
            proto: proto(p),
            port,
        },
        IpsetEntry::IpPortIp(ip, p, port, ip2) => Entry::IpPortIp {
            ip,
            proto: proto(p),
            port,
            ip2,
        },
        IpsetEntry::IpPortNet(ip, p, port, net) => Entry::IpPortNet {
            ip,
            proto: proto(p),
            port,
            net: (net.addr(), net.prefix()),
        },
    }
}

/// The model entry for a kernel member; `None` for what the model never
/// writes (another protocol, a hash:net entry): such members are foreign.
pub fn from_entry(e: &Entry) -> Option<IpsetEntry> {
    let p = |n: u8| Protocol::from_raw(u16::from(n));
    Some(match *e {
        Entry::Port(port) => IpsetEntry::Port(port),
        Entry::Ip(ip) => IpsetEntry::Ip(ip),
        Entry::IpPort { ip, proto, port } => IpsetEntry::IpPort(ip, p(proto)?, port),
        Entry::IpPortIp {
            ip,
            proto,
            port,
            ip2,
        } => IpsetEntry::IpPortIp(ip, p(proto)?, port, ip2),
        Entry::IpPortNet {
            ip,
            proto,
            port,
            net: (addr, prefix),
        } => IpsetEntry::IpPortNet(ip, p(proto)?, port, cidr(addr, prefix)?),
        Entry::Net(..) => return None,
    })
}

fn cidr(addr: IpAddr, prefix: u8) -> Option<Cidr> {
    Cidr::new(addr, prefix)
}

/// The library's filter for a plan's conntrack filter; `None` when it has no
/// endpoint (the client filters by reply source, which a whole-VIP delete lacks).
pub fn flow_filter(c: &ConntrackFilter) -> Option<FlowFilter> {
    let ep = c.endpoint?;
    let proto = c.protocol.as_raw() as u8;
    let backend = SocketAddr::new(ep, 0);
    Some(match c.vip {
        Some(vip) => FlowFilter::service_backend(proto, vip, backend),
        None => FlowFilter::backend(proto, backend),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ipset::SetKind;

    #[test]
    fn entries_round_trip() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "fd00::2".parse().unwrap();
        let n: Cidr = "192.168.0.0/16".parse().unwrap();
        for e in [
            IpsetEntry::Port(30080),
            IpsetEntry::Ip(b),
            IpsetEntry::IpPort(a, Protocol::Udp, 53),
            IpsetEntry::IpPortIp(a, Protocol::Tcp, 80, a),
            IpsetEntry::IpPortNet(a, Protocol::Sctp, 9, n),
        ] {
            assert_eq!(from_entry(&to_entry(&e)), Some(e), "{e}");
        }
        assert_eq!(
            to_entry(&IpsetEntry::IpPort(a, Protocol::Tcp, 80)),
            Entry::tcp(a, 80)
        );
        // What we never write is not ours to adopt.
        assert_eq!(from_entry(&Entry::Net(a, 8)), None);
        assert_eq!(
            from_entry(&Entry::IpPort {
                ip: a,
                proto: 1,
                port: 0
            }),
            None
        );
    }

    #[test]
    fn specs_match_the_save_lines() {
        for s in SetName::all(&[Family::Inet, Family::Inet6]) {
            let spec = set_spec(&s);
            assert!(!spec.comment, "{s}");
            assert_eq!(spec.set_type.name(), s.kind.set_type().name(), "{s}");
            if s.kind.set_type() == SetType::BitmapPort {
                assert_eq!(spec.port_range, Some((0, 65535)));
            } else {
                assert_eq!(spec.family, set_family(s.family));
                assert_eq!((spec.hashsize, spec.maxelem), (Some(1024), Some(65536)));
            }
        }
        assert_eq!(
            set_spec(&SetName::new(SetKind::NodePortTcp, Family::Inet)).set_type,
            ipset::SetType::BitmapPort
        );
    }
}
