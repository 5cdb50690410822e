//! The typed IPVS domain: what a virtual service or real server *is*, kept apart
//! from what the kernel observes about it (connection counts, statistics).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Address family of a service or destination (`AF_INET` / `AF_INET6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Inet,
    Inet6,
}

impl Family {
    /// `AF_INET` = 2, `AF_INET6` = 10, as the kernel numbers them.
    pub const fn as_raw(self) -> u16 {
        match self {
            Family::Inet => 2,
            Family::Inet6 => 10,
        }
    }

    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            2 => Some(Family::Inet),
            10 => Some(Family::Inet6),
            _ => None,
        }
    }

    pub const fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::Inet,
            IpAddr::V6(_) => Family::Inet6,
        }
    }

    /// Longest prefix of this family: 32 or 128.
    pub const fn max_prefix(self) -> u8 {
        match self {
            Family::Inet => 32,
            Family::Inet6 => 128,
        }
    }
}

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// `IPPROTO_TCP` 6, `IPPROTO_UDP` 17, `IPPROTO_SCTP` 132.
    pub const fn as_raw(self) -> u16 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            132 => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// The identity of a virtual service: protocol + address + port, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Sctp(SocketAddr),
    FwMark { mark: u32, family: Family },
}

impl ServiceKey {
    pub fn new(protocol: Protocol, addr: SocketAddr) -> Self {
        match protocol {
            Protocol::Tcp => ServiceKey::Tcp(addr),
            Protocol::Udp => ServiceKey::Udp(addr),
            Protocol::Sctp => ServiceKey::Sctp(addr),
        }
    }

    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Tcp(a) | ServiceKey::Udp(a) | ServiceKey::Sctp(a) => Family::of(&a.ip()),
            ServiceKey::FwMark { family, .. } => *family,
        }
    }

    /// The protocol, or `None` for a firewall-mark service.
    pub fn protocol(&self) -> Option<Protocol> {
        match self {
            ServiceKey::Tcp(_) => Some(Protocol::Tcp),
            ServiceKey::Udp(_) => Some(Protocol::Udp),
            ServiceKey::Sctp(_) => Some(Protocol::Sctp),
            ServiceKey::FwMark { .. } => None,
        }
    }

    /// The socket address, or `None` for a firewall-mark service.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self {
            ServiceKey::Tcp(a) | ServiceKey::Udp(a) | ServiceKey::Sctp(a) => Some(*a),
            ServiceKey::FwMark { .. } => None,
        }
    }
}

impl fmt::Display for ServiceKey {
    /// The way ipvsadm names a service: `TCP 10.0.0.1:80`, `FWM 7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Tcp(a) => write!(f, "TCP {a}"),
            ServiceKey::Udp(a) => write!(f, "UDP {a}"),
            ServiceKey::Sctp(a) => write!(f, "SCTP {a}"),
            ServiceKey::FwMark {
                mark,
                family: Family::Inet,
            } => write!(f, "FWM {mark}"),
            ServiceKey::FwMark {
                mark,
                family: Family::Inet6,
            } => write!(f, "FWM {mark} IPv6"),
        }
    }
}

/// A scheduler, by the name the kernel registers it under (`ip_vs_<name>` module).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheduler {
    RoundRobin,
    WeightedRoundRobin,
    LeastConnection,
    WeightedLeastConnection,
    LocalityBasedLeastConnection,
    LocalityBasedLeastConnectionReplication,
    DestinationHashing,
    SourceHashing,
    ShortestExpectedDelay,
    NeverQueue,
    Maglev,
    WeightedFailover,
    WeightedOverflow,
    /// A scheduler this crate does not name (a newer or out-of-tree module).
    Other(String),
}

impl Scheduler {
    /// Kernel limit on scheduler and persistence-engine names, NUL included.
    pub const NAME_MAXLEN: usize = 16;

    pub fn name(&self) -> &str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnection => "lc",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::LocalityBasedLeastConnection => "lblc",
            Scheduler::LocalityBasedLeastConnectionReplication => "lblcr",
            Scheduler::DestinationHashing => "dh",
            Scheduler::SourceHashing => "sh",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
            Scheduler::Maglev => "mh",
            Scheduler::WeightedFailover => "fo",
            Scheduler::WeightedOverflow => "ovf",
            Scheduler::Other(name) => name,
        }
    }

    /// Maps a kernel scheduler name to its variant; unknown names become `Other`.
    pub fn from_name(name: &str) -> Self {
        match name {
            "rr" => Scheduler::RoundRobin,
            "wrr" => Scheduler::WeightedRoundRobin,
            "lc" => Scheduler::LeastConnection,
            "wlc" => Scheduler::WeightedLeastConnection,
            "lblc" => Scheduler::LocalityBasedLeastConnection,
            "lblcr" => Scheduler::LocalityBasedLeastConnectionReplication,
            "dh" => Scheduler::DestinationHashing,
            "sh" => Scheduler::SourceHashing,
            "sed" => Scheduler::ShortestExpectedDelay,
            "nq" => Scheduler::NeverQueue,
            "mh" => Scheduler::Maglev,
            "fo" => Scheduler::WeightedFailover,
            "ovf" => Scheduler::WeightedOverflow,
            other => Scheduler::Other(other.to_string()),
        }
    }
}

impl Default for Scheduler {
    /// ipvsadm's and kube-proxy's default.
    fn default() -> Self {
        Scheduler::RoundRobin
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Virtual service flags (`IP_VS_SVC_F_*`), without the kernel-owned HASHED bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceFlags(u32);

impl ServiceFlags {
    pub const PERSISTENT: Self = Self(0x0001);
    /// Set by the kernel on every hashed service; never part of our identity.
    pub const HASHED: Self = Self(0x0002);
    pub const ONEPACKET: Self = Self(0x0004);
    pub const SCHED1: Self = Self(0x0008);
    pub const SCHED2: Self = Self(0x0010);
    pub const SCHED3: Self = Self(0x0020);
    /// `sh-fallback` / `mh-fallback` (scheduler flag 1).
    pub const SH_FALLBACK: Self = Self::SCHED1;
    /// `sh-port` / `mh-port` (scheduler flag 2).
    pub const SH_PORT: Self = Self::SCHED2;
    pub const MH_FALLBACK: Self = Self::SCHED1;
    pub const MH_PORT: Self = Self::SCHED2;

    pub const fn empty() -> Self {
        Self(0)
    }

    /// From the kernel's bits, dropping HASHED (the kernel sets it itself).
    pub const fn from_kernel(bits: u32) -> Self {
        Self(bits & !Self::HASHED.0)
    }

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    pub fn remove(&mut self, other: Self) {
        self.0 &= !other.0;
    }
}

impl std::ops::BitOr for ServiceFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// A virtual service as configured: identity plus settings, no observed state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: Scheduler,
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (meaningful with `PERSISTENT`).
    pub timeout: u32,
    /// Persistence granularity as a prefix length (32 / 128 = per client address).
    pub netmask: u8,
    /// Persistence engine name (e.g. "sip"), if any.
    pub pe_name: Option<String>,
}

impl Service {
    /// A plain service with the default scheduler: no persistence, host netmask.
    pub fn new(key: ServiceKey) -> Self {
        Service {
            netmask: key.family().max_prefix(),
            key,
            scheduler: Scheduler::default(),
            flags: ServiceFlags::empty(),
            timeout: 0,
            pe_name: None,
        }
    }
}

/// How IPVS forwards to a real server (`IP_VS_CONN_F_*` & `IP_VS_CONN_F_FWD_MASK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum ForwardMethod {
    #[default]
    Masq,
    Local,
    Tunnel,
    DirectRoute,
    Bypass,
}

impl ForwardMethod {
    pub const fn as_raw(self) -> u32 {
        match self {
            ForwardMethod::Masq => 0,
            ForwardMethod::Local => 1,
            ForwardMethod::Tunnel => 2,
            ForwardMethod::DirectRoute => 3,
            ForwardMethod::Bypass => 4,
        }
    }

    /// Only the low three bits carry the method (`IP_VS_CONN_F_FWD_MASK`).
    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw & 0x7 {
            0 => Some(ForwardMethod::Masq),
            1 => Some(ForwardMethod::Local),
            2 => Some(ForwardMethod::Tunnel),
            3 => Some(ForwardMethod::DirectRoute),
            4 => Some(ForwardMethod::Bypass),
            _ => None,
        }
    }
}

/// Encapsulation of a tunnel destination (`IP_VS_CONN_F_TUNNEL_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum TunnelType {
    #[default]
    IpIp,
    Gue,
    Gre,
}

impl TunnelType {
    pub const fn as_raw(self) -> u8 {
        match self {
            TunnelType::IpIp => 0,
            TunnelType::Gue => 1,
            TunnelType::Gre => 2,
        }
    }

    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(TunnelType::IpIp),
            1 => Some(TunnelType::Gue),
            2 => Some(TunnelType::Gre),
            _ => None,
        }
    }
}

/// Tunnel checksum mode (`IP_VS_TUNNEL_ENCAP_FLAG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum TunnelChecksum {
    #[default]
    NoChecksum,
    Checksum,
    RemoteChecksum,
}

impl TunnelChecksum {
    pub const fn as_raw(self) -> u16 {
        match self {
            TunnelChecksum::NoChecksum => 0,
            TunnelChecksum::Checksum => 1 << 0,
            TunnelChecksum::RemoteChecksum => 1 << 1,
        }
    }

    pub const fn from_raw(raw: u16) -> Option<Self> {
        match raw {
            0 => Some(TunnelChecksum::NoChecksum),
            1 => Some(TunnelChecksum::Checksum),
            2 => Some(TunnelChecksum::RemoteChecksum),
            _ => None,
        }
    }
}

/// A real server as configured: identity plus settings, no observed state.
///
/// The address family is the address's own; it may differ from the service's
/// only with tunnel forwarding (kernel rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    pub addr: SocketAddr,
    pub forward: ForwardMethod,
    pub weight: u32,
    pub upper_threshold: u32,
    pub lower_threshold: u32,
    pub tunnel_type: TunnelType,
    pub tunnel_port: u16,
    pub tunnel_checksum: TunnelChecksum,
}

impl Destination {
    /// A masquerading real server with weight 1 and no thresholds, as kube-proxy makes them.
    pub fn masq(addr: SocketAddr) -> Self {
        Destination {
            addr,
            forward: ForwardMethod::Masq,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
            tunnel_type: TunnelType::IpIp,
            tunnel_port: 0,
            tunnel_checksum: TunnelChecksum::NoChecksum,
        }
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr.ip())
    }
}

/// Traffic counters and rates of a service or destination, widened to 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Stats {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

/// A service as the kernel reports it: configuration plus observed statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub service: Service,
    pub stats: Stats,
}

/// A real server as the kernel reports it: configuration plus observed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationEntry {
    pub destination: Destination,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub stats: Stats,
}

/// IPVS connection timeouts in seconds (GET/SET_CONFIG); 0 on set leaves a value unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// IPVS version and connection hash table size (GET_INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// `IP_VS_VERSION_CODE`, e.g. 0x010201 for 1.2.1.
    pub version: u32,
    pub conn_table_size: u32,
}

impl Info {
    /// The version as ipvsadm prints it: `1.2.1`.
    pub fn version_string(&self) -> String {
        format!(
            "{}.{}.{}",
            (self.version >> 16) & 0xff,
            (self.version >> 8) & 0xff,
            self.version & 0xff
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_names_round_trip() {
        for name in [
            "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf",
            "twos",
        ] {
            assert_eq!(Scheduler::from_name(name).name(), name);
        }
        assert_eq!(
            Scheduler::from_name("twos"),
            Scheduler::Other("twos".into())
        );
    }

    #[test]
    fn hashed_flag_is_dropped_from_kernel_bits() {
        let f = ServiceFlags::from_kernel(0x2 | 0x1 | 0x10);
        assert_eq!(f, ServiceFlags::PERSISTENT | ServiceFlags::SH_PORT);
        assert!(!f.contains(ServiceFlags::HASHED));
    }

    #[test]
    fn forward_method_reads_only_the_mask_bits() {
        assert_eq!(
            ForwardMethod::from_raw(0x1000 | 3),
            Some(ForwardMethod::DirectRoute)
        );
        assert_eq!(ForwardMethod::from_raw(5), None);
        for m in [
            ForwardMethod::Masq,
            ForwardMethod::Local,
            ForwardMethod::Tunnel,
            ForwardMethod::DirectRoute,
            ForwardMethod::Bypass,
        ] {
            assert_eq!(ForwardMethod::from_raw(m.as_raw()), Some(m));
        }
    }

    #[test]
    fn service_key_display_matches_ipvsadm_naming() {
        let k = ServiceKey::Tcp("10.0.0.1:80".parse().unwrap());
        assert_eq!(k.to_string(), "TCP 10.0.0.1:80");
        assert_eq!(k.family(), Family::Inet);
        let k = ServiceKey::FwMark {
            mark: 7,
            family: Family::Inet6,
        };
        assert_eq!(k.protocol(), None);
        assert_eq!(Service::new(k).netmask, 128);
    }

    #[test]
    fn info_version_string() {
        assert_eq!(
            Info {
                version: 0x010201,
                conn_table_size: 4096
            }
            .version_string(),
            "1.2.1"
        );
    }
}
