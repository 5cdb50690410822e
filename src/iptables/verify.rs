//! Whether what `iptables-save` prints holds our rendered chains and jumps, compared rule by rule in one normal form.

use super::chains::JUMPS;
use super::payload::{SavedTable, parse_save};

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
            let norm = |t: &SavedTable| -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
