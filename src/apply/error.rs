//! What applying a plan reports: per-operation errors (and how the kernel refused), the report of a run, and why a read failed.

use ipvs_netlink::conntrack::ConntrackError;
use ipvs_netlink::ipset::IpsetError;
use ipvs_netlink::link::LinkError;
use ipvs_netlink::netlink::NetlinkStats;

use super::DUMMY_LINK;
use crate::iptables::IptablesError;
use crate::state::{IpvsOp, Op, Refusal};
use crate::sysctl::SysctlError;

/// Why one operation did not apply; the message names the object and a fix.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{op}: {source}")]
    Ipvs {
        op: String,
        #[source]
        source: ipvs_netlink::Error,
    },
    #[error("{op}: {source}")]
    Ipset {
        op: String,
        #[source]
        source: IpsetError,
    },
    #[error("{op}: {source}")]
    Link {
        op: String,
        #[source]
        source: LinkError,
    },
    #[error("{op}: {source}")]
    Iptables {
        op: String,
        #[source]
        source: IptablesError,
    },
    #[error("{op}: {source}")]
    Sysctl {
        op: String,
        #[source]
        source: SysctlError,
    },
    #[error("{op}: {source}")]
    Conntrack {
        op: String,
        #[source]
        source: ConntrackError,
    },
    /// An earlier chunk of the same batch lost the kernel's replies: as within
    /// one netlink batch, nothing more is sent; the next sync re-reads.
    #[error("{op}: not sent: an earlier part of the batch got no reply from the kernel")]
    NotSent { op: String },
    /// Held back to keep the kernel recognisable as ours: the address of an
    /// IPVS service whose deletion failed stays in KUBE-IPVS-IPS.
    #[error("{op}: held back: {why}")]
    Held { op: String, why: &'static str },
    /// The client could not be opened (module not loaded, no privilege).
    #[error("{op}: {what} is unavailable: {reason}")]
    Unavailable {
        op: String,
        what: &'static str,
        reason: String,
    },
}

impl ApplyError {
    /// How the kernel answered `op`, for charging the failure (`Refusal`).
    pub fn refusal(&self, op: &Op) -> Refusal {
        use nix::errno::Errno;
        const ENOENT: i32 = Errno::ENOENT as i32;
        const ESRCH: i32 = Errno::ESRCH as i32;
        if self.ends_batch() {
            return Refusal::Unknown;
        }
        let gone = |errno: Option<i32>| {
            matches!(errno, Some(ENOENT | ESRCH))
                && matches!(
                    op,
                    Op::Ipvs(IpvsOp::DeleteService(_) | IpvsOp::DeleteDestination(..))
                )
        };
        match self {
            ApplyError::Ipvs { source, .. } => match source {
                ipvs_netlink::Error::SchedulerNotFound { .. } => Refusal::SchedulerMissing,
                e if e.is_unconfirmed() => Refusal::Unknown,
                e if gone(e.errno()) => Refusal::AlreadyGone,
                e => e.errno().map_or(Refusal::Unknown, Refusal::Refused),
            },
            ApplyError::Link { source, .. } => {
                source.errno().map_or(Refusal::Unknown, Refusal::Refused)
            }
            ApplyError::NotSent { .. }
            | ApplyError::Unavailable { .. }
            | ApplyError::Held { .. } => Refusal::Unknown,
            // Global objects: whatever the kernel said, the node answers.
            ApplyError::Ipset { .. }
            | ApplyError::Iptables { .. }
            | ApplyError::Sysctl { .. }
            | ApplyError::Conntrack { .. } => Refusal::Refused(0),
        }
    }

    /// The kernel's replies were lost (timeout, garbled, socket error):
    /// the rest of the batch is not sent, as `NetlinkSocket::batch` does.
    pub(super) fn ends_batch(&self) -> bool {
        let mut e: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(x) = e {
            if let Some(n) = x.downcast_ref::<ipvs_netlink::NetlinkError>() {
                return n.ends_batch();
            }
            e = x.source();
        }
        false
    }
}

/// Why the kernel's state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error("cannot read the IPVS table: {0} (is the ip_vs module loaded? run as root)")]
    Ipvs(#[source] ipvs_netlink::Error),
    #[error("cannot list ipsets: {0} (is ip_set loaded? run as root)")]
    Ipset(#[source] IpsetError),
    #[error("cannot read the addresses of {DUMMY_LINK}: {0}")]
    Link(#[source] LinkError),
    #[error("cannot open {what}: {reason}")]
    Unavailable { what: &'static str, reason: String },
}

/// What one [`Applier::apply`] did.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Operations confirmed by the kernel (or, for iptables, read back):
    /// counted, not copied (a first sync at 10,000 Services has 140,000).
    pub applied: usize,
    pub failed: Vec<(Op, ApplyError)>,
    /// Index in the applied `ops` of each `failed` entry (same order); for
    /// one `apply` call (a merged report mixes plans).
    pub failed_at: Vec<usize>,
    /// Not executed, with the reason (e.g. a conntrack filter the client cannot express).
    pub skipped: Vec<(Op, String)>,
    /// Netlink messages and syscalls spent, all clients together.
    pub netlink: NetlinkStats,
    /// iptables-save / iptables-restore processes run.
    pub processes: u64,
    /// Where the time went, by the part of the kernel written (#17 point 3).
    pub took: ApplyTimes,
}

/// A part of the kernel an apply writes, as its time is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Ipvs,
    /// Set creation and member adds and deletions.
    Ipsets,
    /// kube-ipvs0's addresses.
    Addresses,
    /// iptables-restore runs, both families.
    Iptables,
    /// Sysctls, IPVS timeouts and conntrack deletions.
    Other,
}

/// Time spent writing each [`Part`] in one or more `apply` calls.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct ApplyTimes([std::time::Duration; 5]);

impl ApplyTimes {
    pub fn get(&self, part: Part) -> std::time::Duration {
        self.0[part as usize]
    }

    pub fn add(&mut self, part: Part, d: std::time::Duration) {
        self.0[part as usize] += d;
    }

    fn merge(&mut self, other: ApplyTimes) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }
}

impl ApplyReport {
    pub fn is_ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Kernel writes requested: applied plus failed (an attempted write counts).
    pub fn writes(&self) -> usize {
        self.applied + self.failed.len()
    }

    /// The failures of one `apply` call as the proxier's `settle` takes them.
    pub fn refusals(&self) -> Vec<(usize, Refusal, String)> {
        self.failed_at
            .iter()
            .zip(&self.failed)
            .map(|(i, (op, e))| (*i, e.refusal(op), e.to_string()))
            .collect()
    }

    pub fn merge(&mut self, other: ApplyReport) {
        self.applied += other.applied;
        self.failed.extend(other.failed);
        self.failed_at.extend(other.failed_at);
        self.skipped.extend(other.skipped);
        self.netlink = add_stats(self.netlink, other.netlink);
        self.processes += other.processes;
        self.took.merge(other.took);
    }
}

pub(super) fn add_stats(a: NetlinkStats, b: NetlinkStats) -> NetlinkStats {
    NetlinkStats {
        messages_sent: a.messages_sent + b.messages_sent,
        sendmsg_calls: a.sendmsg_calls + b.sendmsg_calls,
        recvmsg_calls: a.recvmsg_calls + b.recvmsg_calls,
        bytes_sent: a.bytes_sent + b.bytes_sent,
        bytes_received: a.bytes_received + b.bytes_received,
    }
}

pub(super) fn sub_stats(a: NetlinkStats, b: NetlinkStats) -> NetlinkStats {
    NetlinkStats {
        messages_sent: a.messages_sent.saturating_sub(b.messages_sent),
        sendmsg_calls: a.sendmsg_calls.saturating_sub(b.sendmsg_calls),
        recvmsg_calls: a.recvmsg_calls.saturating_sub(b.recvmsg_calls),
        bytes_sent: a.bytes_sent.saturating_sub(b.bytes_sent),
        bytes_received: a.bytes_received.saturating_sub(b.bytes_received),
    }
}
