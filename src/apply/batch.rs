//! Which client executes each operation, and a plan cut into runs of one client (one netlink batch each).

use std::ops::Range;

use ipvs_netlink::ipvs::Family;

use crate::state::{Op, SetName};

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
