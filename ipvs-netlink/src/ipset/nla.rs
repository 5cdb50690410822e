//! ipset netlink attributes: one enum per attribute space, each with an `Other` fallback.
//!
//! Numbers follow `include/uapi/linux/netfilter/ipset/ip_set.h`. Numbers 17 and
//! up mean different things in a create/header DATA nest (HASHSIZE, MAXELEM...)
//! and in an entry DATA nest (IP2, CIDR2, COMMENT...), hence two spaces.
//! Multi-byte values travel big-endian with `NLA_F_NET_BYTEORDER`: the kernel
//! refuses them without the flag (`ip_set_attr_netorder`, IPSET_ERR_PROTOCOL).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, NLA_F_NESTED, NLA_F_NET_BYTEORDER, Nla,
    NlaBuffer, NlasIterator, Parseable, ParseableParametrized,
};

// Command-level attributes (IPSET_ATTR_*).
pub const IPSET_ATTR_PROTOCOL: u16 = 1;
pub const IPSET_ATTR_SETNAME: u16 = 2;
/// Also IPSET_ATTR_SETNAME2 (rename/swap).
pub const IPSET_ATTR_TYPENAME: u16 = 3;
pub const IPSET_ATTR_REVISION: u16 = 4;
pub const IPSET_ATTR_FAMILY: u16 = 5;
pub const IPSET_ATTR_FLAGS: u16 = 6;
pub const IPSET_ATTR_DATA: u16 = 7;
pub const IPSET_ATTR_ADT: u16 = 8;
pub const IPSET_ATTR_LINENO: u16 = 9;
/// Also IPSET_ATTR_REVISION_MIN (TYPE reply).
pub const IPSET_ATTR_PROTOCOL_MIN: u16 = 10;
pub const IPSET_ATTR_INDEX: u16 = 11;

// CADT attributes, shared by both DATA spaces.
pub const IPSET_ATTR_IP: u16 = 1;
pub const IPSET_ATTR_IP_TO: u16 = 2;
pub const IPSET_ATTR_CIDR: u16 = 3;
pub const IPSET_ATTR_PORT: u16 = 4;
pub const IPSET_ATTR_PORT_TO: u16 = 5;
pub const IPSET_ATTR_TIMEOUT: u16 = 6;
pub const IPSET_ATTR_PROTO: u16 = 7;
pub const IPSET_ATTR_CADT_FLAGS: u16 = 8;
pub const IPSET_ATTR_CADT_LINENO: u16 = 9;
pub const IPSET_ATTR_MARK: u16 = 10;
pub const IPSET_ATTR_MARKMASK: u16 = 11;

// Create/header-only attributes.
pub const IPSET_ATTR_INITVAL: u16 = 17;
pub const IPSET_ATTR_HASHSIZE: u16 = 18;
pub const IPSET_ATTR_MAXELEM: u16 = 19;
pub const IPSET_ATTR_NETMASK: u16 = 20;
pub const IPSET_ATTR_BUCKETSIZE: u16 = 21;
pub const IPSET_ATTR_RESIZE: u16 = 22;
pub const IPSET_ATTR_SIZE: u16 = 23;
pub const IPSET_ATTR_ELEMENTS: u16 = 24;
pub const IPSET_ATTR_REFERENCES: u16 = 25;
pub const IPSET_ATTR_MEMSIZE: u16 = 26;

// Entry (ADT) attributes.
pub const IPSET_ATTR_ETHER: u16 = 17;
pub const IPSET_ATTR_NAME: u16 = 18;
pub const IPSET_ATTR_NAMEREF: u16 = 19;
pub const IPSET_ATTR_IP2: u16 = 20;
pub const IPSET_ATTR_CIDR2: u16 = 21;
pub const IPSET_ATTR_IP2_TO: u16 = 22;
pub const IPSET_ATTR_IFACE: u16 = 23;
pub const IPSET_ATTR_BYTES: u16 = 24;
pub const IPSET_ATTR_PACKETS: u16 = 25;
pub const IPSET_ATTR_COMMENT: u16 = 26;
pub const IPSET_ATTR_SKBMARK: u16 = 27;
pub const IPSET_ATTR_SKBPRIO: u16 = 28;
pub const IPSET_ATTR_SKBQUEUE: u16 = 29;
pub const IPSET_ATTR_PAD: u16 = 30;

// Inside an IP nest.
pub const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
pub const IPSET_ATTR_IPADDR_IPV6: u16 = 2;

/// An address nest (IP, IP_TO, IP2, IP2_TO).
///
/// The kernel insists on the byte-order flag of the inner address in requests
/// but writes replies without it (`nla_put_in_addr`); `flagged` keeps which
/// form was seen so replies re-emit byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNest {
    pub addr: IpAddr,
    pub flagged: bool,
}

impl IpNest {
    /// The request form (inner attribute flagged).
    pub fn request(addr: IpAddr) -> Self {
        IpNest {
            addr,
            flagged: true,
        }
    }

    fn inner_kind(&self) -> u16 {
        let k = match self.addr {
            IpAddr::V4(_) => IPSET_ATTR_IPADDR_IPV4,
            IpAddr::V6(_) => IPSET_ATTR_IPADDR_IPV6,
        };
        if self.flagged {
            k | NLA_F_NET_BYTEORDER
        } else {
            k
        }
    }

    fn addr_len(&self) -> usize {
        match self.addr {
            IpAddr::V4(_) => 4,
            IpAddr::V6(_) => 16,
        }
    }

    fn value_len(&self) -> usize {
        4 + self.addr_len()
    }

    fn emit(&self, buf: &mut [u8]) {
        let len = self.value_len() as u16;
        buf[0..2].copy_from_slice(&len.to_ne_bytes());
        buf[2..4].copy_from_slice(&self.inner_kind().to_ne_bytes());
        match self.addr {
            IpAddr::V4(a) => buf[4..8].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => buf[4..20].copy_from_slice(&a.octets()),
        }
    }

    fn parse(value: &[u8]) -> Result<Self, DecodeError> {
        // The kernel puts exactly one address in the nest; the first one counts.
        if let Some(nla) = NlasIterator::new(value).next() {
            let nla = nla.context("malformed attribute in IP nest")?;
            let flagged = nla.network_byte_order_flag();
            let v = nla.value();
            let addr = match (nla.kind(), v.len()) {
                (IPSET_ATTR_IPADDR_IPV4, 4) => IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])),
                (IPSET_ATTR_IPADDR_IPV6, 16) => {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(v);
                    IpAddr::V6(Ipv6Addr::from(b))
                }
                (k, n) => {
                    return Err(DecodeError::from(format!(
                        "IP nest holds attribute {k} of {n} bytes"
                    )));
                }
            };
            return Ok(IpNest { addr, flagged });
        }
        Err(DecodeError::from("empty IP nest"))
    }
}

fn u8_of(v: &[u8], what: &str) -> Result<u8, DecodeError> {
    match v {
        [b] => Ok(*b),
        _ => Err(DecodeError::from(format!(
            "{what}: {} bytes, expected 1",
            v.len()
        ))),
    }
}

fn be16_of(v: &[u8], what: &str) -> Result<u16, DecodeError> {
    <[u8; 2]>::try_from(v)
        .map(u16::from_be_bytes)
        .map_err(|_| DecodeError::from(format!("{what}: {} bytes, expected 2", v.len())))
}

fn be32_of(v: &[u8], what: &str) -> Result<u32, DecodeError> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| DecodeError::from(format!("{what}: {} bytes, expected 4", v.len())))
}

fn be64_of(v: &[u8], what: &str) -> Result<u64, DecodeError> {
    <[u8; 8]>::try_from(v)
        .map(u64::from_be_bytes)
        .map_err(|_| DecodeError::from(format!("{what}: {} bytes, expected 8", v.len())))
}

/// NUL-terminated on the wire; a missing terminator is tolerated.
fn str_of(v: &[u8], what: &str) -> Result<String, DecodeError> {
    let v = match v.iter().position(|&b| b == 0) {
        Some(i) => &v[..i],
        None => v,
    };
    String::from_utf8(v.to_vec()).map_err(|e| DecodeError::from(format!("{what}: {e}")))
}

fn emit_str(buf: &mut [u8], s: &str) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

/// Parses every attribute of `value` with `f`, naming the nest on error.
pub fn parse_all<T>(
    value: &[u8],
    what: &str,
    mut f: impl FnMut(&NlaBuffer<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    let mut out = Vec::new();
    for nla in NlasIterator::new(value) {
        let nla = nla.with_context(|| format!("malformed attribute in {what}"))?;
        out.push(f(&nla).with_context(|| format!("in {what}"))?);
    }
    Ok(out)
}

/// Attributes of a create, header or list DATA nest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateAttr {
    /// Start of a bitmap range (bitmap:port: PORT).
    Port(u16),
    PortTo(u16),
    /// Start and end of a bitmap:ip range.
    Ip(IpNest),
    IpTo(IpNest),
    Cidr(u8),
    /// Default entry timeout, seconds (timeout extension).
    Timeout(u32),
    Proto(u8),
    /// IPSET_FLAG_WITH_COUNTERS / WITH_COMMENT / WITH_SKBINFO / WITH_FORCEADD.
    CadtFlags(u32),
    Markmask(u32),
    InitVal(u32),
    HashSize(u32),
    MaxElem(u32),
    Netmask(u8),
    BucketSize(u8),
    Resize(u8),
    /// list:set size.
    Size(u32),
    /// Kernel-only: number of entries.
    Elements(u32),
    /// Kernel-only: how many kernel components (iptables rules, list:sets) use the set.
    References(u32),
    /// Kernel-only: memory used by the set.
    MemSize(u32),
    Other(DefaultNla),
}

impl Nla for CreateAttr {
    fn value_len(&self) -> usize {
        use CreateAttr::*;
        match self {
            Port(_) | PortTo(_) => 2,
            Ip(n) | IpTo(n) => n.value_len(),
            Cidr(_) | Proto(_) | Netmask(_) | BucketSize(_) | Resize(_) => 1,
            Timeout(_) | CadtFlags(_) | Markmask(_) | InitVal(_) | HashSize(_) | MaxElem(_)
            | Size(_) | Elements(_) | References(_) | MemSize(_) => 4,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use CreateAttr::*;
        let nbo = NLA_F_NET_BYTEORDER;
        match self {
            Port(_) => IPSET_ATTR_PORT | nbo,
            PortTo(_) => IPSET_ATTR_PORT_TO | nbo,
            Ip(_) => IPSET_ATTR_IP | NLA_F_NESTED,
            IpTo(_) => IPSET_ATTR_IP_TO | NLA_F_NESTED,
            Cidr(_) => IPSET_ATTR_CIDR,
            Timeout(_) => IPSET_ATTR_TIMEOUT | nbo,
            Proto(_) => IPSET_ATTR_PROTO,
            CadtFlags(_) => IPSET_ATTR_CADT_FLAGS | nbo,
            Markmask(_) => IPSET_ATTR_MARKMASK | nbo,
            InitVal(_) => IPSET_ATTR_INITVAL | nbo,
            HashSize(_) => IPSET_ATTR_HASHSIZE | nbo,
            MaxElem(_) => IPSET_ATTR_MAXELEM | nbo,
            Netmask(_) => IPSET_ATTR_NETMASK,
            BucketSize(_) => IPSET_ATTR_BUCKETSIZE,
            Resize(_) => IPSET_ATTR_RESIZE,
            Size(_) => IPSET_ATTR_SIZE | nbo,
            Elements(_) => IPSET_ATTR_ELEMENTS | nbo,
            References(_) => IPSET_ATTR_REFERENCES | nbo,
            MemSize(_) => IPSET_ATTR_MEMSIZE | nbo,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use CreateAttr::*;
        match self {
            Port(v) | PortTo(v) => buf[..2].copy_from_slice(&v.to_be_bytes()),
            Ip(n) | IpTo(n) => n.emit(buf),
            Cidr(v) | Proto(v) | Netmask(v) | BucketSize(v) | Resize(v) => buf[0] = *v,
            Timeout(v) | CadtFlags(v) | Markmask(v) | InitVal(v) | HashSize(v) | MaxElem(v)
            | Size(v) | Elements(v) | References(v) | MemSize(v) => {
                buf[..4].copy_from_slice(&v.to_be_bytes())
            }
            Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for CreateAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use CreateAttr::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPSET_ATTR_PORT => Port(be16_of(v, "PORT")?),
            IPSET_ATTR_PORT_TO => PortTo(be16_of(v, "PORT_TO")?),
            IPSET_ATTR_IP => Ip(IpNest::parse(v).context("IP")?),
            IPSET_ATTR_IP_TO => IpTo(IpNest::parse(v).context("IP_TO")?),
            IPSET_ATTR_CIDR => Cidr(u8_of(v, "CIDR")?),
            IPSET_ATTR_TIMEOUT => Timeout(be32_of(v, "TIMEOUT")?),
            IPSET_ATTR_PROTO => Proto(u8_of(v, "PROTO")?),
            IPSET_ATTR_CADT_FLAGS => CadtFlags(be32_of(v, "CADT_FLAGS")?),
            IPSET_ATTR_MARKMASK => Markmask(be32_of(v, "MARKMASK")?),
            IPSET_ATTR_INITVAL => InitVal(be32_of(v, "INITVAL")?),
            IPSET_ATTR_HASHSIZE => HashSize(be32_of(v, "HASHSIZE")?),
            IPSET_ATTR_MAXELEM => MaxElem(be32_of(v, "MAXELEM")?),
            IPSET_ATTR_NETMASK => Netmask(u8_of(v, "NETMASK")?),
            IPSET_ATTR_BUCKETSIZE => BucketSize(u8_of(v, "BUCKETSIZE")?),
            IPSET_ATTR_RESIZE => Resize(u8_of(v, "RESIZE")?),
            IPSET_ATTR_SIZE => Size(be32_of(v, "SIZE")?),
            IPSET_ATTR_ELEMENTS => Elements(be32_of(v, "ELEMENTS")?),
            IPSET_ATTR_REFERENCES => References(be32_of(v, "REFERENCES")?),
            IPSET_ATTR_MEMSIZE => MemSize(be32_of(v, "MEMSIZE")?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Attributes of an entry DATA nest (add/del/test, and list members).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdtAttr {
    Ip(IpNest),
    IpTo(IpNest),
    Cidr(u8),
    Port(u16),
    PortTo(u16),
    Timeout(u32),
    Proto(u8),
    /// IPSET_FLAG_NOMATCH and friends.
    CadtFlags(u32),
    /// Restore line number, echoed by the kernel in errors.
    LineNo(u32),
    Mark(u32),
    Ether([u8; 6]),
    /// list:set member / reference names.
    Name(String),
    NameRef(String),
    Ip2(IpNest),
    Cidr2(u8),
    Ip2To(IpNest),
    Iface(String),
    Bytes(u64),
    Packets(u64),
    Comment(String),
    /// `mark << 32 | mask`.
    SkbMark(u64),
    /// `major << 16 | minor`.
    SkbPrio(u32),
    SkbQueue(u16),
    Other(DefaultNla),
}

impl Nla for AdtAttr {
    fn value_len(&self) -> usize {
        use AdtAttr::*;
        match self {
            Ip(n) | IpTo(n) | Ip2(n) | Ip2To(n) => n.value_len(),
            Cidr(_) | Proto(_) | Cidr2(_) => 1,
            Port(_) | PortTo(_) | SkbQueue(_) => 2,
            Timeout(_) | CadtFlags(_) | LineNo(_) | Mark(_) | SkbPrio(_) => 4,
            Ether(_) => 6,
            Bytes(_) | Packets(_) | SkbMark(_) => 8,
            Name(s) | NameRef(s) | Iface(s) | Comment(s) => s.len() + 1,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use AdtAttr::*;
        let nbo = NLA_F_NET_BYTEORDER;
        match self {
            Ip(_) => IPSET_ATTR_IP | NLA_F_NESTED,
            IpTo(_) => IPSET_ATTR_IP_TO | NLA_F_NESTED,
            Cidr(_) => IPSET_ATTR_CIDR,
            Port(_) => IPSET_ATTR_PORT | nbo,
            PortTo(_) => IPSET_ATTR_PORT_TO | nbo,
            Timeout(_) => IPSET_ATTR_TIMEOUT | nbo,
            Proto(_) => IPSET_ATTR_PROTO,
            CadtFlags(_) => IPSET_ATTR_CADT_FLAGS | nbo,
            LineNo(_) => IPSET_ATTR_CADT_LINENO | nbo,
            Mark(_) => IPSET_ATTR_MARK | nbo,
            Ether(_) => IPSET_ATTR_ETHER,
            Name(_) => IPSET_ATTR_NAME,
            NameRef(_) => IPSET_ATTR_NAMEREF,
            Ip2(_) => IPSET_ATTR_IP2 | NLA_F_NESTED,
            Cidr2(_) => IPSET_ATTR_CIDR2,
            Ip2To(_) => IPSET_ATTR_IP2_TO | NLA_F_NESTED,
            Iface(_) => IPSET_ATTR_IFACE,
            Bytes(_) => IPSET_ATTR_BYTES | nbo,
            Packets(_) => IPSET_ATTR_PACKETS | nbo,
            Comment(_) => IPSET_ATTR_COMMENT,
            SkbMark(_) => IPSET_ATTR_SKBMARK | nbo,
            SkbPrio(_) => IPSET_ATTR_SKBPRIO | nbo,
            SkbQueue(_) => IPSET_ATTR_SKBQUEUE | nbo,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use AdtAttr::*;
        match self {
            Ip(n) | IpTo(n) | Ip2(n) | Ip2To(n) => n.emit(buf),
            Cidr(v) | Proto(v) | Cidr2(v) => buf[0] = *v,
            Port(v) | PortTo(v) | SkbQueue(v) => buf[..2].copy_from_slice(&v.to_be_bytes()),
            Timeout(v) | CadtFlags(v) | LineNo(v) | Mark(v) | SkbPrio(v) => {
                buf[..4].copy_from_slice(&v.to_be_bytes())
            }
            Ether(m) => buf[..6].copy_from_slice(m),
            Bytes(v) | Packets(v) | SkbMark(v) => buf[..8].copy_from_slice(&v.to_be_bytes()),
            Name(s) | NameRef(s) | Iface(s) | Comment(s) => emit_str(buf, s),
            Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for AdtAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        use AdtAttr::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPSET_ATTR_IP => Ip(IpNest::parse(v).context("IP")?),
            IPSET_ATTR_IP_TO => IpTo(IpNest::parse(v).context("IP_TO")?),
            IPSET_ATTR_CIDR => Cidr(u8_of(v, "CIDR")?),
            IPSET_ATTR_PORT => Port(be16_of(v, "PORT")?),
            IPSET_ATTR_PORT_TO => PortTo(be16_of(v, "PORT_TO")?),
            IPSET_ATTR_TIMEOUT => Timeout(be32_of(v, "TIMEOUT")?),
            IPSET_ATTR_PROTO => Proto(u8_of(v, "PROTO")?),
            IPSET_ATTR_CADT_FLAGS => CadtFlags(be32_of(v, "CADT_FLAGS")?),
            IPSET_ATTR_CADT_LINENO => LineNo(be32_of(v, "LINENO")?),
            IPSET_ATTR_MARK => Mark(be32_of(v, "MARK")?),
            IPSET_ATTR_ETHER => Ether(
                <[u8; 6]>::try_from(v)
                    .map_err(|_| DecodeError::from(format!("ETHER: {} bytes", v.len())))?,
            ),
            IPSET_ATTR_NAME => Name(str_of(v, "NAME")?),
            IPSET_ATTR_NAMEREF => NameRef(str_of(v, "NAMEREF")?),
            IPSET_ATTR_IP2 => Ip2(IpNest::parse(v).context("IP2")?),
            IPSET_ATTR_CIDR2 => Cidr2(u8_of(v, "CIDR2")?),
            IPSET_ATTR_IP2_TO => Ip2To(IpNest::parse(v).context("IP2_TO")?),
            IPSET_ATTR_IFACE => Iface(str_of(v, "IFACE")?),
            IPSET_ATTR_BYTES => Bytes(be64_of(v, "BYTES")?),
            IPSET_ATTR_PACKETS => Packets(be64_of(v, "PACKETS")?),
            IPSET_ATTR_COMMENT => Comment(str_of(v, "COMMENT")?),
            IPSET_ATTR_SKBMARK => SkbMark(be64_of(v, "SKBMARK")?),
            IPSET_ATTR_SKBPRIO => SkbPrio(be32_of(v, "SKBPRIO")?),
            IPSET_ATTR_SKBQUEUE => SkbQueue(be16_of(v, "SKBQUEUE")?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Which space a DATA nest belongs to; it depends on the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataSpace {
    /// CREATE, and the header part of LIST/SAVE/HEADER replies.
    Create,
    /// ADD/DEL/TEST.
    Adt,
}

/// Command-level attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdAttr {
    Protocol(u8),
    SetName(String),
    /// The type name, or the second set name of RENAME/SWAP (SETNAME2).
    TypeName(String),
    Revision(u8),
    /// NFPROTO_IPV4 (2), NFPROTO_IPV6 (10) or NFPROTO_UNSPEC (0).
    Family(u8),
    /// Command flags (IPSET_FLAG_LIST_SETNAME, ...).
    Flags(u32),
    CreateData(Vec<CreateAttr>),
    AdtData(Vec<AdtAttr>),
    /// Many entries in one message: a list of entry DATA nests.
    Adt(Vec<Vec<AdtAttr>>),
    LineNo(u32),
    /// PROTOCOL_MIN in a PROTOCOL reply, REVISION_MIN in a TYPE reply.
    ProtocolMin(u8),
    /// The kernel's index of the set (list replies).
    Index(u16),
    Other(DefaultNla),
}

/// One DATA nest inside ADT, emitted as an attribute of its own.
struct AdtEntry<'a>(&'a [AdtAttr]);

impl Nla for AdtEntry<'_> {
    fn value_len(&self) -> usize {
        self.0.buffer_len()
    }
    fn kind(&self) -> u16 {
        IPSET_ATTR_DATA | NLA_F_NESTED
    }
    fn emit_value(&self, buf: &mut [u8]) {
        self.0.emit(buf)
    }
}

impl Nla for CmdAttr {
    fn value_len(&self) -> usize {
        use CmdAttr::*;
        match self {
            Protocol(_) | Revision(_) | Family(_) | ProtocolMin(_) => 1,
            SetName(s) | TypeName(s) => s.len() + 1,
            Flags(_) | LineNo(_) => 4,
            Index(_) => 2,
            CreateData(a) => a.as_slice().buffer_len(),
            AdtData(a) => a.as_slice().buffer_len(),
            Adt(entries) => entries.iter().map(|e| AdtEntry(e).buffer_len()).sum(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use CmdAttr::*;
        match self {
            Protocol(_) => IPSET_ATTR_PROTOCOL,
            SetName(_) => IPSET_ATTR_SETNAME,
            TypeName(_) => IPSET_ATTR_TYPENAME,
            Revision(_) => IPSET_ATTR_REVISION,
            Family(_) => IPSET_ATTR_FAMILY,
            Flags(_) => IPSET_ATTR_FLAGS | NLA_F_NET_BYTEORDER,
            CreateData(_) | AdtData(_) => IPSET_ATTR_DATA | NLA_F_NESTED,
            Adt(_) => IPSET_ATTR_ADT | NLA_F_NESTED,
            LineNo(_) => IPSET_ATTR_LINENO | NLA_F_NET_BYTEORDER,
            ProtocolMin(_) => IPSET_ATTR_PROTOCOL_MIN,
            Index(_) => IPSET_ATTR_INDEX | NLA_F_NET_BYTEORDER,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        use CmdAttr::*;
        match self {
            Protocol(v) | Revision(v) | Family(v) | ProtocolMin(v) => buf[0] = *v,
            SetName(s) | TypeName(s) => emit_str(buf, s),
            Flags(v) | LineNo(v) => buf[..4].copy_from_slice(&v.to_be_bytes()),
            Index(v) => buf[..2].copy_from_slice(&v.to_be_bytes()),
            CreateData(a) => a.as_slice().emit(buf),
            AdtData(a) => a.as_slice().emit(buf),
            Adt(entries) => {
                let mut off = 0;
                for e in entries {
                    let e = AdtEntry(e);
                    let n = e.buffer_len();
                    e.emit(&mut buf[off..off + n]);
                    off += n;
                }
            }
            Other(nla) => nla.emit_value(buf),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> ParseableParametrized<NlaBuffer<&'a T>, DataSpace> for CmdAttr {
    fn parse_with_param(buf: &NlaBuffer<&'a T>, space: DataSpace) -> Result<Self, DecodeError> {
        use CmdAttr::*;
        let v = buf.value();
        Ok(match buf.kind() {
            IPSET_ATTR_PROTOCOL => Protocol(u8_of(v, "PROTOCOL")?),
            IPSET_ATTR_SETNAME => SetName(str_of(v, "SETNAME")?),
            IPSET_ATTR_TYPENAME => TypeName(str_of(v, "TYPENAME")?),
            IPSET_ATTR_REVISION => Revision(u8_of(v, "REVISION")?),
            IPSET_ATTR_FAMILY => Family(u8_of(v, "FAMILY")?),
            IPSET_ATTR_FLAGS => Flags(be32_of(v, "FLAGS")?),
            IPSET_ATTR_DATA => match space {
                DataSpace::Create => CreateData(parse_all(v, "DATA", |n| CreateAttr::parse(n))?),
                DataSpace::Adt => AdtData(parse_all(v, "DATA", |n| AdtAttr::parse(n))?),
            },
            IPSET_ATTR_ADT => Adt(parse_all(v, "ADT", |n| {
                if n.kind() != IPSET_ATTR_DATA {
                    return Err(DecodeError::from(format!(
                        "ADT holds attribute {}, expected DATA",
                        n.kind()
                    )));
                }
                parse_all(n.value(), "ADT entry", |e| AdtAttr::parse(e))
            })?),
            IPSET_ATTR_LINENO => LineNo(be32_of(v, "LINENO")?),
            IPSET_ATTR_PROTOCOL_MIN => ProtocolMin(u8_of(v, "PROTOCOL_MIN")?),
            IPSET_ATTR_INDEX => Index(be16_of(v, "INDEX")?),
            _ => Other(DefaultNla::parse(buf)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emits one attribute, checks its type field (flags included) and value
    /// bytes, and parses it back with `parse`.
    fn check<A: Nla + std::fmt::Debug + PartialEq>(
        attr: A,
        type_field: u16,
        value: &[u8],
        parse: impl Fn(&NlaBuffer<&[u8]>) -> Result<A, DecodeError>,
    ) {
        let mut buf = vec![0xaa; attr.buffer_len()];
        attr.emit(&mut buf);
        assert_eq!(
            u16::from_ne_bytes([buf[0], buf[1]]) as usize,
            4 + value.len(),
            "{attr:?}"
        );
        assert_eq!(u16::from_ne_bytes([buf[2], buf[3]]), type_field, "{attr:?}");
        assert_eq!(&buf[4..4 + value.len()], value, "{attr:?}");
        assert!(buf[4 + value.len()..].iter().all(|&b| b == 0), "padding");
        let nla = NlaBuffer::new_checked(&buf[..]).unwrap();
        assert_eq!(parse(&nla).unwrap(), attr);
    }

    const NBO: u16 = NLA_F_NET_BYTEORDER;
    const NEST: u16 = NLA_F_NESTED;

    fn ip4_nest(flag: u16) -> Vec<u8> {
        let mut v = vec![8, 0];
        v.extend((1 | flag).to_ne_bytes());
        v.extend([10, 0, 0, 1]);
        v
    }

    #[test]
    fn ip_nests() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        check(
            AdtAttr::Ip(IpNest::request(a)),
            1 | NEST,
            &ip4_nest(NBO),
            |n| AdtAttr::parse(n),
        );
        let reply = IpNest {
            addr: a,
            flagged: false,
        };
        check(AdtAttr::Ip(reply), 1 | NEST, &ip4_nest(0), |n| {
            AdtAttr::parse(n)
        });
        let v6: Ipv6Addr = "fd00::2".parse().unwrap();
        let mut want = vec![20, 0];
        want.extend((2 | NBO).to_ne_bytes());
        want.extend(v6.octets());
        check(
            AdtAttr::Ip2(IpNest::request(v6.into())),
            20 | NEST,
            &want,
            |n| AdtAttr::parse(n),
        );
        // Wrong address sizes and empty nests are errors, not panics.
        for bad in [
            &[0u8; 0][..],
            &[7, 0, 1, 0, 1, 2, 3, 0],
            &[8, 0, 2, 0, 1, 2, 3, 4],
        ] {
            assert!(IpNest::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn create_attrs() {
        let p = |n: &NlaBuffer<&[u8]>| CreateAttr::parse(n);
        check(CreateAttr::Port(80), 4 | NBO, &[0, 80], p);
        check(CreateAttr::PortTo(1024), 5 | NBO, &[4, 0], p);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        check(
            CreateAttr::Ip(IpNest::request(a)),
            1 | NEST,
            &ip4_nest(NBO),
            p,
        );
        check(
            CreateAttr::IpTo(IpNest::request(a)),
            2 | NEST,
            &ip4_nest(NBO),
            p,
        );
        check(CreateAttr::Cidr(24), 3, &[24], p);
        check(CreateAttr::Timeout(300), 6 | NBO, &300u32.to_be_bytes(), p);
        check(CreateAttr::Proto(6), 7, &[6], p);
        check(CreateAttr::CadtFlags(0x10), 8 | NBO, &[0, 0, 0, 0x10], p);
        check(CreateAttr::Markmask(0xff), 11 | NBO, &[0, 0, 0, 0xff], p);
        check(
            CreateAttr::InitVal(0xdeadbeef),
            17 | NBO,
            &[0xde, 0xad, 0xbe, 0xef],
            p,
        );
        check(
            CreateAttr::HashSize(1024),
            18 | NBO,
            &1024u32.to_be_bytes(),
            p,
        );
        check(
            CreateAttr::MaxElem(65536),
            19 | NBO,
            &65536u32.to_be_bytes(),
            p,
        );
        check(CreateAttr::Netmask(24), 20, &[24], p);
        check(CreateAttr::BucketSize(12), 21, &[12], p);
        check(CreateAttr::Resize(50), 22, &[50], p);
        check(CreateAttr::Size(8), 23 | NBO, &8u32.to_be_bytes(), p);
        check(CreateAttr::Elements(2), 24 | NBO, &2u32.to_be_bytes(), p);
        check(CreateAttr::References(1), 25 | NBO, &1u32.to_be_bytes(), p);
        check(CreateAttr::MemSize(576), 26 | NBO, &576u32.to_be_bytes(), p);
        check(
            CreateAttr::Other(DefaultNla::new(99 | NBO, vec![1, 2])),
            99 | NBO,
            &[1, 2],
            p,
        );
    }

    #[test]
    fn adt_attrs() {
        let p = |n: &NlaBuffer<&[u8]>| AdtAttr::parse(n);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        check(
            AdtAttr::IpTo(IpNest::request(a)),
            2 | NEST,
            &ip4_nest(NBO),
            p,
        );
        check(AdtAttr::Cidr(8), 3, &[8], p);
        check(AdtAttr::Port(443), 4 | NBO, &443u16.to_be_bytes(), p);
        check(AdtAttr::PortTo(444), 5 | NBO, &444u16.to_be_bytes(), p);
        check(AdtAttr::Timeout(5), 6 | NBO, &5u32.to_be_bytes(), p);
        check(AdtAttr::Proto(17), 7, &[17], p);
        check(AdtAttr::CadtFlags(4), 8 | NBO, &4u32.to_be_bytes(), p);
        check(AdtAttr::LineNo(3), 9 | NBO, &3u32.to_be_bytes(), p);
        check(AdtAttr::Mark(7), 10 | NBO, &7u32.to_be_bytes(), p);
        check(
            AdtAttr::Ether([1, 2, 3, 4, 5, 6]),
            17,
            &[1, 2, 3, 4, 5, 6],
            p,
        );
        check(AdtAttr::Name("s".into()), 18, b"s\0", p);
        check(AdtAttr::NameRef("r".into()), 19, b"r\0", p);
        check(
            AdtAttr::Ip2(IpNest::request(a)),
            20 | NEST,
            &ip4_nest(NBO),
            p,
        );
        check(AdtAttr::Cidr2(16), 21, &[16], p);
        check(
            AdtAttr::Ip2To(IpNest::request(a)),
            22 | NEST,
            &ip4_nest(NBO),
            p,
        );
        check(AdtAttr::Iface("eth0".into()), 23, b"eth0\0", p);
        check(AdtAttr::Bytes(4), 24 | NBO, &4u64.to_be_bytes(), p);
        check(AdtAttr::Packets(3), 25 | NBO, &3u64.to_be_bytes(), p);
        check(AdtAttr::Comment("x y".into()), 26, b"x y\0", p);
        check(
            AdtAttr::SkbMark(0x1_0000_00ff),
            27 | NBO,
            &0x1_0000_00ffu64.to_be_bytes(),
            p,
        );
        check(
            AdtAttr::SkbPrio(0x10002),
            28 | NBO,
            &0x10002u32.to_be_bytes(),
            p,
        );
        check(AdtAttr::SkbQueue(3), 29 | NBO, &3u16.to_be_bytes(), p);
        check(AdtAttr::Other(DefaultNla::new(30, vec![])), 30, &[], p);
    }

    #[test]
    fn cmd_attrs() {
        let create = |n: &NlaBuffer<&[u8]>| CmdAttr::parse_with_param(n, DataSpace::Create);
        let adt = |n: &NlaBuffer<&[u8]>| CmdAttr::parse_with_param(n, DataSpace::Adt);
        check(CmdAttr::Protocol(7), 1, &[7], create);
        check(
            CmdAttr::SetName("KUBE-CLUSTER-IP".into()),
            2,
            b"KUBE-CLUSTER-IP\0",
            create,
        );
        check(
            CmdAttr::TypeName("hash:ip,port".into()),
            3,
            b"hash:ip,port\0",
            create,
        );
        check(CmdAttr::Revision(6), 4, &[6], create);
        check(CmdAttr::Family(10), 5, &[10], create);
        check(CmdAttr::Flags(2), 6 | NBO, &2u32.to_be_bytes(), create);
        check(
            CmdAttr::CreateData(vec![CreateAttr::HashSize(64)]),
            7 | NEST,
            &[8, 0, 18, 0x40, 0, 0, 0, 64],
            create,
        );
        check(
            CmdAttr::AdtData(vec![AdtAttr::Cidr2(16)]),
            7 | NEST,
            &[5, 0, 21, 0, 16, 0, 0, 0],
            adt,
        );
        check(
            CmdAttr::Adt(vec![vec![AdtAttr::Proto(6)], vec![]]),
            8 | NEST,
            &[12, 0, 7, 0x80, 5, 0, 7, 0, 6, 0, 0, 0, 4, 0, 7, 0x80],
            create,
        );
        check(CmdAttr::LineNo(2), 9 | NBO, &2u32.to_be_bytes(), create);
        check(CmdAttr::ProtocolMin(6), 10, &[6], create);
        check(CmdAttr::Index(3), 11 | NBO, &[0, 3], create);
        check(
            CmdAttr::Other(DefaultNla::new(12, vec![9])),
            12,
            &[9],
            create,
        );
        // ADT holding something other than DATA is an error.
        let bad = [12u8, 0, 8, 0x80, 8, 0, 1, 0, 1, 0, 0, 0];
        assert!(create(&NlaBuffer::new_checked(&bad[..]).unwrap()).is_err());
    }

    #[test]
    fn short_values_are_errors() {
        for (kind, len) in [(1u16, 2usize), (2, 0), (6, 2), (11, 1), (3, 0)] {
            let mut b = vec![(4 + len) as u8, 0];
            b.extend(kind.to_ne_bytes());
            b.extend(vec![0xff; len]);
            while b.len() % 4 != 0 {
                b.push(0);
            }
            let n = NlaBuffer::new_checked(&b[..]).unwrap();
            let r = CmdAttr::parse_with_param(&n, DataSpace::Create);
            // SETNAME/TYPENAME of zero bytes parse as empty strings.
            assert_eq!(r.is_ok(), kind == 2 || kind == 3, "kind {kind}: {r:?}");
        }
    }
}
