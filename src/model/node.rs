//! This node as the proxy sees it: name, usable addresses, primary IPs, zone.

use std::net::IpAddr;

use ipvs_netlink::ipvs::Family;
use k8s_openapi::api::core::v1::Node;

use super::config::{NodePortAddresses, ProxyConfig};

/// Well-known zone label (`topology.kubernetes.io/zone`).
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    pub name: String,
    /// Addresses NodePorts may listen on: the node's local addresses (the
    /// caller passes interface addresses here; `from_node` uses Node status).
    pub addresses: Vec<IpAddr>,
    /// The primary IP per family (first InternalIP, else first ExternalIP).
    pub primary: Vec<IpAddr>,
    pub zone: Option<String>,
}

impl NodeInfo {
    /// Reads name, zone label and status addresses (InternalIP, ExternalIP) of a Node.
    /// Invalid address strings are skipped.
    pub fn from_node(node: &Node) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL))
            .filter(|z| !z.is_empty())
            .cloned();
        let mut internal = Vec::new();
        let mut external = Vec::new();
        for a in node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
        {
            let Ok(ip) = a.address.parse::<IpAddr>() else {
                continue;
            };
            match a.type_.as_str() {
                "InternalIP" => internal.push(ip),
                "ExternalIP" => external.push(ip),
                _ => {}
            }
        }
        let mut primary = Vec::new();
        for fam in [Family::Inet, Family::Inet6] {
            if let Some(ip) = internal
                .iter()
                .chain(external.iter())
                .find(|ip| Family::of(ip) == fam)
            {
                primary.push(*ip);
            }
        }
        let mut addresses: Vec<IpAddr> = internal.into_iter().chain(external).collect();
        addresses.sort();
        addresses.dedup();
        NodeInfo {
            name,
            addresses,
            primary,
            zone,
        }
    }

    /// Addresses of `family` on which NodePort virtual services are created:
    /// never loopback, unspecified or IPv6 link-local (upstream excludes them).
    pub fn node_port_ips(&self, cfg: &ProxyConfig, family: Family) -> Vec<IpAddr> {
        let usable = |ip: &IpAddr| {
            Family::of(ip) == family
                && !ip.is_loopback()
                && !ip.is_unspecified()
                && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
        };
        let mut out: Vec<IpAddr> = match &cfg.node_port_addresses {
            NodePortAddresses::All => self.addresses.iter().copied().filter(usable).collect(),
            NodePortAddresses::Primary => self.primary.iter().copied().filter(usable).collect(),
            NodePortAddresses::Cidrs(cidrs) => self
                .addresses
                .iter()
                .copied()
                .filter(|ip| usable(ip) && cidrs.iter().any(|c| c.contains(ip)))
                .collect(),
        };
        out.sort();
        out.dedup();
        out
    }

    pub fn has_address(&self, ip: &IpAddr) -> bool {
        self.addresses.contains(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node() -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                labels: Some([(ZONE_LABEL.to_string(), "z1".to_string())].into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: "n1".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "192.168.0.10".into(),
                    },
                    NodeAddress {
                        type_: "ExternalIP".into(),
                        address: "203.0.113.10".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "fd00::10".into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: "not-an-ip".into(),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn from_node_reads_addresses_zone_primary() {
        let n = NodeInfo::from_node(&node());
        assert_eq!(n.name, "n1");
        assert_eq!(n.zone.as_deref(), Some("z1"));
        assert_eq!(n.addresses.len(), 3);
        assert_eq!(
            n.primary,
            vec![
                "192.168.0.10".parse::<IpAddr>().unwrap(),
                "fd00::10".parse().unwrap()
            ]
        );
    }

    #[test]
    fn node_port_ips_respect_node_port_addresses() {
        let mut n = NodeInfo::from_node(&node());
        n.addresses.push("127.0.0.1".parse().unwrap());
        n.addresses.push("fe80::1".parse().unwrap());
        let mut cfg = ProxyConfig::default();
        assert_eq!(n.node_port_ips(&cfg, Family::Inet).len(), 2);
        assert_eq!(n.node_port_ips(&cfg, Family::Inet6).len(), 1);
        cfg.node_port_addresses = NodePortAddresses::Primary;
        assert_eq!(
            n.node_port_ips(&cfg, Family::Inet),
            vec!["192.168.0.10".parse::<IpAddr>().unwrap()]
        );
        cfg.node_port_addresses = NodePortAddresses::Cidrs(vec!["203.0.113.0/24".parse().unwrap()]);
        assert_eq!(
            n.node_port_ips(&cfg, Family::Inet),
            vec!["203.0.113.10".parse::<IpAddr>().unwrap()]
        );
        assert!(n.node_port_ips(&cfg, Family::Inet6).is_empty());
    }
}
