//! Proxy configuration: what the flags and the config file decide about the desired state.

use std::net::IpAddr;

use ipvs_netlink::ipvs::{Family, Scheduler, Timeouts};

pub use crate::state::Cidr;

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
