//! Whose fault a kernel refusal is: one Service's (retried with backoff, the node stays healthy) or the node's.
//!
//! Upstream's IPVS proxier logs a failed virtual or real server and carries
//! on (`syncService` errors do not fail `syncProxyRules`), so one Service's
//! settings never mark the node unhealthy there either. kube-ipvs draws the
//! line explicitly: a refusal is the Service's when the kernel answered that
//! one request with an errno that describes the request itself; anything
//! that says the node cannot be programmed (no memory, no permission, a
//! missing default scheduler, a lost reply, a global object) is the node's.

use ipvs_netlink::ipvs::Scheduler;
use nix::errno::Errno;

use crate::model::input::SvcId;
use crate::state::{IpvsOp, Op, Refusal};

/// Why a Service could not be programmed; `label` is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureReason {
    /// Its scheduler is missing on this node: it falls back to the default.
    SchedulerUnavailable,
    /// The kernel refused one of its virtual or real servers.
    KernelRefused,
}

impl FailureReason {
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::SchedulerUnavailable => "scheduler_unavailable",
            FailureReason::KernelRefused => "kernel_refused",
        }
    }
}

/// A Service whose last attempt the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Failing {
    pub(super) reason: FailureReason,
    /// What the kernel said, for the warning (and its Event).
    pub(super) message: String,
    /// Consecutive refused attempts.
    pub(super) attempts: u32,
    /// When to try again (seconds, the `now` clock).
    pub(super) due: u64,
    /// Planned again since it was refused (a due retry or any change).
    pub(super) retrying: bool,
}

/// Who answers for an operation that did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blame {
    /// Nobody: the kernel already is as the operation wanted.
    Nobody,
    /// The Service that owns the virtual server.
    Service(SvcId, FailureReason),
    /// The node as a whole cannot be programmed: the sync fails (health,
    /// retry with a fresh read of the kernel).
    Node,
}

/// Errnos that speak of the node, not of the request: resources,
/// privileges, a missing address family or module; and EEXIST, which says
/// the applied state is out of date (someone else made the object), so the
/// node re-reads the kernel rather than charging a Service.
fn node_errno(errno: i32) -> bool {
    [
        Errno::EEXIST,
        Errno::ENOMEM,
        Errno::ENOBUFS,
        Errno::ENOSPC,
        Errno::EPERM,
        Errno::EACCES,
        Errno::EAFNOSUPPORT,
        Errno::EPROTONOSUPPORT,
        Errno::EBUSY,
        Errno::EAGAIN,
        Errno::EINTR,
        Errno::EIO,
    ]
    .iter()
    .any(|e| *e as i32 == errno)
}

/// Decides who answers for `op`'s `refusal`. `owner` is the Service whose
/// virtual server the op concerns (the one programmed for its key), and
/// `default` the node's configured scheduler.
pub fn blame(op: &Op, refusal: &Refusal, owner: Option<&SvcId>, default: &Scheduler) -> Blame {
    let deletion = matches!(
        op,
        Op::Ipvs(IpvsOp::DeleteService(_) | IpvsOp::DeleteDestination(..))
            | Op::IpsetDel(..)
            | Op::DelAddress(_)
    );
    if deletion && *refusal == Refusal::AlreadyGone {
        return Blame::Nobody;
    }
    let per_service = matches!(
        op,
        Op::Ipvs(
            IpvsOp::AddService(_)
                | IpvsOp::EditService(_)
                | IpvsOp::AddDestination(..)
                | IpvsOp::EditDestination(..)
        )
    );
    let (Some(owner), true) = (owner, per_service) else {
        return Blame::Node;
    };
    match refusal {
        Refusal::SchedulerMissing => match op {
            // Every Service uses the default: without it nothing can be programmed.
            Op::Ipvs(IpvsOp::AddService(s) | IpvsOp::EditService(s)) if s.scheduler != *default => {
                Blame::Service(owner.clone(), FailureReason::SchedulerUnavailable)
            }
            _ => Blame::Node,
        },
        Refusal::Refused(errno) if !node_errno(*errno) => {
            Blame::Service(owner.clone(), FailureReason::KernelRefused)
        }
        _ => Blame::Node,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::input::svc_id;
    use ipvs_netlink::ipvs::{Destination, Protocol, Service, ServiceKey};
    use std::net::SocketAddr;

    fn key() -> ServiceKey {
        ServiceKey::new(Protocol::Tcp, SocketAddr::from(([10, 96, 0, 1], 80)))
    }

    fn add(sched: &str) -> Op {
        let mut s = Service::new(key());
        s.scheduler = Scheduler::from_name(sched);
        Op::Ipvs(IpvsOp::AddService(s))
    }

    fn rr() -> Scheduler {
        Scheduler::from_name("rr")
    }

    #[test]
    fn a_missing_scheduler_is_the_services_unless_it_is_the_default() {
        let id = svc_id("default", "web");
        assert_eq!(
            blame(&add("twos"), &Refusal::SchedulerMissing, Some(&id), &rr()),
            Blame::Service(id.clone(), FailureReason::SchedulerUnavailable)
        );
        assert_eq!(
            blame(&add("rr"), &Refusal::SchedulerMissing, Some(&id), &rr()),
            Blame::Node
        );
    }

    #[test]
    fn request_errnos_are_the_services_resource_errnos_the_nodes() {
        let id = svc_id("default", "web");
        let dest = Op::Ipvs(IpvsOp::AddDestination(
            key(),
            Destination::masq(SocketAddr::from(([255, 255, 255, 255], 80))),
        ));
        let einval = Refusal::Refused(Errno::EINVAL as i32);
        assert_eq!(
            blame(&dest, &einval, Some(&id), &rr()),
            Blame::Service(id.clone(), FailureReason::KernelRefused)
        );
        for e in [Errno::ENOMEM, Errno::EPERM, Errno::ENOBUFS, Errno::EEXIST] {
            assert_eq!(
                blame(&dest, &Refusal::Refused(e as i32), Some(&id), &rr()),
                Blame::Node,
                "{e}"
            );
        }
        assert_eq!(
            blame(&dest, &Refusal::Unknown, Some(&id), &rr()),
            Blame::Node
        );
        // No owner (a stale key): nobody to charge, so the node.
        assert_eq!(blame(&dest, &einval, None, &rr()), Blame::Node);
    }

    #[test]
    fn global_objects_are_the_nodes_and_gone_deletions_nobodys() {
        let id = svc_id("default", "web");
        let sysctl = Op::Sysctl {
            key: "net.ipv4.vs.conntrack".into(),
            value: "1".into(),
        };
        let einval = Refusal::Refused(Errno::EINVAL as i32);
        assert_eq!(blame(&sysctl, &einval, Some(&id), &rr()), Blame::Node);
        let del = Op::Ipvs(IpvsOp::DeleteService(key()));
        assert_eq!(
            blame(&del, &Refusal::AlreadyGone, Some(&id), &rr()),
            Blame::Nobody
        );
        assert_eq!(blame(&del, &einval, Some(&id), &rr()), Blame::Node);
    }
}
