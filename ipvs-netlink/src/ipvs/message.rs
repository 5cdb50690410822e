//! IPVS generic netlink messages, and the mapping between attributes and the typed domain.

use std::net::{IpAddr, SocketAddr};

use netlink_packet_core::{DecodeError, Emitable, ParseableParametrized};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::nla::{
    CmdAttr, Counter, DestAttr, FlagsMask, InfoAttr, RawAddr, ServiceAttr, StatsAttr, parse_nested,
};
use super::types::*;
use crate::genl::GENL_HDRLEN;
use crate::netlink::{MsgHeader, NLMSG_HDRLEN, align};

/// The generic netlink family name the kernel registers IPVS under.
pub const IPVS_GENL_NAME: &str = "IPVS";
/// `IPVS_GENL_VERSION`.
pub const IPVS_GENL_VERSION: u8 = 1;

/// IPVS commands (`IPVS_CMD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpvsCmd {
    NewService,
    SetService,
    DelService,
    GetService,
    NewDest,
    SetDest,
    DelDest,
    GetDest,
    NewDaemon,
    DelDaemon,
    GetDaemon,
    SetConfig,
    GetConfig,
    /// Only the kernel sends it: the reply to GET_INFO.
    SetInfo,
    GetInfo,
    Zero,
    Flush,
    Other(u8),
}

impl From<IpvsCmd> for u8 {
    fn from(c: IpvsCmd) -> u8 {
        use IpvsCmd::*;
        match c {
            NewService => 1,
            SetService => 2,
            DelService => 3,
            GetService => 4,
            NewDest => 5,
            SetDest => 6,
            DelDest => 7,
            GetDest => 8,
            NewDaemon => 9,
            DelDaemon => 10,
            GetDaemon => 11,
            SetConfig => 12,
            GetConfig => 13,
            SetInfo => 14,
            GetInfo => 15,
            Zero => 16,
            Flush => 17,
            Other(n) => n,
        }
    }
}

impl From<u8> for IpvsCmd {
    fn from(n: u8) -> Self {
        use IpvsCmd::*;
        match n {
            1 => NewService,
            2 => SetService,
            3 => DelService,
            4 => GetService,
            5 => NewDest,
            6 => SetDest,
            7 => DelDest,
            8 => GetDest,
            9 => NewDaemon,
            10 => DelDaemon,
            11 => GetDaemon,
            12 => SetConfig,
            13 => GetConfig,
            14 => SetInfo,
            15 => GetInfo,
            16 => Zero,
            17 => Flush,
            n => Other(n),
        }
    }
}

/// The attributes of a message: SET_INFO has its own space (numbers overlap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsAttrs {
    Cmd(Vec<CmdAttr>),
    Info(Vec<InfoAttr>),
}

/// One IPVS message: the generic netlink command and its attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: IpvsCmd,
    pub attrs: IpvsAttrs,
}

impl IpvsMessage {
    pub fn new(cmd: IpvsCmd, attrs: Vec<CmdAttr>) -> Self {
        IpvsMessage {
            cmd,
            attrs: IpvsAttrs::Cmd(attrs),
        }
    }

    /// Parses a reply payload: `genlmsghdr` followed by attributes.
    pub fn parse(payload: &[u8]) -> Result<Self, DecodeError> {
        let header = GenlHeader::parse(payload)?;
        Self::parse_with_param(&payload[GENL_HDRLEN..], header)
    }

    /// The service nest, if any.
    pub fn service(&self) -> Option<&[ServiceAttr]> {
        match &self.attrs {
            IpvsAttrs::Cmd(a) => a.iter().find_map(|a| match a {
                CmdAttr::Service(s) => Some(s.as_slice()),
                _ => None,
            }),
            IpvsAttrs::Info(_) => None,
        }
    }

    /// The destination nest, if any.
    pub fn dest(&self) -> Option<&[DestAttr]> {
        match &self.attrs {
            IpvsAttrs::Cmd(a) => a.iter().find_map(|a| match a {
                CmdAttr::Dest(d) => Some(d.as_slice()),
                _ => None,
            }),
            IpvsAttrs::Info(_) => None,
        }
    }

    /// Appends this message as a complete netlink request of generic netlink
    /// family `family_id` to `buf` (seq and flags are left for the socket).
    pub fn append_request(&self, family_id: u16, buf: &mut Vec<u8>) {
        let start = buf.len();
        let len = NLMSG_HDRLEN + GENL_HDRLEN + self.buffer_len();
        buf.resize(start + align(len), 0);
        MsgHeader {
            len: len as u32,
            msg_type: family_id,
            flags: 0,
            seq: 0,
            pid: 0,
        }
        .emit(&mut buf[start..]);
        let g = start + NLMSG_HDRLEN;
        buf[g] = self.cmd.into();
        buf[g + 1] = IPVS_GENL_VERSION;
        buf[g + 2] = 0;
        buf[g + 3] = 0;
        self.emit(&mut buf[g + GENL_HDRLEN..start + len]);
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_GENL_NAME
    }

    fn command(&self) -> u8 {
        self.cmd.into()
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        match &self.attrs {
            IpvsAttrs::Cmd(a) => a.as_slice().buffer_len(),
            IpvsAttrs::Info(a) => a.as_slice().buffer_len(),
        }
    }

    fn emit(&self, buffer: &mut [u8]) {
        match &self.attrs {
            IpvsAttrs::Cmd(a) => a.as_slice().emit(buffer),
            IpvsAttrs::Info(a) => a.as_slice().emit(buffer),
        }
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let cmd = IpvsCmd::from(header.cmd);
        let attrs = match cmd {
            IpvsCmd::SetInfo => IpvsAttrs::Info(parse_nested(buf, "SET_INFO message")?),
            _ => IpvsAttrs::Cmd(parse_nested(buf, "IPVS message")?),
        };
        Ok(IpvsMessage { cmd, attrs })
    }
}

/// IPv4 netmask attribute: the mask in network byte order (0xffffffff = /32).
fn netmask_to_raw(family: Family, prefix: u8) -> u32 {
    match family {
        Family::Inet => {
            let p = prefix.min(32) as u32;
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
            u32::from_ne_bytes(mask.to_be_bytes())
        }
        // The kernel keeps an IPv6 "netmask" as the prefix length itself.
        Family::Inet6 => prefix.min(128) as u32,
    }
}

fn netmask_from_raw(family: Family, raw: u32) -> Result<u8, DecodeError> {
    match family {
        Family::Inet => {
            let mask = u32::from_be_bytes(raw.to_ne_bytes());
            let prefix = mask.leading_ones();
            if mask.checked_shl(prefix).unwrap_or(0) != 0 {
                return Err(DecodeError::from(format!(
                    "IPv4 netmask {mask:#010x} is not contiguous"
                )));
            }
            Ok(prefix as u8)
        }
        Family::Inet6 if raw <= 128 => Ok(raw as u8),
        Family::Inet6 => Err(DecodeError::from(format!("IPv6 prefix length {raw}"))),
    }
}

/// Attributes that identify a service (AF and fwmark, or protocol + address + port).
pub fn service_key_attrs(key: &ServiceKey) -> Vec<ServiceAttr> {
    let mut v = Vec::with_capacity(9);
    push_key_attrs(key, &mut v);
    v
}

fn push_key_attrs(key: &ServiceKey, v: &mut Vec<ServiceAttr>) {
    v.push(ServiceAttr::AddressFamily(key.family().as_raw()));
    match key {
        ServiceKey::FwMark { mark, .. } => v.push(ServiceAttr::FwMark(*mark)),
        _ => {
            if let (Some(p), Some(a)) = (key.protocol(), key.addr()) {
                v.push(ServiceAttr::Protocol(p.as_raw()));
                v.push(ServiceAttr::Address(RawAddr::from_ip(a.ip())));
                v.push(ServiceAttr::Port(a.port()));
            }
        }
    }
}

/// Full attributes for NEW/SET_SERVICE: the kernel requires SCHED_NAME, FLAGS,
/// TIMEOUT and NETMASK (EINVAL otherwise).
pub fn service_attrs(svc: &Service) -> Vec<ServiceAttr> {
    let mut v = Vec::with_capacity(9);
    push_key_attrs(&svc.key, &mut v);
    v.push(ServiceAttr::SchedName(svc.scheduler.name().to_owned()));
    if let Some(pe) = &svc.pe_name {
        v.push(ServiceAttr::PeName(pe.clone()));
    }
    // Mask all ones: our flags replace the old ones; the kernel re-adds HASHED itself.
    v.push(ServiceAttr::Flags(FlagsMask {
        flags: ServiceFlags::from_kernel(svc.flags.bits()).bits(),
        mask: u32::MAX,
    }));
    v.push(ServiceAttr::Timeout(svc.timeout));
    v.push(ServiceAttr::Netmask(netmask_to_raw(
        svc.key.family(),
        svc.netmask,
    )));
    v
}

/// Attributes that identify a destination within its service (for DEL_DEST).
pub fn destination_key_attrs(addr: SocketAddr) -> Vec<DestAttr> {
    vec![
        DestAttr::Address(RawAddr::from_ip(addr.ip())),
        DestAttr::Port(addr.port()),
        DestAttr::AddressFamily(Family::of(&addr.ip()).as_raw()),
    ]
}

/// Full attributes for NEW/SET_DEST. ADDR_FAMILY is always sent so a tunnel
/// destination may have the other family (without it the kernel assumes the
/// service's family).
pub fn destination_attrs(d: &Destination) -> Vec<DestAttr> {
    vec![
        DestAttr::Address(RawAddr::from_ip(d.addr.ip())),
        DestAttr::Port(d.addr.port()),
        DestAttr::AddressFamily(d.family().as_raw()),
        DestAttr::FwdMethod(d.forward.as_raw()),
        DestAttr::Weight(d.weight),
        DestAttr::UpperThreshold(d.upper_threshold),
        DestAttr::LowerThreshold(d.lower_threshold),
        DestAttr::TunType(d.tunnel_type.as_raw()),
        DestAttr::TunPort(d.tunnel_port),
        DestAttr::TunFlags(d.tunnel_checksum.as_raw()),
    ]
}

/// Widens a STATS or STATS64 nest.
pub fn stats_from_attrs(attrs: &[StatsAttr]) -> Stats {
    let mut s = Stats::default();
    for a in attrs {
        let get = |c: &Counter| c.get();
        match a {
            StatsAttr::Conns(c) => s.conns = get(c),
            StatsAttr::InPkts(c) => s.inpkts = get(c),
            StatsAttr::OutPkts(c) => s.outpkts = get(c),
            StatsAttr::InBytes(c) => s.inbytes = get(c),
            StatsAttr::OutBytes(c) => s.outbytes = get(c),
            StatsAttr::Cps(c) => s.cps = get(c),
            StatsAttr::InPps(c) => s.inpps = get(c),
            StatsAttr::OutPps(c) => s.outpps = get(c),
            StatsAttr::InBps(c) => s.inbps = get(c),
            StatsAttr::OutBps(c) => s.outbps = get(c),
            StatsAttr::Pad | StatsAttr::Other(_) => {}
        }
    }
    s
}

fn missing(what: &str) -> DecodeError {
    DecodeError::from(format!("missing attribute {what}"))
}

/// A service entry from a reply's service nest (STATS64 preferred over STATS).
pub fn service_from_attrs(attrs: &[ServiceAttr]) -> Result<ServiceEntry, DecodeError> {
    let (mut af, mut proto, mut addr, mut port, mut mark) = (None, None, None, None, None);
    let (mut sched, mut flags, mut timeout, mut netmask, mut pe) = (None, 0, 0, None, None);
    let (mut stats, mut stats64) = (None, None);
    for a in attrs {
        match a {
            ServiceAttr::AddressFamily(v) => af = Some(*v),
            ServiceAttr::Protocol(v) => proto = Some(*v),
            ServiceAttr::Address(v) => addr = Some(*v),
            ServiceAttr::Port(v) => port = Some(*v),
            ServiceAttr::FwMark(v) => mark = Some(*v),
            ServiceAttr::SchedName(v) => sched = Some(v.as_str()),
            ServiceAttr::Flags(f) => flags = f.flags,
            ServiceAttr::Timeout(v) => timeout = *v,
            ServiceAttr::Netmask(v) => netmask = Some(*v),
            ServiceAttr::Stats(s) => stats = Some(s),
            ServiceAttr::PeName(v) => pe = Some(v.clone()),
            ServiceAttr::Stats64(s) => stats64 = Some(s),
            ServiceAttr::Other(_) => {}
        }
    }
    let af = af.ok_or_else(|| missing("service AF"))?;
    let family = Family::from_raw(af)
        .ok_or_else(|| DecodeError::from(format!("unknown service address family {af}")))?;
    let key = match mark {
        Some(mark) if mark != 0 => ServiceKey::FwMark { mark, family },
        _ => {
            let p = proto.ok_or_else(|| missing("service PROTOCOL"))?;
            let protocol = Protocol::from_raw(p)
                .ok_or_else(|| DecodeError::from(format!("unknown service protocol {p}")))?;
            let ip = addr
                .ok_or_else(|| missing("service ADDR"))?
                .to_ip(family == Family::Inet6)?;
            let port = port.ok_or_else(|| missing("service PORT"))?;
            ServiceKey::new(protocol, SocketAddr::new(ip, port))
        }
    };
    let netmask = match netmask {
        Some(raw) => netmask_from_raw(family, raw)?,
        None => family.max_prefix(),
    };
    Ok(ServiceEntry {
        service: Service {
            key,
            scheduler: Scheduler::from_name(sched.ok_or_else(|| missing("service SCHED_NAME"))?),
            flags: ServiceFlags::from_kernel(flags),
            timeout,
            netmask,
            pe_name: pe,
        },
        stats: stats64
            .or(stats)
            .map(|s| stats_from_attrs(s))
            .unwrap_or_default(),
    })
}

/// A destination entry from a reply's dest nest. Without ADDR_FAMILY (old
/// kernels) the destination has the service's family.
pub fn destination_from_attrs(
    attrs: &[DestAttr],
    service_family: Family,
) -> Result<DestinationEntry, DecodeError> {
    let (mut addr, mut port, mut fwd, mut af) = (None, None, None, None);
    let mut d = Destination::masq(SocketAddr::from(([0, 0, 0, 0], 0)));
    let (mut active, mut inactive, mut persist) = (0, 0, 0);
    let (mut stats, mut stats64) = (None, None);
    for a in attrs {
        match a {
            DestAttr::Address(v) => addr = Some(*v),
            DestAttr::Port(v) => port = Some(*v),
            DestAttr::FwdMethod(v) => fwd = Some(*v),
            DestAttr::Weight(v) => d.weight = *v,
            DestAttr::UpperThreshold(v) => d.upper_threshold = *v,
            DestAttr::LowerThreshold(v) => d.lower_threshold = *v,
            DestAttr::ActiveConns(v) => active = *v,
            DestAttr::InactiveConns(v) => inactive = *v,
            DestAttr::PersistConns(v) => persist = *v,
            DestAttr::Stats(s) => stats = Some(s),
            DestAttr::AddressFamily(v) => af = Some(*v),
            DestAttr::Stats64(s) => stats64 = Some(s),
            DestAttr::TunType(v) => {
                d.tunnel_type = TunnelType::from_raw(*v)
                    .ok_or_else(|| DecodeError::from(format!("unknown tunnel type {v}")))?
            }
            DestAttr::TunPort(v) => d.tunnel_port = *v,
            DestAttr::TunFlags(v) => {
                d.tunnel_checksum = TunnelChecksum::from_raw(*v)
                    .ok_or_else(|| DecodeError::from(format!("unknown tunnel flags {v:#x}")))?
            }
            DestAttr::Other(_) => {}
        }
    }
    let family = match af {
        Some(af) => Family::from_raw(af)
            .ok_or_else(|| DecodeError::from(format!("unknown destination family {af}")))?,
        None => service_family,
    };
    let ip: IpAddr = addr
        .ok_or_else(|| missing("destination ADDR"))?
        .to_ip(family == Family::Inet6)?;
    d.addr = SocketAddr::new(ip, port.ok_or_else(|| missing("destination PORT"))?);
    let fwd = fwd.ok_or_else(|| missing("destination FWD_METHOD"))?;
    d.forward = ForwardMethod::from_raw(fwd)
        .ok_or_else(|| DecodeError::from(format!("unknown forwarding method {fwd:#x}")))?;
    Ok(DestinationEntry {
        destination: d,
        active_conns: active,
        inactive_conns: inactive,
        persist_conns: persist,
        stats: stats64
            .or(stats)
            .map(|s| stats_from_attrs(s))
            .unwrap_or_default(),
    })
}

/// Timeouts from a GET_CONFIG reply (command SET_CONFIG).
pub fn timeouts_from_attrs(attrs: &IpvsAttrs) -> Timeouts {
    let mut t = Timeouts::default();
    if let IpvsAttrs::Cmd(attrs) = attrs {
        for a in attrs {
            match a {
                CmdAttr::TimeoutTcp(v) => t.tcp = *v,
                CmdAttr::TimeoutTcpFin(v) => t.tcp_fin = *v,
                CmdAttr::TimeoutUdp(v) => t.udp = *v,
                _ => {}
            }
        }
    }
    t
}

/// SET_CONFIG attributes; a zero timeout is left out (the kernel would ignore it anyway).
pub fn timeouts_attrs(t: &Timeouts) -> Vec<CmdAttr> {
    let mut v = Vec::with_capacity(3);
    if t.tcp != 0 {
        v.push(CmdAttr::TimeoutTcp(t.tcp));
    }
    if t.tcp_fin != 0 {
        v.push(CmdAttr::TimeoutTcpFin(t.tcp_fin));
    }
    if t.udp != 0 {
        v.push(CmdAttr::TimeoutUdp(t.udp));
    }
    v
}

/// Info from a GET_INFO reply (command SET_INFO).
pub fn info_from_attrs(attrs: &IpvsAttrs) -> Result<Info, DecodeError> {
    let IpvsAttrs::Info(attrs) = attrs else {
        return Err(DecodeError::from(
            "GET_INFO reply is not a SET_INFO message",
        ));
    };
    let (mut version, mut size) = (None, None);
    for a in attrs {
        match a {
            InfoAttr::Version(v) => version = Some(*v),
            InfoAttr::ConnTabSize(v) => size = Some(*v),
            InfoAttr::Other(_) => {}
        }
    }
    Ok(Info {
        version: version.ok_or_else(|| missing("INFO_ATTR_VERSION"))?,
        conn_table_size: size.ok_or_else(|| missing("INFO_ATTR_CONN_TAB_SIZE"))?,
    })
}

/// The service nest a reply would carry for `svc` (16-byte address, mask all ones).
pub fn service_reply_attrs(entry: &ServiceEntry) -> Vec<ServiceAttr> {
    let svc = &entry.service;
    let mut v = Vec::with_capacity(10);
    v.push(ServiceAttr::AddressFamily(svc.key.family().as_raw()));
    match svc.key {
        ServiceKey::FwMark { mark, .. } => v.push(ServiceAttr::FwMark(mark)),
        _ => {
            if let (Some(p), Some(a)) = (svc.key.protocol(), svc.key.addr()) {
                v.push(ServiceAttr::Protocol(p.as_raw()));
                v.push(ServiceAttr::Address(RawAddr::padded(a.ip())));
                v.push(ServiceAttr::Port(a.port()));
            }
        }
    }
    v.push(ServiceAttr::SchedName(svc.scheduler.name().to_owned()));
    if let Some(pe) = &svc.pe_name {
        v.push(ServiceAttr::PeName(pe.clone()));
    }
    v.push(ServiceAttr::Flags(FlagsMask {
        flags: svc.flags.bits() | ServiceFlags::HASHED.bits(),
        mask: u32::MAX,
    }));
    v.push(ServiceAttr::Timeout(svc.timeout));
    v.push(ServiceAttr::Netmask(netmask_to_raw(
        svc.key.family(),
        svc.netmask,
    )));
    v.push(ServiceAttr::Stats(stats_attrs(&entry.stats, false)));
    v.push(ServiceAttr::Stats64(stats_attrs(&entry.stats, true)));
    v
}

/// A STATS (legacy widths: bytes 64-bit, the rest 32-bit) or STATS64 nest.
pub fn stats_attrs(s: &Stats, wide: bool) -> Vec<StatsAttr> {
    let c = |v: u64| {
        if wide {
            Counter::U64(v)
        } else {
            Counter::U32(v as u32)
        }
    };
    vec![
        StatsAttr::Conns(c(s.conns)),
        StatsAttr::InPkts(c(s.inpkts)),
        StatsAttr::OutPkts(c(s.outpkts)),
        StatsAttr::InBytes(Counter::U64(s.inbytes)),
        StatsAttr::OutBytes(Counter::U64(s.outbytes)),
        StatsAttr::Cps(c(s.cps)),
        StatsAttr::InPps(c(s.inpps)),
        StatsAttr::OutPps(c(s.outpps)),
        StatsAttr::InBps(c(s.inbps)),
        StatsAttr::OutBps(c(s.outbps)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_number_like_the_kernel() {
        for n in 0..=255u8 {
            assert_eq!(u8::from(IpvsCmd::from(n)), n);
        }
        assert_eq!(u8::from(IpvsCmd::GetInfo), 15);
        assert_eq!(u8::from(IpvsCmd::Flush), 17);
        assert_eq!(IpvsCmd::from(14), IpvsCmd::SetInfo);
    }

    #[test]
    fn ipv4_netmask_is_a_big_endian_mask() {
        assert_eq!(
            netmask_to_raw(Family::Inet, 32).to_ne_bytes(),
            [0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(
            netmask_to_raw(Family::Inet, 24).to_ne_bytes(),
            [0xff, 0xff, 0xff, 0]
        );
        assert_eq!(netmask_to_raw(Family::Inet, 0), 0);
        assert_eq!(netmask_to_raw(Family::Inet6, 64), 64);
        for p in 0..=32 {
            assert_eq!(
                netmask_from_raw(Family::Inet, netmask_to_raw(Family::Inet, p)).unwrap(),
                p
            );
        }
        let holey = u32::from_ne_bytes([0xff, 0, 0xff, 0]);
        assert!(netmask_from_raw(Family::Inet, holey).is_err());
        assert!(netmask_from_raw(Family::Inet6, 129).is_err());
    }

    #[test]
    fn request_layout() {
        let key = ServiceKey::Tcp("10.0.0.1:80".parse().unwrap());
        let msg = IpvsMessage::new(
            IpvsCmd::DelService,
            vec![CmdAttr::Service(service_key_attrs(&key))],
        );
        let mut buf = vec![0xee; 3];
        msg.append_request(0x1e, &mut buf);
        let b = &buf[3..];
        assert_eq!(b.len() % 4, 0);
        let h = MsgHeader::parse(b).unwrap();
        assert_eq!(h.msg_type, 0x1e);
        assert_eq!(h.len as usize, b.len());
        assert_eq!(&b[16..20], &[3, 1, 0, 0]);
        let back = IpvsMessage::parse(&b[16..]).unwrap();
        assert_eq!(back, msg);
    }

    #[test]
    fn missing_or_bad_attributes_are_decode_errors() {
        assert!(service_from_attrs(&[]).is_err());
        assert!(service_from_attrs(&[ServiceAttr::AddressFamily(2)]).is_err());
        assert!(service_from_attrs(&[ServiceAttr::AddressFamily(99)]).is_err());
        let v6_short = [
            ServiceAttr::AddressFamily(10),
            ServiceAttr::Protocol(6),
            ServiceAttr::Address(RawAddr::from_ip("1.2.3.4".parse().unwrap())),
            ServiceAttr::Port(1),
            ServiceAttr::SchedName("rr".into()),
        ];
        assert!(service_from_attrs(&v6_short).is_err());
        assert!(destination_from_attrs(&[], Family::Inet).is_err());
        assert!(
            destination_from_attrs(
                &[
                    DestAttr::Address(RawAddr::from_ip("1.2.3.4".parse().unwrap())),
                    DestAttr::Port(1),
                    DestAttr::FwdMethod(7),
                ],
                Family::Inet
            )
            .is_err()
        );
        assert!(info_from_attrs(&IpvsAttrs::Cmd(vec![])).is_err());
    }
}
