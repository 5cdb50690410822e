//! Proxy configuration and the small CIDR type the model needs.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipvs_netlink::ipvs::{Family, Scheduler, Timeouts};

/// An IP prefix, normalised so host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Builds a prefix, clearing host bits; `None` if the length is too long.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Self> {
        let fam = Family::of(&addr);
        if prefix > fam.max_prefix() {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - prefix)
                };
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = if prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - prefix)
                };
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Some(Cidr { addr, prefix })
    }

    /// A single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Cidr {
            prefix: Family::of(&addr).max_prefix(),
            addr,
        }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Cidr::new(*ip, self.prefix).is_some_and(|c| c.addr == self.addr)
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// Accepts `a.b.c.d/n`, `x::/n`, or a bare address (a host prefix).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.split_once('/') {
            Some((a, p)) => {
                let addr: IpAddr = a.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
                let prefix: u8 = p.parse().map_err(|_| format!("invalid CIDR {s:?}"))?;
                Cidr::new(addr, prefix).ok_or_else(|| format!("invalid CIDR {s:?}"))
            }
            None => s
                .parse::<IpAddr>()
                .map(Cidr::host)
                .map_err(|_| format!("invalid CIDR {s:?}")),
        }
    }
}

/// Where NodePort virtual services are created (`nodePortAddresses`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NodePortAddresses {
    /// Every usable node address (upstream default: all local addresses but
    /// loopback, IPv6 link-local and kube-ipvs0's).
    #[default]
    All,
    /// Only the node's primary IP of each family (`nodePortAddresses: ["primary"]`).
    Primary,
    /// Node addresses inside one of these prefixes.
    Cidrs(Vec<Cidr>),
}

impl NodePortAddresses {
    /// Parses the config list; `None` if an entry is neither a CIDR nor "primary"
    /// (upstream rejects mixing "primary" with CIDRs as well).
    pub fn parse(list: &[String]) -> Option<Self> {
        if list.is_empty() {
            return Some(Self::All);
        }
        if list.len() == 1 && list[0] == "primary" {
            return Some(Self::Primary);
        }
        list.iter()
            .map(|s| s.parse::<Cidr>().ok())
            .collect::<Option<Vec<_>>>()
            .map(Self::Cidrs)
    }
}

/// Everything the pure core needs from the proxy configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Global default scheduler (upstream: "" means rr).
    pub scheduler: Scheduler,
    pub masquerade_all: bool,
    /// Bit of the packet mark that requests SNAT (upstream default 14 → 0x4000).
    pub masquerade_bit: u8,
    /// Pod CIDRs for detect-local (one per family at most is used per family).
    pub cluster_cidrs: Vec<Cidr>,
    pub node_port_addresses: NodePortAddresses,
    pub strict_arp: bool,
    /// `excludeCIDRs`, as upstream: IPVS services inside these prefixes that
    /// kube-ipvs neither wants nor made are never adopted or deleted.
    /// Services whose addresses are inside are programmed as any other.
    pub exclude_cidrs: Vec<Cidr>,
    /// IPVS timeouts; zeroes mean "leave the kernel's value".
    pub timeouts: Timeouts,
    /// Upper bound on how long a removed TCP real server drains at weight 0.
    pub drain_timeout_secs: u64,
    /// The address families this proxy serves.
    pub families: Vec<Family>,
    /// NodePort range: IPVS services on node addresses in this range are ours.
    pub node_port_range: (u16, u16),
    /// A Service needing more IPVS virtual servers than this on the node is
    /// refused whole (0 = no cap); see [`DEFAULT_MAX_VIRTUAL_SERVERS_PER_SERVICE`].
    pub max_virtual_servers_per_service: u64,
}

/// Default cap on one Service's virtual servers. The largest legitimate
/// Service we can count is a dual-stack LoadBalancer using the whole default
/// NodePort range (2,768 ports, 30000-32767, which bounds any Service that
/// needs NodePorts), with per family a clusterIP, 2 LB IPs, an externalIP and
/// NodePorts on 12 node addresses: 2,768 × 2 × 16 = 88,576. 100,000 keeps
/// room above that, while a single object can no longer make every node
/// build and program an unbounded IPVS table (planning 100,000 takes about
/// half a second; the kernel and its netlink dumps cost more).
pub const DEFAULT_MAX_VIRTUAL_SERVERS_PER_SERVICE: u64 = 100_000;

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            scheduler: Scheduler::RoundRobin,
            masquerade_all: false,
            masquerade_bit: 14,
            cluster_cidrs: Vec::new(),
            node_port_addresses: NodePortAddresses::All,
            strict_arp: false,
            exclude_cidrs: Vec::new(),
            timeouts: Timeouts::default(),
            drain_timeout_secs: 15 * 60,
            families: vec![Family::Inet, Family::Inet6],
            node_port_range: (30000, 32767),
            max_virtual_servers_per_service: DEFAULT_MAX_VIRTUAL_SERVERS_PER_SERVICE,
        }
    }
}

impl ProxyConfig {
    pub fn serves(&self, family: Family) -> bool {
        self.families.contains(&family)
    }

    pub fn is_excluded(&self, ip: &IpAddr) -> bool {
        self.exclude_cidrs.iter().any(|c| c.contains(ip))
    }

    /// The masquerade mark, `1 << masquerade_bit` (bit clamped to 0..=31).
    pub fn masquerade_mark(&self) -> u32 {
        1u32 << self.masquerade_bit.min(31)
    }

    pub fn cluster_cidr(&self, family: Family) -> Option<&Cidr> {
        self.cluster_cidrs.iter().find(|c| c.family() == family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_normalises_and_contains() {
        let c: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(&"10.200.0.1".parse().unwrap()));
        assert!(!c.contains(&"11.0.0.1".parse().unwrap()));
        assert!(!c.contains(&"::1".parse().unwrap()));
        let c: Cidr = "fd00::1/64".parse().unwrap();
        assert_eq!(c.to_string(), "fd00::/64");
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains(&"1.2.3.4".parse().unwrap())
        );
        assert_eq!("1.2.3.4".parse::<Cidr>().unwrap().prefix(), 32);
        for bad in ["1.2.3.4/33", "x/3", "1.2.3.4/", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn node_port_addresses_parse() {
        assert_eq!(NodePortAddresses::parse(&[]), Some(NodePortAddresses::All));
        assert_eq!(
            NodePortAddresses::parse(&["primary".into()]),
            Some(NodePortAddresses::Primary)
        );
        assert!(matches!(
            NodePortAddresses::parse(&["10.0.0.0/8".into()]),
            Some(NodePortAddresses::Cidrs(v)) if v.len() == 1
        ));
        assert_eq!(NodePortAddresses::parse(&["bogus".into()]), None);
    }

    #[test]
    fn masquerade_mark_from_bit() {
        let c = ProxyConfig::default();
        assert_eq!(c.masquerade_mark(), 0x4000);
    }
}
