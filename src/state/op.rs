//! Typed operations on the node's kernel state, and the phase order that keeps traffic off half states.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipvs_netlink::ipvs::{Family, Protocol, Timeouts};

use super::ipset::{IpsetEntry, SetKind, SetName, proto_name};

/// An IPVS change: the netlink client's own operation, so the apply layer
/// hands plans to `IpvsClient::apply` unchanged.
pub use ipvs_netlink::ipvs::Operation as IpvsOp;

/// Which conntrack entries to delete (UDP/SCTP have no FIN: stale entries
/// would keep sending a flow to a vanished endpoint, #71514).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConntrackFilter {
    pub protocol: Protocol,
    /// Original destination (the virtual service), if restricted to one.
    pub vip: Option<SocketAddr>,
    /// Reply source (the real server's address), if restricted to one.
    pub endpoint: Option<IpAddr>,
}

/// One step of a plan. The apply layer (netlink, iptables-restore, sysctl)
/// executes them in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Sysctl {
        key: String,
        value: String,
    },
    /// IPVS tcp / tcpfin / udp timeouts (0 = keep the kernel's).
    SetTimeouts(Timeouts),
    CreateSet(SetName),
    /// Unbind from kube-ipvs0.
    DelAddress(IpAddr),
    IpsetDel(SetName, IpsetEntry),
    Ipvs(IpvsOp),
    IpsetAdd(SetName, IpsetEntry),
    /// `iptables-restore --noflush` payload for one family (our chains whole).
    IptablesRestore {
        family: Family,
        payload: Arc<str>,
    },
    /// Bind on kube-ipvs0.
    AddAddress(IpAddr),
    Conntrack(ConntrackFilter),
}

impl Op {
    /// Execution phase. Adds run VS → real servers → set members → rules →
    /// address bind, so a bound address always finds a complete service;
    /// removals run in reverse (address unbound before its service goes).
    ///
    /// Crash safety: a service address is in KUBE-IPVS-IPS from before its
    /// first IPVS service is created until after its last one is deleted, so
    /// after a `kill -9` at any point a restart still recognises every
    /// service kube-ipvs made as its own. The set only matters for packets
    /// to a bound address, so the early add and late delete change no traffic.
    ///
    /// The same holds for the externalIP / LoadBalancer set members
    /// (`SetKind::names_node_services`): an externalIP or LB IP equal to a
    /// node address is never bound nor in KUBE-IPVS-IPS, so only its member
    /// there marks its service as ours after a restart. Their adds join the
    /// KUBE-IPVS-IPS adds and their deletions come after every add (a member
    /// moving between KUBE-EXTERNAL-IP and -LOCAL is never absent). Traffic
    /// stays upstream's: for a bound address the member only acts once the
    /// address is bound (last) and after it is unbound (first); for a node
    /// address the rules matching the set (iptables, phase 10) are written in
    /// the same run, so only the sub-second window inside one plan moves.
    pub fn phase(&self) -> u8 {
        match self {
            Op::Sysctl { .. } | Op::SetTimeouts(_) | Op::CreateSet(_) => 0,
            Op::DelAddress(_) => 1,
            Op::IpsetDel(s, _) if s.kind != SetKind::IpvsIps && !s.kind.names_node_services() => 2,
            Op::Ipvs(IpvsOp::DeleteDestination(..) | IpvsOp::DeleteService(_)) => 3,
            // Draining (weight 0) belongs with the removals.
            Op::Ipvs(IpvsOp::EditDestination(_, d)) if d.weight == 0 => 3,
            Op::IpsetDel(s, _) if s.kind == SetKind::IpvsIps => 4,
            Op::IpsetAdd(s, _) if s.kind == SetKind::IpvsIps || s.kind.names_node_services() => 5,
            Op::IpsetDel(..) => 6,
            Op::Ipvs(IpvsOp::AddService(_) | IpvsOp::EditService(_)) => 7,
            Op::Ipvs(IpvsOp::AddDestination(..) | IpvsOp::EditDestination(..)) => 8,
            Op::IpsetAdd(..) => 9,
            Op::IptablesRestore { .. } => 10,
            Op::AddAddress(_) => 11,
            Op::Conntrack(_) => 12,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Sysctl { key, value } => write!(f, "sysctl {key}={value}"),
            Op::SetTimeouts(t) => write!(
                f,
                "ipvs timeouts tcp={} tcpfin={} udp={}",
                t.tcp, t.tcp_fin, t.udp
            ),
            Op::CreateSet(s) => write!(f, "create ipset {s}"),
            Op::DelAddress(a) => write!(f, "unbind {a}"),
            Op::AddAddress(a) => write!(f, "bind {a}"),
            Op::IpsetDel(s, e) => write!(f, "ipset del {s} {e}"),
            Op::IpsetAdd(s, e) => write!(f, "ipset add {s} {e}"),
            Op::Ipvs(IpvsOp::AddService(s)) => write!(f, "add service {} ({})", s.key, s.scheduler),
            Op::Ipvs(IpvsOp::EditService(s)) => {
                write!(f, "edit service {} ({})", s.key, s.scheduler)
            }
            Op::Ipvs(IpvsOp::DeleteService(k)) => write!(f, "delete service {k}"),
            Op::Ipvs(IpvsOp::AddDestination(k, d)) => {
                write!(f, "add real server {} to {k} weight {}", d.addr, d.weight)
            }
            Op::Ipvs(IpvsOp::EditDestination(k, d)) => {
                write!(f, "set real server {} of {k} weight {}", d.addr, d.weight)
            }
            Op::Ipvs(IpvsOp::DeleteDestination(k, a)) => write!(f, "delete real server {a} of {k}"),
            Op::IptablesRestore { family, payload } => {
                write!(f, "iptables-restore {family:?} ({} bytes)", payload.len())
            }
            Op::Conntrack(c) => write!(
                f,
                "conntrack delete {}{}{}",
                proto_name(c.protocol),
                c.vip.map(|v| format!(" orig-dst {v}")).unwrap_or_default(),
                c.endpoint
                    .map(|e| format!(" reply-src {e}"))
                    .unwrap_or_default()
            ),
        }
    }
}

/// How the kernel answered an operation that did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The scheduler's module is not available (`ip_vs_<name>`: ENOENT on
    /// a new or edited virtual server).
    SchedulerMissing,
    /// Refused with this errno; the kernel changed nothing.
    Refused(i32),
    /// A deletion of something already gone: the kernel is as wanted.
    AlreadyGone,
    /// No answer, a garbled one, or not sent: the outcome is unknown and
    /// only a fresh read of the kernel can tell.
    Unknown,
}
