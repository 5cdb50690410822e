//! This node's identity (name, addresses) and a proxier built for it: what the daemon and the one-shot commands share.

use std::net::IpAddr;

use ipvs_netlink::ipvs::Family;

use anyhow::{Context, Result};

use crate::apply::DUMMY_LINK;
use crate::config::Settings;
use crate::model::config::ProxyConfig;
use crate::model::node::NodeInfo;
use crate::reconcile::Proxier;
use crate::source::manifests::Manifests;
use crate::sysctl::Sysctl;

/// The node name: --hostname-override, else $NODE_NAME, else the hostname;
/// trimmed and lowercased as upstream's `nodeutil.GetHostname`.
pub fn resolve_node_name(
    hostname_override: Option<&str>,
    env_node_name: Option<&str>,
    hostname: impl FnOnce() -> Option<String>,
) -> Option<String> {
    let pick = |s: &str| {
        let s = s.trim().to_lowercase();
        (!s.is_empty()).then_some(s)
    };
    hostname_override
        .and_then(pick)
        .or_else(|| env_node_name.and_then(pick))
        .or_else(|| hostname().as_deref().and_then(pick))
}

/// `resolve_node_name` with the process environment and the kernel hostname.
pub fn node_name(hostname_override: Option<&str>) -> Option<String> {
    let env = std::env::var("NODE_NAME").ok();
    resolve_node_name(hostname_override, env.as_deref(), || {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .ok()
    })
}

/// The node as the manifests describe it, or, without a Node object of that
/// name, from the node's own interface addresses (`local`).
pub fn node_info(name: &str, m: &Manifests, local: impl FnOnce() -> Vec<IpAddr>) -> NodeInfo {
    if let Some(n) = m.node(name) {
        return NodeInfo::from_node(n);
    }
    let addresses = local();
    let mut primary = Vec::new();
    for f in [Family::Inet, Family::Inet6] {
        if let Some(a) = addresses.iter().find(|a| Family::of(a) == f) {
            primary.push(*a);
        }
    }
    NodeInfo {
        name: name.to_string(),
        addresses,
        primary,
        zone: None,
    }
}

/// The node's own addresses (everything but kube-ipvs0, loopback, link-local).
pub fn local_addresses() -> Vec<IpAddr> {
    ipvs_netlink::link::RtnlClient::new()
        .and_then(|mut c| c.node_addresses(DUMMY_LINK))
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the node's addresses; NodePorts get none");
            Vec::new()
        })
}

/// A proxier fed with every object of the manifests.
pub fn proxier(cfg: ProxyConfig, node: NodeInfo, m: &Manifests) -> Proxier {
    let mut p = Proxier::new(cfg, node);
    for s in &m.services {
        p.upsert_service(s);
    }
    for s in &m.slices {
        p.upsert_slice(s);
    }
    p
}

/// Where a failed host setup points: what an unprivileged container cannot do.
const SETUP_HINT: &str = "an unprivileged container cannot write /proc/sys: run `kube-ipvs setup-host` with the same flags in a privileged init container first (deploy/daemonset.yaml does)";

/// The kernel settings every sync relies on, applied by the daemon at start:
/// the sysctls IPVS mode needs (for this kernel and configuration) and the
/// conntrack limits. Settings that already hold are not written, so after
/// [`setup_host`] ran in a privileged init container the proxy itself needs
/// no write access to `/proc/sys`. Returns one line per setting changed.
pub fn host_setup(settings: &Settings) -> Result<Vec<String>> {
    let sysctl = Sysctl::new();
    let mut changed: Vec<String> = sysctl
        .apply_proxy_settings(settings.proxy.strict_arp)
        .with_context(|| format!("cannot set the sysctls IPVS mode needs ({SETUP_HINT})"))?
        .into_iter()
        .map(|c| format!("{} = {} (was {})", c.key, c.new, c.old))
        .collect();
    let ct = crate::config::conntrack::apply_host(&settings.conntrack).with_context(|| {
        format!("cannot apply the conntrack settings (--conntrack-* / conntrack.*; {SETUP_HINT})")
    })?;
    for (k, v) in &ct.changed {
        tracing::info!(key = k, value = %v, "conntrack setting written");
        changed.push(format!("{k} = {v}"));
    }
    for w in &ct.warnings {
        tracing::warn!("{w}");
    }
    Ok(changed)
}

/// `kube-ipvs setup-host`: [`host_setup`], plus the sysctls the planner
/// keeps (and its periodic verification repairs), so a proxy that cannot
/// write `/proc/sys` finds every one of them already set.
pub fn setup_host(settings: &Settings) -> Result<Vec<String>> {
    let mut changed = host_setup(settings)?;
    let sysctl = Sysctl::new();
    for (key, value) in crate::model::sysctls::desired_sysctls(&settings.proxy) {
        let old = sysctl
            .set(&key, &value)
            .with_context(|| format!("cannot set {key} ({SETUP_HINT})"))?;
        if let Some(old) = old {
            tracing::info!(key, old, new = value, "sysctl set");
            changed.push(format!("{key} = {value} (was {old})"));
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_resolution() {
        let host = || Some("Host-1\n".to_string());
        assert_eq!(
            resolve_node_name(Some(" Over "), Some("env"), host).as_deref(),
            Some("over")
        );
        assert_eq!(
            resolve_node_name(Some(""), Some("Env"), host).as_deref(),
            Some("env")
        );
        assert_eq!(
            resolve_node_name(Some(" "), Some("Env"), host).as_deref(),
            Some("env")
        );
        assert_eq!(
            resolve_node_name(None, None, host).as_deref(),
            Some("host-1")
        );
        assert_eq!(resolve_node_name(None, Some("  "), || None), None);
    }

    #[test]
    fn node_from_manifests_or_local_addresses() {
        let mut m = Manifests::default();
        let local = || vec!["192.168.1.5".parse().unwrap(), "fd00::5".parse().unwrap()];
        let n = node_info("n1", &m, local);
        assert_eq!(n.name, "n1");
        assert_eq!(n.primary.len(), 2);
        m.nodes.push(crate::model::testutil::node_obj());
        let name = m.nodes[0].metadata.name.clone().unwrap();
        let n = node_info(&name, &m, || panic!("the Node object wins"));
        assert_eq!(n, NodeInfo::from_node(&m.nodes[0]));
    }
}
