//! Upstream kube-proxy beside kube-ipvs in the lab: one KubeProxyConfiguration for both, the node's state each leaves (normalised), and the differences against the README's list of intended ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::daemon::{Daemon, PATIENCE, http_get};
use super::try_sh;

/// Where each proxy serves metrics and health (the same for both: they run
/// one after the other, each in its own network namespace).
pub const METRICS: &str = "127.0.0.1:19569";
pub const HEALTHZ: &str = "127.0.0.1:19576";

/// The cluster CIDRs of the lab (pods are addressed from these).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16,fd00:10:244::/56";

/// Writes the KubeProxyConfiguration both proxies read into `dir`.
/// `sync_period` is upstream's duration syntax ("30s"); /healthz turns
/// stale when a change has waited twice that long.
pub fn write_config(
    dir: &Path,
    node: &str,
    kubeconfig: &str,
    scheduler: &str,
    sync_period: &str,
) -> PathBuf {
    let path = dir.join("kube-proxy-config.yaml");
    let text = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\n\
         kind: KubeProxyConfiguration\n\
         mode: ipvs\n\
         hostnameOverride: {node}\n\
         clientConnection:\n  kubeconfig: {kubeconfig}\n\
         metricsBindAddress: {METRICS}\n\
         healthzBindAddress: {HEALTHZ}\n\
         clusterCIDR: {CLUSTER_CIDR}\n\
         conntrack:\n  maxPerCore: 0\n\
         ipvs:\n  scheduler: \"{scheduler}\"\n  syncPeriod: {sync_period}\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Which proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Upstream,
    KubeIpvs,
}

/// Starts upstream kube-proxy (`binary`) or kube-ipvs (with `kubeconfig`,
/// its ServiceAccount's) on `config`, in the calling thread's namespace.
pub fn start(which: Which, binary: &str, config: &Path, kubeconfig: &str, log: PathBuf) -> Daemon {
    Daemon::spawn(command(which, binary, config, kubeconfig), log)
}

/// The command [`start`] runs, for a caller that changes its environment.
pub fn command(which: Which, binary: &str, config: &Path, kubeconfig: &str) -> Command {
    let mut cmd = Command::new(binary);
    cmd.arg("--config").arg(config);
    match which {
        Which::Upstream => {
            cmd.arg("--v=2");
        }
        Which::KubeIpvs => {
            cmd.args(["--kubeconfig", kubeconfig])
                .env("RUST_LOG", "info")
                .env("NO_COLOR", "1");
        }
    }
    cmd
}

/// Waits until `which` has synced and the node's state holds still for
/// two reads 2 s apart; returns that state.
pub fn settled(d: &mut Daemon, which: Which) -> NodeState {
    // Upstream's /healthz is 200 before any sync; its metric is not.
    d.wait_for("the first sync", || has_synced(which));
    let deadline = Instant::now() + PATIENCE;
    let mut last = NodeState::read();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        d.assert_running();
        let now = NodeState::read();
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{which:?}: the node never held still"
        );
        last = now;
    }
}

/// The sysctls either proxy may set (per network namespace in these kernels).
const SYSCTLS: &[&str] = &[
    "net.ipv4.vs.conntrack",
    "net.ipv4.vs.conn_reuse_mode",
    "net.ipv4.vs.expire_nodest_conn",
    "net.ipv4.vs.expire_quiescent_template",
    "net.ipv4.vs.sloppy_tcp",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv4.conf.all.arp_ignore",
    "net.ipv4.conf.all.arp_announce",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
];

/// A node's proxy state, section by section, normalised so that two
/// proxies that mean the same thing print the same lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeState {
    /// Section name → lines. Sections in `ORDERED` keep their order.
    pub sections: BTreeMap<&'static str, Vec<String>>,
}

/// Sections whose line order means something (iptables rules in a chain).
const ORDERED: &[&str] = &["iptables", "ip6tables"];

impl NodeState {
    pub fn read() -> NodeState {
        let mut sections = BTreeMap::new();
        sections.insert(
            "ipvs",
            sorted(try_sh("ipvsadm -Sn").1.lines().map(str::to_string)),
        );
        sections.insert(
            "ipvs-timeouts",
            vec![try_sh("ipvsadm -L --timeout").1.trim().to_string()],
        );
        let ipset = try_sh("ipset save").1;
        let empty = empty_sets(&ipset);
        sections.insert("ipset", normalise_ipset(&ipset));
        let mut v4 = normalise_iptables(&try_sh("iptables-save").1);
        let mut v6 = normalise_iptables(&try_sh("ip6tables-save").1);
        v4.retain(|r| !matches_only_empty_set(r, &empty));
        v6.retain(|r| !matches_only_empty_set(r, &empty));
        sections.insert("iptables", v4);
        sections.insert("ip6tables", v6);
        sections.insert(
            "kube-ipvs0",
            normalise_dummy(
                &try_sh("ip -o addr show dev kube-ipvs0").1,
                &try_sh("ip -o link show dev kube-ipvs0").1,
            ),
        );
        // Read by this thread, so from its network namespace.
        let sys = SYSCTLS
            .iter()
            .map(|s| {
                let path = format!("/proc/sys/{}", s.replace('.', "/"));
                match std::fs::read_to_string(path) {
                    Ok(v) => format!("{s} = {}", v.trim()),
                    Err(_) => format!("{s} = (absent)"),
                }
            })
            .collect();
        sections.insert("sysctl", sys);
        NodeState { sections }
    }
}

fn sorted(lines: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = lines.filter(|l| !l.trim().is_empty()).collect();
    v.sort();
    v
}

/// `ipset save`, members and sets sorted; the hash seed (`initval`, random
/// per set) and the kernel's bucket size are not the proxy's choice.
pub fn normalise_ipset(text: &str) -> Vec<String> {
    sorted(text.lines().map(|l| {
        let mut out = Vec::new();
        let mut words = l.split_whitespace();
        while let Some(w) = words.next() {
            if w == "initval" || w == "bucketsize" {
                words.next();
                continue;
            }
            out.push(w);
        }
        out.join(" ")
    }))
}

/// The sets of `ipset save` that have no member.
pub fn empty_sets(save: &str) -> std::collections::BTreeSet<String> {
    let mut sets: std::collections::BTreeSet<String> = save
        .lines()
        .filter_map(|l| {
            Some(
                l.strip_prefix("create ")?
                    .split_whitespace()
                    .next()?
                    .to_string(),
            )
        })
        .collect();
    for l in save.lines() {
        if let Some(name) = l
            .strip_prefix("add ")
            .and_then(|r| r.split_whitespace().next())
        {
            sets.remove(name);
        }
    }
    sets
}

/// Whether `rule` requires a packet to be in a set that is empty: it can
/// never match, so it means nothing on this node. kube-ipvs keeps a static
/// rule set (src/model/iptables.rs); upstream writes the rules of non-empty
/// sets only. Comparing them rule for rule would report every empty set.
pub fn matches_only_empty_set(rule: &str, empty: &std::collections::BTreeSet<String>) -> bool {
    let w: Vec<&str> = rule.split_whitespace().collect();
    w.windows(2)
        .enumerate()
        .any(|(i, p)| p[0] == "--match-set" && empty.contains(p[1]) && (i == 0 || w[i - 1] != "!"))
}

/// iptables-save's KUBE-* chains and the rules that are in or jump to them,
/// prefixed by table, counters stripped, rule order kept.
pub fn normalise_iptables(text: &str) -> Vec<String> {
    let mut table = "";
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(t) = l.strip_prefix('*') {
            table = t;
        } else if let Some(chain) = l.strip_prefix(':') {
            let name = chain.split_whitespace().next().unwrap_or("");
            if name.starts_with("KUBE-") {
                out.push(format!("{table} :{name}"));
            }
        } else if l.starts_with("-A ") && l.contains("KUBE-") {
            out.push(format!("{table} {l}"));
        }
    }
    out
}

/// kube-ipvs0's addresses, sorted, and its link flags.
pub fn normalise_dummy(addrs: &str, link: &str) -> Vec<String> {
    let mut v = sorted(addrs.lines().filter_map(|l| {
        let mut w = l
            .split_whitespace()
            .skip_while(|w| *w != "inet" && *w != "inet6");
        Some(format!("{} {}", w.next()?, w.next()?))
    }));
    let flags = link
        .split_whitespace()
        .find(|w| w.starts_with('<'))
        .unwrap_or("(no kube-ipvs0)");
    v.push(format!("link {flags}"));
    v
}

/// Every difference, as `SECTION < LINE` (only upstream has it) or
/// `SECTION > LINE` (only kube-ipvs has it); for ordered sections also
/// `SECTION order CHAIN` when the shared rules of a chain are in another order.
pub fn differences(upstream: &NodeState, ours: &NodeState) -> Vec<String> {
    let mut out = Vec::new();
    let empty = Vec::new();
    let names: std::collections::BTreeSet<_> = upstream
        .sections
        .keys()
        .chain(ours.sections.keys())
        .collect();
    for name in names {
        let a = upstream.sections.get(name).unwrap_or(&empty);
        let b = ours.sections.get(name).unwrap_or(&empty);
        let (only_a, only_b) = multiset_difference(a, b);
        out.extend(only_a.iter().map(|l| format!("{name} < {l}")));
        out.extend(only_b.iter().map(|l| format!("{name} > {l}")));
        if ORDERED.contains(name) {
            out.extend(
                reordered_chains(a, b, &only_a, &only_b)
                    .into_iter()
                    .map(|c| format!("{name} order {c}")),
            );
        }
    }
    out
}

fn multiset_difference(a: &[String], b: &[String]) -> (Vec<String>, Vec<String>) {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for l in a {
        *count.entry(l).or_default() += 1;
    }
    for l in b {
        *count.entry(l).or_default() -= 1;
    }
    let mut only_a = Vec::new();
    let mut only_b = Vec::new();
    for (l, n) in count {
        for _ in 0..n.max(0) {
            only_a.push(l.to_string());
        }
        for _ in 0..(-n).max(0) {
            only_b.push(l.to_string());
        }
    }
    (only_a, only_b)
}

/// Chains ("table chain") whose rules common to both sides are in a different order.
fn reordered_chains(
    a: &[String],
    b: &[String],
    only_a: &[String],
    only_b: &[String],
) -> Vec<String> {
    let chain_of = |l: &str| -> Option<String> {
        let mut w = l.split_whitespace();
        let table = w.next()?;
        (w.next()? == "-A").then_some(())?;
        Some(format!("{table} {}", w.next()?))
    };
    let by_chain = |lines: &[String], drop: &[String]| -> BTreeMap<String, Vec<String>> {
        let mut drop = drop.to_vec();
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in lines {
            if let Some(i) = drop.iter().position(|d| d == l) {
                drop.swap_remove(i);
                continue;
            }
            if let Some(c) = chain_of(l) {
                m.entry(c).or_default().push(l.clone());
            }
        }
        m
    };
    let (ca, cb) = (by_chain(a, only_a), by_chain(b, only_b));
    ca.into_iter()
        .filter(|(c, rules)| cb.get(c) != Some(rules))
        .map(|(c, _)| c)
        .collect()
}

/// One entry of the README's list of intended differences.
pub struct Intended {
    pub pattern: regex::Regex,
    pub why: String,
}

/// The table under the README heading "Intended differences": rows of
/// `` | `REGEX` | why | ``, each REGEX matched against a whole difference line.
pub fn intended_from_readme(readme: &str) -> Vec<Intended> {
    let mut out = Vec::new();
    let mut inside = false;
    for l in readme.lines() {
        if l.starts_with('#') {
            inside = l.contains("Intended differences");
            continue;
        }
        if !inside {
            continue;
        }
        let Some(row) = l.strip_prefix("| `") else {
            continue;
        };
        let Some((pattern, rest)) = row.split_once("` |") else {
            continue;
        };
        let pattern = pattern.replace("\\|", "|");
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .unwrap_or_else(|e| panic!("README intended difference `{pattern}`: {e}"));
        out.push(Intended {
            pattern: re,
            why: rest.trim().trim_end_matches('|').trim().to_string(),
        });
    }
    out
}

/// The differences no README entry explains.
pub fn unintended<'a>(diffs: &'a [String], intended: &[Intended]) -> Vec<&'a String> {
    diffs
        .iter()
        .filter(|d| !intended.iter().any(|i| i.pattern.is_match(d)))
        .collect()
}

/// A proxy's /metrics text, through curl: upstream answers in chunks,
/// which the tests' one-line HTTP client does not decode.
pub fn scrape() -> String {
    try_sh(&format!("curl -sf --max-time 10 http://{METRICS}/metrics")).1
}

/// Every `kubeproxy_*` metric family with a non-zero sample in an
/// exposition text, as `NAME TYPE labels=L1,L2 buckets=B1,B2`: what a
/// dashboard or alert written for kube-proxy depends on (values differ by
/// nature). A family with nothing observed yet is left out: upstream's
/// client prints a vector only once a label set is used, ours prints some
/// empty ones.
pub fn metric_shapes(text: &str) -> Vec<String> {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    // family → (label names, bucket bounds)
    let mut seen: BTreeMap<String, (std::collections::BTreeSet<String>, Vec<String>)> =
        BTreeMap::new();
    let mut nonzero = std::collections::BTreeSet::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("# TYPE ") {
            let mut w = rest.split_whitespace();
            if let (Some(n), Some(t)) = (w.next(), w.next()) {
                types.insert(n, t);
            }
            continue;
        }
        if l.starts_with('#') || !l.starts_with("kubeproxy_") {
            continue;
        }
        let (name, labels) = match l.split_once('{') {
            Some((n, rest)) => (n, rest.rsplit_once('}').map_or("", |(ls, _)| ls)),
            None => (l.split_whitespace().next().unwrap_or(""), ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(f) == Some(&"histogram"))
            })
            .unwrap_or(name);
        let value: f64 = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if value != 0.0 {
            nonzero.insert(family.to_string());
        }
        let entry = seen.entry(family.to_string()).or_default();
        for pair in split_labels(labels) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == "le" {
                let v = v.trim_matches('"').to_string();
                if !entry.1.contains(&v) {
                    entry.1.push(v);
                }
            } else if !k.is_empty() {
                entry.0.insert(k.to_string());
            }
        }
    }
    seen.into_iter()
        .filter(|(f, _)| nonzero.contains(f))
        .map(|(f, (labels, buckets))| {
            let t = types.get(f.as_str()).copied().unwrap_or("untyped");
            let labels: Vec<String> = labels.into_iter().collect();
            let mut line = format!("{f} {t} labels={}", labels.join(","));
            if t == "histogram" {
                // Bounds as numbers: "1" and "1.0" are the same bucket.
                let b: Vec<String> = buckets
                    .iter()
                    .map(|b| b.parse::<f64>().map_or(b.clone(), |x| format!("{x}")))
                    .collect();
                line.push_str(&format!(" buckets={}", b.join(",")));
            }
            line
        })
        .collect()
}

/// `a="x",b="y,z"` → [`a="x"`, `b="y,z"`] (commas inside quotes kept).
fn split_labels(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(s[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        out.push(s[start..].trim());
    }
    out.into_iter().filter(|p| !p.is_empty()).collect()
}

/// `/healthz` and `/livez` as `PATH CODE keys=K1,K2` (every JSON key path,
/// with its value if a flag), prefixed by `when`.
pub fn health_shapes(when: &str) -> Vec<String> {
    ["/healthz", "/livez"]
        .iter()
        .map(|p| match http_get(HEALTHZ, p) {
            Some((code, body)) => {
                let mut keys = Vec::new();
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                    key_paths(&v, "", &mut keys);
                } else {
                    keys.push("(not JSON)".into());
                }
                // Before the first sync, upstream's `status` appears once its
                // sync loop starts, a moment that varies from run to run.
                if when == "before-sync" {
                    keys.retain(|k| !k.starts_with("status."));
                }
                keys.sort();
                format!("{when} {p} {code} keys={}", keys.join(","))
            }
            None => format!("{when} {p} (no answer)"),
        })
        .collect()
}

fn key_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(m) = v.as_object() {
        for (k, v) in m {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                serde_json::Value::Object(_) => key_paths(v, &path, out),
                // A flag is compared with its value; times differ by nature.
                serde_json::Value::Bool(b) => out.push(format!("{path}={b}")),
                _ => out.push(path),
            }
        }
    }
}

/// Whether `which` has completed a sync (upstream: its timestamp metric for
/// both families; kube-ipvs: /readyz).
pub fn has_synced(which: Which) -> bool {
    match which {
        Which::Upstream => {
            let m = scrape();
            ["IPv4", "IPv6"].iter().all(|f| {
                m.contains(&format!(
                    "kubeproxy_sync_proxy_rules_last_timestamp_seconds{{ip_family=\"{f}\"}}"
                ))
            })
        }
        Which::KubeIpvs => http_get(HEALTHZ, "/readyz").is_some_and(|(c, _)| c == 200),
    }
}

/// The health endpoints' answers before the first sync: polled from the
/// start until they answer; `None` if the proxy synced before they did.
pub fn health_before_sync(d: &mut Daemon, which: Which) -> Option<Vec<String>> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        d.assert_running();
        if has_synced(which) {
            return None;
        }
        let h = health_shapes("before-sync");
        if h.iter().all(|l| !l.ends_with("(no answer)")) {
            // Still not synced after answering: the answers were from before.
            return (!has_synced(which)).then_some(h);
        }
        assert!(Instant::now() < deadline, "{which:?}: no health answer");
        std::thread::sleep(Duration::from_millis(100));
    }
}
