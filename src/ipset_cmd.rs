//! Text of `ipset list` and `ipset save` (ipset 7.x) for sets read over netlink.
//!
//! Every field comes from the kernel's dump, "Size in memory" and
//! "References" included; names of protocols and ICMP types follow what the
//! ipset tool prints (checked in the lab against ipset v7.17).

use std::fmt::Write;
use std::net::IpAddr;
use std::sync::OnceLock;

use ipvs_netlink::ipset::{
    Entry, Family, IPPROTO_ICMP, IPPROTO_ICMPV6, IpSet, Member, NFPROTO_IPV6, SetHeader,
};

/// `ipset list [NAME]`: every set, separated by a blank line.
pub fn list(sets: &[IpSet]) -> String {
    let mut out = String::new();
    for (i, set) in sets.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let h = &set.header;
        let _ = writeln!(out, "Name: {}", h.name);
        let _ = writeln!(out, "Type: {}", h.type_name);
        let _ = writeln!(out, "Revision: {}", h.revision);
        let _ = writeln!(out, "Header: {}", header(h));
        let _ = writeln!(out, "Size in memory: {}", h.memsize.unwrap_or(0));
        let _ = writeln!(out, "References: {}", h.references.unwrap_or(0));
        let _ = writeln!(
            out,
            "Number of entries: {}",
            h.elements.unwrap_or(set.members.len() as u32)
        );
        out.push_str("Members:\n");
        for m in &set.members {
            out.push_str(&member(h, m));
            out.push('\n');
        }
    }
    out
}

/// `ipset list -t [NAME]`: headers only.
pub fn list_headers(sets: &[IpSet]) -> String {
    let mut out = String::new();
    for (i, set) in sets.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let h = &set.header;
        let _ = write!(
            out,
            "Name: {}\nType: {}\nRevision: {}\nHeader: {}\nSize in memory: {}\nReferences: {}\nNumber of entries: {}\n",
            h.name,
            h.type_name,
            h.revision,
            header(h),
            h.memsize.unwrap_or(0),
            h.references.unwrap_or(0),
            h.elements.unwrap_or(0)
        );
    }
    out
}

/// `ipset save [NAME]`: `create` lines followed by each set's `add` lines.
pub fn save(sets: &[IpSet]) -> String {
    let mut out = String::new();
    for set in sets {
        let h = &set.header;
        let _ = writeln!(out, "create {} {} {}", h.name, h.type_name, header(h));
        for m in &set.members {
            let _ = writeln!(out, "add {} {}", h.name, member(h, m));
        }
    }
    out
}

/// The "Header:" text: the create options in the order ipset prints them.
pub fn header(h: &SetHeader) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some((a, b)) = h.port_range {
        parts.push(format!("range {a}-{b}"));
    } else if let Some((a, b)) = h.ip_range {
        parts.push(format!("range {a}-{b}"));
    } else {
        let fam = if h.family == NFPROTO_IPV6 {
            "inet6"
        } else {
            "inet"
        };
        parts.push(format!("family {fam}"));
    }
    if let Some(v) = h.hashsize {
        parts.push(format!("hashsize {v}"));
    }
    if let Some(v) = h.maxelem {
        parts.push(format!("maxelem {v}"));
    }
    if let Some(v) = h.netmask {
        parts.push(format!("netmask {v}"));
    }
    if let Some(v) = h.markmask {
        parts.push(format!("markmask 0x{v:08x}"));
    }
    if let Some(v) = h.size {
        parts.push(format!("size {v}"));
    }
    if let Some(v) = h.timeout {
        parts.push(format!("timeout {v}"));
    }
    if h.has_counters() {
        parts.push("counters".into());
    }
    if h.has_comment() {
        parts.push("comment".into());
    }
    if h.has_skbinfo() {
        parts.push("skbinfo".into());
    }
    if let Some(v) = h.bucketsize {
        parts.push(format!("bucketsize {v}"));
    }
    if let Some(v) = h.initval {
        parts.push(format!("initval 0x{v:08x}"));
    }
    parts.join(" ")
}

/// One member as ipset prints it: the element, then its extensions.
pub fn member(h: &SetHeader, m: &Member) -> String {
    let inet6 = h.family == NFPROTO_IPV6;
    let mut s = element(&m.entry, inet6);
    if let Some(t) = m.timeout {
        let _ = write!(s, " timeout {t}");
    }
    if m.nomatch {
        s.push_str(" nomatch");
    }
    if let Some(p) = m.packets {
        let _ = write!(s, " packets {p}");
    }
    if let Some(b) = m.bytes {
        let _ = write!(s, " bytes {b}");
    }
    if let Some(c) = &m.comment {
        let _ = write!(s, " comment \"{c}\"");
    }
    if let Some((mark, mask)) = m.skbmark {
        if mask == u32::MAX {
            let _ = write!(s, " skbmark 0x{mark:x}");
        } else {
            let _ = write!(s, " skbmark 0x{mark:x}/0x{mask:x}");
        }
    }
    if let Some((maj, min)) = m.skbprio {
        let _ = write!(s, " skbprio {maj:x}:{min:x}");
    }
    if let Some(q) = m.skbqueue {
        let _ = write!(s, " skbqueue {q}");
    }
    s
}

fn net(a: &IpAddr, cidr: u8) -> String {
    if cidr == Family::of(a).max_prefix() {
        a.to_string()
    } else {
        format!("{a}/{cidr}")
    }
}

/// The element text: `ip`, `ip,proto:port`, `ip,proto:port,ip`, `net/cidr`, `port`.
pub fn element(e: &Entry, inet6: bool) -> String {
    match e {
        Entry::Ip(a) => a.to_string(),
        Entry::IpPort { ip, proto, port } => format!("{ip},{}", proto_port(*proto, *port, inet6)),
        Entry::IpPortIp {
            ip,
            proto,
            port,
            ip2,
        } => format!("{ip},{},{ip2}", proto_port(*proto, *port, inet6)),
        Entry::IpPortNet {
            ip,
            proto,
            port,
            net: (n, c),
        } => format!("{ip},{},{}", proto_port(*proto, *port, inet6), net(n, *c)),
        Entry::Net(a, c) => net(a, *c),
        Entry::Port(p) => p.to_string(),
    }
}

/// `tcp:80`, `icmp:echo-request`, `ipv6-icmp:3/1`, `gre:0`, `255:0`.
pub fn proto_port(proto: u8, port: u16, inet6: bool) -> String {
    let name = proto_name(proto);
    let (t, c) = ((port >> 8) as u8, port as u8);
    let icmp = match proto {
        IPPROTO_ICMP if !inet6 => Some(ICMP_NAMES),
        IPPROTO_ICMPV6 if inet6 => Some(ICMPV6_NAMES),
        _ => None,
    };
    match icmp {
        Some(table) => match table.iter().find(|(tt, cc, _)| *tt == t && *cc == c) {
            Some((_, _, n)) => format!("{name}:{n}"),
            None => format!("{name}:{t}/{c}"),
        },
        None => format!("{name}:{port}"),
    }
}

/// The protocol's name as `getprotobynumber` gives it (from /etc/protocols), else its number.
pub fn proto_name(proto: u8) -> String {
    static TABLE: OnceLock<Vec<Option<String>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let text = std::fs::read_to_string("/etc/protocols").unwrap_or_default();
        let mut t = parse_protocols(&text);
        // Without /etc/protocols, the names every system has.
        for (n, name) in FALLBACK_PROTOCOLS {
            if t[*n as usize].is_none() && text.is_empty() {
                t[*n as usize] = Some((*name).to_owned());
            }
        }
        t
    });
    table[proto as usize]
        .clone()
        .unwrap_or_else(|| proto.to_string())
}

/// First official name per protocol number, as getprotobynumber returns it.
pub fn parse_protocols(text: &str) -> Vec<Option<String>> {
    let mut t = vec![None; 256];
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut f = line.split_whitespace();
        let (Some(name), Some(num)) = (f.next(), f.next()) else {
            continue;
        };
        if let Ok(n) = num.parse::<u8>()
            && t[n as usize].is_none()
        {
            t[n as usize] = Some(name.to_owned());
        }
    }
    t
}

const FALLBACK_PROTOCOLS: &[(u8, &str)] = &[
    (1, "icmp"),
    (2, "igmp"),
    (6, "tcp"),
    (17, "udp"),
    (33, "dccp"),
    (47, "gre"),
    (58, "ipv6-icmp"),
    (132, "sctp"),
    (136, "udplite"),
];

/// ICMP type/code names the ipset tool prints (every other pair prints as `type/code`).
const ICMP_NAMES: &[(u8, u8, &str)] = &[
    (0, 0, "echo-reply"),
    (3, 0, "network-unreachable"),
    (3, 1, "host-unreachable"),
    (3, 2, "protocol-unreachable"),
    (3, 3, "port-unreachable"),
    (3, 4, "fragmentation-needed"),
    (3, 5, "source-route-failed"),
    (3, 6, "network-unknown"),
    (3, 7, "host-unknown"),
    (3, 9, "network-prohibited"),
    (3, 10, "host-prohibited"),
    (3, 11, "TOS-network-unreachable"),
    (3, 12, "TOS-host-unreachable"),
    (3, 13, "communication-prohibited"),
    (3, 14, "host-precedence-violation"),
    (3, 15, "precedence-cutoff"),
    (4, 0, "source-quench"),
    (5, 0, "network-redirect"),
    (5, 1, "host-redirect"),
    (5, 2, "TOS-network-redirect"),
    (5, 3, "TOS-host-redirect"),
    (8, 0, "echo-request"),
    (9, 0, "router-advertisement"),
    (10, 0, "router-solicitation"),
    (11, 0, "ttl-zero-during-transit"),
    (11, 1, "ttl-zero-during-reassembly"),
    (12, 0, "ip-header-bad"),
    (12, 1, "required-option-missing"),
    (13, 0, "timestamp-request"),
    (14, 0, "timestamp-reply"),
    (17, 0, "address-mask-request"),
    (18, 0, "address-mask-reply"),
];

/// ICMPv6 type/code names the ipset tool prints.
const ICMPV6_NAMES: &[(u8, u8, &str)] = &[
    (1, 0, "no-route"),
    (1, 1, "communication-prohibited"),
    (1, 3, "address-unreachable"),
    (1, 4, "port-unreachable"),
    (2, 0, "packet-too-big"),
    (3, 0, "ttl-zero-during-transit"),
    (3, 1, "ttl-zero-during-reassembly"),
    (4, 0, "bad-header"),
    (4, 1, "unknown-header-type"),
    (4, 2, "unknown-option"),
    (128, 0, "echo-request"),
    (129, 0, "echo-reply"),
    (133, 0, "router-solicitation"),
    (134, 0, "router-advertisement"),
    (135, 0, "neighbour-solicitation"),
    (136, 0, "neighbour-advertisement"),
    (137, 0, "redirect"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_netlink::ipset::{IPPROTO_TCP, IPPROTO_UDP, NFPROTO_IPV4};

    fn hdr(name: &str, t: &str) -> SetHeader {
        SetHeader {
            name: name.into(),
            type_name: t.into(),
            revision: 5,
            family: NFPROTO_IPV4,
            hashsize: Some(1024),
            maxelem: Some(65536),
            bucketsize: Some(12),
            initval: Some(0x0abc),
            memsize: Some(356),
            references: Some(0),
            elements: Some(2),
            cadt_flags: 0x10,
            ..Default::default()
        }
    }

    #[test]
    fn list_and_save_text() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let set = IpSet {
            header: hdr("a", "hash:ip"),
            members: vec![
                Member::with_comment(Entry::Ip(a), "hello world"),
                Member::from(Entry::Ip("10.0.0.2".parse().unwrap())),
            ],
            undecoded: vec![],
        };
        let mut empty = IpSet {
            header: SetHeader {
                name: "g".into(),
                type_name: "bitmap:port".into(),
                revision: 3,
                family: 0,
                port_range: Some((1000, 2000)),
                memsize: Some(200),
                references: Some(1),
                elements: Some(0),
                ..Default::default()
            },
            ..Default::default()
        };
        empty.header.timeout = Some(300);
        let sets = [set, empty];
        assert_eq!(
            list(&sets),
            "Name: a\nType: hash:ip\nRevision: 5\n\
             Header: family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0x00000abc\n\
             Size in memory: 356\nReferences: 0\nNumber of entries: 2\nMembers:\n\
             10.0.0.1 comment \"hello world\"\n10.0.0.2\n\
             \nName: g\nType: bitmap:port\nRevision: 3\nHeader: range 1000-2000 timeout 300\n\
             Size in memory: 200\nReferences: 1\nNumber of entries: 0\nMembers:\n"
        );
        assert_eq!(
            save(&sets),
            "create a hash:ip family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0x00000abc\n\
             add a 10.0.0.1 comment \"hello world\"\nadd a 10.0.0.2\n\
             create g bitmap:port range 1000-2000 timeout 300\n"
        );
        assert!(list_headers(&sets).contains("Number of entries: 0\n"));
    }

    #[test]
    fn elements() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let cases = [
            (Entry::tcp(a, 80), false, "10.0.0.1,tcp:80"),
            (Entry::udp(a, 53), false, "10.0.0.1,udp:53"),
            (
                Entry::IpPort {
                    ip: a,
                    proto: IPPROTO_ICMP,
                    port: 8 << 8,
                },
                false,
                "10.0.0.1,icmp:echo-request",
            ),
            (
                Entry::IpPort {
                    ip: a,
                    proto: IPPROTO_ICMP,
                    port: 0xffff,
                },
                false,
                "10.0.0.1,icmp:255/255",
            ),
            (
                Entry::IpPort {
                    ip: v6,
                    proto: IPPROTO_ICMPV6,
                    port: (1 << 8) | 4,
                },
                true,
                "fd00::1,ipv6-icmp:port-unreachable",
            ),
            (
                Entry::IpPortIp {
                    ip: v6,
                    proto: IPPROTO_TCP,
                    port: 80,
                    ip2: v6,
                },
                true,
                "fd00::1,tcp:80,fd00::1",
            ),
            (
                Entry::IpPortNet {
                    ip: a,
                    proto: IPPROTO_UDP,
                    port: 1,
                    net: (a, 32),
                },
                false,
                "10.0.0.1,udp:1,10.0.0.1",
            ),
            (
                Entry::Net("10.0.0.0".parse().unwrap(), 8),
                false,
                "10.0.0.0/8",
            ),
            (Entry::Net(v6, 128), true, "fd00::1"),
            (Entry::Port(80), false, "80"),
        ];
        for (e, inet6, want) in cases {
            assert_eq!(element(&e, inet6), want);
        }
        let mut m = Member::from(Entry::Net("10.0.0.0".parse().unwrap(), 8));
        m.timeout = Some(48);
        m.nomatch = true;
        m.packets = Some(3);
        m.bytes = Some(4);
        m.comment = Some("x y".into());
        m.skbmark = Some((1, 0xff));
        m.skbqueue = Some(3);
        assert_eq!(
            member(&hdr("x", "hash:net"), &m),
            "10.0.0.0/8 timeout 48 nomatch packets 3 bytes 4 comment \"x y\" skbmark 0x1/0xff skbqueue 3"
        );
        m.skbmark = Some((5, u32::MAX));
        assert!(member(&hdr("x", "hash:net"), &m).contains("skbmark 0x5 "));
    }

    #[test]
    fn protocols_file() {
        let t = parse_protocols("# c\nip 0 IP\ntcp\t6\tTCP # x\nbad\nfoo 999\n");
        assert_eq!(t[0].as_deref(), Some("ip"));
        assert_eq!(t[6].as_deref(), Some("tcp"));
        assert_eq!(t[7], None);
        assert_eq!(proto_name(255), "255");
    }
}
