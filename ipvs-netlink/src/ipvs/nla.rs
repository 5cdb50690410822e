//! IPVS netlink attributes: one enum per attribute space, each with an `Other` fallback.
//!
//! Numbers and layouts follow `include/uapi/linux/ip_vs.h` and what
//! `net/netfilter/ipvs/ip_vs_ctl.c` puts into its replies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, ErrorContext, Nla, NlaBuffer, NlasIterator, Parseable,
    parse_u8, parse_u16, parse_u16_be, parse_u32, parse_u64,
};

// Command attributes (IPVS_CMD_ATTR_*).
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub const IPVS_CMD_ATTR_DEST: u16 = 2;
pub const IPVS_CMD_ATTR_DAEMON: u16 = 3;
pub const IPVS_CMD_ATTR_TIMEOUT_TCP: u16 = 4;
pub const IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: u16 = 5;
pub const IPVS_CMD_ATTR_TIMEOUT_UDP: u16 = 6;

// Service attributes (IPVS_SVC_ATTR_*).
pub const IPVS_SVC_ATTR_AF: u16 = 1;
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;
pub const IPVS_SVC_ATTR_STATS: u16 = 10;
pub const IPVS_SVC_ATTR_PE_NAME: u16 = 11;
pub const IPVS_SVC_ATTR_STATS64: u16 = 12;

// Destination attributes (IPVS_DEST_ATTR_*).
pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub const IPVS_DEST_ATTR_ACTIVE_CONNS: u16 = 7;
pub const IPVS_DEST_ATTR_INACT_CONNS: u16 = 8;
pub const IPVS_DEST_ATTR_PERSIST_CONNS: u16 = 9;
pub const IPVS_DEST_ATTR_STATS: u16 = 10;
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub const IPVS_DEST_ATTR_STATS64: u16 = 12;
pub const IPVS_DEST_ATTR_TUN_TYPE: u16 = 13;
pub const IPVS_DEST_ATTR_TUN_PORT: u16 = 14;
pub const IPVS_DEST_ATTR_TUN_FLAGS: u16 = 15;

// Statistics attributes (IPVS_STATS_ATTR_*), shared by STATS and STATS64 nests.
pub const IPVS_STATS_ATTR_CONNS: u16 = 1;
pub const IPVS_STATS_ATTR_INPKTS: u16 = 2;
pub const IPVS_STATS_ATTR_OUTPKTS: u16 = 3;
pub const IPVS_STATS_ATTR_INBYTES: u16 = 4;
pub const IPVS_STATS_ATTR_OUTBYTES: u16 = 5;
pub const IPVS_STATS_ATTR_CPS: u16 = 6;
pub const IPVS_STATS_ATTR_INPPS: u16 = 7;
pub const IPVS_STATS_ATTR_OUTPPS: u16 = 8;
pub const IPVS_STATS_ATTR_INBPS: u16 = 9;
pub const IPVS_STATS_ATTR_OUTBPS: u16 = 10;
pub const IPVS_STATS_ATTR_PAD: u16 = 11;

// GET_INFO reply attributes (IPVS_INFO_ATTR_*): same numbers as SERVICE/DEST,
// so a SET_INFO message is parsed in this space instead.
pub const IPVS_INFO_ATTR_VERSION: u16 = 1;
pub const IPVS_INFO_ATTR_CONN_TAB_SIZE: u16 = 2;

/// An address attribute as sent: 4 bytes (IPv4 request) or 16 (IPv6, or any reply).
///
/// Replies carry the kernel's 16-byte `union nf_inet_addr`, so an IPv4 address
/// is its first 4 bytes; which one it is depends on the address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawAddr {
    len: u8,
    bytes: [u8; 16],
}

impl RawAddr {
    /// The request form: 4 bytes for IPv4, 16 for IPv6.
    pub fn from_ip(ip: IpAddr) -> Self {
        let mut bytes = [0; 16];
        match ip {
            IpAddr::V4(v4) => {
                bytes[..4].copy_from_slice(&v4.octets());
                RawAddr { len: 4, bytes }
            }
            IpAddr::V6(v6) => RawAddr {
                len: 16,
                bytes: v6.octets(),
            },
        }
    }

    /// The reply form: always 16 bytes, IPv4 in the first 4.
    pub fn padded(ip: IpAddr) -> Self {
        RawAddr {
            len: 16,
            ..Self::from_ip(ip)
        }
    }

    pub fn parse(value: &[u8]) -> Result<Self, DecodeError> {
        if value.len() != 4 && value.len() != 16 {
            return Err(DecodeError::invalid_ip_address(value.len()));
        }
        let mut bytes = [0; 16];
        bytes[..value.len()].copy_from_slice(value);
        Ok(RawAddr {
            len: value.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The address of family `inet6` (else IPv4 from the first 4 bytes).
    pub fn to_ip(&self, inet6: bool) -> Result<IpAddr, DecodeError> {
        if inet6 {
            if self.len != 16 {
                return Err(DecodeError::invalid_ip_address(self.len as usize));
            }
            Ok(IpAddr::V6(Ipv6Addr::from(self.bytes)))
        } else {
            let b = &self.bytes;
            Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        }
    }
}

/// `struct ip_vs_flags { u32 flags; u32 mask; }`: the kernel applies
/// `(old & ~mask) | (flags & mask)` on NEW/SET_SERVICE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlagsMask {
    pub flags: u32,
    pub mask: u32,
}

/// A counter: 32 bits in the legacy STATS nest (except bytes), 64 in STATS64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    U32(u32),
    U64(u64),
}

impl Counter {
    pub fn get(self) -> u64 {
        match self {
            Counter::U32(v) => v as u64,
            Counter::U64(v) => v,
        }
    }

    fn len(self) -> usize {
        match self {
            Counter::U32(_) => 4,
            Counter::U64(_) => 8,
        }
    }

    fn emit(self, buf: &mut [u8]) {
        match self {
            Counter::U32(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            Counter::U64(v) => buf[..8].copy_from_slice(&v.to_ne_bytes()),
        }
    }

    fn parse(value: &[u8]) -> Result<Self, DecodeError> {
        match value.len() {
            4 => Ok(Counter::U32(parse_u32(value)?)),
            8 => Ok(Counter::U64(parse_u64(value)?)),
            n => Err(DecodeError::from(format!(
                "counter of {n} bytes, expected 4 or 8"
            ))),
        }
    }
}

fn str_len(s: &str) -> usize {
    s.len() + 1
}

fn emit_str(buf: &mut [u8], s: &str) {
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
}

fn parse_str(value: &[u8]) -> Result<String, DecodeError> {
    // NUL-terminated, but tolerate a missing terminator.
    let v = match value.iter().position(|&b| b == 0) {
        Some(i) => &value[..i],
        None => value,
    };
    String::from_utf8(v.to_vec()).map_err(DecodeError::from)
}

/// Parses a nest's attributes into `T`, naming the nest on error.
pub fn parse_nested<T>(value: &[u8], what: &str) -> Result<Vec<T>, DecodeError>
where
    T: for<'a> Parseable<NlaBuffer<&'a [u8]>>,
{
    let mut out = Vec::new();
    for nla in NlasIterator::new(value) {
        let nla = nla.with_context(|| format!("malformed attribute in {what}"))?;
        out.push(T::parse(&nla).with_context(|| format!("in {what}"))?);
    }
    Ok(out)
}

/// Statistics attributes (inside SVC/DEST STATS and STATS64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsAttr {
    Conns(Counter),
    InPkts(Counter),
    OutPkts(Counter),
    InBytes(Counter),
    OutBytes(Counter),
    Cps(Counter),
    InPps(Counter),
    OutPps(Counter),
    InBps(Counter),
    OutBps(Counter),
    /// Alignment padding before 64-bit values on some architectures.
    Pad,
    Other(DefaultNla),
}

impl StatsAttr {
    fn counter(&self) -> Option<Counter> {
        use StatsAttr::*;
        match self {
            Conns(c) | InPkts(c) | OutPkts(c) | InBytes(c) | OutBytes(c) | Cps(c) | InPps(c)
            | OutPps(c) | InBps(c) | OutBps(c) => Some(*c),
            Pad | Other(_) => None,
        }
    }
}

impl Nla for StatsAttr {
    fn value_len(&self) -> usize {
        match self {
            StatsAttr::Pad => 0,
            StatsAttr::Other(nla) => nla.value_len(),
            other => other.counter().map_or(0, Counter::len),
        }
    }

    fn kind(&self) -> u16 {
        use StatsAttr::*;
        match self {
            Conns(_) => IPVS_STATS_ATTR_CONNS,
            InPkts(_) => IPVS_STATS_ATTR_INPKTS,
            OutPkts(_) => IPVS_STATS_ATTR_OUTPKTS,
            InBytes(_) => IPVS_STATS_ATTR_INBYTES,
            OutBytes(_) => IPVS_STATS_ATTR_OUTBYTES,
            Cps(_) => IPVS_STATS_ATTR_CPS,
            InPps(_) => IPVS_STATS_ATTR_INPPS,
            OutPps(_) => IPVS_STATS_ATTR_OUTPPS,
            InBps(_) => IPVS_STATS_ATTR_INBPS,
            OutBps(_) => IPVS_STATS_ATTR_OUTBPS,
            Pad => IPVS_STATS_ATTR_PAD,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            StatsAttr::Other(nla) => nla.emit_value(buffer),
            other => {
                if let Some(c) = other.counter() {
                    c.emit(buffer)
                }
            }
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for StatsAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        let c = || Counter::parse(v).with_context(|| format!("stats attribute {}", buf.kind()));
        Ok(match buf.kind() {
            IPVS_STATS_ATTR_CONNS => StatsAttr::Conns(c()?),
            IPVS_STATS_ATTR_INPKTS => StatsAttr::InPkts(c()?),
            IPVS_STATS_ATTR_OUTPKTS => StatsAttr::OutPkts(c()?),
            IPVS_STATS_ATTR_INBYTES => StatsAttr::InBytes(c()?),
            IPVS_STATS_ATTR_OUTBYTES => StatsAttr::OutBytes(c()?),
            IPVS_STATS_ATTR_CPS => StatsAttr::Cps(c()?),
            IPVS_STATS_ATTR_INPPS => StatsAttr::InPps(c()?),
            IPVS_STATS_ATTR_OUTPPS => StatsAttr::OutPps(c()?),
            IPVS_STATS_ATTR_INBPS => StatsAttr::InBps(c()?),
            IPVS_STATS_ATTR_OUTBPS => StatsAttr::OutBps(c()?),
            IPVS_STATS_ATTR_PAD if v.is_empty() => StatsAttr::Pad,
            _ => StatsAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Virtual service attributes (inside IPVS_CMD_ATTR_SERVICE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttr {
    /// `AF_INET` / `AF_INET6`.
    AddressFamily(u16),
    /// `IPPROTO_*`.
    Protocol(u16),
    Address(RawAddr),
    /// Host order here; big-endian on the wire.
    Port(u16),
    FwMark(u32),
    SchedName(String),
    Flags(FlagsMask),
    /// Persistence timeout, seconds.
    Timeout(u32),
    /// The raw 32-bit value: a big-endian mask for IPv4 (0xffffffff = /32),
    /// the prefix length for IPv6 (kernel reads it with `nla_get_be32` for both).
    Netmask(u32),
    Stats(Vec<StatsAttr>),
    PeName(String),
    Stats64(Vec<StatsAttr>),
    Other(DefaultNla),
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        use ServiceAttr::*;
        match self {
            AddressFamily(_) | Protocol(_) | Port(_) => 2,
            Address(a) => a.as_bytes().len(),
            FwMark(_) | Timeout(_) | Netmask(_) => 4,
            SchedName(s) | PeName(s) => str_len(s),
            Flags(_) => 8,
            Stats(s) | Stats64(s) => s.as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use ServiceAttr::*;
        match self {
            AddressFamily(_) => IPVS_SVC_ATTR_AF,
            Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Address(_) => IPVS_SVC_ATTR_ADDR,
            Port(_) => IPVS_SVC_ATTR_PORT,
            FwMark(_) => IPVS_SVC_ATTR_FWMARK,
            SchedName(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Flags(_) => IPVS_SVC_ATTR_FLAGS,
            Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Netmask(_) => IPVS_SVC_ATTR_NETMASK,
            Stats(_) => IPVS_SVC_ATTR_STATS,
            PeName(_) => IPVS_SVC_ATTR_PE_NAME,
            Stats64(_) => IPVS_SVC_ATTR_STATS64,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use ServiceAttr::*;
        match self {
            AddressFamily(v) | Protocol(v) => buffer[..2].copy_from_slice(&v.to_ne_bytes()),
            Address(a) => buffer[..a.as_bytes().len()].copy_from_slice(a.as_bytes()),
            Port(p) => buffer[..2].copy_from_slice(&p.to_be_bytes()),
            FwMark(v) | Timeout(v) | Netmask(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            SchedName(s) | PeName(s) => emit_str(buffer, s),
            Flags(f) => {
                buffer[..4].copy_from_slice(&f.flags.to_ne_bytes());
                buffer[4..8].copy_from_slice(&f.mask.to_ne_bytes());
            }
            Stats(s) | Stats64(s) => s.as_slice().emit(buffer),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for ServiceAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        let kind = buf.kind();
        let ctx = || format!("service attribute {kind}");
        Ok(match kind {
            IPVS_SVC_ATTR_AF => ServiceAttr::AddressFamily(parse_u16(v).with_context(ctx)?),
            IPVS_SVC_ATTR_PROTOCOL => ServiceAttr::Protocol(parse_u16(v).with_context(ctx)?),
            IPVS_SVC_ATTR_ADDR => ServiceAttr::Address(RawAddr::parse(v).with_context(ctx)?),
            IPVS_SVC_ATTR_PORT => ServiceAttr::Port(parse_u16_be(v).with_context(ctx)?),
            IPVS_SVC_ATTR_FWMARK => ServiceAttr::FwMark(parse_u32(v).with_context(ctx)?),
            IPVS_SVC_ATTR_SCHED_NAME => ServiceAttr::SchedName(parse_str(v).with_context(ctx)?),
            IPVS_SVC_ATTR_FLAGS => {
                if v.len() != 8 {
                    return Err(DecodeError::from(format!(
                        "service flags of {} bytes, expected 8",
                        v.len()
                    )));
                }
                ServiceAttr::Flags(FlagsMask {
                    flags: parse_u32(&v[..4])?,
                    mask: parse_u32(&v[4..])?,
                })
            }
            IPVS_SVC_ATTR_TIMEOUT => ServiceAttr::Timeout(parse_u32(v).with_context(ctx)?),
            IPVS_SVC_ATTR_NETMASK => ServiceAttr::Netmask(parse_u32(v).with_context(ctx)?),
            IPVS_SVC_ATTR_STATS => ServiceAttr::Stats(parse_nested(v, "service STATS")?),
            IPVS_SVC_ATTR_PE_NAME => ServiceAttr::PeName(parse_str(v).with_context(ctx)?),
            IPVS_SVC_ATTR_STATS64 => ServiceAttr::Stats64(parse_nested(v, "service STATS64")?),
            _ => ServiceAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Real server attributes (inside IPVS_CMD_ATTR_DEST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestAttr {
    Address(RawAddr),
    /// Host order here; big-endian on the wire.
    Port(u16),
    /// Connection flags; the method is `& IP_VS_CONN_F_FWD_MASK` (0x7).
    FwdMethod(u32),
    Weight(u32),
    UpperThreshold(u32),
    LowerThreshold(u32),
    ActiveConns(u32),
    InactiveConns(u32),
    PersistConns(u32),
    Stats(Vec<StatsAttr>),
    /// The destination's own family; may differ from the service's only when tunnelling.
    AddressFamily(u16),
    Stats64(Vec<StatsAttr>),
    TunType(u8),
    /// Host order here; big-endian on the wire.
    TunPort(u16),
    TunFlags(u16),
    Other(DefaultNla),
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        use DestAttr::*;
        match self {
            Address(a) => a.as_bytes().len(),
            Port(_) | AddressFamily(_) | TunPort(_) | TunFlags(_) => 2,
            FwdMethod(_) | Weight(_) | UpperThreshold(_) | LowerThreshold(_) | ActiveConns(_)
            | InactiveConns(_) | PersistConns(_) => 4,
            TunType(_) => 1,
            Stats(s) | Stats64(s) => s.as_slice().buffer_len(),
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use DestAttr::*;
        match self {
            Address(_) => IPVS_DEST_ATTR_ADDR,
            Port(_) => IPVS_DEST_ATTR_PORT,
            FwdMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            ActiveConns(_) => IPVS_DEST_ATTR_ACTIVE_CONNS,
            InactiveConns(_) => IPVS_DEST_ATTR_INACT_CONNS,
            PersistConns(_) => IPVS_DEST_ATTR_PERSIST_CONNS,
            Stats(_) => IPVS_DEST_ATTR_STATS,
            AddressFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
            Stats64(_) => IPVS_DEST_ATTR_STATS64,
            TunType(_) => IPVS_DEST_ATTR_TUN_TYPE,
            TunPort(_) => IPVS_DEST_ATTR_TUN_PORT,
            TunFlags(_) => IPVS_DEST_ATTR_TUN_FLAGS,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use DestAttr::*;
        match self {
            Address(a) => buffer[..a.as_bytes().len()].copy_from_slice(a.as_bytes()),
            Port(p) | TunPort(p) => buffer[..2].copy_from_slice(&p.to_be_bytes()),
            AddressFamily(v) | TunFlags(v) => buffer[..2].copy_from_slice(&v.to_ne_bytes()),
            FwdMethod(v) | Weight(v) | UpperThreshold(v) | LowerThreshold(v) | ActiveConns(v)
            | InactiveConns(v) | PersistConns(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
            TunType(v) => buffer[0] = *v,
            Stats(s) | Stats64(s) => s.as_slice().emit(buffer),
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for DestAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        let kind = buf.kind();
        let ctx = || format!("destination attribute {kind}");
        Ok(match kind {
            IPVS_DEST_ATTR_ADDR => DestAttr::Address(RawAddr::parse(v).with_context(ctx)?),
            IPVS_DEST_ATTR_PORT => DestAttr::Port(parse_u16_be(v).with_context(ctx)?),
            IPVS_DEST_ATTR_FWD_METHOD => DestAttr::FwdMethod(parse_u32(v).with_context(ctx)?),
            IPVS_DEST_ATTR_WEIGHT => DestAttr::Weight(parse_u32(v).with_context(ctx)?),
            IPVS_DEST_ATTR_U_THRESH => DestAttr::UpperThreshold(parse_u32(v).with_context(ctx)?),
            IPVS_DEST_ATTR_L_THRESH => DestAttr::LowerThreshold(parse_u32(v).with_context(ctx)?),
            IPVS_DEST_ATTR_ACTIVE_CONNS => DestAttr::ActiveConns(parse_u32(v).with_context(ctx)?),
            IPVS_DEST_ATTR_INACT_CONNS => DestAttr::InactiveConns(parse_u32(v).with_context(ctx)?),
            IPVS_DEST_ATTR_PERSIST_CONNS => DestAttr::PersistConns(parse_u32(v).with_context(ctx)?),
            IPVS_DEST_ATTR_STATS => DestAttr::Stats(parse_nested(v, "destination STATS")?),
            IPVS_DEST_ATTR_ADDR_FAMILY => DestAttr::AddressFamily(parse_u16(v).with_context(ctx)?),
            IPVS_DEST_ATTR_STATS64 => DestAttr::Stats64(parse_nested(v, "destination STATS64")?),
            IPVS_DEST_ATTR_TUN_TYPE => DestAttr::TunType(parse_u8(v).with_context(ctx)?),
            IPVS_DEST_ATTR_TUN_PORT => DestAttr::TunPort(parse_u16_be(v).with_context(ctx)?),
            IPVS_DEST_ATTR_TUN_FLAGS => DestAttr::TunFlags(parse_u16(v).with_context(ctx)?),
            _ => DestAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Top-level attributes of every IPVS command except SET_INFO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdAttr {
    Service(Vec<ServiceAttr>),
    Dest(Vec<DestAttr>),
    // Nests carry no NLA_F_NESTED: ip_vs_ctl.c opens them with
    // nla_nest_start_noflag, and we emit what the kernel emits.
    /// Sync daemon settings; this crate does not manage the sync daemon.
    Daemon(Vec<DefaultNla>),
    TimeoutTcp(u32),
    TimeoutTcpFin(u32),
    TimeoutUdp(u32),
    Other(DefaultNla),
}

impl Nla for CmdAttr {
    fn value_len(&self) -> usize {
        use CmdAttr::*;
        match self {
            Service(s) => s.as_slice().buffer_len(),
            Dest(d) => d.as_slice().buffer_len(),
            Daemon(d) => d.as_slice().buffer_len(),
            TimeoutTcp(_) | TimeoutTcpFin(_) | TimeoutUdp(_) => 4,
            Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        use CmdAttr::*;
        match self {
            Service(_) => IPVS_CMD_ATTR_SERVICE,
            Dest(_) => IPVS_CMD_ATTR_DEST,
            Daemon(_) => IPVS_CMD_ATTR_DAEMON,
            TimeoutTcp(_) => IPVS_CMD_ATTR_TIMEOUT_TCP,
            TimeoutTcpFin(_) => IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
            TimeoutUdp(_) => IPVS_CMD_ATTR_TIMEOUT_UDP,
            Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        use CmdAttr::*;
        match self {
            Service(s) => s.as_slice().emit(buffer),
            Dest(d) => d.as_slice().emit(buffer),
            Daemon(d) => d.as_slice().emit(buffer),
            TimeoutTcp(v) | TimeoutTcpFin(v) | TimeoutUdp(v) => {
                buffer[..4].copy_from_slice(&v.to_ne_bytes())
            }
            Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for CmdAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        let kind = buf.kind();
        let ctx = || format!("command attribute {kind}");
        Ok(match kind {
            IPVS_CMD_ATTR_SERVICE => CmdAttr::Service(parse_nested(v, "SERVICE")?),
            IPVS_CMD_ATTR_DEST => CmdAttr::Dest(parse_nested(v, "DEST")?),
            IPVS_CMD_ATTR_DAEMON => CmdAttr::Daemon(parse_nested(v, "DAEMON")?),
            IPVS_CMD_ATTR_TIMEOUT_TCP => CmdAttr::TimeoutTcp(parse_u32(v).with_context(ctx)?),
            IPVS_CMD_ATTR_TIMEOUT_TCP_FIN => {
                CmdAttr::TimeoutTcpFin(parse_u32(v).with_context(ctx)?)
            }
            IPVS_CMD_ATTR_TIMEOUT_UDP => CmdAttr::TimeoutUdp(parse_u32(v).with_context(ctx)?),
            _ => CmdAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

/// Attributes of the GET_INFO reply (command SET_INFO).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoAttr {
    Version(u32),
    ConnTabSize(u32),
    Other(DefaultNla),
}

impl Nla for InfoAttr {
    fn value_len(&self) -> usize {
        match self {
            InfoAttr::Version(_) | InfoAttr::ConnTabSize(_) => 4,
            InfoAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            InfoAttr::Version(_) => IPVS_INFO_ATTR_VERSION,
            InfoAttr::ConnTabSize(_) => IPVS_INFO_ATTR_CONN_TAB_SIZE,
            InfoAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            InfoAttr::Version(v) | InfoAttr::ConnTabSize(v) => {
                buffer[..4].copy_from_slice(&v.to_ne_bytes())
            }
            InfoAttr::Other(nla) => nla.emit_value(buffer),
        }
    }
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for InfoAttr {
    fn parse(buf: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = buf.value();
        Ok(match buf.kind() {
            IPVS_INFO_ATTR_VERSION => {
                InfoAttr::Version(parse_u32(v).context("info attribute VERSION")?)
            }
            IPVS_INFO_ATTR_CONN_TAB_SIZE => {
                InfoAttr::ConnTabSize(parse_u32(v).context("info attribute CONN_TAB_SIZE")?)
            }
            _ => InfoAttr::Other(DefaultNla::parse(buf)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emits one attribute, checks its kind and bytes, parses it back.
    fn round_trip<A>(attr: A, kind: u16, value: &[u8])
    where
        A: Nla + std::fmt::Debug + PartialEq + for<'a> Parseable<NlaBuffer<&'a [u8]>>,
    {
        assert_eq!(
            attr.kind() & !netlink_packet_core::NLA_F_NESTED,
            kind,
            "{attr:?}"
        );
        let mut buf = vec![0xaa; attr.buffer_len()];
        attr.emit(&mut buf);
        assert_eq!(
            u16::from_ne_bytes([buf[0], buf[1]]) as usize,
            4 + value.len()
        );
        assert_eq!(&buf[4..4 + value.len()], value, "{attr:?}");
        assert!(buf[4 + value.len()..].iter().all(|&b| b == 0), "padding");
        let nla = NlaBuffer::new_checked(&buf[..]).unwrap();
        let back = A::parse(&nla).unwrap();
        assert_eq!(back, attr);
    }

    fn ne32(v: u32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }

    fn counters(wide: bool) -> Vec<StatsAttr> {
        let c = |v: u64| {
            if wide {
                Counter::U64(v)
            } else {
                Counter::U32(v as u32)
            }
        };
        vec![
            StatsAttr::Conns(c(1)),
            StatsAttr::InPkts(c(2)),
            StatsAttr::OutPkts(c(3)),
            StatsAttr::InBytes(Counter::U64(4)),
            StatsAttr::OutBytes(Counter::U64(5)),
            StatsAttr::Cps(c(6)),
            StatsAttr::InPps(c(7)),
            StatsAttr::OutPps(c(8)),
            StatsAttr::InBps(c(9)),
            StatsAttr::OutBps(c(10)),
        ]
    }

    #[test]
    fn stats_attrs() {
        for (i, a) in counters(true).into_iter().enumerate() {
            let v = (i as u64 + 1).to_ne_bytes();
            round_trip(a, i as u16 + 1, &v);
        }
        round_trip(StatsAttr::Conns(Counter::U32(7)), 1, &ne32(7));
        round_trip(StatsAttr::Pad, IPVS_STATS_ATTR_PAD, &[]);
        round_trip(StatsAttr::Other(DefaultNla::new(42, vec![1])), 42, &[1]);
        // A counter of 3 bytes is an error, not a panic.
        let buf = [7, 0, 1, 0, 1, 2, 3, 0];
        assert!(StatsAttr::parse(&NlaBuffer::new_checked(&buf[..]).unwrap()).is_err());
    }

    #[test]
    fn service_attrs() {
        round_trip(ServiceAttr::AddressFamily(2), 1, &2u16.to_ne_bytes());
        round_trip(ServiceAttr::Protocol(6), 2, &6u16.to_ne_bytes());
        let a4 = RawAddr::from_ip("10.0.0.1".parse().unwrap());
        round_trip(ServiceAttr::Address(a4), 3, &[10, 0, 0, 1]);
        let a16 = RawAddr::padded("10.0.0.1".parse().unwrap());
        let mut padded = vec![10, 0, 0, 1];
        padded.extend([0; 12]);
        round_trip(ServiceAttr::Address(a16), 3, &padded);
        let a6 = RawAddr::from_ip("fd00::1".parse().unwrap());
        round_trip(
            ServiceAttr::Address(a6),
            3,
            &"fd00::1".parse::<Ipv6Addr>().unwrap().octets(),
        );
        round_trip(ServiceAttr::Port(80), 4, &[0, 80]);
        round_trip(ServiceAttr::FwMark(7), 5, &ne32(7));
        round_trip(ServiceAttr::SchedName("wrr".into()), 6, b"wrr\0");
        let f = FlagsMask {
            flags: 1,
            mask: u32::MAX,
        };
        let mut fv = ne32(1);
        fv.extend(ne32(u32::MAX));
        round_trip(ServiceAttr::Flags(f), 7, &fv);
        round_trip(ServiceAttr::Timeout(300), 8, &ne32(300));
        round_trip(ServiceAttr::Netmask(u32::MAX), 9, &[0xff; 4]);
        round_trip(ServiceAttr::PeName("sip".into()), 11, b"sip\0");
        for (kind, wide) in [(10, false), (12, true)] {
            let nest = counters(wide);
            let mut bytes = vec![0; nest.as_slice().buffer_len()];
            nest.as_slice().emit(&mut bytes);
            let attr = if wide {
                ServiceAttr::Stats64(nest)
            } else {
                ServiceAttr::Stats(nest)
            };
            round_trip(attr, kind, &bytes);
        }
        round_trip(
            ServiceAttr::Other(DefaultNla::new(99, vec![1, 2])),
            99,
            &[1, 2],
        );
    }

    #[test]
    fn dest_attrs() {
        let a = RawAddr::from_ip("10.1.0.2".parse().unwrap());
        round_trip(DestAttr::Address(a), 1, &[10, 1, 0, 2]);
        round_trip(DestAttr::Port(8080), 2, &8080u16.to_be_bytes());
        round_trip(DestAttr::FwdMethod(3), 3, &ne32(3));
        round_trip(DestAttr::Weight(70000), 4, &ne32(70000));
        round_trip(DestAttr::UpperThreshold(100), 5, &ne32(100));
        round_trip(DestAttr::LowerThreshold(10), 6, &ne32(10));
        round_trip(DestAttr::ActiveConns(1), 7, &ne32(1));
        round_trip(DestAttr::InactiveConns(2), 8, &ne32(2));
        round_trip(DestAttr::PersistConns(3), 9, &ne32(3));
        let nest = counters(false);
        let mut bytes = vec![0; nest.as_slice().buffer_len()];
        nest.as_slice().emit(&mut bytes);
        round_trip(DestAttr::Stats(nest.clone()), 10, &bytes);
        round_trip(DestAttr::AddressFamily(10), 11, &10u16.to_ne_bytes());
        let nest = counters(true);
        let mut bytes = vec![0; nest.as_slice().buffer_len()];
        nest.as_slice().emit(&mut bytes);
        round_trip(DestAttr::Stats64(nest), 12, &bytes);
        round_trip(DestAttr::TunType(1), 13, &[1]);
        round_trip(DestAttr::TunPort(6080), 14, &6080u16.to_be_bytes());
        round_trip(DestAttr::TunFlags(2), 15, &2u16.to_ne_bytes());
        round_trip(DestAttr::Other(DefaultNla::new(77, vec![])), 77, &[]);
    }

    #[test]
    fn cmd_and_info_attrs() {
        let svc = vec![ServiceAttr::AddressFamily(2), ServiceAttr::FwMark(1)];
        let mut bytes = vec![0; svc.as_slice().buffer_len()];
        svc.as_slice().emit(&mut bytes);
        round_trip(CmdAttr::Service(svc), 1, &bytes);
        let d = vec![DestAttr::Weight(1)];
        let mut bytes = vec![0; d.as_slice().buffer_len()];
        d.as_slice().emit(&mut bytes);
        round_trip(CmdAttr::Dest(d), 2, &bytes);
        let dm = vec![DefaultNla::new(1, ne32(1))];
        let mut bytes = vec![0; dm.as_slice().buffer_len()];
        dm.as_slice().emit(&mut bytes);
        round_trip(CmdAttr::Daemon(dm), 3, &bytes);
        round_trip(CmdAttr::TimeoutTcp(900), 4, &ne32(900));
        round_trip(CmdAttr::TimeoutTcpFin(120), 5, &ne32(120));
        round_trip(CmdAttr::TimeoutUdp(300), 6, &ne32(300));
        round_trip(CmdAttr::Other(DefaultNla::new(9, ne32(1))), 9, &ne32(1));
        round_trip(InfoAttr::Version(0x010201), 1, &ne32(0x010201));
        round_trip(InfoAttr::ConnTabSize(4096), 2, &ne32(4096));
        round_trip(InfoAttr::Other(DefaultNla::new(3, vec![5])), 3, &[5]);
    }

    #[test]
    fn malformed_values_are_errors() {
        let cases: &[&[u8]] = &[
            &[5, 0, 1, 0, 2],          // AF of 1 byte
            &[7, 0, 3, 0, 1, 2, 3],    // ADDR of 3 bytes
            &[8, 0, 7, 0, 1, 2, 3, 4], // FLAGS of 4 bytes
            &[6, 0, 4, 0, 1, 0],       // PORT ok (2 bytes) -> checked below
        ];
        for (i, c) in cases.iter().enumerate() {
            let nla = NlaBuffer::new_checked(*c).unwrap();
            let r = ServiceAttr::parse(&nla);
            assert_eq!(r.is_ok(), i == 3, "case {i}: {r:?}");
        }
        // A nest whose inner attribute overruns the nest.
        let bad_nest = [12, 0, 0x0a, 0x80, 20, 0, 1, 0, 1, 0, 0, 0];
        let nla = NlaBuffer::new_checked(&bad_nest[..]).unwrap();
        assert!(ServiceAttr::parse(&nla).is_err());
        assert!(
            DestAttr::parse(&NlaBuffer::new_checked(&[5u8, 0, 13, 0, 1, 0, 0, 0][..]).unwrap())
                .is_ok()
        );
        assert!(
            DestAttr::parse(&NlaBuffer::new_checked(&[6u8, 0, 13, 0, 1, 2, 0, 0][..]).unwrap())
                .is_err()
        );
    }
}
