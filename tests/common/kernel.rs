//! The node's kernel state as the standard tools print it (ipvsadm -Sn, ipset save, iptables-save, ip addr), and waits on it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::daemon::Daemon;
use super::try_sh;

/// What the node's kernel holds, as the standard tools print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub ipvs: String,
    pub ipset: String,
    /// iptables-save without comments and chain counters (traffic to the
    /// fake API server moves the built-in chains' counters).
    pub iptables: String,
    pub addrs: String,
}

impl Kernel {
    pub fn read() -> Kernel {
        let iptables = try_sh("iptables-save")
            .1
            .lines()
            .filter(|l| l.starts_with("-A ") || l.starts_with('*') || l.starts_with(":KUBE"))
            .collect::<Vec<_>>()
            .join("\n");
        Kernel {
            ipvs: try_sh("ipvsadm -Sn").1,
            ipset: try_sh("ipset save").1,
            iptables,
            addrs: try_sh("ip -o addr show dev kube-ipvs0").1,
        }
    }

    pub fn ipvs_has(&self, line: &str) -> bool {
        self.ipvs.lines().any(|l| l.trim() == line)
    }

    pub fn ipset_has(&self, line: &str) -> bool {
        self.ipset.lines().any(|l| l.trim() == line)
    }

    pub fn addr_has(&self, a: &str) -> bool {
        self.addrs.contains(&format!(" {a} "))
    }
}

/// Waits until the kernel satisfies `check`, with the kernel in the panic message.
pub fn converge(d: &mut Daemon, what: &str, check: impl Fn(&Kernel) -> bool) -> Kernel {
    let mut last = None;
    d.wait_for(what, || {
        let k = Kernel::read();
        let ok = check(&k);
        last = Some(k);
        ok
    });
    last.expect("read at least once")
}

/// Samples the kernel every `every` for `total`; each sample must equal `want`.
pub fn unchanged_for(
    d: &mut Daemon,
    want: &Kernel,
    total: Duration,
    every: Duration,
    what: &str,
) -> usize {
    let end = Instant::now() + total;
    let mut samples = 0;
    loop {
        let k = Kernel::read();
        samples += 1;
        assert_eq!(
            &k,
            want,
            "kernel changed {what} (sample {samples}); daemon log:\n{}",
            d.log()
        );
        if Instant::now() >= end {
            return samples;
        }
        d.assert_running();
        std::thread::sleep(every);
    }
}

/// Our rules per (binary, table, chain): [`iptables_rules`]'s shape.
pub type Rules = BTreeMap<(String, String, String), Vec<String>>;

/// Rules of our chains per (binary, table, chain), in order, from
/// iptables-save or restore text; rules of built-in chains only when they jump into ours.
pub fn iptables_rules(binary: &str, text: &str) -> Rules {
    let mut out = Rules::new();
    let mut table = String::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t.to_string();
        } else if let Some(decl) = l.strip_prefix(':') {
            let chain = decl.split_whitespace().next().unwrap_or_default();
            if chain.starts_with("KUBE-") {
                out.entry((binary.into(), table.clone(), chain.into()))
                    .or_default();
            }
        } else if let Some(rule) = l.strip_prefix("-A ") {
            let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
            if chain.starts_with("KUBE-") || spec.contains("-j KUBE-") {
                out.entry((binary.into(), table.clone(), chain.into()))
                    .or_default()
                    .push(kube_ipvs::iptables::normalize_rule(spec));
            }
        }
    }
    sort_jumps(&mut out);
    out
}

/// Where our jumps sit among a built-in chain's rules is kube-ipvs's choice;
/// that each is there exactly once is what counts.
pub fn sort_jumps(rules: &mut Rules) {
    for ((_, _, chain), r) in rules.iter_mut() {
        if !chain.starts_with("KUBE-") {
            r.sort();
        }
    }
}

/// The rules `kube-ipvs plan` prints under "# iptables-restore --noflush
/// payloads" (`payload`: that section, "# iptables" then "# ip6tables"), with
/// the jumps from built-in chains that kube-ipvs adds apart from the payload.
pub fn planned_iptables(payload: &str) -> Rules {
    let (v4, v6) = payload
        .split_once("# ip6tables")
        .expect("plan has an ip6tables payload");
    let v4 = v4
        .strip_prefix("# iptables")
        .expect("plan's iptables payload");
    let mut rules = Rules::new();
    for (binary, p) in [("iptables", v4), ("ip6tables", v6)] {
        rules.extend(iptables_rules(binary, p));
        for j in kube_ipvs::iptables::JUMPS {
            rules
                .entry((binary.into(), j.table.into(), j.from.into()))
                .or_default()
                .push(kube_ipvs::iptables::normalize_rule(&j.spec()));
        }
    }
    sort_jumps(&mut rules);
    rules
}
