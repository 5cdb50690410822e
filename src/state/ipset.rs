//! The ipsets upstream IPVS mode maintains: names, types, entries, `ipset save` text.

use std::fmt;
use std::net::IpAddr;

use ipvs_netlink::ipvs::{Family, Protocol};

use super::Cidr;

/// Which set (family-independent); see upstream `pkg/proxy/ipvs/ipset.go`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetKind {
    LoopBack,
    ClusterIp,
    ExternalIp,
    ExternalIpLocal,
    LoadBalancer,
    LoadBalancerFw,
    LoadBalancerLocal,
    LoadBalancerSourceIp,
    LoadBalancerSourceCidr,
    NodePortTcp,
    NodePortLocalTcp,
    NodePortUdp,
    NodePortLocalUdp,
    NodePortSctp,
    NodePortLocalSctp,
    HealthCheckNodePort,
    IpvsIps,
}

impl SetKind {
    /// Sets whose `ip,proto:port` members name the virtual service of an
    /// externalIP or LoadBalancer IP, also one on a node address (never
    /// bound, so not in KUBE-IPVS-IPS): ownership after a restart rests on them.
    pub fn names_node_services(self) -> bool {
        matches!(
            self,
            SetKind::ExternalIp | SetKind::ExternalIpLocal | SetKind::LoadBalancer
        )
    }
}

/// The ipset type a kind is created with: the netlink client's own type.
pub use ipvs_netlink::ipset::SetType;

impl SetKind {
    pub const ALL: [SetKind; 17] = [
        SetKind::LoopBack,
        SetKind::ClusterIp,
        SetKind::ExternalIp,
        SetKind::ExternalIpLocal,
        SetKind::LoadBalancer,
        SetKind::LoadBalancerFw,
        SetKind::LoadBalancerLocal,
        SetKind::LoadBalancerSourceIp,
        SetKind::LoadBalancerSourceCidr,
        SetKind::NodePortTcp,
        SetKind::NodePortLocalTcp,
        SetKind::NodePortUdp,
        SetKind::NodePortLocalUdp,
        SetKind::NodePortSctp,
        SetKind::NodePortLocalSctp,
        SetKind::HealthCheckNodePort,
        SetKind::IpvsIps,
    ];

    /// (IPv4 name, IPv6 name): IPv6 names are `KUBE-6-…` cut to 31 characters
    /// (IPSET_MAXNAMELEN is 32 with the NUL), exactly as upstream computes them.
    pub const fn names(self) -> (&'static str, &'static str) {
        match self {
            SetKind::LoopBack => ("KUBE-LOOP-BACK", "KUBE-6-LOOP-BACK"),
            SetKind::ClusterIp => ("KUBE-CLUSTER-IP", "KUBE-6-CLUSTER-IP"),
            SetKind::ExternalIp => ("KUBE-EXTERNAL-IP", "KUBE-6-EXTERNAL-IP"),
            SetKind::ExternalIpLocal => ("KUBE-EXTERNAL-IP-LOCAL", "KUBE-6-EXTERNAL-IP-LOCAL"),
            SetKind::LoadBalancer => ("KUBE-LOAD-BALANCER", "KUBE-6-LOAD-BALANCER"),
            SetKind::LoadBalancerFw => ("KUBE-LOAD-BALANCER-FW", "KUBE-6-LOAD-BALANCER-FW"),
            SetKind::LoadBalancerLocal => {
                ("KUBE-LOAD-BALANCER-LOCAL", "KUBE-6-LOAD-BALANCER-LOCAL")
            }
            SetKind::LoadBalancerSourceIp => (
                "KUBE-LOAD-BALANCER-SOURCE-IP",
                "KUBE-6-LOAD-BALANCER-SOURCE-IP",
            ),
            SetKind::LoadBalancerSourceCidr => (
                "KUBE-LOAD-BALANCER-SOURCE-CIDR",
                "KUBE-6-LOAD-BALANCER-SOURCE-CID",
            ),
            SetKind::NodePortTcp => ("KUBE-NODE-PORT-TCP", "KUBE-6-NODE-PORT-TCP"),
            SetKind::NodePortLocalTcp => ("KUBE-NODE-PORT-LOCAL-TCP", "KUBE-6-NODE-PORT-LOCAL-TCP"),
            SetKind::NodePortUdp => ("KUBE-NODE-PORT-UDP", "KUBE-6-NODE-PORT-UDP"),
            SetKind::NodePortLocalUdp => ("KUBE-NODE-PORT-LOCAL-UDP", "KUBE-6-NODE-PORT-LOCAL-UDP"),
            SetKind::NodePortSctp => ("KUBE-NODE-PORT-SCTP-HASH", "KUBE-6-NODE-PORT-SCTP-HASH"),
            SetKind::NodePortLocalSctp => (
                "KUBE-NODE-PORT-LOCAL-SCTP-HASH",
                "KUBE-6-NODE-PORT-LOCAL-SCTP-HAS",
            ),
            SetKind::HealthCheckNodePort => (
                "KUBE-HEALTH-CHECK-NODE-PORT",
                "KUBE-6-HEALTH-CHECK-NODE-PORT",
            ),
            SetKind::IpvsIps => ("KUBE-IPVS-IPS", "KUBE-6-IPVS-IPS"),
        }
    }

    pub const fn set_type(self) -> SetType {
        match self {
            SetKind::LoopBack | SetKind::LoadBalancerSourceIp => SetType::HashIpPortIp,
            SetKind::LoadBalancerSourceCidr => SetType::HashIpPortNet,
            SetKind::NodePortTcp
            | SetKind::NodePortLocalTcp
            | SetKind::NodePortUdp
            | SetKind::NodePortLocalUdp
            | SetKind::HealthCheckNodePort => SetType::BitmapPort,
            SetKind::IpvsIps => SetType::HashIp,
            _ => SetType::HashIpPort,
        }
    }

    /// The comment upstream attaches to the set (also used in iptables rules).
    pub const fn comment(self) -> &'static str {
        match self {
            SetKind::LoopBack => {
                "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose"
            }
            SetKind::ClusterIp => "Kubernetes service cluster ip + port for masquerade purpose",
            SetKind::ExternalIp => {
                "Kubernetes service external ip + port for masquerade and filter purpose"
            }
            SetKind::ExternalIpLocal => {
                "Kubernetes service external ip + port with externalTrafficPolicy=local"
            }
            SetKind::LoadBalancer => "Kubernetes service lb portal",
            SetKind::LoadBalancerFw => {
                "Kubernetes service load balancer ip + port for load balancer with sourceRange"
            }
            SetKind::LoadBalancerLocal => {
                "Kubernetes service load balancer ip + port with externalTrafficPolicy=local"
            }
            SetKind::LoadBalancerSourceIp => {
                "Kubernetes service load balancer ip + port + source IP for packet filter purpose"
            }
            SetKind::LoadBalancerSourceCidr => {
                "Kubernetes service load balancer ip + port + source cidr for packet filter purpose"
            }
            SetKind::NodePortTcp => "Kubernetes nodeport TCP port for masquerade purpose",
            SetKind::NodePortLocalTcp => {
                "Kubernetes nodeport TCP port with externalTrafficPolicy=local"
            }
            SetKind::NodePortUdp => "Kubernetes nodeport UDP port for masquerade purpose",
            SetKind::NodePortLocalUdp => {
                "Kubernetes nodeport UDP port with externalTrafficPolicy=local"
            }
            SetKind::NodePortSctp => {
                "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'"
            }
            SetKind::NodePortLocalSctp => {
                "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'"
            }
            SetKind::HealthCheckNodePort => "Kubernetes health check node port",
            SetKind::IpvsIps => "Kubernetes ipvs addresses",
        }
    }
}

/// A set of one family, e.g. KUBE-6-CLUSTER-IP = (ClusterIp, Inet6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetName {
    pub kind: SetKind,
    pub family: Family,
}

impl SetName {
    pub const fn new(kind: SetKind, family: Family) -> Self {
        SetName { kind, family }
    }

    pub fn name(&self) -> &'static str {
        let (v4, v6) = self.kind.names();
        match self.family {
            Family::Inet => v4,
            Family::Inet6 => v6,
        }
    }

    /// Every set of the given families, in a stable order.
    pub fn all(families: &[Family]) -> Vec<SetName> {
        let mut v = Vec::new();
        for f in [Family::Inet, Family::Inet6] {
            if families.contains(&f) {
                v.extend(SetKind::ALL.iter().map(|k| SetName::new(*k, f)));
            }
        }
        v
    }

    /// Reverse lookup used when adopting kernel state: only our names match.
    pub fn from_name(name: &str) -> Option<SetName> {
        SetKind::ALL.iter().find_map(|k| {
            let (v4, v6) = k.names();
            if name == v4 {
                Some(SetName::new(*k, Family::Inet))
            } else if name == v6 {
                Some(SetName::new(*k, Family::Inet6))
            } else {
                None
            }
        })
    }

    /// The `create` line of `ipset save` (as upstream: hashsize 1024, maxelem 65536, no comment extension).
    pub fn create_line(&self) -> String {
        let fam = match self.family {
            Family::Inet => "inet",
            Family::Inet6 => "inet6",
        };
        match self.kind.set_type() {
            SetType::BitmapPort => {
                format!("create {} bitmap:port range 0-65535", self.name())
            }
            t => format!(
                "create {} {} family {fam} hashsize 1024 maxelem 65536",
                self.name(),
                t.name()
            ),
        }
    }
}

impl fmt::Display for SetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An ipset member; the variant must match the set's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpsetEntry {
    Port(u16),
    Ip(IpAddr),
    IpPort(IpAddr, Protocol, u16),
    IpPortIp(IpAddr, Protocol, u16, IpAddr),
    IpPortNet(IpAddr, Protocol, u16, Cidr),
}

pub(crate) fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

impl IpsetEntry {
    pub fn set_type(&self) -> SetType {
        match self {
            IpsetEntry::Port(_) => SetType::BitmapPort,
            IpsetEntry::Ip(_) => SetType::HashIp,
            IpsetEntry::IpPort(..) => SetType::HashIpPort,
            IpsetEntry::IpPortIp(..) => SetType::HashIpPortIp,
            IpsetEntry::IpPortNet(..) => SetType::HashIpPortNet,
        }
    }

    /// The family of the entry's addresses; `None` for a bare port.
    pub fn family(&self) -> Option<Family> {
        match self {
            IpsetEntry::Port(_) => None,
            IpsetEntry::Ip(a) | IpsetEntry::IpPort(a, ..) => Some(Family::of(a)),
            IpsetEntry::IpPortIp(a, _, _, b) => {
                (Family::of(a) == Family::of(b)).then(|| Family::of(a))
            }
            IpsetEntry::IpPortNet(a, _, _, n) => {
                (Family::of(a) == n.family()).then(|| Family::of(a))
            }
        }
    }

    /// Whether this entry may live in `set` (type and family agree).
    pub fn fits(&self, set: &SetName) -> bool {
        self.set_type() == set.kind.set_type() && self.family().is_none_or(|f| f == set.family)
    }
}

impl fmt::Display for IpsetEntry {
    /// As `ipset save` prints members: `10.0.0.1,tcp:80`, IPv6 unbracketed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpsetEntry::Port(p) => write!(f, "{p}"),
            IpsetEntry::Ip(a) => write!(f, "{a}"),
            IpsetEntry::IpPort(a, p, port) => write!(f, "{a},{}:{port}", proto_name(*p)),
            IpsetEntry::IpPortIp(a, p, port, b) => {
                write!(f, "{a},{}:{port},{b}", proto_name(*p))
            }
            IpsetEntry::IpPortNet(a, p, port, n) => {
                write!(f, "{a},{}:{port},{n}", proto_name(*p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limit_and_round_trip() {
        for s in SetName::all(&[Family::Inet, Family::Inet6]) {
            assert!(s.name().len() <= 31, "{}", s.name());
            assert_eq!(SetName::from_name(s.name()), Some(s));
            // IPv6 names are the IPv4 name with KUBE- → KUBE-6-, truncated.
            let (v4, v6) = s.kind.names();
            let expect: String = format!("KUBE-6-{}", &v4[5..]).chars().take(31).collect();
            assert_eq!(v6, expect);
        }
        assert_eq!(SetName::from_name("KUBE-OTHER"), None);
    }

    #[test]
    fn entries_render_like_ipset_save_and_check_type() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let e = IpsetEntry::IpPort(ip, Protocol::Tcp, 80);
        assert_eq!(e.to_string(), "10.0.0.1,tcp:80");
        let cidr: Cidr = "192.168.0.0/16".parse().unwrap();
        assert_eq!(
            IpsetEntry::IpPortNet(ip, Protocol::Udp, 53, cidr).to_string(),
            "10.0.0.1,udp:53,192.168.0.0/16"
        );
        assert!(e.fits(&SetName::new(SetKind::ClusterIp, Family::Inet)));
        assert!(!e.fits(&SetName::new(SetKind::ClusterIp, Family::Inet6)));
        assert!(!e.fits(&SetName::new(SetKind::NodePortTcp, Family::Inet)));
        assert!(IpsetEntry::Port(30000).fits(&SetName::new(SetKind::NodePortTcp, Family::Inet6)));
        assert_eq!(
            SetName::new(SetKind::NodePortTcp, Family::Inet).create_line(),
            "create KUBE-NODE-PORT-TCP bitmap:port range 0-65535"
        );
    }
}
