//! Executes plans on the kernel (batched per client, per-op results) and reads the kernel's state back.
//!
//! Every operation reaches the kernel through the client that owns it: IPVS,
//! ipset and address changes over netlink (consecutive operations of one kind
//! in one batch), iptables through `iptables-restore`, sysctls through
//! `/proc/sys`, conntrack through filtered netlink deletes. An operation is
//! only reported applied once the kernel confirmed it; a failure is reported
//! with the object it concerns and never stops unrelated operations.

pub mod convert;
pub mod diff;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::sync::Arc;

use ipvs_netlink::conntrack::{ConntrackClient, ConntrackError, FlowFilter};
use ipvs_netlink::ipset::{self, IpsetClient, IpsetError};
use ipvs_netlink::ipvs::{Family, IpvsClient, ServiceKey};
use ipvs_netlink::link::{LinkError, RtnlClient};
use ipvs_netlink::netlink::NetlinkStats;

use crate::iptables::{Backend, Iptables, IptablesError, JUMPS, owned_chains, parse_save};
use crate::state::{
    ConnCounts, ConntrackFilter, IpsetEntry, IpvsOp, KService, KernelState, Op, Refusal, SetKind,
    SetName,
};
use crate::sysctl::{Sysctl, SysctlError};

/// The dummy link holding every service address (down, NOARP), as upstream.
pub const DUMMY_LINK: &str = "kube-ipvs0";

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
    fn ends_batch(&self) -> bool {
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

/// Operations handed to a client at a time (one netlink batch call).
pub const APPLY_CHUNK: usize = 4096;

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
    }
}

fn add_stats(a: NetlinkStats, b: NetlinkStats) -> NetlinkStats {
    NetlinkStats {
        messages_sent: a.messages_sent + b.messages_sent,
        sendmsg_calls: a.sendmsg_calls + b.sendmsg_calls,
        recvmsg_calls: a.recvmsg_calls + b.recvmsg_calls,
        bytes_sent: a.bytes_sent + b.bytes_sent,
        bytes_received: a.bytes_received + b.bytes_received,
    }
}

fn sub_stats(a: NetlinkStats, b: NetlinkStats) -> NetlinkStats {
    NetlinkStats {
        messages_sent: a.messages_sent.saturating_sub(b.messages_sent),
        sendmsg_calls: a.sendmsg_calls.saturating_sub(b.sendmsg_calls),
        recvmsg_calls: a.recvmsg_calls.saturating_sub(b.recvmsg_calls),
        bytes_sent: a.bytes_sent.saturating_sub(b.bytes_sent),
        bytes_received: a.bytes_received.saturating_sub(b.bytes_received),
    }
}

/// Which client executes an operation; consecutive operations with the same
/// target travel together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Sysctl,
    Timeouts,
    CreateSets,
    DelAddresses,
    /// Member deletions of one set.
    IpsetDel(SetName),
    Ipvs,
    IpsetAdd(SetName),
    Iptables(Family),
    AddAddresses,
    Conntrack,
}

pub fn target(op: &Op) -> Target {
    match op {
        Op::Sysctl { .. } => Target::Sysctl,
        Op::SetTimeouts(_) => Target::Timeouts,
        Op::CreateSet(_) => Target::CreateSets,
        Op::DelAddress(_) => Target::DelAddresses,
        Op::IpsetDel(s, _) => Target::IpsetDel(*s),
        Op::Ipvs(_) => Target::Ipvs,
        Op::IpsetAdd(s, _) => Target::IpsetAdd(*s),
        Op::IptablesRestore { family, .. } => Target::Iptables(*family),
        Op::AddAddress(_) => Target::AddAddresses,
        Op::Conntrack(_) => Target::Conntrack,
    }
}

/// Splits a plan into runs of consecutive operations with one target. Plans
/// are phase-ordered, so this is one IPVS batch for all IPVS operations, one
/// per set for members, one for addresses, and order across kinds is kept.
pub fn batches(ops: &[Op]) -> Vec<(Target, Range<usize>)> {
    let mut out: Vec<(Target, Range<usize>)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let t = target(op);
        match out.last_mut() {
            Some((last, r)) if *last == t => r.end = i + 1,
            _ => out.push((t, i..i + 1)),
        }
    }
    out
}

/// The library's filter for a plan's conntrack filter; `None` when it has no
/// endpoint (the client filters by reply source, which a whole-VIP delete lacks).
pub fn flow_filter(c: &ConntrackFilter) -> Option<FlowFilter> {
    let ep = c.endpoint?;
    let proto = c.protocol.as_raw() as u8;
    let backend = SocketAddr::new(ep, 0);
    Some(match c.vip {
        Some(vip) => FlowFilter::service_backend(proto, vip, backend),
        None => FlowFilter::backend(proto, backend),
    })
}

/// What the kernel holds, plus per real server connection counts (for drains).
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub state: KernelState,
    /// Connection counts of the real servers that have connections; every
    /// other one observed had none (`conns_of`). Idle ones are not listed:
    /// at 10,000 Services that is 100,000 entries, ~9 MB, for nothing.
    pub conns: HashMap<(ServiceKey, SocketAddr), ConnCounts>,
    /// Members of our sets the model cannot represent (left alone).
    pub foreign_members: usize,
}

impl Observation {
    /// The connection counts of an observed real server (zero when it had none).
    pub fn conns_of(
        conns: &HashMap<(ServiceKey, SocketAddr), ConnCounts>,
        k: &ServiceKey,
        a: &SocketAddr,
    ) -> ConnCounts {
        conns.get(&(*k, *a)).copied().unwrap_or_default()
    }
}

/// Lazily opened kernel clients plus the iptables backend.
pub struct Applier {
    ipvs: Option<IpvsClient>,
    ipset: Option<IpsetClient>,
    rtnl: Option<RtnlClient>,
    conntrack: Option<ConntrackClient>,
    sysctl: Sysctl,
    backend: Option<Backend>,
    link_index: Option<u32>,
}

impl Default for Applier {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! client {
    ($self:ident . $field:ident, $ty:ty, $what:expr) => {{
        if $self.$field.is_none() {
            $self.$field = Some(<$ty>::new().map_err(|e| ($what, e.to_string()))?);
        }
        // Just filled above.
        Ok::<&mut $ty, (&'static str, String)>($self.$field.as_mut().expect("client opened"))
    }};
}

impl Applier {
    pub fn new() -> Self {
        Applier {
            ipvs: None,
            ipset: None,
            rtnl: None,
            conntrack: None,
            sysctl: Sysctl::new(),
            backend: None,
            link_index: None,
        }
    }

    fn ipvs(&mut self) -> Result<&mut IpvsClient, (&'static str, String)> {
        client!(self.ipvs, IpvsClient, "IPVS (netlink)")
    }

    fn ipset(&mut self) -> Result<&mut IpsetClient, (&'static str, String)> {
        client!(self.ipset, IpsetClient, "ipset (netlink)")
    }

    fn rtnl(&mut self) -> Result<&mut RtnlClient, (&'static str, String)> {
        client!(self.rtnl, RtnlClient, "rtnetlink")
    }

    fn conntrack(&mut self) -> Result<&mut ConntrackClient, (&'static str, String)> {
        client!(self.conntrack, ConntrackClient, "conntrack (netlink)")
    }

    /// The host's iptables backend, detected once.
    pub fn backend(&mut self) -> Backend {
        *self.backend.get_or_insert_with(|| Iptables::detect(None))
    }

    fn iptables(&mut self, family: Family) -> Iptables {
        Iptables::new(self.backend(), family)
    }

    /// Netlink counters of every open client, summed.
    pub fn netlink_stats(&self) -> NetlinkStats {
        let mut s = NetlinkStats::default();
        if let Some(c) = &self.ipvs {
            s = add_stats(s, c.netlink_stats());
        }
        if let Some(c) = &self.ipset {
            s = add_stats(s, c.netlink_stats());
        }
        if let Some(c) = &self.rtnl {
            s = add_stats(s, c.netlink_stats());
        }
        if let Some(c) = &self.conntrack {
            s = add_stats(s, c.netlink_stats());
        }
        s
    }

    /// Makes sure kube-ipvs0 exists as a dummy link, down and NOARP; returns
    /// whether anything had to change.
    pub fn setup(&mut self) -> Result<bool, ApplyError> {
        let op = format!("ensure dummy link {DUMMY_LINK}");
        let rtnl = self
            .rtnl()
            .map_err(|(what, reason)| ApplyError::Unavailable {
                op: op.clone(),
                what,
                reason,
            })?;
        let (link, change) = rtnl
            .ensure_dummy(DUMMY_LINK)
            .map_err(|source| ApplyError::Link { op, source })?;
        self.link_index = Some(link.index);
        Ok(change != ipvs_netlink::link::DummyChange::Unchanged)
    }

    /// Executes `ops` in order, one batch per run of same-target operations.
    pub fn apply(&mut self, ops: &[Op]) -> ApplyReport {
        let before = self.netlink_stats();
        let mut report = ApplyReport::default();
        // IPVS services still there after a failed delete.
        let mut kept: HashSet<ServiceKey> = HashSet::new();
        for (t, range) in batches(ops) {
            // Chunked, so the wire copies, message buffers and results of a
            // 140,000-operation first sync never exist at once.
            let mut stopped = false;
            let first = range.start;
            for (c, chunk) in ops[range].chunks(APPLY_CHUNK).enumerate() {
                let base = first + c * APPLY_CHUNK;
                if stopped {
                    for (k, op) in chunk.iter().enumerate() {
                        let e = ApplyError::NotSent { op: op.to_string() };
                        report.failed.push((op.clone(), e));
                        report.failed_at.push(base + k);
                    }
                    continue;
                }
                let results = if matches!(t, Target::IpsetDel(s)
                    if s.kind == SetKind::IpvsIps || s.kind.names_node_services())
                    && !kept.is_empty()
                {
                    self.set_dels_keeping_undeleted(t, chunk, &kept, &mut report)
                } else {
                    self.run_batch(t, chunk, &mut report)
                };
                for (k, (op, r)) in chunk.iter().zip(results).enumerate() {
                    match r {
                        Outcome::Done => report.applied += 1,
                        Outcome::Failed(e) => {
                            tracing::warn!(%op, error = %e, "operation failed");
                            stopped |= e.ends_batch();
                            if let Op::Ipvs(IpvsOp::DeleteService(key)) = op
                                && e.refusal(op) != Refusal::AlreadyGone
                            {
                                kept.insert(*key);
                            }
                            report.failed.push((op.clone(), e));
                            report.failed_at.push(base + k);
                        }
                        Outcome::Skipped(why) => report.skipped.push((op.clone(), why)),
                    }
                }
            }
        }
        report.netlink = sub_stats(self.netlink_stats(), before);
        report
    }

    fn run_batch(&mut self, t: Target, ops: &[Op], report: &mut ApplyReport) -> Vec<Outcome> {
        let unavailable = |ops: &[Op], (what, reason): (&'static str, String)| -> Vec<Outcome> {
            ops.iter()
                .map(|op| {
                    Outcome::Failed(ApplyError::Unavailable {
                        op: op.to_string(),
                        what,
                        reason: reason.clone(),
                    })
                })
                .collect()
        };
        match t {
            Target::Sysctl => ops.iter().map(|op| self.sysctl_op(op)).collect(),
            Target::Timeouts => ops
                .iter()
                .map(|op| {
                    let Op::SetTimeouts(to) = op else {
                        return Outcome::Skipped("not a timeout operation".into());
                    };
                    match self.ipvs() {
                        Ok(c) => match c.set_timeouts(*to) {
                            Ok(()) => Outcome::Done,
                            Err(source) => Outcome::Failed(ApplyError::Ipvs {
                                op: op.to_string(),
                                source,
                            }),
                        },
                        Err(e) => unavailable(std::slice::from_ref(op), e)
                            .pop()
                            .unwrap_or(Outcome::Done),
                    }
                })
                .collect(),
            Target::Ipvs => {
                let wire: Vec<_> = ops
                    .iter()
                    .filter_map(|op| match op {
                        Op::Ipvs(o) => Some(o.clone()),
                        _ => None,
                    })
                    .collect();
                match self.ipvs() {
                    Ok(c) => c
                        .apply(&wire)
                        .into_iter()
                        .zip(ops)
                        .map(|(r, op)| match r {
                            Ok(()) => Outcome::Done,
                            Err(source) => Outcome::Failed(ApplyError::Ipvs {
                                op: op.to_string(),
                                source,
                            }),
                        })
                        .collect(),
                    Err(e) => unavailable(ops, e),
                }
            }
            Target::CreateSets => {
                let wire: Vec<ipset::Operation> = ops
                    .iter()
                    .filter_map(|op| match op {
                        Op::CreateSet(s) => Some(ipset::Operation::Create {
                            name: s.name().to_string(),
                            spec: convert::set_spec(s),
                            // An identical set already there is fine (adoption).
                            exist: true,
                        }),
                        _ => None,
                    })
                    .collect();
                match self.ipset() {
                    Ok(c) => ipset_outcomes(c.apply(&wire), ops),
                    Err(e) => unavailable(ops, e),
                }
            }
            Target::IpsetAdd(set) | Target::IpsetDel(set) => {
                let add = matches!(t, Target::IpsetAdd(_));
                match self.ipset() {
                    Ok(c) => ipset_members(c, set, add, ops),
                    Err(e) => unavailable(ops, e),
                }
            }
            Target::AddAddresses | Target::DelAddresses => self.address_ops(t, ops),
            Target::Iptables(family) => ops
                .iter()
                .map(|op| {
                    let Op::IptablesRestore { payload, .. } = op else {
                        return Outcome::Skipped("not an iptables operation".into());
                    };
                    let ipt = self.iptables(family);
                    // restore + save to verify, then save (+ restore + save) for jumps.
                    report.processes += 3;
                    let r = ipt.apply(payload, &owned_chains()).and_then(|()| {
                        let added = ipt.ensure_jumps(&JUMPS)?;
                        if added > 0 {
                            report.processes += 2;
                        }
                        Ok(())
                    });
                    match r {
                        Ok(()) => Outcome::Done,
                        Err(source) => Outcome::Failed(ApplyError::Iptables {
                            op: op.to_string(),
                            source,
                        }),
                    }
                })
                .collect(),
            Target::Conntrack => self.conntrack_ops(ops),
        }
    }

    /// KUBE-IPVS-IPS (and externalIP / LoadBalancer set) deletions, except
    /// for the services in `kept`: a service address leaves the set only
    /// after its IPVS service is confirmed gone, so a restart still
    /// recognises that service as ours (see `Op::phase`).
    fn set_dels_keeping_undeleted(
        &mut self,
        t: Target,
        ops: &[Op],
        kept: &HashSet<ServiceKey>,
        report: &mut ApplyReport,
    ) -> Vec<Outcome> {
        let held = |op: &Op| match op {
            Op::IpsetDel(_, IpsetEntry::Ip(ip)) => {
                kept.iter().any(|k| k.addr().is_some_and(|a| a.ip() == *ip))
            }
            Op::IpsetDel(_, IpsetEntry::IpPort(ip, proto, port)) => {
                kept.contains(&ServiceKey::new(*proto, SocketAddr::new(*ip, *port)))
            }
            _ => false,
        };
        let go: Vec<Op> = ops.iter().filter(|op| !held(op)).cloned().collect();
        let mut done = self.run_batch(t, &go, report).into_iter();
        ops.iter()
            .map(|op| {
                if held(op) {
                    Outcome::Failed(ApplyError::Held {
                        op: op.to_string(),
                        why: "its IPVS service could not be deleted",
                    })
                } else {
                    done.next().unwrap_or(Outcome::Done)
                }
            })
            .collect()
    }

    fn sysctl_op(&mut self, op: &Op) -> Outcome {
        let Op::Sysctl { key, value } = op else {
            return Outcome::Skipped("not a sysctl operation".into());
        };
        match self.sysctl.set(key, value) {
            Ok(_) => Outcome::Done,
            Err(source) => Outcome::Failed(ApplyError::Sysctl {
                op: op.to_string(),
                source,
            }),
        }
    }

    fn address_ops(&mut self, t: Target, ops: &[Op]) -> Vec<Outcome> {
        let addrs: Vec<IpAddr> = ops
            .iter()
            .filter_map(|op| match op {
                Op::AddAddress(a) | Op::DelAddress(a) => Some(*a),
                _ => None,
            })
            .collect();
        let index = match self.link_index {
            Some(i) => Ok(i),
            None => self.setup().map(|_| self.link_index.unwrap_or(0)),
        };
        let index = match index {
            Ok(i) => i,
            Err(e) => {
                let msg = e.to_string();
                return ops
                    .iter()
                    .map(|op| {
                        Outcome::Failed(ApplyError::Unavailable {
                            op: op.to_string(),
                            what: DUMMY_LINK,
                            reason: msg.clone(),
                        })
                    })
                    .collect();
            }
        };
        let rtnl = match self.rtnl() {
            Ok(c) => c,
            Err((what, reason)) => {
                return ops
                    .iter()
                    .map(|op| {
                        Outcome::Failed(ApplyError::Unavailable {
                            op: op.to_string(),
                            what,
                            reason: reason.clone(),
                        })
                    })
                    .collect();
            }
        };
        let link_err = |op: &Op, source| {
            Outcome::Failed(ApplyError::Link {
                op: op.to_string(),
                source,
            })
        };
        if t == Target::AddAddresses {
            rtnl.add_addresses(index, &addrs)
                .into_iter()
                .zip(ops)
                .map(|(r, op)| r.map_or_else(|e| link_err(op, e), |_| Outcome::Done))
                .collect()
        } else {
            rtnl.remove_addresses(index, &addrs)
                .into_iter()
                .zip(ops)
                .map(|(r, op)| r.map_or_else(|e| link_err(op, e), |_| Outcome::Done))
                .collect()
        }
    }

    fn conntrack_ops(&mut self, ops: &[Op]) -> Vec<Outcome> {
        let mut out: Vec<Option<Outcome>> = Vec::with_capacity(ops.len());
        let mut filters = Vec::new();
        let mut at = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Conntrack(c) => match flow_filter(c) {
                    Some(f) => {
                        filters.push(f);
                        at.push(i);
                        out.push(None);
                    }
                    None => out.push(Some(Outcome::Skipped(
                        "deleting every flow of a virtual IP needs an endpoint filter; \
                         those flows expire on their own"
                            .into(),
                    ))),
                },
                _ => out.push(Some(Outcome::Skipped("not a conntrack operation".into()))),
            }
        }
        if !filters.is_empty() {
            match self.conntrack() {
                Ok(c) => {
                    for (i, r) in at.iter().zip(c.clear(&filters)) {
                        out[*i] = Some(match r {
                            Ok(_) => Outcome::Done,
                            Err(source) => Outcome::Failed(ApplyError::Conntrack {
                                op: ops[*i].to_string(),
                                source,
                            }),
                        });
                    }
                }
                Err((what, reason)) => {
                    for i in &at {
                        out[*i] = Some(Outcome::Failed(ApplyError::Unavailable {
                            op: ops[*i].to_string(),
                            what,
                            reason: reason.clone(),
                        }));
                    }
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::Skipped("no result".into())))
            .collect()
    }

    /// Reads what the kernel holds: the IPVS table (with connection counts),
    /// our sets' members, kube-ipvs0's addresses, the IPVS timeouts, the
    /// current values of the sysctls named by `sysctls`' keys (the ones the
    /// planner manages; its values are not used), and whether our iptables chains and jumps match `want_iptables`
    /// (a family whose chains match is reported holding that payload; one that
    /// differs is left out, so the planner restores it).
    pub fn observe(
        &mut self,
        sysctls: &BTreeMap<String, String>,
        want_iptables: &BTreeMap<Family, Arc<str>>,
    ) -> Result<Observation, ObserveError> {
        let unavailable = |(what, reason)| ObserveError::Unavailable { what, reason };
        let mut obs = Observation::default();
        let ipvs = self.ipvs().map_err(unavailable)?;
        // One service at a time: the whole table with its statistics would
        // be a second copy of the state while it is converted.
        ipvs.table_each(|s, dests| {
            let key = s.service.key;
            let mut ks = KService::new(s.service);
            ks.destinations.reserve_exact(dests.len());
            for d in dests {
                if d.active_conns > 0 || d.inactive_conns > 0 {
                    let counts = ConnCounts {
                        active: d.active_conns,
                        inactive: d.inactive_conns,
                    };
                    obs.conns.insert((key, d.destination.addr), counts);
                }
                ks.destinations.push(d.destination);
            }
            ks.destinations.sort_by_key(|d| d.addr);
            obs.state.services.insert(key, ks);
        })
        .map_err(ObserveError::Ipvs)?;
        obs.state.timeouts = ipvs.timeouts().ok();

        let sets = self
            .ipset()
            .map_err(unavailable)?
            .list(None)
            .map_err(ObserveError::Ipset)?;
        for set in sets {
            let Some(name) = SetName::from_name(set.name()) else {
                continue;
            };
            let members = obs.state.sets.entry(name).or_default();
            for m in &set.members {
                match convert::from_entry(&m.entry) {
                    Some(e) => {
                        members.insert(e);
                    }
                    None => obs.foreign_members += 1,
                }
            }
        }

        let rtnl = self.rtnl().map_err(unavailable)?;
        if let Some(link) = rtnl.link(DUMMY_LINK).map_err(ObserveError::Link)? {
            let addrs = rtnl.addresses(link.index).map_err(ObserveError::Link)?;
            obs.state.addresses = addrs.into_iter().map(|a| a.addr).collect();
        }

        for key in sysctls.keys() {
            if let Ok(v) = self.sysctl.get(key) {
                obs.state.sysctls.insert(key.clone(), v);
            }
        }

        for (family, payload) in want_iptables {
            if self.iptables_match(*family, payload) {
                obs.state.iptables.insert(*family, payload.clone());
            }
        }
        Ok(obs)
    }

    /// Whether our chains hold exactly the rules of `payload` (in order, after
    /// [`normalize_rule`]) and every jump is there.
    fn iptables_match(&mut self, family: Family, payload: &str) -> bool {
        let Ok(saved) = self.iptables(family).save() else {
            return false;
        };
        iptables_in_sync(payload, &saved)
    }

    /// Removes everything kube-ipvs creates and nothing else: the IPVS
    /// services `is_ours` accepts, our iptables jumps and chains, our
    /// KUBE-* sets, and kube-ipvs0 with its addresses. Returns one line per
    /// removal; errors are collected, not fatal.
    pub fn cleanup(
        &mut self,
        families: &[Family],
        is_ours: impl Fn(&ServiceKey, &std::collections::HashSet<IpAddr>) -> bool,
    ) -> (Vec<String>, Vec<String>) {
        let (mut done, mut errors) = (Vec::new(), Vec::new());
        // Addresses first: what is bound on kube-ipvs0 decides which services are ours.
        let mut bound = std::collections::HashSet::new();
        match self.rtnl() {
            Ok(rtnl) => {
                if let Ok(Some(link)) = rtnl.link(DUMMY_LINK)
                    && let Ok(a) = rtnl.addresses(link.index)
                {
                    bound = a.into_iter().map(|a| a.addr).collect();
                }
            }
            Err((what, reason)) => errors.push(format!("{what} is unavailable: {reason}")),
        }
        let on_link = bound.len();
        // So are those a killed run marked in KUBE-IPVS-IPS before binding them.
        if let Ok(c) = self.ipset()
            && let Ok(sets) = c.list(None)
        {
            for set in sets {
                if SetName::from_name(set.name()).is_some_and(|n| n.kind == SetKind::IpvsIps) {
                    bound.extend(set.members.iter().filter_map(|m| {
                        match convert::from_entry(&m.entry) {
                            Some(IpsetEntry::Ip(ip)) => Some(ip),
                            _ => None,
                        }
                    }));
                }
            }
        }
        match self.ipvs() {
            Ok(c) => match c.services() {
                Ok(services) => {
                    let ops: Vec<_> = services
                        .iter()
                        .map(|s| s.service.key)
                        .filter(|k| is_ours(k, &bound))
                        .map(ipvs_netlink::ipvs::Operation::DeleteService)
                        .collect();
                    for (op, r) in ops.iter().zip(c.apply(&ops)) {
                        match r {
                            Ok(()) => done.push(op.to_string()),
                            Err(e) => errors.push(format!("{op}: {e}")),
                        }
                    }
                }
                Err(e) => errors.push(format!("cannot read the IPVS table: {e}")),
            },
            Err((what, reason)) => errors.push(format!("{what} is unavailable: {reason}")),
        }
        // Rules go before sets: a set referenced by a rule cannot be destroyed.
        for f in [Family::Inet, Family::Inet6] {
            let ipt = self.iptables(f);
            match ipt.cleanup(&owned_chains(), &JUMPS) {
                Ok(true) => done.push(format!("removed our {} chains and jumps", ipt.binary(""))),
                Ok(false) => {}
                Err(IptablesError::MissingBinary { .. }) if f == Family::Inet6 => {}
                Err(e) => errors.push(format!("iptables cleanup ({f:?}): {e}")),
            }
        }
        match self.ipset() {
            Ok(c) => match c.names() {
                Ok(names) => {
                    let ours: Vec<ipset::Operation> = names
                        .iter()
                        .filter(|n| {
                            SetName::from_name(n).is_some_and(|s| families.contains(&s.family))
                        })
                        .map(|n| ipset::Operation::Destroy(n.clone()))
                        .collect();
                    for (op, r) in ours.iter().zip(c.apply(&ours)) {
                        match r {
                            Ok(()) => done.push(format!("destroyed ipset {}", op.set())),
                            Err(e) => errors.push(format!("destroy ipset {}: {e}", op.set())),
                        }
                    }
                }
                Err(e) => errors.push(format!("cannot list ipsets: {e}")),
            },
            Err((what, reason)) => errors.push(format!("{what} is unavailable: {reason}")),
        }
        if let Ok(rtnl) = self.rtnl() {
            match rtnl.delete_link(DUMMY_LINK) {
                Ok(true) => done.push(format!("deleted {DUMMY_LINK} and its {on_link} addresses")),
                Ok(false) => {}
                Err(e) => errors.push(format!("delete {DUMMY_LINK}: {e}")),
            }
        }
        self.link_index = None;
        (done, errors)
    }
}

/// Rewrites what iptables-save prints differently from what we render into
/// one form: default REJECT types dropped, MARK shorthands spelled as
/// `--set-xmark`, escaped quotes unescaped (all checked against iptables-nft 1.8.9).
pub fn normalize_rule(spec: &str) -> String {
    let unescaped = spec.replace("\\'", "'");
    let mut s = unescaped.as_str();
    for default in [
        " --reject-with icmp-port-unreachable",
        " --reject-with icmp6-port-unreachable",
    ] {
        s = s.strip_suffix(default).unwrap_or(s);
    }
    let mut out: Vec<String> = Vec::new();
    let mut tokens = s.split(' ');
    while let Some(t) = tokens.next() {
        match (t, tokens.clone().next()) {
            ("--or-mark", Some(v)) => {
                out.push("--set-xmark".into());
                out.push(format!("{v}/{v}"));
                tokens.next();
            }
            ("--xor-mark", Some(v)) => {
                out.push("--set-xmark".into());
                out.push(format!("{v}/0x0"));
                tokens.next();
            }
            _ => out.push(t.to_string()),
        }
    }
    out.join(" ")
}

/// Whether `saved` (iptables-save output) holds every chain of `payload`
/// with the same rules in the same order, and all our jumps.
pub fn iptables_in_sync(payload: &str, saved: &str) -> bool {
    let want = parse_save(payload);
    let have = parse_save(saved);
    let chains_ok = want.iter().all(|(table, w)| {
        let Some(h) = have.get(table) else {
            return false;
        };
        w.chains.iter().all(|c| {
            let norm = |t: &crate::iptables::SavedTable| -> Vec<String> {
                t.rules
                    .get(c)
                    .map(|r| r.iter().map(|s| normalize_rule(s)).collect())
                    .unwrap_or_default()
            };
            h.chains.contains(c) && norm(w) == norm(h)
        })
    });
    let jumps_ok = JUMPS.iter().all(|j| {
        have.get(j.table)
            .and_then(|t| t.rules.get(j.from))
            .is_some_and(|rs| rs.contains(&j.spec()))
    });
    chains_ok && jumps_ok
}

/// The result of one operation inside a batch.
enum Outcome {
    Done,
    Failed(ApplyError),
    Skipped(String),
}

fn ipset_outcomes(results: Vec<Result<(), IpsetError>>, ops: &[Op]) -> Vec<Outcome> {
    results
        .into_iter()
        .zip(ops)
        .map(|(r, op)| match r {
            Ok(()) => Outcome::Done,
            Err(source) => Outcome::Failed(ApplyError::Ipset {
                op: op.to_string(),
                source,
            }),
        })
        .collect()
}

/// Adds or deletes the members of one set in one operation (the client splits
/// it into messages). `exist` makes present/absent members no error, so the
/// only failures are real ones; if the batch fails, members are retried one
/// by one so a bad one does not hold back the rest.
fn ipset_members(c: &mut IpsetClient, set: SetName, add: bool, ops: &[Op]) -> Vec<Outcome> {
    let entries: Vec<ipset::Entry> = ops
        .iter()
        .filter_map(|op| match op {
            Op::IpsetAdd(_, e) | Op::IpsetDel(_, e) => Some(convert::to_entry(e)),
            _ => None,
        })
        .collect();
    let wire = |entries: Vec<ipset::Entry>| {
        if add {
            ipset::Operation::Add {
                set: set.name().to_string(),
                members: entries.into_iter().map(ipset::Member::from).collect(),
                exist: true,
            }
        } else {
            ipset::Operation::Del {
                set: set.name().to_string(),
                entries,
                exist: true,
            }
        }
    };
    let whole = c.apply(&[wire(entries.clone())]);
    if whole.iter().all(Result::is_ok) && whole.len() == 1 {
        return ops.iter().map(|_| Outcome::Done).collect();
    }
    let single: Vec<_> = entries.into_iter().map(|e| wire(vec![e])).collect();
    ipset_outcomes(c.apply(&single), ops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipvs_netlink::ipvs::{Protocol, Service};

    #[test]
    fn lost_replies_stop_the_rest_of_a_batch_refusals_do_not() {
        use ipvs_netlink::NetlinkError;
        let ipvs = |source| ApplyError::Ipvs {
            op: "add service".into(),
            source: ipvs_netlink::Error::Netlink {
                op: "add service".into(),
                source,
            },
        };
        let timeout = NetlinkError::Timeout(std::time::Duration::from_secs(5));
        assert!(ipvs(timeout).ends_batch());
        assert!(ipvs(NetlinkError::NotSent).ends_batch());
        let refused = NetlinkError::Kernel {
            errno: 17,
            message: None,
        };
        assert!(!ipvs(refused).ends_batch());
        let unavailable = ApplyError::Unavailable {
            op: "x".into(),
            what: "IPVS",
            reason: "not loaded".into(),
        };
        assert!(!unavailable.ends_batch());
        assert!(
            ApplyError::NotSent { op: "x".into() }
                .to_string()
                .contains("not sent")
        );
    }

    fn svc(port: u16) -> Op {
        let key = ServiceKey::Tcp(SocketAddr::new("10.96.0.1".parse().unwrap(), port));
        Op::Ipvs(IpvsOp::AddService(Service::new(key)))
    }

    #[test]
    fn consecutive_ops_of_one_client_form_one_batch() {
        let a: IpAddr = "10.96.0.1".parse().unwrap();
        let cip = SetName::new(SetKind::ClusterIp, Family::Inet);
        let lb = SetName::new(SetKind::LoadBalancer, Family::Inet);
        let e = IpsetEntry::IpPort(a, Protocol::Tcp, 80);
        let ops = vec![
            Op::Sysctl {
                key: "net.ipv4.vs.conntrack".into(),
                value: "1".into(),
            },
            Op::CreateSet(cip),
            Op::CreateSet(lb),
            svc(80),
            svc(81),
            svc(82),
            Op::IpsetAdd(cip, e),
            Op::IpsetAdd(cip, IpsetEntry::IpPort(a, Protocol::Tcp, 81)),
            Op::IpsetAdd(lb, e),
            Op::AddAddress(a),
            Op::AddAddress("10.96.0.2".parse().unwrap()),
        ];
        let b = batches(&ops);
        assert_eq!(
            b,
            vec![
                (Target::Sysctl, 0..1),
                (Target::CreateSets, 1..3),
                (Target::Ipvs, 3..6),
                (Target::IpsetAdd(cip), 6..8),
                (Target::IpsetAdd(lb), 8..9),
                (Target::AddAddresses, 9..11),
            ]
        );
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn every_phase_has_its_own_client() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let f = ConntrackFilter {
            protocol: Protocol::Udp,
            vip: Some("10.96.0.10:53".parse().unwrap()),
            endpoint: Some(a),
        };
        assert_eq!(target(&Op::Conntrack(f.clone())), Target::Conntrack);
        assert_eq!(target(&Op::DelAddress(a)), Target::DelAddresses);
        assert_eq!(
            target(&Op::IptablesRestore {
                family: Family::Inet6,
                payload: Arc::from("")
            }),
            Target::Iptables(Family::Inet6)
        );
        let ff = flow_filter(&f).unwrap();
        assert_eq!(ff.proto, 17);
        assert_eq!(ff.backend, SocketAddr::new(a, 0));
        assert_eq!(ff.service, f.vip);
        // A whole-VIP delete has no reply-source filter: skipped, not guessed.
        assert!(
            flow_filter(&ConntrackFilter {
                endpoint: None,
                ..f
            })
            .is_none()
        );
    }

    #[test]
    fn saved_rules_compare_with_rendered_ones() {
        let payload = "*nat\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
            -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
            -A KUBE-POSTROUTING -m comment --comment \"type 'hash ip:port'\" -j MARK --xor-mark 0x4000\n\
            COMMIT\n*filter\n:KUBE-IPVS-FILTER - [0:0]\n\
            -A KUBE-IPVS-FILTER -m set --match-set KUBE-IPVS-IPS dst -j REJECT\nCOMMIT\n";
        let mut saved = String::from(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-MARK-MASQ - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
             -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000\n\
             -A KUBE-POSTROUTING -m comment --comment \"type \\'hash ip:port\\'\" -j MARK --set-xmark 0x4000/0x0\n",
        );
        let filter = "COMMIT\n*filter\n:KUBE-IPVS-FILTER - [0:0]\n\
             -A KUBE-IPVS-FILTER -m set --match-set KUBE-IPVS-IPS dst -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n";
        // Without the jumps it is not in sync.
        assert!(!iptables_in_sync(payload, &(saved.clone() + filter)));
        for j in JUMPS.iter().filter(|j| j.table == "nat") {
            saved.push_str(&format!("-A {} {}\n", j.from, j.spec()));
        }
        let mut filter = filter.replace("COMMIT\n*filter\n", "");
        let mut head = String::from("COMMIT\n*filter\n");
        for j in JUMPS.iter().filter(|j| j.table == "filter") {
            head.push_str(&format!("-A {} {}\n", j.from, j.spec()));
        }
        filter.insert_str(0, &head);
        let full = saved.clone() + &filter;
        assert!(iptables_in_sync(payload, &full), "{full}");
        // A rule edited in place (same count) is drift.
        let edited = full.replace("0x4000/0x4000", "0x8000/0x8000");
        assert!(!iptables_in_sync(payload, &edited));
        let extra = full.replace(
            "-A KUBE-MARK-MASQ -j",
            "-A KUBE-MARK-MASQ -j ACCEPT\n-A KUBE-MARK-MASQ -j",
        );
        assert!(!iptables_in_sync(payload, &extra));
    }

    #[test]
    fn owned_chains_cover_every_jump_target() {
        let owned = owned_chains();
        for j in JUMPS {
            assert!(owned.owns(j.table, j.to), "{} {}", j.table, j.to);
        }
    }
}
