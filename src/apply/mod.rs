//! Executes plans on the kernel (batched per client, per-op results) and reads the kernel's state back.
//!
//! Every operation reaches the kernel through the client that owns it: IPVS,
//! ipset and address changes over netlink (consecutive operations of one kind
//! in one batch), iptables through `iptables-restore`, sysctls through
//! `/proc/sys`, conntrack through filtered netlink deletes. An operation is
//! only reported applied once the kernel confirmed it; a failure is reported
//! with the object it concerns and never stops unrelated operations.

pub mod batch;
pub mod cleanup;
pub mod convert;
pub mod diff;
pub mod error;
pub mod observe;
pub mod quick;

pub use batch::{Target, batches, target};
pub use convert::flow_filter;
pub use error::{ApplyError, ApplyReport, ApplyTimes, ObserveError, Part};
use error::{add_stats, sub_stats};
pub use observe::Observation;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use ipvs_netlink::conntrack::ConntrackClient;
use ipvs_netlink::ipset::{self, IpsetClient, IpsetError};
use ipvs_netlink::ipvs::{Family, IpvsClient, ServiceKey};
use ipvs_netlink::link::RtnlClient;
use ipvs_netlink::netlink::NetlinkStats;

use crate::iptables::{Backend, Iptables, JUMPS, owned_chains};
use crate::state::{IpsetEntry, IpvsOp, Op, Refusal, SetKind, SetName};
use crate::sysctl::Sysctl;

/// The dummy link holding every service address (down, NOARP), as upstream.
pub const DUMMY_LINK: &str = "kube-ipvs0";

/// Operations handed to a client at a time (one netlink batch call).
pub const APPLY_CHUNK: usize = 4096;

/// Lazily opened kernel clients plus the iptables backend.
pub struct Applier {
    ipvs: Option<IpvsClient>,
    ipset: Option<IpsetClient>,
    rtnl: Option<RtnlClient>,
    conntrack: Option<ConntrackClient>,
    sysctl: Sysctl,
    backend: Option<Backend>,
    link_index: Option<u32>,
    /// The kernel's HZ, learned from a persistent service read both from
    /// /proc (jiffies) and over netlink (seconds): see `observe`.
    hz: Option<u32>,
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
            hz: None,
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
                let started = std::time::Instant::now();
                let results = if matches!(t, Target::IpsetDel(s)
                    if s.kind == SetKind::IpvsIps || s.kind.names_node_services())
                    && !kept.is_empty()
                {
                    self.set_dels_keeping_undeleted(t, chunk, &kept, &mut report)
                } else {
                    self.run_batch(t, chunk, &mut report)
                };
                report.took.add(part(t), started.elapsed());
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

/// The [`Part`] a batch of `t` is timed in.
fn part(t: Target) -> Part {
    match t {
        Target::Ipvs => Part::Ipvs,
        Target::CreateSets | Target::IpsetAdd(_) | Target::IpsetDel(_) => Part::Ipsets,
        Target::AddAddresses | Target::DelAddresses => Part::Addresses,
        Target::Iptables(_) => Part::Iptables,
        Target::Sysctl | Target::Timeouts | Target::Conntrack => Part::Other,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::ConntrackFilter;
    use ipvs_netlink::ipvs::{Protocol, Service};

    #[test]
    fn each_batch_is_timed_in_its_part_and_merged_reports_add_up() {
        use std::time::Duration;
        let set = SetName::new(SetKind::ClusterIp, Family::Inet);
        let mut took = ApplyTimes::default();
        for (t, ms) in [
            (Target::Ipvs, 1),
            (Target::CreateSets, 2),
            (Target::IpsetAdd(set), 4),
            (Target::IpsetDel(set), 8),
            (Target::AddAddresses, 16),
            (Target::DelAddresses, 32),
            (Target::Iptables(Family::Inet6), 64),
            (Target::Sysctl, 128),
            (Target::Conntrack, 256),
        ] {
            took.add(part(t), Duration::from_millis(ms));
        }
        let ms = Duration::from_millis;
        let want = [
            (Part::Ipvs, ms(1)),
            (Part::Ipsets, ms(14)),
            (Part::Addresses, ms(48)),
            (Part::Iptables, ms(64)),
            (Part::Other, ms(384)),
        ];
        for (p, d) in want {
            assert_eq!(took.get(p), d, "{p:?}");
        }
        let mut a = ApplyReport {
            took,
            ..Default::default()
        };
        a.merge(ApplyReport {
            took,
            ..Default::default()
        });
        for (p, d) in want {
            assert_eq!(a.took.get(p), 2 * d, "{p:?}");
        }
    }

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
}
