//! Kernel refusals charged to the Service they belong to: taken out of the applied state, retried with backoff, a missing scheduler replaced by the default.

use std::collections::HashSet;

use ipvs_netlink::ipvs::Scheduler;

use super::blame::{Blame, Failing, FailureReason, blame};
use super::proxier::Proxier;
use super::undo::Undo;
use crate::model::input::SvcId;
use crate::state::{IpvsOp, Op, Refusal};

/// What `settle` found in the kernel's answer to a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Services charged with a refusal in this run (each once).
    pub services: Vec<(SvcId, FailureReason)>,
    /// Refusals that are the node's: the run failed.
    pub node: usize,
    /// Services were marked for a new plan (a scheduler fallback): run again now.
    pub replan: bool,
}

/// Backoff after `attempts` consecutive refusals: 1 s doubling to 5 min.
/// The periodic verification also repairs (and so retries) every syncPeriod.
fn backoff_secs(attempts: u32) -> u64 {
    1u64.checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u64::MAX)
        .min(300)
}

impl Proxier {
    /// Takes the kernel's answer to the last plan (`sync`, `tick`, `repair`):
    /// `refused` lists the operations that did not go through, by index into
    /// `ops`, with how the kernel answered and its message. Their effect is
    /// taken out of the applied state, so it holds only what the kernel
    /// confirmed; each refusal is charged to its Service (retried with
    /// backoff, see `retry_due`) or to the node. Call it before the next plan.
    pub fn settle(
        &mut self,
        ops: &[Op],
        refused: &[(usize, Refusal, String)],
        now: u64,
    ) -> Settled {
        let mut out = Settled::default();
        let mut revert: Vec<usize> = Vec::new();
        let mut charged: HashSet<SvcId> = HashSet::new();
        for (i, refusal, message) in refused {
            let Some(op) = ops.get(*i) else { continue };
            let owner = match op {
                Op::Ipvs(o) => self.agg.owner(o.service_key()),
                _ => None,
            };
            match blame(op, refusal, owner, &self.cfg.scheduler) {
                Blame::Nobody => continue,
                Blame::Node => out.node += 1,
                Blame::Service(id, reason) => {
                    if let (
                        FailureReason::SchedulerUnavailable,
                        Op::Ipvs(IpvsOp::AddService(sv) | IpvsOp::EditService(sv)),
                    ) = (reason, op)
                    {
                        self.scheduler_missing(&sv.scheduler);
                    }
                    if charged.insert(id.clone()) {
                        out.services.push((id.clone(), reason));
                        let f = self.failing.entry(id).or_insert(Failing {
                            reason,
                            message: String::new(),
                            attempts: 0,
                            due: now,
                            retrying: false,
                        });
                        f.reason = reason;
                        f.message = format!("{op}: {message}");
                        f.attempts = f.attempts.saturating_add(1);
                        f.due = now.saturating_add(backoff_secs(f.attempts));
                        f.retrying = false;
                    }
                }
            }
            revert.push(*i);
        }
        // A Service retried in this run and not refused again is fine now.
        self.failing
            .retain(|id, f| !f.retrying || charged.contains(id));
        let mut undo = std::mem::take(&mut self.undo);
        revert.sort_unstable();
        revert.dedup();
        // Reverse plan order: a later operation on the same object first.
        for &i in revert.iter().rev() {
            let u = match undo.binary_search_by_key(&i, |(j, _)| *j) {
                Ok(p) => Some(std::mem::replace(&mut undo[p].1, Undo::Timeouts(None))),
                Err(_) => None,
            };
            self.applied.revert(&ops[i], u);
        }
        out.replan = !self.dirty.is_empty();
        out
    }

    /// A scheduler the kernel lacks: Services asking for it are recomputed
    /// on the default (their warning says so), unless it is the default.
    fn scheduler_missing(&mut self, s: &Scheduler) {
        if *s == self.cfg.scheduler || !self.missing_schedulers.insert(s.clone()) {
            return;
        }
        for (id, svc) in &self.services {
            if svc.scheduler == *s {
                self.dirty.insert(id.clone());
            }
        }
    }

    /// Marks the refused Services whose backoff has passed for the next plan.
    pub fn retry_due(&mut self, now: u64) {
        let services = &self.services;
        self.failing.retain(|id, _| services.contains_key(id));
        for (id, f) in self.failing.iter_mut() {
            if !f.retrying && f.due <= now {
                f.retrying = true;
                self.dirty.insert(id.clone());
            }
        }
    }

    /// When the next refused Service is due for a retry (the `now` clock).
    pub fn next_retry(&self) -> Option<u64> {
        self.failing
            .values()
            .filter(|f| !f.retrying)
            .map(|f| f.due)
            .min()
    }

    /// Services refused by the kernel and waiting for a retry, by reason.
    pub fn failing(&self) -> impl Iterator<Item = (&SvcId, FailureReason)> {
        self.failing.iter().map(|(id, f)| (id, f.reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::ProxyConfig;
    use crate::model::testutil::{node, service_full, slice};
    use nix::errno::Errno;
    use serde_json::json;

    /// default/`name` on `ip`:80 asking for `sched`, with one endpoint `ep`.
    fn proxier_with(services: &[(&str, &str, &str, &str)]) -> Proxier {
        let mut p = Proxier::new(ProxyConfig::default(), node());
        for (name, ip, sched, ep) in services {
            p.upsert_service(&service_full(json!({
                "metadata": {"namespace": "default", "name": name,
                             "annotations": {"kube-ipvs.io/scheduler": sched}},
                "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                         "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
            })));
            p.upsert_slice(&slice(
                "default",
                &format!("{name}-1"),
                name,
                "IPv4",
                &[("http", 80, "TCP")],
                &[(ep, true, true, false, "node-b")],
            ));
        }
        p
    }

    fn index(ops: &[Op], f: impl Fn(&Op) -> bool) -> usize {
        ops.iter().position(f).expect("the plan has that operation")
    }

    fn add_service_of(ops: &[Op], sched: &str) -> Option<usize> {
        ops.iter().position(|op| {
            matches!(op, Op::Ipvs(IpvsOp::AddService(s)) if s.scheduler == Scheduler::from_name(sched))
        })
    }

    #[test]
    fn a_missing_scheduler_falls_back_to_the_default_and_leaves_others_alone() {
        let mut p = proxier_with(&[
            ("twos", "10.96.0.1", "twos", "10.0.0.1"),
            ("web", "10.96.0.2", "rr", "10.0.0.2"),
        ]);
        let plan = p.sync(0);
        let add = add_service_of(&plan.ops, "twos").unwrap();
        let dest = index(
            &plan.ops,
            |op| matches!(op, Op::Ipvs(IpvsOp::AddDestination(k, _)) if k.addr().unwrap().port() == 80 && k.addr().unwrap().ip().to_string() == "10.96.0.1"),
        );
        let settled = p.settle(
            &plan.ops,
            &[
                (
                    add,
                    Refusal::SchedulerMissing,
                    "scheduler 'twos' not found".into(),
                ),
                (
                    dest,
                    Refusal::Refused(Errno::ESRCH as i32),
                    "no such service".into(),
                ),
            ],
            0,
        );
        assert_eq!(
            settled.services,
            [(
                crate::model::input::svc_id("default", "twos"),
                FailureReason::SchedulerUnavailable
            )]
        );
        assert_eq!(settled.node, 0, "one Service's refusal is not the node's");
        assert!(settled.replan, "the fallback is planned at once");
        let Op::Ipvs(o) = &plan.ops[dest] else {
            unreachable!()
        };
        let key = *o.service_key();
        assert!(
            !p.applied().services.contains_key(&key),
            "applied holds only what the kernel confirmed"
        );
        let web_key = ipvs_netlink::ipvs::ServiceKey::new(
            ipvs_netlink::ipvs::Protocol::Tcp,
            "10.96.0.2:80".parse().unwrap(),
        );
        assert!(p.applied().services.contains_key(&web_key));

        let again = p.sync(1);
        assert!(add_service_of(&again.ops, "rr").is_some(), "{again:?}");
        assert!(
            again.ops.iter().all(|op| match op {
                Op::Ipvs(o) => *o.service_key() == key,
                _ => true,
            }),
            "only the refused Service is planned again: {again:?}"
        );
        let w = p.warnings();
        let tw = &w[&crate::model::input::svc_id("default", "twos")];
        assert!(
            tw.iter().any(
                |m| m.contains("scheduler twos is not available on this node")
                    && m.contains("using the node's default scheduler rr")
            ),
            "{tw:?}"
        );
        assert!(!w.contains_key(&crate::model::input::svc_id("default", "web")));
        // The fallback went through: the retry clears the Service.
        assert_eq!(p.settle(&again.ops, &[], 1), Settled::default());
        assert_eq!(p.failing().count(), 0);
    }

    #[test]
    fn a_refused_real_server_is_retried_with_backoff_until_it_goes_through() {
        let mut p = proxier_with(&[("web", "10.96.0.1", "rr", "10.0.0.1")]);
        let id = crate::model::input::svc_id("default", "web");
        let plan = p.sync(0);
        let dest = index(&plan.ops, |op| {
            matches!(op, Op::Ipvs(IpvsOp::AddDestination(..)))
        });
        let einval = |i: usize| {
            vec![(
                i,
                Refusal::Refused(Errno::EINVAL as i32),
                "invalid request".to_string(),
            )]
        };
        let s = p.settle(&plan.ops, &einval(dest), 0);
        assert_eq!(s.services, [(id.clone(), FailureReason::KernelRefused)]);
        assert_eq!(s.node, 0);
        assert!(
            p.warnings()[&id]
                .iter()
                .any(|m| m.contains("the kernel refused add real server 10.0.0.1:80"))
        );
        // Not before its backoff (1 s, then 2 s, ...).
        assert_eq!(p.next_retry(), Some(1));
        p.retry_due(0);
        assert!(p.sync(0).ops.is_empty());
        p.retry_due(1);
        let retry = p.sync(1);
        assert_eq!(retry.ops.len(), 1, "{retry:?}");
        let dest = index(&retry.ops, |op| {
            matches!(op, Op::Ipvs(IpvsOp::AddDestination(..)))
        });
        p.settle(&retry.ops, &einval(dest), 1);
        assert_eq!(p.next_retry(), Some(3));
        p.retry_due(2);
        assert!(p.sync(2).ops.is_empty());
        p.retry_due(3);
        let retry = p.sync(3);
        assert_eq!(retry.ops.len(), 1);
        assert_eq!(p.settle(&retry.ops, &[], 3), Settled::default());
        assert_eq!(p.failing().count(), 0);
        assert_eq!(p.next_retry(), None);
        assert!(!p.warnings().contains_key(&id));
    }

    #[test]
    fn backoff_doubles_to_five_minutes() {
        let d: Vec<u64> = (1..=12).map(backoff_secs).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff_secs(u32::MAX), 300);
    }

    #[test]
    fn global_refusals_fail_the_run_and_deletions_of_the_gone_are_done() {
        let mut p = proxier_with(&[("web", "10.96.0.1", "rr", "10.0.0.1")]);
        let plan = p.sync(0);
        let sysctl = index(&plan.ops, |op| matches!(op, Op::Sysctl { .. }));
        let s = p.settle(
            &plan.ops,
            &[(sysctl, Refusal::Refused(0), "read-only".into())],
            0,
        );
        assert_eq!((s.node, s.services.len()), (1, 0));
        let Op::Sysctl { key, .. } = &plan.ops[sysctl] else {
            unreachable!()
        };
        assert!(
            !p.applied().sysctls.contains_key(key),
            "a refused sysctl is not recorded"
        );

        p.delete_service("default", "web");
        let plan = p.sync(1);
        let del = index(&plan.ops, |op| {
            matches!(op, Op::Ipvs(IpvsOp::DeleteService(_)))
        });
        let s = p.settle(
            &plan.ops,
            &[(del, Refusal::AlreadyGone, "no such service".into())],
            1,
        );
        assert_eq!(s, Settled::default());
        assert!(p.applied().services.is_empty());
    }
}
