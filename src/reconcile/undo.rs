//! Taking back a planned operation the kernel refused, so applied state holds only what the kernel confirmed.
//!
//! Plans are recorded into the applied state when they are made (the next
//! plan diffs against them). Most operations can be undone from the
//! operation alone (an add is undone by a removal); edits and deletions keep
//! what they replaced, moved rather than copied, so a 140,000-operation first
//! sync (all adds) keeps nothing.

use std::sync::Arc;

use ipvs_netlink::ipvs::{Destination, Family, Service, ServiceKey, Timeouts};

use crate::state::{IpvsOp, KService, KernelError, KernelState, Op};

/// What an operation replaced or removed, when the operation alone cannot say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// A deleted virtual service with its real servers.
    Service(KService),
    /// A virtual service's parameters before an edit.
    ServiceParams(Service),
    /// A real server before an edit or a deletion.
    Destination(ServiceKey, Destination),
    /// A sysctl's previous value, if it had one.
    Sysctl(Option<String>),
    Timeouts(Option<Timeouts>),
    Iptables(Family, Option<Arc<str>>),
}

impl KernelState {
    /// `apply`, returning what the operation replaced when `revert` needs it.
    pub fn apply_undoable(&mut self, op: &Op) -> Result<Option<Undo>, KernelError> {
        let undo = match op {
            Op::Sysctl { key, .. } => Some(Undo::Sysctl(self.sysctls.get(key).cloned())),
            Op::SetTimeouts(_) => Some(Undo::Timeouts(self.timeouts)),
            Op::IptablesRestore { family, .. } => {
                Some(Undo::Iptables(*family, self.iptables.get(family).cloned()))
            }
            Op::Ipvs(IpvsOp::DeleteService(key)) => {
                // Moved out here rather than cloned: a teardown plan deletes
                // whole services, real servers and all.
                let old = self
                    .services
                    .remove(key)
                    .ok_or(KernelError::NoService(*key))?;
                return Ok(Some(Undo::Service(old)));
            }
            Op::Ipvs(IpvsOp::EditService(s)) => self
                .services
                .get(&s.key)
                .map(|k| Undo::ServiceParams(k.service.clone())),
            Op::Ipvs(IpvsOp::EditDestination(key, d)) => self.prior_destination(key, &d.addr),
            Op::Ipvs(IpvsOp::DeleteDestination(key, a)) => self.prior_destination(key, a),
            _ => None,
        };
        self.apply(op)?;
        Ok(undo)
    }

    fn prior_destination(&self, key: &ServiceKey, a: &std::net::SocketAddr) -> Option<Undo> {
        let d = self.services.get(key)?.get(a)?;
        Some(Undo::Destination(*key, *d))
    }

    /// Takes back `op`, which `apply_undoable` recorded (with `undo`) but the
    /// kernel did not carry out. Later operations on the same objects must be
    /// taken back first (revert in reverse plan order).
    pub fn revert(&mut self, op: &Op, undo: Option<Undo>) {
        match (op, undo) {
            (_, Some(Undo::Sysctl(old))) => {
                if let Op::Sysctl { key, .. } = op {
                    match old {
                        Some(v) => self.sysctls.insert(key.clone(), v),
                        None => self.sysctls.remove(key),
                    };
                }
            }
            (_, Some(Undo::Timeouts(old))) => self.timeouts = old,
            (_, Some(Undo::Iptables(f, old))) => match old {
                Some(p) => {
                    self.iptables.insert(f, p);
                }
                None => {
                    self.iptables.remove(&f);
                }
            },
            (_, Some(Undo::Service(old))) => {
                self.services.insert(old.service.key, old);
            }
            (_, Some(Undo::ServiceParams(old))) => {
                if let Some(k) = self.services.get_mut(&old.key) {
                    k.service = old;
                }
            }
            (_, Some(Undo::Destination(key, old))) => {
                if let Some(k) = self.services.get_mut(&key) {
                    match k.find(&old.addr) {
                        Ok(i) => k.destinations[i] = old,
                        Err(i) => k.destinations.insert(i, old),
                    }
                }
            }
            (Op::CreateSet(s), None) => {
                self.sets.remove(s);
            }
            (Op::IpsetAdd(s, e), None) => {
                if let Some(set) = self.sets.get_mut(s) {
                    set.remove(e);
                }
            }
            (Op::IpsetDel(s, e), None) => {
                if let Some(set) = self.sets.get_mut(s) {
                    set.insert(*e);
                }
            }
            (Op::AddAddress(a), None) => {
                self.addresses.remove(a);
            }
            (Op::DelAddress(a), None) => {
                self.addresses.insert(*a);
            }
            (Op::Ipvs(IpvsOp::AddService(s)), None) => {
                self.services.remove(&s.key);
            }
            (Op::Ipvs(IpvsOp::AddDestination(key, d)), None) => {
                if let Some(k) = self.services.get_mut(key)
                    && let Ok(i) = k.find(&d.addr)
                {
                    k.destinations.remove(i);
                }
            }
            // Nothing recorded (conntrack), or an edit of something the
            // record did not hold (the apply itself was refused).
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ipset::{IpsetEntry, SetKind, SetName};
    use ipvs_netlink::ipvs::Protocol;
    use std::net::{IpAddr, SocketAddr};

    fn key(port: u16) -> ServiceKey {
        ServiceKey::new(Protocol::Tcp, SocketAddr::from(([10, 96, 0, 1], port)))
    }

    fn dest(last: u8, weight: u32) -> Destination {
        Destination {
            weight,
            ..Destination::masq(SocketAddr::from(([10, 0, 0, last], 80)))
        }
    }

    /// A state holding one of everything, so every kind of op has something to change.
    fn base() -> KernelState {
        let mut k = KernelState::default();
        let mut s = KService::new(Service::new(key(80)));
        s.destinations = vec![dest(1, 1), dest(2, 1)];
        k.services.insert(key(80), s);
        k.addresses.insert(IpAddr::from([10, 96, 0, 1]));
        let set = SetName::new(SetKind::ClusterIp, Family::Inet);
        k.sets.insert(
            set,
            [IpsetEntry::IpPort(
                IpAddr::from([10, 96, 0, 1]),
                Protocol::Tcp,
                80,
            )]
            .into(),
        );
        k.sysctls.insert("net.ipv4.vs.conntrack".into(), "1".into());
        k.iptables.insert(Family::Inet, Arc::from("*nat\nCOMMIT\n"));
        k
    }

    fn every_op() -> Vec<Op> {
        let set = SetName::new(SetKind::ClusterIp, Family::Inet);
        let new_set = SetName::new(SetKind::ExternalIp, Family::Inet6);
        let mut rr = Service::new(key(80));
        rr.scheduler = ipvs_netlink::ipvs::Scheduler::from_name("wrr");
        vec![
            Op::Sysctl {
                key: "net.ipv4.vs.conntrack".into(),
                value: "0".into(),
            },
            Op::Sysctl {
                key: "net.ipv4.ip_forward".into(),
                value: "1".into(),
            },
            Op::SetTimeouts(Timeouts {
                tcp: 900,
                tcp_fin: 0,
                udp: 0,
            }),
            Op::CreateSet(new_set),
            Op::DelAddress(IpAddr::from([10, 96, 0, 1])),
            Op::AddAddress(IpAddr::from([10, 96, 0, 2])),
            Op::IpsetDel(
                set,
                IpsetEntry::IpPort(IpAddr::from([10, 96, 0, 1]), Protocol::Tcp, 80),
            ),
            Op::IpsetAdd(
                set,
                IpsetEntry::IpPort(IpAddr::from([10, 96, 0, 2]), Protocol::Tcp, 81),
            ),
            Op::Ipvs(IpvsOp::EditService(rr)),
            Op::Ipvs(IpvsOp::EditDestination(key(80), dest(1, 0))),
            Op::Ipvs(IpvsOp::DeleteDestination(key(80), dest(2, 1).addr)),
            Op::Ipvs(IpvsOp::AddDestination(key(80), dest(3, 1))),
            Op::Ipvs(IpvsOp::AddService(Service::new(key(81)))),
            Op::Ipvs(IpvsOp::DeleteService(key(80))),
            Op::IptablesRestore {
                family: Family::Inet,
                payload: Arc::from("*nat\n:KUBE-SERVICES - [0:0]\nCOMMIT\n"),
            },
            Op::IptablesRestore {
                family: Family::Inet6,
                payload: Arc::from("*nat\nCOMMIT\n"),
            },
        ]
    }

    #[test]
    fn each_operation_reverts_to_the_state_before_it() {
        for op in every_op() {
            let before = base();
            let mut k = before.clone();
            let undo = k.apply_undoable(&op).unwrap();
            assert_ne!(k, before, "{op} changed nothing: the test proves nothing");
            k.revert(&op, undo);
            assert_eq!(k, before, "{op} was not taken back");
        }
    }

    #[test]
    fn a_plan_reverted_in_reverse_order_restores_the_start() {
        let before = base();
        let mut k = before.clone();
        let ops = every_op();
        let undos: Vec<_> = ops.iter().map(|op| k.apply_undoable(op).unwrap()).collect();
        for (op, u) in ops.iter().zip(undos).rev() {
            k.revert(op, u);
        }
        assert_eq!(k, before);
    }

    #[test]
    fn adds_keep_no_record() {
        let mut k = base();
        for op in every_op().iter().filter(|op| {
            matches!(
                op,
                Op::Ipvs(IpvsOp::AddService(_) | IpvsOp::AddDestination(..))
                    | Op::IpsetAdd(..)
                    | Op::AddAddress(_)
                    | Op::CreateSet(_)
            )
        }) {
            assert_eq!(k.apply_undoable(op).unwrap(), None, "{op}");
        }
    }
}
