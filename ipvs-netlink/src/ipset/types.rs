//! Typed ipset model: set types and options, entries, and sets as the kernel lists them.

use std::fmt;
use std::net::IpAddr;

use super::message::{
    IPSET_FLAG_NOMATCH, IPSET_FLAG_WITH_COMMENT, IPSET_FLAG_WITH_COUNTERS, IPSET_FLAG_WITH_SKBINFO,
};
use super::nla::{AdtAttr, CmdAttr, CreateAttr, IpNest};

/// `NFPROTO_UNSPEC`, the family of bitmap:port.
pub const NFPROTO_UNSPEC: u8 = 0;
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// Address family of a set (`family inet` / `family inet6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Family {
    #[default]
    Inet,
    Inet6,
}

impl Family {
    /// The NFPROTO_* value.
    pub fn nfproto(self) -> u8 {
        match self {
            Family::Inet => NFPROTO_IPV4,
            Family::Inet6 => NFPROTO_IPV6,
        }
    }

    pub fn from_nfproto(v: u8) -> Option<Self> {
        match v {
            NFPROTO_IPV4 => Some(Family::Inet),
            NFPROTO_IPV6 => Some(Family::Inet6),
            _ => None,
        }
    }

    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::Inet,
            IpAddr::V6(_) => Family::Inet6,
        }
    }

    /// Longest prefix of the family (32 or 128).
    pub fn max_prefix(self) -> u8 {
        match self {
            Family::Inet => 32,
            Family::Inet6 => 128,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        }
    }
}

/// The set types this crate creates and decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetType {
    HashIp,
    HashIpPort,
    HashIpPortIp,
    HashIpPortNet,
    HashNet,
    BitmapPort,
}

impl SetType {
    pub const ALL: [SetType; 6] = [
        SetType::HashIp,
        SetType::HashIpPort,
        SetType::HashIpPortIp,
        SetType::HashIpPortNet,
        SetType::HashNet,
        SetType::BitmapPort,
    ];

    /// The kernel's type name.
    pub fn name(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
            SetType::HashIpPortNet => "hash:ip,port,net",
            SetType::HashNet => "hash:net",
            SetType::BitmapPort => "bitmap:port",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn is_hash(self) -> bool {
        !matches!(self, SetType::BitmapPort)
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to create: type and options (`ipset create NAME TYPE [options]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    pub set_type: SetType,
    /// Ignored by bitmap:port, which has no family.
    pub family: Family,
    pub hashsize: Option<u32>,
    pub maxelem: Option<u32>,
    /// bitmap:port only (required there): first and last port.
    pub port_range: Option<(u16, u16)>,
    /// Default entry timeout (seconds): enables the timeout extension.
    pub timeout: Option<u32>,
    /// The comment extension.
    pub comment: bool,
    /// The packet/byte counters extension.
    pub counters: bool,
    /// Force a revision instead of the kernel's newest for this type.
    pub revision: Option<u8>,
}

impl SetSpec {
    pub fn new(set_type: SetType) -> Self {
        SetSpec {
            set_type,
            family: Family::Inet,
            hashsize: None,
            maxelem: None,
            port_range: None,
            timeout: None,
            comment: false,
            counters: false,
            revision: None,
        }
    }

    pub fn hash(set_type: SetType, family: Family) -> Self {
        SetSpec {
            family,
            ..Self::new(set_type)
        }
    }

    pub fn bitmap_port(from: u16, to: u16) -> Self {
        SetSpec {
            port_range: Some((from, to)),
            ..Self::new(SetType::BitmapPort)
        }
    }

    pub fn with_comment(mut self) -> Self {
        self.comment = true;
        self
    }

    /// The FAMILY attribute: bitmap:port is registered as NFPROTO_UNSPEC.
    pub fn nfproto(&self) -> u8 {
        if self.set_type.is_hash() {
            self.family.nfproto()
        } else {
            NFPROTO_UNSPEC
        }
    }

    /// The create DATA nest.
    pub fn data_attrs(&self) -> Vec<CreateAttr> {
        let mut v = Vec::new();
        if let Some((from, to)) = self.port_range {
            v.push(CreateAttr::Port(from));
            v.push(CreateAttr::PortTo(to));
        }
        if let Some(h) = self.hashsize {
            v.push(CreateAttr::HashSize(h));
        }
        if let Some(m) = self.maxelem {
            v.push(CreateAttr::MaxElem(m));
        }
        if let Some(t) = self.timeout {
            v.push(CreateAttr::Timeout(t));
        }
        let mut flags = 0;
        if self.counters {
            flags |= IPSET_FLAG_WITH_COUNTERS;
        }
        if self.comment {
            flags |= IPSET_FLAG_WITH_COMMENT;
        }
        if flags != 0 {
            v.push(CreateAttr::CadtFlags(flags));
        }
        v
    }
}

/// One set element, typed by the set type it belongs to.
///
/// `proto`/`port` of the `IpPort*` kinds are the L4 protocol number and port;
/// for ICMP/ICMPv6 the "port" is `type << 8 | code`, as the kernel keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// hash:ip
    Ip(IpAddr),
    /// hash:ip,port
    IpPort { ip: IpAddr, proto: u8, port: u16 },
    /// hash:ip,port,ip
    IpPortIp {
        ip: IpAddr,
        proto: u8,
        port: u16,
        ip2: IpAddr,
    },
    /// hash:ip,port,net
    IpPortNet {
        ip: IpAddr,
        proto: u8,
        port: u16,
        net: (IpAddr, u8),
    },
    /// hash:net
    Net(IpAddr, u8),
    /// bitmap:port
    Port(u16),
}

impl Entry {
    pub fn tcp(ip: IpAddr, port: u16) -> Self {
        Entry::IpPort {
            ip,
            proto: IPPROTO_TCP,
            port,
        }
    }

    pub fn udp(ip: IpAddr, port: u16) -> Self {
        Entry::IpPort {
            ip,
            proto: IPPROTO_UDP,
            port,
        }
    }

    /// The set type this entry belongs to.
    pub fn set_type(&self) -> SetType {
        match self {
            Entry::Ip(_) => SetType::HashIp,
            Entry::IpPort { .. } => SetType::HashIpPort,
            Entry::IpPortIp { .. } => SetType::HashIpPortIp,
            Entry::IpPortNet { .. } => SetType::HashIpPortNet,
            Entry::Net(..) => SetType::HashNet,
            Entry::Port(_) => SetType::BitmapPort,
        }
    }

    /// The address family, `None` for bitmap:port entries.
    pub fn family(&self) -> Option<Family> {
        match self {
            Entry::Ip(a)
            | Entry::IpPort { ip: a, .. }
            | Entry::IpPortIp { ip: a, .. }
            | Entry::IpPortNet { ip: a, .. }
            | Entry::Net(a, _) => Some(Family::of(a)),
            Entry::Port(_) => None,
        }
    }

    /// The entry DATA attributes, in the order the ipset tool sends them.
    pub fn attrs(&self) -> Vec<AdtAttr> {
        let ip = |a: &IpAddr| AdtAttr::Ip(IpNest::request(*a));
        match self {
            Entry::Ip(a) => vec![ip(a)],
            Entry::IpPort { ip: a, proto, port } => {
                vec![ip(a), AdtAttr::Port(*port), AdtAttr::Proto(*proto)]
            }
            Entry::IpPortIp {
                ip: a,
                proto,
                port,
                ip2,
            } => vec![
                ip(a),
                AdtAttr::Port(*port),
                AdtAttr::Proto(*proto),
                AdtAttr::Ip2(IpNest::request(*ip2)),
            ],
            Entry::IpPortNet {
                ip: a,
                proto,
                port,
                net,
            } => vec![
                ip(a),
                AdtAttr::Port(*port),
                AdtAttr::Proto(*proto),
                AdtAttr::Ip2(IpNest::request(net.0)),
                AdtAttr::Cidr2(net.1),
            ],
            Entry::Net(a, cidr) => vec![ip(a), AdtAttr::Cidr(*cidr)],
            Entry::Port(p) => vec![AdtAttr::Port(*p)],
        }
    }

    /// Decodes an entry of `set_type` from its DATA attributes (extensions ignored).
    pub fn from_attrs(set_type: SetType, attrs: &[AdtAttr]) -> Result<Self, String> {
        let (mut ip, mut ip2, mut cidr, mut cidr2, mut port, mut proto) =
            (None, None, None, None, None, None);
        for a in attrs {
            match a {
                AdtAttr::Ip(n) => ip = Some(n.addr),
                AdtAttr::Ip2(n) => ip2 = Some(n.addr),
                AdtAttr::Cidr(c) => cidr = Some(*c),
                AdtAttr::Cidr2(c) => cidr2 = Some(*c),
                AdtAttr::Port(p) => port = Some(*p),
                AdtAttr::Proto(p) => proto = Some(*p),
                _ => {}
            }
        }
        let missing = |what: &str| format!("{set_type} entry without {what}");
        Ok(match set_type {
            SetType::HashIp => Entry::Ip(ip.ok_or_else(|| missing("IP"))?),
            SetType::HashIpPort => Entry::IpPort {
                ip: ip.ok_or_else(|| missing("IP"))?,
                proto: proto.ok_or_else(|| missing("PROTO"))?,
                port: port.ok_or_else(|| missing("PORT"))?,
            },
            SetType::HashIpPortIp => Entry::IpPortIp {
                ip: ip.ok_or_else(|| missing("IP"))?,
                proto: proto.ok_or_else(|| missing("PROTO"))?,
                port: port.ok_or_else(|| missing("PORT"))?,
                ip2: ip2.ok_or_else(|| missing("IP2"))?,
            },
            SetType::HashIpPortNet => {
                let net = ip2.ok_or_else(|| missing("IP2"))?;
                let c = cidr2.unwrap_or(Family::of(&net).max_prefix());
                Entry::IpPortNet {
                    ip: ip.ok_or_else(|| missing("IP"))?,
                    proto: proto.ok_or_else(|| missing("PROTO"))?,
                    port: port.ok_or_else(|| missing("PORT"))?,
                    net: (net, c),
                }
            }
            SetType::HashNet => {
                let a = ip.ok_or_else(|| missing("IP"))?;
                Entry::Net(a, cidr.unwrap_or(Family::of(&a).max_prefix()))
            }
            SetType::BitmapPort => Entry::Port(port.ok_or_else(|| missing("PORT"))?),
        })
    }
}

/// An entry with its extensions, as added or listed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    pub entry: Entry,
    /// Needs a set created with the comment extension.
    pub comment: Option<String>,
    /// Seconds left (listing) or to live (adding); needs the timeout extension.
    pub timeout: Option<u32>,
    /// hash:net `nomatch`.
    pub nomatch: bool,
    pub packets: Option<u64>,
    pub bytes: Option<u64>,
    /// (mark, mask)
    pub skbmark: Option<(u32, u32)>,
    /// (major, minor)
    pub skbprio: Option<(u16, u16)>,
    pub skbqueue: Option<u16>,
}

impl From<Entry> for Member {
    fn from(entry: Entry) -> Self {
        Member {
            entry,
            comment: None,
            timeout: None,
            nomatch: false,
            packets: None,
            bytes: None,
            skbmark: None,
            skbprio: None,
            skbqueue: None,
        }
    }
}

impl Member {
    pub fn with_comment(entry: Entry, comment: impl Into<String>) -> Self {
        Member {
            comment: Some(comment.into()),
            ..Member::from(entry)
        }
    }

    /// The DATA attributes to add this member.
    pub fn attrs(&self) -> Vec<AdtAttr> {
        let mut v = self.entry.attrs();
        if let Some(t) = self.timeout {
            v.push(AdtAttr::Timeout(t));
        }
        if self.nomatch {
            v.push(AdtAttr::CadtFlags(IPSET_FLAG_NOMATCH));
        }
        if let Some(p) = self.packets {
            v.push(AdtAttr::Packets(p));
        }
        if let Some(b) = self.bytes {
            v.push(AdtAttr::Bytes(b));
        }
        if let Some(c) = &self.comment {
            v.push(AdtAttr::Comment(c.clone()));
        }
        if let Some((m, k)) = self.skbmark {
            v.push(AdtAttr::SkbMark(((m as u64) << 32) | k as u64));
        }
        if let Some((a, b)) = self.skbprio {
            v.push(AdtAttr::SkbPrio(((a as u32) << 16) | b as u32));
        }
        if let Some(q) = self.skbqueue {
            v.push(AdtAttr::SkbQueue(q));
        }
        v
    }

    pub fn from_attrs(set_type: SetType, attrs: &[AdtAttr]) -> Result<Self, String> {
        let mut m = Member::from(Entry::from_attrs(set_type, attrs)?);
        for a in attrs {
            match a {
                AdtAttr::Timeout(t) => m.timeout = Some(*t),
                AdtAttr::CadtFlags(f) => m.nomatch = f & IPSET_FLAG_NOMATCH != 0,
                AdtAttr::Packets(p) => m.packets = Some(*p),
                AdtAttr::Bytes(b) => m.bytes = Some(*b),
                AdtAttr::Comment(c) => m.comment = Some(c.clone()),
                AdtAttr::SkbMark(v) => m.skbmark = Some(((v >> 32) as u32, *v as u32)),
                AdtAttr::SkbPrio(v) => m.skbprio = Some(((v >> 16) as u16, *v as u16)),
                AdtAttr::SkbQueue(q) => m.skbqueue = Some(*q),
                _ => {}
            }
        }
        Ok(m)
    }
}

/// A set's header as the kernel reports it (LIST/SAVE/HEADER).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetHeader {
    pub name: String,
    pub type_name: String,
    pub revision: u8,
    /// NFPROTO_* value.
    pub family: u8,
    pub index: Option<u16>,
    pub hashsize: Option<u32>,
    pub maxelem: Option<u32>,
    pub netmask: Option<u8>,
    pub markmask: Option<u32>,
    pub timeout: Option<u32>,
    pub cadt_flags: u32,
    pub bucketsize: Option<u8>,
    pub initval: Option<u32>,
    pub port_range: Option<(u16, u16)>,
    pub ip_range: Option<(IpAddr, IpAddr)>,
    pub cidr: Option<u8>,
    pub size: Option<u32>,
    /// Number of entries.
    pub elements: Option<u32>,
    /// Kernel users of the set (iptables `-m set` rules, list:set members).
    pub references: Option<u32>,
    /// Bytes of kernel memory used.
    pub memsize: Option<u32>,
    /// DATA attributes not decoded above.
    pub other: Vec<CreateAttr>,
}

impl SetHeader {
    /// Fills in the fields present in `attrs` (the top-level attributes of a list message).
    pub fn update(&mut self, attrs: &[CmdAttr]) {
        for a in attrs {
            match a {
                CmdAttr::SetName(s) => self.name = s.clone(),
                CmdAttr::TypeName(s) => self.type_name = s.clone(),
                CmdAttr::Revision(r) => self.revision = *r,
                CmdAttr::Family(f) => self.family = *f,
                CmdAttr::Index(i) => self.index = Some(*i),
                CmdAttr::CreateData(d) => self.update_data(d),
                _ => {}
            }
        }
    }

    fn update_data(&mut self, data: &[CreateAttr]) {
        let mut port_from = None;
        let mut port_to = None;
        let mut ip_from = None;
        let mut ip_to = None;
        for a in data {
            match a {
                CreateAttr::HashSize(v) => self.hashsize = Some(*v),
                CreateAttr::MaxElem(v) => self.maxelem = Some(*v),
                CreateAttr::Netmask(v) => self.netmask = Some(*v),
                CreateAttr::Markmask(v) => self.markmask = Some(*v),
                CreateAttr::Timeout(v) => self.timeout = Some(*v),
                CreateAttr::CadtFlags(v) => self.cadt_flags = *v,
                CreateAttr::BucketSize(v) => self.bucketsize = Some(*v),
                CreateAttr::InitVal(v) => self.initval = Some(*v),
                CreateAttr::Port(v) => port_from = Some(*v),
                CreateAttr::PortTo(v) => port_to = Some(*v),
                CreateAttr::Ip(n) => ip_from = Some(n.addr),
                CreateAttr::IpTo(n) => ip_to = Some(n.addr),
                CreateAttr::Cidr(v) => self.cidr = Some(*v),
                CreateAttr::Size(v) => self.size = Some(*v),
                CreateAttr::Elements(v) => self.elements = Some(*v),
                CreateAttr::References(v) => self.references = Some(*v),
                CreateAttr::MemSize(v) => self.memsize = Some(*v),
                other => self.other.push(other.clone()),
            }
        }
        if let (Some(a), Some(b)) = (port_from, port_to) {
            self.port_range = Some((a, b));
        }
        if let (Some(a), Some(b)) = (ip_from, ip_to) {
            self.ip_range = Some((a, b));
        }
    }

    pub fn set_type(&self) -> Option<SetType> {
        SetType::from_name(&self.type_name)
    }

    pub fn has_counters(&self) -> bool {
        self.cadt_flags & IPSET_FLAG_WITH_COUNTERS != 0
    }

    pub fn has_comment(&self) -> bool {
        self.cadt_flags & IPSET_FLAG_WITH_COMMENT != 0
    }

    pub fn has_skbinfo(&self) -> bool {
        self.cadt_flags & IPSET_FLAG_WITH_SKBINFO != 0
    }
}

/// A set and its members, from a LIST dump.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpSet {
    pub header: SetHeader,
    /// Members in the kernel's order.
    pub members: Vec<Member>,
    /// Members of a type this crate does not decode, as attributes.
    pub undecoded: Vec<Vec<AdtAttr>>,
}

impl IpSet {
    pub fn name(&self) -> &str {
        &self.header.name
    }

    /// Adds the members of one ADT nest.
    pub fn push_members(&mut self, adt: &[Vec<AdtAttr>]) {
        let t = self.header.set_type();
        for attrs in adt {
            match t.map(|t| Member::from_attrs(t, attrs)) {
                Some(Ok(m)) => self.members.push(m),
                _ => self.undecoded.push(attrs.clone()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_attrs() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "fd00::2".parse().unwrap();
        let entries = [
            Entry::Ip(a),
            Entry::tcp(a, 80),
            Entry::IpPortIp {
                ip: b,
                proto: IPPROTO_UDP,
                port: 53,
                ip2: b,
            },
            Entry::IpPortNet {
                ip: a,
                proto: IPPROTO_SCTP,
                port: 9,
                net: (a, 16),
            },
            Entry::Net(a, 8),
            Entry::Port(80),
        ];
        for e in entries {
            let back = Entry::from_attrs(e.set_type(), &e.attrs()).unwrap();
            assert_eq!(back, e);
        }
        assert!(Entry::from_attrs(SetType::HashIpPort, &Entry::Ip(a).attrs()).is_err());
        let mut m = Member::with_comment(Entry::Net(a, 8), "x");
        m.timeout = Some(5);
        m.nomatch = true;
        m.packets = Some(1);
        m.bytes = Some(2);
        m.skbmark = Some((1, 0xff));
        m.skbprio = Some((1, 2));
        m.skbqueue = Some(3);
        assert_eq!(Member::from_attrs(SetType::HashNet, &m.attrs()).unwrap(), m);
    }

    #[test]
    fn spec_data() {
        let s = SetSpec::hash(SetType::HashIpPort, Family::Inet).with_comment();
        assert_eq!(s.data_attrs(), vec![CreateAttr::CadtFlags(0x10)]);
        assert_eq!(s.nfproto(), 2);
        let b = SetSpec::bitmap_port(1, 2);
        assert_eq!(
            b.data_attrs(),
            vec![CreateAttr::Port(1), CreateAttr::PortTo(2)]
        );
        assert_eq!(b.nfproto(), 0);
        for t in SetType::ALL {
            assert_eq!(SetType::from_name(t.name()), Some(t));
        }
    }
}
