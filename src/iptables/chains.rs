//! The chains kube-ipvs owns and the jumps into them from the built-in chains (upstream IPVS mode's names).

use super::payload::{Jump, OwnedChains};

/// Chains we own in the nat table (rewritten whole with `--noflush`).
pub const NAT_CHAINS: [&str; 5] = [
    "KUBE-SERVICES",
    "KUBE-POSTROUTING",
    "KUBE-NODE-PORT",
    "KUBE-LOAD-BALANCER",
    "KUBE-MARK-MASQ",
];

/// Chains we own in the filter table.
pub const FILTER_CHAINS: [&str; 6] = [
    "KUBE-FORWARD",
    "KUBE-NODE-PORT",
    "KUBE-PROXY-FIREWALL",
    "KUBE-SOURCE-RANGES-FIREWALL",
    "KUBE-IPVS-FILTER",
    "KUBE-IPVS-OUT-FILTER",
];

/// The jumps from built-in chains into ours. The apply layer ensures these
/// (upstream `EnsureRule(Prepend …)`), since a restore with `--noflush`
/// would duplicate them.
pub const JUMPS: [Jump<'static>; 9] = [
    Jump {
        table: "nat",
        from: "OUTPUT",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
    },
    Jump {
        table: "nat",
        from: "PREROUTING",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
    },
    Jump {
        table: "nat",
        from: "POSTROUTING",
        to: "KUBE-POSTROUTING",
        comment: "kubernetes postrouting rules",
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-FORWARD",
        comment: "kubernetes forwarding rules",
    },
    Jump {
        table: "filter",
        from: "INPUT",
        to: "KUBE-NODE-PORT",
        comment: "kubernetes health check rules",
    },
    Jump {
        table: "filter",
        from: "INPUT",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kube-proxy firewall rules",
    },
    Jump {
        table: "filter",
        from: "FORWARD",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kube-proxy firewall rules",
    },
    Jump {
        table: "filter",
        from: "INPUT",
        to: "KUBE-IPVS-FILTER",
        comment: "kubernetes ipvs access filter",
    },
    Jump {
        table: "filter",
        from: "OUTPUT",
        to: "KUBE-IPVS-OUT-FILTER",
        comment: "kubernetes ipvs access filter",
    },
];

/// The chains we own, per table.
pub fn owned_chains() -> OwnedChains {
    OwnedChains::new()
        .with("nat", NAT_CHAINS)
        .with("filter", FILTER_CHAINS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_chains_cover_every_jump_target() {
        let owned = owned_chains();
        for j in JUMPS {
            assert!(owned.owns(j.table, j.to), "{} {}", j.table, j.to);
        }
    }
}
