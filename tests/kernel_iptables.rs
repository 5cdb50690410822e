//! Kernel tests of the iptables applier: foreign chains untouched, re-apply a no-op, errors quote the line.

mod common;

use common::{netns, sh, try_sh};
use ipvs_netlink::ipvs::Family;
use kube_ipvs::iptables::{Backend, Iptables, IptablesError, Jump, OwnedChains};

const JUMPS: [Jump<'static>; 5] = [
    Jump {
        table: "nat",
        from: "PREROUTING",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
    },
    Jump {
        table: "nat",
        from: "OUTPUT",
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
        to: "KUBE-IPVS-FILTER",
        comment: "kubernetes ipvs access filter",
    },
];

fn owned() -> OwnedChains {
    OwnedChains::new()
        .with(
            "nat",
            ["KUBE-SERVICES", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"],
        )
        .with("filter", ["KUBE-FORWARD", "KUBE-IPVS-FILTER"])
}

fn payload(lo: &str) -> String {
    format!(
        "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n\
         -A KUBE-SERVICES -s {lo} -j RETURN\n\
         -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
         COMMIT\n\
         *filter\n:KUBE-FORWARD - [0:0]\n:KUBE-IPVS-FILTER - [0:0]\n\
         -A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\n\
         -A KUBE-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         COMMIT\n"
    )
}

/// `iptables-save` without comments and counters, so two reads compare.
fn save(t: &Iptables) -> String {
    t.save()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.rfind(" [") {
            Some(i) if l.starts_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn without_ours(s: &str) -> String {
    s.lines()
        .filter(|l| !l.contains("KUBE-"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Foreign rules of another program, in tables we also write.
fn foreign(tool: &str) {
    sh(&format!(
        "{tool} -w -t nat -N FOREIGN && {tool} -w -t nat -A PREROUTING -j FOREIGN && \
         {tool} -w -t nat -A FOREIGN -p tcp --dport 8080 -j REDIRECT --to-ports 80 && \
         {tool} -w -t filter -A INPUT -p tcp --dport 22 -j ACCEPT && \
         {tool} -w -t filter -A FORWARD -j DROP"
    ));
}

fn apply_keeps_foreign_rules(backend: Backend, family: Family) {
    let t = Iptables::new(backend, family);
    foreign(&t.binary(""));
    let lo = if family == Family::Inet {
        "127.0.0.0/8"
    } else {
        "::1/128"
    };
    let before = save(&t);
    t.apply(&payload(lo), &owned()).unwrap();
    assert_eq!(t.ensure_jumps(&JUMPS).unwrap(), JUMPS.len());
    let after = save(&t);
    assert_eq!(
        without_ours(&after),
        without_ours(&before),
        "foreign state changed"
    );
    assert!(
        after.contains("-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A PREROUTING -j FOREIGN"),
        "our jump goes first:\n{after}"
    );
    assert!(
        after.contains("-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"),
        "{after}"
    );

    // Re-apply: the same state, and no jump added twice.
    t.apply(&payload(lo), &owned()).unwrap();
    assert_eq!(t.ensure_jumps(&JUMPS).unwrap(), 0);
    assert_eq!(save(&t), after, "re-apply changed something");

    // A stale rule in a chain we own is replaced, foreign ones stay.
    let tool = t.binary("");
    sh(&format!("{tool} -w -t nat -A KUBE-SERVICES -j ACCEPT"));
    t.apply(&payload(lo), &owned()).unwrap();
    assert_eq!(save(&t), after);

    // Cleanup leaves exactly what was there before us.
    assert!(t.cleanup(&owned(), &JUMPS).unwrap());
    assert_eq!(save(&t), before);
    assert!(!t.cleanup(&owned(), &JUMPS).unwrap());
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn nft_apply_keeps_foreign_rules_and_reapply_is_a_noop() {
    netns();
    apply_keeps_foreign_rules(Backend::Nft, Family::Inet);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn legacy_apply_keeps_foreign_rules_and_reapply_is_a_noop() {
    netns();
    apply_keeps_foreign_rules(Backend::Legacy, Family::Inet);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn ip6tables_apply_keeps_foreign_rules() {
    netns();
    apply_keeps_foreign_rules(Backend::Nft, Family::Inet6);
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn rejected_payload_quotes_the_line_and_changes_nothing() {
    netns();
    for backend in [Backend::Nft, Backend::Legacy] {
        let t = Iptables::new(backend, Family::Inet);
        foreign(&t.binary(""));
        t.apply(&payload("127.0.0.0/8"), &owned()).unwrap();
        let before = save(&t);
        let bad = "*nat\n:KUBE-SERVICES - [0:0]\n-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN\n-A KUBE-SERVICES -m nosuchmatch --foo -j RETURN\nCOMMIT\n";
        match t.apply(bad, &owned()) {
            Err(IptablesError::Rejected { line, text, .. }) => {
                assert_eq!(line, 4, "{backend}");
                assert_eq!(text, "-A KUBE-SERVICES -m nosuchmatch --foo -j RETURN");
            }
            other => panic!("{backend}: expected Rejected, got {other:?}"),
        }
        assert_eq!(
            save(&t),
            before,
            "{backend}: a failed restore changed state"
        );
    }
}

#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn backend_detection_follows_existing_rules() {
    netns();
    assert_eq!(
        Iptables::detect(None),
        Backend::Nft,
        "no rules anywhere: nft"
    );
    foreign("iptables-legacy");
    assert_eq!(
        Iptables::detect(None),
        Backend::Legacy,
        "the host's rules are legacy"
    );
    sh("iptables-nft -w -t mangle -N KUBE-IPTABLES-HINT");
    assert_eq!(
        Iptables::detect(None),
        Backend::Nft,
        "kubelet's hint chain wins"
    );
    let (ok, _, _) = try_sh("iptables-nft-save | grep -q KUBE-IPTABLES-HINT");
    assert!(ok);
}

/// The model's real payload and jumps, for both families, on the ipsets it refers to.
#[test]
#[ignore = "kernel test: runs in the lab via scripts/test.sh"]
fn model_ruleset_applies_and_reapplies_unchanged() {
    use kube_ipvs::model::{ProxyConfig, iptables as rules};
    use kube_ipvs::state::SetName;
    netns();
    let cfg = ProxyConfig::default();
    let sets: String = SetName::all(&cfg.families)
        .iter()
        .map(|s| s.create_line() + "\n")
        .collect();
    sh(&format!("printf '%s' '{sets}' | ipset restore"));
    let owned = OwnedChains::new()
        .with("nat", kube_ipvs::iptables::NAT_CHAINS)
        .with("filter", kube_ipvs::iptables::FILTER_CHAINS);
    let jumps = kube_ipvs::iptables::JUMPS;
    for family in [Family::Inet, Family::Inet6] {
        let t = Iptables::new(Backend::Nft, family);
        foreign(&t.binary(""));
        let before = save(&t);
        let payload = rules::render(&cfg, family, []);
        t.apply(&payload, &owned)
            .unwrap_or_else(|e| panic!("{family:?}: {e}\n{payload}"));
        assert_eq!(t.ensure_jumps(&jumps).unwrap(), jumps.len());
        let after = save(&t);
        assert_eq!(without_ours(&after), without_ours(&before), "{family:?}");
        t.apply(&payload, &owned).unwrap();
        assert_eq!(t.ensure_jumps(&jumps).unwrap(), 0);
        assert_eq!(save(&t), after, "{family:?}: re-apply changed something");
    }
}
