//! Pure text handling for iptables-restore payloads and iptables-save output.
//!
//! Kept apart from process handling so every rule about ownership, backend
//! choice and error reporting is unit-tested without iptables installed.

use std::collections::{BTreeMap, BTreeSet};

/// Which iptables backend the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// iptables-nft: the nf_tables kernel API (the default on current distributions).
    Nft,
    /// iptables-legacy: the x_tables kernel API.
    Legacy,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        })
    }
}

/// Chains kubelet and kube-proxy create to tell other components which
/// backend is in use (iptables-wrappers looks for them first, and so do we).
pub const HINT_CHAINS: [&str; 2] = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];

/// Picks the backend from the `*-save` output of each (IPv4 and IPv6
/// concatenated; `None` when that backend's tools are missing).
///
/// Like kube-proxy's iptables-wrapper: a backend holding a kubelet hint chain
/// wins (nft checked first); otherwise the one with more rules, so a host
/// whose firewall lives in legacy tables stays on legacy; ties go to nft.
pub fn choose_backend(nft_save: Option<&str>, legacy_save: Option<&str>) -> Backend {
    let has_hint = |s: &str| {
        s.lines().any(|l| {
            l.strip_prefix(':')
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|c| HINT_CHAINS.contains(&c))
        })
    };
    match (nft_save, legacy_save) {
        (Some(n), _) if has_hint(n) => return Backend::Nft,
        (_, Some(l)) if has_hint(l) => return Backend::Legacy,
        (None, Some(_)) => return Backend::Legacy,
        _ => {}
    }
    let rules =
        |s: Option<&str>| s.map_or(0, |s| s.lines().filter(|l| l.starts_with("-A ")).count());
    if rules(legacy_save) > rules(nft_save) {
        Backend::Legacy
    } else {
        Backend::Nft
    }
}

/// The chains we own, per table; we never write to any other chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnedChains {
    tables: BTreeMap<String, BTreeSet<String>>,
}

impl OwnedChains {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `chains` of `table`.
    pub fn with<'a>(mut self, table: &str, chains: impl IntoIterator<Item = &'a str>) -> Self {
        let set = self.tables.entry(table.to_string()).or_default();
        set.extend(chains.into_iter().map(str::to_string));
        self
    }

    pub fn owns(&self, table: &str, chain: &str) -> bool {
        self.tables.get(table).is_some_and(|s| s.contains(chain))
    }

    pub fn tables(&self) -> impl Iterator<Item = (&str, impl Iterator<Item = &str>)> {
        self.tables
            .iter()
            .map(|(t, cs)| (t.as_str(), cs.iter().map(String::as_str)))
    }
}

/// A payload line that would touch a chain we do not own, or is not restore syntax.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the ruleset {problem}: {text}")]
pub struct PayloadError {
    pub line: usize,
    pub text: String,
    pub problem: String,
}

/// Checks that `payload` only declares and writes chains in `owned`, and
/// returns how many rules it appends to each (table, chain), for verification.
pub fn check_payload(
    payload: &str,
    owned: &OwnedChains,
) -> Result<BTreeMap<(String, String), usize>, PayloadError> {
    let mut table: Option<&str> = None;
    let mut counts = BTreeMap::new();
    for (i, raw) in payload.lines().enumerate() {
        let err = |problem: &str| PayloadError {
            line: i + 1,
            text: raw.to_string(),
            problem: problem.to_string(),
        };
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(t) = l.strip_prefix('*') {
            if table.is_some() {
                return Err(err("opens a table before COMMIT of the previous one"));
            }
            table = Some(t.trim());
            continue;
        }
        if l == "COMMIT" {
            if table.take().is_none() {
                return Err(err("has COMMIT outside a table"));
            }
            continue;
        }
        let Some(t) = table else {
            return Err(err("is outside a *table section"));
        };
        let (chain, counted) = if let Some(decl) = l.strip_prefix(':') {
            (decl.split_whitespace().next().unwrap_or(""), false)
        } else {
            let mut words = l.split_whitespace();
            let op = words.next().unwrap_or("");
            // Only commands that name one chain first; anything else
            // (-P policy, -E rename) could reach beyond what we own.
            match op {
                "-A" | "--append" => (words.next().unwrap_or(""), true),
                "-I" | "--insert" | "-D" | "--delete" | "-R" | "--replace" | "-F" | "--flush"
                | "-X" | "--delete-chain" | "-N" | "--new-chain" | "-Z" | "--zero" => {
                    (words.next().unwrap_or(""), false)
                }
                _ => {
                    return Err(err(
                        "is not a chain declaration or a chain command we allow",
                    ));
                }
            }
        };
        if !owned.owns(t, chain) {
            return Err(err(&format!(
                "touches chain {chain:?} of table {t}, which kube-ipvs does not own"
            )));
        }
        let n = counts
            .entry((t.to_string(), chain.to_string()))
            .or_insert(0);
        if counted {
            *n += 1;
        }
    }
    if table.is_some() {
        return Err(PayloadError {
            line: payload.lines().count(),
            text: String::new(),
            problem: "ends without COMMIT".into(),
        });
    }
    Ok(counts)
}

/// The chains and rules of one table in `iptables-save` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    /// Chain names in declaration order.
    pub chains: Vec<String>,
    /// `-A` lines, without the `-A CHAIN ` prefix, per chain in order.
    pub rules: BTreeMap<String, Vec<String>>,
}

/// Parses `iptables-save` output into tables (comments and counters dropped).
pub fn parse_save(text: &str) -> BTreeMap<String, SavedTable> {
    let mut out: BTreeMap<String, SavedTable> = BTreeMap::new();
    let mut cur: Option<String> = None;
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('*') {
            cur = Some(t.trim().to_string());
            out.entry(t.trim().to_string()).or_default();
        } else if l == "COMMIT" {
            cur = None;
        } else if let Some(t) = cur.as_ref().and_then(|t| out.get_mut(t)) {
            if let Some(decl) = l.strip_prefix(':') {
                if let Some(c) = decl.split_whitespace().next() {
                    t.chains.push(c.to_string());
                }
            } else if let Some(rest) = l.strip_prefix("-A ") {
                let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
                t.rules
                    .entry(chain.to_string())
                    .or_default()
                    .push(spec.to_string());
            }
        }
    }
    out
}

/// A jump from a built-in chain into one of ours, with the comment upstream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Jump<'a> {
    pub table: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub comment: &'a str,
}

impl Jump<'_> {
    /// The rule spec exactly as `iptables-save` prints it, so presence is a
    /// string comparison rather than one `iptables -C` process per jump.
    pub fn spec(&self) -> String {
        format!("-m comment --comment \"{}\" -j {}", self.comment, self.to)
    }
}

/// The restore payload that adds the `jumps` missing from `saved` (and
/// declares their target chains when those do not exist yet, which with
/// `--noflush` creates them without flushing anything). `None` if all exist.
pub fn missing_jumps_payload(
    jumps: &[Jump<'_>],
    saved: &BTreeMap<String, SavedTable>,
) -> Option<String> {
    let mut by_table: BTreeMap<&str, (BTreeSet<&str>, Vec<String>)> = BTreeMap::new();
    for j in jumps {
        let t = saved.get(j.table);
        let spec = j.spec();
        let present = t
            .and_then(|t| t.rules.get(j.from))
            .is_some_and(|rs| rs.contains(&spec));
        if present {
            continue;
        }
        let entry = by_table.entry(j.table).or_default();
        if !t.is_some_and(|t| t.chains.iter().any(|c| c == j.to)) {
            entry.0.insert(j.to);
        }
        // Inserted at the top, as upstream prepends its jumps.
        entry.1.push(format!("-I {} 1 {}", j.from, spec));
    }
    if by_table.is_empty() {
        return None;
    }
    let mut s = String::new();
    for (table, (decl, rules)) in by_table {
        s.push_str(&format!("*{table}\n"));
        for c in decl {
            s.push_str(&format!(":{c} - [0:0]\n"));
        }
        for r in rules {
            s.push_str(&r);
            s.push('\n');
        }
        s.push_str("COMMIT\n");
    }
    Some(s)
}

/// The restore payload that removes our jumps and then our chains, touching
/// only what `saved` shows to exist. `None` if nothing of ours is left.
pub fn cleanup_payload(
    owned: &OwnedChains,
    jumps: &[Jump<'_>],
    saved: &BTreeMap<String, SavedTable>,
) -> Option<String> {
    let mut s = String::new();
    for (table, t) in saved {
        let mut body = String::new();
        for j in jumps.iter().filter(|j| j.table == table) {
            let spec = j.spec();
            let n = t
                .rules
                .get(j.from)
                .map_or(0, |rs| rs.iter().filter(|r| **r == spec).count());
            for _ in 0..n {
                body.push_str(&format!("-D {} {}\n", j.from, spec));
            }
        }
        let ours: Vec<&String> = t.chains.iter().filter(|c| owned.owns(table, c)).collect();
        // Flush all first: our chains may jump to one another.
        for c in &ours {
            body.push_str(&format!("-F {c}\n"));
        }
        for c in &ours {
            body.push_str(&format!("-X {c}\n"));
        }
        if !body.is_empty() {
            s.push_str(&format!("*{table}\n{body}COMMIT\n"));
        }
    }
    (!s.is_empty()).then_some(s)
}

/// The 1-based payload line iptables-restore blamed, from its stderr
/// ("line 7 failed", or nft's "Error occurred at line: 7").
pub fn failed_line(stderr: &str) -> Option<usize> {
    for marker in ["Error occurred at line: ", "line "] {
        for (i, _) in stderr.match_indices(marker) {
            let digits: String = stderr[i + marker.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse::<usize>()
                && n > 0
            {
                return Some(n);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NFT_HOST: &str =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n-A FORWARD -j DOCKER-USER\nCOMMIT\n";
    const LEGACY_BUSY: &str = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n-A INPUT -p tcp --dport 80 -j ACCEPT\nCOMMIT\n";

    #[test]
    fn backend_follows_hints_then_rule_counts() {
        assert_eq!(choose_backend(None, None), Backend::Nft);
        assert_eq!(choose_backend(Some(""), Some("")), Backend::Nft);
        assert_eq!(
            choose_backend(Some(NFT_HOST), Some(LEGACY_BUSY)),
            Backend::Legacy
        );
        assert_eq!(
            choose_backend(Some(LEGACY_BUSY), Some(NFT_HOST)),
            Backend::Nft
        );
        let hinted = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
        assert_eq!(
            choose_backend(Some(hinted), Some(LEGACY_BUSY)),
            Backend::Nft
        );
        let canary = "*mangle\n:KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";
        assert_eq!(
            choose_backend(Some(LEGACY_BUSY), Some(canary)),
            Backend::Legacy
        );
        assert_eq!(choose_backend(None, Some("")), Backend::Legacy);
        assert_eq!(choose_backend(Some(""), None), Backend::Nft);
    }

    fn owned() -> OwnedChains {
        OwnedChains::new()
            .with("nat", ["KUBE-SERVICES", "KUBE-MARK-MASQ"])
            .with("filter", ["KUBE-FORWARD"])
    }

    #[test]
    fn payload_check_counts_rules_and_refuses_foreign_chains() {
        let p = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN\n-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n-A KUBE-SERVICES -j ACCEPT\nCOMMIT\n*filter\n:KUBE-FORWARD - [0:0]\nCOMMIT\n";
        let c = check_payload(p, &owned()).unwrap();
        assert_eq!(c[&("nat".into(), "KUBE-SERVICES".into())], 2);
        assert_eq!(c[&("nat".into(), "KUBE-MARK-MASQ".into())], 1);
        assert_eq!(c[&("filter".into(), "KUBE-FORWARD".into())], 0);

        for (bad, line, what) in [
            ("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", 2, "PREROUTING"),
            (
                "*nat\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n",
                2,
                "POSTROUTING",
            ),
            (
                "*filter\n:KUBE-SERVICES - [0:0]\nCOMMIT\n",
                2,
                "does not own",
            ),
            ("*nat\n-P PREROUTING DROP\nCOMMIT\n", 2, "allow"),
            ("-A KUBE-SERVICES -j RETURN\n", 1, "outside"),
            ("*nat\n:KUBE-SERVICES - [0:0]\n", 2, "COMMIT"),
            ("*nat\n*filter\nCOMMIT\n", 2, "before COMMIT"),
        ] {
            let e = check_payload(bad, &owned()).unwrap_err();
            assert_eq!(e.line, line, "{bad}: {e}");
            assert!(e.to_string().contains(what), "{e}");
        }
    }

    const SAVED: &str = "# Generated by iptables-nft-save v1.8.9 on Sun\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:KUBE-SERVICES - [0:0]\n:FOREIGN - [0:0]\n-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-A PREROUTING -j FOREIGN\n-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN\nCOMMIT\n# Completed\n*filter\n:INPUT ACCEPT [4:240]\nCOMMIT\n";

    const JUMPS: [Jump<'static>; 3] = [
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
            table: "filter",
            from: "FORWARD",
            to: "KUBE-FORWARD",
            comment: "kubernetes forwarding rules",
        },
    ];

    #[test]
    fn save_output_parses_per_table() {
        let s = parse_save(SAVED);
        assert_eq!(
            s["nat"].chains,
            ["PREROUTING", "OUTPUT", "KUBE-SERVICES", "FOREIGN"]
        );
        assert_eq!(s["nat"].rules["PREROUTING"].len(), 2);
        assert_eq!(
            s["nat"].rules["KUBE-SERVICES"],
            ["-s 127.0.0.0/8 -j RETURN"]
        );
        assert_eq!(s["filter"].chains, ["INPUT"]);
        assert!(parse_save("garbage\n-A X\n").is_empty());
    }

    #[test]
    fn only_missing_jumps_are_added() {
        let s = parse_save(SAVED);
        let p = missing_jumps_payload(&JUMPS, &s).unwrap();
        assert_eq!(
            p,
            "*filter\n:KUBE-FORWARD - [0:0]\n-I FORWARD 1 -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\nCOMMIT\n\
             *nat\n-I OUTPUT 1 -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\nCOMMIT\n"
        );
        assert_eq!(missing_jumps_payload(&JUMPS[..1], &s), None);
    }

    #[test]
    fn cleanup_removes_only_ours() {
        let s = parse_save(SAVED);
        let p = cleanup_payload(&owned(), &JUMPS, &s).unwrap();
        assert_eq!(
            p,
            "*nat\n-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n-F KUBE-SERVICES\n-X KUBE-SERVICES\nCOMMIT\n"
        );
        assert!(!p.contains("FOREIGN"));
        assert_eq!(cleanup_payload(&owned(), &JUMPS, &parse_save("")), None);
    }

    #[test]
    fn failed_line_is_found_in_both_dialects() {
        assert_eq!(failed_line("iptables-restore: line 7 failed\n"), Some(7));
        assert_eq!(
            failed_line(
                "iptables-restore v1.8.9 (nf_tables): unknown option \"--bogus\"\nError occurred at line: 3\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n"
            ),
            Some(3)
        );
        assert_eq!(
            failed_line("Another app is currently holding the xtables lock"),
            None
        );
        assert_eq!(failed_line("line 0 failed"), None);
    }
}
