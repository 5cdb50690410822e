//! Property: a refusal or a crash at any operation of a random plan never orphans kernel state (#13 point 5).

use std::net::{IpAddr, SocketAddr};

use ipvs_netlink::ipvs::ServiceKey;
use proptest::prelude::*;

use super::proxier::Proxier;
use super::tests::property::{SvcGen, load, svc_gen};
use super::tests::{keepalived_vs, no_conns};
use crate::model::config::ProxyConfig;
use crate::model::testutil::node;
use crate::state::{IpsetEntry, IpvsOp, KernelState, Op, Refusal, SetKind};

const EINVAL: i32 = 22;
const ENOENT: i32 = 2;

fn foreign() -> ServiceKey {
    ServiceKey::Tcp(SocketAddr::from(([192, 168, 0, 100], 80)))
}

/// Whether `op` is a set deletion the applier holds back because the IPVS
/// service `gone` could not be deleted (`Applier::apply`, `ApplyError::Held`).
fn held(op: &Op, gone: &ServiceKey) -> bool {
    let Some(a) = gone.addr() else { return false };
    match op {
        Op::IpsetDel(s, IpsetEntry::Ip(ip)) => s.kind == SetKind::IpvsIps && *ip == a.ip(),
        Op::IpsetDel(s, IpsetEntry::IpPort(ip, proto, port)) => {
            s.kind.names_node_services()
                && ServiceKey::new(*proto, SocketAddr::new(*ip, *port)) == *gone
        }
        _ => false,
    }
}

/// Applies `ops` to the fake kernel, refusing op `fail` (with `refusal`) and
/// whatever the strict kernel refuses after it; returns the refusals as the
/// daemon hands them to `settle`.
fn apply_failing(
    k: &mut KernelState,
    ops: &[Op],
    fail: Option<(usize, Refusal)>,
) -> Vec<(usize, Refusal, String)> {
    let mut refused = Vec::new();
    let gone = match fail.as_ref().map(|(i, _)| &ops[*i]) {
        Some(Op::Ipvs(IpvsOp::DeleteService(key))) => Some(*key),
        _ => None,
    };
    for (i, op) in ops.iter().enumerate() {
        if let Some((f, r)) = &fail
            && *f == i
        {
            refused.push((i, r.clone(), "injected".to_string()));
        } else if gone.as_ref().is_some_and(|g| held(op, g)) {
            refused.push((i, Refusal::Unknown, "held".to_string()));
        } else if let Err(e) = k.apply(op) {
            refused.push((i, Refusal::Refused(ENOENT), e.to_string()));
        }
    }
    refused
}

/// Runs the daemon's loop without failures until nothing is left to do:
/// due retries, syncs, drains finished, and a periodic repair from the kernel.
fn converge(p: &mut Proxier, k: &mut KernelState, mut now: u64) -> Result<(), TestCaseError> {
    for round in 0..6 {
        now += 400; // past the longest backoff (300 s)
        p.retry_due(now);
        let plans = [
            if round % 2 == 0 {
                p.repair(k.clone(), now)
            } else {
                p.sync(now)
            },
            p.tick(now + 10_000, no_conns),
        ];
        for plan in plans {
            prop_assert!(
                plan.internal_errors.is_empty(),
                "{:?}",
                plan.internal_errors
            );
            let refused = apply_failing(k, &plan.ops, None);
            prop_assert!(refused.is_empty(), "refused: {:?}", refused);
            p.settle(&plan.ops, &refused, now);
        }
    }
    Ok(())
}

/// The kernel is exactly the desired state plus the foreign service: nothing
/// of ours leaks, nothing foreign is touched.
fn assert_exact(p: &mut Proxier, k: &KernelState) -> Result<(), TestCaseError> {
    let mut want = p.desired_state();
    want.services.insert(foreign(), keepalived_vs());
    prop_assert_eq!(&k.services, &want.services);
    prop_assert_eq!(&k.addresses, &want.addresses);
    prop_assert_eq!(&k.sets, &want.sets);
    prop_assert_eq!(&k.iptables, &want.iptables);
    prop_assert_eq!(p.owned_view(k), p.desired_state());
    prop_assert!(p.repair(k.clone(), 100_000).is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_failure_at_any_operation_never_orphans_kernel_state(
        a in prop::collection::vec(svc_gen(), 0..5),
        b in prop::collection::vec(svc_gen(), 0..5),
        at in any::<prop::sample::Index>(),
        crash in any::<bool>(),
        scheduler in any::<bool>(),
        reverted in any::<bool>(),
    ) {
        // The kernel: foreign state, then what a run on objects `a` adopted.
        let mut k = KernelState::default();
        k.services.insert(foreign(), keepalived_vs());
        let mut p = Proxier::new(ProxyConfig::default(), node());
        load(&mut p, &a, 0);
        let plan = p.adopt(k.clone(), 0);
        let refused = apply_failing(&mut k, &plan.ops, None);
        prop_assert!(refused.is_empty(), "refused: {:?}", refused);
        p.settle(&plan.ops, &[], 0);

        // The sync to `b` fails at one operation.
        load(&mut p, &b, a.len());
        let plan = p.sync(1);
        prop_assert!(plan.internal_errors.is_empty(), "{:?}", plan.internal_errors);
        let i = at.index(plan.ops.len().max(1));
        let mut p = if crash || plan.ops.is_empty() {
            // kill -9 before op i: a new process on `b`, or on `a` when the
            // change was reverted meanwhile, adopts what the kernel has.
            let done = i.min(plan.ops.len());
            k.apply_all(&plan.ops[..done]).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let gens: &[SvcGen] = if reverted { &a } else { &b };
            let mut q = Proxier::new(ProxyConfig::default(), node());
            load(&mut q, gens, 0);
            q
        } else {
            let refusal = match &plan.ops[i] {
                Op::Ipvs(IpvsOp::AddService(_) | IpvsOp::EditService(_)) if scheduler => {
                    Refusal::SchedulerMissing
                }
                _ => Refusal::Refused(EINVAL),
            };
            let refused = apply_failing(&mut k, &plan.ops, Some((i, refusal)));
            p.settle(&plan.ops, &refused, 1);
            // Applied records only what the kernel confirmed.
            prop_assert_eq!(p.applied(), &p.owned_view(&k));
            prop_assert_eq!(&k.services[&foreign()], &keepalived_vs());
            // Nothing of ours in the kernel that the proxier does not know of.
            for key in k.services.keys() {
                prop_assert!(*key == foreign() || p.applied().services.contains_key(key),
                    "unknown service {}", key);
            }
            let stray: Vec<&IpAddr> = k.addresses.iter()
                .filter(|a| !p.applied().addresses.contains(a)).collect();
            prop_assert!(stray.is_empty(), "unknown addresses {:?}", stray);
            p
        };
        converge(&mut p, &mut k, 2)?;
        assert_exact(&mut p, &k)?;
    }
}
