//! One-shot runs: `plan` (no kernel), `sync-once` (adopt, apply, verify), `diff`, `cleanup`.

use std::collections::HashSet;
use std::fmt::Write;
use std::net::IpAddr;

use ipvs_netlink::ipvs::ServiceKey;

use crate::apply::{Applier, ApplyError, ApplyReport, DUMMY_LINK, Observation, ObserveError, diff};
use crate::reconcile::Proxier;
use crate::state::{KService, KernelParts, KernelState};

/// Why a one-shot run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum OneshotError {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error("setting up {DUMMY_LINK}: {0}")]
    Setup(#[source] ApplyError),
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
    let sysctls = p.managed_sysctls();
    let want = p.desired_iptables();
    let Observation { state, conns, .. } =
        applier.observe(&sysctls, &want, None, KernelParts::ALL)?;
    let plan = p.adopt(state, now);
    out.repairs = plan.ops.iter().map(|o| o.to_string()).collect();
    out.internal_errors
        .extend(plan.internal_errors.iter().cloned());
    out.report = applier.apply(&plan.ops);
    // Drains of real servers without connections finish now; a one-shot run
    // cannot wait for busy ones, which stay at weight 0 for the next run.
    let tick = p.tick(now, |k, a| Some(Observation::conns_of(&conns, k, a)));
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
    let after = applier.observe(&sysctls, &want, None, KernelParts::ALL)?;
    out.remaining = diff::diff(p.applied(), &p.owned_view(&after.state));
    Ok(out)
}

/// Kernel vs desired, as `+`/`-` lines (empty when in sync). Reads only.
pub fn diff_kernel(applier: &mut Applier, p: &mut Proxier) -> Result<Vec<String>, OneshotError> {
    let desired = p.desired_state();
    let obs = applier.observe(
        &p.managed_sysctls(),
        &desired.iptables,
        None,
        KernelParts::ALL,
    )?;
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
        probe
            .services
            .insert(*k, KService::new(ipvs_netlink::ipvs::Service::new(*k)));
        p.owned_view(&probe).services.contains_key(k)
    })
}
