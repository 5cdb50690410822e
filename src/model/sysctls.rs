//! The sysctls IPVS mode needs, from the configuration (upstream proxier.go).

use std::collections::BTreeMap;

use ipvs_netlink::ipvs::Family;

use super::config::ProxyConfig;

/// Sysctls IPVS mode needs (upstream proxier.go). `expire_quiescent_template`
/// makes persistence templates pointing at a weight-0 real server expire, so
/// ClientIP affinity never pins new connections to a draining server (#71809).
/// `conn_reuse_mode` depends on the kernel version and is left to the apply layer.
pub fn desired_sysctls(cfg: &ProxyConfig) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut set = |k: &str, v: &str| {
        m.insert(k.to_string(), v.to_string());
    };
    set("net.ipv4.vs.conntrack", "1");
    set("net.ipv4.vs.expire_nodest_conn", "1");
    set("net.ipv4.vs.expire_quiescent_template", "1");
    if cfg.serves(Family::Inet) {
        set("net.ipv4.ip_forward", "1");
    }
    if cfg.serves(Family::Inet6) {
        set("net.ipv6.conf.all.forwarding", "1");
    }
    if cfg.strict_arp {
        // Only the interface owning an address answers ARP for it (metallb #153).
        set("net.ipv4.conf.all.arp_ignore", "1");
        set("net.ipv4.conf.all.arp_announce", "2");
    }
    m
}
