//! One-shot runs from manifests: `plan` (no kernel), `sync-once` (adopt, apply, verify), `diff`, `cleanup`.

use std::collections::HashSet;
use std::fmt::Write;
use std::net::IpAddr;

use ipvs_netlink::ipvs::{Family, ServiceKey};

use super::{Applier, ApplyError, ApplyReport, DUMMY_LINK, ObserveError, diff};
use crate::model::config::ProxyConfig;
use crate::model::node::NodeInfo;
use crate::reconcile::{KernelState, Proxier};
use crate::source::manifests::Manifests;

/// Why a one-shot run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum OneshotError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("setting up {DUMMY_LINK}: {0}")]
    Setup(#[source] ApplyError),
}

/// The node name: the override, else `NODE_NAME`, else the kernel's hostname.
pub fn node_name(hostname_override: Option<&str>) -> String {
    let env = std::env::var("NODE_NAME").ok();
    pick_node_name(hostname_override, env.as_deref(), || {
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok()
    })
}

fn pick_node_name(
    over: Option<&str>,
    env: Option<&str>,
    hostname: impl FnOnce() -> Option<String>,
) -> String {
    let clean = |s: &str| Some(s.trim().to_lowercase()).filter(|s| !s.is_empty());
    over.and_then(clean)
        .or_else(|| env.and_then(clean))
        .or_else(|| hostname().as_deref().and_then(clean))
        .unwrap_or_else(|| "localhost".to_string())
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

/// The desired kernel state as text: `ipvsadm -Sn`, `ipset save`, the
/// iptables-restore payloads, kube-ipvs0's addresses, sysctls.
pub fn plan_text(p: &mut Proxier) -> String {
    let d = p.desired_state();
    let mut s = String::new();
    let _ = writeln!(s, "# IPVS (ipvsadm -Sn)");
    s.push_str(&crate::ipvsadm::save(&table(&d)));
    let _ = writeln!(s, "\n# ipsets (ipset save)");
    s.push_str(&d.ipset_save());
    let _ = writeln!(s, "\n# {DUMMY_LINK} addresses");
    let mut a: Vec<_> = d.addresses.iter().collect();
    a.sort();
    for a in a {
        let _ = writeln!(s, "{a}/{}", if a.is_ipv4() { 32 } else { 128 });
    }
    let _ = writeln!(s, "\n# iptables-restore --noflush payloads");
    s.push_str(&d.iptables_save());
    let _ = writeln!(s, "\n# sysctls");
    for (k, v) in &d.sysctls {
        let _ = writeln!(s, "{k} = {v}");
    }
    for (k, v) in p.warnings() {
        for w in v {
            let _ = writeln!(s, "# warning: {k}: {w}");
        }
    }
    s
}

/// The IPVS part of a state as the ipvsadm formatters take it, in key order
/// (standing in for the kernel's dump order, which a plan does not have yet).
pub fn table(d: &KernelState) -> Vec<crate::ipvsadm::TableEntry> {
    let mut keys: Vec<&ServiceKey> = d.services.keys().collect();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let ks = &d.services[k];
            let se = ipvs_netlink::ipvs::ServiceEntry {
                service: ks.service.clone(),
                stats: Default::default(),
            };
            let dests = ks
                .destinations
                .iter()
                .map(|dest| ipvs_netlink::ipvs::DestinationEntry {
                    destination: *dest,
                    active_conns: 0,
                    inactive_conns: 0,
                    persist_conns: 0,
                    stats: Default::default(),
                })
                .collect();
            (se, dests)
        })
        .collect()
}

/// What one `sync-once` did and found.
#[derive(Debug, Default)]
pub struct SyncSummary {
    /// kube-ipvs0 had to be created or fixed.
    pub link_changed: bool,
    /// Differences adoption found (one line per planned operation).
    pub repairs: Vec<String>,
    /// Adoption plan plus finished drains.
    pub report: ApplyReport,
    /// The operations of `report` that applied, one line each.
    pub applied: Vec<String>,
    /// Real servers left draining at weight 0 (they still had connections).
    pub draining: usize,
    /// What still differs after re-reading the kernel (`+` missing, `-` extra).
    pub remaining: Vec<String>,
    /// Planner bugs (never expected).
    pub internal_errors: Vec<String>,
}

impl SyncSummary {
    /// The kernel equals the desired state and nothing failed.
    pub fn converged(&self) -> bool {
        self.remaining.is_empty()
            && self.report.failed.is_empty()
            && self.internal_errors.is_empty()
    }

    /// Kernel writes this run made (link setup counts as one).
    pub fn writes(&self) -> usize {
        self.report.writes() + usize::from(self.link_changed)
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        if self.link_changed {
            let _ = writeln!(s, "set up {DUMMY_LINK} (dummy, down, NOARP)");
        }
        for op in &self.applied {
            let _ = writeln!(s, "applied: {op}");
        }
        for (op, e) in &self.report.failed {
            let _ = writeln!(s, "FAILED: {op}: {e}");
        }
        for (op, why) in &self.report.skipped {
            let _ = writeln!(s, "skipped: {op}: {why}");
        }
        for e in &self.internal_errors {
            let _ = writeln!(s, "internal error: {e}");
        }
        let n = &self.report.netlink;
        let _ = writeln!(
            s,
            "{} changes, {} failed; {} netlink messages in {} sendmsg calls, {} iptables processes",
            self.writes(),
            self.report.failed.len(),
            n.messages_sent,
            n.sendmsg_calls,
            self.report.processes
        );
        if self.draining > 0 {
            let _ = writeln!(
                s,
                "{} real servers still draining at weight 0 (they have connections)",
                self.draining
            );
        }
        if self.remaining.is_empty() {
            let _ = writeln!(s, "kernel state equals the desired state");
        } else {
            let _ = writeln!(s, "kernel state still differs from the desired state:");
            for l in &self.remaining {
                let _ = writeln!(s, "  {l}");
            }
        }
        s
    }
}

/// One full sync: ensure kube-ipvs0, adopt what the kernel has (never
/// flush), apply the difference, finish drains of idle real servers, then
/// read the kernel again and compare it with what was planned.
pub fn sync_once(
    applier: &mut Applier,
    p: &mut Proxier,
    now: u64,
) -> Result<SyncSummary, OneshotError> {
    let mut out = SyncSummary {
        link_changed: applier.setup().map_err(OneshotError::Setup)?,
        ..SyncSummary::default()
    };
    let cfg = p.config().clone();
    let want = p.desired_iptables();
    let super::Observation { state, conns, .. } = applier.observe(&cfg, &want)?;
    let plan = p.adopt(state, now);
    out.repairs = plan.ops.iter().map(|o| o.to_string()).collect();
    out.internal_errors
        .extend(plan.internal_errors.iter().cloned());
    out.report = applier.apply(&plan.ops);
    // Drains of real servers without connections finish now; a one-shot run
    // cannot wait for busy ones, which stay at weight 0 for the next run.
    let tick = p.tick(now, |k, a| Some(super::Observation::conns_of(&conns, k, a)));
    out.internal_errors
        .extend(tick.internal_errors.iter().cloned());
    out.report.merge(applier.apply(&tick.ops));
    out.applied = plan
        .ops
        .iter()
        .chain(&tick.ops)
        .filter(|op| {
            !out.report.failed.iter().any(|(f, _)| f == *op)
                && !out.report.skipped.iter().any(|(s, _)| s == *op)
        })
        .map(|op| op.to_string())
        .collect();
    out.draining = p.drains().len();
    let after = applier.observe(&cfg, &want)?;
    out.remaining = diff::diff(p.applied(), &p.owned_view(&after.state));
    Ok(out)
}

/// Kernel vs desired, as `+`/`-` lines (empty when in sync). Reads only.
pub fn diff_kernel(applier: &mut Applier, p: &mut Proxier) -> Result<Vec<String>, OneshotError> {
    let cfg = p.config().clone();
    let desired = p.desired_state();
    let obs = applier.observe(&cfg, &desired.iptables)?;
    let owned: KernelState = p.owned_view(&obs.state);
    Ok(diff::diff(&desired, &owned))
}

/// Removes what kube-ipvs created. Services count as ours when the planner
/// would own them (on a kube-ipvs0 address, or a node address in the NodePort
/// range, or wanted by `p`); foreign ones (keepalived's, …) stay.
pub fn cleanup(applier: &mut Applier, p: &Proxier) -> (Vec<String>, Vec<String>) {
    let families = p.config().families.clone();
    applier.cleanup(&families, |k: &ServiceKey, bound: &HashSet<IpAddr>| {
        let mut probe = KernelState {
            addresses: bound.clone(),
            ..KernelState::default()
        };
        probe.services.insert(
            *k,
            crate::reconcile::KService::new(ipvs_netlink::ipvs::Service::new(*k)),
        );
        p.owned_view(&probe).services.contains_key(k)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_name_precedence() {
        let host = || Some("Host-A\n".to_string());
        assert_eq!(pick_node_name(Some("n1"), Some("env"), host), "n1");
        assert_eq!(pick_node_name(Some(" "), Some("Env"), host), "env");
        assert_eq!(pick_node_name(None, None, host), "host-a");
        assert_eq!(pick_node_name(None, None, || None), "localhost");
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
