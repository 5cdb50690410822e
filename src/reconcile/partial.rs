//! Drift repair from an observation that read only some parts of the kernel (the periodic verification's turns, #17).

use super::plan::Plan;
use super::proxier::Proxier;
use crate::state::{KernelParts, KernelState};

impl Proxier {
    /// [`Self::repair`] from an observation that read only `read`'s parts:
    /// the others are taken as last applied (moved, not copied: `repair`
    /// replaces the applied state with the observed one anyway).
    pub fn repair_parts(&mut self, mut observed: KernelState, read: KernelParts, now: u64) -> Plan {
        if !read.ipvs {
            observed.services = std::mem::take(&mut self.applied.services);
        }
        if !read.sets {
            observed.sets = std::mem::take(&mut self.applied.sets);
        }
        if !read.addresses {
            observed.addresses = std::mem::take(&mut self.applied.addresses);
        }
        for (family, payload) in std::mem::take(&mut self.applied.iptables) {
            if !read.iptables_of(family) {
                observed.iptables.insert(family, payload);
            }
        }
        self.repair(observed, now)
    }
}
